"""bmod of job arrays (LSF 10.1): `bmod [options] ARRAY_ID` and `bmod [options] "ID[1-3,7]"`.

A whole array's change is made once to its spec (`arr.spec`, stored in its arrays row), which
the indices not handed out take when they become elements, and to every element already made
that is not finished: a pending one as a pending job's bmod changes it, a running or stopped
one only in what bmod changes of a running job (-W, -M: a `limits` order to its hosts).
`-J NAME` renames the array and its elements, `-J "%N"` (or `-J "NAME%N"`) changes its throttle;
its index list never changes. An index list (or one `ID[INDEX]`) makes the indices not handed
out elements now, as bkill of one index does, then changes each element as a job; it takes
neither -J nor -q (an element's name, limit and queue are its array's).

Everything is checked first (submit's checks, then the quotas for all the new estimates at
once) and applied after: one refusal changes nothing.
"""

from typing import TYPE_CHECKING, Any

from lavalite import jobspec
from lavalite import protocol as P
from lavalite.job_array import Array, ArrayError, parse_new_name, parse_ranges
from lavalite.model import FINISHED, STARTED, WAITING, Job, element_id, label, split_id
from roles.mbatchd.modify import RUNNING_FIELDS, PendingChange, _not_modified, new_spec

if TYPE_CHECKING:  # core imports this module
    from roles.mbatchd.core import TurnOutput


class ArrayModifyOps:
    """Mixed into Core (roles/mbatchd/core.py) beside ModifyOps, whose steps it uses."""

    jobs: dict[int, Job]
    arrays: dict[int, Array]
    touched: set[tuple[str, str]]
    out: "TurnOutput"
    wake: bool

    if TYPE_CHECKING:  # Core's methods these call

        def _may_act_on(self, ident: dict[str, Any], job: Job | Array) -> bool: ...
        def _elements_of(self, arr: Array) -> list[Job]: ...
        def _pending_index(self, job_id: int) -> Array | None: ...
        def _element_out_of_turn(self, arr: Array, job_id: int) -> Job: ...
        def _pending_change(
            self, job: Job | Array, changes: dict[str, Any], resets: list[str]
        ) -> PendingChange: ...
        def _apply_pending(
            self,
            job: Job,
            change: PendingChange,
            changes: dict[str, Any],
            resets: list[str],
            now: float,
        ) -> None: ...
        def _running_spec(self, job: Job, changes: dict[str, Any], resets: list[str]) -> dict: ...
        def _apply_running(
            self, job: Job, spec: dict, changes: dict[str, Any], resets: list[str], now: float
        ) -> None: ...
        def _record(
            self, job: Job, changes: dict[str, Any], resets: list[str], now: float
        ) -> None: ...
        def _wait_again(
            self,
            job: Job | Array,
            tree: Any,
            unwatched: bool,
            old_begin: float | None,
            now: float,
        ) -> None: ...
        def _quota_count(self, job: Job | Array, sign: int, count: int | None = None) -> None: ...
        def _quota_readmit(
            self, changed: list[tuple[Job | Array, dict, int]], now: float
        ) -> None: ...

    def _modified_array(self, job_id: int) -> Array | None:
        """The array in memory that bmod of `job_id` changes: the array, or an element's."""
        return self.arrays.get(split_id(job_id)[0] or job_id)

    def _modify_array(
        self,
        ident: dict[str, Any],
        arr: Array | None,
        job_id: int,
        indices: object,
        changes: dict[str, Any],
        resets: list[str],
        now: float,
    ) -> dict[str, Any]:
        """bmod of array `arr` whole (`job_id` is its id, no `indices`), of its `indices`
        ("1-3,7") or of the one element `job_id`; `arr` None: `job_id` is no array in memory."""
        if arr is None:
            raise P.ProtocolError(
                P.NOT_FOUND, f"Job <{label(job_id)}[{indices}]>: No matching job found"
            )
        if not self._may_act_on(ident, arr):
            raise P.ProtocolError(P.DENIED, f"Job <{label(job_id)}>: User permission denied")
        if job_id == arr.id and indices is None:
            self._modify_whole(arr, changes, resets, now)
            return {"message": f"Parameters of job <{arr.id}> are being changed"}
        picked = _picked(arr, job_id, indices)
        self._modify_indices(arr, picked, changes, resets, now)
        shown = label(job_id) if indices is None else f"{arr.id}[{indices}]"
        return {"message": f"Parameters of job <{shown}> are being changed"}

    # --- the whole array

    def _modify_whole(
        self, arr: Array, changes: dict[str, Any], resets: list[str], now: float
    ) -> None:
        if arr.finished:
            raise P.ProtocolError(P.WRONG_STATE, f"Job <{arr.id}>: Job has already finished")
        name, throttle = _new_name(changes, resets)
        changes = {k: v for k, v in changes.items() if k != "name"}
        live = [j for j in self._elements_of(arr) if j.state not in FINISHED]
        running_changes = {k: v for k, v in changes.items() if k in RUNNING_FIELDS}
        running_resets = [f for f in resets if f in RUNNING_FIELDS]
        # checked, all of it, before anything changes
        arr_change = pending = running = None
        if changes or resets:
            arr_change = self._pending_change(arr, changes, resets)
            pending = [
                (j, self._pending_change(j, changes, resets)) for j in live if j.state in WAITING
            ]
        if running_changes or running_resets:
            running = [
                (j, self._running_spec(j, running_changes, running_resets))
                for j in live
                if j.state in STARTED
            ]
        readmit: list[tuple[Job | Array, dict, int]] = [(j, c.prep, 1) for j, c in pending or ()]
        if arr_change is not None and arr.remaining:
            readmit.append((arr, arr_change.prep, arr.remaining))
        self._quota_readmit(readmit, now)  # the last refusal
        if arr_change is not None:
            self._apply_array(arr, arr_change, changes, resets, now)
        for job, change in pending or ():
            self._apply_pending(job, change, changes, resets, now)
        for job, spec in running or ():
            self._apply_running(job, spec, running_changes, running_resets, now)
        if name or throttle:
            self._rename(arr, live, name, throttle, now)

    def _apply_array(
        self,
        arr: Array,
        change: PendingChange,
        changes: dict[str, Any],
        resets: list[str],
        now: float,
    ) -> None:
        """The indices not handed out take the change: the array's spec (stored in its row),
        its queue and needs; it waits where its new needs put it, as a pending job."""
        old_begin = arr.spec.get("begin")
        self.touched.add((arr.queue, arr.user))  # its FIFO entry is stale from here
        arr.queue = change.queue
        arr.spec = new_spec(arr.spec, change, changes, resets)
        arr.slots, arr.needs = change.prep["slots"], change.prep["needs"]
        self._quota_count(arr, +1)
        self.out.array_specs[arr.id] = arr
        self.wake = True
        if arr.remaining:
            self._wait_again(arr, change.tree, "depend" in resets, old_begin, now)

    def _rename(self, arr: Array, live: list[Job], name: str, throttle: int, now: float) -> None:
        """-J: the array's new name (its elements' too) or throttle (%N: the scheduler reads
        it at its next turn)."""
        if throttle:
            arr.throttle = throttle
        if name:
            arr.name = name
            for job in live:
                job.name = name
                self._record(job, {"name": name}, [], now)
        self.out.array_specs[arr.id] = arr
        self.wake = True

    # --- an index list

    def _modify_indices(
        self, arr: Array, indices: list[int], changes: dict[str, Any], resets: list[str], now: float
    ) -> None:
        for field, what in (("name", "-J"), ("queue", "-q")):
            if field in changes or field in resets:
                raise P.ProtocolError(
                    P.WRONG_STATE,
                    f"Job <{arr.id}>: {what}: an array's elements keep their array's name, "
                    f"limit and queue (bmod {what} {arr.id} changes the array)",
                )
        elements, made = self._indexed(arr, indices, changes, resets)
        # checked, all of it, before anything changes
        pending = [
            (j, self._pending_change(j, changes, resets)) for j in elements if j.state in WAITING
        ]
        running = [
            (j, self._running_spec(j, changes, resets)) for j in elements if j.state in STARTED
        ]
        new = list(zip(made, self._changes(arr, made, changes, resets)))
        readmit: list[tuple[Job | Array, dict, int]] = [(j, c.prep, 1) for j, c in pending]
        readmit += [(arr, c.prep, 1) for _, c in new]
        self._quota_readmit(readmit, now)  # the last refusal
        for index, change in new:  # out of turn, as bkill of one index
            pending.append((self._element_out_of_turn(arr, element_id(arr.id, index)), change))
        for job, change in pending:
            self._apply_pending(job, change, changes, resets, now)
        for job, spec in running:
            self._apply_running(job, spec, changes, resets, now)

    def _changes(
        self, arr: Array, made: list[int], changes: dict[str, Any], resets: list[str]
    ) -> list[PendingChange]:
        """The change of each index not handed out: checked once (they share the array's
        spec), but a new -w condition is each element's own tree."""
        if not made or "depend" in changes:
            return [self._pending_change(arr, changes, resets) for _ in made]
        return [self._pending_change(arr, changes, resets)] * len(made)

    def _indexed(
        self, arr: Array, indices: list[int], changes: dict[str, Any], resets: list[str]
    ) -> tuple[list[Job], list[int]]:
        """(the elements of `indices` made already, the indices not handed out yet); refused
        (LSF's message for the first index that cannot change so)."""
        elements, made = [], []
        for index in indices:
            job_id = element_id(arr.id, index)
            job = self.jobs.get(job_id)
            if job is not None:
                why = _not_modified(job, changes, resets)
                if why:
                    raise P.ProtocolError(P.WRONG_STATE, f"Job <{label(job_id)}>: {why}")
                elements.append(job)
            elif self._pending_index(job_id) is not None:
                made.append(index)
            else:
                raise P.ProtocolError(P.NOT_FOUND, f"Job <{label(job_id)}>: No matching job found")
        return elements, made


def _picked(arr: Array, job_id: int, indices: object) -> list[int]:
    """The indices a request names: its element's, or its index list's."""
    if indices is None:
        return [split_id(job_id)[1]]
    if job_id != arr.id or not isinstance(indices, str):
        raise P.ProtocolError(P.BAD_REQUEST, "'indices' is an index list (1-3,7) of array 'job'")
    try:
        ranges = parse_ranges(indices)
    except ArrayError as exc:
        raise P.ProtocolError(P.BAD_REQUEST, str(exc)) from None
    return sorted({i for first, last, step in ranges for i in range(first, last + 1, step)})


def _new_name(changes: dict[str, Any], resets: list[str]) -> tuple[str, int]:
    """-J of a whole array: (its new name or '', its new throttle or 0)."""
    if "name" in resets:
        raise P.ProtocolError(P.BAD_REQUEST, "-Jn: a job array keeps a name")
    text = changes.get("name")
    if text is None:
        return "", 0
    try:
        name, throttle = parse_new_name(jobspec.text("name", text, jobspec.MAX_NAME))
    except (ArrayError, jobspec.SpecError) as exc:
        raise P.ProtocolError(P.BAD_REQUEST, str(exc)) from None
    return name, throttle
