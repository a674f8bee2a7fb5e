"""Where the one file extracts itself (lavalite/zipmain.py): once per host, into a directory root
prepared; else a private directory of the user's own; the home last. A user without a home runs
commands; a look-alike directory someone else could write is refused, its code never run.

Real users (test_users' accounts) run dist/lavalite on the system python3; the per-host
directory is a fresh one per test ($LAVALITE_CACHE_DIR), never the machine's own."""

import json
import os
import shutil
import subprocess
import tempfile
import zipfile

import pytest
from test_users import SYS_PYTHON, USERS, _job_id, _users_cluster, accounts, readable  # noqa: F401


@pytest.fixture
def zipapp(readable):
    path = os.path.join(readable, "dist", "lavalite")
    if not os.path.exists(path):
        pytest.skip("dist/lavalite is not built: run ./build.sh (./build.sh test builds it)")
    return path


@pytest.fixture
def users_cluster(accounts, readable):
    with _users_cluster(readable) as c:
        yield c


@pytest.fixture
def user(accounts):
    """User A, with no private extraction left from an earlier test."""
    pw = accounts[USERS[0]]
    for path in (_private(pw), os.path.join(pw.pw_dir, ".shiv")):
        shutil.rmtree(path, ignore_errors=True)
    yield pw
    shutil.rmtree(_private(pw), ignore_errors=True)


@pytest.fixture
def shared_tmp():
    """A directory every user can enter (pytest's tmp_path is root's alone)."""
    path = tempfile.mkdtemp(prefix="lavalite-extract-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _private(pw):
    return f"/tmp/lavalite-{pw.pw_uid}"


def _leaf(zipapp):
    with zipfile.ZipFile(zipapp) as z:
        return f"lavalite_{json.loads(z.read('environment.json'))['build_id']}"


def run_file(c, zipapp, cache, *args, pw=None, home=None):
    """dist/lavalite ARGS as user `pw` (root if None), with HOME `home` (theirs if None)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "LAVALITE_CONF": c.conf_path,
        "LAVALITE_HOST": "testhost",
        "LAVALITE_CACHE_DIR": cache,
    }
    kw = {}
    if pw is not None:
        env["HOME"] = home or pw.pw_dir
        kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    return subprocess.run(
        [SYS_PYTHON, zipapp, *args],
        env=env,
        cwd="/tmp",
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def test_a_user_without_a_home_runs_submit_and_jobs(users_cluster, zipapp, user, shared_tmp):
    """No per-host copy, no home: the user's private directory, 0700 and theirs; nothing in
    any home, no traceback."""
    c, cache = users_cluster, os.path.join(shared_tmp, "not-prepared")
    sub = run_file(
        c, zipapp, cache, "submit", "-o", "/dev/null", "--", "true", pw=user, home="/nonexistent"
    )
    job = _job_id(sub)
    assert "Traceback" not in sub.stderr, sub.stderr
    res = run_file(c, zipapp, cache, "jobs", "-a", str(job), pw=user, home="/nonexistent")
    assert res.returncode == 0 and str(job) in res.stdout, res.stdout + res.stderr
    st = os.lstat(_private(user))
    assert st.st_uid == user.pw_uid and st.st_mode & 0o777 == 0o700
    assert os.path.isdir(os.path.join(_private(user), _leaf(zipapp), "site-packages"))
    assert not os.path.exists(os.path.join(user.pw_dir, ".shiv")) and not os.path.exists(cache)


def test_root_prepares_the_host_copy_that_users_share(users_cluster, zipapp, user, shared_tmp):
    c, cache = users_cluster, os.path.join(shared_tmp, "cache")
    assert run_file(c, zipapp, cache, "jobs").returncode == 0  # root: the daemons, install
    st = os.lstat(cache)
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o755
    res = run_file(c, zipapp, cache, "jobs", pw=user, home="/nonexistent")
    assert res.returncode == 0 and "lavalite:" not in res.stderr, res.stderr
    assert not os.path.exists(_private(user)), "the user's command used the host's copy"


PLANTED = "def main():\n    print('PLANTED CODE RAN')\n    return 0\n"


def _plant(root, zipapp):
    """An extraction of this very build whose entry point is someone else's code."""
    pkg = os.path.join(root, _leaf(zipapp), "site-packages", "lavalite")
    os.makedirs(pkg)
    for name, text in (("__init__.py", ""), ("entry.py", PLANTED)):
        with open(os.path.join(pkg, name), "w") as f:
            f.write(text)


@pytest.mark.parametrize(
    "look_alike", ["host dir mode 0777", "host dir owned by a user", "private dir made by root"]
)
def test_a_look_alike_directory_is_refused(
    users_cluster, zipapp, user, accounts, shared_tmp, look_alike
):
    c = users_cluster
    cache = os.path.join(shared_tmp, "cache")
    planted = _private(user) if look_alike == "private dir made by root" else cache
    os.mkdir(planted)
    _plant(planted, zipapp)
    if look_alike == "host dir mode 0777":
        os.chmod(planted, 0o777)
    elif look_alike == "host dir owned by a user":
        os.chown(planted, accounts[USERS[1]].pw_uid, -1)
    res = run_file(c, zipapp, cache, "jobs", pw=user)
    assert res.returncode == 0 and "PLANTED" not in res.stdout, res.stdout + res.stderr
    assert f"lavalite: not using {planted}: " in res.stderr, res.stderr
    fallback = os.path.join(user.pw_dir, ".shiv") if planted == _private(user) else _private(user)
    assert os.path.isdir(os.path.join(fallback, _leaf(zipapp), "site-packages"))


def test_no_usable_directory_is_one_line_and_exit_2(users_cluster, zipapp, user, shared_tmp):
    """No per-host copy, the private directory someone else's, no home: nothing to run from."""
    os.mkdir(_private(user), 0o755)
    res = run_file(
        users_cluster,
        zipapp,
        os.path.join(shared_tmp, "cache"),
        "jobs",
        pw=user,
        home="/nonexistent",
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.splitlines()[-1].startswith(
        "lavalite: no directory to extract the program to: "
    ), res.stderr
    assert "/nonexistent: no home directory" in res.stderr
