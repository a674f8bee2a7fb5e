"""Suspended running jobs: bstop and bresume of a running job (USUSP), and the system's own
suspension (SSUSP) that load thresholds and preemption call (`suspend_by_system`,
`resume_by_system`).

A suspended job keeps its attempt, its hosts and its slots (LSF): only its processes stop.
Every host of the job is told (`suspend` / `resume` orders: sbatchd freezes the job's cgroup,
or stops its processes, and pauses its run limit); the state is stored, so it holds across a
restart of mbatchd, and a host that registers again holding a job stopped or not, against
its stored state, is told again. The slots suspended jobs hold are counted per queue and host
as they move, for bqueues and bhosts (no pass over the jobs).
"""

from typing import TYPE_CHECKING, Any

from lavalite.job_array import Array
from lavalite.model import (
    FINISHED,
    PSUSP,
    RUN,
    SR_ADMIN,
    SR_USER,
    SSUSP,
    SUSPENDED,
    USUSP,
    Job,
    label,
)
from roles.mbatchd.placement import allocation

RESUMED_RUN = "resumed by bresume"  # the event reason of USUSP -> RUN
RESUMED_BY_SYSTEM = "resumed by the system"  # SSUSP -> RUN
# the states counted per queue and host (PSUSP per queue only: it holds no host)
COUNTED = frozenset((PSUSP, USUSP, SSUSP))


class SuspendOps:
    """Mixed into Core (roles/mbatchd/core.py), whose state and helpers it uses."""

    jobs: dict[int, Job]
    admins: set[str]
    # (kind, name, state) -> slots: kind "queue" or "host"; state PSUSP, USUSP, SSUSP
    suspended: dict[tuple[str, str, str], int]

    if TYPE_CHECKING:  # Core's methods these call

        def _send(self, host: str, msg: dict[str, Any]) -> None: ...
        def _move(self, job: Job, new: str, now: float, reason: str = "") -> None: ...
        def _dirty(self, job: Job) -> None: ...

    # --- the moves

    def _suspend(self, job: Job, state: str, reason: str, now: float) -> None:
        """A running (or system-suspended) job to USUSP or SSUSP: its hosts stop it."""
        self._move(job, state, now, reason)
        self._order_hosts(job, "suspend")

    def _resume_running(self, job: Job, reason: str, now: float) -> None:
        self._move(job, RUN, now, reason)
        self._order_hosts(job, "resume")

    def _order_hosts(self, job: Job, op: str) -> None:
        for host, _ in allocation(job):  # its blaunch tasks on its other hosts too
            self._order(host, job, op)

    def _order(self, host: str, job: Job, op: str) -> None:
        self._send(host, {"op": op, "job": job.id, "attempt": job.attempt})

    def suspend_by_system(self, job_id: int, reason: str, now: float) -> bool:
        """SSUSP with LSF's suspending `reason` (a load threshold, preemption): whether the job
        was running and is suspended now. A job its user stopped stays USUSP."""
        job = self.jobs.get(job_id)
        if job is None or job.state != RUN:
            return False
        self._suspend(job, SSUSP, reason, now)
        return True

    def resume_by_system(self, job_id: int, now: float) -> bool:
        """An SSUSP job running again: whether it was suspended by the system."""
        job = self.jobs.get(job_id)
        if job is None or job.state != SSUSP:
            return False
        self._resume_running(job, RESUMED_BY_SYSTEM, now)
        return True

    # --- bstop, bresume of a running job (the checks are ControlOps' and DependOps')

    def _not_stopped(self, ident: dict[str, Any], job: Job) -> str | None:
        """Why bstop by `ident` leaves `job` as it is, or None: pending, running or suspended
        by the system, it stops; one its user stopped, an admin may stop again (LSF), so that
        the user cannot resume it."""
        if job.state == USUSP and job.reason == SR_USER and self._admin_over(ident, job):
            return None
        if job.state == PSUSP or job.state == USUSP:
            return "Job has already been suspended"
        if job.state in FINISHED:
            return "Job has already finished"
        return None

    def _admin_over(self, ident: dict[str, Any], job: Job) -> bool:
        """An admin acting on another user's job."""
        return ident["user"] != job.user and ident["user"] in self.admins

    def _stop_running(self, ident: dict[str, Any], job: Job, now: float) -> None:
        """bstop: USUSP, by its user or by an admin (LSF's reasons differ: a user cannot
        resume a job an admin stopped)."""
        reason = SR_ADMIN if self._admin_over(ident, job) else SR_USER
        if job.state == USUSP:  # stopped by its user already: now by the admin
            job.reason = reason
            self._dirty(job)
        else:
            self._suspend(job, USUSP, reason, now)

    def _not_resumed(self, ident: dict[str, Any], job: Job) -> tuple[str, str] | None:
        """(code, LSF's text) of a suspended job `ident` may not resume, or None."""
        if job.state == SSUSP:
            return "not_suspended", "Job was suspended by the system; it resumes when it can"
        if job.reason == SR_ADMIN and ident["user"] not in self.admins:
            return "denied", "User permission denied"
        return None

    def _resume_one_running(self, ident: dict[str, Any], job: Job, now: float) -> dict[str, Any]:
        name = label(job.id)
        refusal = self._not_resumed(ident, job)
        if refusal is not None:
            code, text = refusal
            return {"job": job.id, "ok": False, "code": code, "message": f"Job <{name}>: {text}"}
        self._resume_running(job, RESUMED_RUN, now)
        return {"job": job.id, "ok": True, "message": f"Job <{name}> is being resumed"}

    # --- counting, and telling a host again

    def _suspension_moved(self, job: Job, old: str, new: str) -> None:
        """Keep `suspended` as a job leaves or enters PSUSP, USUSP, SSUSP (Core._move, and a
        job loaded from the store, old = ""). An array held whole (-H) is counted as pending."""
        if isinstance(job, Array):
            return
        for state, sign in ((old, -1), (new, +1)):
            if state in COUNTED:
                self._count_suspended(job, state, sign)

    def _count_suspended(self, job: Job, state: str, sign: int) -> None:
        counts = self.suspended
        key = ("queue", job.queue, state)
        counts[key] = counts.get(key, 0) + sign * job.slots
        if state in SUSPENDED:
            for host, slots in allocation(job):
                counts["host", host, state] = counts.get(("host", host, state), 0) + sign * slots

    def suspended_slots(self, kind: str, name: str) -> dict[str, int]:
        """{PSUSP, USUSP, SSUSP: slots} of a queue or host."""
        return {state: self.suspended.get((kind, name, state), 0) for state in COUNTED}

    def _suspended_again(self, host: str, job: Job, stopped_there: bool) -> None:
        """A host that registers again running `job` (`stopped_there`: it says the job is
        stopped): told again what an order it did not get said (lost with a connection, or
        with an mbatchd stopped between its commit and its send)."""
        if job.state in SUSPENDED and not stopped_there:
            self._order(host, job, "suspend")
        elif job.state == RUN and stopped_there:
            self._order(host, job, "resume")
