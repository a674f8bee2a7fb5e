"""Preemption: pure tests of scheduler/preempt.py on hand-built snapshots, the configuration's
checks, and real clusters whose low-queue jobs are suspended (their cgroup frozen) or requeued
for a high-queue job."""

from collections import deque

import pytest

from lavalite import preemption
from lavalite.model import HOST_OK, RUN, SSUSP, Host, Job
from scheduler import QueueView, Snapshot, plan

_ids = iter(range(1, 10**6))


def pend(q, user, n=1, slots=1):
    jobs = []
    for _ in range(n):
        j = Job(next(_ids), user, 1000, q.name, "j", {}, slots=slots)
        j.pend_seq = j.id
        q.pending.setdefault(user, deque()).append((j.pend_seq, j))
        jobs.append(j)
    return jobs


def running(q, host, slots=1, start=0.0, state=RUN):
    j = Job(next(_ids), "low", 1000, q.name, "j", {}, slots=slots)
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
    return Snapshot(
        100.0, queues, free, sum(free.values()), 8, hosts=known, preempt=preempt
    )


def victims_of(p):
    return {p.placements[i][0].id: sorted(v.id for v in vs) for i, vs in p.victims.items()}


def test_a_high_job_preempts_the_most_recent_low_job_on_a_full_host():
    hi, lo = QueueView("hi", priority=50), QueueView("lo", priority=10)
    old = running(lo, "h1", start=10.0)
    new = running(lo, "h1", start=20.0)
    (job,) = pend(hi, "u")
    p = plan(snap([hi, lo], {}, hosts(h1=2), {"hi": [lo]}))
    assert p.placements == [(job, "h1")]
    assert victims_of(p) == {job.id: [new.id]}
    assert old.id not in victims_of(p)[job.id]


def test_none_when_the_high_job_fits_anyway():
    hi, lo = QueueView("hi", priority=50), QueueView("lo", priority=10)
    running(lo, "h1")
    (job,) = pend(hi, "u")
    p = plan(snap([hi, lo], {"h2": 1}, hosts(h1=1, h2=1), {"hi": [lo]}))
    assert p.placements == [(job, "h2")] and p.victims == {}


def test_fewest_victims_across_hosts():
    hi, lo = QueueView("hi", priority=50), QueueView("lo", priority=10)
    for _ in range(2):  # h1: two one-slot jobs
        running(lo, "h1")
    wide = running(lo, "h2", slots=2)  # h2: one two-slot job
    (job,) = pend(hi, "u", slots=2)
    p = plan(snap([hi, lo], {}, hosts(h1=2, h2=2), {"hi": [lo]}))
    assert p.placements == [(job, "h2")] and victims_of(p) == {job.id: [wide.id]}


def test_free_slots_count_toward_the_need():
    hi, lo = QueueView("hi", priority=50), QueueView("lo", priority=10)
    running(lo, "h1")
    victim = running(lo, "h2")
    (job,) = pend(hi, "u", slots=2)  # h2 has one slot free: one victim there is enough
    p = plan(snap([hi, lo], {"h2": 1}, hosts(h1=1, h2=2), {"hi": [lo]}))
    assert victims_of(p) == {job.id: [victim.id]} and p.placements[0][1] == "h2"


def test_never_a_higher_queue_nor_a_suspended_job():
    hi, mid, lo = (QueueView(n, priority=p) for n, p in (("hi", 50), ("mid", 30), ("lo", 10)))
    running(hi, "h1")  # the higher queue's job is never a candidate
    running(lo, "h2", state=SSUSP)  # preempted already
    (job,) = pend(mid, "u")
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
    pend(hi, "u")
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
