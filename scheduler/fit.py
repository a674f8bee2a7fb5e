"""Where a job goes: free slots handed out in placement order, and the slow path for a job that
asks more than free slots (lavalite.resreq.Needs: -R select, rusage, span, order; -m; -x;
-n MIN,MAX), that is wider than any one host's free slots, or whose queue has a placement
policy (pack, spread) or load thresholds (load_sched).

The fast path (Hosts.take) stays as cheap as it was: a job without Needs costs what it costs.
The slow path looks at every host with a free slot, once per such job, and places a job
atomically: all its hosts, or none.
"""

import heapq
from collections.abc import Callable, Iterator
from typing import Any

from lavalite.model import (
    PR_ASKED_HOSTS,
    PR_EXCLUSIVE,
    PR_LOAD_UNKNOWN,
    PR_NO_SLOT,
    PR_RUSAGE_MEM,
    PR_SELECT,
    PR_SPAN,
)

MB = 1 << 20
Slot = list[Any]  # [host, free slots left this turn]
Alloc = list[list[Any]]  # [[host, slots], ...], first = where the job starts
# The tests a host goes through, in order: a job left unplaced is pending for the reason of the
# furthest test any host failed (the one closest to letting it run).
_REASONS = (PR_NO_SLOT, PR_ASKED_HOSTS, PR_EXCLUSIVE, PR_SELECT, PR_RUSAGE_MEM)
HOST_REASONS = frozenset(_REASONS[1:])  # the job's own demands, not a want of slots
_LOAD = len(_REASONS)  # past the queue's load_sched: the closest a host comes to taking the job
# A queue's load threshold (lavalite.loadthreshold.Threshold): (index, limit, the larger value
# is the busier host, the pending or suspending reason of a host past it)
Threshold = tuple[str, float, bool, str]
_SIGNS = {"pack": 1, "spread": -1}  # placement -> the sign of free slots in take_for's key
_Entry = tuple[tuple, int, int, Slot]  # take_for's: (order[] key, free slots key, seq, slot)


class Hosts:
    """Free slots handed out in order; a host left with too few slots for a wide job is kept
    aside for narrower ones."""

    def __init__(
        self, free_by_host: dict[str, int], total: int, held: dict[str, int] | None = None
    ) -> None:
        self.it: Iterator[tuple[str, int]] = iter(free_by_host.items())
        if held:  # slots reservations hold are no one else's (scheduler/reserve.py)
            self.it = _unheld(free_by_host, held)
        self.aside: list[Slot] = []  # [host, remaining]
        self.left = total  # slots still to place: the free ones, or the turn's limit
        self.mem: dict[str, int] = {}  # host -> bytes reserved by this turn's placements
        # queue -> (its hosts as a heap by its placement, why the hosts left out are): built at
        # the queue's first job without Needs this turn (take_for)
        self.by_queue: dict[str, tuple[list[_Entry], str]] = {}
        self.emptied = False  # take_for left hosts without a slot in aside

    def take(self, n: int, fits: "Callable[[str, int], bool] | None" = None) -> str | None:
        """The first host with n free slots (and, given `fits`, where fits(host, n): a
        [limit] of hosts has room there)."""
        if self.emptied:  # once per turn and queue at most: take stays O(hosts with slots)
            self.aside = [slot for slot in self.aside if slot[1] > 0]
            self.emptied = False
        for i, slot in enumerate(self.aside):
            if slot[1] >= n and (fits is None or fits(slot[0], n)):
                return self._use(slot, n, i)
        for host, free in self.it:
            slot = [host, free]
            self.aside.append(slot)
            if free >= n and (fits is None or fits(host, n)):
                return self._use(slot, n, len(self.aside) - 1)
        return None

    def take_for(self, queue: Any, n: int, known: dict[str, Any]) -> tuple[str | None, str]:
        """A host for a job without Needs of a queue with a placement policy, load_sched or
        res_req: (host, "") or (None, the pending reason). The queue's hosts that pass its
        load_sched and res_req's select[] (the facts do not change within a turn) are kept
        in a heap by res_req's order[], then by free slots (pack: fewest first, spread: most,
        first: host order), so that a job costs O(log hosts)."""
        if queue.name not in self.by_queue:
            self.by_queue[queue.name] = self._heap(queue, known)
        heap, left_out = self.by_queue[queue.name]
        sign = _SIGNS.get(queue.placement, 0)
        skipped, found = [], None
        while heap:
            order, key, seq, slot = heap[0]
            if slot[1] <= 0:
                heapq.heappop(heap)
            elif key != sign * slot[1]:  # another queue's job took slots there since
                heapq.heapreplace(heap, (order, sign * slot[1], seq, slot))
            elif slot[1] >= n:
                found = heapq.heappop(heap)
                break
            elif sign < 0 and not order:  # spread: the host with the most free has too few
                break
            else:
                skipped.append(heapq.heappop(heap))
        for entry in skipped:
            heapq.heappush(heap, entry)
        if found is None:
            return None, left_out or PR_NO_SLOT
        order, _, seq, slot = found
        slot[1] -= n
        self.left -= n
        if slot[1] > 0:
            heapq.heappush(heap, (order, sign * slot[1], seq, slot))
        else:
            self.emptied = True
        return slot[0], ""

    def _heap(self, queue: Any, known: dict[str, Any]) -> tuple[list[_Entry], str]:
        """The queue's hosts as take_for keeps them, and the reason of the first left out."""
        sign = _SIGNS.get(queue.placement, 0)
        req = queue.req
        heap: list[_Entry] = []
        left_out = ""
        for seq, slot in enumerate(self.every()):
            if slot[1] <= 0:
                continue
            host = known.get(slot[0])
            facts = host.facts if host is not None else {}
            why = _queue_refuses(queue, facts)
            if why:
                left_out = left_out or why
            else:
                order = _order_key(req.order, facts) if req is not None else ()
                heap.append((order, sign * slot[1], seq, slot))
        heapq.heapify(heap)
        return heap, left_out

    def _use(self, slot: Slot, n: int, index: int) -> str:
        slot[1] -= n
        self.left -= n
        if slot[1] == 0:
            del self.aside[index]
        return slot[0]

    def every(self, extra: dict[str, int] | None = None) -> list[Slot]:
        """Every host with slots left this turn (the slow path reads them all), and those
        where the job may have `extra` held slots."""
        self.aside.extend([host, free] for host, free in self.it)
        if extra:
            known = {slot[0] for slot in self.aside}
            self.aside.extend([host, 0] for host in extra if host not in known)
        return self.aside

    def commit(
        self,
        chosen: list[tuple[Slot, int]],
        mem: int,
        exclusive: bool,
        extra: dict[str, int] | None = None,
    ) -> None:
        """Take `chosen` [(slot, n)]: n slots of each, the `extra` held ones first (what is
        left of them stays in `extra`), and mem bytes per slot; an exclusive job's hosts take
        nobody else this turn."""
        for slot, n in chosen:
            held = 0
            if extra:
                held = min(n, extra.get(slot[0], 0))
                extra[slot[0]] = extra.get(slot[0], 0) - held
            slot[1] -= n - held
            self.left -= n
            if mem:
                self.mem[slot[0]] = self.mem.get(slot[0], 0) + mem * n
            if exclusive:
                self.left -= slot[1]
                slot[1] = 0
        self.aside = [slot for slot in self.aside if slot[1] > 0]


def _unheld(free_by_host: dict[str, int], held: dict[str, int]) -> Iterator[tuple[str, int]]:
    for host, free in free_by_host.items():
        free -= held.get(host, 0)
        if free > 0:
            yield host, free


def overloaded(
    thresholds: tuple[Threshold, ...], facts: dict, unknown: str | None = None
) -> str | None:
    """The reason of the first threshold a host's facts are past, or None. An index the host
    does not report is `unknown` (None: it holds nothing back)."""
    for index, limit, busier_up, reason in thresholds:
        value = facts.get(index)
        if value is None:
            if unknown:
                return unknown
        elif value > limit if busier_up else value < limit:
            return reason
    return None


def place(
    job: Any,
    hosts: Hosts,
    known: dict[str, Any],
    extra: dict[str, int] | None = None,
    limit: Any = None,
    queue: Any = None,
) -> Alloc | str:
    """The hosts of a job with Needs, of a job wider than any host's free slots, of a job under
    a [limit] (`limit`: scheduler.limits.JobLimit), or of any job of a queue with a placement
    policy or load_sched (`queue`: its scheduler.QueueView): an allocation, or the pending
    reason. `known`: host name -> model.Host; `extra`: held slots the job may use beside the
    free ones (its own reservation's, or backfill's)."""
    needs = job.needs
    want_min = needs.slots_min if needs else job.slots
    want_max = needs.slots_max if needs else job.slots
    if limit is not None:  # -n MIN,MAX: no more than the limits leave (at least MIN, checked)
        want_max = max(want_min, min(want_max, limit.most))
    if want_min > hosts.left:
        return PR_NO_SLOT
    fits, reason, capped = candidates(needs, hosts, known, extra, limit, queue, want_max)
    req = needs and needs.req
    chosen = _allocate(fits, want_min, want_max, req)
    if chosen is None:
        if capped is not None:  # a host the job could use has no room under a limit
            return limit.refusal([(capped, want_min)]) or reason
        return PR_SPAN if fits and req and (req.span_hosts or req.ptile) else reason
    alloc = [[slot[0], n] for slot, n in chosen]
    refusal = limit and limit.refusal(alloc)  # a limit over several hosts counts them together
    if refusal:
        return refusal
    hosts.commit(chosen, req.mem if req else 0, bool(needs and needs.exclusive), extra)
    return alloc


def candidates(
    needs: Any,
    hosts: Hosts,
    known: dict[str, Any],
    extra: dict[str, int] | None = None,
    limit: Any = None,
    queue: Any = None,
    want: int = 0,
) -> tuple[list, str, str | None]:
    """[(slot, how many slots the job may have there)] in the order the job and its queue
    prefer, the reason of the furthest test a host failed, and a host that a limit left no room
    on."""
    fits: list[tuple[Slot, int, dict]] = []
    furthest, load_reason = 0, ""
    capped = None
    facts: dict
    load_sched = queue.load_sched if queue is not None else ()
    req = needs.req if needs is not None else queue.req if queue is not None else None
    for slot in hosts.every(extra):
        free = slot[1] + (extra.get(slot[0], 0) if extra else 0)
        if free <= 0:
            continue
        host = known.get(slot[0])
        if needs is not None:
            failed, cap, facts = _fit(needs, slot[0], free, host, hosts.mem.get(slot[0], 0))
        else:  # the queue's res_req is the job's
            facts = host.facts if host is not None else {}
            failed, cap = (3 if req and req.select and not req.select(facts) else 0), free
        # a host LIM has not reported yet takes no job of a queue with thresholds (LSF)
        over = not failed and load_sched and overloaded(load_sched, facts, PR_LOAD_UNKNOWN)
        if over:
            failed, load_reason = _LOAD, over
        if not failed and limit is not None:
            cap = limit.cap(slot[0], cap)
            if cap <= 0:
                capped = capped or slot[0]
                continue
        if failed:
            furthest = max(furthest, failed)
        else:
            fits.append((slot, cap, facts))
    side = queue.placement if queue is not None else "first"
    if side != "first" or (needs is not None and needs.hosts) or (req and req.order):
        fits.sort(key=lambda f: (*_preference(needs, req, f[0][0], f[2]), *_side(side, f[1], want)))
    reason = load_reason if furthest == _LOAD else _REASONS[furthest]
    return [(slot, cap) for slot, cap, _ in fits], reason, capped


def _fit(needs: Any, name: str, free: int, host: Any, taken: int) -> tuple[int, int, dict]:
    """(index in _REASONS of the test the host fails, 0 if none; slots the job may have
    there; the host's facts as the job sees them)."""
    if needs.hosts is not None and name not in needs.hosts:
        return 1, 0, {}
    if host is None:
        return 3, 0, {}
    if needs.exclusive and (host.used or free < host.slots):
        return 2, 0, {}
    facts = _with_reserved(host.facts, host.reserved + taken)
    req = needs.req
    if req is None:
        return 0, free, facts
    if req.select is not None and not req.select(facts):
        return 3, 0, facts
    if req.mem:
        free = min(free, int(facts.get("mem", 0) * MB) // req.mem)
        if free <= 0:
            return 4, 0, facts
    return 0, free, facts


def _with_reserved(facts: dict, reserved: int) -> dict:
    """The facts a job sees while `reserved` bytes of the host's memory are promised to jobs
    (rusage[mem]): mem is what is free now, and no more than maxmem less the promises."""
    if not reserved or "maxmem" not in facts:
        return facts
    free = facts["maxmem"] - reserved / MB
    return {**facts, "mem": min(facts.get("mem", free), free)}


def _side(placement: str, free: int, want: int) -> tuple:
    """The queue's placement after -m and order[]: pack, a host that takes the whole job and
    has the fewest free slots; spread, the one with the most; first, host order."""
    if placement == "pack":
        return (free < want, free)
    return (-free,) if placement == "spread" else ()


def _preference(needs: Any, req: Any, name: str, facts: dict) -> tuple:
    """Sort key, best host first: -m's preference level, then order[]'s indices (`req`: the
    job's -R, or its queue's res_req)."""
    level = -(needs.hosts or {}).get(name, 0) if needs is not None else 0
    return (level, *_order_key(req.order if req else (), facts))


def _order_key(order: tuple[tuple[str, bool], ...], facts: dict) -> tuple:
    """order[]'s indices as a sort key: a host that does not report an index comes after
    those that do."""
    key: list[Any] = []
    for index, larger_first in order:
        value = facts.get(index)
        key += [value is None, 0 if value is None else (-value if larger_first else value)]
    return tuple(key)


def _queue_refuses(queue: Any, facts: dict) -> str | None:
    """Why a host takes no job without -R of `queue`: past its load_sched (or not reported
    yet), or outside its res_req's select[]."""
    if queue.load_sched:
        over = overloaded(queue.load_sched, facts, PR_LOAD_UNKNOWN)
        if over:
            return over
    req = queue.req
    return PR_SELECT if req is not None and req.select and not req.select(facts) else None


def _allocate(
    fits: list[tuple[Slot, int]], want_min: int, want_max: int, req: Any
) -> list[tuple[Slot, int]] | None:
    """Slots from the candidates in order: one host (span[hosts=1]), ptile per host, or as
    many as each has; between want_min and want_max in all, or None."""
    if req and req.span_hosts:  # the first host with all it wants, else the one with most
        best: tuple[Slot, int] | None = None
        for slot, cap in fits:
            if cap >= want_max:
                return [(slot, want_max)]
            if cap >= want_min and (best is None or cap > best[1]):
                best = (slot, cap)
        return [best] if best else None
    chosen, got = [], 0
    ptile = req.ptile if req else 0
    for slot, cap in fits:
        if got >= want_max:
            break
        n = min(cap, want_max - got)
        if ptile:
            n = min(ptile, want_max - got)
            if cap < n:
                continue
        chosen.append((slot, n))
        got += n
    return chosen if got >= want_min else None
