"""Fairshare on real clusters: usage and priorities survive an mbatchd kill -9, a reload
changes the shares, and two real users' jobs on one slot start by their shares."""

import os
import shutil
import subprocess
import tempfile

import orjson
import pytest
from conftest import Cluster, wait_until
from test_admin import lsf
from test_users import as_user, own_accounts, readable  # noqa: F401  (readable: a fixture)

USERS = ("llfsa", "llfsb")  # not test_users' accounts: the two modules may run at once


def share_info(cluster, tmp_path, queue="fair"):
    """bqueues -l's SHARE_INFO_FOR rows: {account: {column: text}}."""
    res = lsf(cluster, tmp_path, "bqueues", "-l", queue)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.split(f"SHARE_INFO_FOR: {queue}/\n")[1].splitlines()
    header = lines[0].split()
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = dict(zip(header, cells))
    return rows


@pytest.fixture
def fair_cluster(tmp_path):
    c = Cluster(
        tmp_path / "c",
        slots=2,
        queues={
            "fair": {"fairshare": "USER_SHARES[[root, 2] [lab, 3] [default, 1]]"},
            "usergroup lab": {"members": "root"},
            "usergroup other": {"members": "nobody"},
        },
        mbatchd={"default_queue": "fair"},
    )
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_usage_and_priority_survive_mbatchd_kill9(fair_cluster, tmp_path):
    c = fair_cluster
    ids = [c.submit(["sleep", "1"]) for _ in range(2)]
    c.wait(ids)
    before = share_info(c, tmp_path)["root"]
    assert before["SHARES"] == "2" and int(before["RUN_TIME"]) >= 2
    running = c.submit(["sleep", "30"])
    c.wait_started([running])
    c.kill9_restarted("mbatchd")
    after = wait_until(lambda: _share_info_or_none(c, tmp_path), 30, "mbatchd back")["root"]
    # the past run time is kept (its decay over seconds is far below a second), the running
    # job is counted again
    assert int(after["RUN_TIME"]) >= int(before["RUN_TIME"])
    assert after["STARTED"] == "1"
    assert float(after["PRIORITY"]) < float(before["PRIORITY"])


def _share_info_or_none(c, tmp_path):
    try:
        return share_info(c, tmp_path)
    except (AssertionError, IndexError):
        return None


def test_bsub_G_charges_its_group_and_needs_membership(fair_cluster, tmp_path):
    c = fair_cluster
    res = lsf(c, tmp_path, "bsub", "-G", "lab", "sleep 30")
    assert res.returncode == 0, res.stdout + res.stderr
    job = int(res.stdout.split("<")[1].split(">")[0])
    c.wait_started([job])
    rows = share_info(c, tmp_path)
    assert (rows["lab/"]["SHARES"], rows["lab/"]["STARTED"], rows["root"]["STARTED"]) == (
        "3",
        "1",
        "0",
    )
    res = lsf(c, tmp_path, "bsub", "-G", "other", "true")
    assert res.returncode == 1
    assert res.stderr == "bsub: -G other: User not in the specified user group\n"
    c.client.kill([job])


def test_reload_changes_shares_and_a_bad_policy_keeps_the_old(fair_cluster, tmp_path):
    c = fair_cluster
    assert share_info(c, tmp_path)["root"]["SHARES"] == "2"
    qpath = c.conf.paths.queues_conf
    good = open(qpath).read()
    with open(qpath, "w") as f:
        f.write(good.replace("[root, 2]", "[root, 7]"))
    assert lsf(c, tmp_path, "badmin", "reconfig").returncode == 0
    assert share_info(c, tmp_path)["root"]["SHARES"] == "7"
    with open(qpath, "w") as f:
        f.write(good.replace("[root, 2]", "[root, many]"))
    res = lsf(c, tmp_path, "badmin", "reconfig")
    assert res.returncode != 0 and "fairshare: [root, many]" in res.stdout + res.stderr
    # mbatchd keeps the shares it has (commands read queues.conf, so ask it directly)
    (queue,) = [q for q in c.client.call("queues")["queues"] if q["name"] == "fair"]
    assert {a["account"]: a["shares"] for a in queue["share_info"]}["root"] == 7


@pytest.fixture(scope="module")
def accounts():
    yield from own_accounts(*USERS)


def test_two_users_on_one_slot_start_by_their_shares(accounts, readable, tmp_path):  # noqa: F811
    state = tempfile.mkdtemp(prefix="lavalite-fair-", dir="/tmp")
    os.chmod(state, 0o755)
    libdir = os.path.join(state, "pylib")
    shutil.copytree(os.path.dirname(orjson.__file__), os.path.join(libdir, "orjson"))
    a, b = USERS
    c = Cluster(
        os.path.join(state, "cluster"),
        slots=1,
        queues={"fair": {"fairshare": f"USER_SHARES[[{a}, 2] [{b}, 1]]"}},
        # past run time weighs much, so that one-second jobs make a difference
        mbatchd={"default_queue": "fair", "run_time_factor": "100000"},
        conf={"cluster": {"allow_root_jobs": "no"}},
    )
    c.start()
    c.pythonpath, c.readable = f"{readable}:{libdir}", readable
    try:
        assert lsf(c, tmp_path, "badmin", "qinact", "fair").returncode == 0
        ids = {}
        for user in (a, b):  # all of a's jobs queued before b's
            for _ in range(12):
                res = as_user(c, accounts[user], "submit", "--", "sleep", "1")
                assert res.returncode == 0, res.stdout + res.stderr
                ids[int(res.stdout.split("<")[1].split(">")[0])] = user
        assert lsf(c, tmp_path, "badmin", "qact", "fair").returncode == 0
        jobs = c.wait(list(ids), timeout=180)
        order = sorted(ids, key=lambda i: jobs[i]["start_time"])
        first9 = [ids[i] for i in order[:9]]
        # 2:1 by shares (FIFO across users would give b none of the first 9)
        assert first9.count(b) == 3, first9
        assert [i for i in order if ids[i] == a] == sorted(i for i in ids if ids[i] == a)
    finally:
        c.stop()
        shutil.rmtree(state, ignore_errors=True)


def test_simulate_fairshare_shares_slot_time_two_to_one(tmp_path):
    """`lavalite simulate --fairshare`: a real mbatchd, simulated hosts; over the simulated hour
    user1 (2 shares) holds about twice user2's slot time (1 share), where first come, first
    served gives user2 none (user1's jobs came first)."""
    from conftest import LAUNCHER

    args = ["--hosts", "10", "--slots", "4", "--users", "8", "--jobs", "8000"]
    args += ["--duration", "60-300", "--speed", "1800", "--state-dir", str(tmp_path / "sim")]
    out = subprocess.run(
        LAUNCHER + ["simulate", "--fairshare", "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    fig = orjson.loads(out.stdout.strip().splitlines()[-1])
    hour = fig["fairshare_hour"]
    assert fig["ended_twice"] == 0
    # 2:1 by shares; the slots in use add 1 to each user's load, so with few slots per user
    # the share leans above 2
    assert 1.6 <= hour["fairshare"]["ratio"] <= 2.6, hour
    assert hour["fifo"]["user2_slot_s"] == 0, hour
