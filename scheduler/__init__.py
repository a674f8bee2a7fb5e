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
    PR_SPAN,
    PR_USER_CAP,
)
from scheduler.fairshare import Fair
from scheduler.fit import HOST_REASONS, Hosts, Threshold, candidates, place
from scheduler.limits import JobLimit, Limits, TurnLimits
from scheduler.preempt import preempt
from scheduler.reserve import Book, Ends, Reservation, pick, wants

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
        "reserve",
        "backfill",
        "started",
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
        self.reserve = 0.0  # slot_reserve: seconds a wide job may hold slots (0: it holds none)
        self.backfill = False  # its jobs with a run limit may use held slots (scheduler/reserve)
        # id -> Job of its jobs holding slots, kept only while some queue may preempt it
        self.started: dict[int, Any] | None = None
        self.placement = "first"  # first (host order, the fast path), pack or spread
        self.load_sched: tuple[Threshold, ...] = ()  # a host past one takes no job of the queue
        self.req: Any = None  # res_req (lavalite.resreq.ResReq: select, order) of jobs without -R


class Snapshot:
    """queues: QueueViews, highest priority first. free_by_host: host -> free slots, only hosts
    that take jobs and have a free slot, in placement order. total_free: the sum of those.
    limit: place about this many slots at most (0: no limit), so that one turn stays short
    when thousands of slots free at once; the caller plans again for the rest.
    preempt: preemptive queue -> the QueueViews (with `started`) whose jobs it may preempt;
    empty: no preemption (scheduler/preempt.py)."""

    __slots__ = (
        "now",
        "queues",
        "free_by_host",
        "total_free",
        "max_slots",
        "limit",
        "hosts",
        "limits",
        "reservations",
        "ends",
        "preempt",
    )

    def __init__(
        self,
        now: float,
        queues: list[QueueView],
        free_by_host: dict[str, int],
        total_free: int,
        max_slots: int,
        limit: int = 0,
        hosts: dict[str, Any] | None = None,
        limits: Limits | None = None,
        reservations: dict[int, Reservation] | None = None,
        ends: Ends | None = None,
        preempt: dict[str, list[QueueView]] | None = None,
    ) -> None:
        self.now = now
        self.queues = queues
        self.free_by_host = free_by_host
        self.total_free = total_free
        self.max_slots = max_slots  # the largest slot count of any host, free or not
        self.limit = limit
        self.hosts = hosts or {}  # name -> model.Host: facts, reservations (jobs with Needs)
        self.limits = limits  # the [limit NAME]s and their counters; None: there are none
        self.reservations = reservations or {}  # job id -> the last plan's slot reservations
        self.ends = ends  # host -> [(end time, slots)] of its running jobs, for estimates
        self.preempt = preempt or {}


class Plan:
    """placements: [(job, host)]; a job array (lavalite.job_array.Array) appears once per element
    to start, mbatchd makes the elements. reasons: {(queue, user or None): pending reason} for
    the groups the scheduler looked at and could not place, {("array", id): reason} for
    arrays held by their throttle, and {("job", id): reason} for jobs no host is eligible for
    (-R select or rusage, -m, -x), which do not hold their user's next jobs back. Groups it
    did not reach are pending for want of a free slot.
    wide: {index in placements: [[host, slots], ...]} for a placement on several hosts or with
    other than job.slots slots (-n MIN,MAX); its host in placements is the first.
    reservations: job id -> the slots a pending job holds after this plan (scheduler/reserve).
    victims: {index in placements: [running jobs]} of a placement that preempts them to get
    their slots (scheduler/preempt.py)."""

    __slots__ = ("placements", "reasons", "wide", "reservations", "victims")

    def __init__(self) -> None:
        self.placements: list[tuple[Pending, str]] = []
        self.reasons: Reasons = {}
        self.wide: dict[int, list[list[Any]]] = {}
        self.reservations: dict[int, Reservation] = {}
        self.victims: dict[int, list[Any]] = {}


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
    turn = TurnLimits(snap.limits) if snap.limits is not None else None
    book = _book(snap)
    hosts = Hosts(
        snap.free_by_host,
        min(snap.total_free, snap.limit or snap.total_free),
        book.held if book else None,
    )
    for q in snap.queues:
        if hosts.left <= 0:
            break
        if not q.active:
            result.reasons[(q.name, None)] = PR_QUEUE_INACTIVE
            continue
        _plan_queue(q, snap, hosts, result, turn, book)
    if book:
        result.reservations = book.result()
    if snap.preempt:
        preempt(snap, hosts, result)
    return result


_RESERVED_FOR = frozenset((PR_NO_SLOT, PR_SPAN))


def _book(snap: Snapshot) -> Book | None:
    """This turn's reservations, where a queue reserves or some are left: None in the common
    case, which then pays nothing for them."""
    reserve_time = {q.name: q.reserve for q in snap.queues if q.reserve}
    if not reserve_time and not snap.reservations:
        return None
    return Book(snap.reservations, snap.free_by_host, reserve_time, snap.now)


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


def _plan_queue(
    q: QueueView,
    snap: Snapshot,
    hosts: Hosts,
    result: Plan,
    turn: TurnLimits | None,
    book: Book | None,
) -> None:
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
        rules = turn.rules(job, q.name, user) if turn is not None else ()
        limit = None
        if rules:
            assert turn is not None  # rules come from it
            held = turn.blocked(rules, job, job.slots)
            if held is not None:
                if _hold(q, user, job, held, heads, it, order, result):
                    return
                continue
            if job.needs is not None or any(r.hosts is not None for r in rules):
                limit = JobLimit(turn, rules, job, job.needs.slots_max if job.needs else job.slots)
        slots = job.slots
        mine = book.mine(job) if book and book.live else None
        host, why = None, PR_NO_SLOT
        if job.needs is None and mine is None:
            if limit is None:
                host, why = (
                    (hosts.take(slots), why) if plain else hosts.take_for(q, slots, snap.hosts)
                )
            elif plain:  # under a limit of hosts; in a queue with a policy: the slow path
                host = hosts.take(slots, limit.fits)
        if host is None:
            # a job that asks more than slots, or that did not fit on one host, or whose
            # hosts a limit narrows; a holder with its reserved slots, a backfill job with
            # those it may use
            extra = mine or (book.backfill(job) if book and q.backfill else None)
            offered = dict(extra) if extra else None
            one = job.needs is None and slots == 1 and not extra and limit is None
            got = why if one else place(job, hosts, snap.hosts, extra, limit, q)
            if isinstance(got, str) and got in HOST_REASONS and job.needs is not None:
                # no host is eligible for its own demands (LSF: the job waits, the user's next
                # ones go on); the queue's res_req holds all the user's jobs alike
                result.reasons[("job", job.id)] = got
                _advance(heads, user, it, order)
                continue
            if isinstance(got, str):
                # FIFO per user: this user's next job waits behind the wide one; others go on.
                # a want of slots (not a limit's refusal) is what a reservation is for
                if book and q.reserve and arr is None and got in _RESERVED_FOR and wants(job) > 1:
                    _reserve(job, hosts, snap, book, mine)
                result.reasons[(q.name, user)] = got
                heapq.heappop(heads)
                continue
            if book and mine is not None:
                book.started(job, mine)
            elif book and offered:
                book.backfilled(offered, extra or {})
            host, slots = got[0][0], sum(n for _, n in got)
            if len(got) > 1 or slots != job.slots:
                result.wide[len(result.placements)] = got
        result.placements.append((job, host))
        if rules:
            assert turn is not None
            turn.charge(rules, job, result.wide.get(len(result.placements) - 1) or [[host, slots]])
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


def _hold(
    q: QueueView,
    user: str,
    job: Pending,
    held: tuple[Any, str],
    heads: list[Head],
    it: Iterator[Entry],
    order: "_Order",
    result: Plan,
) -> bool:
    """A job a [limit] holds back: what else waits with it. A limit of projects holds this
    job (the user's next may be of another project); one of users holds the user's FIFO in the
    queue; one of neither holds every user's jobs in the queue alike (True: stop the queue)."""
    rule, reason = held
    if rule.projects is not None:
        result.reasons[("job", job.id)] = reason
        _advance(heads, user, it, order)
        return False
    if rule.users is None:
        result.reasons[(q.name, None)] = reason
        return True
    result.reasons[(q.name, user)] = reason
    heapq.heappop(heads)
    return False


def _reserve(
    job: Pending, hosts: Hosts, snap: Snapshot, book: Book, mine: dict[str, int] | None
) -> None:
    """A wide job that cannot start holds the free slots it may use, up to its need, unless
    its reservation ran out this turn (LSF: it does not reserve for one turn)."""
    if job.id in book.expired:
        return
    fits, _, _ = candidates(job.needs, hosts, snap.hosts)
    chosen = pick(job, fits, mine)
    hosts.commit(chosen, 0, False)
    hosts.left += sum(n for _, n in chosen)  # held, not placed: a backfill job may have them
    book.reserve(job, [[slot[0], n] for slot, n in chosen], snap.ends, snap.hosts)


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
