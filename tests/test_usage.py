"""Running jobs' usage: sbatchd samples its running attempts every usage_interval (their
cgroups, else their process groups in /proc) and sends one frame; mbatchd keeps the figures in
memory; bjobs -l, -o and -json show them as LSF does. Fast tests of the parsers over a fake
/proc and cgroupfs and of mbatchd's rules; real clusters for the figures of a real job."""

import json
import os
import re
import sys

import pytest
from conftest import wait_until
from test_admin import lsf

from lavalite.model import DONE, RUN, Job, transition
from roles.cli import bjobs_lsf
from roles.mbatchd import usage as mbatchd_usage
from roles.sbatchd import cgroups, record, usage
from roles.sbatchd.cgroups import Limits

MB = 1 << 20
# 100 MB written (so resident), then CPU burnt until the test creates the file `stop`
HOLD = "import os; b = b'x' * (100 << 20)\nwhile not os.path.exists('stop'): pass\nprint(len(b))"


# --- fast: the parsers


def _stat(pid, comm, pgrp, utime, stime, cutime, cstime, threads, rss):
    """A /proc/<pid>/stat line with those fields (the others zero)."""
    fields = ["S", "1", str(pgrp)] + ["0"] * 8 + [str(utime), str(stime), str(cutime)]
    fields += [str(cstime), "20", "0", str(threads), "0", "0", "0", str(rss)] + ["0"] * 20
    return f"{pid} ({comm}) {' '.join(fields)}\n"


def test_parse_stat_reads_the_fields_after_a_command_name_with_spaces_and_parentheses():
    text = _stat(42, "a (b) c", 40, 100, 50, 7, 3, 4, 2560)
    assert usage.parse_stat(text) == usage.ProcStat(40, 160, 4, 2560)
    assert usage.parse_stat("") is None
    assert usage.parse_stat("42 (x) S 1") is None


def _put(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _fake_proc(tmp_path, procs):
    proc = tmp_path / "proc"
    for pid, text in procs.items():
        _put(str(proc / str(pid) / "stat"), text)
    return str(proc)


def _record(tmp_path, job, pid):
    path = str(tmp_path / f"{job}.1")
    fd = record.create(path)
    if pid is not None:
        record.append(fd, pid=pid)
    os.close(fd)
    return path


def test_without_cgroups_a_job_is_its_process_group_and_its_peak_the_largest_seen(tmp_path):
    """Two processes of job 1's group summed, another group's process not; job 2 not started
    yet (no pid in its record) is left out; the peak without a kernel counter is kept."""
    tick, page = usage.CLOCK_TICKS, usage.PAGE_SIZE
    procs = {
        100: _stat(100, "sh", 100, tick, 0, tick, 0, 1, 10 * MB // page),
        101: _stat(101, "python3", 100, 2 * tick, tick, 0, 0, 3, 30 * MB // page),
        200: _stat(200, "other", 200, 50 * tick, 0, 0, 0, 1, 99 * MB // page),
    }
    proc = _fake_proc(tmp_path, procs)
    sampler = usage.Sampler(proc)
    targets = [
        usage.Target(1, 1, None, _record(tmp_path, 1, 100)),
        usage.Target(2, 1, None, _record(tmp_path, 2, None)),
    ]
    (first,) = sampler.sample(targets, set())
    assert first == {
        "job": 1,
        "attempt": 1,
        "cpu": 5.0,
        "mem": 40 * MB,
        "swap": None,
        "max_mem": 40 * MB,
        "nthreads": 4,
        "pgid": 100,
        "pids": [100, 101],
    }
    _put(f"{proc}/101/stat", _stat(101, "python3", 100, 4 * tick, tick, 0, 0, 3, 5 * MB // page))
    (second,) = sampler.sample(targets, set())
    assert (second["cpu"], second["mem"], second["max_mem"]) == (7.0, 15 * MB, 40 * MB)
    os.unlink(f"{proc}/100/stat")
    os.unlink(f"{proc}/101/stat")
    assert sampler.sample(targets, set()) == []  # ended: its EXIT report says the rest


def test_v2_group_counters_and_the_shepherd_left_out(tmp_path):
    _put(str(tmp_path / "cg" / "cgroup.controllers"), "cpu memory pids")
    _put(str(tmp_path / "cg" / "cgroup.subtree_control"), "")
    backend = cgroups.V2(str(tmp_path / "cg"), "lavalite")
    _put(os.path.join(backend.base, "cgroup.controllers"), "cpu memory pids")
    group = backend.create("s1", Limits())
    d = group.dirs[""]
    _put(os.path.join(d, "cgroup.procs"), "300\n301\n9\n")
    _put(os.path.join(d, "cpu.stat"), "usage_usec 2500000\n")
    _put(os.path.join(d, "memory.current"), f"{110 * MB}\n")
    _put(os.path.join(d, "memory.peak"), f"{120 * MB}\n")
    _put(os.path.join(d, "memory.swap.current"), "0\n")
    _put(os.path.join(d, "pids.current"), "5\n")
    sampler = usage.Sampler(_fake_proc(tmp_path, {}))
    (found,) = sampler.sample([usage.Target(7, 2, group, _record(tmp_path, 7, 300))], {9})
    assert found == {
        "job": 7,
        "attempt": 2,
        "cpu": 2.5,
        "mem": 110 * MB,
        "swap": 0,
        "max_mem": 120 * MB,
        "nthreads": 5,
        "pgid": 300,
        "pids": [300, 301],
    }


def test_v1_group_swap_is_memsw_less_memory_and_cpu_from_proc_without_cpuacct(tmp_path):
    mounts = {c: str(tmp_path / c) for c in ("cpu", "memory")}
    backend = cgroups.V1(mounts, "lavalite")
    backend.setup()
    group = backend.create("s1", Limits())
    tick = usage.CLOCK_TICKS
    _put(os.path.join(group.dirs["memory"], "cgroup.procs"), "400\n")
    _put(os.path.join(group.dirs["cpu"], "cgroup.procs"), "400\n")
    _put(os.path.join(group.dirs["memory"], "memory.usage_in_bytes"), f"{50 * MB}\n")
    _put(os.path.join(group.dirs["memory"], "memory.memsw.usage_in_bytes"), f"{60 * MB}\n")
    _put(os.path.join(group.dirs["memory"], "memory.max_usage_in_bytes"), f"{70 * MB}\n")
    proc = _fake_proc(tmp_path, {400: _stat(400, "job", 400, 3 * tick, tick, 0, 0, 2, 1)})
    (found,) = usage.Sampler(proc).sample(
        [usage.Target(3, 1, group, _record(tmp_path, 3, 400))], set()
    )
    assert (found["cpu"], found["mem"], found["swap"], found["max_mem"]) == (
        4.0,
        50 * MB,
        10 * MB,
        70 * MB,
    )
    assert found["nthreads"] == 2  # no pids controller: from /proc


# --- fast: mbatchd keeps the figures of the attempt that runs, while it runs


def _running(job_id=1, host="h1"):
    job = Job(job_id, "u", 0, "normal", "j", {"cmd": ["true"]})
    transition(job, RUN, 1.0)
    job.host = host
    return job


def _sample(job=1, attempt=1, cpu=3.0):
    return {
        "job": job,
        "attempt": attempt,
        "cpu": cpu,
        "mem": 5 * MB,
        "swap": 0,
        "max_mem": 6 * MB,
        "nthreads": 2,
        "pgid": 10,
        "pids": [10, 11],
    }


def test_mbatchd_keeps_the_figures_of_the_running_attempt_only():
    job = _running()
    jobs = {1: job}
    mbatchd_usage.apply(jobs, "h2", [_sample()], 5.0)  # not its host
    mbatchd_usage.apply(jobs, "h1", [_sample(attempt=2), _sample(job=9), _sample(job="1")], 5.0)
    assert job.usage is None
    mbatchd_usage.apply(jobs, "h1", [_sample()], 5.0)
    assert job.usage is not None and job.usage["cpu_time"] == 3.0
    transition(job, DONE, 6.0)  # its end figures come with its EXIT report
    assert job.usage is None
    mbatchd_usage.apply(jobs, "h1", [_sample(cpu=4.0)], 7.0)  # late: dropped
    assert job.usage is None


def test_bjobs_long_lines_of_a_running_job_are_lsfs():
    job = _running()
    mbatchd_usage.apply({1: job}, "h1", [_sample()], 5.0)
    from lavalite.model import job_view

    lines = bjobs_lsf.long_lines(job_view(job))
    assert lines[0].endswith(": Resource usage collected.")
    assert [line.strip() for line in lines[1:]] == [
        "The CPU time used is 3 seconds.",
        "MEM: 5 Mbytes;  SWAP: 0 Mbytes;  NTHREAD: 2",
        "PGID: 10;  PIDs: 10 11",
        "MEMORY USAGE:",
        "MAX MEM: 6 Mbytes;",
    ]


# --- real clusters


def _bjobs(cluster, tmp_path, *args):
    return lsf(cluster, tmp_path, "bjobs", *args)


def _cpu_of(long_text):
    found = re.search(r"The CPU time used is (\d+) seconds", long_text)
    return int(found.group(1)) if found else None


@pytest.mark.parametrize("cgroups_mode", ["auto", "off"])
def test_a_running_job_shows_its_memory_growing_cpu_and_pids(make_cluster, tmp_path, cgroups_mode):
    cluster = make_cluster(sbatchd={"cgroups": cgroups_mode, "usage_interval": "0.5"})
    job = cluster.submit([sys.executable, "-c", HOLD], name="hold")
    cluster.wait_started([job])

    def sampled():
        res = _bjobs(cluster, tmp_path, "-l", str(job))
        cpu = _cpu_of(res.stdout)
        return res.stdout if cpu is not None and cpu >= 1 else None

    first = wait_until(sampled, 60, cluster.logs, 0.3)
    mem = re.search(r"MEM: (\d+) Mbytes;  SWAP: [^;]+;  NTHREAD: (\d+)", first)
    assert mem and 100 <= int(mem.group(1)) < 200 and int(mem.group(2)) >= 1, first
    pids = re.search(r"PGID: (\d+);  PIDs: ([\d ]+)", first)
    assert pids, first
    listed = [int(p) for p in pids.group(2).split()]
    assert int(pids.group(1)) in listed and all(os.path.exists(f"/proc/{p}") for p in listed)
    assert re.search(r"MAX MEM: (1\d\d) Mbytes", first), first
    # the CPU time grows while it runs
    wait_until(
        lambda: (_cpu_of(_bjobs(cluster, tmp_path, "-l", str(job)).stdout) or 0) > _cpu_of(first),
        60,
        cluster.logs,
        0.3,
    )

    res = _bjobs(cluster, tmp_path, "-noheader", "-o", "cpu_used mem max_mem", str(job))
    cpu, _, used, _, peak, _ = res.stdout.split()
    assert float(cpu) >= 1 and 100 <= int(used) < 200 and 100 <= int(peak) < 200, res.stdout
    res = _bjobs(cluster, tmp_path, "-json", "-o", "cpu_used mem max_mem swap", str(job))
    (shown,) = json.loads(res.stdout)["RECORDS"]
    assert shown["MEM"].endswith(" Mbytes") and shown["CPU_USED"].endswith(" second(s)"), shown
    view = cluster.jobs([job])[job]
    assert view["run_pids"] == sorted(view["run_pids"]) and view["pgid"] in view["run_pids"]

    open(os.path.join(cluster.state, "stop"), "w").close()
    done = cluster.wait([job])[job]
    assert done["state"] == DONE and done["mem"] is None and done["run_pids"] is None, done
    assert done["cpu_time"] >= 1 and 100 * MB <= done["max_mem"] < 200 * MB, done
