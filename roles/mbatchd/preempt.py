"""Preemption as mbatchd applies it (the plan's choice is scheduler/preempt.py's;
docs/policy.md, "Preemption").

A victim of a queue with `preempt_action = suspend` goes to SSUSP (`suspend_by_system`, with
LSF's reason "Preempted by job <ID>"): its hosts freeze it, it keeps its attempt and its slots
in its queue's and user's counts, but its host lends those slots to the preempting job, which
is dispatched at once in the same turn (a frozen job uses no CPU). The lent slots are counted
back on the host as the victim leaves SSUSP by any path (resumed, bstop'd then bresumed, ended,
requeued). When the preempting job ends, its victims resume, each as soon as its host has its
slots free again, before the turn's plan hands them to anyone else. With `preempt_action =
requeue` the victim is killed and pending again (as brequeue), and its slots are simply free.

Nothing is stored beyond the victims' state and reason: a restarted mbatchd finds who preempted
whom in the SSUSP jobs' reasons and lends their slots again.
"""

import re
from typing import TYPE_CHECKING, Any

from lavalite import preemption
from lavalite.model import PEND, SSUSP, STARTED, SUSPENDED, Job, element_id, label
from scheduler import QueueView

_PREEMPTED = "Preempted by job <{}>"  # the victim's suspending reason (LSF's wording)
_PREEMPTED_BY = re.compile(r"Preempted by job <(\d+)(?:\[(\d+)\])?>")


def preempted_reason(job_id: int) -> str:
    return _PREEMPTED.format(label(job_id))


def _preemptor_of(reason: str) -> int | None:
    """The id of the job a victim's reason names, or None."""
    m = _PREEMPTED_BY.fullmatch(reason or "")
    if m is None:
        return None
    return element_id(int(m.group(1)), int(m.group(2))) if m.group(2) else int(m.group(1))


class PreemptOps:
    """Mixed into Core (roles/mbatchd/core.py), whose state and helpers it uses."""

    jobs: dict[int, Job]
    hosts: dict[str, Any]
    queues: dict[str, QueueView]
    qconf: dict[str, Any]
    wake: bool
    preempt: dict[str, list[QueueView]]  # preemptive queue -> the views it may preempt
    lent: dict[int, int]  # victim id -> its preemptor's, while the victim is suspended
    victims: dict[int, list[int]]  # preemptor id -> its suspended victims, while it runs
    to_resume: list[int]  # victims whose preemptor ended, waiting for their slots

    if TYPE_CHECKING:  # Core's and the other mixins' methods these call

        def _set_free(self, host: Any) -> None: ...
        def suspend_by_system(self, job_id: int, reason: str, now: float) -> bool: ...
        def resume_by_system(self, job_id: int, now: float) -> bool: ...
        def _requeue_running(self, job: Job, to: str, now: float, reason: str = ...) -> None: ...

    def _init_preempt(self) -> None:
        self.lent, self.victims, self.to_resume = {}, {}, []

    def _set_preemption(self) -> None:
        """The pairs of the queues' `preemption` (a reload changes them); a view that may be
        preempted keeps its started jobs in `started` (filled here once, kept by _count_run)."""
        policies = {
            name: preemption.parse(qc.preemption)
            for name, qc in self.qconf.items()
            if qc.preemption
        }
        priorities = {name: qc.priority for name, qc in self.qconf.items()}
        pairs = preemption.pairs(policies, priorities)
        self.preempt = {q: [self.queues[v] for v in lower] for q, lower in pairs.items()}
        preemptable = {v.name for lower in self.preempt.values() for v in lower}
        for name, view in self.queues.items():
            if name not in preemptable:
                view.started = None
            elif view.started is None:
                view.started = {
                    j.id: j
                    for j in getattr(self, "jobs", {}).values()
                    if j.queue == name and j.state in STARTED
                }

    def _apply_preemptions(self, plan: Any, now: float) -> None:
        """The plan's victims, before its placements take their slots."""
        for index, victims in plan.victims.items():
            preemptor = plan.placements[index][0]
            reason = preempted_reason(preemptor.id)
            for victim in victims:
                qc = self.qconf.get(victim.queue)
                if qc is not None and qc.preempt_action == "requeue":
                    self._requeue_running(victim, PEND, now, f"{reason}: requeued")
                elif self.suspend_by_system(victim.id, reason, now):
                    self._lend(victim, preemptor.id)

    def _lend(self, victim: Job, preemptor: int) -> None:
        """The victim's host lends its slots to the job that preempted it."""
        self.lent[victim.id] = preemptor
        self.victims.setdefault(preemptor, []).append(victim.id)
        self._hold_on_host(victim, -1)

    def _hold_on_host(self, job: Job, sign: int) -> None:
        """Count a (plain, one-host) victim's slots on its host again (+1) or lend them (-1)."""
        host = self._host_of(job)
        host.used += sign * job.slots
        self._set_free(host)

    def _host_of(self, job: Job) -> Any:
        assert job.host is not None  # a started job has its host
        return self.hosts[job.host]

    def _preempt_moved(self, job: Job, new: str) -> None:
        """Core._move, while anything is lent: a victim leaving suspension takes its slots back
        on its host; a preemptor's end lets its victims resume."""
        if job.id in self.lent and new not in SUSPENDED:
            del self.lent[job.id]
            self._hold_on_host(job, +1)
        if new not in STARTED and job.id in self.victims:
            # those still lent to it: one its user resumed since may have been preempted again
            self.to_resume += [v for v in self.victims.pop(job.id) if self.lent.get(v) == job.id]
            self.wake = True

    def _resume_preempted(self, now: float) -> None:
        """Victims whose preemptor ended resume once their host has their slots free; one still
        SSUSP without its slots waits for a later turn (each end of a job wakes one)."""
        waiting = []
        for job_id in self.to_resume:
            job = self.jobs.get(job_id)
            if job is None or job.state != SSUSP or job_id not in self.lent:
                continue
            if self._host_of(job).free >= job.slots:
                self.resume_by_system(job_id, now)
            else:
                waiting.append(job_id)
        self.to_resume = waiting

    def _preempt_loaded(self) -> None:
        """After a restart: the SSUSP jobs that preemption suspended lend their slots again; those
        whose preemptor is gone resume when they can."""
        for job in list(self.jobs.values()):
            preemptor = _preemptor_of(job.reason) if job.state == SSUSP else None
            if preemptor is None:
                continue
            self._lend(job, preemptor)
        for preemptor in list(self.victims):
            holder = self.jobs.get(preemptor)
            if holder is None or holder.state not in STARTED:
                self.to_resume += self.victims.pop(preemptor)
