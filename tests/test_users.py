"""Jobs run as their user; users are proven, not claimed. Two real local users, created here
and removed after: a job runs with its owner's uid, groups, home; user B can neither bkill nor
peek at user A's job; a forged credential is refused; root may not submit unless allowed.

The users cannot run the test venv's python (it lives under /root, mode 0700), so their
commands run on the system python3 with the worktree and a copy of orjson on PYTHONPATH: the
same CLI code path as the zipapp's."""

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile

import orjson
import pytest
from conftest import ROOT, Cluster, wait_until

USERS = ("llt4a", "llt4b")
GROUP = "llt4g"
SYS_PYTHON = "/usr/bin/python3"


def _sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def _remove_accounts():
    for user in USERS:
        subprocess.run(["userdel", "-r", user], capture_output=True)
    subprocess.run(["groupdel", GROUP], capture_output=True)


@pytest.fixture(scope="module")
def accounts():
    if os.geteuid() != 0:
        pytest.skip("creating users and switching to them needs root")
    if not shutil.which("useradd"):
        pytest.skip("useradd is not installed")
    if not os.path.exists(SYS_PYTHON):
        pytest.skip(f"{SYS_PYTHON} missing: the test users need a python they can run")
    ver = subprocess.run(
        [SYS_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if ver != str(sys.version_info[:2]):
        pytest.skip(
            f"{SYS_PYTHON} is {ver}, the venv {sys.version_info[:2]}: orjson's binary "
            "would not load"
        )
    _remove_accounts()
    _sh("groupadd", GROUP)
    _sh("useradd", "-m", "-s", "/bin/sh", "-G", GROUP, USERS[0])
    _sh("useradd", "-m", "-s", "/bin/sh", USERS[1])
    accounts = {u: pwd.getpwnam(u) for u in USERS}
    try:
        yield accounts
    finally:
        for pw in accounts.values():  # where the one file extracted itself for them
            shutil.rmtree(f"/tmp/lavalite-{pw.pw_uid}", ignore_errors=True)
        _remove_accounts()


def own_accounts(*names: str):
    """Plain accounts of one test module's own (other modules may run at once), made for it and
    removed after: the body of that module's `accounts` fixture (`yield from`)."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("creating users needs root and useradd")
    if not os.path.exists(SYS_PYTHON):
        pytest.skip(f"{SYS_PYTHON} missing: the test users need a python they can run")
    for user in names:
        subprocess.run(["userdel", "-r", user], capture_output=True)
    try:
        for user in names:
            subprocess.run(
                ["useradd", "-m", "-s", "/bin/sh", user], check=True, capture_output=True
            )
        yield {u: pwd.getpwnam(u) for u in names}
    finally:
        for user in names:
            subprocess.run(["userdel", "-r", user], capture_output=True)


@pytest.fixture(scope="module")
def readable(accounts):
    """What the test users run, copied where they can read it: the checkout (CI's fresh clone)
    may sit in a directory only root can enter."""
    top = tempfile.mkdtemp(prefix="lavalite-users-src-", dir="/tmp")
    os.chmod(top, 0o755)
    for name in ("lavalite", "roles", "scheduler", "store", "units"):
        shutil.copytree(
            os.path.join(ROOT, name),
            os.path.join(top, name),
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    shutil.copy(os.path.join(ROOT, "lavalite.py"), top)
    if os.path.exists(os.path.join(ROOT, "dist", "lavalite")):
        os.mkdir(os.path.join(top, "dist"))
        shutil.copy(os.path.join(ROOT, "dist", "lavalite"), os.path.join(top, "dist"))
    for d, _, files in os.walk(top):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@contextlib.contextmanager
def _users_cluster(readable, sbatchd=None, allow_root_jobs="no", **cluster):
    """A cluster the test users can reach (its directory readable by all; the key is not),
    root jobs not allowed unless asked; `cluster`: more of Cluster's arguments."""
    state = tempfile.mkdtemp(prefix="lavalite-users-", dir="/tmp")
    os.chmod(state, 0o755)
    libdir = os.path.join(state, "pylib")
    shutil.copytree(os.path.dirname(orjson.__file__), os.path.join(libdir, "orjson"))
    c = Cluster(
        os.path.join(state, "cluster"),
        sbatchd=sbatchd,
        **{"slots": 4, "conf": {"cluster": {"allow_root_jobs": allow_root_jobs}}, **cluster},
    )
    c.start()
    c.pythonpath = f"{readable}:{libdir}"
    c.readable = readable
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def multiuser(accounts, readable):
    with _users_cluster(readable) as c:
        yield c


def as_user(c, pw, *args, script=None, **run):
    """Run the CLI (or a python script) as that user, in their home directory; `run` adds to
    subprocess.run's arguments (input, umask)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": pw.pw_dir,
        "LAVALITE_CONF": c.conf_path,
        "LAVALITE_HOST": "testhost",
        "PYTHONPATH": c.pythonpath,
    }
    argv = (
        [SYS_PYTHON, "-c", script]
        if script
        else [SYS_PYTHON, os.path.join(c.readable, "lavalite.py")]
    )
    return subprocess.run(
        argv + list(args),
        env=env,
        cwd=pw.pw_dir,
        capture_output=True,
        text=True,
        timeout=60,
        user=pw.pw_uid,
        group=pw.pw_gid,
        extra_groups=os.getgrouplist(pw.pw_name, pw.pw_gid),
        **run,
    )


def _logs(log_dir):
    """The daemons' logs, for a failure's message: the user's home goes with the test."""
    try:
        names = sorted(os.listdir(log_dir))
    except OSError as exc:
        return f"\n(no logs: {exc})"
    return "".join(f"\n--- {n}\n" + open(os.path.join(log_dir, n)).read()[-3000:] for n in names)


def _job_id(res):
    assert res.returncode == 0, res.stdout + res.stderr
    return int(res.stdout.split("<")[1].split(">")[0])


FORGE = """
import sys
from lavalite import auth
from lavalite.client import Client, ClientError
job, uid, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
own, _ = Client()._node_credential("sn")     # what LIM signs for us: our own uid only
print("LIM signed uid", own["uid"])


def changed(sn):
    hello, key = Client()._node_credential(sn)
    return dict(hello, uid=uid, user=name), auth.Session(key, dialler=True)


def made_up(sn):
    hello = auth.hello(b"k" * 64, "user", "testhost", "mbatchd", sn, uid=uid, user=name)
    return hello, auth.Session(auth.session_key(b"k" * 64, hello), dialler=True)


forgeries = {"own credential, uid changed": changed, "signed with a made-up key": made_up}
for label, forge in forgeries.items():
    c = Client()
    c._credential = forge
    try:
        c.call("kill", jobs=[job])
        print(label, "ACCEPTED")
    except ClientError as exc:
        print(label, "REFUSED", exc.code, exc.message)
"""


def test_jobs_run_as_their_user_and_only_the_owner_acts_on_them(multiuser, accounts):
    c, a, b = multiuser, accounts[USERS[0]], accounts[USERS[1]]
    assert os.stat(c.conf.cluster.key_file).st_mode & 0o077 == 0, "users cannot read the key"
    job = _job_id(
        as_user(
            c,
            a,
            "submit",
            "-o",
            "out.%J",
            "--",
            "sh",
            "-c",
            "id -u; id -Gn; echo $HOME $USER $LOGNAME; stat -c %U $TMPDIR; echo started; sleep 30",
        )
    )
    c.wait_started([job])
    assert c.jobs([job])[job]["user"] == USERS[0]

    denied = as_user(c, b, "kill", str(job))
    assert denied.returncode == 1 and "User permission denied" in denied.stderr
    denied = as_user(c, b, "peek", str(job))
    assert denied.returncode == 1 and "User permission denied" in denied.stderr
    forged = as_user(c, b, str(job), str(a.pw_uid), a.pw_name, script=FORGE)
    assert f"LIM signed uid {b.pw_uid}" in forged.stdout, forged.stdout + forged.stderr
    assert forged.stdout.count("REFUSED auth") == 2 and "ACCEPTED" not in forged.stdout, (
        forged.stdout
    )
    assert c.jobs([job])[job]["state"] == "RUN", "B's attempts must change nothing"
    wait_until(
        lambda: "started" in as_user(c, a, "peek", str(job)).stdout,
        30,
        "A's peek to show the job's output",
        0.2,
    )

    killed = as_user(c, a, "kill", str(job))
    assert killed.returncode == 0, killed.stderr
    assert c.wait([job], timeout=30)[job]["stat"] == "KILLED"
    out = os.path.join(a.pw_dir, f"out.{job}")
    assert os.stat(out).st_uid == a.pw_uid, "the output belongs to the job's owner"
    uid, groups, env, tmp_owner, _ = open(out).read().splitlines()
    assert int(uid) == a.pw_uid
    assert set(groups.split()) == {USERS[0], GROUP}, "initgroups: the supplementary group too"
    assert env.split() == [a.pw_dir, USERS[0], USERS[0]] and tmp_owner == USERS[0]


def test_root_may_not_submit_unless_allowed(multiuser):
    res = multiuser.cli("submit", "--", "true", check=False)
    assert res.returncode == 1 and "root may not submit jobs" in res.stderr


def test_up_by_a_normal_user_runs_everything_as_that_user(accounts, readable):
    """No root: the daemons, the credential (the user reads their own key) and the jobs are
    the user's; without root there are no cgroups, and the log says so once. The daemons need
    uvloop, apsw, psutil: the user runs the zipapp, which carries them."""
    zipapp = os.path.join(readable, "dist", "lavalite")
    if not os.path.exists(zipapp):
        pytest.skip("dist/lavalite is not built: run ./build.sh (./build.sh test builds it)")
    pw = accounts[USERS[1]]
    state = os.path.join(pw.pw_dir, "lavalite-up")
    kw = dict(
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": pw.pw_dir,
            "LAVALITE_CONF": os.path.join(state, "lavalite.conf"),
        },
        cwd=pw.pw_dir,
        user=pw.pw_uid,
        group=pw.pw_gid,
        extra_groups=[],
    )
    cmd = [SYS_PYTHON, zipapp]
    up = subprocess.Popen(
        cmd + ["up", "--state-dir", state, "--slots", "2"], stdout=subprocess.PIPE, text=True, **kw
    )
    try:
        said = up.stdout.readline() + up.stdout.readline()
        assert "LavaLite is up" in said, said + _logs(os.path.join(state, "log"))
        job = _job_id(
            subprocess.run(
                cmd + ["submit", "-o", "up.%J", "--", "id", "-u"],
                capture_output=True,
                text=True,
                timeout=60,
                **kw,
            )
        )
        wait_until(
            lambda: (
                "DONE"
                in subprocess.run(
                    cmd + ["jobs", "-a", str(job)], capture_output=True, text=True, timeout=60, **kw
                ).stdout
            ),
            60,
            "the job to finish",
            0.3,
        )
        with open(os.path.join(pw.pw_dir, f"up.{job}")) as f:
            assert int(f.read()) == pw.pw_uid
        with open(os.path.join(state, "log", "sbatchd.log")) as f:
            assert f.read().count("no usable cgroups (sbatchd does not run as root)") == 1
    finally:
        subprocess.run(cmd + ["down", "--state-dir", state], capture_output=True, timeout=90, **kw)
        up.wait(60)


SUBMIT_IN_ROOT = """
import sys
from lavalite.client import Client
print(Client().submit(["sh", "-c", "id -u; id -Gn; stat -c %U $TMPDIR; pwd; echo $TMPDIR; "
                                   "stat -c %i $TMPDIR; cat /proc/self/cgroup"], cwd="/root",
                     out=sys.argv[1]))
"""


@pytest.mark.parametrize("cgroups", ["off", "v1", "v2"])
def test_every_start_path_runs_a_users_job_as_that_user(accounts, readable, cgroups):
    """A job of another user starts by a vfork from a thread holding the user's ids (the
    shepherd's loop, outside any group or inside the job's v1 groups), or by a
    fork whose Python child joins the group as root first (cgroup2). Each way: the user's uid
    and groups, a TMPDIR of theirs, their group, and a directory they cannot enter replaced by
    TMPDIR; and no thread of a shepherd is left with the user's ids. Under v1 the user's next
    job gets the first one's empty TMPDIR, renamed by the user's thread (scratch.py)."""
    from roles.sbatchd import cgroups as cg

    v2, v1 = cg.mounts()
    if cgroups == "v1" and not v1.get("memory"):
        pytest.skip("no cgroup v1 memory controller mounted here")
    if cgroups == "v2" and not v2:
        pytest.skip("no cgroup2 mount here")
    a = accounts[USERS[0]]
    with _users_cluster(readable, sbatchd={"cgroups": cgroups}) as c:
        out = os.path.join(a.pw_dir, f"start-{cgroups}.out")
        res = as_user(c, a, out, script=SUBMIT_IN_ROOT)
        assert res.returncode == 0, res.stdout + res.stderr
        job = int(res.stdout)
        assert c.wait([job], timeout=60)[job]["stat"] == "DONE"
        uid, groups, tmp_owner, pwd_, tmpdir, inode, *cgroup_lines = open(out).read().splitlines()
        res = as_user(c, a, out + ".next", script=SUBMIT_IN_ROOT)
        assert res.returncode == 0, res.stdout + res.stderr
        assert c.wait([int(res.stdout)], timeout=60)[int(res.stdout)]["stat"] == "DONE"
        _, _, next_owner, next_pwd, next_tmpdir, next_inode, *_ = (
            open(out + ".next").read().splitlines()
        )
        assert next_owner == USERS[0] and next_pwd == next_tmpdir != tmpdir
        if cgroups == "v1":
            assert next_inode == inode
        for pid in c.shepherds():
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    ids = [line.split()[1:] for line in f if line.startswith(("Uid:", "Gid:"))]
                assert ids == [["0"] * 4] * 2, (pid, tid, ids)
    assert int(uid) == a.pw_uid and set(groups.split()) == {USERS[0], GROUP}
    assert tmp_owner == USERS[0] and pwd_ == tmpdir, (pwd_, tmpdir)
    if cgroups != "off":
        slice_name = c.conf.sbatchd.cgroup_slice
        assert any(
            re.search(rf"/{slice_name}/shepherd-\d+\.\d+$", line) for line in cgroup_lines
        ), cgroup_lines
