"""mbatchd's job arrays and waits: the part of the core that knows an Array.

An array is one pending entry in its queue's FIFO; the scheduler places it once per element,
and `_element` makes the Job at that moment (or when one index is killed alone). Elements
share the array's spec and environment; their ends update the array's counts, and the array
ends when its last element does. `wait` (bwait) parks a request until a job or array ends.
"""

import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lavalite import protocol as P
from lavalite.job_array import (
    MAX_ELEMENTS,
    Array,
    ArrayError,
    Range,
    parse_name,
    parse_throttle,
)
from lavalite.messages import Wait
from lavalite.model import (
    DONE,
    FINISHED,
    KILLED,
    KILLED_REASON,
    PEND,
    RUN,
    SUSPENDED,
    Job,
    element_id,
    label,
    split_id,
)

if TYPE_CHECKING:  # core imports this module
    from roles.mbatchd.core import TurnOutput

MAX_LINE = 64 << 10
_LIMIT = re.compile(r"^(.*)%([1-9][0-9]*)$")  # --each-line -J NAME%LIMIT


def check_array(
    spec: dict[str, Any],
) -> tuple[str, list[Range] | None, int, list[str] | None]:
    """(name, ranges, throttle, lines) of a submitted spec: ranges None for a plain job.
    `lines` (bsub --each-line) makes an array of one element per line."""
    try:
        name, ranges, throttle = parse_name(spec.get("name") or "")
    except ArrayError as exc:
        raise P.ProtocolError(P.BAD_REQUEST, str(exc)) from None
    lines = spec.get("lines")
    if lines is None:
        return name, ranges, throttle, None
    if (
        not isinstance(lines, list)
        or not lines
        or len(lines) > MAX_ELEMENTS
        or not all(isinstance(x, str) and len(x) <= MAX_LINE and "\0" not in x for x in lines)
    ):
        raise P.ProtocolError(
            P.BAD_REQUEST,
            f"lines must be 1..{MAX_ELEMENTS} strings of at most {MAX_LINE} bytes, without NUL",
        )  # $LSB_JOBLINE
    if ranges is not None:
        raise P.ProtocolError(
            P.BAD_REQUEST,
            "--each-line makes the array: give -J NAME or -J NAME%LIMIT, without [INDICES]",
        )
    m = _LIMIT.match(spec.get("name") or "")
    if m is None:
        return name, [(1, len(lines), 1)], 0, lines
    try:
        throttle = parse_throttle(m.group(2))
    except ArrayError as exc:
        raise P.ProtocolError(P.BAD_REQUEST, str(exc)) from None
    return m.group(1), [(1, len(lines), 1)], throttle, lines


class ArrayOps:
    """Mixed into Core: uses its jobs, arrays, _move, _enqueue, _dirty, _kill, _finish."""

    # Core's state, declared for the checker (Core.__init__ sets it)
    jobs: dict[int, Job]
    arrays: dict[int, Array]
    npend: dict[str, int]
    waiters: dict[int, list[tuple[str, Any]]]
    finished: deque[tuple[float, int]]
    touched: set[tuple[str, str]]
    out: "TurnOutput"
    wake: bool

    if TYPE_CHECKING:  # Core's methods these call

        def _kill(self, job: Job, now: float) -> dict[str, Any]: ...
        def _env_unref(self, job: Job | Array) -> None: ...
        def pending_reason(self, job: Job | Array, now: float) -> str: ...
        def _depend_array_ended(self, arr: Array, now: float) -> None: ...
        def _quota_dropped(self, arr: Array) -> None: ...

    def _element(self, arr: Array, index: int) -> Job:
        """Make element `index` of `arr` a Job (PEND) in memory."""
        job = Job(
            element_id(arr.id, index),
            arr.user,
            arr.uid,
            arr.queue,
            arr.name,
            arr.spec,
            slots=arr.slots,
            max_attempts=arr.max_attempts,
            submit_time=arr.submit_time,
        )
        job.array = arr
        job.needs = arr.needs
        arr.counts[PEND] += 1
        arr.live.add(index)
        self.jobs[job.id] = job
        self.npend[arr.queue] = self.npend.get(arr.queue, 0) + 1
        self.out.arrays[arr.id] = arr
        return job

    def _array_kill(self, arr: Array, now: float) -> dict[str, Any]:
        """bkill ARRAY: indices not handed out end at once (no element rows: the array row
        says killed); elements pending or running are killed as jobs."""
        if arr.finished:
            return {
                "job": arr.id,
                "ok": False,
                "code": "finished",
                "message": f"Job <{arr.id}>: Job has already finished",
            }
        self._quota_dropped(arr)
        arr.killed = True
        self.wake = True  # its FIFO entry held the jobs behind it
        self.out.arrays[arr.id] = arr
        self.touched.add((arr.queue, arr.user))  # its FIFO entry is stale now
        for index in sorted(arr.live):
            self._kill(self.jobs[element_id(arr.id, index)], now)
        self._array_check_end(arr, now)
        return {"job": arr.id, "ok": True, "message": f"Job <{arr.id}> is being terminated"}

    def _elements_of(self, arr: Array) -> list[Job]:
        """The elements of `arr` in memory (handed out: pending, running or finished), by a
        pass over the jobs: for a user's request on one array, never for a turn."""
        first, last = element_id(arr.id, 0), element_id(arr.id + 1, 0)
        return [j for j in self.jobs.values() if first <= j.id < last]

    def _index_array(self, job_id: int) -> Array | None:
        """The array in memory that `job_id` is an index of, started or not."""
        array_id, index = split_id(job_id)
        arr = self.arrays.get(array_id) if array_id else None
        return arr if arr is not None and arr.position(index) is not None else None

    def _pending_index(self, job_id: int) -> Array | None:
        """The array of element `job_id` if that index is not handed out yet, else None."""
        arr = self._index_array(job_id)
        if arr is None or arr.killed:
            return None
        index = split_id(job_id)[1]
        position = arr.position(index)
        if position is None or position < arr.cursor or index in arr.skip:
            return None  # handed out already
        return arr

    def _element_out_of_turn(self, arr: Array, job_id: int) -> Job:
        """Make a pending index an element now (to kill it alone); the cursor passes it later."""
        index = split_id(job_id)[1]
        arr.skip.add(index)
        return self._element(arr, index)

    def _element_changed(self, arr: Array, job: Job, old: str, new: str, now: float) -> None:
        """Keep the counts of `arr`, the array of `job`; called by Core._move for elements."""
        arr.counts[_counted(old)] -= 1
        arr.counts[_counted(new)] += 1
        if new in FINISHED:
            arr.live.discard(split_id(job.id)[1])
        else:  # pending, held, running, stopped, or a finished one requeued (brequeue -H too)
            arr.live.add(split_id(job.id)[1])
        self.out.arrays[arr.id] = arr
        if new in FINISHED:
            self._array_check_end(arr, now)

    def _array_check_end(self, arr: Array, now: float) -> None:
        if arr.finished and arr.end_time is None:
            arr.end_time = now
            self.out.arrays[arr.id] = arr
            self.finished.append((now, arr.id))
            self._env_unref(arr)
            self._fire(arr.id)
            self._depend_array_ended(arr, now)
            for job_id in [k for k in self.waiters if split_id(k)[0] == arr.id]:
                self._fire(job_id)  # waits on indices that ended with it, never started

    def _index_view(self, arr: Array, state: str, ranges: str, now: float) -> dict[str, Any]:
        return {
            "array": arr.id,
            "indices": ranges,
            "user": arr.user,
            "queue": arr.queue,
            "name": arr.name,
            "state": state,
            "stat": state,
            "from_host": arr.spec.get("from_host"),
            "exec_host": None,
            "submit_time": arr.submit_time,
            "reason": KILLED_REASON if state == KILLED else "",
            "pend_reason": self.pending_reason(arr, now) if state == PEND else None,
        }

    # --- bwait

    def wait(
        self,
        ident: dict[str, Any],
        msg: Wait,
        token: Any,
        lookup: Callable[[int], Job | None],
    ) -> dict[str, Any] | None:
        """bwait -w 'done(ID)' | 'ended(ID)': the reply now if the condition holds (or never
        can), else None and the request waits; `token` comes back in self.out.woken when it ends.
        lookup(job_id): a job no longer in memory (ended before clean_period), from the store."""
        cond = P.require(msg, "cond", str)
        job_id = P.require(msg, "job", int)
        if cond not in ("done", "ended"):
            raise P.ProtocolError(P.BAD_REQUEST, "cond must be done or ended")
        if self._target(job_id) is None and self._index_array(job_id) is None:
            old = lookup(job_id)
            if old is None:
                raise P.ProtocolError(P.NOT_FOUND, f"Job <{label(job_id)}>: No matching job found")
            result = _condition(job_id, cond, old.state in FINISHED, old.state == DONE)
        else:
            result = self._wait_result(job_id, cond)
        if isinstance(result, P.ProtocolError):
            raise result
        if result is not None:
            return result
        self.waiters.setdefault(job_id, []).append((cond, token))
        return None

    def _target(self, job_id: int) -> Job | Array | None:
        return self.jobs.get(job_id) or self.arrays.get(job_id)

    def _wait_result(self, job_id: int, cond: str) -> dict[str, Any] | P.ProtocolError | None:
        """{"ok"...} when the condition holds, a ProtocolError when it never will, else None."""
        target = self._target(job_id)
        if target is None:  # an index not started: it ends unstarted with its array
            arr = self._index_array(job_id)
            assert arr is not None  # wait() took only a job, an array or one of its indices
            ended, done = arr.finished, False
        elif isinstance(target, Array):
            ended = target.finished
            done = ended and target.counts[DONE] == target.total
        else:
            ended = target.state in FINISHED
            done = target.state == DONE
        return _condition(job_id, cond, ended, done)

    def _fire(self, job_id: int) -> None:
        for cond, token in self.waiters.pop(job_id, ()):
            self.out.woken.append((token, self._wait_result(job_id, cond)))


def _condition(
    job_id: int, cond: str, ended: bool, done: bool
) -> dict[str, Any] | P.ProtocolError | None:
    if cond == "done" and ended and not done:
        return P.ProtocolError(
            "never",
            f"Wait condition done({label(job_id)}) is never satisfied: "
            "the job ended without success",
        )
    return {"job": job_id, "cond": cond} if ended else None


def _counted(state: str) -> str:
    """An array counts its suspended elements as running: they hold their slots (LSF)."""
    return RUN if state in SUSPENDED else state
