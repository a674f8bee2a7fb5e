"""blaunch across the hosts of a multi-host job: testhost (the cluster's sbatchd) and h2 (a
second sbatchd on loopback), 2 slots each; `-n 4 -R span[ptile=2]` takes both. A task on the
host where the job did not start runs in the job's part there (group blaunch-JOB.ATTEMPT, the
limits of the job's slots there), as the user, is relayed back, and ends with the job."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, kill_jobs_in, remove_cgroup_slice, start_sbatchd, wait_until
from test_accounting import _figures, _lsf

from roles.sbatchd import cgroups

WIDE = ("-n", "4", "-R", "span[ptile=2]")
# the job's host that is not its first (LSB_MCPU_HOSTS = "FIRST 2 OTHER 2")
OTHER = 'set -- $LSB_MCPU_HOSTS; other=$3; echo "$other" > other.host; '


@pytest.fixture
def two_hosts(make_cluster, tmp_path):
    yield from _with_h2(make_cluster(slots=2), tmp_path)


@pytest.fixture
def two_hosts_forgetting(make_cluster, tmp_path):
    """Two hosts, and a finished job leaves mbatchd's memory at once (clean_period 0)."""
    yield from _with_h2(make_cluster(slots=2, mbatchd={"clean_period": "0"}), tmp_path)


def _with_h2(cluster, tmp_path):
    state = str(tmp_path / "h2")
    cluster.h2_state = state
    cluster.h2, cluster.h2_slice = start_sbatchd(cluster, state, "h2", 2)
    wait_until(lambda: _status(cluster, "h2") == "ok", 30, "h2 registered")
    yield cluster
    if cluster.h2.poll() is None:
        cluster.h2.terminate()
        cluster.h2.wait(30)
    kill_jobs_in(state)
    kill_jobs_in(cluster.state)
    remove_cgroup_slice(cluster.h2_slice)


def _status(cluster, name):
    hosts = cluster.client.call("hosts")["hosts"]
    return next((h["status"] for h in hosts if h["name"] == name), None)


def _link(tmp_path, name):
    """The program under an LSF name (argv[0] picks the command)."""
    link = tmp_path / name
    if not link.exists():
        link.symlink_to(os.path.join(ROOT, "lavalite.py"))
    return f"{sys.executable} {link}"


def _submit(cluster, *args):
    """The job: `lavalite submit OPTIONS -- sh -c SCRIPT` (args ends with SCRIPT)."""
    res = subprocess.run(
        [*cluster.program, "submit", *args[:-1], "--", "sh", "-c", args[-1]],
        env=cluster.env,
        capture_output=True,
        text=True,
        cwd=cluster.state,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return int(res.stdout.split("<")[1].split(">")[0])


def _read(cluster, name):
    with open(os.path.join(cluster.state, name)) as f:
        return f.read()


def _part_dir(cluster, job_id, controller):
    """The job's part on h2 in a v1 controller's hierarchy or in cgroup2 (None: no such
    hierarchy here)."""
    v2, v1 = cgroups.mounts()
    mount = v1.get(controller) or v2
    if mount is None:
        return None
    return os.path.join(mount, cluster.h2_slice, f"blaunch-{job_id}.1")


def _sleeping(marker):
    """The pids of `sleep MARKER` (not of blaunch or the relay, whose words hold it too)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == f"sleep\0{marker}\0".encode():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def _marker():
    """A `sleep` argument no other test's process has."""
    return f"3{os.getpid() % 1000}.{time.monotonic_ns() % 1000}"


def _cgroup_of(pid):
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return f.read()
    except OSError:
        return ""


def test_blaunch_runs_a_task_on_the_second_host_in_the_jobs_part_there(two_hosts, tmp_path):
    cluster = two_hosts
    task = (
        "cat /proc/self/cgroup > task.cg; id -u > task.uid; "
        "echo out-$LSB_JOBID; echo err-line >&2; exit 7"
    )
    script = f"{OTHER}{_link(tmp_path, 'blaunch')} $other '{task}'; echo exit=$?"
    job_id = _submit(cluster, *WIDE, "-M", "64M", "-o", "out.%J", "-e", "err.%J", script)
    view = cluster.wait([job_id])[job_id]
    assert view["stat"] == "DONE", view
    assert _read(cluster, "other.host").strip() == "h2"
    assert _read(cluster, f"out.{job_id}") == f"out-{job_id}\nexit=7\n"
    assert _read(cluster, f"err.{job_id}") == "err-line\n"
    assert _read(cluster, "task.uid").strip() == str(os.getuid())  # the submitting user
    groups = _read(cluster, "task.cg")
    assert f"/{cluster.h2_slice}/blaunch-{job_id}.1" in groups, groups


def _limits(part_dir):
    """(memory limit, CPU quota / period) of a part's group, in v1's files or cgroup2's."""
    v2, v1 = cgroups.mounts()
    if v1.get("memory") and v1.get("cpu"):
        memory = _knob(os.path.join(v1["memory"], part_dir, "memory.limit_in_bytes"))
        cpu = os.path.join(v1["cpu"], part_dir)
        return int(memory), int(_knob(cpu + "/cpu.cfs_quota_us")) / int(
            _knob(cpu + "/cpu.cfs_period_us")
        )
    quota, period = _knob(os.path.join(v2 or "", part_dir, "cpu.max")).split()
    return int(_knob(os.path.join(v2 or "", part_dir, "memory.max"))), int(quota) / int(period)


def _knob(path):
    with open(path) as f:
        return f.read().strip()


def test_blaunch_u_starts_a_task_per_line_of_the_host_file(two_hosts, tmp_path):
    """-u $LSB_DJOB_HOSTFILE: one task per slot, two on each host."""
    cluster = two_hosts
    task = "grep -q blaunch- /proc/self/cgroup && echo part || echo first"
    script = f"{_link(tmp_path, 'blaunch')} -u $LSB_DJOB_HOSTFILE '{task}'; echo exit=$?"
    job_id = _submit(cluster, *WIDE, "-o", "out.%J", script)
    assert cluster.wait([job_id])[job_id]["stat"] == "DONE"
    out = _read(cluster, f"out.{job_id}").split()
    assert sorted(out) == ["exit=0", "first", "first", "part", "part"], out


def test_the_part_has_the_limits_of_the_jobs_slots_there(two_hosts, tmp_path):
    cluster = two_hosts
    v2, v1 = cgroups.mounts()
    if not (v1.get("memory") and v1.get("cpu")) and not v2:
        pytest.skip("no cgroup memory and cpu controllers here")
    marker = _marker()
    script = f"{OTHER}{_link(tmp_path, 'blaunch')} $other sleep {marker}"
    job_id = _submit(cluster, *WIDE, "-M", "64M", "-o", "/dev/null", script)
    wait_until(lambda: _sleeping(marker), what="the task running")
    # -M is the job's limit on each host; CPUs: its 2 slots on h2
    assert _limits(os.path.join(cluster.h2_slice, f"blaunch-{job_id}.1")) == (64 << 20, 2.0)
    cluster.cli("kill", str(job_id))
    cluster.wait([job_id])


def test_bkill_kills_the_task_on_the_second_host(two_hosts, tmp_path):
    cluster = two_hosts
    marker = _marker()
    script = f"{OTHER}{_link(tmp_path, 'blaunch')} $other sleep {marker}"
    job_id = _submit(cluster, *WIDE, "-o", "/dev/null", script)
    pids = wait_until(lambda: _sleeping(marker), what="the task running")
    assert f"blaunch-{job_id}.1" in _cgroup_of(pids[0])
    cluster.cli("kill", str(job_id))
    assert cluster.wait([job_id])[job_id]["stat"] == "KILLED"
    wait_until(lambda: not _sleeping(marker), what="the task gone with its job")
    part = _part_dir(cluster, job_id, "pids")
    wait_until(lambda: part is None or not os.path.exists(part), what=f"{part} removed")


def _leave_a_task(cluster, tmp_path):
    """A wide job whose blaunch on h2 leaves a `sleep` behind and returns (its exit status in
    out.JOB), then runs until the file `end` appears. (job id, the sleep's marker)"""
    marker = _marker()
    task = f"sleep {marker} < /dev/null > /dev/null 2>&1 &"
    script = (
        f"{OTHER}{_link(tmp_path, 'blaunch')} $other '{task}'; echo exit=$?; touch launched; "
        "until [ -e end ]; do sleep 0.05; done"
    )
    job_id = _submit(cluster, *WIDE, "-o", "out.%J", script)
    wait_until(lambda: os.path.exists(os.path.join(cluster.state, "launched")), what="blaunch")
    return job_id, marker


def test_a_task_left_on_the_second_host_lives_until_the_job_ends(two_hosts, tmp_path):
    """A task's child that outlives it (a daemon, as an MPI launcher leaves) runs on in the
    job's part, as under rsh, and is killed with the part when the job ends by itself."""
    cluster = two_hosts
    job_id, marker = _leave_a_task(cluster, tmp_path)
    pids = _sleeping(marker)
    assert pids and f"blaunch-{job_id}.1" in _cgroup_of(pids[0])
    open(os.path.join(cluster.state, "end"), "w").close()
    assert cluster.wait([job_id])[job_id]["stat"] == "DONE"
    assert _read(cluster, f"out.{job_id}") == "exit=0\n"
    wait_until(lambda: not _sleeping(marker), what="the leftover task killed")
    part = _part_dir(cluster, job_id, "pids")
    wait_until(lambda: part is None or not os.path.exists(part), what=f"{part} removed")


def test_a_part_whose_job_ended_while_its_host_was_away_is_killed_on_return(two_hosts, tmp_path):
    """The kill sent at the job's end cannot reach an sbatchd that is not connected; when it
    registers again it names the parts it runs, and mbatchd kills the stale one."""
    cluster = two_hosts
    job_id, marker = _leave_a_task(cluster, tmp_path)
    assert _sleeping(marker)
    cluster.h2.send_signal(signal.SIGSTOP)  # h2 cannot reconnect to the new mbatchd
    try:
        cluster.kill9_restarted("mbatchd")
        open(os.path.join(cluster.state, "end"), "w").close()
        assert cluster.wait([job_id])[job_id]["stat"] == "DONE"
        assert _status(cluster, "h2") != "ok"
    finally:
        cluster.h2.send_signal(signal.SIGCONT)
    wait_until(lambda: not _sleeping(marker), what="the stale part killed")


BURN_MB = 150  # what the task holds on h2: more than the job's first host ever does


def _burner(tmp_path):
    """A task that uses 2 s of CPU and holds BURN_MB (written, so resident), then exits."""
    burn = tmp_path / "burn.py"
    burn.write_text(
        f"import time\nb = b'x' * ({BURN_MB} << 20)\nwhile time.process_time() < 2.0:\n    pass\n"
    )
    return f"{sys.executable} {burn}"


def _lsf_out(cluster, tmp_path, *words):
    res = _lsf(cluster, tmp_path, *words)
    assert res.returncode == 0, res
    return res.stdout


def _bacct_cpu_mem(cluster, tmp_path, job_id):
    """(CPU_T seconds, MEM in MB) of bacct -l's figures line."""
    cpu, *_, mem, _, _ = _figures(_lsf_out(cluster, tmp_path, "bacct", "-l", str(job_id)))
    return float(cpu), int(mem.rstrip("M"))


def _skip_without_cgroups():
    v2, v1 = cgroups.mounts()
    if not v1.get("memory") and v2 is None:
        pytest.skip("no cgroups here: a part's use is not measured")


def test_a_tasks_use_on_the_second_host_counts_with_its_job(two_hosts, tmp_path):
    """The job's first host holds little and uses next to no CPU (blaunch waits); its task on
    h2 holds BURN_MB and burns 2 s: once h2's part has reported, the job's figures are the
    sums over its hosts, in bjobs -l and bacct -l."""
    _skip_without_cgroups()
    cluster = two_hosts
    script = f"{OTHER}{_link(tmp_path, 'blaunch')} $other '{_burner(tmp_path)}'; echo exit=$?"
    job_id = _submit(cluster, *WIDE, "-o", "out.%J", script)
    assert cluster.wait([job_id])[job_id]["stat"] == "DONE"
    assert _read(cluster, f"out.{job_id}") == "exit=0\n"
    view = wait_until(
        lambda: ((v := cluster.jobs([job_id])[job_id])["max_mem"] or 0) >= BURN_MB << 20 and v,
        what="h2's part added to the job",
    )
    cpu, mem = _bacct_cpu_mem(cluster, tmp_path, job_id)
    assert BURN_MB <= mem < 4 * BURN_MB, view
    long = _lsf_out(cluster, tmp_path, "bjobs", "-l", str(job_id))
    shown = re.search(r"MAX MEM: (\d+) Mbytes", long)
    assert shown and BURN_MB <= int(shown[1]) < 4 * BURN_MB, long
    # the part's cgroup counts its CPU (cgroup v2, v1 cpu,cpuacct), else wait4 of its task did
    assert 2.0 <= cpu < 30 and 2.0 <= view["cpu_time"] < 30, view
    assert f"The CPU time used is {view['cpu_time']:.1f} seconds" in long, long


def test_a_part_reported_after_its_job_left_memory_updates_the_store(
    two_hosts_forgetting, tmp_path
):
    """h2 is stopped while the job ends: the kill of its part waits, the finished job leaves
    mbatchd's memory, and the part's report, when h2 goes on, updates the job's stored row."""
    _skip_without_cgroups()
    cluster = two_hosts_forgetting
    script = (
        f"{OTHER}{_link(tmp_path, 'blaunch')} $other '{_burner(tmp_path)}'; touch launched; "
        "until [ -e end ]; do sleep 0.05; done"
    )
    job_id = _submit(cluster, *WIDE, "-o", "/dev/null", script)
    wait_until(lambda: os.path.exists(os.path.join(cluster.state, "launched")), 60, "the task done")
    cluster.h2.send_signal(signal.SIGSTOP)
    try:
        open(os.path.join(cluster.state, "end"), "w").close()
        wait_until(
            lambda: cluster.client.call("stats")["jobs_in_memory"] == 0,
            what="the finished job gone from memory",
        )
        first_cpu, first_mem = _bacct_cpu_mem(cluster, tmp_path, job_id)
        assert first_mem < BURN_MB  # the first host's alone
    finally:
        cluster.h2.send_signal(signal.SIGCONT)
    cpu, mem = wait_until(
        lambda: (f := _bacct_cpu_mem(cluster, tmp_path, job_id))[1] >= BURN_MB and f,
        what="h2's part added to the stored job",
        interval=0.5,
    )
    assert mem < first_mem + 4 * BURN_MB
    assert first_cpu + 2.0 <= cpu < 30


def test_blaunch_to_a_host_outside_the_allocation_is_refused(two_hosts, tmp_path):
    cluster = two_hosts
    script = f"{_link(tmp_path, 'blaunch')} h2 true; echo exit=$?"
    job_id = _submit(cluster, "-m", "testhost", "-o", "out.%J", script)
    assert cluster.wait([job_id])[job_id]["stat"] == "DONE"
    out = _read(cluster, f"out.{job_id}")
    assert "host 'h2' is not one of the job's hosts" in out and "exit=1" in out, out


def test_a_restarted_sbatchd_kills_the_tasks_it_no_longer_owns(two_hosts, tmp_path):
    cluster = two_hosts
    marker = _marker()
    script = f"{OTHER}{_link(tmp_path, 'blaunch')} $other sleep {marker}"
    job_id = _submit(cluster, *WIDE, "-o", "/dev/null", script)
    wait_until(lambda: _sleeping(marker), what="the task running")
    cluster.h2.terminate()
    cluster.h2.wait(30)
    assert _sleeping(marker)  # a stopped sbatchd leaves its tasks running
    old_slice = cluster.h2_slice
    cluster.h2, cluster.h2_slice = start_sbatchd(cluster, cluster.h2_state, "h2", 2)
    wait_until(lambda: not _sleeping(marker), what="the unowned task killed")
    remove_cgroup_slice(old_slice)
    # blaunch lost its task: the job ends as a failed command
    assert cluster.wait([job_id])[job_id]["stat"].startswith("FAILED")


def _mpirun_wrapper(tmp_path):
    """blaunch as an executable on PATH, as an MPI launcher's rsh agent finds it."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    agent = bindir / "blaunch"
    agent.write_text(f'#!/bin/sh\nexec {_link(tmp_path, "blaunch")} "$@"\n')
    agent.chmod(0o755)
    return str(bindir)


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no MPI (openmpi-bin) installed")
def test_open_mpi_starts_its_ranks_on_both_hosts_through_blaunch(two_hosts, tmp_path):
    cluster = two_hosts
    rank = (
        'echo rank=$OMPI_COMM_WORLD_RANK $(grep -o "blaunch-[0-9.]*" /proc/self/cgroup | head -1)'
    )
    script = (
        f"PATH={_mpirun_wrapper(tmp_path)}:$PATH; "
        "mpirun --allow-run-as-root --mca plm_rsh_agent blaunch --mca plm_rsh_no_tree_spawn 1 "
        f"--hostfile $LSB_DJOB_HOSTFILE -np 4 sh -c '{rank}'"
    )
    job_id = _submit(cluster, *WIDE, "-o", "out.%J", "-e", "err.%J", script)
    view = cluster.wait([job_id], timeout=180)[job_id]
    out = _read(cluster, f"out.{job_id}")
    assert view["stat"] == "DONE", (view, out, _read(cluster, f"err.{job_id}"))
    lines = sorted(out.split("\n")[:-1])
    assert [line.split()[0] for line in lines] == [f"rank={i}" for i in range(4)], out
    # two ranks in the job's part on h2, two in the job's own group on its first host
    assert sum(f"blaunch-{job_id}.1" in line for line in lines) == 2, out
