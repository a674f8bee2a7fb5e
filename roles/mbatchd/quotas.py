"""Quota admission: queues.conf's [quota NAME] sections (docs/policy.md, "Quotas").

A quota counts the core-seconds of its members' jobs: `used` (what ended attempts ran in the
current period), `running` and `pending` (the estimates of the jobs running and waiting). A
submit whose estimate would bring used + running + pending + itself to admit_below of
core_hours is refused. The sums are kept as jobs move (Core._move calls `moved`), so a submit
costs a few dict lookups, never a walk of the queue; the whole book is built again only on a
reload or a refused commit.

`QuotaBook` is plain arithmetic over the configuration and the stored usage (the time is an
argument); `QuotaOps` is Core's side: it feeds the book from jobs and records usage rows.
"""

import grp
import math
import os
import pwd
from collections.abc import Callable, Iterable
from typing import Any

from lavalite import protocol as P
from lavalite.config import QuotaConf
from lavalite.job_array import Array
from lavalite.model import FINISHED, WAITING, Job

HOUR = 3600.0
PENDING, RUNNING = 0, 1  # indexes of a quota's estimate sums


def window(now: float, period: float) -> float:
    """Start of the period holding `now`: fixed windows from the Unix epoch."""
    return math.floor(now / period) * period


def estimate(slots: int, walltime: float | None, period: float) -> float:
    """Core-seconds a job may use: slots x its run limit; with no run limit, slots x the
    whole period (it may run that long)."""
    return slots * (walltime or period)


def user_gids(user: str) -> set[int]:
    """The ids of the Unix groups `user` belongs to, as bsub -G checks membership."""
    try:
        return set(os.getgrouplist(user, pwd.getpwnam(user).pw_gid))
    except KeyError:
        return set()


def group_gids(names: Iterable[str]) -> set[int]:
    """The ids of the Unix groups named (a name no group has is left out)."""
    gids = set()
    for name in names:
        try:
            gids.add(grp.getgrnam(name).gr_gid)
        except KeyError:
            pass
    return gids


def _job_class(state: str) -> int | None:
    """Which sum a job in `state` is counted in: PENDING, RUNNING, or none (finished)."""
    if state in WAITING:
        return PENDING
    return None if state in FINISHED else RUNNING


class QuotaRefused(Exception):
    pass


class QuotaBook:
    """Every quota's used, running and pending core-seconds. `used` holds the stored totals
    by (quota, period start); `gids_of(user)` gives a user's Unix group ids."""

    def __init__(
        self,
        quotas: dict[str, QuotaConf],
        used: dict[tuple[str, float], float],
        gids_of: Callable[[str], set[int]] = user_gids,
    ) -> None:
        self.quotas = quotas
        self.used = used
        self.gids_of = gids_of
        self.sums = {name: [0.0, 0.0] for name in quotas}  # name -> [pending, running]
        self._members: dict[tuple[str, str | None], tuple[QuotaConf, ...]] = {}
        self._group_ids = {q.name: group_gids(q.groups) for q in quotas.values() if q.groups}

    def of(self, user: str, project: str | None) -> tuple[QuotaConf, ...]:
        """The quotas a job of `user` in `project` counts in (cached: a group lookup asks NSS)."""
        key = (user, project)
        found = self._members.get(key)
        if found is None:
            found = self._members[key] = tuple(
                q for q in self.quotas.values() if self._member(q, user, project)
            )
        return found

    def _member(self, q: QuotaConf, user: str, project: str | None) -> bool:
        if user in q.users or (project is not None and project in q.projects):
            return True
        return q.name in self._group_ids and not self._group_ids[q.name].isdisjoint(
            self.gids_of(user)
        )

    def used_now(self, q: QuotaConf, now: float) -> float:
        return self.used.get((q.name, window(now, q.period)), 0.0)

    def admit(self, asks: Iterable[tuple[str, str | None, int, float | None, int]], now: float):
        """Refuse (QuotaRefused) unless every quota still admits all of `asks`, each (user,
        project, slots, run limit, jobs: an array's elements), taken together in order."""
        extra: dict[str, float] = {}
        for user, project, slots, walltime, count in asks:
            for q in self.of(user, project):
                own = count * estimate(slots, walltime, q.period)
                held = self.used_now(q, now) + sum(self.sums[q.name]) + extra.get(q.name, 0.0)
                if held + own >= q.admit_below * q.core_hours * HOUR:
                    raise QuotaRefused(refusal(q, held, own, walltime))
                extra[q.name] = extra.get(q.name, 0.0) + own

    def add(self, job: Any, which: int, count: int, sign: int) -> None:
        """`count` jobs like `job` (a Job or an Array) enter (sign +1) or leave (-1) a sum."""
        slots, walltime = _sizing(job)
        for q in self.of(job.user, job.spec.get("project")):
            self.sums[q.name][which] += sign * count * estimate(slots, walltime, q.period)

    def moved(self, job: Job, old: str, new: str, start: float | None, now: float) -> list:
        """A job went from `old` to `new`; `start`: when its attempt started (before the move).
        Returns the usage rows it changed: (quota, period start, total core-seconds)."""
        was, now_in = _job_class(old), _job_class(new)
        if was == now_in:
            return []
        if was is not None:
            self.add(job, was, 1, -1)
        if now_in is not None:
            self.add(job, now_in, 1, +1)
        if was != RUNNING or not start:
            return []
        rows = []
        for q in self.of(job.user, job.spec.get("project")):
            begin = window(now, q.period)  # what ran before this period counts in none
            ran = job.slots * max(0.0, now - max(start, begin))
            key = (q.name, begin)
            self.used[key] = self.used.get(key, 0.0) + ran
            rows.append((q.name, begin, self.used[key]))
        return rows

    def view(self, now: float) -> list[dict[str, Any]]:
        """bquota's rows, in core-hours."""
        rows = []
        for q in self.quotas.values():
            begin = window(now, q.period)
            pending, running = self.sums[q.name]
            rows.append(
                {
                    "name": q.name,
                    "users": q.users,
                    "groups": q.groups,
                    "projects": q.projects,
                    "period": q.period,
                    "period_end": begin + q.period,
                    "used": self.used_now(q, now) / HOUR,
                    "running": running / HOUR,
                    "pending": pending / HOUR,
                    "core_hours": q.core_hours,
                    "admit_below": q.admit_below,
                }
            )
        return rows


def _sizing(job: Any) -> tuple[int, float | None]:
    """(slots, run limit) of a job's estimate."""
    return _fewest_slots(job.needs, job.slots), job.spec.get("walltime")


def _fewest_slots(needs: Any, slots: int) -> int:
    """The slots an estimate counts: -n MIN,MAX's MIN (placement may give more, and changes
    job.slots), so a job's estimate is the same whichever sum it is in."""
    return needs.slots_min if needs is not None else slots


def refusal(q: QuotaConf, held: float, own: float, walltime: float | None) -> str:
    """The refusal's message: the quota, what it holds and the job's estimate, in core-hours."""
    why = f" (no run limit: counted for the whole {q.period / HOUR:g} h period; give -W)"
    return (
        f"quota {q.name}: {held / HOUR:.1f} + {own / HOUR:.1f} core-hours would pass "
        f"{q.admit_below * 100:g}% of {q.core_hours:g}{'' if walltime else why}"
    )


class QuotaOps:
    """Core's quota bookkeeping (a mixin: Core's attributes are declared for mypy)."""

    conf: Any
    jobs: dict[int, Job]
    arrays: dict[int, Any]
    out: Any
    quota: QuotaBook

    def _build_quotas(self, used: dict[tuple[str, float], float]) -> None:
        """The book for conf's quotas, with every live job and array counted: at start-up,
        after a reload (members and periods may have changed) and after a refused commit."""
        self.quota = QuotaBook(self.conf.quotas, dict(used))
        if not self.quota.quotas:
            return
        for job in self.jobs.values():
            which = _job_class(job.state)
            if which is not None:
                self.quota.add(job, which, 1, +1)
        for arr in self.arrays.values():
            if arr.remaining:
                self.quota.add(arr, PENDING, arr.remaining, +1)

    def _quota_admit(self, ident: dict[str, Any], preps: list[dict], now: float) -> None:
        """Refuse the submit (DENIED, whole) if a quota would not admit its jobs."""
        if self.quota.quotas:
            self._quota_asked(ident["user"], [(p, _count(p["ranges"])) for p in preps], now)

    def _quota_asked(self, user: str, asks: list[tuple[dict, int]], now: float) -> None:
        """DENIED unless every quota admits `asks`: (Core._checked's result, how many jobs)."""
        try:
            self.quota.admit(
                [
                    (
                        user,
                        p["spec"].get("project"),
                        _fewest_slots(p["needs"], p["slots"]),
                        p["spec"].get("walltime"),
                        count,
                    )
                    for p, count in asks
                ],
                now,
            )
        except QuotaRefused as exc:
            raise P.ProtocolError(P.DENIED, str(exc)) from None

    def _quota_created(self, job: Any) -> None:
        """A new job or array counts as pending: an array for every element."""
        if self.quota.quotas:
            self.quota.add(job, PENDING, job.remaining if isinstance(job, Array) else 1, +1)

    def _quota_dropped(self, arr: Any) -> None:
        """An array's indices not handed out end with it (bkill, -t): they pend no more."""
        if self.quota.quotas and arr.remaining:
            self.quota.add(arr, PENDING, arr.remaining, -1)

    def _quota_moved(self, job: Job, old: str, start: float | None, now: float) -> None:
        if self.quota.quotas:
            for name, begin, total in self.quota.moved(job, old, job.state, start, now):
                self.out.quota_usage[name, begin] = total

    def _quota_count(self, job: Job | Array, sign: int, count: int | None = None) -> None:
        """bmod: the estimate of `count` jobs like `job` leaves its sum (-1) before its spec
        changes, enters (+1) after; by default the job, or an array's indices not handed out."""
        if not self.quota.quotas:
            return
        if isinstance(job, Array):
            self.quota.add(job, PENDING, job.remaining if count is None else count, sign)
            return
        which = _job_class(job.state)
        if which is not None:
            self.quota.add(job, which, 1, sign)

    def _quota_readmit(self, changed: list[tuple[Job | Array, dict, int]], now: float) -> None:
        """bmod of pending jobs (or `count` indices of an array): the new estimates (each
        `prep` as _checked makes it) admitted as a submit's, the old ones taken out of their
        sums; refused (DENIED): the old ones counted again, nothing changed. The caller counts
        the new ones once the specs are the jobs'."""
        if not self.quota.quotas or not changed:
            return
        for job, _, count in changed:
            self._quota_count(job, -1, count)
        try:
            self._quota_asked(changed[0][0].user, [(p, n) for _, p, n in changed], now)
        except P.ProtocolError:
            for job, _, count in changed:
                self._quota_count(job, +1, count)
            raise

    def query_quotas(self, now: float) -> dict[str, Any]:
        return {"quotas": self.quota.view(now)}


def _count(ranges: list | None) -> int:
    """How many jobs a submit makes: an array's elements, else one."""
    if not ranges:
        return 1
    return sum((last - first) // step + 1 for first, last, step in ranges)
