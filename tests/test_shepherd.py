"""The shepherd process (roles/sbatchd/shepherd.py) beside sbatchd: the job's TMPDIR, a dead
shepherd, an sbatchd restart with a new shepherd while the old one still runs jobs."""
import os
import signal
import stat
import time

from conftest import alive as _alive
from roles.sbatchd import shepherd


def _shepherd_pid(c):
    sbatchd = c.pid("sbatchd")
    with open(f"/proc/{sbatchd}/task/{sbatchd}/children") as f:
        children = [int(p) for p in f.read().split()]
    found = [p for p in children if b"--shepherd" in open(f"/proc/{p}/cmdline", "rb").read()]
    assert len(found) == 1, children
    return found[0]


def test_each_attempt_has_its_own_tmpdir_removed_at_the_end(cluster, tmp_path):
    out = tmp_path / "out"
    job = cluster.submit(["sh", "-c", 'echo "$TMPDIR"; stat -c "%u %a" "$TMPDIR"; '
                                      'echo x > "$TMPDIR/f"; ls "$TMPDIR"'], out=str(out))
    assert cluster.wait([job])[job]["stat"] == "DONE"
    tmpdir, perms, listing = out.read_text().split("\n")[:3]
    assert os.path.basename(tmpdir).startswith(f"lavalite.{job}.1.")
    assert os.path.dirname(tmpdir) == cluster.conf.sbatchd.tmp_dir
    assert perms == f"{os.getuid()} 700" and listing == "f"
    deadline = time.time() + 10                    # the shepherd's cleaner removes it
    while os.path.exists(tmpdir) and time.time() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(tmpdir)


def test_a_killed_shepherd_ends_its_jobs_lost_and_a_new_one_takes_over(make_cluster, tmp_path):
    c = make_cluster(slots=4)
    pids = tmp_path / "pids"
    pids.mkdir()
    jobs = [c.submit(["sh", "-c", f"echo $$ > {pids}/{i}; exec sleep 300"]) for i in range(3)]
    c.wait(jobs, states=("RUN",))
    deadline = time.time() + 20
    while len(os.listdir(pids)) < 3 and time.time() < deadline:
        time.sleep(0.05)
    job_pids = [int((pids / str(i)).read_text()) for i in range(3)]
    old = _shepherd_pid(c)
    os.kill(old, signal.SIGKILL)
    views = c.wait(jobs, timeout=30)
    for j in jobs:         # no shepherd saw them end: lost, and killed so none runs unwatched
        assert views[j]["stat"] == "FAILED(node_lost)", views[j]
    deadline = time.time() + 10
    while any(_alive(p) for p in job_pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in job_pids)
    assert "the shepherd (pid %d) is gone" % old in c.logs()
    after = c.submit(["true"])
    assert c.wait([after])[after]["stat"] == "DONE"
    assert _shepherd_pid(c) != old


def test_sbatchd_restart_leaves_the_old_shepherd_its_jobs(make_cluster):
    """The old shepherd finishes what it runs and exits; the new sbatchd adopts those jobs
    through their locks and starts new ones with a shepherd of its own."""
    c = make_cluster(slots=4)
    long = c.submit(["sh", "-c", "sleep 3; exit 7"])
    c.wait_started([long])
    old = _shepherd_pid(c)
    adir = os.path.join(c.conf.sbatchd.work_dir, f"{long}.1")
    assert shepherd.holder(adir) == old            # the lock names its holder
    st = os.stat(os.path.join(adir, "shepherd"))
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    c.kill9_restarted("sbatchd")
    new = c.submit(["true"])
    assert c.wait([new])[new]["stat"] == "DONE"
    assert _shepherd_pid(c) != old and _alive(old)
    view = c.wait([long], timeout=30)[long]
    assert (view["stat"], view["exit_code"]) == ("FAILED(exit)", 7)
    deadline = time.time() + 10
    while _alive(old) and time.time() < deadline:  # nothing left in its care: it exits
        time.sleep(0.05)
    assert not _alive(old)
