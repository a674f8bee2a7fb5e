"""The shepherd processes (roles/sbatchd/shepherd.py) beside sbatchd: the job's TMPDIR, a dead
shepherd, an sbatchd restart with new shepherds while an old one still runs jobs."""

import asyncio
import contextlib
import os
import signal
import stat
import struct
import subprocess
import sys

from conftest import alive as _alive
from conftest import wait_until
from syslogsink import SyslogSink

from roles.sbatchd import record
from roles.sbatchd.link import ShepherdLink


def _shepherds(c):
    """The pids of sbatchd's shepherd processes."""
    sbatchd = c.pid("sbatchd")
    with open(f"/proc/{sbatchd}/task/{sbatchd}/children") as f:
        children = [int(p) for p in f.read().split()]
    return {p for p in children if b"--shepherd" in open(f"/proc/{p}/cmdline", "rb").read()}


def _holder(c, job):
    return record.holder(os.path.join(c.conf.sbatchd.work_dir, f"{job}.1"))


def test_each_attempt_has_its_own_tmpdir_removed_at_the_end(cluster, tmp_path):
    """Removed whether the job left files in it (rmtree) or not (rmdir)."""
    out, empty = tmp_path / "out", tmp_path / "empty"
    job = cluster.submit(
        [
            "sh",
            "-c",
            'echo "$TMPDIR"; stat -c "%u %a" "$TMPDIR"; echo x > "$TMPDIR/f"; ls "$TMPDIR"',
        ],
        out=str(out),
    )
    idle = cluster.submit(["sh", "-c", 'echo "$TMPDIR"'], out=str(empty))
    assert all(v["stat"] == "DONE" for v in cluster.wait([job, idle]).values())
    tmpdir, perms, listing = out.read_text().split("\n")[:3]
    assert os.path.basename(tmpdir).startswith(f"lavalite.{job}.1.")
    assert os.path.dirname(tmpdir) == cluster.conf.sbatchd.tmp_dir
    assert perms == f"{os.getuid()} 700" and listing == "f"
    dirs = [tmpdir, empty.read_text().strip()]
    wait_until(
        lambda: not any(os.path.exists(d) for d in dirs),
        10,
        f"the shepherd's cleaner to remove {dirs}",
    )


def test_a_killed_shepherd_ends_its_jobs_lost_and_a_new_one_takes_over(make_cluster, tmp_path):
    c = make_cluster(slots=4)  # two shepherds (the default)
    pids = tmp_path / "pids"
    pids.mkdir()
    jobs = [c.submit(["sh", "-c", f"echo $$ > {pids}/{i}; exec sleep 300"]) for i in range(4)]
    c.wait_started(jobs)
    wait_until(lambda: len(os.listdir(pids)) == 4, 20, "the four jobs' pid files")
    job_pids = {j: int((pids / str(i)).read_text()) for i, j in enumerate(jobs)}
    before = _shepherds(c)
    holders = {j: _holder(c, j) for j in jobs}
    assert len(before) == 2 and set(holders.values()) == before  # the attempts were shared
    victim = holders[jobs[0]]
    os.kill(victim, signal.SIGKILL)
    lost = [j for j in jobs if holders[j] == victim]
    views = c.wait(lost, timeout=30)
    for j in lost:  # no shepherd saw them end: lost, and killed so none runs unwatched
        assert views[j]["stat"] == "FAILED(node_lost)", views[j]
    wait_until(
        lambda: not any(_alive(job_pids[j]) for j in lost),
        10,
        "the lost jobs' processes to be killed",
    )
    assert f"the shepherd (pid {victim}) is gone" in c.logs()
    for j in set(jobs) - set(lost):  # the other shepherd's jobs run on
        assert c.jobs([j])[j]["stat"] == "RUN" and _alive(job_pids[j])
    after = c.submit(["true"])
    assert c.wait([after])[after]["stat"] == "DONE"
    now = _shepherds(c)
    assert len(now) == 2 and victim not in now and before - {victim} <= now


def test_sbatchd_restart_leaves_the_old_shepherd_its_jobs(make_cluster):
    """The old shepherd finishes what it runs and exits; the new sbatchd adopts those jobs
    through their locks and starts new ones with a shepherd of its own."""
    c = make_cluster(slots=4)
    long = c.submit(["sh", "-c", "sleep 3; exit 7"])
    c.wait_started([long])
    old = _holder(c, long)  # the lock names its holder
    assert old in _shepherds(c)
    path = os.path.join(c.conf.sbatchd.work_dir, f"{long}.1")
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    # whom it runs, and as which process group: the pid once the shepherd has spawned it (the
    # start is reported when the order leaves sbatchd, a moment before)
    rec = wait_until(
        lambda: "pid" in (r := record.read(path)) and r, 10, "the shepherd's pid in the record"
    )
    assert rec["shepherd"] == old and rec["spec"]["id"] == long and _alive(rec["pid"])
    c.kill9_restarted("sbatchd")
    new = c.submit(["true"])
    assert c.wait([new])[new]["stat"] == "DONE"
    assert old not in _shepherds(c) and _alive(old)
    view = c.wait([long], timeout=30)[long]
    assert (view["stat"], view["exit_code"]) == ("FAILED(exit)", 7)
    # nothing left in its care: it exits
    wait_until(lambda: not _alive(old), 10, "the old shepherd to exit")


def test_a_stray_directory_among_the_records_is_reported_lost_and_removed(make_cluster):
    """No record where one should be (a directory, as an older LavaLite made per attempt):
    the restarted sbatchd neither fails nor trusts it; it reports that attempt lost, removes
    the directory and runs jobs as before."""
    c = make_cluster(slots=2)
    stray = os.path.join(c.conf.sbatchd.work_dir, "999.1")
    os.makedirs(stray)
    with open(os.path.join(stray, "status"), "w") as f:
        f.write('{"exit_code": 0}')
    assert record.read(stray) == {} and record.holder(stray) is None
    c.kill9_restarted("sbatchd")
    wait_until(
        lambda: not os.path.exists(stray),
        20,
        lambda: "the stray directory to be removed\n" + c.logs(),
    )
    job = c.submit(["true"])
    assert c.wait([job])[job]["stat"] == "DONE"


@contextlib.contextmanager
def _shepherd(log_to, on_ended=lambda msg: None):
    """A shepherd started as sbatchd starts one (no cgroups), logging as log_to says; its
    answers go to on_ended (link.loop runs them)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    loop = asyncio.new_event_loop()
    link = ShepherdLink(
        loop,
        "none",
        f"lavalite-test-{os.getpid()}",
        on_ended,
        lambda link: None,
        log_to=log_to,
        program=[sys.executable, os.path.join(root, "lavalite.py")],
    )
    try:
        yield link
    finally:
        link.close()
        try:
            link.proc.wait(10)
        except subprocess.TimeoutExpired:  # a hung shepherd (and its cleaner) must not stay
            os.killpg(link.proc.pid, signal.SIGKILL)
            link.proc.wait()
        loop.close()


def _complaint(link, read, wait=10):
    """Send the shepherd a frame that is not JSON; what read() finds of its complaint."""
    link.sock.sendall(struct.pack(">I", 5) + b"nope!")
    return wait_until(read, wait, "the shepherd's complaint about a bad frame")


def test_shepherd_logs_into_sbatchds_file_and_follows_its_rotation(tmp_path):
    """[logging] target = file: a shepherd's errors go into sbatchd's own log file, with the
    daemons' prefix, and into the new file once sbatchd has rotated the old one away."""
    path, rotated = tmp_path / "sbatchd-h0.log", tmp_path / "sbatchd-h0.log.1"
    path.write_text("sbatchd@h0[1] INFO started\n")

    def read():
        return (
            [ln for ln in path.read_text().splitlines() if "bad frame" in ln]
            if path.exists()
            else []
        )

    with _shepherd({"target": "file", "file": str(path), "host": "h0", "level": "info"}) as link:
        first = _complaint(link, read)
        assert first and first[0].split()[2].startswith("shepherd@h0["), first
        assert "ERROR shepherd: bad frame from sbatchd" in first[0]
        assert path.read_text().startswith("sbatchd@h0[1] INFO started\n"), "appended"
        os.rename(path, rotated)  # as sbatchd's RotatingFileHandler does
        second = _complaint(link, read)
    assert second and rotated.read_text().count("bad frame") == 1, (second, rotated.read_text())


def test_shepherd_logs_to_syslog_when_sbatchd_does(tmp_path):
    sink = SyslogSink(tmp_path / "log.sock")
    try:
        with _shepherd(
            {"target": "syslog", "syslog": sink.path, "host": "h0", "level": "info"}
        ) as link:
            found = _complaint(link, lambda: [m for _, _, m in sink.lines if "bad frame" in m])
    finally:
        sink.close()
    assert found and found[0].startswith("lavalite-shepherd["), found
