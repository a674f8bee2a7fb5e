"""Job arrays, --each-line, bwait and the Python client, end to end on a real cluster."""

import json
import os
import subprocess
import sys
import threading

import apsw
import pytest
from conftest import wait_until

from lavalite.client import ClientError
from lavalite.job_array import ArrayError, parse_label, parse_name
from lavalite.model import element_id

FINISHED = ("DONE", "FAILED", "KILLED")


def test_parse_name():
    assert parse_name("x[1-10:3,20,30-31]%2") == ("x", [(1, 10, 3), (20, 20, 1), (30, 31, 1)], 2)
    assert parse_name("plain") == ("plain", None, 0)
    assert parse_label("7[3]") == element_id(7, 3)
    for bad in ("x[0-3]", "x[5-1]", "x[1-3:0]", "x[a]", "x[1-3]%0", "x[1-3", "x[1-2000000]"):
        with pytest.raises(ArrayError):
            parse_name(bad)
    for bad in ("7[0]", "7[]", "-1", "x"):
        with pytest.raises(ArrayError):
            parse_label(bad)


def _store(c):
    return apsw.Connection(c.conf.mbatchd.database, flags=apsw.SQLITE_OPEN_READONLY)


def _array_jobs(c, array_id):
    return {j["label"]: j for j in c.client.jobs([array_id])}


def _wait_array(c, array_id, timeout=120):
    c.client.wait(array_id)  # bwait's request: one connection, answered at the end
    return _array_jobs(c, array_id)


def test_array_throttle_index_and_outputs(make_cluster):
    c = make_cluster(slots=4)
    out = os.path.join(c.state, "out")
    os.makedirs(out)
    res = c.cli(
        "submit",
        "-J",
        "sq[1-7:2,20,30-32]%2",
        "-o",
        f"{out}/o.%J.%I",
        "--",
        "sh",
        "-c",
        "echo $LSB_JOBID $LSB_JOBINDEX; sleep 0.3",
    )
    array_id = int(res.stdout.split("<")[1].split(">")[0])
    jobs = _wait_array(c, array_id)
    indices = [1, 3, 5, 7, 20, 30, 31, 32]
    assert sorted(jobs) == sorted(f"{array_id}[{i}]" for i in indices)
    assert {j["stat"] for j in jobs.values()} == {"DONE"}
    for i in indices:
        with open(f"{out}/o.{array_id}.{i}") as f:
            assert f.read().split() == [str(array_id), str(i)]
    # The throttle, observed from the store's events: never more than 2 elements in RUN.
    running = peak = 0
    for job_id, _, old, new, *_ in c.events():
        if job_id >> 32 != array_id:
            continue
        running += (new == "RUN") - (old == "RUN")
        peak = max(peak, running)
    assert peak == 2
    db = _store(c)
    try:
        ((rows,),) = db.execute("SELECT count(*) FROM arrays WHERE id=?", (array_id,))
        assert rows == 1
    finally:
        db.close()
    summary = c.cli("jobs", "-A", "-a").stdout.split("\n")[1].split()
    assert summary[0] == str(array_id) and summary[3:] == ["8", "0", "8", "0", "0"]


def test_big_array_is_one_row_and_kills(make_cluster):
    c = make_cluster(slots=2)
    array_id = c.submit(["sleep", "30"], name="big[1-100000]")
    c.wait([element_id(array_id, 1), element_id(array_id, 2)], states=("RUN",))
    waiter = subprocess.Popen(
        c.program + ["wait", "-w", f"ended({array_id}[60])"],
        env=c.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = _store(c)
    try:
        ((n,),) = db.execute("SELECT count(*) FROM jobs WHERE id >> 32 = ?", (array_id,))
        assert n == 2  # only the started elements have rows
    finally:
        db.close()
    listing = c.cli("jobs").stdout.splitlines()
    assert len(listing) == 1 + 100000 and listing[3].split()[0] == f"{array_id}[3]"
    # Kill one running element, one pending index, then the whole array.
    res = c.cli("kill", f"{array_id}[1]", f"{array_id}[50]")
    assert f"Job <{array_id}[1]> is being terminated" in res.stdout
    assert c.jobs([element_id(array_id, 50)])[element_id(array_id, 50)]["stat"] == "KILLED"
    c.wait([element_id(array_id, 1)])
    assert c.jobs([element_id(array_id, 1)])[element_id(array_id, 1)]["stat"] == "KILLED"
    c.cli("kill", str(array_id))
    c.client.wait(array_id)
    # index 60 never started: the array's kill ended it, and the wait with it
    assert waiter.wait(60) == 0, waiter.communicate()
    summary = [
        a for a in c.client.call("jobs", arrays=True, all=True)["arrays"] if a["id"] == array_id
    ][0]
    assert summary["pend"] == summary["run"] == 0 and summary["exit"] == 100000
    assert c.cli("jobs", check=False).stderr.startswith("No unfinished job found")
    res = c.cli("wait", "-w", f"done({array_id})", check=False)
    assert res.returncode == 1 and "never satisfied" in res.stderr


def test_each_line(make_cluster):
    c = make_cluster(slots=3)
    lines = ["alpha", "two words", "it's $HOME"]
    path = os.path.join(c.state, "lines.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n\n")
    out = os.path.join(c.state, "el.%I")
    res = c.cli(
        "submit", "--each-line", path, "-o", out, "--", "sh", "-c", 'printf "%s" "$LSB_JOBLINE"'
    )
    array_id = int(res.stdout.split("<")[1].split(">")[0])
    c.cli("wait", "-w", f"done({array_id})", "-t", "2")
    for i, line in enumerate(lines, 1):
        with open(os.path.join(c.state, f"el.{i}")) as f:
            assert f.read() == line
    bad = c.cli("submit", "--each-line", os.path.join(c.state, "nope"), "--", "true", check=False)
    assert bad.returncode != 0 and "cannot read --each-line file" in bad.stderr


def test_python_client_submit_many_and_bwait_timeout(make_cluster):
    c = make_cluster(slots=4)
    code = (
        "import lavalite, sys\n"
        "c = lavalite.Client()\n"
        "ids = c.submit_many([['true']] * 50 + [{'cmd': ['false'], 'name': 'f'}])\n"
        "print(ids[0], ids[-1])\n"
        "assert 'lavalite.client' in sys.modules and 'orjson' in sys.modules\n"
        # the environment a submission carries is the caller's at that moment
        "import os\n"
        "for value in ('a', 'b'):\n"
        "    os.environ['LL_T'] = value\n"
        "    print(c.submit(['sh', '-c', 'echo $LL_T'], out='env.' + value))\n"
    )
    cwd = os.path.dirname(c.conf_path)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**c.env, "PYTHONPATH": os.getcwd()},
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr
    first, last, *env_jobs = map(int, proc.stdout.split())
    assert last - first == 50
    c.wait(env_jobs)
    for value in ("a", "b"):
        with open(os.path.join(cwd, "env." + value)) as f:
            assert f.read() == value + "\n"
    ended = c.wait(list(range(first, last + 1)))
    assert [j["stat"] for j in ended.values()].count("DONE") == 50
    assert ended[last]["stat"] == "FAILED(exit)"
    # One bad spec refuses the whole request.
    with pytest.raises(ClientError, match="job 1: Queue <nope> does not exist"):
        c.client.submit_many([["true"], {"cmd": ["true"], "queue": "nope"}])
    # bwait on a running job: times out; then waits for its end on one connection.
    slow = c.submit(["sleep", "2"])
    res = c.cli("wait", "-w", f"ended({slow})", "-t", "0.01", check=False)
    assert res.returncode == 1 and "not satisfied within" in res.stderr
    done = []
    t = threading.Thread(target=lambda: done.append(c.cli("wait", "-w", f"done({slow})")))
    t.start()
    t.join(60)
    assert done and done[0].returncode == 0
    assert c.jobs([slow])[slow]["stat"] == "DONE"
    assert json.loads(c.cli("jobs", "--json", str(slow)).stdout)["label"] == str(slow)


def test_array_survives_mbatchd_kill9(make_cluster, tmp_path):
    """The array row (cursor, counts, a killed index) and its started elements come back after
    mbatchd dies: every other index runs exactly once, the throttle still holds."""
    c = make_cluster(slots=4)
    log = tmp_path / "runs.log"
    array_id = c.submit(
        ["sh", "-c", f"sleep 0.2; echo $LSB_JOBINDEX >> {log}"], name="r[1-40]%3", out="/dev/null"
    )
    c.wait([element_id(array_id, 1)], states=("RUN", "DONE"))
    c.client.kill([element_id(array_id, 30)])  # a pending index, killed alone
    c.kill9_restarted("mbatchd")

    def ended():
        c.client.close()
        try:
            return _wait_array(c, array_id)
        except ClientError:  # until the new mbatchd listens
            return None

    jobs = wait_until(ended, 60, lambda: "mbatchd to come back\n" + c.logs(), 0.2)
    runs = sorted(map(int, log.read_text().split()))
    assert runs == [i for i in range(1, 41) if i != 30], runs
    assert jobs[f"{array_id}[30]"]["stat"] == "KILLED"
    running = peak = 0
    for job_id, _, old_state, new, *_ in c.events():
        if job_id >> 32 == array_id:
            running += (new == "RUN") - (old_state == "RUN")
            peak = max(peak, running)
    assert peak <= 3


def test_store_v1_gains_the_arrays_table_and_the_message_column(tmp_path):
    from conftest import ROOT

    from store import SCHEMA_VERSION, Store

    old = subprocess.run(
        ["git", "-C", ROOT, "show", "68bc9e6:store/schema.sql"], capture_output=True, text=True
    )
    if old.returncode:
        pytest.skip(f"no git history to read the version 1 schema from: {old.stderr.strip()}")
    path = str(tmp_path / "v1.db")
    db = apsw.Connection(path)
    db.execute(old.stdout)
    db.execute(
        "INSERT INTO jobs (id, user, uid, queue, name, slots, spec, state, max_attempts, "
        "submit_time, eligible_time, end_time) VALUES (7, 'ann', 1000, 'normal', 'x', 1, "
        "'{}', 'DONE', 1, 1.0, 1.0, 2.0)"
    )
    db.execute("PRAGMA user_version=1")
    db.close()
    store = Store(path)
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
        loaded = store.load(0)
        assert loaded["arrays"] == []
        assert [(j.id, j.state, j.message, j.hosts) for j in loaded["jobs"]] == [
            (7, "DONE", None, None)
        ]
        assert store.db.execute("SELECT count(*) FROM job_runs").fetchone() == (0,)
    finally:
        store.close()


def test_plan_takes_elements_under_the_throttle_and_the_turn_limit():
    """The scheduler alone: an array is one FIFO entry placed once per element, never past
    %LIMIT (running + placed this turn); the user's next job is not held behind it; a pass
    places at most `limit` slots."""
    from collections import deque

    from lavalite.job_array import Array
    from lavalite.model import PR_ARRAY_LIMIT, RUN, Job
    from scheduler import QueueView, Snapshot, plan

    q = QueueView("serial")
    arr = Array(1, "u", 1000, "serial", "a", {}, [(1, 100, 1)], throttle=3)
    arr.counts[RUN] = 1  # one element runs already
    arr.pend_seq = 1
    job = Job(2, "u", 1000, "serial", "j", {})
    job.pend_seq = 2
    q.pending["u"] = deque([(1, arr), (2, job)])
    p = plan(Snapshot(0.0, [q], {"h": 10}, 10, 10))
    assert [j for j, _ in p.placements] == [arr, arr, job]
    assert p.reasons[("array", 1)] == PR_ARRAY_LIMIT
    arr.throttle = 0
    p = plan(Snapshot(0.0, [q], {"h1": 8, "h2": 8}, 16, 8, limit=5))
    assert [j for j, _ in p.placements] == [arr] * 5


def test_bad_array_input_is_refused_clearly(cluster, tmp_path):
    c = cluster
    for args, message in (
        (["submit", "-J", "x[5-1]", "--", "true"], "bad array index '5-1'"),
        (["submit", "-J", "x[1-3", "--", "true"], "bad job array name"),
        (["submit", "-J", "x[1-3]%0", "--", "true"], "%LIMIT must be from 1 to"),
        (["wait", "-w", "finished(3)"], "bad condition"),
        (["kill", "3[x]"], "is not a job id"),
        (["jobs", "0[1]"], "is not a job id"),
    ):
        res = c.cli(*args, check=False)
        assert res.returncode in (1, 2) and message in res.stderr, (args, res.stderr)
    lines = tmp_path / "l.txt"
    lines.write_text("a\nb\n")
    res = c.cli("submit", "--each-line", str(lines), "-J", "x[1-2]", "--", "true", check=False)
    assert res.returncode == 1 and "without [INDICES]" in res.stderr
    from lavalite.client import ClientError

    with pytest.raises(ClientError, match="specs"):
        c.client.call("submit_many", specs="nope")
    with pytest.raises(ClientError, match="No matching job found"):
        c.client.wait(element_id(999, 1))
    assert c.client.call("jobs", users=["all"], all=True)["jobs"] == []  # nothing was created


def test_bwait_on_jobs_gone_from_memory_answers_from_the_store(make_cluster):
    """clean_period = 0: a finished job leaves mbatchd's memory at the next turn; bwait on it
    still answers (done, or never done), as bjobs does, from its one store row."""
    c = make_cluster(conf={"mbatchd": {"clean_period": "0"}})
    ok, bad = c.submit(["true"]), c.submit(["false"])
    c.wait([ok, bad])
    last = c.submit(["true"])  # later turns: the two are dropped from memory
    c.wait([last])
    wait_until(
        lambda: c.client.call("stats")["jobs_in_memory"] <= 1,
        10,
        "the finished jobs to leave mbatchd's memory",
    )
    res = c.cli("wait", "-w", f"done({ok})")
    assert res.returncode == 0
    res = c.cli("wait", "-w", f"done({bad})", check=False)
    assert res.returncode != 0 and "never satisfied" in res.stderr
    res = c.cli("wait", "-w", "ended(999999)", check=False)
    assert res.returncode != 0 and "No matching job found" in res.stderr
