"""mbatchd's core driven directly, the HyperQueue way: events in, one recorded TurnOutput
(store rows, outbox, bwait answers) out, no sockets. The store is real (a file in tmp_path)."""

import pytest

from lavalite import config
from lavalite.protocol import ProtocolError
from roles.mbatchd.core import Core
from store import Store

USER = {"role": "user", "user": "alice", "uid": 1000, "host": "h0"}


@pytest.fixture
def world(tmp_path):
    conf = config.defaults(str(tmp_path))
    store = Store(str(tmp_path / "db"))
    core = Core(conf, store.load(0), now=100.0)
    return conf, store, core


def commit(store, core):
    """The shell's turn: commit the output's rows, then take it; the outbox it would send."""
    rows = core.out.rows()
    if rows is not None:
        store.commit(**rows)
    return core.new_turn().outbox


def dispatched(core, store, slots=1, **spec):
    """A job submitted and dispatched to host h1 (registered with `slots`), committed."""
    core.host_register("h1", {"slots": slots, "running": []}, 100.0)
    job_id = submit(core, store, **spec)
    core.schedule(100.0)
    commit(store, core)
    return job_id


def submit(core, store, cmd=("true",), **spec):
    return core.submit(
        USER, {"spec": {"cmd": list(cmd), "env": {"A": "1"}, **spec}}, 100.0, store.env_id
    )["job"]


def test_dispatch_batched_per_host_and_env_shared(world):
    conf, store, core = world
    core.host_register("h1", {"slots": 2, "running": []}, 100.0)
    ids = [submit(core, store) for _ in range(3)]
    assert core.schedule(100.0) == 2
    out = commit(store, core)
    assert [m["op"] for m in out["h1"]] == ["dispatch"]
    assert [j["id"] for j in out["h1"][0]["jobs"]] == ids[:2]
    assert len(out["h1"][0]["envs"]) == 1
    assert store.db.execute("select count(*) from envs").fetchone()[0] == 1


def test_duplicate_request_id_makes_one_job(world):
    conf, store, core = world
    msg = {"req": "abc", "spec": {"cmd": ["true"]}}
    first = core.submit(USER, msg, 100.0, store.env_id)
    again = core.submit(USER, msg, 100.0, store.env_id)
    assert first["job"] == again["job"] and again["duplicate"]
    assert len(core.jobs) == 1


def test_exit_reports_retry_then_fail_and_stale_reports_change_nothing(world):
    conf, store, core = world
    job_id = dispatched(core, store, retries=1)
    rep = {"rid": 1, "kind": "exit", "job": job_id, "attempt": 1, "exit_code": 2}
    assert core.reports("h1", [rep], 101.0) == [1]
    job = core.jobs[job_id]
    assert job.state == "PEND" and job.eligible_time == 101.0 + 10.0
    assert core.reports("h1", [dict(rep, rid=2)], 102.0) == [2] and job.state == "PEND"
    core.tick(111.0)
    core.schedule(111.0)
    core.reports("h1", [dict(rep, rid=3, attempt=2)], 112.0)
    assert job.stat == "FAILED(exit)" and job.attempt == 2
    commit(store, core)
    assert [e[3] for e in store.events(job_id)] == ["PEND", "RUN", "PEND", "RUN", "FAILED"]


def test_reregistration_redelivers_lost_dispatch_and_kills_stale_copies(world):
    conf, store, core = world
    job_id = dispatched(core, store, slots=2)
    core.host_gone("h1", 100.5)
    # back, not knowing the job (the dispatch was lost), but running a stale attempt 7 of job 99
    core.host_register("h1", {"slots": 2, "running": [[99, 7]]}, 101.0)
    out = commit(store, core)["h1"]
    assert {"op": "kill", "job": 99, "attempt": 7, "stale": True} in out
    assert [j["id"] for m in out if m["op"] == "dispatch" for j in m["jobs"]] == [job_id]
    assert core.jobs[job_id].attempt == 1, "redelivery is the same attempt"


def test_reload_from_store_restores_queues_and_counters(world, tmp_path):
    conf, store, core = world
    core.host_register("h1", {"slots": 1, "running": []}, 100.0)
    ids = [submit(core, store) for _ in range(3)]
    core.schedule(100.0)
    commit(store, core)
    again = Core(conf, store.load(0), now=100.0)
    again.sort_pending()
    assert again.jobs[ids[0]].state == "RUN" and again.hosts["h1"].used == 1
    assert again.npend["serial"] == 2 and again.next_id == ids[-1] + 1
    assert again.hosts["h1"].status == "unavail", "a host is unavailable until it registers"


def test_submit_validation(world):
    conf, store, core = world
    for spec, text in [
        ({"cmd": []}, "cmd"),
        ({"cmd": ["x"], "queue": "nope"}, "does not exist"),
        ({"cmd": ["x"], "slots": 0}, "slots"),
        ({"cmd": ["x"], "retries": 99}, "retries"),
        ({"cmd": ["x"], "walltime": "soon"}, "number"),
        ({"cmd": ["x"], "env": {"A": 1}}, "env"),
    ]:
        with pytest.raises(ProtocolError, match=text):
            core.submit(USER, {"spec": spec}, 100.0, store.env_id)
    assert core.jobs == {} and core.out.events == []


def test_a_job_killed_while_its_dispatch_was_lost_is_not_sent_again(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    core.host_gone("h1", 100.5)
    core.kill(USER, {"jobs": [job_id]}, 101.0)
    core.host_register("h1", {"slots": 1, "running": []}, 102.0)
    out = commit(store, core).get("h1", [])
    assert core.jobs[job_id].state == "KILLED"
    assert not [m for m in out if m["op"] == "dispatch"]
    assert core.hosts["h1"].used == 0


def test_a_kill_crossing_a_jobs_own_end_leaves_that_end(world):
    """bkill arrives while the jobs' exit reports are on their way (or wait in the inbox under
    the turn budget): a job that ended by itself keeps its ending, a failure of its own is not
    tried again, and only the job the kill ended (sbatchd's reason) is KILLED."""
    conf, store, core = world
    core.host_register("h1", {"slots": 3, "running": []}, 100.0)
    ok, bad, hit = submit(core, store), submit(core, store, retries=1), submit(core, store)
    core.schedule(100.0)
    commit(store, core)
    core.kill(USER, {"jobs": [ok, bad, hit]}, 101.0)
    reports = [
        {"rid": 1, "kind": "exit", "job": ok, "attempt": 1, "exit_code": 0},
        {"rid": 2, "kind": "exit", "job": bad, "attempt": 1, "exit_code": 2},
        {"rid": 3, "kind": "exit", "job": hit, "attempt": 1, "exit_signal": 15, "reason": "killed"},
    ]
    assert core.reports("h1", reports, 102.0) == [1, 2, 3]
    assert [core.jobs[j].stat for j in (ok, bad, hit)] == ["DONE", "FAILED(exit)", "KILLED"]
    assert core.jobs[bad].attempt == 1 and core.hosts["h1"].used == 0


def _memory(core):
    """What mbatchd's memory says, in terms a store reload must reproduce."""
    return {
        "jobs": {i: j.state for i, j in core.jobs.items()},
        "arrays": sorted(core.arrays),
        "by_req": dict(core.by_req),
        "users": set(core.users),
        "npend": {q: n for q, n in core.npend.items() if n},
        "envs": {i: e[2] for i, e in core.envs.items()},
        "used": {h.name: h.used for h in core.hosts.values()},
        "running": {q: (v.running, dict(v.running_user)) for q, v in core.queues.items()},
        "fifos": {
            q: {u: [e[1].id for e in f] for u, f in v.pending.items()}
            for q, v in core.queues.items()
        },
    }


def test_a_failed_commit_forgets_the_turns_new_jobs_and_keeps_the_rest(world):
    """The turn's new job (placed), array (an element placed), killed job and new user are
    forgotten: memory then equals a reload of the store once the rest is committed."""
    conf, store, core = world
    core.host_register("h1", {"slots": 2, "running": []}, 100.0)
    first = submit(core, store)
    core.schedule(100.0)
    commit(store, core)
    bob = {**USER, "user": "bob", "uid": 1001}
    new = core.submit(
        USER, {"req": "r1", "spec": {"cmd": ["a"], "env": {"B": "2"}}}, 101.0, store.env_id
    )["job"]
    core.submit(bob, {"spec": {"cmd": ["b"], "name": "arr[1-3]"}}, 101.0, store.env_id)
    killed = submit(core, store)
    core.kill(USER, {"jobs": [killed]}, 101.0)
    assert core.wait(USER, {"cond": "ended", "job": new}, "token", store.job) is None
    core.reports(
        "h1", [{"rid": 1, "job": first, "attempt": 1, "kind": "exit", "exit_code": 0}], 101.0
    )
    assert core.schedule(101.0) == 2
    error = ProtocolError("unavailable", "disk full")
    assert core.refuse_created(error) == 3
    assert core.out.woken == [("token", error)]
    out = commit(store, core)
    assert not [m for msgs in out.values() for m in msgs if m["op"] == "dispatch"]
    assert store.db.execute("select id, state from jobs").fetchall() == [(first, "DONE")]
    again = Core(conf, store.load(0), now=101.0)
    again.host_register("h1", {"slots": 2, "running": []}, 101.0)
    assert _memory(core) == _memory(again)
    retried = core.submit(USER, {"req": "r1", "spec": {"cmd": ["a"]}}, 102.0, store.env_id)
    assert "duplicate" not in retried, "a refused request id is free again"


def test_a_turns_output_waits_for_the_commit_then_is_handed_over_once(world):
    """What the handlers record stays in Core.out until the shell has committed it (a failed
    commit writes it again next turn); new_turn hands it over and the next turn starts empty."""
    conf, store, core = world
    core.host_register("h1", {"slots": 1, "running": []}, 100.0)
    job_id = submit(core, store)
    core.schedule(100.0)
    rows = core.out.rows()
    assert [j.id for j in rows["jobs"]] == [job_id] and [h.name for h in rows["hosts"]] == ["h1"]
    assert [e.new for e in rows["events"]] == ["PEND", "RUN"] and len(rows["envs"]) == 1
    assert [m["op"] for m in core.out.outbox["h1"]] == ["dispatch"]
    out = core.new_turn()
    assert out.outbox["h1"][0]["jobs"][0]["id"] == job_id
    assert core.out.rows() is None and core.new_turn().outbox == {}
