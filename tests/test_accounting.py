"""bhist, bacct and the accounting behind them: a job's CPU time and peak memory measured at
its end (its cgroup, else rusage), carried to the store, and shown as LSF 10.1 shows them.
Real clusters for the figures; fast tests of the arithmetic, the store queries and the
counters read from a fake cgroupfs."""

import os
import re
import subprocess
import sys
import time

import pytest
from conftest import wait_until
from test_lsf_options import _lsf_command

from lavalite import accounting
from lavalite.model import DONE, FAILED, PEND, RUN, Job, submitted, transition
from roles.sbatchd import cgroups
from roles.sbatchd.cgroups import Limits
from store import Store
from store.history import Filter, prune

MB = 1 << 20
# ~1.2 s of CPU with 100 MB written (so resident: a bytearray of zeros would not be)
BURN = (
    "import time; b = b'x' * (100 << 20); "
    "exec('while time.process_time() < 1.2: pass'); print(len(b))"
)


def _lsf(cluster, tmp_path, name, *args):
    return subprocess.run(
        _lsf_command(tmp_path, name) + list(args),
        env=cluster.env,
        cwd=cluster.state,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _figures(bacct_long: str) -> list[str]:
    """The figures line under bacct -l's CPU_T ... header."""
    lines = bacct_long.splitlines()
    return lines[[i for i, line in enumerate(lines) if "CPU_T" in line][0] + 1].split()


def _summary(bacct: str) -> dict[str, str]:
    """bacct's 'Total number of done jobs:  1' figures, by what follows 'Total ...'."""
    found = re.findall(r"Total ([A-Za-z ]+?):\s+(\S+)", bacct)
    return {name.removeprefix("number of "): figure for name, figure in found}


@pytest.mark.parametrize(
    "store_lock,cgroups_mode", [("shared", "auto"), ("exclusive", "auto"), ("shared", "off")]
)
def test_bacct_and_bhist_show_the_cpu_and_memory_a_job_used(
    make_cluster, tmp_path, store_lock, cgroups_mode
):
    """Measured by the job's cgroup (auto), or by rusage without cgroups (off); answered both
    ways mbatchd answers: a worker thread's read-only connection (shared), its own connection
    between turns (exclusive)."""
    cluster = make_cluster(mbatchd={"store_lock": store_lock}, sbatchd={"cgroups": cgroups_mode})
    job = cluster.submit([sys.executable, "-c", BURN], name="burn")
    view = cluster.wait([job])[job]
    assert view["state"] == DONE, view
    assert 1.1 <= view["cpu_time"] < 10, view
    assert 100 * MB <= view["max_mem"] < 200 * MB, view

    res = _lsf(cluster, tmp_path, "bacct", "-l", str(job))
    assert res.returncode == 0, res
    assert f"Job <{job}>, User <root>" in res.stdout and "Status <DONE>" in res.stdout
    cpu, wait, turnaround, status, hog, mem, swap, run = _figures(res.stdout)
    assert 1.1 <= float(cpu) < 10 and status == "done"
    assert 100 <= int(mem.rstrip("M")) < 200
    assert 0 <= int(run) <= int(turnaround)
    assert _summary(res.stdout)["done jobs"] == "1", res.stdout
    assert 1.1 <= float(_summary(res.stdout)["CPU time consumed"]) < 10, res.stdout

    res = _lsf(cluster, tmp_path, "bhist", "-l", str(job))
    assert res.returncode == 0, res
    assert f"Job <{job}>" in res.stdout and "Done successfully" in res.stdout, res.stdout
    assert "Dispatched 1 Task(s) on Host(s) <testhost>" in res.stdout
    assert "MAX MEM:" in res.stdout

    res = _lsf(cluster, tmp_path, "bhist", "-a")
    row = res.stdout.splitlines()[2].split()
    assert row[:3] == [str(job), "root", "burn"], res.stdout
    assert int(row[-1]) >= int(row[5]) >= 1, res.stdout  # TOTAL >= RUN


def test_bacct_counts_done_and_exited_and_filters(cluster, tmp_path):
    ok = cluster.submit(["true"])
    bad = cluster.submit(["sh", "-c", "exit 3"], queue="serial")
    views = cluster.wait([ok, bad])
    assert (views[ok]["state"], views[bad]["state"]) == (DONE, FAILED)
    res = _lsf(cluster, tmp_path, "bacct", "-u", "all")
    assert res.returncode == 0, res
    assert _summary(res.stdout)["done jobs"] == _summary(res.stdout)["exited jobs"] == "1"
    res = _lsf(cluster, tmp_path, "bacct", "-l", str(bad))
    assert "Status <EXIT>" in res.stdout and f"Job <{ok}>" not in res.stdout, res.stdout
    res = _lsf(cluster, tmp_path, "bhist", "-l", str(bad))
    assert "Exited with exit code 3" in res.stdout, res.stdout


def test_bad_input_is_named_and_unknown_jobs_refused(cluster, tmp_path):
    res = _lsf(cluster, tmp_path, "bacct", "-C", "yesterday")
    assert res.returncode == 2 and res.stderr.startswith("bacct: -C: bad time 'yesterday'"), res
    res = _lsf(cluster, tmp_path, "bhist", "-n", "x")
    assert res.returncode == 2 and "-n" in res.stderr, res
    res = _lsf(cluster, tmp_path, "bhist", "-l", "424242")
    assert (res.returncode, res.stderr) == (1, "No matching job found\n"), res
    res = _lsf(cluster, tmp_path, "bacct", "424242")
    assert (res.returncode, res.stderr) == (1, "No matching job found\n"), res


# --- fast: the arithmetic


def test_time_in_states_counts_until_the_end_or_now():
    events = [(100.0, None, PEND), (105.0, PEND, RUN), (115.0, RUN, PEND), (116.0, PEND, RUN)]
    running = accounting.time_in_states(events, until=120.0)
    assert (running["PEND"], running["RUN"], running["TOTAL"]) == (6.0, 14.0, 20.0)
    done = accounting.time_in_states([*events, (118.0, RUN, DONE)], until=999.0)
    assert (done["PEND"], done["RUN"], done["TOTAL"]) == (6.0, 12.0, 18.0)
    odd = accounting.time_in_states([(0.0, None, "ZOMBIE"), (4.0, "ZOMBIE", DONE)], 9.0)
    assert odd["UNKWN"] == 4.0


def test_summary_averages_and_throughput():
    raw = {
        "done": 3,
        "exited": 1,
        "cpu_total": 8.0,
        "wait_total": 4.0,
        "turnaround_total": 40.0,
        "hog_total": 0.8,
        "begin": 1000.0,
        "end": 1000.0 + 7200.0,
    }
    s = accounting.summary(raw)
    assert (s["jobs"], s["cpu_avg"], s["wait_avg"], s["turnaround_avg"]) == (4, 2.0, 1.0, 10.0)
    assert s["hog_avg"] == pytest.approx(0.2)
    assert (s["hours"], s["throughput"]) == (2.0, 2.0)
    empty = accounting.summary({**raw, "done": 0, "exited": 0, "begin": None, "end": None})
    assert (empty["cpu_avg"], empty["throughput"], empty["hours"]) == (0.0, 0.0, 0.0)


def test_usage_takes_only_numbers_from_the_wire():
    assert accounting.usage({"cpu_time": 1.5, "max_mem": 7}) == (1.5, 7)
    assert accounting.usage({"cpu_time": "1", "max_mem": -1}) == (None, None)
    assert accounting.usage({"cpu_time": True, "max_mem": 2.5}) == (None, None)
    assert accounting.usage({}) == (None, None)


def test_interval_times_and_their_errors():
    now = time.mktime((2026, 12, 7, 12, 0, 0, 0, 0, -1))
    assert accounting.parse_interval("10:30,.", now) == (now - 5400, now)
    assert accounting.parse_interval("12/6/10:00", now)[0] == time.mktime(
        (2026, 12, 6, 10, 0, 0, 0, 0, -1)
    )
    assert accounting.parse_interval("2026/12/7/11:00", now) == (now - 3600, now)
    for bad in ("noon", "1/2/3/4/10:00", "11:00,10:00"):
        with pytest.raises(ValueError):
            accounting.parse_interval(bad, now)


# --- fast: the store's queries, migration and retention


def _finished(store, job_id, user, state, submit, start, end, cpu, mem, queue="serial"):
    job = Job(job_id, user, 0, queue, f"j{job_id}", {"cmd": ["x"], "project": "p" + user})
    job.submit_time = submit
    events = [submitted(job, submit)]
    events.append(transition(job, RUN, start))
    job.host, job.start_time = "h", start
    events.append(transition(job, state, end))
    job.cpu_time, job.max_mem = cpu, mem
    store.commit(jobs=[job], events=events)


def test_store_summary_and_filters(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    _finished(store, 1, "ann", DONE, 0.0, 10.0, 30.0, 4.0, 1 * MB)
    _finished(store, 2, "ann", FAILED, 0.0, 20.0, 60.0, 6.0, 3 * MB)
    _finished(store, 3, "bob", DONE, 100.0, 101.0, 200.0, 50.0, 9 * MB)
    raw = store.acct_summary(Filter(users=["ann"]))
    assert (raw["done"], raw["exited"], raw["cpu_total"]) == (1, 1, 10.0)
    assert (raw["wait_min"], raw["wait_max"], raw["wait_total"]) == (10.0, 20.0, 30.0)
    assert (raw["turnaround_min"], raw["turnaround_max"]) == (30.0, 60.0)
    assert (raw["begin"], raw["end"]) == (30.0, 60.0)
    assert store.acct_summary(Filter(project="pbob"))["done"] == 1
    assert store.acct_summary(Filter(ended=(50.0, 250.0)))["done"] == 1
    assert store.acct_summary(Filter(queue="other"))["done"] == 0
    jobs = store.history_jobs(Filter(ids=[2, 3]), 10)
    assert [(j["id"], j["cpu_time"], j["max_mem"], j["project"]) for j in jobs] == [
        (2, 6.0, 3 * MB, "pann"),
        (3, 50.0, 9 * MB, "pbob"),
    ]
    events = store.history_events([2])[2]
    assert [e[2] for e in events] == [PEND, RUN, FAILED]
    plan = store.db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE user = ? AND end_time IS NOT NULL "
        "ORDER BY end_time",
        ("ann",),
    ).fetchall()
    assert "jobs_user_end" in str(plan), plan


def test_a_schema_4_store_gains_the_usage_columns(tmp_path):
    path = str(tmp_path / "s.db")
    store = Store(path)
    _finished(store, 1, "ann", DONE, 0.0, 1.0, 2.0, 0.5, MB)
    store.db.execute(
        "DROP INDEX jobs_user_end; ALTER TABLE jobs DROP COLUMN cpu_time; "
        "ALTER TABLE jobs DROP COLUMN max_mem; PRAGMA user_version=4"
    )
    store.close()
    store = Store(path)
    assert store.job(1).cpu_time is None and store.job(1).state == DONE
    _finished(store, 2, "ann", DONE, 0.0, 1.0, 2.0, 0.5, MB)
    assert store.job(2).cpu_time == 0.5


def test_prune_removes_old_jobs_in_batches_and_keeps_the_last_id(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    for i in range(1, 8):
        _finished(store, i, "ann", DONE, 0.0, 1.0, float(i), 0.0, 0)
    assert prune(store.db, before=100.0, batch=4) == 4
    assert prune(store.db, before=100.0, batch=4) == 2  # job 7, the last id, stays
    assert [j["id"] for j in store.history_jobs(Filter(), 10)] == [7]
    assert store.events(1) == [] and len(store.events(7)) == 3
    assert store.load(0)["next_job_id"] == 8


# --- fast: the counters read from a (fake) cgroupfs


def _put(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.mark.parametrize("cpu_mount", ["cpuacct", "cpu"])  # its own, or cpu,cpuacct
def test_v1_usage_read_and_reset_for_the_next_attempt(tmp_path, cpu_mount):
    mounts = {c: str(tmp_path / c) for c in (cpu_mount, "memory", "pids")}
    _put(os.path.join(mounts[cpu_mount], "cpuacct.usage"), "0\n")  # the hierarchy counts CPU
    backend = cgroups.V1(mounts, "lavalite")
    backend.setup()
    group = backend.create("s1", Limits())
    _put(os.path.join(group.dirs[cpu_mount], "cpuacct.usage"), "2500000000\n")
    _put(os.path.join(group.dirs["memory"], "memory.max_usage_in_bytes"), f"{100 * MB}\n")
    assert group.usage() == (2.5, 100 * MB)
    backend.reuse(group, Limits())
    assert group.usage() == (0.0, 0)


def test_v1_without_cpuacct_in_its_groups_counts_no_cpu(tmp_path):
    """A cpu hierarchy without cpuacct (mounted apart): CPU comes from rusage, not a file."""
    mounts = {c: str(tmp_path / c) for c in ("cpu", "memory")}
    backend = cgroups.V1(mounts, "lavalite")
    backend.setup()
    group = backend.create("s1", Limits())
    _put(os.path.join(group.dirs["memory"], "memory.max_usage_in_bytes"), f"{MB}\n")
    assert group.usage() == (None, MB)


def test_v2_usage_and_its_absence(tmp_path):
    _put(str(tmp_path / "cgroup.controllers"), "cpu memory pids")
    _put(str(tmp_path / "cgroup.subtree_control"), "")
    backend = cgroups.V2(str(tmp_path), "lavalite")
    _put(os.path.join(backend.base, "cgroup.controllers"), "cpu memory pids")
    group = backend.create("s1", Limits())
    assert group.usage() == (None, None)  # a kernel without the counters: rusage then
    _put(os.path.join(group.dirs[""], "cpu.stat"), "usage_usec 1500000\nuser_usec 1000000\n")
    _put(os.path.join(group.dirs[""], "memory.peak"), f"{64 * MB}\n")
    assert group.usage() == (1.5, 64 * MB)


def test_history_days_prunes_what_ended_before_it(make_cluster, tmp_path):
    """A store holding jobs that ended 10 days (1, 3) and 1 hour (2) ago: a running mbatchd
    with history_days = 2 removes job 1, events and all; keeps 2, younger, and 3, the highest
    id, which the next job id continues from."""
    cluster = make_cluster(start=False, mbatchd={"history_days": "2"})
    store = Store(cluster.conf.mbatchd.database)
    old, young = time.time() - 10 * 86400, time.time() - 3600
    for job_id, end in ((1, old), (2, young), (3, old)):
        _finished(store, job_id, "root", DONE, end, end, end, 1.0, 0)
    store.close()
    cluster.start()
    wait_until(
        lambda: _lsf(cluster, tmp_path, "bhist", "-l", "1").returncode == 1,
        what=cluster.logs,
        interval=0.5,
    )
    assert cluster.events(1) == []
    for kept in (2, 3):
        res = _lsf(cluster, tmp_path, "bhist", "-l", str(kept))
        assert res.returncode == 0 and "Done successfully" in res.stdout, res
    assert cluster.submit(["true"]) == 4
