"""Preemption (LSF's PREEMPTIVE / PREEMPTABLE queues): a pending job of a preemptive queue that
the ordinary plan could not place for want of slots takes the slots of running jobs of the
queues it may preempt, on one host.

The host is the one where the fewest jobs free enough slots (with what is free there already);
ties go to fewer slots taken, then the host's name. On a host, victims are taken from the
lowest-priority queue first and, within it, the most recently started first (LSF: the job that
loses the least work). Only plain jobs preempt (one host, no -R/-m/-x/-n MIN,MAX, no array);
a victim runs on one host without -R/-m/-x/-n MIN,MAX. A job that is suspended already (USUSP,
SSUSP) is never a victim again, and a queue only ever preempts strictly lower-priority queues.

The plan says what to do; mbatchd does it: Plan.victims holds, per index of a placement, the
jobs it preempts. This runs after the ordinary plan and only when some queue preempts
(snap.preempt), so a cluster without preemption pays nothing; its cost is the candidates it
reads (the running jobs of the preemptable queues), once per turn in which a preemptive queue
has pending jobs, and the users of those queues.
"""

from collections.abc import Iterator
from typing import Any

from lavalite.model import HOST_OK, PEND, PR_QUEUE_CAP, PR_USER_CAP, RUN
from scheduler.fit import Hosts

Job = Any  # a model.Job as the scheduler reads it
Candidates = dict[str, list[Job]]  # host -> running jobs it may preempt there, best first


class _Turn:
    """What this pass has changed: free slots per host, victims chosen, slots placed."""

    def __init__(self, snap: Any, hosts: Hosts, result: Any) -> None:
        self.snap, self.result = snap, result
        self.free = {name: n for name, n in hosts.every()}  # what the ordinary plan left
        self.taken: set[int] = set()  # victims' ids
        self.placed = {id(job) for job, _ in result.placements}
        self.used: dict[tuple[str, str | None], int] = {}  # (queue, user or None) -> slots
        for job, _ in result.placements:
            self._count(job)

    def _count(self, job: Job) -> None:
        for key in ((job.queue, job.user), (job.queue, None)):
            self.used[key] = self.used.get(key, 0) + job.slots

    def fits_anyway(self, slots: int) -> bool:
        return any(n >= slots for n in self.free.values())

    def place(self, job: Job, host: str, victims: list[Job]) -> None:
        self.free[host] = self.free.get(host, 0) + sum(v.slots for v in victims) - job.slots
        self.taken.update(v.id for v in victims)
        self.result.victims[len(self.result.placements)] = victims
        self.result.placements.append((job, host))
        self._count(job)


def preempt(snap: Any, hosts: Hosts, result: Any) -> None:
    """Add to `result` the placements that preempt (see the module's docstring)."""
    turn: _Turn | None = None
    for q in snap.queues:
        lower = snap.preempt.get(q.name)
        if not lower or not q.active or not q.pending or result.reasons.get((q.name, None)):
            continue
        turn = turn or _Turn(snap, hosts, result)
        _preempt_for_queue(q, lower, turn)


def _candidates(lower: list[Any], snap: Any) -> Candidates:
    """Running plain jobs of the queues `lower` (QueueViews with `started`) by host, on hosts
    that take jobs, best victim first."""
    ranked: dict[str, list[tuple[int, float, int, Job]]] = {}
    for view in lower:
        for job in view.started.values():
            if job.state == RUN and job.hosts is None and job.needs is None:
                start = job.start_time if job.start_time is not None else snap.now
                ranked.setdefault(job.host, []).append((view.priority, -start, job.id, job))
    return {
        host: [entry[3] for entry in sorted(jobs)]
        for host, jobs in ranked.items()
        if _usable(snap.hosts.get(host))
    }


def _usable(host: Any) -> bool:
    return host is not None and host.status == HOST_OK and not host.exclusive


def _preempt_for_queue(q: Any, lower: list[Any], turn: _Turn) -> None:
    """Each user's waiting jobs in order (users by their first job's arrival); a user's walk
    stops at the first job that preemption cannot start (FIFO per user). The candidates are
    read once a job needs them."""
    candidates: Candidates | None = None
    for user, fifo in sorted(q.pending.items(), key=lambda item: item[1][0][0] if item[1] else 0):
        if turn.result.reasons.get((q.name, user)) == PR_USER_CAP:
            continue
        for job in _waiting(fifo, turn.placed):
            if not _plain(job) or not _within_caps(q, user, job, turn):
                break
            if turn.fits_anyway(job.slots):
                return  # free slots remain (the turn's limit): the next turn places it
            if candidates is None:
                candidates = _candidates(lower, turn.snap)
            chosen = _best_host(job, candidates, turn)
            if chosen is None:
                break
            turn.place(job, *chosen)


def _waiting(fifo: Any, placed: set[int]) -> Iterator[Job]:
    for seq, job in fifo:
        if job.state == PEND and job.pend_seq == seq and id(job) not in placed:
            yield job


def _plain(job: Job) -> bool:
    return job.array is None and job.needs is None


def _within_caps(q: Any, user: str, job: Job, turn: _Turn) -> bool:
    """The queue's max_running_queue and max_running_user hold with the job started (a
    victim's slots stay counted in its own queue: it keeps them)."""
    reasons = turn.result.reasons
    if q.max_running_queue and (
        q.running + turn.used.get((q.name, None), 0) + job.slots > q.max_running_queue
    ):
        reasons[(q.name, None)] = PR_QUEUE_CAP
        return False
    if q.max_running_user and (
        q.running_user.get(user, 0) + turn.used.get((q.name, user), 0) + job.slots
        > q.max_running_user
    ):
        reasons[(q.name, user)] = PR_USER_CAP
        return False
    return True


def _best_host(job: Job, candidates: Candidates, turn: _Turn) -> tuple[str, list[Job]] | None:
    """(host, victims) with the fewest victims, then the fewest slots taken, then by name."""
    best: tuple[int, int, str] | None = None
    victims: list[Job] = []
    for host, jobs in candidates.items():
        need = job.slots - turn.free.get(host, 0)
        chosen, got = [], 0
        for victim in jobs:
            if got >= need:
                break
            if victim.state == RUN and victim.id not in turn.taken:
                chosen.append(victim)
                got += victim.slots
        key = (len(chosen), got, host)
        if got >= need and chosen and (best is None or key < best):
            best, victims = key, chosen
    return (best[2], victims) if best else None
