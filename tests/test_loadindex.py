"""lsload's r15s, pg, ls and it, as LIM derives them (lavalite/loadindex.py), and the CPU
factor of lshosts and bhosts -l: fast tests of the parsers and averages over fake /proc and
/dev files; a real cluster for a number in every column."""

import math
import os

import pytest
from conftest import wait_until
from test_admin import HOST, header, lsf

from lavalite import config, loadindex


def _put(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_runnable_is_the_running_field_less_the_reader():
    assert loadindex.runnable("0.52 0.58 0.59 3/467 12345\n") == 2
    assert loadindex.runnable("0.00 0.00 0.00 1/90 7\n") == 0
    assert loadindex.runnable("") is None
    assert loadindex.runnable("0.1 0.2 0.3 x/9 1") is None


def test_pages_swapped_sums_pswpin_and_pswpout():
    text = "nr_free_pages 100\npgpgin 999\npswpin 7\npswpout 5\npgpgout 3\n"
    assert loadindex.pages_swapped(text) == 12
    assert loadindex.pages_swapped("pgpgin 4\n") is None


def test_averaged_moves_toward_the_sample_by_its_share_of_the_period():
    assert loadindex.averaged(None, 4.0, 1.0, 15.0) == 4.0
    assert loadindex.averaged(0.0, 4.0, 15.0, 15.0) == pytest.approx(4.0 * (1 - math.exp(-1)))
    assert loadindex.averaged(2.0, 2.0, 3.0, 15.0) == 2.0


def test_idle_minutes_of_the_most_recently_used_terminal_else_since_boot(tmp_path):
    dev = tmp_path / "dev"
    for tty, atime in (("pts/0", 1000.0), ("pts/1", 1600.0)):
        _put(str(dev / tty), "")
        os.utime(dev / tty, (atime, atime))
    assert loadindex.idle_minutes(["pts/0", "pts/1", "gone"], 2200.0, 0.0, str(dev)) == 10.0
    assert loadindex.idle_minutes([], 2200.0, 400.0, str(dev)) == 30.0


def test_indices_average_r15s_and_rate_pg_across_ticks(tmp_path):
    proc = tmp_path / "proc"
    _put(str(proc / "loadavg"), "0.1 0.1 0.1 5/100 1\n")  # 4 runnable besides the reader
    _put(str(proc / "vmstat"), "pswpin 100\npswpout 0\n")
    indices = loadindex.Indices(str(proc), str(tmp_path / "dev"))
    first = indices.sample(10.0, 5000.0, [("ann", None), ("ann", None), ("bob", None)], 2000.0)
    assert first == {"r15s": 4.0, "pg": None, "ls": 2, "it": 50.0}
    _put(str(proc / "loadavg"), "0.1 0.1 0.1 1/100 1\n")
    _put(str(proc / "vmstat"), "pswpin 160\npswpout 20\n")  # 80 pages in 4 s
    second = indices.sample(14.0, 5004.0, [], 2000.0)
    assert second["r15s"] == pytest.approx(4.0 * math.exp(-4 / 15))
    assert second["pg"] == 20.0 and second["ls"] == 0


def test_cpu_factor_is_a_positive_number(tmp_path):
    _put(str(tmp_path / "lim.conf"), "[lim]\ncpu_factor = 2.5\n")
    _put(str(tmp_path / "lavalite.conf"), "")
    assert config.load(str(tmp_path / "lavalite.conf")).lim.cpu_factor == 2.5
    for bad in ("0", "fast", "2h"):
        _put(str(tmp_path / "lim.conf"), f"[lim]\ncpu_factor = {bad}\n")
        with pytest.raises(config.ConfigError, match=r"\[lim\] cpu_factor"):
            config.load(str(tmp_path / "lavalite.conf"))


def test_lsload_shows_a_number_in_every_column_and_lshosts_the_cpu_factor(make_cluster, tmp_path):
    cluster = make_cluster(lim={"cpu_factor": "2.5"})

    def full_row():
        res = lsf(cluster, tmp_path, "lsload", HOST)
        assert res.returncode == 0, res.stderr
        row = dict(zip(header(res), res.stdout.splitlines()[1].split()))
        return row if "-" not in row.values() else None

    row = wait_until(full_row, 30, cluster.logs, 0.5)
    assert float(row["r15s"]) >= 0 and float(row["pg"]) >= 0, row
    assert int(row["ls"]) >= 0 and int(row["it"]) >= 0, row
    res = lsf(cluster, tmp_path, "lshosts", "-w", HOST)
    info = dict(zip(header(res), res.stdout.splitlines()[1].split()))
    assert info["cpuf"] == "2.5", res.stdout
    long = lsf(cluster, tmp_path, "bhosts", "-l").stdout.splitlines()
    assert long[2].split()[:2] == ["ok", "2.50"], long
