"""bjobs in pages: the `jobs` op answers at most `limit` jobs and a cursor (`next`) to ask for
the rest, so that `bjobs -u all` over a million jobs starts printing at once and neither
mbatchd nor the command holds the whole answer.

The order is (job or array id, array position): a job, then an array's elements in index
order, as ids were handed out. `Listing` keeps the ids of the jobs and arrays in memory sorted
(ids only grow, so a new one is appended), which lets a page start at its cursor in O(log n);
an id that leaves memory stays in it until half of it is stale, then it is compacted (O(1)
amortized per job). A page costs `limit` steps however many jobs are known: a job, a stale
id, an array skipped by the filters or an array position is one step.
"""

import bisect
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from lavalite import messages
from lavalite import protocol as P
from lavalite.job_array import Array, format_ranges, name_pattern
from lavalite.model import (
    ELEMENT_BITS,
    FINISHED,
    KILLED,
    MAX_INDEX,
    PEND,
    Job,
    element_id,
    label,
    split_id,
)

COMPACT_FLOOR = 1024  # stale ids tolerated whatever the listing's size


class Listing:
    """The ids of the plain jobs and arrays in memory, sorted, with stale ones left behind
    until compaction. `alive(id)` says whether an id is still in memory."""

    __slots__ = ("ids", "stale", "alive")

    def __init__(self, ids: list[int], alive: Callable[[int], bool]) -> None:
        self.ids = sorted(ids)
        self.stale = 0
        self.alive = alive

    def add(self, job_id: int) -> None:
        """A new job or array: ids only grow, so this is an append (an id below the last,
        never handed out twice, would still land in order)."""
        if not self.ids or self.ids[-1] < job_id:
            self.ids.append(job_id)
        else:
            bisect.insort(self.ids, job_id)

    def gone(self) -> None:
        """One id left memory: compact once the stale ones are half the list."""
        self.stale += 1
        if self.stale > COMPACT_FLOOR and self.stale * 2 > len(self.ids):
            self.ids = [i for i in self.ids if self.alive(i)]
            self.stale = 0

    def starting(self, first: int) -> Iterator[int]:
        """The ids from `first` on, in order (stale ones included: the caller skips them)."""
        for n in range(bisect.bisect_left(self.ids, first), len(self.ids)):
            yield self.ids[n]


def cursor(key: int, position: int) -> int:
    """The `next` of an answer: resume at `key` (a job or array id, or the n-th id asked for),
    at array position `position`."""
    return key << ELEMENT_BITS | position


def resume(after: int | None) -> tuple[int, int]:
    """(key, position) of a request's `after`; the start when there is none."""
    return (0, 0) if after is None else (after >> ELEMENT_BITS, after & MAX_INDEX)


class Page:
    """The jobs of one answer, and the steps it may still take."""

    __slots__ = ("views", "left", "states", "select")

    def __init__(self, limit: int | None, states: frozenset[str] | None, select: "Select") -> None:
        self.views: list[dict[str, Any]] = []
        self.left: float = math.inf if limit is None else limit  # no limit: the whole answer
        self.states = states
        self.select = select

    def full(self) -> bool:
        return self.left <= 0

    def step(self) -> None:
        self.left -= 1

    def add(self, view: dict[str, Any]) -> None:
        if self.select.view(view):
            self.views.append(view)

    def shows(self, state: str, finished: bool) -> bool:
        """Whether a job in `state` belongs in the answer (finished ones only if asked)."""
        if self.states is not None:
            return state in self.states
        return finished or state not in FINISHED


class Select:
    """bjobs' -J (an element is also named `arr[1]`), -P, -G and -m: what a job must be to be
    listed, besides its user, queue and state."""

    __slots__ = ("name", "project", "group", "host", "active")

    def __init__(self, msg: messages.Jobs) -> None:
        name = P.require(msg, "name", str, optional=True)
        self.name = name_pattern(name) if name else None
        self.project = P.require(msg, "project", str, optional=True)
        self.group = P.require(msg, "user_group", str, optional=True)
        self.host = P.require(msg, "host", str, optional=True)
        self.active = bool(name or self.project or self.group or self.host)

    def named(self, name: str, job_id: int) -> bool:
        if self.name is None or self.name.match(name):
            return True
        array_id, index = split_id(job_id)
        return bool(array_id and self.name.match(f"{name}[{index}]"))

    def fits(self, view: dict[str, Any]) -> bool:
        """-P, -G and -m on a job's view."""
        if self.project and (view.get("project") or "default") != self.project:
            return False
        if self.group and view.get("user_group") != self.group:
            return False
        return not self.host or any(h == self.host for h, _ in view.get("exec_hosts") or ())

    def view(self, view: dict[str, Any]) -> bool:
        return not self.active or (self.named(view["name"], view["id"]) and self.fits(view))


def _page_request(msg: messages.Jobs) -> tuple[Page, tuple[int, int]]:
    """The page a request asks for (`limit`, `states`) and where it starts (`after`)."""
    limit = P.require(msg, "limit", int, optional=True)
    if limit is not None and not 1 <= limit <= P.MAX_JOBS_PAGE:
        raise P.ProtocolError(
            P.BAD_REQUEST, f"field 'limit' of 'jobs' must be 1..{P.MAX_JOBS_PAGE}"
        )
    after = P.require(msg, "after", int, optional=True)
    if after is not None and after < 0:
        raise P.ProtocolError(P.BAD_REQUEST, "field 'after' of 'jobs' must be a 'next' answered")
    states = P.require(msg, "states", list, optional=True)
    if states is not None and not all(isinstance(s, str) for s in states):
        raise P.ProtocolError(P.BAD_REQUEST, "field 'states' of 'jobs' must list job states")
    chosen = None if states is None else frozenset(states)
    return Page(limit, chosen, Select(msg)), resume(after)


class ListingOps:
    """Core's `jobs` op (a mixin of roles.mbatchd.core.Core)."""

    jobs: dict[int, Job]
    arrays: dict[int, Array]
    listing: Listing

    if TYPE_CHECKING:  # Core's methods these call

        def _view(self, job: Job, now: float) -> dict[str, Any]: ...
        def _index_view(
            self, arr: Array, state: str, ranges: str, now: float
        ) -> dict[str, Any]: ...
        def _pending_index(self, job_id: int) -> Array | None: ...

    def query_jobs(
        self,
        ident: dict[str, Any],
        msg: messages.Jobs,
        now: float,
        load_job: Callable[[int], Job | None],
    ) -> dict[str, Any]:
        """bjobs: one page of the jobs asked for, and `next` to ask for the following one
        (None: that was the last). load_job(id) reads a job gone from memory from the store."""
        ids = P.job_ids(msg, optional=True)
        users = P.require(msg, "users", list, optional=True) or [ident["user"]]
        if not all(isinstance(u, str) for u in users):
            raise P.ProtocolError(P.BAD_REQUEST, "field 'users' of 'jobs' must list user names")
        queue = P.require(msg, "queue", str, optional=True)
        every_user = "all" in users

        def wanted(j: Job | Array) -> bool:
            return (every_user or j.user in users) and (not queue or j.queue == queue)

        show_finished = bool(msg.get("all"))
        if msg.get("arrays"):  # bjobs -A: one summary per array
            return {
                "arrays": [
                    a.summary()
                    for a in self.arrays.values()
                    if wanted(a) and (show_finished or a.end_time is None)
                ]
            }
        page, (key, position) = _page_request(msg)
        missing: list[int] = []
        if ids:
            after = self._walk_ids(ids, key, position, page, now, load_job, missing)
        else:
            after = self._walk_listing(wanted, show_finished, key, position, page, now)
        return {"jobs": page.views, "missing": missing, "next": after}

    def _walk_listing(
        self,
        wanted: Callable[[Job | Array], bool],
        finished: bool,
        key: int,
        position: int,
        page: Page,
        now: float,
    ) -> int | None:
        """Fill `page` from job or array `key` (at `position` in it) on; the cursor after it."""
        for job_id in self.listing.starting(key):
            at = position if job_id == key else 0
            if page.full():
                return cursor(job_id, at)
            arr = self.arrays.get(job_id)
            if arr is not None and wanted(arr):
                stop = self._walk_array(arr, finished, at, page, now)
                if stop is not None:
                    return cursor(job_id, stop)
                continue
            page.step()
            job = self.jobs.get(job_id)
            if job is not None and wanted(job) and page.shows(job.state, finished):
                page.add(self._view(job, now))
        return None

    def _walk_ids(
        self,
        ids: list[int],
        key: int,
        position: int,
        page: Page,
        now: float,
        load_job: Callable[[int], Job | None],
        missing: list[int],
    ) -> int | None:
        """Fill `page` with the jobs named, from the key-th id on; an array id is all its
        elements. The ids not found go to `missing`."""
        for n in range(key, len(ids)):
            at = position if n == key else 0
            if page.full():
                return cursor(n, at)
            arr = self.arrays.get(ids[n])
            if arr is not None:
                stop = self._walk_array(arr, True, at, page, now)
                if stop is not None:
                    return cursor(n, stop)
                continue
            page.step()
            view = self._named_view(ids[n], now, load_job)
            if view is None:
                missing.append(ids[n])
            elif page.shows(view["state"], True):
                page.add(view)
        return None

    def _walk_array(
        self, arr: Array, finished: bool, at: int, page: Page, now: float
    ) -> int | None:
        """Add the elements of `arr` from position `at` on: the jobs it made, and its indices
        not handed out (PEND; KILLED once the array is killed) as one view per run of them,
        their "indices" as ranges (the command prints a line per index). Returns the position
        to resume at when the page is full first."""
        state = KILLED if arr.killed else PEND
        common = self._index_view(arr, state, "", now) if page.shows(state, finished) else None
        if common is not None and not page.select.fits(_spec_view(arr)):
            common = None  # -P, -G, -m: none of its indices not handed out is listed
        run: list[int] = []  # indices not handed out, not yet in a view
        for pos in range(at, arr.total):
            if page.full():
                _flush(common, run, page)
                return pos
            page.step()
            index = arr.index_at(pos)
            if pos >= arr.cursor and index not in arr.skip:
                if common is not None and page.select.named(arr.name, element_id(arr.id, index)):
                    run.append(index)
                continue
            _flush(common, run, page)
            job = self.jobs.get(element_id(arr.id, index))
            if job is not None and page.shows(job.state, finished):  # None: left memory
                page.add(self._view(job, now))
        _flush(common, run, page)
        return None

    def _named_view(
        self, job_id: int, now: float, load_job: Callable[[int], Job | None]
    ) -> dict[str, Any] | None:
        """bjobs ID of a job or element: from memory, else from the store (older than
        clean_period), else a pending index of an array; None if there is no such job."""
        job = self.jobs.get(job_id) or load_job(job_id)
        if job is not None:
            return self._view(job, now)
        arr = self._pending_index(job_id)
        if arr is None:
            return None
        index = job_id & MAX_INDEX
        return {
            **self._index_view(arr, PEND, str(index), now),
            "id": job_id,
            "index": index,
            "label": label(job_id),
        }


def _spec_view(arr: Array) -> dict[str, Any]:
    """What Select.fits reads of an index not handed out: its array's -P and -G; no host."""
    return {"project": arr.spec.get("project"), "user_group": arr.spec.get("user_group")}


def _flush(common: dict[str, Any] | None, run: list[int], page: Page) -> None:
    """A run of indices not handed out, as one view of them (then the run is empty)."""
    if run and common is not None:
        page.views.append({**common, "indices": compact(run)})
    run.clear()


def compact(indices: list[int]) -> str:
    """Increasing indices -> 'a-b,c' (runs of step 1)."""
    ranges: list[list[int]] = []
    for i in indices:
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return format_ranges([(a, b, 1) for a, b in ranges])
