"""One user's bad job never takes capacity or the cluster down: what mbatchd refuses at submit
(by field, mbatchd answering on), what a shepherd does with a spec that gets past it (that job
fails, the shepherd serves on), a bkill that frees the FIFO, a large legal environment."""
import asyncio
import os
import pwd
import time

from roles.sbatchd import record
from test_shepherd import _shepherd

NUL = "a\0b"


def _host_slots(cluster, deadline=60):
    """The slots of the cluster's one host, once its sbatchd has registered."""
    end = time.time() + deadline
    while True:
        hosts = cluster.client.call("hosts")["hosts"]
        if hosts and hosts[0]["slots"]:
            return hosts[0]["slots"]
        assert time.time() < end, cluster.logs()
        time.sleep(0.1)


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
    jobs = [cluster.submit(["sh", "-c", 'echo "${#V399} $(env | wc -l)"'], env=env,
                           out=str(out)) for out in outs]
    views = cluster.wait(jobs)
    assert [v["stat"] for v in views.values()] == ["DONE"] * len(jobs), cluster.logs()
    for out in outs:
        length, count = out.read_text().split()
        assert length == "1000" and int(count) >= 400
    again = cluster.submit(["true"])               # the links serve on
    assert cluster.wait([again])[again]["stat"] == "DONE"


def _order(tmp_path, job, argv=("true",), env=None, cwd="/", out=None):
    """A start order as sbatchd sends it (no cgroup), with the record's lock."""
    path = str(tmp_path / f"{job}.1")
    user = pwd.getpwuid(os.getuid())
    order = {"job": job, "attempt": 1, "record": path, "argv": list(argv),
             "env": {"PATH": os.defpath, "TMPDIR": str(tmp_path / f"tmp{job}"), **(env or {})},
             "cwd": cwd, "outputs": [[[1, 2], out]],
             "account": [user.pw_name, user.pw_uid, user.pw_gid, False],
             "limits": [None, None, 1], "cgroup": None}
    return order, record.create(path)


def test_a_shepherd_given_hostile_specs_fails_those_jobs_and_serves_on(tmp_path):
    """Specs mbatchd would refuse, sent straight to a shepherd: each ends its own job
    FAILED(exec_failed), and the job sent after them runs."""
    ended = {}
    hostile = [{"argv": ["echo", NUL]}, {"cwd": "/" + NUL}, {"env": {"A=B": "1"}},
               {"env": {"A": NUL}}, {"env": {"": "1"}}, {"out": str(tmp_path / NUL)}]
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
