"""[limit NAME] on real clusters: a per-user slot limit holds one user while another user's
jobs run, blimits shows the counters, a reload changes a limit at the next turn and a bad one
keeps the old. The scheduler's rules on hand-built snapshots: tests/test_limit_policy.py."""

import subprocess

import pytest
from conftest import Cluster, wait_until
from test_admin import lsf
from test_users import (  # noqa: F401  (readable: a fixture)
    _users_cluster,
    as_user,
    own_accounts,
    readable,
)

USER = "lllimx"  # an account of this module's own: other modules' may be in use at once
HELD = "Resource (slot) limit defined on user or user group has been reached"


def running(c, user=None):
    jobs = c.client.jobs(users=["all"])
    return [j for j in jobs if j["state"] == "RUN" and user in (None, j["user"])]


def blimits(c, tmp_path, *args):
    """blimits' rows below its header: [[NAME, USERS, ...], ...]."""
    res = lsf(c, tmp_path, "blimits", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[:3] == ["INTERNAL RESOURCE LIMITS:", "", lines[2]], res.stdout
    assert lines[2].split() == [
        "NAME",
        "USERS",
        "QUEUES",
        "HOSTS",
        "PROJECTS",
        "SLOTS",
        "MEM",
        "JOBS",
    ]
    return [line.split() for line in lines[3:]]


@pytest.fixture
def limit_cluster(tmp_path):
    c = Cluster(
        tmp_path / "c",
        slots=4,
        queues={
            "normal": {},
            "limit peruser": {"per_user": "all", "slots": "1"},
            "limit short": {"queues": "short", "mem": "1G"},
        },
        mbatchd={"default_queue": "normal"},
    )
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_blimits_and_a_reload_that_changes_the_limit(limit_cluster, tmp_path):
    c = limit_cluster
    ids = [c.submit(["sleep", "60"]) for _ in range(3)]
    wait_until(lambda: len(running(c)) == 1, 30, "one job running")
    res = lsf(c, tmp_path, "bjobs", "-p")
    assert f"{HELD} (Resource limit name: peruser)" in res.stdout, res.stdout
    assert blimits(c, tmp_path) == [["peruser", "root", "-", "-", "-", "1/1", "-", "-"]]
    rows = blimits(c, tmp_path, "-a")
    assert ["short", "-", "short", "-", "-", "-", "0/1024", "-"] in rows, rows
    assert [r[0] for r in blimits(c, tmp_path, "-a", "-q", "normal")] == ["peruser"]

    qpath = c.conf.paths.queues_conf
    good = open(qpath).read()
    with open(qpath, "w") as f:
        f.write(good.replace("slots = 1", "slots = 2"))
    assert lsf(c, tmp_path, "badmin", "reconfig").returncode == 0
    wait_until(lambda: len(running(c)) == 2, 30, "a second job started after the reload")
    assert blimits(c, tmp_path, "-n", "peruser") == [
        ["peruser", "root", "-", "-", "-", "2/2", "-", "-"]
    ]

    with open(qpath, "w") as f:
        f.write(good.replace("slots = 1", "slots = -1"))
    res = lsf(c, tmp_path, "badmin", "reconfig")
    assert res.returncode != 0
    assert "[limit peruser] slots: '-1' out of range" in res.stdout + res.stderr
    res = c.cli("config-check", check=False)
    assert res.returncode == 2
    assert f"{qpath}:" in res.stderr and "[limit peruser] slots:" in res.stderr, res.stderr
    # mbatchd keeps the limit it has (commands read queues.conf, so ask it directly)
    (row,) = [r for r in c.client.call("limit_usage")["limits"] if r["used"]]
    assert (row["name"], row["slots"], len(running(c))) == ("peruser", [2, 2], 2)
    with open(qpath, "w") as f:
        f.write(good)
    assert c.cli("config-check").stdout.endswith("(1 queues: normal; 2 limits: peruser, short)\n")
    c.client.kill(ids)
    c.wait(ids)


@pytest.fixture(scope="module")
def accounts():
    """One account of this module's own (test_users' readable fixture asks for `accounts`)."""
    yield from own_accounts(USER)


def test_a_per_user_limit_holds_one_user_while_another_runs(accounts, readable, tmp_path):  # noqa: F811
    queues = {"normal": {}, "limit peruser": {"per_user": "all", "slots": "1"}}
    with _users_cluster(
        readable, allow_root_jobs="yes", queues=queues, mbatchd={"default_queue": "normal"}
    ) as c:
        mine = [c.submit(["sleep", "60"]) for _ in range(3)]  # root's, first in the queue
        wait_until(lambda: len(running(c, "root")) == 1, 30, "root's first job running")
        res = as_user(c, accounts[USER], "submit", "--", "sleep", "60")
        assert res.returncode == 0, res.stdout + res.stderr
        theirs = int(res.stdout.split("<")[1].split(">")[0])
        wait_until(lambda: running(c, USER), 30, f"{USER}'s job running beside root's")
        assert len(running(c, "root")) == 1  # 2 slots free, root still held at 1
        rows = blimits(c, tmp_path)
        assert sorted(r[1] for r in rows) == sorted(["root", USER]), rows
        c.client.kill(mine + [theirs])
        c.wait(mine + [theirs])


def test_simulate_with_a_limit_every_job_ends_and_the_limit_holds(tmp_path):
    """`lavalite simulate --queues` with a [limit] section (no queue): a real mbatchd and
    simulated hosts; the queue's running jobs never pass the limit, and every job ends."""
    import json

    import apsw
    from conftest import LAUNCHER

    qconf = tmp_path / "queues.conf"
    qconf.write_text("[fast]\npriority = 50\n[slow]\n[limit slowcap]\nqueues = slow\njobs = 3\n")
    args = ["--hosts", "6", "--slots", "2", "--jobs", "300", "--array-size", "60"]
    args += ["--duration", "1-3", "--speed", "40", "--queues", str(qconf)]
    out = subprocess.run(
        LAUNCHER + ["simulate", "--json", *args, "--state-dir", str(tmp_path / "sim")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    fig = json.loads(out.stdout.strip().splitlines()[-1])
    assert fig["ended"] == fig["jobs"] == 300 and fig["ended_twice"] == 0
    db = apsw.Connection(str(tmp_path / "sim" / "lavalite.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        running = peak = 0
        for old, new in db.execute(
            "SELECT e.old, e.new FROM job_events e JOIN jobs j ON j.id = e.job_id "
            "WHERE j.queue = 'slow' ORDER BY e.seq"
        ):
            running += (new == "RUN") - (old == "RUN")
            peak = max(peak, running)
    finally:
        db.close()
    assert peak == 3
