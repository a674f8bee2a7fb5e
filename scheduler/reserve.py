"""Slot reservations and backfill (LSF's SLOT_RESERVE = MAX_RESERVE_TIME[N] and BACKFILL).

A wide pending job that cannot start in a queue with `slot_reserve` holds the free slots of the
hosts it can use, turn after turn, until it has enough to start or its reservation time runs
out; no other job takes held slots, except a job of a `backfill` queue whose run limit ends
before the reservation's estimated start. The estimate is the time by which enough slots end
on the hosts it may use, from the run limits of the jobs running there.

Pure: the reservations of the last plan come in with the snapshot, the new ones go out with the
plan; mbatchd keeps them in memory only (soft state, made again after a restart). Reservations
are few (the wide jobs at the head of their users' FIFOs), so a turn's work here is bounded by
them, never by the queue; without reservations nothing here runs.
"""

import math
from collections.abc import Callable, Iterable
from typing import Any

from lavalite.model import PEND

Pending = Any  # a model.Job (an Array entry never reserves: its elements are narrow)
Ends = Callable[[str], list[tuple[float, int]]]  # host -> [(end time or inf, slots)] running


class Reservation:
    """The free slots a pending job holds: hosts {host: slots}, since when it holds slots (its
    reservation time counts from there), and when it is estimated to start (None: unknown,
    some running job on its hosts has no run limit)."""

    __slots__ = ("job", "hosts", "since", "start")

    def __init__(
        self, job: Pending, hosts: dict[str, int], since: float, start: float | None = None
    ) -> None:
        self.job, self.hosts, self.since, self.start = job, hosts, since, start

    @property
    def slots(self) -> int:
        return sum(self.hosts.values())


def wants(job: Pending) -> int:
    """The fewest slots the job can start with."""
    return job.needs.slots_min if job.needs else job.slots


def run_limit(job: Pending) -> float | None:
    """The job's run limit in seconds (-W, else its queue's default_walltime), or None."""
    return job.spec.get("walltime") or None


class Book:
    """This turn's reservations: the last plan's, shrunk to the slots still free (a slot a
    backfill job took, or that a host lost, is no longer held), less the expired ones and
    those of jobs no longer pending.

    held: host -> slots held by all reservations; due: host -> the earliest estimated start of
    a reservation there (a backfill job must end by then)."""

    def __init__(
        self,
        last: dict[int, Reservation],
        free_by_host: dict[str, int],
        reserve_time: dict[str, float],
        now: float,
    ) -> None:
        self.now = now
        self.live: dict[int, Reservation] = {}
        self.expired: set[int] = set()  # reservations dropped this turn: they do not reserve again
        self.held: dict[str, int] = {}
        self.due: dict[str, float] = {}
        for job_id, res in last.items():
            job = res.job
            if job.state != PEND:
                continue
            limit = reserve_time.get(job.queue, 0.0)
            if not limit or now >= res.since + limit:
                self.expired.add(job_id)
                continue
            kept = {}
            for host, n in res.hosts.items():
                n = min(n, free_by_host.get(host, 0) - self.held.get(host, 0))
                if n > 0:
                    kept[host] = n
                    self.held[host] = self.held.get(host, 0) + n
                    self.due[host] = min(self.due.get(host, math.inf), _due(res))
            # kept even when empty (a backfill job holds its slot): its time still runs
            self.live[job_id] = Reservation(job, kept, res.since, res.start)

    def mine(self, job: Pending) -> dict[str, int] | None:
        """The slots the job itself holds (a copy that placement consumes), or None."""
        res = self.live.get(job.id)
        return dict(res.hosts) if res and res.hosts else None

    def backfill(self, job: Pending) -> dict[str, int] | None:
        """The held slots a backfill job may use: those of reservations due after it ends."""
        limit = run_limit(job)
        if not self.held or limit is None:
            return None
        ends = self.now + limit
        usable = {h: n for h, n in self.held.items() if n > 0 and ends <= self.due[h]}
        return usable or None

    def started(self, job: Pending, left: dict[str, int]) -> None:
        """The holder starts with its slots but `left`: its reservation goes (what it did not
        use stays aside until the next turn)."""
        res = self.live.pop(job.id)
        for host, n in res.hosts.items():
            self.held[host] -= n - left.get(host, 0)

    def backfilled(self, offered: dict[str, int], left: dict[str, int]) -> None:
        """A backfill job took offered - left held slots: the reservations there give them up,
        the latest due first (the earliest keep theirs)."""
        for host, n in offered.items():
            used = n - left.get(host, 0)
            if not used:
                continue
            self.held[host] -= used
            on_host = [r for r in self.live.values() if host in r.hosts]
            for res in sorted(on_host, key=_due, reverse=True):
                give = min(used, res.hosts[host])
                res.hosts[host] -= give
                used -= give
                if not res.hosts[host]:
                    del res.hosts[host]
                if not used:
                    break

    def reserve(
        self, job: Pending, more: list[list[Any]], ends: Ends | None, hosts: Iterable[str]
    ) -> None:
        """The job could not start: add the free slots `more` [[host, n]] it just took to its
        reservation, and estimate its start again (only then: a running job that ends frees
        a slot, which the reservation takes). A one-host job's estimate reads the jobs of its
        host; another's those of every host in `hosts` (an early estimate: backfill stays on
        the safe side)."""
        res = self.live.get(job.id)
        if res is None:
            if not more:
                return
            res = self.live[job.id] = Reservation(job, {}, self.now)
        elif not more:
            return
        for host, n in more:
            res.hosts[host] = res.hosts.get(host, 0) + n
            self.held[host] = self.held.get(host, 0) + n
        where = res.hosts if span_one(job) else hosts
        res.start = estimate(wants(job) - res.slots, where, ends, self.now)
        for host in res.hosts:
            self.due[host] = min(self.due.get(host, math.inf), _due(res))

    def result(self) -> dict[int, Reservation]:
        return self.live


def _due(res: Reservation) -> float:
    """When a backfill job must have ended: with no estimate, never backfill (the wide job
    could be due at any time)."""
    return -math.inf if res.start is None else res.start


def estimate(need: int, hosts: Iterable[str], ends: Ends | None, now: float) -> float | None:
    """When `need` more slots free on `hosts`: the end of the running job that brings them,
    in end order; None when some of them have no run limit, or too few run there."""
    if need <= 0:
        return now
    if ends is None:
        return None
    running = sorted(end for host in hosts for end in ends(host))
    for end, slots in running:
        need -= slots
        if need <= 0:
            return None if math.isinf(end) else max(end, now)
    return None


def span_one(job: Pending) -> bool:
    """The job must run on one host (span[hosts=1]): it reserves on one host only."""
    req = job.needs and job.needs.req
    return bool(req and req.span_hosts)


def pick(job: Pending, fits: list[tuple[list[Any], int]], mine: dict[str, int] | None) -> list:
    """Of the free slots the job may use [(slot, cap)], those it reserves: up to what it still
    needs; a one-host job on the host it holds, else on the host with the most."""
    need = wants(job) - sum((mine or {}).values())
    if span_one(job):
        if mine:
            fits = [f for f in fits if f[0][0] in mine]
        else:
            fits = sorted(fits, key=lambda f: -f[1])[:1]
    chosen = []
    for slot, cap in fits:
        if need <= 0:
            break
        n = min(cap, need)
        chosen.append((slot, n))
        need -= n
    return chosen
