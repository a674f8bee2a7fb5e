"""The store's filesystem full, for real: a small tmpfs mounted by the test (root only) holds
the database (or the whole state directory, for `up`), and a file fills it."""

import errno
import os
import pathlib
import subprocess

import pytest
from conftest import Cluster, wait_until
from rawpeer import RawPeer, key_of
from test_metrics import scrape

from lavalite.client import ClientError
from lavalite.protocol import VERSION
from roles.cli.local import free_port


@pytest.fixture
def tmpfs(tmp_path):
    """An 8 MB tmpfs under tmp_path, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(directory):
    """A file that takes every byte left on the filesystem; returns its path."""
    path = os.path.join(directory, "filler")
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return path


def log_text(c):
    logdir = pathlib.Path(c.state, "log")
    return "".join(f.read_text(errors="replace") for f in sorted(logdir.iterdir()))


def test_a_full_disk_refuses_submits_serves_running_jobs_and_resumes(tmpfs, make_cluster):
    metrics = free_port()
    c = make_cluster(
        mbatchd={
            "database": str(tmpfs / "lavalite.db"),
            "disk_warn_free": "4M",
            "metrics_port": str(metrics),
        }
    )
    go = os.path.join(c.state, "go")
    running = c.submit(["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.1; done"])
    c.wait_started([running])
    held = c.submit(["true"], hold=True)
    filler = fill(tmpfs)

    with pytest.raises(ClientError) as refused:
        c.submit(["true"])
    assert refused.value.message == f"disk full on {tmpfs}"
    res = c.cli("submit", "--", "true", check=False)
    assert res.returncode == 1 and f"disk full on {tmpfs}" in res.stderr, res
    assert c.jobs([running])[running]["state"] == "RUN", "queries are answered"
    wait_until(lambda: "low disk space on" in log_text(c), 60, "the low-space warning")
    assert scrape(metrics)[("lavalite_store_free_bytes", frozenset())] < 4 << 20

    open(go, "w").close()  # the job ends while its end cannot be stored
    wait_until(
        lambda: "submits and kills are refused" in log_text(c),
        60,
        "the turn that cannot store the end",
    )
    res = c.cli("kill", str(running), check=False)
    assert res.returncode == 1 and f"disk full on {tmpfs}" in res.stderr, res
    assert [e[3] for e in c.events(running)] == ["PEND", "RUN"], "not stored yet"
    res = c.cli("resume", str(held), check=False)
    assert res.returncode == 1 and f"disk full on {tmpfs}" in res.stderr, res
    assert c.jobs([held])[held]["stat"] == "PSUSP"
    for words in (["modify", "-Jd", "x"], ["switch", "serial"], ["requeue", "-p"], ["stop"]):
        res = c.cli(*words, str(held), check=False)  # bmod, bswitch...: their answers wait too
        assert res.returncode == 1 and f"disk full on {tmpfs}" in res.stderr, (words, res)
    assert c.jobs([held])[held]["description"] is None

    os.unlink(filler)  # space returns: mbatchd resumes by itself
    ends = wait_until(
        lambda: [e for e in c.events(running) if e[3] == "DONE"], 60, "the end recorded"
    )
    after = c.submit(["true"])  # accepted, placed and ended: how it ends is sbatchd's
    c.cli("resume", str(held))
    c.wait([after, held])
    assert len(ends) == 1 and [e[3] for e in c.events(running)].count("DONE") == 1
    shown = c.client.jobs(users=["all"], all=True)
    assert sorted(j["id"] for j in shown) == [running, held, after], "no refused submit appears"
    assert {e[0] for e in c.events()} == {running, held, after}
    wait_until(lambda: "free again" in log_text(c), 60, "the space-back line")
    assert log_text(c).count("low disk space on") == 1, "warned once, not at every look"


def test_up_on_a_full_disk_says_so_in_one_line(tmpfs):
    c = Cluster(tmpfs / "state")  # writes its configuration, then the disk fills
    fill(tmpfs)
    res = subprocess.run(
        c.program + ["up", "--state-dir", c.state],
        env=c.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert out.strip() == (
        f"lavalite up: cannot write {c.conf.cluster.key_file}: No space left on device"
    ), out  # one line, no traceback
    assert sorted(os.listdir(c.state)) == sorted(
        ["lavalite.conf", "lim.conf", "sbatchd.conf", "queues.conf"]
    ), "no empty pid or key file"


def test_a_submit_the_store_cannot_take_is_refused_and_mbatchd_goes_on(cluster):
    """A slot count beyond SQLite's INTEGER: refused with the option named (the CLI's bounds:
    argparse's usage and one error line, exit 2; through the API, mbatchd's checks: a
    bad_request); mbatchd answers after it, and the job never appears."""
    res = cluster.cli("submit", "-n", "9223372036854775808", "--", "true", check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .endswith("argument -n: the job slots must be an integer from 1 to 65536")
    ), res
    with pytest.raises(ClientError, match="slots"):
        cluster.submit(["true"], slots=2**63)
    job = cluster.submit(["true"])
    assert cluster.wait([job])[job]["state"] == "DONE"
    assert [j["id"] for j in cluster.client.jobs(users=["all"], all=True)] == [job]


def test_a_turn_that_cannot_commit_restarts_mbatchd_from_the_store(cluster):
    """A change that is no new job (an sbatchd registering 2**63 slots) and that the store
    cannot take: mbatchd exits and LIM restarts it; it then serves, without that change."""
    before = cluster.pid("mbatchd")
    with RawPeer(cluster.conf.mbatchd.port) as p:
        p.sock.sendall(p.hello(key_of(cluster), "sbatchd", "ghost"))
        p.send({"v": VERSION, "op": "register", "id": 1, "slots": 2**63, "running": []})
        wait_until(lambda: _restarted(cluster, before), 60, "mbatchd restarted")
    cluster.client.close()  # its connection was to the mbatchd that exited
    job = cluster.submit(["true"])
    assert cluster.wait([job])[job]["state"] == "DONE"
    assert "ghost" not in [h["name"] for h in cluster.client.call("hosts")["hosts"]]
    assert "cannot store the turn even without its new jobs" in log_text(cluster)


def _restarted(cluster, old_pid):
    """A new mbatchd that answers."""
    try:
        if cluster.pid("mbatchd") == old_pid:
            return False
        cluster.client.close()
        return cluster.client.call("ping")
    except (OSError, ValueError, ClientError):
        return False
