"""Private state: what the daemons and `lavalite up` write (store, records, journals, logs,
keys, pid files) cannot be read by another local user, whatever umask they started with; what
an earlier run left loose is tightened at start, with one log line; the jobs keep the umask
they always had, and the configuration and lim.sock stay within every user's reach."""

import contextlib
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile

import pytest
from conftest import Cluster

from lavalite import log as log_mod
from lavalite import private
from lavalite.files import write_whole

SECRET = "s3cr3t-7f1c2a"  # a job's SECRET_TOKEN
NOBODY = 65534
# Run as nobody: every path of argv it can read (a file's first byte, a directory's listing).
PROBE = """
import json, os, sys
readable = []
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
        readable.append(path)
    except OSError:
        pass
print(json.dumps(readable))
"""


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# --- without processes


def test_tighten_takes_group_and_other_bits_and_leaves_traverse(tmp_path):
    loose_file, loose_dir, passage = tmp_path / "f", tmp_path / "d", tmp_path / "p"
    loose_file.write_text("x")
    loose_dir.mkdir()
    passage.mkdir()
    os.chmod(loose_file, 0o644)
    os.chmod(loose_dir, 0o755)
    os.chmod(passage, 0o755)
    os.symlink(loose_file, tmp_path / "link")
    changed = private.tighten(
        [
            (str(loose_file), False),
            (str(loose_dir), False),
            (str(passage), True),
            (str(tmp_path / "link"), False),
            (str(tmp_path / "gone"), False),
        ]
    )
    assert changed == [str(loose_file), str(loose_dir), str(passage)]
    assert (_mode(loose_file), _mode(loose_dir), _mode(passage)) == (0o600, 0o700, 0o711)
    assert private.tighten([(str(loose_file), False), (str(passage), True)]) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_tighten_leaves_another_users_file_alone(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.write_text("x")
    os.chmod(theirs, 0o644)
    os.chown(theirs, NOBODY, NOBODY)
    assert private.tighten([(str(theirs), False)]) == []
    assert _mode(theirs) == 0o644


def test_the_lavalite_group_shares_the_state_with_its_members(monkeypatch):
    """Under the installed units (group lavalite) the group reads too; elsewhere no one."""
    import grp

    own_group = grp.getgrgid(os.getegid()).gr_name
    try:
        for group, mask in ((own_group, 0o027), ("lavalite-no-such-group", 0o077)):
            monkeypatch.setattr(private, "GROUP", group)
            private.umask.cache_clear()
            assert (private.umask(), private.file_mode()) == (mask, 0o666 & ~mask)
    finally:
        private.umask.cache_clear()


def test_write_whole_mode_is_exact_whatever_the_umask(tmp_path):
    with _umask(0o077):
        write_whole(str(tmp_path / "conf"), "x", 0o644)
        write_whole(str(tmp_path / "state"), "x")
    assert _mode(tmp_path / "conf") == 0o644
    assert _mode(tmp_path / "state") == 0o600


def test_log_files_are_private_under_a_loose_umask_after_rotation_too(tmp_path):
    """A shepherd runs with the jobs' umask and opens sbatchd's log again once rotated."""
    rotating = log_mod._RotatingFile(str(tmp_path / "r.log"), maxBytes=10, backupCount=1)
    watched = log_mod._WatchedFile(str(tmp_path / "w.log"))
    record = logging.makeLogRecord({"msg": "a line longer than ten bytes"})
    try:
        with _umask(0o000):
            rotating.handle(record)
            rotating.handle(record)  # rotates: r.log.1, and a new r.log
            watched.handle(record)
            os.unlink(tmp_path / "w.log")
            watched.handle(record)  # gone (rotated by sbatchd): opened anew
    finally:
        rotating.close()
        watched.close()
    for name in ("r.log", "r.log.1", "w.log"):
        assert _mode(tmp_path / name) == 0o600, name


# --- real clusters


@pytest.fixture
def reachable():
    """A directory every user can traverse (pytest's tmp_path is root's alone, which would
    hide the state from nobody whatever its modes): the probe must meet the modes."""
    top = tempfile.mkdtemp(prefix="lavalite-private-", dir="/tmp")
    os.chmod(top, 0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _as_nobody(*argv):
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=60,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        cwd="/",
    )


def _readable_by_nobody(paths):
    res = _as_nobody("/usr/bin/python3", "-c", PROBE, *paths)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _everything_under(*tops):
    """Every directory and regular file under tops (sockets are not read)."""
    out = []
    for top in tops:
        for d, _, files in os.walk(top):
            out.append(d)
            out += [p for f in files if stat.S_ISREG(os.lstat(p := os.path.join(d, f)).st_mode)]
    return out


needs_nobody = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
    reason="reading as another user needs root and /usr/bin/python3",
)


@needs_nobody
def test_another_user_reads_no_state_file_and_finds_no_job_environment(reachable, tmp_path):
    c = Cluster(os.path.join(reachable, "cluster"), slots=2)
    with _umask(0o022):  # a umask that would leave the daemons' files readable
        c.start()
    try:
        job = c.submit(
            ["sleep", "60"],
            cwd=str(tmp_path),
            env={"PATH": os.environ["PATH"], "SECRET_TOKEN": SECRET},
        )
        c.wait_started([job])  # its attempt record, with the spec, is in work_dir
        work, paths = c.conf.sbatchd.work_dir, c.conf.paths
        assert f"{job}.1" in os.listdir(work)
        tops = (paths.state_dir, paths.run_dir)
        found = subprocess.run(
            ["grep", "-r", "-a", "-l", SECRET, *tops], capture_output=True, text=True
        ).stdout.split()
        assert found, "the secret is in the state (so the search below can find it)"

        confs = [
            os.path.join(paths.state_dir, n)
            for n in ("lavalite.conf", "lim.conf", "sbatchd.conf", "queues.conf")
        ]
        state = [p for p in _everything_under(*tops) if p not in confs]
        assert {
            c.conf.mbatchd.database,
            c.conf.cluster.key_file,
            work,
            paths.log_dir,
            os.path.join(paths.spool_dir, "reports-testhost.log"),
        } <= set(state)
        assert _readable_by_nobody(confs) == confs, "the configuration stays readable by all"
        assert _readable_by_nobody(state) == []
        grep = _as_nobody("grep", "-r", "-a", "-l", SECRET, *tops)
        assert grep.stdout == "" and "Permission denied" in grep.stderr

        c.client.kill([job])
        c.wait([job])
    finally:
        c.stop()


@needs_nobody
def test_loose_state_is_tightened_at_start_with_one_line(reachable):
    c = Cluster(os.path.join(reachable, "cluster"), slots=1)
    c.start()
    c.stop()
    paths = c.conf.paths
    lim_log = os.path.join(paths.log_dir, "lim.log")  # up keeps its stderr
    loose = [
        c.conf.mbatchd.database,
        lim_log,
        os.path.join(paths.spool_dir, "reports-testhost.log"),
    ]
    for path in loose:
        os.chmod(path, 0o644)
    os.chmod(paths.log_dir, 0o755)
    os.chmod(paths.spool_dir, 0o755)
    logs = {p: os.path.getsize(p) for p in _everything_under(paths.log_dir)[1:]}
    c.start()
    try:
        assert [_mode(p) for p in loose] == [0o600] * 3
        assert (_mode(paths.log_dir), _mode(paths.spool_dir)) == (0o700, 0o711)
        lines = []  # lim and sbatchd start together: either may see a file
        for path, size in logs.items():
            with open(path) as f:
                f.seek(size)
                lines += [line for line in f if "files and directories private" in line]
        daemons = [line.split()[2] for line in lines]  # role@host[pid]
        assert len(daemons) == len(set(daemons)), f"one line per daemon: {lines}"
        assert all(any(p in line for line in lines) for p in loose), lines
    finally:
        c.stop()


def test_jobs_keep_the_umask_the_daemons_were_started_with(tmp_path):
    """The daemons' private umask is theirs alone: a job, and its output file, get the umask
    `up` was started with, as before the daemons had one of their own."""
    c = Cluster(tmp_path / "cluster", slots=1)
    with _umask(0o027):
        c.start()
    try:
        out = tmp_path / "umask.out"
        job = c.submit(["sh", "-c", "umask"], out=str(out), cwd=str(tmp_path))
        assert c.wait([job])[job]["state"] == "DONE"
        assert out.read_text().strip() == "0027"
        assert _mode(out) == 0o640
        assert _mode(c.conf.mbatchd.database) == 0o600
    finally:
        c.stop()
