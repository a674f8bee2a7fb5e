"""Clusters sharing a host never touch each other: each has its own cgroup slice (derived from
its name and state directory), and its sbatchd cleans only what its own shepherds made; `down`
leaves no run directory or slice behind; an output that cannot take its name leaves no
hidden file."""

import os
import signal
import subprocess

import pytest
from conftest import wait_until

from lavalite import auth
from roles.sbatchd import cgroups, shepherd

_V2, _V1 = cgroups.mounts()
_MOUNTS = sorted({*_V1.values(), *([_V2] if _V2 else [])})
CONFINED = os.geteuid() == 0 and "memory" in _V1  # jobs run in v1 memory groups here


def _held_job(c, tmp_path, name):
    """A job that writes its TMPDIR and memory cgroup down, then runs until `<name>.go`
    exists, and ends DONE only if its TMPDIR is still there: (job id, what it wrote, go)."""
    facts, go = tmp_path / f"{name}.facts", tmp_path / f"{name}.go"
    script = (
        f'{{ echo "$TMPDIR"; grep -E "^[0-9]+:([^:]*,)?memory(,[^:]*)?:" /proc/self/cgroup'
        f" | cut -d: -f3; }} > {facts}.part; mv {facts}.part {facts}; "
        f'while [ ! -e {go} ]; do sleep 0.1; done; test -d "$TMPDIR"'
    )
    job = c.submit(["sh", "-c", script])
    wait_until(facts.exists, 60, f"{name}'s job to start")
    return job, facts.read_text().splitlines(), go


def _cgroup_dir(group):
    """The job's memory group as a directory (None without cgroups)."""
    return os.path.join(_V1["memory"], group.lstrip("/")) if CONFINED else None


def _restart_sbatchd(c, sig):
    """SIGTERM (a clean stop) or SIGKILL to c's sbatchd; `up` starts it again, and it has
    adopted its running job (and cleaned what it owns) once it says so in its log."""
    before = c.logs().count("adopted 1 job attempts")
    c.restarted("sbatchd", sig)
    wait_until(
        lambda: c.logs().count("adopted 1 job attempts") > before, 60, "sbatchd to adopt its job"
    )


def test_two_clusters_restarting_their_sbatchd_never_touch_each_others_jobs(make_cluster, tmp_path):
    """Each cluster's sbatchd stopped cleanly and killed -9 while both clusters' jobs run:
    the other cluster's job keeps its TMPDIR and its cgroup (with the job in it), and ends
    DONE (it exits 0 only if its TMPDIR is still there)."""
    a = make_cluster(derived_slice=True)
    b = make_cluster(derived_slice=True)
    assert a.conf.sbatchd.cgroup_slice != b.conf.sbatchd.cgroup_slice
    assert a.conf.sbatchd.cgroup_slice.startswith("lavalite-lavalite-")
    job_a, (tmp_a, group_a), go_a = _held_job(a, tmp_path, "a")
    job_b, (tmp_b, group_b), go_b = _held_job(b, tmp_path, "b")
    if CONFINED:
        assert f"/{a.conf.sbatchd.cgroup_slice}/" in group_a, group_a
    for restarted, (tmp, group) in ((b, (tmp_a, group_a)), (a, (tmp_b, group_b))):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            _restart_sbatchd(restarted, sig)
            assert os.path.isdir(tmp), f"{tmp} of the other cluster's job was removed"
            if _cgroup_dir(group):  # still there, and the job still in it
                with open(os.path.join(_cgroup_dir(group), "cgroup.procs")) as f:
                    assert f.read().split(), f"{group} of the other cluster's job was emptied"
    go_a.touch()
    go_b.touch()
    assert a.wait([job_a])[job_a]["stat"] == "DONE", a.logs()
    assert b.wait([job_b])[job_b]["stat"] == "DONE", b.logs()


def _slice_dirs(c):
    """The cluster's slice directories that exist, in every hierarchy."""
    return [d for m in _MOUNTS if os.path.isdir(d := os.path.join(m, c.conf.sbatchd.cgroup_slice))]


def test_down_leaves_no_run_dir_and_no_slice(make_cluster):
    c = make_cluster(derived_slice=True)
    jobs = [c.submit(["true"]) for _ in range(3)]
    assert all(j["stat"] == "DONE" for j in c.wait(jobs).values())
    run_dir = c.conf.paths.run_dir
    assert os.path.isdir(c.conf.sbatchd.work_dir)
    if CONFINED:
        assert _slice_dirs(c), "the jobs ran in no cgroup slice"
    c.cli("down")
    c.proc.wait(60)
    assert not os.path.exists(run_dir), os.listdir(run_dir)
    assert os.path.isdir(os.path.dirname(run_dir))  # the per-user parent other clusters share
    assert not _slice_dirs(c), c.logs()


def test_output_that_cannot_take_its_name_leaves_no_hidden_file(cluster, tmp_path):
    """The job makes a directory where its output file should go: the output goes beside it
    under its visible name and the job's message says where; an empty one is removed."""
    outdir = tmp_path / "outputs"
    outdir.mkdir()
    out = outdir / "result.out"
    job = cluster.submit(["sh", "-c", f"echo kept; mkdir {out}"], out=str(out))
    empty = outdir / "empty.out"
    quiet = cluster.submit(["mkdir", str(empty)], out=str(empty))
    views = cluster.wait([job, quiet])
    assert views[job]["stat"] == views[quiet]["stat"] == "DONE"
    visible = outdir / f"result.out.lavalite-{job}.1"
    assert visible.read_text() == "kept\n"
    assert (
        f"cannot move output to {out}: Is a directory; it is in {visible}" in views[job]["message"]
    ), views[job]
    assert (
        f"cannot move output to {empty}: Is a directory; it was empty" in views[quiet]["message"]
    ), views[quiet]
    assert sorted(os.listdir(outdir)) == ["empty.out", "result.out", visible.name]


def test_output_stays_hidden_only_where_its_directory_refuses_everything(tmp_path):
    """As a user whose output directory became read-only while the job ran: the output can go
    neither to its name nor beside it, so it stays where it is, and the message says where."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to act as another user (root is refused nothing)")
    outdir = tmp_path / "home"
    outdir.mkdir()
    os.chown(tmp_path, 65534, 65534)  # nobody's, as the job's user owns its outputs
    os.chown(outdir, 65534, 65534)
    temp = outdir / ".job.out.lavalite-5.1"
    temp.write_text("output\n")
    outdir.chmod(0o555)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: as nobody, as the shepherd would
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(wfd, shepherd._deliver(str(temp), str(outdir / "job.out")).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        note = f.read()
    os.waitpid(pid, 0)
    assert note == f"cannot move output to {outdir / 'job.out'}: Permission denied; it is in {temp}"
    assert temp.read_text() == "output\n"


def test_sbatchd_refuses_a_work_dir_another_cluster_owns(make_cluster, tmp_path):
    """Two clusters given one records directory would adopt, report and remove each other's
    jobs: the second sbatchd refuses to start (exit 2), naming the key and the owner, and the
    first cluster's running job is not touched."""
    a = make_cluster()
    job, _, go = _held_job(a, tmp_path, "a")
    b = make_cluster(start=False, sbatchd={"work_dir": a.conf.sbatchd.work_dir})
    auth.create_key(b.conf.cluster.key_file)  # as `up` would, before the daemons
    res = subprocess.run(
        b.program + ["--role", "sbatchd", "--conf", b.conf_path],
        env=b.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2, res.stderr
    assert (
        f"[sbatchd] work_dir {a.conf.sbatchd.work_dir} belongs to the cluster whose "
        f"state_dir is {a.state}"
    ) in res.stderr, res.stderr
    assert [n for n in os.listdir(a.conf.sbatchd.work_dir) if n == f"{job}.1"]
    go.touch()
    assert a.wait([job])[job]["stat"] == "DONE", a.logs()
