"""mbatchd's job control beyond a plain kill (bkill -s, bkill -r) and the order of pending
jobs (btop, bbot).

- `-s SIGNAL` sends one signal to a running job's processes: the job keeps running unless it
  dies of it. A pending job can only be killed (KILL, TERM, INT), as LSF: other signals are
  refused for it.
- `-r` is LSF's force: the job ends KILLED in the store at once, without waiting for its host;
  the host is told to kill the attempt as a stale one, and its report of the end changes
  nothing (mbatchd no longer runs that attempt).
"""

import heapq
import signal
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lavalite import protocol as P
from lavalite.job_array import Array
from lavalite.messages import Kill, Move, Requeue, Resume, Switch
from lavalite.model import (
    FINISHED,
    KILLED_REASON,
    PEND,
    PSUSP,
    STARTED,
    WAITING,
    Job,
    element_id,
    label,
    run_record,
)
from lavalite.requeue import states_test
from roles.mbatchd.job_options import fifo_order
from roles.mbatchd.placement import allocation, unplace
from scheduler import live

if TYPE_CHECKING:  # core imports this module
    from lavalite.config import Config
    from roles.mbatchd.core import TurnOutput

REQUEUED = "requeued by brequeue"  # the event reason of RUN -> PEND
STOPPED = "stopped by bstop"  # the event reason of PEND -> PSUSP

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


def unstarted_refusal(job_id: int, sig: int | None) -> dict[str, Any] | None:
    """The answer to a bkill -s of a job not started yet, unless the signal kills it."""
    if sig is None or sig in _KILLING:
        return None
    return {
        "job": job_id,
        "ok": False,
        "code": P.NOT_RUNNING,
        "message": f"Job <{label(job_id)}>: Job has not started yet; only KILL, TERM or INT "
        "reach a pending job",
    }


class ControlOps:
    """Mixed into Core (roles/mbatchd/core.py), whose state and helpers it uses."""

    jobs: dict[int, Job]
    arrays: dict[int, Array]
    envs: dict[int, list[Any]]
    depend_waiting: dict[int, Any]
    touched: set[tuple[str, str]]
    out: "TurnOutput"
    conf: "Config"
    wake: bool
    backoff: list[tuple[float, int]]
    npend: dict[str, int]
    qconf: dict[str, Any]

    if TYPE_CHECKING:  # Core's methods these call

        def _kill(self, job: Job, now: float) -> dict[str, Any]: ...
        def _array_kill(self, arr: Array, now: float) -> dict[str, Any]: ...
        def _send(self, host: str, msg: dict[str, Any]) -> None: ...
        def _kill_order(
            self, host: str, job_id: int, attempt: int, stale: bool = False
        ) -> None: ...
        def _ended(self, job: Job, rep: dict[str, Any], now: float) -> None: ...
        def _target(self, job_id: int) -> Job | Array | None: ...
        def _may_act_on(self, ident: dict[str, Any], job: Job | Array) -> bool: ...
        def _queue(self, name: str) -> Any: ...
        def _enqueue(self, job: Job | Array) -> None: ...
        def _dirty(self, job: Job) -> None: ...
        def _release(self, job: Job) -> None: ...
        def _move(self, job: Job, new: str, now: float, reason: str = "") -> None: ...
        def _stop_running(self, ident: dict[str, Any], job: Job, now: float) -> None: ...
        def _not_stopped(self, ident: dict[str, Any], job: Job) -> str | None: ...
        def queue_flag(self, name: str, flag: str) -> bool: ...
        def _elements_of(self, arr: Array) -> list[Job]: ...
        def _count_run(self, job: Job, sign: int) -> None: ...
        def _enter_fifo(self, job: Job | Array, now: float) -> None: ...
        def _depend_reopen(self, target: int, now: float) -> None: ...
        def _env_ref(self, env_id: int, digest: str, env: dict) -> None: ...

    def _control(self, target: Job | Array, msg: Kill, now: float) -> dict[str, Any]:
        """bkill of one job or array with the request's options (none: a plain kill)."""
        sig = requested_signal(msg)
        if sig is not None:
            return self._signal_target(target, sig, now)
        if isinstance(target, Array):
            return self._array_kill(target, now)
        if msg.get("force") is True and target.state in STARTED:
            return self._force_kill(target, now)
        return self._kill(target, now)

    def _signal_target(self, target: Job | Array, sig: int, now: float) -> dict[str, Any]:
        if isinstance(target, Array):  # its running elements; the rest are not started
            for index in sorted(target.live):
                job = self.jobs[element_id(target.id, index)]
                if job.state in STARTED:
                    self._signal_job(job, sig)
            return {"job": target.id, "ok": True, "message": f"Job <{target.id}> is being signaled"}
        if target.state in WAITING and sig in _KILLING or target.state in FINISHED:
            return self._kill(target, now)
        if target.state not in STARTED:
            refusal = unstarted_refusal(target.id, sig)
            assert refusal is not None  # not a killing signal
            return refusal
        self._signal_job(target, sig)
        return {
            "job": target.id,
            "ok": True,
            "message": f"Job <{label(target.id)}> is being signaled",
        }

    def _signal_job(self, job: Job, sig: int) -> None:
        for host, _ in allocation(job):  # the tasks on its other hosts too (blaunch)
            order = {"op": "signal", "job": job.id, "attempt": job.attempt, "signal": sig}
            self._send(host, order)

    def _force_kill(self, job: Job, now: float) -> dict[str, Any]:
        """bkill -r of a running job: KILLED now; its hosts kill the attempt when they hear."""
        job.kill_requested = True  # no retry of what the user removed
        for host, _ in allocation(job):
            self._kill_order(host, job.id, job.attempt, stale=True)
        self._ended(job, {"reason": KILLED_REASON}, now)
        return {"job": job.id, "ok": True, "message": f"Job <{label(job.id)}> is being terminated"}

    # --- brequeue

    def requeue(
        self,
        ident: dict[str, Any],
        msg: Requeue,
        now: float,
        load_env: Callable[[int], tuple[str, dict] | None],
    ) -> dict[str, Any]:
        """brequeue: jobs of the states `kinds` asks (running by default; -p pending, -d DONE,
        -e EXIT) PEND again, or PSUSP with -H; an array's elements in those states.
        load_env(id): a stored environment, for a finished job whose environment no job in
        memory holds any longer."""
        states = requeue_states(msg.get("kinds", ["run"]))
        hold = msg.get("hold") is True
        results = []
        for job_id in P.job_ids(msg):
            arr = self.arrays.get(job_id)
            if arr is None:
                results.append(self._requeue_one(ident, job_id, states, hold, now, load_env))
            elif not self._may_act_on(ident, arr):
                results.append(_refusal(job_id, P.DENIED, "User permission denied"))
            else:
                chosen = [j.id for j in self._elements_of(arr) if states(j.state)]
                if not chosen:
                    text = "No element of the array is in a state these options requeue"
                    results.append(_refusal(job_id, P.WRONG_STATE, text))
                results += [
                    self._requeue_one(ident, i, states, hold, now, load_env) for i in chosen
                ]
        return {"results": results}

    def _requeue_one(
        self,
        ident: dict[str, Any],
        job_id: int,
        states: Callable[[str], bool],
        hold: bool,
        now: float,
        load_env: Callable[[int], tuple[str, dict] | None],
    ) -> dict[str, Any]:
        job, refusal = self._controllable(ident, job_id, lambda j: _not_requeued(j, states, hold))
        if job is None:
            return refusal
        to = PSUSP if hold else PEND
        if job.state in FINISHED:
            if not self._requeue_finished(job, to, now, load_env):
                text = "Job's submission environment is no longer stored"
                return _refusal(job_id, P.WRONG_STATE, text)
        elif job.state in WAITING:
            self._requeue_pending(job, to, now)
        else:
            self._requeue_running(job, to, now)
        return {"job": job_id, "ok": True, "message": f"Job <{label(job_id)}> is being requeued"}

    def _controllable(
        self, ident: dict[str, Any], job_id: int, wrong_state: Callable[[Job], str | None]
    ) -> tuple[Job, dict[str, Any]] | tuple[None, dict[str, Any]]:
        """(the job, {}) if `ident` may act on it and `wrong_state` finds nothing wrong with
        it, else (None, LSF's refusal as a result line)."""
        job = self.jobs.get(job_id)
        if job is None:
            code, text = P.NOT_FOUND, "No matching job found"
        elif not self._may_act_on(ident, job):
            code, text = P.DENIED, "User permission denied"
        else:
            code, text = P.WRONG_STATE, wrong_state(job) or ""
            if not text:
                return job, {}
        return None, _refusal(job_id, code, text)

    def _requeue_running(self, job: Job, to: str, now: float, reason: str = REQUEUED) -> None:
        """PEND (or PSUSP) now, stored: a restart keeps it; its hosts kill the attempt as a
        stale one. It waits kill_grace before it may start again, the time the old attempt
        has to end, so that two attempts do not overlap on a host that hears at once."""
        for host, _ in allocation(job):
            self._kill_order(host, job.id, job.attempt, stale=True)
        self._release(job)
        job.kill_requested = False  # a kill under way ends with the old attempt
        self._move(job, to, now, reason)
        unplace(job)
        job.eligible_time = now + self.conf.sbatchd.kill_grace
        heapq.heappush(self.backoff, (job.eligible_time, job.id))

    def _requeue_pending(self, job: Job, to: str, now: float) -> None:
        """brequeue -p: a job waiting in its FIFO goes after its user's jobs of its priority
        (LSF), a held one (PSUSP) back to its FIFO; -H holds it. One waiting for a condition,
        a retry backoff or its begin time keeps waiting."""
        queued = job.state == PSUSP or self._fifo_of(job) is not None
        self._move(job, to, now, REQUEUED)  # its FIFO entry, if any, is stale now
        self.touched.add((job.queue, job.user))
        if to == PEND and queued and job.id not in self.depend_waiting:
            self._enter_fifo(job, now)

    def _requeue_finished(
        self,
        job: Job,
        to: str,
        now: float,
        load_env: Callable[[int], tuple[str, dict] | None],
    ) -> bool:
        """brequeue -d, -e: a finished job (still in memory, within clean_period) is pending
        again, to run as attempt N+1; its array is unfinished again, and the conditions its
        end made false for good can hold again. False if its environment is gone."""
        owner: Job | Array = job if job.array is None else job.array
        if owner.finished and not self._env_back(owner, load_env):
            return False
        job.kill_requested = False
        self.out.runs.append(run_record(job))  # bacct counts each run (LSF's JOB_FINISH)
        self._move(job, to, now, REQUEUED)  # an element's array counts it pending again
        unplace(job)
        arr = job.array
        if arr is not None:
            if arr.end_time is not None:
                arr.end_time = None  # it ends again with its last element
                self.out.arrays[arr.id] = arr
            self._depend_reopen(arr.id, now)  # done(ARRAY) is false once an element exits
        self._depend_reopen(job.id, now)
        if to == PEND:
            self._enter_fifo(job, now)
        return True

    def _env_back(
        self, owner: Job | Array, load_env: Callable[[int], tuple[str, dict] | None]
    ) -> bool:
        """Count `owner` among the users of its environment again, read from the store if no
        job in memory holds it any longer. False if the store has it no longer either."""
        env_id = owner.spec.get("env_id")
        if env_id is None:
            return True
        entry = self.envs.get(env_id)
        found = (entry[0], entry[1]) if entry is not None else load_env(env_id)
        if found is None:
            return False
        self._env_ref(env_id, *found)
        return True

    # --- bstop

    def stop(self, ident: dict[str, Any], msg: Resume, now: float) -> dict[str, Any]:
        """bstop: a pending job PSUSP (held) until bresume, as a bsub -H job is; a running one
        USUSP (roles/mbatchd/suspend.py). The state is stored, so it holds across a restart."""
        return {"results": [self._stop_one(ident, job_id, now) for job_id in P.job_ids(msg)]}

    def _stop_one(self, ident: dict[str, Any], job_id: int, now: float) -> dict[str, Any]:
        job, refusal = self._controllable(ident, job_id, lambda j: self._not_stopped(ident, j))
        if job is None:
            return refusal
        if job.state == PEND:
            self._move(job, PSUSP, now, STOPPED)  # its FIFO entry is stale now
        else:
            self._stop_running(ident, job, now)
        return {"job": job_id, "ok": True, "message": f"Job <{label(job_id)}> is being stopped"}

    # --- bswitch

    def switch(self, ident: dict[str, Any], msg: Switch, now: float) -> dict[str, Any]:
        """bswitch QUEUE: unfinished jobs to another queue. A pending one goes after the
        user's jobs of its priority there; a running one keeps running, counted in the new
        queue's running jobs, with the limits it started with (LSF). A job the new queue
        would refuse stays where it is."""
        queue = msg.get("queue")
        if not isinstance(queue, str) or queue not in self.qconf:
            raise P.ProtocolError(P.NOT_FOUND, f"{queue}: No such queue")
        ids = P.job_ids(msg)
        return {"results": [self._switch_one(ident, job_id, queue) for job_id in ids]}

    def _switch_one(self, ident: dict[str, Any], job_id: int, queue: str) -> dict[str, Any]:
        job, refusal = self._controllable(ident, job_id, lambda j: self._not_switched(j, queue))
        if job is None:
            return refusal
        queued = self._fifo_of(job) is not None  # else it enters a FIFO later, by job.queue
        running = job.state not in WAITING  # it keeps running, counted in its new queue
        if job.state == PEND:
            self.npend[job.queue] -= 1
            self.npend[queue] = self.npend.get(queue, 0) + 1
        if running:
            self._count_run(job, -1)
        self.touched.add((job.queue, job.user))
        job.queue = queue
        if running:
            self._count_run(job, +1)
        if queued:
            self._enqueue(job)  # its old FIFO entry is stale now (another pend_seq)
        self.touched.add((job.queue, job.user))
        self._dirty(job)
        self.wake = True
        return {
            "job": job_id,
            "ok": True,
            "message": f"Job <{label(job_id)}> is switched to queue <{queue}>",
        }

    def _not_switched(self, job: Job, queue: str) -> str | None:
        """Why `job` cannot go to `queue` as it is, or None."""
        if job.array is not None:
            return "an array's elements stay in their array's queue"
        if job.state in FINISHED:
            return "Job has already finished"
        if not self.queue_flag(queue, "open"):
            return f"Queue <{queue}> is closed"
        qc = self.qconf[queue]
        interactive = job.spec.get("interactive") is not None
        if qc.interactive == ("no" if interactive else "only"):
            kind = "interactive" if interactive else "batch"
            return f"Queue <{queue}> does not accept {kind} jobs"
        for field, maximum in (
            ("walltime", qc.max_walltime),
            ("memory", qc.max_memory),
            ("pids", qc.max_pids),
        ):
            if maximum and (job.spec.get(field) or 0) > maximum:
                return f"its {field} exceeds queue <{queue}>'s max_{field}"
        if job.max_attempts - 1 > qc.max_retries:
            return f"its retries exceed queue <{queue}>'s max_retries"
        return None

    # --- btop, bbot

    def move(self, ident: dict[str, Any], msg: Move, now: float) -> dict[str, Any]:
        """btop/bbot: a pending job (or array) before the first, or after the last, of its
        user's pending jobs of the same priority in its queue (LSF). Its new pend_seq is
        stored with it, so the order survives a restart."""
        job_id, to, position = msg.get("job"), msg.get("to"), msg.get("position", 1)
        if type(job_id) is not int or to not in ("top", "bottom"):
            raise P.ProtocolError(
                P.BAD_REQUEST, "'move' takes a job id and 'to': 'top' or 'bottom'"
            )
        if type(position) is not int or position < 1:
            raise P.ProtocolError(P.BAD_REQUEST, "field 'position' of 'move' must be 1 or more")
        target = self._target(job_id)
        name = label(job_id)
        if target is None:
            raise P.ProtocolError(P.NOT_FOUND, f"Job <{name}>: No matching job found")
        if not self._may_act_on(ident, target):
            raise P.ProtocolError(P.DENIED, f"Job <{name}>: User permission denied")
        fifo = self._fifo_of(target)
        if fifo is None:
            raise P.ProtocolError(P.WRONG_STATE, f"Job <{name}>: {_not_movable(target)}")
        order = fifo_order(self.conf)
        rank = order((0, target))[0]
        equals = [e for e in fifo if e[1] is not target and live(e) and order(e)[0] == rank]
        position = min(position, len(equals) + 1)  # past the end: the last place there is
        before = position - 1 if to == "top" else len(equals) + 1 - position
        if before == len(equals):
            self._enqueue(target)  # a new pend_seq, after its equals and betters
        elif before == 0:
            self._to_top(target, fifo, equals[0][0])
        else:
            self._between(target, fifo, equals, before)
        self.touched.add((target.queue, target.user))
        self.wake = True
        self._save_position(target)
        return {"message": f"Job <{name}> has been moved to position {position} from {to}."}

    def _fifo_of(self, target: Job | Array) -> deque[tuple[int, Any]] | None:
        """Its user's FIFO in its queue if it waits there now (not held, not waiting for a
        condition, a retry backoff or a begin time): only then has it a place to move."""
        if target.state != PEND:
            return None
        fifo = self._queue(target.queue).pending.get(target.user) or deque()
        live = any(j is target and seq == target.pend_seq for seq, j in fifo)
        return fifo if live else None

    def _to_top(self, target: Job | Array, fifo: deque[tuple[int, Any]], first: int) -> None:
        """Before its first equal, whose pend_seq is `first`."""
        order = fifo_order(self.conf)
        target.pend_seq = _below(first)
        entry = (target.pend_seq, target)
        fifo.insert(bisect_left(fifo, order(entry), key=order), entry)

    def _between(
        self,
        target: Job | Array,
        fifo: deque[tuple[int, Any]],
        equals: list[tuple[int, Any]],
        before: int,
    ) -> None:
        """Just before equals[before]: the equals ahead of it take lower pend_seqs where
        there is no room between two (each one stored), and the user's FIFO is made again in
        its order: the cost of a move into the middle, never of a turn."""
        members = [j for seq, j in fifo if live((seq, j)) and j is not target] + [target]
        target.pend_seq = limit = _below(equals[before][0])
        for _, ahead in reversed(equals[:before]):
            if ahead.pend_seq < limit:
                break
            ahead.pend_seq = limit = _below(limit)
            self._save_position(ahead)
        order = fifo_order(self.conf)
        fifo.clear()
        fifo.extend(sorted(((j.pend_seq, j) for j in members), key=order))

    def _save_position(self, target: Job | Array) -> None:
        if isinstance(target, Array):
            self.out.arrays[target.id] = target
        else:
            self._dirty(target)


def _below(seq: int) -> int:
    """The pend_seq just before `seq` (0 means "never queued" in the store: skipped)."""
    return seq - 1 or -1


def _refusal(job_id: int, code: str, text: str) -> dict[str, Any]:
    """A result line of a job left as it was: `Job <ID>: text` (LSF)."""
    return {"job": job_id, "ok": False, "code": code, "message": f"Job <{label(job_id)}>: {text}"}


def requeue_states(kinds: object) -> Callable[[str], bool]:
    """The request's `kinds` (brequeue -r -p -d -e) as a test of a job's state."""
    try:
        return states_test(kinds)
    except ValueError as exc:
        raise P.ProtocolError(P.BAD_REQUEST, f"field 'kinds' of 'requeue': {exc}") from None


def _not_requeued(job: Job, states: Callable[[str], bool], hold: bool) -> str | None:
    """LSF's reason `job` is not requeued with these options, or None."""
    if job.spec.get("interactive") is not None:
        return "Interactive jobs cannot be requeued"
    if states(job.state):
        return "Job has already been suspended" if hold and job.state == PSUSP else None
    if job.state in FINISHED:
        return "Job has already finished"
    if job.state in WAITING:
        return "Job has not started yet"
    return "Job has already started"


def _not_movable(target: Job | Array) -> str:
    """LSF's reason a job cannot be moved in its queue."""
    if target.state in FINISHED:
        return "Job has already finished"
    if target.state == PEND:
        return "Job is waiting for a dependency, a retry backoff or its begin time"
    return "Job has already started" if target.state != PSUSP else "Job is suspended"
