"""scheduler.plan is a pure function: snapshots built by hand, plans checked."""

from collections import deque

from lavalite.model import KILLED, PR_NO_SLOT, PR_QUEUE_CAP, PR_QUEUE_INACTIVE, PR_USER_CAP, Job
from scheduler import QueueView, Snapshot, plan

_seq = iter(range(1, 10**6))


def pend(q, user, n, slots=1):
    jobs = []
    for _ in range(n):
        j = Job(next(_seq), user, 1000, q.name, "j", {}, slots=slots)
        j.pend_seq = j.id
        q.pending.setdefault(user, deque()).append((j.pend_seq, j))
        jobs.append(j)
    return jobs


def snap(queues, free):
    return Snapshot(0.0, queues, free, sum(free.values()), max(free.values(), default=0))


def test_fifo_within_queue_across_users():
    q = QueueView("serial")
    a = pend(q, "alice", 2)
    b = pend(q, "bob", 2)
    p = plan(snap([q], {"h1": 3}))
    assert [j for j, _ in p.placements] == a + b[:1]


def test_queue_priority_first():
    hi, lo = QueueView("hi", priority=50), QueueView("lo", priority=10)
    lows = pend(lo, "u", 2)
    highs = pend(hi, "u", 2)
    p = plan(snap([hi, lo], {"h": 3}))
    assert [j for j, _ in p.placements] == highs + lows[:1]


def test_user_cap_skips_that_user_only():
    q = QueueView("serial", max_running_user=2)
    q.running_user = {"alice": 1}
    q.running = 1
    a = pend(q, "alice", 5)
    b = pend(q, "bob", 5)
    p = plan(snap([q], {"h": 10}))
    placed = [j for j, _ in p.placements]
    assert placed == a[:1] + b[:2]
    assert p.reasons[("serial", "alice")] == PR_USER_CAP == p.reasons[("serial", "bob")]


def test_queue_cap_and_inactive_queue():
    q = QueueView("serial", max_running_queue=3)
    pend(q, "u", 5)
    off = QueueView("off", active=False)
    pend(off, "u", 1)
    p = plan(snap([q, off], {"h": 10}))
    assert len(p.placements) == 3 and p.reasons[("serial", None)] == PR_QUEUE_CAP
    assert p.reasons[("off", None)] == PR_QUEUE_INACTIVE


def test_slots_and_hosts():
    q = QueueView("serial")
    wide = pend(q, "a", 1, slots=3)[0]
    narrow = pend(q, "b", 2)
    p = plan(snap([q], {"h1": 2, "h2": 4}))
    assert dict((j.id, h) for j, h in p.placements) == {
        wide.id: "h2",
        narrow[0].id: "h1",
        narrow[1].id: "h1",
    }
    q2 = QueueView("serial")
    pend(q2, "a", 1, slots=8)
    assert plan(snap([q2], {"h1": 2})).reasons[("serial", "a")] == PR_NO_SLOT
    # wider than any host: as LSF without span[], its slots come from several hosts
    spread = plan(snap([q2], {"h1": 4, "h2": 2, "h3": 4}))
    assert spread.wide == {0: [["h1", 4], ["h2", 2], ["h3", 2]]}
    assert [(j.id, h) for j, h in spread.placements] == [(q2.pending["a"][0][1].id, "h1")]


def test_no_free_slot_stops_and_stale_entries_are_skipped():
    q = QueueView("serial")
    jobs = pend(q, "u", 4)
    jobs[0].state = KILLED  # killed while queued: a stale entry
    p = plan(snap([q], {"h": 2}))
    assert [j for j, _ in p.placements] == jobs[1:3]
    empty = plan(snap([q], {}))
    assert empty.placements == [] and empty.reasons == {}  # mbatchd reports PR_NO_SLOT


def test_same_snapshot_same_plan_and_nothing_mutated():
    q = QueueView("serial", max_running_user=3)
    pend(q, "a", 4)
    pend(q, "b", 4)
    free = {"h1": 2, "h2": 3}
    s = snap([q], free)
    before = {u: list(f) for u, f in q.pending.items()}, dict(free)
    p1, p2 = plan(s), plan(s)
    assert [(j.id, h) for j, h in p1.placements] == [(j.id, h) for j, h in p2.placements]
    assert ({u: list(f) for u, f in q.pending.items()}, dict(free)) == before
