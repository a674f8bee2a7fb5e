"""brequeue as LSF 10.1 documents it: running jobs (-r, the default), pending ones (-p), DONE
(-d) and EXIT (-e) ones, all (-a), to PEND or to PSUSP (-H), chosen by ID or by -J/-u. The
state machine's way out of a finished state, the core's bookkeeping (array counts, the
dependency index, the environment, the store), and real clusters for each form."""

import pytest
from conftest import wait_until
from test_core import USER, commit, dispatched, submit, world  # noqa: F401 (a fixture)
from test_depend import _queued, _reloaded
from test_jobctl import _bsub, _live_order
from test_lsf_options import _run

from lavalite.model import (
    DONE,
    FAILED,
    PEND,
    PR_DEPEND,
    PR_DEPEND_NEVER,
    PSUSP,
    RUN,
    IllegalTransition,
    Job,
    element_id,
    transition,
)
from lavalite.protocol import ProtocolError
from lavalite.requeue import states_test

ADMIN = {"role": "user", "user": "root", "uid": 0, "host": "h0"}

# --- the state machine and the kinds (no processes)


def test_a_finished_job_goes_back_to_pend_or_psusp_and_never_straight_to_run():
    job = Job(1, "alice", 1000, "normal", "j", {})
    for state in (RUN, DONE):
        transition(job, state, 10.0)
    assert job.end_time == 10.0
    event = transition(job, PEND, 20.0, "requeued by brequeue")
    assert (event.old, event.new, job.end_time, job.start_time) == (DONE, PEND, None, None)
    transition(job, RUN, 30.0)
    assert job.attempt == 2
    transition(job, FAILED, 40.0, "exit")
    transition(job, PSUSP, 50.0)
    with pytest.raises(IllegalTransition, match="PSUSP -> PSUSP"):
        transition(job, PSUSP, 60.0)
    transition(job, PEND, 60.0)
    transition(job, PEND, 65.0)  # brequeue -p: back after its equals
    transition(job, RUN, 70.0)
    transition(job, DONE, 80.0)
    with pytest.raises(IllegalTransition, match="DONE -> RUN"):
        transition(job, RUN, 90.0)


def test_the_kinds_test_a_state_as_the_options_say():
    assert [states_test(["run"])(s) for s in ("RUN", "PEND", "DONE")] == [True, False, False]
    exited = states_test(["exit"])
    assert exited("FAILED") and exited("KILLED") and not exited("DONE")
    every = states_test(["run", "pend", "done", "exit"])
    assert all(every(s) for s in ("RUN", "PEND", "PSUSP", "DONE", "FAILED", "KILLED"))
    for bad in ([], ["ran"], "run", None):
        with pytest.raises(ValueError, match="kinds must list some of run, pend, done, exit"):
            states_test(bad)


# --- mbatchd's core (no processes)


def _end(core, job_id, code=0, now=102.0):
    job = core.jobs[job_id]
    rep = {"rid": 1, "kind": "exit", "job": job_id, "attempt": job.attempt, "exit_code": code}
    core.reports(job.host, [rep], now)


def _requeue(core, store, ids, now=103.0, **fields):
    return core.requeue(USER, {"jobs": ids, **fields}, now, store.env)["results"]


def test_a_done_job_requeued_with_d_runs_again_as_its_next_attempt(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    _end(core, job_id)
    commit(store, core)
    refused = _requeue(core, store, [job_id])[0]  # -r: running jobs only
    assert refused["message"] == f"Job <{job_id}>: Job has already finished"
    assert _requeue(core, store, [job_id], kinds=["exit"])[0]["ok"] is False
    core.envs.clear()  # no job in memory holds its environment: it comes from the store
    result = _requeue(core, store, [job_id], kinds=["done"])[0]
    assert result == {"job": job_id, "ok": True, "message": f"Job <{job_id}> is being requeued"}
    job = core.jobs[job_id]
    assert (job.state, job.end_time, job.host) == (PEND, None, None)
    core.schedule(104.0)
    assert job.state == RUN and job.attempt == 2
    dispatch = commit(store, core)["h1"][0]
    assert dispatch["jobs"][0]["attempt"] == 2 and dispatch["envs"]  # its environment is sent
    _end(core, job_id, now=105.0)
    commit(store, core)
    assert [e[2:4] for e in store.events(job_id)] == [
        (None, PEND),
        (PEND, RUN),
        (RUN, DONE),
        (DONE, PEND),
        (PEND, RUN),
        (RUN, DONE),
    ]
    assert store.job(job_id).attempt == 2


def test_each_run_of_a_requeued_job_is_a_record_of_its_own_for_bacct(world):
    from store.history import Filter, prune

    conf, store, core = world
    job_id = dispatched(core, store)
    _end(core, job_id, code=2)
    core.jobs[job_id].cpu_time = 1.5
    assert _requeue(core, store, [job_id], kinds=["exit"])[0]["ok"]
    commit(store, core)
    core.schedule(104.0)
    _end(core, job_id, now=106.0)
    commit(store, core)
    flt = Filter(ids=[job_id], finished=True)
    summary = store.acct_summary(flt)
    assert (summary["done"], summary["exited"], summary["cpu_total"]) == (1, 1, 1.5)
    assert (summary["begin"], summary["end"]) == (102.0, 106.0)
    runs = store.history_jobs(flt, 10, runs=True)
    assert [(r["state"], r["end_time"]) for r in runs] == [(FAILED, 102.0), (DONE, 106.0)]
    assert len(store.history_jobs(flt, 10)) == 1  # bhist: one job
    submit(core, store)  # a later id: the requeued job is not the last one, prune may take it
    commit(store, core)
    assert prune(store.db, before=1e12) == 1
    assert store.db.execute("SELECT count(*) FROM job_runs").fetchone() == (0,)


def test_an_exit_job_requeued_with_e_and_h_is_held_until_bresume(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    _end(core, job_id, code=3)
    assert core.jobs[job_id].state == FAILED
    assert _requeue(core, store, [job_id], kinds=["exit"], hold=True)[0]["ok"]
    assert core.jobs[job_id].state == PSUSP and job_id not in _queued(core)
    core.resume(USER, {"jobs": [job_id]}, 104.0)
    assert job_id in _queued(core)


def test_a_running_job_requeued_held_waits_out_the_kill_grace_after_bresume(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    assert _requeue(core, store, [job_id], hold=True)[0]["ok"]
    assert core.jobs[job_id].state == PSUSP and core.hosts["h1"].used == 0
    core.resume(USER, {"jobs": [job_id]}, 104.0)
    core.tick(104.0)
    assert core.jobs[job_id].state == PEND and job_id not in _queued(core)
    core.tick(103.0 + conf.sbatchd.kill_grace)  # the old attempt has had its time to end
    assert job_id in _queued(core)


def test_a_pending_job_requeued_with_p_goes_after_its_equals(world):
    conf, store, core = world
    first, second = submit(core, store), submit(core, store)
    assert _requeue(core, store, [first])[0]["message"] == (
        f"Job <{first}>: Job has not started yet"
    )
    assert _requeue(core, store, [first], kinds=["pend"])[0]["ok"]
    assert _live_order(core, first) == [second, first]
    _requeue(core, store, [second], kinds=["pend"], hold=True)
    again = _requeue(core, store, [second], kinds=["pend"], hold=True)[0]
    assert again["message"] == f"Job <{second}>: Job has already been suspended"
    assert core.jobs[second].state == PSUSP


def test_requeue_of_someone_elses_job_or_a_bad_kind_changes_nothing(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    bob = dict(USER, user="bob")
    result = core.requeue(bob, {"jobs": [job_id]}, 103.0, store.env)["results"][0]
    assert result["message"] == f"Job <{job_id}>: User permission denied"
    with pytest.raises(ProtocolError, match="field 'kinds' of 'requeue'"):
        _requeue(core, store, [job_id], kinds=["finished"])
    assert core.jobs[job_id].state == RUN and core.out.events == []


def test_an_element_requeued_after_its_array_ended_makes_it_unfinished_again(world):
    conf, store, core = world
    core.host_register("h1", {"slots": 2, "running": []}, 100.0)
    arr_id = submit(core, store, name="arr[1-2]")
    core.schedule(100.0)
    for index in (1, 2):
        _end(core, element_id(arr_id, index))
    arr = core.arrays[arr_id]
    assert arr.finished and arr.end_time == 102.0
    commit(store, core)
    results = _requeue(core, store, [arr_id], kinds=["done"])  # the array: its DONE elements
    assert [r["ok"] for r in results] == [True, True]
    assert arr.end_time is None and arr.counts[PEND] == 2 and arr.counts[DONE] == 0
    commit(store, core)
    assert store.array(arr_id)["end_time"] is None
    core.schedule(104.0)
    for index in (1, 2):
        _end(core, element_id(arr_id, index), now=105.0)
    assert arr.finished and arr.end_time == 105.0 and arr.counts[DONE] == 2
    none = _requeue(core, store, [arr_id])[0]  # -r: no element runs
    assert none["message"] == (
        f"Job <{arr_id}>: No element of the array is in a state these options requeue"
    )


@pytest.mark.parametrize("reload", [False, True], ids=["in memory", "after a restart"])
def test_a_condition_its_end_made_false_for_good_waits_again(world, reload):
    conf, store, core = world
    target = dispatched(core, store)
    on_done = submit(core, store, depend=f"done({target})")
    on_ended = submit(core, store, depend=f"ended({target})")
    _end(core, target, code=1)
    assert core.pending_reason(core.jobs[on_done], 102.0) == PR_DEPEND_NEVER
    assert on_ended in _queued(core)  # satisfied: it stays so
    commit(store, core)
    if reload:
        core = _reloaded(conf, store)  # the index made again from the store
    reply = core.requeue(USER, {"jobs": [target], "kinds": ["exit"]}, 203.0, store.env)
    assert reply["results"][0]["ok"]
    assert core.pending_reason(core.jobs[on_done], 203.0) == PR_DEPEND
    assert on_ended in _queued(core)
    core.host_register("h1", {"slots": 2, "running": []}, 203.0)
    core.schedule(204.0)
    assert core.jobs[target].state == RUN and on_done not in _queued(core)
    _end(core, target, now=205.0)
    assert core.jobs[target].state == DONE and on_done in _queued(core)


def test_a_condition_on_a_whole_array_waits_again_when_its_exit_element_is_requeued(world):
    conf, store, core = world
    core.host_register("h1", {"slots": 2, "running": []}, 100.0)
    arr_id = submit(core, store, name="arr[1-2]")
    core.schedule(100.0)
    dependent = submit(core, store, depend=f"done({arr_id})")
    _end(core, element_id(arr_id, 1), code=1)  # done(arr) is false for good from here
    assert core.pending_reason(core.jobs[dependent], 102.0) == PR_DEPEND_NEVER
    _requeue(core, store, [element_id(arr_id, 1)], kinds=["exit"])
    assert core.pending_reason(core.jobs[dependent], 103.0) == PR_DEPEND
    core.schedule(104.0)
    for index in (1, 2):
        _end(core, element_id(arr_id, index), now=105.0)
    assert dependent in _queued(core)


def test_a_finished_job_gone_from_memory_is_not_found(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    _end(core, job_id)
    commit(store, core)
    core.tick(102.0 + conf.mbatchd.clean_period + 1)
    result = _requeue(core, store, [job_id], kinds=["done"])[0]
    assert result["message"] == f"Job <{job_id}>: No matching job found"
    assert store.job(job_id).state == DONE


# --- real clusters


def _brequeue(c, tmp_path, *words):
    return _run(c, tmp_path, ["brequeue", *words])


def test_an_array_element_requeued_after_done_runs_again_and_ends_again(make_cluster, tmp_path):
    c = make_cluster(slots=2)
    runs = tmp_path / "runs"
    arr = _bsub(c, tmp_path, "-J", "arr[1-2]", f"echo $LSB_JOBINDEX >> {runs}")
    elements = [element_id(arr, 1), element_id(arr, 2)]
    c.wait(elements)
    res = _brequeue(c, tmp_path, f"{arr}[1]")  # -r by default: it is DONE
    assert (res.returncode, res.stderr) == (1, f"Job <{arr}[1]>: Job has already finished\n")
    res = _brequeue(c, tmp_path, "-d", f"{arr}[1]")
    assert (res.returncode, res.stdout) == (0, f"Job <{arr}[1]> is being requeued\n"), res
    wait_until(lambda: sorted(runs.read_text().split()) == ["1", "1", "2"], 60, c.logs)
    views = c.wait(elements, states=(DONE,))
    assert [views[e]["attempt"] for e in elements] == [2, 1]
    wait_until(
        lambda: (
            _run(c, tmp_path, ["bhist", "-l", f"{arr}[1]"]).stdout.count("Done successfully") == 2
        ),
        30,
        c.logs,
    )
    assert "Pending: requeued by brequeue" in _run(c, tmp_path, ["bhist", "-l", f"{arr}[1]"]).stdout


def test_a_dependent_of_a_requeued_exit_job_runs_once_it_is_done(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    flag = tmp_path / "flag"
    # fails the first time, succeeds the second
    target = _bsub(c, tmp_path, f"test -e {flag} || {{ touch {flag}; exit 3; }}")
    c.wait([target])
    dependent = _bsub(c, tmp_path, "-w", f"done({target})", "true")
    wait_until(lambda: c.jobs([dependent])[dependent]["pend_reason"] == PR_DEPEND_NEVER, 30)
    res = _brequeue(c, tmp_path, "-e", str(target))
    assert (res.returncode, res.stdout) == (0, f"Job <{target}> is being requeued\n"), res
    views = c.wait([target, dependent])
    assert (views[target]["state"], views[dependent]["state"]) == (DONE, DONE)
    assert views[target]["attempt"] == 2
    res = _run(c, tmp_path, ["bacct", str(target)])  # each run, as LSF's JOB_FINISH records
    words = " ".join(res.stdout.split())
    assert "Total number of done jobs: 1 Total number of exited jobs: 1" in words, res


def test_brequeue_selects_by_name_and_holds_across_an_mbatchd_restart(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    runs = tmp_path / "runs"
    first = _bsub(c, tmp_path, "-J", "batch", f"echo first >> {runs}")
    latest = _bsub(c, tmp_path, "-J", "batch", f"echo latest >> {runs}")
    c.wait([first, latest])
    res = _brequeue(c, tmp_path, "-J", "batch")  # none of them runs
    assert (res.returncode, res.stderr) == (1, "No matching job found\n"), res
    res = _brequeue(c, tmp_path, "-d", "-H", "-J", "bat*")  # the latest one only
    assert (res.returncode, res.stdout) == (0, f"Job <{latest}> is being requeued\n"), res
    c.kill9_restarted("mbatchd")
    wait_until(lambda: _run(c, tmp_path, ["bjobs"]).returncode == 0, 60, c.logs)
    assert c.jobs([latest, first])[latest]["state"] == PSUSP
    assert _run(c, tmp_path, ["bresume", str(latest)]).returncode == 0
    wait_until(lambda: runs.read_text().split() == ["first", "latest", "latest"], 60, c.logs)
    assert c.wait([latest])[latest]["attempt"] == 2
    res = _brequeue(c, tmp_path, "-a", "-J", "nosuch")
    assert (res.returncode, res.stderr) == (1, "No matching job found\n"), res
    res = _brequeue(c, tmp_path, "-d", "999")
    assert (res.returncode, res.stderr) == (1, "Job <999>: No matching job found\n"), res


def test_the_history_of_one_element_is_asked_by_its_own_id(tmp_path):
    from store import Store
    from store.history import Filter

    store = Store(str(tmp_path / "db"))
    where, params = Filter(ids=[element_id(5, 1), 7]).where()
    assert params[0] == element_id(5, 1) and params[1:] == [7, 7 << 32, (8 << 32) - 1]
    assert store.db.execute("SELECT count(*) FROM jobs" + where, params).fetchone() == (0,)
