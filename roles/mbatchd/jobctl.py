"""mbatchd's job control beyond a plain kill (bkill -s, bkill -r).

- `-s SIGNAL` sends one signal to a running job's processes: the job keeps running unless it
  dies of it. A pending job can only be killed (KILL, TERM, INT), as LSF: other signals are
  refused for it.
- `-r` is LSF's force: the job ends KILLED in the store at once, without waiting for its host;
  the host is told to kill the attempt as a stale one, and its report of the end changes
  nothing (mbatchd no longer runs that attempt).
"""

import signal
from typing import TYPE_CHECKING, Any

from lavalite import protocol as P
from lavalite.job_array import Array
from lavalite.messages import Kill
from lavalite.model import FINISHED, KILLED_REASON, RUN, WAITING, Job, element_id, label
from roles.mbatchd.placement import allocation

# the signals that kill a pending job (it has no process to receive them)
_KILLING = frozenset((signal.SIGKILL, signal.SIGTERM, signal.SIGINT))


def requested_signal(msg: Kill) -> int | None:
    """The request's `signal` (bkill -s) as a number, or None for a kill."""
    sig = msg.get("signal")
    if sig is None:
        return None
    if type(sig) is not int or not 0 < sig < signal.NSIG:
        raise P.ProtocolError(P.BAD_REQUEST, "field 'signal' of 'kill' must be a signal number")
    return sig


class ControlOps:
    """Mixed into Core (roles/mbatchd/core.py), whose state and helpers it uses."""

    jobs: dict[int, Job]

    if TYPE_CHECKING:  # Core's methods these call

        def _kill(self, job: Job, now: float) -> dict[str, Any]: ...
        def _array_kill(self, arr: Array, now: float) -> dict[str, Any]: ...
        def _send(self, host: str, msg: dict[str, Any]) -> None: ...
        def _ended(self, job: Job, rep: dict[str, Any], now: float) -> None: ...

    def _control(self, target: Job | Array, msg: Kill, now: float) -> dict[str, Any]:
        """bkill of one job or array with the request's options (none: a plain kill)."""
        sig = requested_signal(msg)
        if sig is not None:
            return self._signal_target(target, sig, now)
        if isinstance(target, Array):
            return self._array_kill(target, now)
        if msg.get("force") is True and target.state == RUN:
            return self._force_kill(target, now)
        return self._kill(target, now)

    def _signal_target(self, target: Job | Array, sig: int, now: float) -> dict[str, Any]:
        if isinstance(target, Array):  # its running elements; the rest are not started
            for index in sorted(target.live):
                job = self.jobs[element_id(target.id, index)]
                if job.state == RUN:
                    self._signal_job(job, sig)
            return {"job": target.id, "ok": True, "message": f"Job <{target.id}> is being signaled"}
        if target.state in WAITING and sig in _KILLING or target.state in FINISHED:
            return self._kill(target, now)
        name = label(target.id)
        if target.state != RUN:
            return {
                "job": target.id,
                "ok": False,
                "code": P.NOT_RUNNING,
                "message": f"Job <{name}>: Job has not started yet; only KILL, TERM or INT "
                "reach a pending job",
            }
        self._signal_job(target, sig)
        return {"job": target.id, "ok": True, "message": f"Job <{name}> is being signaled"}

    def _signal_job(self, job: Job, sig: int) -> None:
        for host, _ in allocation(job):  # the tasks on its other hosts too (blaunch)
            order = {"op": "signal", "job": job.id, "attempt": job.attempt, "signal": sig}
            self._send(host, order)

    def _force_kill(self, job: Job, now: float) -> dict[str, Any]:
        """bkill -r of a running job: KILLED now; its hosts kill the attempt when they hear."""
        job.kill_requested = True  # no retry of what the user removed
        stale = {"op": "kill", "job": job.id, "attempt": job.attempt, "stale": True}
        for host, _ in allocation(job):
            self._send(host, dict(stale))
        self._ended(job, {"reason": KILLED_REASON}, now)
        return {"job": job.id, "ok": True, "message": f"Job <{label(job.id)}> is being terminated"}
