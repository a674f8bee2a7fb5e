"""mbatchd's job dependencies (bsub -w) and held jobs (bsub -H, bresume).

A job (or array) whose condition does not hold yet is PEND but in no FIFO: the scheduler never
sees it. Its condition is a tree of nodes; each leaf (`_Cond`) watches one job, element or
array, and `index` maps that target to the leaves watching it. When a target changes state
(Core._move, an array's end) only its leaves are evaluated again, and a change climbs the tree
through counts kept in each `_Group`: a turn costs nothing for the jobs waiting, and an end
costs what depends on it (a 10,000-to-1 fan-in is one count per end, not 10,000 tests).

Each node's status says whether it holds now and whether that can still change (a finished
job never changes): a condition that is false for good keeps its job pending with LSF's
"never satisfied" reason (LSF kills such jobs only when the site asks).
"""

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from lavalite import depend
from lavalite import protocol as P
from lavalite.job_array import Array, Range
from lavalite.messages import Resume
from lavalite.model import (
    DONE,
    FAILED,
    FINISHED,
    KILLED,
    PEND,
    PR_DEPEND,
    PR_DEPEND_NEVER,
    PR_HELD,
    PSUSP,
    RUN,
    SSUSP,
    SUSPENDED,
    USUSP,
    Job,
    element_id,
    label,
    split_id,
)

if TYPE_CHECKING:  # core imports this module
    from roles.mbatchd.core import TurnOutput

# A node's status: bit 0 whether it holds now, bit 1 whether that is final.
F, T, FF, FT = 0, 1, 2, 3
_NEGATE = {F: T, T: F, FF: FT, FT: FF}
EXITED = (FAILED, KILLED)  # LSF's EXIT
STARTED = (RUN, USUSP, SSUSP, DONE, FAILED, KILLED)
RESUMED = "resumed"  # the event reason of PSUSP -> PEND


class _Group:
    """&&, || or ! over children, with counts of their statuses."""

    __slots__ = ("kind", "parent", "owner", "size", "true", "final_true", "final_false", "status")

    def __init__(self, kind: str, size: int) -> None:
        self.kind, self.size = kind, size
        self.parent: _Group | None = None
        self.owner = 0  # the dependent's id, on the root
        self.true = self.final_true = self.final_false = 0
        self.status = F

    def count(self, status: int, sign: int) -> None:
        self.true += sign * (status & 1)
        self.final_true += sign * (status == FT)
        self.final_false += sign * (status == FF)

    def evaluate(self) -> int:
        if self.kind == "and":
            if self.final_false:
                return FF
            if self.final_true == self.size:
                return FT
            return T if self.true == self.size else F
        if self.kind == "or":
            if self.final_true:
                return FT
            if self.final_false == self.size:
                return FF
            return T if self.true else F
        # not: one child
        if self.final_false:
            return FT
        if self.final_true:
            return FF
        return F if self.true else T


class _Cond:
    """One condition on one target: a job or element (`whole` False), or a whole array."""

    __slots__ = ("kind", "target", "whole", "op", "number", "parent", "owner", "status")

    def __init__(self, kind: str, target: int, whole: bool, op: str | None, number: int | None):
        self.kind, self.target, self.whole, self.op, self.number = kind, target, whole, op, number
        self.parent: _Group | None = None
        self.owner = 0
        self.status = F


_Node = _Group | _Cond


class DependOps:
    """Mixed into Core: uses its jobs, arrays, _move, _enqueue, _dirty, _may_act_on."""

    jobs: dict[int, Job]
    arrays: dict[int, Array]
    out: "TurnOutput"

    if TYPE_CHECKING:  # Core's methods these call

        def _move(self, job: Job, new: str, now: float, reason: str = "") -> None: ...
        def _enqueue(self, job: Job | Array) -> None: ...
        def _admit(self, obj: Job | Array, now: float) -> None: ...
        def _dirty(self, job: Job, event: Any = None) -> None: ...
        def _may_act_on(self, ident: dict[str, Any], job: Job | Array) -> bool: ...
        def _target(self, job_id: int) -> Job | Array | None: ...
        def _pend_loaded(self, job: Job | Array, now: float, watched: bool = False) -> None: ...
        def _index_array(self, job_id: int) -> Array | None: ...
        def _resume_one_running(
            self, ident: dict[str, Any], job: Job, now: float
        ) -> dict[str, Any]: ...

    def _init_depend(self) -> None:
        self.depend_index: dict[int, list[_Cond]] = {}  # target id -> the leaves watching it
        # target id -> leaves false for good (done(X) of an EXIT X): a brequeue of X reopens them
        self.depend_final: dict[int, list[_Cond]] = {}
        self.depend_waiting: dict[int, _Node] = {}  # dependent id -> its condition's root
        self.depend_elements: dict[int, set[int]] = {}  # array id -> element targets watched
        self.depend_loaded: list[Job | Array] = []  # read from the store, for watch_loaded
        # the store's record of a job or array gone from memory (set by the shell)
        self.load_job: Callable[[int], Job | None] = lambda job_id: None
        self.load_array: Callable[[int], dict[str, Any] | None] = lambda array_id: None

    # --- submit

    def _check_depend(
        self, spec: dict[str, Any], user: str
    ) -> tuple[dict[str, Any], depend.Node | None]:
        """The spec's depend (-w, resolved to job ids) and hold (-H) as stored, and the
        condition's tree for _depend_admit; changes nothing. A name or id of no job is refused, as
        LSF refuses it."""
        out: dict[str, Any] = {}
        if spec.get("hold"):
            if "[" in (spec.get("name") or "") or spec.get("lines") is not None:
                raise P.ProtocolError(
                    P.BAD_REQUEST, "-H: holding a job array is not supported; hold its jobs"
                )
            out["hold"] = True
        text = spec.get("depend")
        if text is None:
            return out, None
        try:
            tree = depend.resolve(depend.parse(text), lambda name: self._named(name, user))
            for cond in depend.conditions(tree):
                self._check_condition(cond)
        except depend.DependError as exc:
            raise P.ProtocolError(P.BAD_REQUEST, str(exc)) from None
        out["depend"] = depend.format(tree)
        return out, tree

    def _named(self, name: str, user: str) -> list[int]:
        """The ids of `user`'s jobs and arrays named `name` (`prefix*`: whose name starts so)
        that mbatchd has in memory (unfinished, or finished within clean_period)."""
        prefix = name[:-1] if name.endswith("*") else None

        def named(job: Job | Array) -> bool:
            if job.user != user:
                return False
            return job.name.startswith(prefix) if prefix is not None else job.name == name

        found = [a.id for a in self.arrays.values() if named(a)]
        found += [j.id for j in self.jobs.values() if j.array is None and named(j)]
        if not found:
            raise _no_such_job(name)
        return sorted(found)

    def _check_condition(self, cond: depend.Node) -> None:
        """A resolved condition names jobs that exist; num*() and a whole array's exit() with
        a code take an array."""
        _, kind, (_, job_id, ranges), op, _ = cond
        arr = self._whole_array(job_id)
        if ranges is not None:
            if arr is None:
                raise _no_such_job(f"{job_id}[]")
            for index in _indices(ranges):
                if arr.position(index) is None:
                    raise _no_such_job(f"{job_id}[{index}]")
        elif arr is None and self._state_of(job_id) is None:
            raise _no_such_job(label(job_id))
        is_array = ranges is None and arr is not None
        if kind in depend.COUNT_CONDITIONS and not is_array:
            raise depend.DependError(f"-w: {kind}(): job <{label(job_id)}> is no job array")
        if kind == "exit" and op is not None and is_array:
            raise depend.DependError(
                f"-w: exit({job_id}, code): test the exit codes of its elements "
                f"({job_id}[1-10]), or exit({job_id}) for all of them"
            )

    # --- the watch: build, fire, release

    def _depend_admit(self, job: Job | Array, now: float, tree: depend.Node | None) -> bool:
        """A new job or array: held (-H: PSUSP), or waiting on its condition (`tree`, from
        _check_depend), or neither (False: the caller puts it in its FIFO)."""
        waits = tree is not None and self._watch(job, tree)
        if job.spec.get("hold"):
            assert isinstance(job, Job)  # _check_depend refuses a held array
            self._move(job, PSUSP, now, "held (-H)")
            return True
        return waits

    def watch_loaded(
        self,
        load_job: Callable[[int], Job | None],
        load_array: Callable[[int], dict[str, Any] | None],
        now: float,
    ) -> None:
        """After a restart: the conditions of the pending jobs and arrays read from the store,
        indexed again (`load_*` read what is gone from memory); those that hold go back to
        their FIFO (Core._pend_loaded)."""
        self.load_job, self.load_array = load_job, load_array
        loaded, self.depend_loaded = self.depend_loaded, []
        for job in loaded:
            if not self._watch(job) and job.state == PEND:
                self._pend_loaded(job, now, watched=True)

    def _watch(self, job: Job | Array, tree: depend.Node | None = None) -> bool:
        """Index the condition of `job` (its spec's, unless given) if it has one; True while
        it does not hold."""
        if tree is None:
            text = job.spec.get("depend")
            if text is None:
                return False
            tree = depend.parse(text, resolved=True)
        root = self._build(tree, job.id)
        if root.status & 1:
            return False
        self.depend_waiting[job.id] = root
        return True

    def _build(self, tree: depend.Node, owner: int) -> _Node:
        kind = tree[0]
        if kind == "cond":
            node = self._leaf(tree, owner)
        else:
            children = [self._build(x, owner) for x in (tree[1] if kind != "not" else [tree[1]])]
            node = _Group(kind, len(children))
            for child in children:
                child.parent = node
                node.count(child.status, +1)
            node.status = node.evaluate()
        node.owner = owner
        return node

    def _leaf(self, tree: depend.Node, owner: int) -> _Node:
        _, kind, (_, job_id, ranges), op, number = tree
        if ranges is None:
            return self._cond(kind, job_id, op, number, owner)
        # ID[range]: each element must satisfy the test (LSF), one leaf per element
        leaves = [
            ("cond", kind, ("id", element_id(job_id, i), None), op, number)
            for i in _indices(ranges)
        ]
        return self._build(("and", leaves), owner)

    def _cond(
        self, kind: str, job_id: int, op: str | None, number: int | None, owner: int
    ) -> _Cond:
        whole = self._whole_array(job_id) is not None
        leaf = _Cond(kind, job_id, whole, op, number)
        leaf.owner = owner
        leaf.status = self._status(leaf)
        self._index_leaf(leaf)
        return leaf

    def _index_leaf(self, leaf: _Cond) -> None:
        """Watch a leaf that may still change; keep one false for good where a brequeue of
        its target finds it (a leaf true for good needs neither: it stays satisfied)."""
        if leaf.status == FF:
            self.depend_final.setdefault(leaf.target, []).append(leaf)
        elif not leaf.status & 2:
            self.depend_index.setdefault(leaf.target, []).append(leaf)
            array_id = split_id(leaf.target)[0]
            if array_id:
                self.depend_elements.setdefault(array_id, set()).add(leaf.target)

    def _depend_moved(self, job: Job, now: float) -> None:
        """Core._move's hook: a job (or element) changed state."""
        if not self.depend_index:
            return
        self._depend_fire(job.id, now)
        if job.array is not None:
            self._depend_fire(job.array.id, now)

    def _depend_array_ended(self, arr: Array, now: float) -> None:
        """An array ended: its whole-array leaves, and the leaves of its indices that ended
        with it without ever starting (bkill of the array)."""
        self._forget_depend(arr.id)
        self._depend_fire(arr.id, now)
        for job_id in self.depend_elements.pop(arr.id, ()):
            self._depend_fire(job_id, now)

    def _depend_fire(self, target: int, now: float) -> None:
        leaves = self.depend_index.get(target)
        if not leaves:
            return
        keep = []
        for leaf in leaves:
            if leaf.owner not in self.depend_waiting:
                continue  # released, killed or forgotten meanwhile
            self._set(leaf, self._status(leaf), now)
            if not leaf.status & 2:
                keep.append(leaf)
            elif leaf.status == FF:
                self.depend_final.setdefault(target, []).append(leaf)
        if keep:
            self.depend_index[target] = keep
        else:
            del self.depend_index[target]

    def _depend_reopen(self, target: int, now: float) -> None:
        """`target` (a job, an element or an array) was requeued after it ended: the
        conditions it made false for good (done(X) of an EXIT X) of jobs still waiting can
        hold again, as LSF evaluates a condition on the job's state now."""
        for leaf in self.depend_final.pop(target, ()):
            if leaf.owner in self.depend_waiting:
                self._set(leaf, self._status(leaf), now)
                self._index_leaf(leaf)

    def _set(self, node: _Node, status: int, now: float) -> None:
        """A node's new status, carried up the tree while it changes anything."""
        while node.status != status:
            old, node.status = node.status, status
            parent = node.parent
            if parent is None:
                # bmod -w gives a job a new tree: the old one's root is not its own any more
                if status & 1 and self.depend_waiting.get(node.owner) is node:
                    self._depend_release(node.owner, now)
                return
            parent.count(old, -1)
            parent.count(status, +1)
            node, status = parent, parent.evaluate()

    def _depend_release(self, owner: int, now: float) -> None:
        """The condition of `owner` holds: it joins its FIFO, unless held (-H)."""
        self.depend_waiting.pop(owner, None)
        job = self.jobs.get(owner) or self.arrays.get(owner)
        if job is not None and job.state == PEND:
            self._enter_fifo(job, now)

    def _enter_fifo(self, job: Job | Array, now: float) -> None:
        """A job (or array) no condition or hold keeps any longer joins its FIFO (or waits for
        its begin time, -b), eligible from now: its scheduling latency counts from here."""
        job.eligible_time = now
        self._admit(job, now)
        if isinstance(job, Array):
            self.out.arrays[job.id] = job
        else:
            self._dirty(job)  # its pend_seq

    def _forget_depend(self, owner: int) -> None:
        """A dependent ended or was forgotten: its leaves are skipped, then dropped."""
        self.depend_waiting.pop(owner, None)

    # --- a target's state

    def _status(self, leaf: _Cond) -> int:
        if leaf.whole:
            arr = self._whole_array(leaf.target)
            return FF if arr is None else _array_status(leaf, arr)
        state_code = self._state_of(leaf.target)
        if state_code is None:  # checked at submit, and the store keeps every job: no store?
            return FF
        state, code = state_code
        kind = leaf.kind
        final = 2 if state in FINISHED else 0
        if kind == "done":
            holds = state == DONE
        elif kind == "ended":
            holds = state in FINISHED
        elif kind == "started":
            holds = state in STARTED
        else:  # exit
            holds = state in EXITED and (
                leaf.op is None or code is not None and depend.compare(code, leaf.op, leaf.number)  # type: ignore[arg-type]
            )
        return final | int(holds)

    def _state_of(self, job_id: int) -> tuple[str, int | None] | None:
        """(state, exit code) of a job or array element, from memory or the store; None for
        no such job. An index not handed out is PEND, or KILLED if its array was killed."""
        job = self.jobs.get(job_id)
        array_id, index = split_id(job_id)
        if job is None and array_id:
            arr = self._whole_array(array_id)
            position = arr.position(index) if arr is not None else None
            if arr is None or position is None:
                return None
            if position >= arr.cursor and index not in arr.skip:
                return (KILLED if arr.killed else PEND), None
        if job is None:
            job = self.load_job(job_id)
        if job is None:
            return None
        code = job.exit_code
        if code is None and job.exit_signal is not None:
            code = 128 + job.exit_signal  # as a shell reports it
        return job.state, code

    def _whole_array(self, array_id: int) -> Array | None:
        """The array `array_id` from memory or the store; None if it is no array (a job in
        memory, an element: jobs and arrays take their ids from one counter)."""
        if split_id(array_id)[0] or array_id in self.jobs:
            return None
        arr = self.arrays.get(array_id)
        if arr is None:
            rec = self.load_array(array_id)
            arr = Array.from_record(rec) if rec is not None else None
        return arr

    # --- the pending reason, bresume

    def depend_reason(self, job: Job | Array) -> str | None:
        """Why a job waits on -H or its condition, or None."""
        if job.state == PSUSP:
            return PR_HELD
        root = self.depend_waiting.get(job.id)
        if root is None:
            return None
        return PR_DEPEND_NEVER if root.status == FF else PR_DEPEND

    def resume(self, ident: dict[str, Any], msg: Resume, now: float) -> dict[str, Any]:
        """bresume: held jobs (PSUSP) go back to PEND, and to their FIFO unless their
        condition still waits."""
        return {"results": [self._resume_one(ident, job_id, now) for job_id in P.job_ids(msg)]}

    def _resume_one(self, ident: dict[str, Any], job_id: int, now: float) -> dict[str, Any]:
        job = self._target(job_id)
        name = label(job_id)
        if job is None:
            return _result(job_id, P.NOT_FOUND, f"Job <{name}>: No matching job found")
        if not self._may_act_on(ident, job):
            return _result(job_id, P.DENIED, f"Job <{name}>: User permission denied")
        if job.state in FINISHED:
            return _result(job_id, "finished", f"Job <{name}>: Job has already finished")
        if isinstance(job, Job) and job.state in SUSPENDED:  # running: roles/mbatchd/suspend.py
            return self._resume_one_running(ident, job, now)
        if isinstance(job, Array) or job.state != PSUSP:
            return _result(job_id, "not_suspended", f"Job <{name}>: Job is not suspended")
        self._move(job, PEND, now, RESUMED)
        # a job held by brequeue -H waits out its old attempt's kill_grace (the backoff heap
        # holds it until then), as a retry waits out its backoff
        if job.id not in self.depend_waiting and job.eligible_time <= now:
            self._enter_fifo(job, now)
        return {"job": job_id, "ok": True, "message": f"Job <{name}> is being resumed"}


def _no_such_job(job: str) -> depend.DependError:
    """LSF's refusal of a dependency on a job it cannot find (bsub -w)."""
    return depend.DependError(f"{job}: No matching job found. Job not submitted.")


def _indices(ranges: list[Range]) -> Iterator[int]:
    for first, last, step in ranges:
        yield from range(first, last + 1, step)


def _result(job_id: int, code: str, message: str) -> dict[str, Any]:
    return {"job": job_id, "ok": False, "code": code, "message": message}


def _array_status(leaf: _Cond, arr: Array) -> int:
    """A whole array: each element must satisfy done/ended/exit/started (LSF); num*() count."""
    c = arr.counts
    never = arr.total - arr.cursor - len(arr.skip) if arr.killed else 0
    exited = c[FAILED] + c[KILLED] + never
    ended = c[DONE] + exited
    final = 2 if arr.finished else 0
    kind = leaf.kind
    if kind == "done":
        if exited:
            return FF
        return FT if c[DONE] == arr.total else F
    if kind == "ended":
        return final | int(ended == arr.total)
    if kind == "exit":
        if c[DONE]:
            return FF
        return final | int(exited == arr.total)
    if kind == "started":
        return final | int(c[RUN] + ended == arr.total)
    count = {
        "numdone": c[DONE],
        "numended": ended,
        "numexit": exited,
        "numpend": c[PEND] + arr.remaining,
        "numrun": c[RUN],
        "numstart": c[RUN] + ended,
    }[kind]
    number = arr.total if leaf.number is None else leaf.number
    return final | int(depend.compare(count, leaf.op or "==", number))
