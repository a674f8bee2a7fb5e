"""Scheduling policy as a pure function: a snapshot in, a plan out.

No I/O, no clock (the time is in the snapshot), nothing mutated. The snapshot holds references
to mbatchd's live indexes (pending FIFOs per queue and user, free slots per host, running
counts), so building it costs nothing and a turn costs what it places, not the queue's length:
a user at their cap is skipped whole, and host search stops when the slots run out.
"""

import heapq
from collections import deque
from collections.abc import Iterator
from typing import Any

from lavalite.model import (
    PEND,
    PR_ARRAY_LIMIT,
    PR_NO_SLOT,
    PR_QUEUE_CAP,
    PR_QUEUE_INACTIVE,
    PR_USER_CAP,
)
from scheduler.fairshare import Fair
from scheduler.fit import HOST_REASONS, Hosts, Threshold, place

# A pending job as the scheduler reads it: a model.Job, or a job array's entry
# (lavalite.job_array.Array) that duck-types one (state, pend_seq, slots, array, id).
Pending = Any
Entry = tuple[int, Pending]  # (pend_seq, job) in a user's FIFO
Reasons = dict[tuple[str, Any], str]
# a user's head in a queue's heap: (-dynamic priority or 0 without fairshare, pend_seq, user,
# job, the rest of the user's FIFO)
Head = tuple[float, int, str, Pending, Iterator[Entry]]


class QueueView:
    """One queue as the scheduler sees it.

    pending: user -> deque of (pend_seq, job) in pend_seq order. An entry is live while
    job.state is PEND and job.pend_seq equals its seq; stale entries are skipped (lazy deletion
    keeps kill and dispatch O(1) for mbatchd)."""

    __slots__ = (
        "name",
        "priority",
        "active",
        "max_running_user",
        "max_running_queue",
        "running",
        "running_user",
        "pending",
        "fair",
        "placement",
        "load_sched",
        "req",
    )

    def __init__(
        self,
        name: str,
        priority: int = 30,
        active: bool = True,
        max_running_user: int = 0,
        max_running_queue: int = 0,
    ) -> None:
        self.name = name
        self.priority = priority
        self.active = active
        self.max_running_user = max_running_user
        self.max_running_queue = max_running_queue
        self.running = 0  # slots in use by this queue's jobs
        self.running_user: dict[str, int] = {}  # user -> slots in use
        self.pending: dict[str, deque[Entry]] = {}  # user -> (pend_seq, Job) FIFO
        self.fair: Fair | None = None  # a fairshare queue's policy and usage
        self.placement = "first"  # first (host order, the fast path), pack or spread
        self.load_sched: tuple[Threshold, ...] = ()  # a host past one takes no job of the queue
        self.req: Any = None  # res_req (lavalite.resreq.ResReq: select, order) of jobs without -R


class Snapshot:
    """queues: QueueViews, highest priority first. free_by_host: host -> free slots, only hosts
    that take jobs and have a free slot, in placement order. total_free: the sum of those.
    limit: place about this many slots at most (0: no limit), so that one turn stays short
    when thousands of slots free at once; the caller plans again for the rest."""

    __slots__ = ("now", "queues", "free_by_host", "total_free", "max_slots", "limit", "hosts")

    def __init__(
        self,
        now: float,
        queues: list[QueueView],
        free_by_host: dict[str, int],
        total_free: int,
        max_slots: int,
        limit: int = 0,
        hosts: dict[str, Any] | None = None,
    ) -> None:
        self.now = now
        self.queues = queues
        self.free_by_host = free_by_host
        self.total_free = total_free
        self.max_slots = max_slots  # the largest slot count of any host, free or not
        self.limit = limit
        self.hosts = hosts or {}  # name -> model.Host: facts, reservations (jobs with Needs)


class Plan:
    """placements: [(job, host)]; a job array (lavalite.job_array.Array) appears once per element
    to start, mbatchd makes the elements. reasons: {(queue, user or None): pending reason} for
    the groups the scheduler looked at and could not place, {("array", id): reason} for
    arrays held by their throttle, and {("job", id): reason} for jobs no host is eligible for
    (-R select or rusage, -m, -x), which do not hold their user's next jobs back. Groups it
    did not reach are pending for want of a free slot.
    wide: {index in placements: [[host, slots], ...]} for a placement on several hosts or with
    other than job.slots slots (-n MIN,MAX); its host in placements is the first."""

    __slots__ = ("placements", "reasons", "wide")

    def __init__(self) -> None:
        self.placements: list[tuple[Pending, str]] = []
        self.reasons: Reasons = {}
        self.wide: dict[int, list[list[Any]]] = {}


def live(entry: Entry) -> bool:
    seq, job = entry
    return job.state == PEND and job.pend_seq == seq


def _first_live(it: Iterator[Entry]) -> Entry | None:
    for entry in it:
        if live(entry):
            return entry
    return None


def plan(snap: Snapshot) -> Plan:
    result = Plan()
    hosts = Hosts(snap.free_by_host, min(snap.total_free, snap.limit or snap.total_free))
    for q in snap.queues:
        if hosts.left <= 0:
            break
        if not q.active:
            result.reasons[(q.name, None)] = PR_QUEUE_INACTIVE
            continue
        _plan_queue(q, snap, hosts, result)
    return result


class _Order:
    """The key of a user's head: 0 in a FIFO queue (pend_seq decides); in a fairshare queue
    minus its account's dynamic priority, with the slots placed this turn counted, so that the
    priority falls as the turn places the account's jobs."""

    __slots__ = ("fair", "now", "placed")

    def __init__(self, fair: Fair | None, now: float) -> None:
        self.fair, self.now = fair, now
        self.placed: dict[str, int] = {}  # account -> slots placed this turn

    def key(self, user: str, job: Pending) -> float:
        if self.fair is None:
            return 0.0
        account, shares = self.fair.policy.account(user, job.spec.get("user_group"))
        return -self.fair.priority(account, shares, self.now, self.placed.get(account, 0))

    def charge(self, user: str, job: Pending, slots: int) -> None:
        if self.fair is not None:
            account = self.fair.policy.account(user, job.spec.get("user_group"))[0]
            self.placed[account] = self.placed.get(account, 0) + slots


def _plan_queue(q: QueueView, snap: Snapshot, hosts: Hosts, result: Plan) -> None:
    order = _Order(q.fair, snap.now)
    heads: list[Head] = []  # each user's first live job
    for user, fifo in q.pending.items():
        it = iter(fifo)
        entry = _first_live(it)
        if entry:
            heads.append((order.key(user, entry[1]), entry[0], user, entry[1], it))
    heapq.heapify(heads)
    q_used = q.running
    placed: dict[str, int] = {}  # user -> slots placed this turn
    # its jobs without Needs may take the fast path
    plain = q.placement == "first" and not q.load_sched and q.req is None
    taken: dict[Any, list[int]] = {}  # array -> [elements started this turn, indices handed out]
    while heads and hosts.left > 0:
        key, seq, user, job, it = heads[0]
        if order.fair is not None:
            # priorities only fall within a turn: a head whose account placed since it was
            # keyed goes back in at its new key (lazily, one account at a time)
            now_key = order.key(user, job)
            if now_key > key:
                heapq.heapreplace(heads, (now_key, seq, user, job, it))
                continue
        arr = job.array  # an Array entry (arr is job) or a retried element
        if arr is not None and not _room(job, arr, taken, result):
            _advance(heads, user, it, order)
            continue
        if q.max_running_queue and q_used + job.slots > q.max_running_queue:
            result.reasons[(q.name, None)] = PR_QUEUE_CAP
            return
        used = q.running_user.get(user, 0) + placed.get(user, 0)
        if q.max_running_user and used + job.slots > q.max_running_user:
            result.reasons[(q.name, user)] = PR_USER_CAP
            heapq.heappop(heads)
            continue
        slots = job.slots
        host, why = None, PR_NO_SLOT
        if job.needs is None:
            host, why = (hosts.take(slots), why) if plain else hosts.take_for(q, slots, snap.hosts)
        if host is None:
            # a job that asks more than slots, or that did not fit on one host
            one = job.needs is None and slots == 1
            got = why if one else place(job, hosts, snap.hosts, q)
            if isinstance(got, str) and got in HOST_REASONS and job.needs is not None:
                # no host is eligible for its own demands (LSF: the job waits, the user's next
                # ones go on); the queue's res_req holds all the user's jobs alike
                result.reasons[("job", job.id)] = got
                _advance(heads, user, it, order)
                continue
            if isinstance(got, str):
                # FIFO per user: this user's next job waits behind the wide one; others go on.
                result.reasons[(q.name, user)] = got
                heapq.heappop(heads)
                continue
            host, slots = got[0][0], sum(n for _, n in got)
            if len(got) > 1 or slots != job.slots:
                result.wide[len(result.placements)] = got
        result.placements.append((job, host))
        q_used += slots
        placed[user] = placed.get(user, 0) + slots
        order.charge(user, job, slots)
        if arr is not None:
            counts = taken.setdefault(arr, [0, 0])
            counts[0] += 1
            counts[1] += arr is job
            if arr is job:
                continue  # the array keeps its place until it is spent or throttled
        _advance(heads, user, it, order)


def _advance(heads: list[Head], user: str, it: Iterator[Entry], order: _Order) -> None:
    """Replace the head by the user's next live entry (or drop the user for this turn)."""
    entry = _first_live(it)
    if entry:
        heapq.heapreplace(heads, (order.key(user, entry[1]), entry[0], user, entry[1], it))
    else:
        heapq.heappop(heads)


def _room(job: Pending, arr: Any, taken: dict[Any, list[int]], result: Plan) -> bool:
    """May one more element start from this entry: the array's throttle (%LIMIT) counts running
    elements and those started this turn; an Array entry also needs indices left."""
    started, handed = taken.get(arr, (0, 0))
    if arr.throttle and arr.running + started >= arr.throttle:
        result.reasons[("array", arr.id)] = PR_ARRAY_LIMIT
        return False
    return job is not arr or handed < arr.remaining
