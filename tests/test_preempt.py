"""Preemption: pure tests of scheduler/preempt.py on hand-built snapshots, the configuration's
checks, and real clusters whose low-queue jobs are suspended (their cgroup frozen) or requeued
for a high-queue job."""

import os
import signal

import pytest
from conftest import wait_until
from test_core import USER, commit, submit
from test_lsf_options import _run
from test_scheduler import _seq, pend
from test_suspend import _count, _freezer_state

from lavalite import config, preemption
from lavalite.client import ClientError
from lavalite.model import HOST_OK, RUN, SSUSP, Host, Job
from roles.mbatchd.core import Core
from scheduler import QueueView, Snapshot, plan
from store import Store


def running(q, host, slots=1, start=0.0, state=RUN):
    j = Job(next(_seq), "low", 1000, q.name, "j", {}, slots=slots)
    j.state, j.host, j.start_time = state, host, start
    q.started = q.started if q.started is not None else {}
    q.started[j.id] = j
    q.running += slots
    return j


def hosts(**slots):
    out = {}
    for name, n in slots.items():
        out[name] = Host(name, n)
        out[name].status = HOST_OK
    return out


def snap(queues, free, known, preempt):
    return Snapshot(100.0, queues, free, sum(free.values()), 8, hosts=known, preempt=preempt)


def victims_of(p):
    return {p.placements[i][0].id: sorted(v.id for v in vs) for i, vs in p.victims.items()}


def test_a_high_job_preempts_the_most_recent_low_job_on_a_full_host():
    hi, lo = QueueView("hi", priority=50), QueueView("lo", priority=10)
    old = running(lo, "h1", start=10.0)
    new = running(lo, "h1", start=20.0)
    (job,) = pend(hi, "u", 1)
    p = plan(snap([hi, lo], {}, hosts(h1=2), {"hi": [lo]}))
    assert p.placements == [(job, "h1")]
    assert victims_of(p) == {job.id: [new.id]}
    assert old.id not in victims_of(p)[job.id]


def test_none_when_the_high_job_fits_anyway():
    hi, lo = QueueView("hi", priority=50), QueueView("lo", priority=10)
    running(lo, "h1")
    (job,) = pend(hi, "u", 1)
    p = plan(snap([hi, lo], {"h2": 1}, hosts(h1=1, h2=1), {"hi": [lo]}))
    assert p.placements == [(job, "h2")] and p.victims == {}


def test_fewest_victims_across_hosts():
    hi, lo = QueueView("hi", priority=50), QueueView("lo", priority=10)
    for _ in range(2):  # h1: two one-slot jobs
        running(lo, "h1")
    wide = running(lo, "h2", slots=2)  # h2: one two-slot job
    (job,) = pend(hi, "u", 1, slots=2)
    p = plan(snap([hi, lo], {}, hosts(h1=2, h2=2), {"hi": [lo]}))
    assert p.placements == [(job, "h2")] and victims_of(p) == {job.id: [wide.id]}


def test_free_slots_count_toward_the_need():
    hi, lo = QueueView("hi", priority=50), QueueView("lo", priority=10)
    running(lo, "h1")
    victim = running(lo, "h2")
    (job,) = pend(hi, "u", 1, slots=2)  # h2 has one slot free: one victim there is enough
    p = plan(snap([hi, lo], {"h2": 1}, hosts(h1=1, h2=2), {"hi": [lo]}))
    assert victims_of(p) == {job.id: [victim.id]} and p.placements[0][1] == "h2"


def test_never_a_higher_queue_nor_a_suspended_job():
    hi, mid, lo = (QueueView(n, priority=p) for n, p in (("hi", 50), ("mid", 30), ("lo", 10)))
    running(hi, "h1")  # the higher queue's job is never a candidate
    running(lo, "h2", state=SSUSP)  # preempted already
    (job,) = pend(mid, "u", 1)
    p = plan(snap([hi, mid, lo], {}, hosts(h1=1, h2=1), {"mid": [lo]}))
    assert p.placements == [] and p.victims == {}


def test_each_victim_is_taken_once_and_the_users_fifo_stops():
    hi, lo = QueueView("hi", priority=50), QueueView("lo", priority=10)
    a, b = running(lo, "h1", start=1.0), running(lo, "h2", start=2.0)
    jobs = pend(hi, "u", 3)
    p = plan(snap([hi, lo], {}, hosts(h1=1, h2=1), {"hi": [lo]}))
    assert [j for j, _ in p.placements] == jobs[:2]
    assert sorted(v for vs in victims_of(p).values() for v in vs) == sorted([a.id, b.id])


def test_no_preemption_configured_changes_nothing():
    hi, lo = QueueView("hi", priority=50), QueueView("lo", priority=10)
    running(lo, "h1")
    pend(hi, "u", 1)
    p = plan(snap([hi, lo], {}, hosts(h1=1), {}))
    assert p.placements == [] and p.victims == {}


def test_user_cap_holds_for_preemptors():
    hi, lo = QueueView("hi", priority=50, max_running_user=1), QueueView("lo", priority=10)
    running(lo, "h1")
    running(lo, "h2")
    jobs = pend(hi, "u", 2)
    p = plan(snap([hi, lo], {}, hosts(h1=1, h2=1), {"hi": [lo]}))
    assert [j for j, _ in p.placements] == jobs[:1]


# --- the configuration


def test_parse_forms():
    assert preemption.parse("PREEMPTIVE[low normal]") == {"PREEMPTIVE": ["low", "normal"]}
    assert preemption.parse("PREEMPTIVE PREEMPTABLE[hi]") == {
        "PREEMPTIVE": None,
        "PREEMPTABLE": ["hi"],
    }
    for bad in ("PREEMPTIBLE", "PREEMPTIVE[]", "PREEMPTIVE[a] PREEMPTIVE[b]", "x PREEMPTIVE"):
        with pytest.raises(ValueError):
            preemption.parse(bad)


def test_pairs_bare_and_listed():
    prio = {"hi": 50, "mid": 30, "lo": 10}
    assert preemption.pairs({"hi": {"PREEMPTIVE": None}}, prio) == {"hi": ["lo", "mid"]}
    assert preemption.pairs({"lo": {"PREEMPTABLE": ["mid"]}}, prio) == {"mid": ["lo"]}
    assert preemption.pairs({"lo": {"PREEMPTABLE": None}}, prio) == {"hi": ["lo"], "mid": ["lo"]}
    assert preemption.problems("mid", {"PREEMPTIVE": ["hi", "mid", "x"]}, prio) == [
        "PREEMPTIVE[hi]: hi (priority 50) is not of lower priority than mid (30)",
        "PREEMPTIVE[mid]: a queue cannot preempt itself",
        "PREEMPTIVE[x]: no queue x",
    ]


# --- mbatchd's core, without processes

QUEUES = {
    "hi": {"priority": "50", "preemption": "PREEMPTIVE"},
    "lo": {"priority": "10"},
    "serial": {"priority": "5", "preempt_action": "requeue"},
}


@pytest.fixture
def core(tmp_path):
    conf = config.load(config.write_state_conf(str(tmp_path), {"queues.conf": QUEUES}))
    store = Store(str(tmp_path / "db"))
    core = Core(conf, store.load(0), now=100.0)
    core.host_register("h1", {"slots": 1, "running": []}, 100.0)
    return store, core


def _run_in(store, core, queue, now):
    job_id = submit(core, store, queue=queue)
    core.schedule(now)
    return job_id, commit(store, core)


def _exit(core, job_id, now):
    core.reports(
        "h1", [{"rid": job_id, "kind": "exit", "job": job_id, "attempt": 1, "exit_code": 0}], now
    )


def _preempted(store, core, low_queue="lo"):
    """A job of `low_queue` running on h1's only slot, then a job of hi: (the low job, the
    high job's id, what the second turn sends)."""
    low, _ = _run_in(store, core, low_queue, 100.0)
    high, out = _run_in(store, core, "hi", 101.0)
    return core.jobs[low], high, out


def _ends(store, core, job_id, now):
    """The job ends and a turn runs: what it sends to h1."""
    _exit(core, job_id, now)
    core.schedule(now)
    return commit(store, core).get("h1", [])


def test_core_suspends_the_low_job_dispatches_the_high_one_and_resumes_after(core):
    store, core = core
    victim, high, out = _preempted(store, core)
    assert (victim.state, victim.reason) == ("SSUSP", f"Preempted by job <{high}>")
    assert core.jobs[high].state == "RUN"
    assert out["h1"][0] == {"op": "suspend", "job": victim.id, "attempt": 1}
    assert [j["id"] for j in out["h1"][1]["jobs"]] == [high]
    assert core.hosts["h1"].used == 1, "the victim lends its slot to the preemptor"
    # a preempted job is not preempted again; the preemptor is not preempted by its own victims
    second, _ = _run_in(store, core, "hi", 102.0)
    assert core.jobs[second].state == "PEND" and victim.state == "SSUSP"
    # its preemptor's end gives the victim its slot back first; the next high job then
    # preempts it again, in the same turn
    out = _ends(store, core, high, 103.0)
    assert core.jobs[second].state == "RUN"
    assert (victim.state, victim.reason) == ("SSUSP", f"Preempted by job <{second}>")
    assert [m["op"] for m in out] == ["resume", "suspend", "dispatch"]
    assert core.hosts["h1"].used == 1


def test_core_resumes_the_victim_when_its_preemptor_ends(core):
    store, core = core
    victim, high, _ = _preempted(store, core)
    out = _ends(store, core, high, 102.0)
    assert victim.state == "RUN" and core.hosts["h1"].used == 1
    assert {"op": "resume", "job": victim.id, "attempt": 1} in out
    _exit(core, victim.id, 103.0)
    assert victim.state == "DONE" and core.hosts["h1"].used == 0


def test_core_requeues_a_victim_of_a_requeue_queue(core):
    store, core = core
    victim, high, out = _preempted(store, core, "serial")
    assert (victim.state, victim.reason) == ("PEND", f"Preempted by job <{high}>: requeued")
    assert {"op": "kill", "job": victim.id, "attempt": 1, "stale": True} in out["h1"]
    assert core.jobs[high].state == "RUN" and core.hosts["h1"].used == 1


def test_core_a_victim_its_user_resumed_and_preempted_again_waits_for_the_second(core):
    store, core = core
    victim, first, _ = _preempted(store, core)
    core.stop(USER, {"jobs": [victim.id]}, 102.0)  # SSUSP -> USUSP: still lent
    core.resume(USER, {"jobs": [victim.id]}, 103.0)  # its user runs it beside the first
    assert victim.state == "RUN" and core.hosts["h1"].used == 2
    second, _ = _run_in(store, core, "hi", 104.0)
    assert (victim.state, victim.reason) == ("SSUSP", f"Preempted by job <{second}>")
    _ends(store, core, first, 105.0)
    assert victim.state == "SSUSP", "the first preemptor's end does not resume it"
    _ends(store, core, second, 106.0)
    assert victim.state == "RUN" and core.hosts["h1"].used == 1


def test_core_after_a_restart_lends_again_and_resumes_later(core):
    store, core = core
    victim, high, _ = _preempted(store, core)
    low = victim.id
    again = Core(core.conf, store.load(0), now=102.0)
    again.host_register("h1", {"slots": 1, "running": [[low, 1], [high, 1]]}, 102.0)
    assert again.hosts["h1"].used == 1 and again.lent == {low: high}
    _ends(store, again, high, 103.0)
    assert again.jobs[low].state == "RUN" and again.hosts["h1"].used == 1


# --- real clusters: the low job's processes frozen by its cgroup, or killed and run again

CLUSTER_QUEUES = {
    "serial": {"priority": "30"},
    "hi": {"priority": "50", "preemption": "PREEMPTIVE[lo]"},
    "lo": {"priority": "10", "retry_backoff": "1"},
}


def _low_job(c, tmp_path):
    """A job of queue lo on the only slot: it appends its shell's pid to `runs` at each start,
    counts a line a tenth of a second into `lines`, and ends once `stop` exists."""
    runs, lines, stop = (tmp_path / n for n in ("runs", "lines", "stop"))
    loop = f"echo $$ >> {runs}; while [ ! -e {stop} ]; do echo x >> {lines}; sleep 0.1; done"
    job = c.submit(["/bin/sh", "-c", loop], queue="lo")
    wait_until(lambda: lines.exists() and _count(lines) > 2, 60, c.logs)
    return job, runs, lines, stop


def _high_job(c, tmp_path):
    """A job of queue hi that runs until `go` exists."""
    go = tmp_path / "go"
    job = c.submit(["/bin/sh", "-c", f"while [ ! -e {go} ]; do sleep 0.1; done"], queue="hi")
    return job, go


def _state_of(c, job):
    """The job's state, or None while mbatchd restarts."""
    try:
        return c.jobs([job])[job]["state"]
    except ClientError:
        c.client.close()
        return None


def _preempted_on_a_cluster(c, tmp_path):
    """The low job running, then preempted by a high one: (low, high, runs, lines, stop, go)."""
    low, runs, lines, stop = _low_job(c, tmp_path)
    high, go = _high_job(c, tmp_path)
    wait_until(lambda: _state_of(c, high) == "RUN", 60, c.logs)
    return low, high, runs, lines, stop, go


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/freezer"), reason="no v1 freezer here")
def test_a_high_job_suspends_the_low_one_which_resumes_and_completes(make_cluster, tmp_path):
    c = make_cluster(slots=1, queues=CLUSTER_QUEUES, sbatchd={"cgroups": "v1"})
    low, high, runs, lines, stop, go = _preempted_on_a_cluster(c, tmp_path)
    assert _state_of(c, low) == "SSUSP"
    pid = int(runs.read_text().split()[0])
    wait_until(lambda: _freezer_state(pid) == "FROZEN", 30, lambda: f"{pid} frozen\n{c.logs()}")
    res = _run(c, tmp_path, ["bjobs", "-l", str(low)])
    assert f" SUSPENDING REASONS:\n Preempted by job <{high}>;\n" in res.stdout, res
    res = _run(c, tmp_path, ["bhist", "-l", str(low)])
    assert f"Preempted by job <{high}>" in res.stdout, res
    res = _run(c, tmp_path, ["bqueues", "-l", "hi"])
    assert "\nPREEMPTION = PREEMPTIVE[lo]\n" in res.stdout, res

    go.touch()  # the high job ends: the low one resumes, the same attempt
    assert c.wait([high])[high]["stat"] == "DONE"
    wait_until(lambda: _state_of(c, low) == "RUN", 60, c.logs)
    assert _freezer_state(pid) == "THAWED"
    n = _count(lines)
    wait_until(lambda: _count(lines) > n + 3, 30, lambda: f"{lines} to grow again")
    stop.touch()
    view = c.wait([low])[low]
    assert (view["stat"], view["attempt"]) == ("DONE", 1)
    assert len(runs.read_text().split()) == 1, "resumed, not run again"


def test_a_high_job_requeues_the_low_one_which_runs_again_after_it(make_cluster, tmp_path):
    queues = {**CLUSTER_QUEUES, "lo": {**CLUSTER_QUEUES["lo"], "preempt_action": "requeue"}}
    c = make_cluster(slots=1, queues=queues)
    low, high, runs, _, stop, go = _preempted_on_a_cluster(c, tmp_path)
    reasons = [
        reason for _, _, old, new, reason, *_ in c.events(low) if (old, new) == ("RUN", "PEND")
    ]
    assert reasons == [f"Preempted by job <{high}>: requeued"]
    assert _state_of(c, low) == "PEND"
    res = _run(c, tmp_path, ["bqueues", "-l", "lo"])
    assert "\nPREEMPT_ACTION = requeue\n" in res.stdout, res
    go.touch()
    assert c.wait([high])[high]["stat"] == "DONE"
    wait_until(lambda: len(runs.read_text().split()) == 2, 60, c.logs)  # its second run
    stop.touch()
    view = c.wait([low])[low]
    assert (view["stat"], view["attempt"]) == ("DONE", 2)


def test_a_reload_turns_preemption_on_and_a_bad_policy_keeps_the_old(make_cluster, tmp_path):
    plain = {
        name: {k: v for k, v in q.items() if k != "preemption"}
        for name, q in CLUSTER_QUEUES.items()
    }
    c = make_cluster(slots=1, queues=plain)
    low, _, _, stop = _low_job(c, tmp_path)
    conf_file = os.path.join(c.state, "queues.conf")
    text = open(conf_file).read()
    bad = text.replace("[hi]\n", "[hi]\npreemption = PREEMPTIVE[nosuch]\n")
    with open(conf_file, "w") as f:
        f.write(bad)
    line = bad.splitlines().index("preemption = PREEMPTIVE[nosuch]") + 1
    check = c.cli("config-check", check=False)
    want = f"queues.conf:{line}: [hi] preemption: PREEMPTIVE[nosuch]: no queue nosuch"
    assert check.returncode == 2 and want in check.stderr, check
    os.kill(c.pid("mbatchd"), signal.SIGHUP)  # refused: no preemption yet
    high, go = _high_job(c, tmp_path)
    wait_until(lambda: "reload refused" in c.logs(), 30, c.logs)
    assert (_state_of(c, high), _state_of(c, low)) == ("PEND", "RUN")

    with open(conf_file, "w") as f:
        f.write(text.replace("[hi]\n", "[hi]\npreemption = PREEMPTIVE\n"))
    os.kill(c.pid("mbatchd"), signal.SIGHUP)
    wait_until(lambda: _state_of(c, high) == "RUN", 60, c.logs)
    assert _state_of(c, low) == "SSUSP"
    go.touch()
    wait_until(lambda: _state_of(c, low) == "RUN", 60, c.logs)
    stop.touch()
    assert c.wait([low])[low]["stat"] == "DONE"


def test_a_victim_stays_suspended_across_an_mbatchd_kill9_and_resumes_after(make_cluster, tmp_path):
    c = make_cluster(slots=1, queues=CLUSTER_QUEUES)
    low, high, runs, lines, stop, go = _preempted_on_a_cluster(c, tmp_path)
    assert _state_of(c, low) == "SSUSP"
    c.kill9_restarted("mbatchd")
    # the restarted mbatchd lends the victim's slot again: neither job moves
    wait_until(lambda: _state_of(c, high) == "RUN", 60, c.logs)
    assert _state_of(c, low) == "SSUSP"
    go.touch()
    assert c.wait([high])[high]["stat"] == "DONE"
    wait_until(lambda: _state_of(c, low) == "RUN", 60, c.logs)
    stop.touch()
    view = c.wait([low])[low]
    assert (view["stat"], view["attempt"]) == ("DONE", 1)
    assert len(runs.read_text().split()) == 1, "resumed, not run again"
