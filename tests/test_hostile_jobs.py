"""One user's bad job never takes capacity or the cluster down: what mbatchd refuses at submit
(by field, mbatchd answering on), what a shepherd does with a spec that gets past it (that job
fails, the shepherd serves on), a bkill that frees the FIFO, a large legal environment."""

import asyncio
import os
import pwd
import subprocess
import sys
import time

import pytest
from conftest import ROOT, wait_until
from test_shepherd import _shepherd

from lavalite.client import ClientError
from roles.sbatchd import record

NUL = "a\0b"


def _refusal(cluster, cmd=("true",), **spec):
    with pytest.raises(ClientError) as exc:
        cluster.submit(list(cmd), **spec)
    return exc.value


def _host_slots(cluster, deadline=60):
    """The slots of the cluster's one host, once its sbatchd has registered."""

    def slots():
        hosts = cluster.client.call("hosts")["hosts"]
        return hosts and hosts[0]["slots"]

    return wait_until(slots, deadline, cluster.logs)


def test_bad_specs_are_refused_by_field_and_mbatchd_serves_on(cluster):
    for spec, words in [
        ({"cmd": ["echo", NUL]}, "command argument 1 holds a NUL byte"),
        ({"cwd": "/tmp/" + NUL}, "cwd holds a NUL byte"),
        ({"name": NUL}, "name holds a NUL byte"),
        ({"out": NUL}, "out holds a NUL byte"),
        ({"env": {"A": NUL}}, "environment variable 'A' holds a NUL byte"),
        ({"env": {"A=B": "1"}}, "environment name 'A=B' must be non-empty"),
        ({"env": {"": "1"}}, "environment name '' must be non-empty"),
        ({"slots": 2**63}, "slots (-n) must be an integer"),
        ({"slots": True}, "slots (-n) must be an integer"),
        ({"walltime": 1e308}, "walltime must be a number of seconds"),
        ({"memory": 2**63}, "memory (-M) must be an integer"),
        ({"name": "x" * (1 << 20)}, "name has 1048576 characters"),
        ({"env": {f"V{i}": "x" * 1000 for i in range(1100)}}, "command and environment take 1"),
    ]:
        err = _refusal(cluster, **spec)
        assert err.code == "bad_request" and words in err.message, (spec, err.message)
    for op, fields, name in [
        ("jobs", {"users": 5}, "'users'"),
        ("jobs", {"jobs": "x"}, "'jobs'"),
        ("kill", {"jobs": [[1]]}, "'jobs'"),
        ("peek", {"job": "x"}, "'job'"),
    ]:
        with pytest.raises(ClientError) as exc:
            cluster.client.call(op, **fields)
        assert exc.value.code == "bad_request" and name in exc.value.message
    slots = _host_slots(cluster)
    err = _refusal(cluster, slots=slots + 1)
    assert err.message == f"slots (-n) {slots + 1}: the hosts have in all {slots} slots"
    for args in (
        ["-n", "9223372036854775808"],
        ["-n", "true"],
        ["-n", "nan"],
        ["--time", "1e308"],
        ["--time", "nan"],
    ):
        res = cluster.cli("submit", *args, "--", "true", check=False)
        assert res.returncode == 2 and f"argument {args[0]}:" in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    res = cluster.cli("submit", "-n", str(slots + 1), "--", "true", check=False)
    assert res.returncode == 1 and f"the hosts have in all {slots} slots" in res.stderr
    assert cluster.client.jobs([], users=["all"], all=True) == [], "nothing got in"
    job = cluster.submit(["true"])
    assert cluster.wait([job])[job]["stat"] == "DONE"
    assert "internal error" not in cluster.logs()


def test_bkill_of_a_pending_job_lets_the_job_behind_it_start(make_cluster):
    """The wide job holds its user's FIFO; once it is killed the narrow one behind it starts
    with the free slot, without waiting for some other event to wake the scheduler."""
    c = make_cluster(slots=2)
    assert _host_slots(c) == 2
    running = c.submit(["sleep", "300"])
    c.wait_started([running])
    wide, narrow = c.submit(["true"], slots=2), c.submit(["true"])
    # the submit's reply leaves after its turn has scheduled: both wait now
    assert [c.jobs([j])[j]["state"] for j in (wide, narrow)] == ["PEND", "PEND"]
    c.client.kill([wide])
    assert c.wait([narrow], timeout=60)[narrow]["stat"] == "DONE"
    c.client.kill([running])


def test_400_kb_environment_jobs_end_done(cluster, tmp_path):
    """Their orders to the shepherds are more than a socket's buffer: each goes out as its
    shepherd reads it, and every job sees all of its environment. Several at once, so that
    the sockets fill however fast the shepherds read."""
    env = {"PATH": os.environ["PATH"], **{f"V{i}": "x" * 1000 for i in range(400)}}
    outs = [tmp_path / f"out{i}" for i in range(8)]
    jobs = [
        cluster.submit(["sh", "-c", 'echo "${#V399} $(env | wc -l)"'], env=env, out=str(out))
        for out in outs
    ]
    views = cluster.wait(jobs)
    assert [v["stat"] for v in views.values()] == ["DONE"] * len(jobs), cluster.logs()
    for out in outs:
        length, count = out.read_text().split()
        assert length == "1000" and int(count) >= 400
    again = cluster.submit(["true"])  # the links serve on
    assert cluster.wait([again])[again]["stat"] == "DONE"


def _order(tmp_path, job, argv=("true",), env=None, cwd="/", out=None):
    """A start order as sbatchd sends it (no cgroup), with the record's lock."""
    path = str(tmp_path / f"{job}.1")
    user = pwd.getpwuid(os.getuid())
    order = {
        "job": job,
        "attempt": 1,
        "record": path,
        "argv": list(argv),
        "env": {"PATH": os.defpath, "TMPDIR": str(tmp_path / f"tmp{job}"), **(env or {})},
        "cwd": cwd,
        "outputs": [[[1, 2], out]],
        "account": [user.pw_name, user.pw_uid, user.pw_gid, False],
        "limits": [None, None, 1],
        "cgroup": None,
    }
    return order, record.create(path)


def test_a_shepherd_given_hostile_specs_fails_those_jobs_and_serves_on(tmp_path):
    """Specs mbatchd would refuse, sent straight to a shepherd: each ends its own job
    FAILED(exec_failed), and the job sent after them runs."""
    ended = {}
    hostile = [
        {"argv": ["echo", NUL]},
        {"cwd": "/" + NUL},
        {"env": {"A=B": "1"}},
        {"env": {"A": NUL}},
        {"env": {"": "1"}},
        {"out": str(tmp_path / NUL)},
    ]
    with _shepherd({}, on_ended=lambda msg: ended.setdefault(msg["job"], msg["status"])) as link:
        for job, kw in enumerate(hostile + [{}], start=1):
            order, lock = _order(tmp_path, job, **kw)
            assert link.start([order], [lock])
            os.close(lock)
        deadline = time.time() + 30
        while len(ended) <= len(hostile) and time.time() < deadline:
            link.loop.run_until_complete(asyncio.sleep(0.05))
        assert link.alive and link.proc.poll() is None
    for job in range(1, len(hostile) + 1):
        assert ended[job]["reason"] == "exec_failed", (job, ended.get(job))
        assert "cannot start the job" in ended[job]["message"]
    assert ended[len(hostile) + 1]["exit_code"] == 0, ended


def test_a_shepherd_whose_loop_dies_exits(tmp_path):
    """An order broken beyond one job (no account: sbatchd's own bug) ends the loop thread:
    the process must exit then, so that sbatchd sees the link close and checks the attempts
    by their locks, rather than live on with a dead loop and its jobs in RUN for good."""
    order, lock = _order(tmp_path, 1)
    del order["account"]
    lost = []
    with _shepherd({}) as link:
        link.on_lost = lost.append
        assert link.start([order], [lock])
        os.close(lock)
        deadline = time.time() + 30
        while not lost and time.time() < deadline:
            link.loop.run_until_complete(asyncio.sleep(0.05))
        assert lost == [link] and link.proc.poll() == 70


@pytest.mark.parametrize("minutes", ["-1", "1e308", "nan"])
def test_bwait_with_a_bad_timeout_is_a_usage_error(minutes):
    res = subprocess.run(
        [sys.executable, "lavalite.py", "wait", "-t", minutes, "-w", "done(1)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"LAVALITE_CONF": "/nonexistent"},
    )
    assert res.returncode == 2 and "argument -t: the time to wait must be above 0" in res.stderr
    assert "Traceback" not in res.stderr
