"""bmod (LSF 10.1): a submitted job's options changed.

A pending job (PEND or PSUSP) may change what bsub set; the new spec is checked whole by
submit's own checks (`Core._checked`, `_check_depend`, bswitch's `_not_switched` for -q), so a
value bsub refuses is refused here, and nothing changes unless everything is accepted. The job
then waits where its new needs put it: its FIFO entry goes stale (a new pend_seq, or 0 while a
new -w condition waits), a new condition is indexed, a new begin time (-b) or termination time
(-t) is pushed on its heap (the old entries are skipped when popped). A running job may change
its run limit (-W) and memory limit (-M) only: its hosts get a `limits` order.

The new spec, name and slots are stored (TurnOutput.specs) with an event whose reason starts
with MODIFIED, which bhist shows as LSF does. Job arrays: roles/mbatchd/modify_array.py, which
uses the steps here (checked first, applied after).
"""

from typing import TYPE_CHECKING, Any, NamedTuple

from lavalite import jobspec
from lavalite import protocol as P
from lavalite.job_array import Array
from lavalite.messages import Modify
from lavalite.model import FINISHED, PEND, PSUSP, STARTED, WAITING, Event, Job, label
from roles.mbatchd.job_options import NOTIFY_EVENTS
from roles.mbatchd.placement import allocation

if TYPE_CHECKING:  # core imports this module
    from lavalite import depend
    from roles.mbatchd.core import TurnOutput

MODIFIED = "Parameters of Job are changed"  # bhist's words, the event's reason
RUNNING_FIELDS = frozenset(("walltime", "memory"))  # what bmod changes of a running job (-W, -M)
# stored fields that are no part of a submitted spec, kept as they are unless changed
_KEPT = ("env_id", "hold", "depend")
# the fields a reset (-Bn, -Nn) takes out of the notify list
_NOTIFY_RESETS = {f"notify_{event}": event for event in NOTIFY_EVENTS}


class ModifyOps:
    """Mixed into Core (roles/mbatchd/core.py), whose state and helpers it uses."""

    jobs: dict[int, Job]
    arrays: dict[int, Array]
    backoff: list[tuple[float, int]]
    depend_waiting: dict[int, Any]
    npend: dict[str, int]
    touched: set[tuple[str, str]]
    out: "TurnOutput"
    conf: Any
    wake: bool

    if TYPE_CHECKING:  # Core's methods these call

        def _checked(
            self, spec: dict, ident: dict[str, Any], known_env: tuple, in_queue: str | None
        ) -> dict: ...
        def _check_depend(
            self, spec: dict[str, Any], user: str
        ) -> tuple[dict[str, Any], "depend.Node | None"]: ...
        def _not_switched(self, job: Job, queue: str) -> str | None: ...
        def _controllable(
            self, ident: dict[str, Any], job_id: int, wrong_state: Any
        ) -> tuple[Job, dict[str, Any]] | tuple[None, dict[str, Any]]: ...
        def _watch(self, job: Job | Array, tree: "depend.Node | None" = None) -> bool: ...
        def _forget_depend(self, owner: int) -> None: ...
        def _enqueue(self, job: Job | Array) -> None: ...
        def _hold_until_begin(self, obj: Job | Array, now: float) -> bool: ...
        def _track_deadline(self, obj: Job | Array) -> None: ...
        def _dirty(self, job: Job, event: Any = None) -> None: ...
        def _send(self, host: str, msg: dict[str, Any]) -> None: ...
        def _quota_count(self, job: Job | Array, sign: int) -> None: ...
        def _quota_readmit(
            self, changed: list[tuple[Job | Array, dict, int]], now: float
        ) -> None: ...
        def _limit_count(self, job: Job, sign: int) -> None: ...
        def _modified_array(self, job_id: int) -> Array | None: ...
        def _modify_array(self, *args: Any) -> dict[str, Any]: ...  # modify_array.py

    def modify(self, ident: dict[str, Any], msg: Modify, now: float) -> dict[str, Any]:
        """bmod of one job, or of an array or its `indices` (roles/mbatchd/modify_array.py):
        `spec` holds the fields given, `reset` the fields set back to their defaults (-Wn, -Mn,
        ...). All are applied, or none (a ProtocolError says why)."""
        job_id = msg.get("job")
        changes, resets = msg.get("spec"), msg.get("reset") or []
        if (
            type(job_id) is not int
            or not isinstance(changes, dict)
            or not isinstance(resets, list)
            or not all(isinstance(f, str) for f in resets)
            or not (changes or resets)
        ):
            raise P.ProtocolError(
                P.BAD_REQUEST, "'modify' takes a job id, 'spec' and 'reset' (field names)"
            )
        arr = self._modified_array(job_id)
        if arr is not None or "indices" in msg:  # a whole array, an index list or one element
            return self._modify_array(ident, arr, job_id, msg.get("indices"), changes, resets, now)
        job, refusal = self._controllable(
            ident, job_id, lambda j: _not_modified(j, changes, resets)
        )
        if job is None:
            raise P.ProtocolError(refusal["code"], refusal["message"])
        if job.state in STARTED:  # running or stopped
            self._modify_running(job, changes, resets, now)
        else:
            self._modify_pending(job, changes, resets, now)
        return {"message": f"Parameters of job <{label(job_id)}> are being changed"}

    # --- a pending job

    def _modify_pending(
        self, job: Job, changes: dict[str, Any], resets: list[str], now: float
    ) -> None:
        change = self._pending_change(job, changes, resets)
        self._quota_readmit([(job, change.prep, 1)], now)  # the last refusal
        self._apply_pending(job, change, changes, resets, now)

    def _pending_change(
        self, job: Job | Array, changes: dict[str, Any], resets: list[str]
    ) -> "PendingChange":
        """The checked change of a pending job (or of an array's indices not handed out);
        refused (ProtocolError) as submit and bswitch refuse. Changes nothing."""
        queue = changes.get("queue") or (
            self.conf.mbatchd.default_queue if "queue" in resets else job.queue
        )
        prep, depend_fields, tree = self._checked_change(job, changes, resets, queue)
        if queue != job.queue and isinstance(job, Job) and job.array is None:
            why = self._not_switched(job, queue)  # bswitch's own checks (-q)
            if why:
                raise P.ProtocolError(P.WRONG_STATE, f"Job <{label(job.id)}>: {why}")
        return PendingChange(queue, prep, depend_fields, tree)

    def _apply_pending(
        self,
        job: Job,
        change: "PendingChange",
        changes: dict[str, Any],
        resets: list[str],
        now: float,
    ) -> None:
        """A checked change made the job's, after the quotas took its old estimate out."""
        old_begin = job.spec.get("begin")
        self.touched.add((job.queue, job.user))  # its FIFO entry is stale from here
        if change.queue != job.queue:
            self._change_queue(job, change.queue)
        job.spec = new_spec(job.spec, change, changes, resets)
        job.slots, job.needs = change.prep["slots"], change.prep["needs"]
        self._quota_count(job, +1)
        if "name" in changes or "name" in resets:
            job.name = change.prep["name"]
        self._record(job, changes, resets, now)
        self._wait_again(job, change.tree, "depend" in resets, old_begin, now)

    def _checked_change(
        self, job: Job | Array, changes: dict[str, Any], resets: list[str], queue: str
    ) -> tuple[dict, dict[str, Any], "depend.Node | None"]:
        """The job's spec with the changes, checked as submit checks a spec: (Core._checked's
        result, the stored -w fields, the new condition's tree or None). An array's spec (an
        element's too) keeps its --each-line lines, which _checked reads as the array they
        make."""
        spec = {k: v for k, v in job.spec.items() if k not in _KEPT and k not in resets}
        if "cmd" in changes:  # -Z: the new command runs, not the job script
            spec.pop("script", None)
        spec.update(changes)
        spec.update(queue=queue, slots=spec.get("slots", job.slots))
        if "slots" in resets:
            spec["slots"] = 1
        spec["retries"] = job.max_attempts - 1  # within the (new) queue's max_retries
        try:
            prep = self._checked(spec, {"user": job.user, "uid": job.uid}, (None,), job.queue)
            if prep["ranges"] is not None and job.array is None:
                raise jobspec.SpecError("-J: a job cannot be made a job array")
            if "depend" not in changes:
                return prep, {}, None
            depend_fields, tree = self._check_depend({"depend": changes["depend"]}, job.user)
        except jobspec.SpecError as exc:
            raise P.ProtocolError(P.BAD_REQUEST, str(exc)) from None
        return prep, depend_fields, tree

    def _change_queue(self, job: Job, queue: str) -> None:
        if job.state == PEND:
            self.npend[job.queue] -= 1
            self.npend[queue] = self.npend.get(queue, 0) + 1
        job.queue = queue
        self.touched.add((queue, job.user))

    def _wait_again(
        self,
        job: Job | Array,
        tree: "depend.Node | None",
        unwatched: bool,
        old_begin: float | None,
        now: float,
    ) -> None:
        """The modified job waits where its new needs put it: on its (new) condition, held
        (PSUSP: bresume admits it), until its begin time or the end of a retry backoff, or in
        its FIFO after the user's jobs of its priority (a new pend_seq: the old entry is stale,
        as after bswitch). `unwatched`: its condition was taken away (-wn)."""
        self._track_deadline(job)  # -t: an entry the job no longer has is skipped when popped
        if tree is not None or unwatched:
            self._forget_depend(job.id)  # the old condition's leaves are skipped from now
            job.pend_seq = 0  # not queued under this condition (a restart watches it again)
            if tree is not None and self._watch(job, tree):
                return
        elif job.id in self.depend_waiting:
            return
        if old_begin is not None and job.eligible_time == old_begin:
            job.eligible_time = now  # its old begin time holds it no longer
        if job.state == PSUSP or self._hold_until_begin(job, now):
            return
        if job.eligible_time > now:  # a retry backoff: its heap entry is still there
            return
        self._enqueue(job)

    def _record(self, job: Job, changes: dict[str, Any], resets: list[str], now: float) -> None:
        """Stored with the turn: the job's row, its spec, and the event bhist shows."""
        words = [f"{field} {_shown(value)}" for field, value in sorted(changes.items())]
        words += [f"{field} reset" for field in sorted(resets)]
        reason = f"{MODIFIED}: {'; '.join(words)}"
        event = Event(job.id, now, job.state, job.state, reason, job.host, job.attempt)
        self._dirty(job, event)
        self.out.specs[job.id] = job
        self.wake = True

    # --- a running job

    def _modify_running(
        self, job: Job, changes: dict[str, Any], resets: list[str], now: float
    ) -> None:
        self._apply_running(job, self._running_spec(job, changes, resets), changes, resets, now)

    def _running_spec(self, job: Job, changes: dict[str, Any], resets: list[str]) -> dict:
        """-W, -M (-Wn, -Mn) of a running job checked as submit checks them against its queue:
        its new spec. Changes nothing."""
        prep, _, _ = self._checked_change(job, changes, resets, job.queue)
        spec = dict(job.spec)
        for field in RUNNING_FIELDS:
            spec[field] = prep["spec"][field]
        return spec

    def _apply_running(
        self, job: Job, spec: dict, changes: dict[str, Any], resets: list[str], now: float
    ) -> None:
        """The new limits stored and ordered to the job's hosts, whose timer and cgroups
        follow."""
        self._quota_count(job, -1)
        self._limit_count(job, -1)  # -M: the memory its limits count
        job.spec = spec
        self._quota_count(job, +1)
        self._limit_count(job, +1)
        self._record(job, changes, resets, now)
        order = {
            "op": "limits",
            "job": job.id,
            "attempt": job.attempt,
            "walltime": spec["walltime"],
            "memory": spec["memory"],
        }
        for host, _ in allocation(job):
            self._send(host, order)


class PendingChange(NamedTuple):
    """A pending job's change as checked: its queue, Core._checked's result, the stored -w
    fields and the new condition's tree (None: unchanged)."""

    queue: str
    prep: dict
    depend_fields: dict[str, Any]
    tree: "depend.Node | None"


def new_spec(
    old: dict[str, Any], change: PendingChange, changes: dict[str, Any], resets: list[str]
) -> dict[str, Any]:
    """The stored spec a checked change makes of `old`."""
    spec = {k: old[k] for k in _KEPT if k in old}
    spec.update(change.prep["spec"])
    spec.update(change.depend_fields)
    if "depend" in resets:
        spec.pop("depend", None)
    spec["notify"] = _notify(old, changes, resets)
    if not spec["notify"]:
        del spec["notify"]
    return spec


def _not_modified(job: Job, changes: dict[str, Any], resets: list[str]) -> str | None:
    """LSF's reason bmod cannot change `job` so, or None."""
    if job.state in FINISHED:
        return "Job has already finished"
    if job.state in WAITING:
        return None
    others = sorted((set(changes) | set(resets)) - RUNNING_FIELDS)
    if job.state in STARTED and not others:
        return None
    return (
        f"Job has already started; of a running job bmod changes only -W and -M "
        f"(not {', '.join(others)})"
    )


def _notify(old: dict[str, Any], changes: dict[str, Any], resets: list[str]) -> list[str]:
    """-B, -N add their event to the job's notify list, -Bn, -Nn take it out."""
    events = set(old.get("notify") or ()) | set(changes.get("notify") or ())
    events -= {event for field, event in _NOTIFY_RESETS.items() if field in resets}
    return sorted(events)


def _shown(value: object) -> str:
    """A changed value as the event shows it, within a line."""
    text = value if isinstance(value, str) else P.dumps_sorted(value).decode()
    return text if len(text) <= 200 else text[:197] + "..."
