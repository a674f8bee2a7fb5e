"""sbatchd hardened, on this machine's real cgroups: memory (v1) ends FAILED(oom), a fork bomb
meets pids.max, a kill reaches what left the process group (v1 freezer, v2 cgroup.kill), stale
groups are cleaned at start; sbatchd killed -9 while jobs run; retried output; peek -f."""

import os
import re
import signal
import statistics
import subprocess
import time

import pytest
from conftest import alive as _alive
from conftest import wait_until

from roles.sbatchd import cgroups, scratch

_V2, _V1 = cgroups.mounts()


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("cgroup tests need root (sbatchd confines jobs only when it runs as root)")


def _v1_cluster(make_cluster, **kw):
    _need_root()
    missing = [c for c in ("memory", "pids", "freezer") if c not in _V1]
    if missing:
        pytest.skip(f"no cgroup v1 {', '.join(missing)} controller mounted here")
    return make_cluster(sbatchd={"cgroups": "v1", **kw.pop("sbatchd", {})}, **kw)


def _group_dirs(c, name, kind):
    sl = c.conf.sbatchd.cgroup_slice
    if kind == "v2":
        return [os.path.join(_V2, sl, name)]
    return [os.path.join(m, sl, name) for m in _V1.values()]


def _backend(c, kind):
    sl = c.conf.sbatchd.cgroup_slice
    return cgroups.V2(_V2, sl) if kind == "v2" else cgroups.V1(_V1, sl)


def _wait_emptied(c, kind, timeout=10):
    """Every group of the cluster's slice without a task: an ended job's group is kept by its
    shepherd for the next job (v1) or removed, never left holding what the job started."""
    cg = _backend(c, kind)
    wait_until(
        lambda: not _held(cg), timeout, lambda: f"the slice's groups to hold no task: {_held(cg)}"
    )


def _held(cg):
    """{group: its pids} of the groups that still hold a task."""
    return {name: pids for name in cg.names() if (pids := cg.group(name).pids())}


def test_memory_above_limit_ends_failed_oom_v1(make_cluster):
    c = _v1_cluster(make_cluster)
    # writes 256 MB under a 64 MB limit (memsw too: no swap to escape into)
    job = c.submit(
        ["python3", "-c", "b = b'x' * (256 << 20); print('survived')"],
        memory=64 << 20,
        out="/dev/null",
    )
    small = c.submit(["python3", "-c", "b = b'x' * (8 << 20)"], memory=64 << 20)
    jobs = c.wait([job, small], timeout=60)
    assert jobs[job]["stat"] == "FAILED(oom)", jobs[job]
    assert jobs[small]["stat"] == "DONE"
    long = c.cli("jobs", "-l", str(job)).stdout
    assert "TERM_MEMLIMIT" in long and "killed by the out-of-memory killer" in long, long
    _wait_emptied(c, "v1")


def test_v1_group_reused_with_the_next_jobs_limits_and_its_own_oom_count(make_cluster):
    """An ended attempt's empty group is kept by its shepherd for the next attempt, under the
    same name (no mkdir, rmdir or rename per job): the next job gets its own limits, and an
    OOM before it is not counted as its own."""
    c = _v1_cluster(make_cluster, slots=1)
    base = os.path.join(_V1["memory"], c.conf.sbatchd.cgroup_slice)
    first = c.submit(["python3", "-c", "b = b'x' * (256 << 20)"], memory=64 << 20, out="/dev/null")
    assert c.wait([first], timeout=60)[first]["stat"] == "FAILED(oom)"
    kept = _backend(c, "v1").names()
    assert len(kept) == 1 and kept[0].startswith("shepherd-"), kept
    group = os.path.join(base, kept[0])
    with open(os.path.join(group, "memory.oom_control")) as f:
        assert "oom_kill 1" in f.read()
    second = c.submit(["sleep", "2"])
    c.wait_started([second])
    assert _backend(c, "v1").names() == kept
    # START is reported once the order is with the shepherd: the job joins the group soon after
    wait_until(
        lambda: open(os.path.join(group, "tasks")).read().split(),
        10,
        "the second job running in the kept group",
    )
    with open(os.path.join(group, "memory.limit_in_bytes")) as f:
        assert int(f.read()) > 1 << 60  # unlimited again, not the 64 MB
    with open(os.path.join(group, "memory.oom_control")) as f:
        assert "oom_kill 1" in f.read()  # the same group, counter and all
    assert c.wait([second], timeout=30)[second]["stat"] == "DONE"


def test_v1_kept_group_whose_charges_refuse_the_next_limit_is_made_again(make_cluster):
    """A kept group still charged for tmpfs pages its job left (under the 8 MB kept) cannot
    take a next job's lower memory limit: the shepherd removes it and makes it again, and the
    job runs under its own limit."""
    c = _v1_cluster(make_cluster, slots=1)
    cg = _backend(c, "v1")
    shm = f"/dev/shm/lavalite-test-{os.getpid()}"
    try:
        first = c.submit(["sh", "-c", f"head -c 4000000 /dev/zero > {shm}"])
        assert c.wait([first], timeout=30)[first]["stat"] == "DONE"
        (kept,) = cg.names()
        usage = int(cg.group(kept).knob("memory", "memory.usage_in_bytes"))
        assert usage >= 4000000, usage
        second = c.submit(["true"], memory=1 << 20)
        assert c.wait([second], timeout=30)[second]["stat"] == "DONE"
        assert cg.names() == [kept]  # made again, and kept after the second job
        assert int(cg.group(kept).knob("memory", "memory.limit_in_bytes")) == 1 << 20
        assert int(cg.group(kept).knob("memory", "memory.usage_in_bytes")) < usage
        assert f"cgroup {kept} not reused" in c.logs()
    finally:
        os.unlink(shm)


def _wait_gone(path, seconds, what):
    wait_until(lambda: not os.path.lexists(path), seconds, what)


def test_v1_an_empty_tmpdir_goes_to_the_users_next_job(make_cluster, tmp_path):
    """A job that leaves its group and its TMPDIR empty hands the directory to its user's next
    job, renamed (no mkdir and rmdir per job); one left with a file in it, or opened to
    others, is removed at once; a kept one that no job takes, after scratch.KEEP_FOR."""
    c = _v1_cluster(make_cluster, slots=1, sbatchd={"shepherds": 1})
    show = 'echo "$TMPDIR" $(stat -c "%i %a" "$TMPDIR")'

    def run(script):
        out = tmp_path / f"{len(os.listdir(tmp_path))}.out"
        job = c.submit(["sh", "-c", script], out=str(out))
        assert c.wait([job])[job]["stat"] == "DONE"
        return out.read_text().split()

    first = run(show)
    second = run(show)
    assert second[0] != first[0] and second[1:] == first[1:] == [first[1], "700"]
    assert not os.path.lexists(first[0])  # renamed, not copied
    third = run(show + '; touch "$TMPDIR/left"')
    assert third[1] == first[1]
    _wait_gone(third[0], 3, "a TMPDIR with files left in it to be removed")
    opened = run(show + '; chmod 755 "$TMPDIR"')
    _wait_gone(opened[0], 3, "a TMPDIR opened to others to be removed")
    last = run(show)
    assert os.path.isdir(last[0])  # kept for a next job...
    _wait_gone(last[0], scratch.KEEP_FOR + 5, "a kept TMPDIR no job took to be removed")


def _cgroups_of(path):
    """{controller: path} from a /proc/.../cgroup file."""
    out = {}
    with open(path) as f:
        for line in f:
            _, ctrls, where = line.rstrip("\n").split(":", 2)
            for ctrl in ctrls.split(","):
                out[ctrl] = where
    return out


def test_v1_jobs_start_inside_their_groups_and_the_shepherd_stays_out(make_cluster, tmp_path):
    """v1: the shepherd's loop thread forks each job from inside its groups (no /bin/sh
    prelude); a job with --pids 1 takes the prelude (the thread would be its one task). Every
    job's first process is in its own groups; after a burst no thread of any shepherd is left
    in a job's group, and the first thread (the owner of its memory) is where sbatchd is."""
    c = _v1_cluster(make_cluster, slots=8)
    sl = c.conf.sbatchd.cgroup_slice
    jobs = {
        c.submit(["cat", "/proc/self/cgroup"], out=str(tmp_path / f"{i}.out")): i for i in range(40)
    }
    jobs[c.submit(["cat", "/proc/self/cgroup"], pids=1, out=str(tmp_path / "one.out"))] = "one"
    views = c.wait(list(jobs), timeout=90)
    for job, name in jobs.items():
        assert views[job]["stat"] == "DONE", views[job]
        seen = _cgroups_of(tmp_path / f"{name}.out")
        names = {seen[ctrl] for ctrl in ("memory", "pids", "cpu", "freezer") if ctrl in _V1}
        assert len(names) == 1 and re.fullmatch(rf".*/{sl}/shepherd-\d+\.\d+", names.pop()), (
            job,
            seen,
        )
    shepherds = c.shepherds()
    assert shepherds, "no shepherd process found"
    for pid in shepherds:
        for tid in os.listdir(f"/proc/{pid}/task"):
            groups = _cgroups_of(f"/proc/{pid}/task/{tid}/cgroup")
            assert not any(f"/{sl}/" in g for g in groups.values()), (pid, tid, groups)
    sbatchd = c.pid("sbatchd")
    for pid in shepherds:
        assert _cgroups_of(f"/proc/{pid}/task/{pid}/cgroup") == _cgroups_of(
            f"/proc/{sbatchd}/cgroup"
        )


def test_fork_bomb_contained_by_pids_max(make_cluster, tmp_path):
    c = _v1_cluster(make_cluster)
    out = tmp_path / "bomb.out"
    # bounded: at most 200 children, each sleeping 30 s; pids.max 20 stops it near 20
    bomb = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30); os._exit(0)\n"
        "    n += 1\n"
        "print(n, flush=True)\n"
    )
    job = c.submit(["python3", "-c", bomb], pids=20, out=str(out))
    view = c.wait([job], timeout=60)[job]
    forked = int(out.read_text())
    print(f"fork bomb under pids.max=20: {forked} children before fork failed")
    assert view["stat"] == "DONE" and 0 < forked < 20
    _wait_emptied(c, "v1")  # the children it left were killed with its group


def _escape_and_kill(c, kind, tmp_path):
    """A job whose child leaves the process group (setsid): bkill must still end it."""
    pidfile = tmp_path / "escaped.pid"
    job = c.submit(["sh", "-c", f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 300' & sleep 300"])
    c.wait([job], states=("RUN",))
    wait_until(
        lambda: pidfile.exists() and pidfile.read_text().strip(),
        20,
        "the escaped process's pid file",
    )
    escaped = int(pidfile.read_text())
    group = _cgroups_of(f"/proc/{escaped}/cgroup")["" if kind == "v2" else "memory"]
    name = os.path.basename(group)
    assert group.endswith(f"/{c.conf.sbatchd.cgroup_slice}/{name}"), group
    c.cli("kill", str(job))
    assert c.wait([job], timeout=30)[job]["stat"] == "KILLED"
    wait_until(
        lambda: not _alive(escaped),
        10,
        "bkill to end the process that left the job's process group",
    )
    _wait_emptied(c, kind)
    if kind == "v2":  # a group per job; v1 may keep it for the next one
        _wait_removed(_group_dirs(c, name, kind))


def _wait_removed(dirs, timeout=10):
    """The shepherd's cleaner removes an ended attempt's group moments after its end."""
    wait_until(
        lambda: not any(os.path.exists(d) for d in dirs), timeout, f"the cleaner to remove {dirs}"
    )


def test_kill_reaches_processes_outside_the_group_v1_freezer(make_cluster, tmp_path):
    c = _v1_cluster(make_cluster)
    _escape_and_kill(c, "v1", tmp_path)


def test_v2_cgroup_kill_on_the_unified_mount(make_cluster, tmp_path):
    _need_root()
    if _V2 is None:
        pytest.skip("no cgroup2 mount on this machine")
    c = make_cluster(sbatchd={"cgroups": "v2"})
    assert f"cgroups: v2 below {_V2}" in c.logs()
    _escape_and_kill(c, "v2", tmp_path)


def test_stale_cgroups_of_its_own_shepherds_removed_at_start_and_no_other(make_cluster):
    """At start sbatchd removes the groups its own shepherds left (the spool lists the
    shepherds it started), killing what is still in them (a crash leftover); a group of a
    shepherd it did not start, in the same slice, is not its to touch."""
    _need_root()
    if "memory" not in _V1:
        pytest.skip("no cgroup v1 memory controller mounted here")
    c = make_cluster(start=False, sbatchd={"cgroups": "v1"})
    ours, foreign = "shepherd-999999991.1", "shepherd-999999992.1"
    os.makedirs(c.conf.paths.spool_dir)
    with open(os.path.join(c.conf.paths.spool_dir, "shepherds-testhost"), "w") as f:
        f.write("999999991\n")
    cg = _backend(c, "v1")
    orphans = {}
    for name in (ours, foreign):
        for d in _group_dirs(c, name, "v1"):
            os.makedirs(d)
        orphans[name] = int(
            subprocess.run(
                ["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True
            ).stdout
        )
        with open(os.path.join(_group_dirs(c, name, "v1")[0], "cgroup.procs"), "w") as f:
            f.write(str(orphans[name]))
    try:
        c.start()
        assert _alive(orphans[foreign]) and cg.group(foreign).pids() == [orphans[foreign]]
        assert not _alive(orphans[ours])
        assert not cg.group(ours).exists()
        assert f"removed stale cgroup {ours}" in c.logs()
    finally:
        cg.group(foreign).remove(wait=1.0)
        cg.group(ours).remove(wait=1.0)


def test_sbatchd_kill9_while_20_jobs_run_each_reports_its_true_end(make_cluster):
    c = make_cluster(slots=20)
    # job i sleeps, then exits with code i; every fifth kills itself with a signal; a few end
    # while no sbatchd is running
    cmds = {}
    for i in range(20):
        sleep = (0.3, 1.5, 3.0, 5.0)[i % 4]
        end = f"kill -{(signal.SIGTERM, signal.SIGUSR1)[i % 2]} $$" if i % 5 == 0 else f"exit {i}"
        cmds[i] = f"sleep {sleep}; {end}"
    ids = {c.submit(["sh", "-c", cmd]): i for i, cmd in cmds.items()}
    c.wait_started(list(ids))
    c.kill9_restarted("sbatchd")  # `lavalite up` starts it again, as systemd would
    jobs = c.wait(list(ids), timeout=60)
    for job_id, i in ids.items():
        j = jobs[job_id]
        if i % 5 == 0:
            sig = (signal.SIGTERM, signal.SIGUSR1)[i % 2]
            assert (j["stat"], j["exit_signal"]) == ("FAILED(signal)", sig), j
        elif i == 0:
            assert j["stat"] == "DONE"
        else:
            assert (j["stat"], j["exit_code"]) == ("FAILED(exit)", i), j
    assert "adopted" in c.logs() and "node_lost" not in c.logs()


def test_v1_restarted_sbatchd_keeps_running_jobs_groups_and_drops_the_kept_ones(
    make_cluster, tmp_path
):
    """Groups are named after the shepherd that keeps them, so a restarted sbatchd learns a
    running attempt's group from its record: that one stays (its job runs on), while those
    the old shepherds kept for jobs they will never start are removed."""
    c = _v1_cluster(make_cluster, slots=4)
    cg = _backend(c, "v1")
    short = [c.submit(["sleep", "0.5"]) for _ in range(3)]
    assert all(v["stat"] == "DONE" for v in c.wait(short, timeout=30).values())
    kept = cg.names()
    assert len(kept) == 3, kept
    out = tmp_path / "long.cgroup"  # written at once (-o files are moved at the end)
    long = c.submit(
        ["sh", "-c", f"cat /proc/self/cgroup > {out}.part; mv {out}.part {out}; sleep 8"]
    )
    wait_until(out.exists, 20, "the long job's cgroup file")
    group = os.path.basename(_cgroups_of(out)["memory"])
    assert group in kept, (group, kept)  # a kept group serves the next job
    c.kill9_restarted("sbatchd")
    wait_until(
        lambda: cg.names() == [group],
        20,
        lambda: f"only the running job's group {group} kept: {cg.names()}\n{c.logs()}",
    )
    assert cg.group(group).pids(), "the running job's group lost its tasks"
    assert c.wait([long], timeout=30)[long]["stat"] == "DONE"
    assert "adopted 1 job attempts" in c.logs()
    assert c.wait([c.submit(["true"])], timeout=30) and "node_lost" not in c.logs()


def test_retried_job_output_holds_only_the_last_attempt(cluster, tmp_path):
    outdir = tmp_path / "outputs"
    outdir.mkdir()
    out = outdir / "retry.out"
    job = cluster.submit(
        [
            "sh",
            "-c",
            "echo attempt $LAVALITE_ATTEMPT; echo err $LAVALITE_ATTEMPT >&2;"
            " [ $LAVALITE_ATTEMPT -ge 3 ] || exit 1",
        ],
        out=str(out),
        retries=2,
    )
    view = cluster.wait([job], timeout=60)[job]
    assert view["stat"] == "DONE" and view["attempt"] == 3
    assert out.read_text() == "attempt 3\nerr 3\n"
    assert os.listdir(outdir) == ["retry.out"], "an attempt's temp file was left behind"


def test_peek_shows_running_output_and_follows(cluster):
    job = cluster.submit(
        [
            "python3",
            "-u",
            "-c",
            "import time\n"
            "for i in range(12):\n"
            "    print(i, repr(time.time()), flush=True); time.sleep(0.3)\n",
        ]
    )
    cluster.wait([job], states=("RUN",))
    follower = subprocess.Popen(
        cluster.program + ["peek", "-f", str(job)],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    latencies, seen = [], []
    for line in follower.stdout:
        n, stamp = line.split()
        seen.append(int(n))
        latencies.append(time.time() - float(stamp))
    assert follower.wait(30) == 0, follower.stderr.read()
    assert seen == list(range(12)), "peek -f must show every line once, in order"
    tail = latencies[1:]  # the first lines were written before the follower started
    print(
        f"peek -f latency over {len(tail)} lines: median {statistics.median(tail) * 1000:.0f} ms, "
        f"max {max(tail) * 1000:.0f} ms"
    )
    assert cluster.wait([job])[job]["stat"] == "DONE"
    done = cluster.cli("peek", str(job), check=False)
    assert done.returncode == 1 and "has finished" in done.stderr


def test_peek_of_pending_and_unknown_jobs(make_cluster):
    c = make_cluster(slots=1)
    blocker = c.submit(["sleep", "30"])
    pending = c.submit(["sleep", "30"])
    c.wait([blocker], states=("RUN",))
    res = c.cli("peek", str(pending), check=False)
    assert res.returncode == 1 and "pending" in res.stderr
    res = c.cli("peek", "999999", check=False)
    assert res.returncode == 1 and "No matching job" in res.stderr
    now = c.cli("peek", str(blocker))
    assert now.returncode == 0 and now.stdout == ""
    c.client.kill([blocker, pending])


def test_limits_validated_against_the_queue(make_cluster):
    c = make_cluster(
        queues={"serial": {"max_memory": "1G", "default_memory": "256M", "max_pids": "100"}}
    )
    res = c.cli("submit", "-M", "2G", "--", "true", check=False)
    assert res.returncode == 1 and "-M 2G exceeds queue <serial>'s max_memory of 1G" in res.stderr
    res = c.cli("submit", "--pids", "500", "--", "true", check=False)
    assert res.returncode == 1 and "max_pids of 100" in res.stderr
    res = c.cli("submit", "-M", "lots", "--", "true", check=False)
    assert res.returncode == 2 and "expected a size such as 512 (MB)" in res.stderr
    job = c.submit(["true"])
    assert "MEMLIMIT: 256M" in c.cli("jobs", "-l", str(job)).stdout
    job = int(c.cli("submit", "-M", "512", "--", "true").stdout.split("<")[1].split(">")[0])
    assert "MEMLIMIT: 512M" in c.cli("jobs", "-l", str(job)).stdout


def test_peek_reads_the_jobs_file_not_what_its_path_points_to(cluster, tmp_path):
    """The user owns the directory of their output: a symlink swapped in for the running file
    must not make root's sbatchd read another file for them."""
    secret = tmp_path / "secret"
    secret.write_text("SECRET\n")
    outdir = tmp_path / "out"
    outdir.mkdir()
    job = cluster.submit(["sh", "-c", "echo real output; sleep 30"], out=str(outdir / "o"))
    running = outdir / f".o.lavalite-{job}.1"
    wait_until(
        lambda: running.exists() and running.read_text(),
        30,
        lambda: "the job's first output\n" + cluster.logs(),
    )
    running.rename(outdir / "moved")
    running.symlink_to(secret)
    res = cluster.cli("peek", str(job))
    assert res.stdout == "real output\n" and "SECRET" not in res.stdout
    cluster.client.kill([job])
