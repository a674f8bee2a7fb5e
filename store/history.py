"""The store's history queries (bhist, bacct) and its retention (history_days).

Every query here is bounded by an index: a job's events by job_events(job_id), a user's jobs
by jobs(user, end_time), finished jobs by jobs(end_time). `Reader` runs them on a read-only
connection of its own (a worker thread's, when the store is not locked by mbatchd); `Store`
has the same methods on mbatchd's connection.
"""

import json
from dataclasses import dataclass, replace
from typing import Any

import apsw

from lavalite.model import DONE, ELEMENT_BITS, FINISHED

# What bhist and bacct show of a job, in this order (the spec's project read in SQL: the
# spec's JSON is not decoded per row)
HISTORY_COLS = (
    "id",
    "user",
    "queue",
    "name",
    "state",
    "reason",
    "host",
    "slots",
    "submit_time",
    "start_time",
    "end_time",
    "exit_code",
    "exit_signal",
    "cpu_time",
    "max_mem",
    "json_extract(spec, '$.project')",
    "json_extract(spec, '$.cmd')",
    "json_extract(spec, '$.cwd')",
    "json_extract(spec, '$.from_host')",
)
FIELDS = (*HISTORY_COLS[:15], "project", "cmd", "cwd", "from_host")
_SELECT = f"SELECT {', '.join(HISTORY_COLS)} FROM jobs"
# A run a requeue superseded (brequeue -d, -e), a row of job_runs: model.run_record's fields,
# what differs between runs among HISTORY_COLS (all but the job's id, user, queue, name and
# submit time)
_RUN_FIGURES = (*HISTORY_COLS[4:8], *HISTORY_COLS[9:15])
JOB_RUN_COLS = ("job_id", "attempt", *_RUN_FIGURES)
# Those runs with their job's columns, under the jobs table's names: Filter.where and the
# queries read them as they read jobs. A small table (only jobs requeued after they
# finished): bacct needs no index of its own for it.
_RUNS = (
    "(SELECT r.job_id AS id, "
    + ", ".join(f"j.{c} AS {c}" for c in ("user", "queue", "name", "submit_time", "spec"))
    + ", "
    + ", ".join(f"r.{c} AS {c}" for c in _RUN_FIGURES)
    + " FROM job_runs r JOIN jobs j ON j.id = r.job_id)"
)
_SELECT_RUNS = f"SELECT {', '.join(HISTORY_COLS)} FROM {_RUNS}"
_FINISHED_IN = f"state IN ({', '.join(repr(s) for s in sorted(FINISHED))})"
# one pass over the jobs that match: bacct's summary (wait = until the start, or the end of
# a job that never started; turnaround = submit to end; hog factor = CPU / turnaround)
_SUMMARY = f"""
SELECT count(*) FILTER (WHERE state = '{DONE}'), count(*) FILTER (WHERE state != '{DONE}'),
       total(cpu_time), min(cpu_time), max(cpu_time),
       total(coalesce(start_time, end_time) - submit_time),
       min(coalesce(start_time, end_time) - submit_time),
       max(coalesce(start_time, end_time) - submit_time),
       total(end_time - submit_time), min(end_time - submit_time), max(end_time - submit_time),
       min(cpu_time / max(end_time - submit_time, 1e-9)),
       max(cpu_time / max(end_time - submit_time, 1e-9)),
       total(cpu_time / max(end_time - submit_time, 1e-9)),
       min(end_time), max(end_time)
FROM """
SUMMARY_FIELDS = (
    "done",
    "exited",
    "cpu_total",
    "cpu_min",
    "cpu_max",
    "wait_total",
    "wait_min",
    "wait_max",
    "turnaround_total",
    "turnaround_min",
    "turnaround_max",
    "hog_min",
    "hog_max",
    "hog_total",
    "begin",
    "end",
)
PRUNE_BATCH = 500  # jobs removed per transaction by prune(): a turn never waits long for it


@dataclass
class Filter:
    """Which jobs bhist or bacct asks for. users None = every user; ids: job ids, where an
    array's id stands for all its elements; ended: (time0, time1) of the end, None = any."""

    users: list[str] | None = None
    queue: str | None = None
    project: str | None = None
    ids: list[int] | None = None
    ended: tuple[float, float] | None = None
    finished: bool | None = None  # True: finished jobs only; False: unfinished only

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.ids is not None:
            ors = []
            for job_id in self.ids:
                if job_id >> ELEMENT_BITS:  # an element (ID[INDEX]) has no elements
                    ors.append("id = ?")
                    params.append(job_id)
                    continue
                ors.append("id = ? OR id BETWEEN ? AND ?")
                params += [job_id, job_id << ELEMENT_BITS, ((job_id + 1) << ELEMENT_BITS) - 1]
            clauses.append(f"({' OR '.join(ors) or '0'})")
        if self.users is not None:
            clauses.append(f"user IN ({', '.join('?' * len(self.users))})")
            params += self.users
        if self.queue is not None:
            clauses.append("queue = ?")
            params.append(self.queue)
        if self.project is not None:
            clauses.append("json_extract(spec, '$.project') = ?")
            params.append(self.project)
        if self.ended is not None:
            clauses.append("end_time BETWEEN ? AND ?")
            params += self.ended
        if self.finished is True:
            clauses.append(f"end_time IS NOT NULL AND {_FINISHED_IN}")
        elif self.finished is False:
            clauses.append("end_time IS NULL")
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class Queries:
    """The history queries, over `self.db`."""

    db: apsw.Connection

    def history_jobs(self, flt: Filter, limit: int, runs: bool = False) -> list[dict[str, Any]]:
        """Up to `limit` jobs matching `flt`: the unfinished, then the finished as they ended
        (the order of the jobs(user, end_time) index: no sort of a user's whole history).
        `runs` (bacct): with the earlier runs of requeued jobs, each a record of its own."""
        where, params = flt.where()
        tail = f"{where} ORDER BY end_time, id LIMIT ?"
        rows = list(self.db.execute(_SELECT + tail, [*params, limit]))
        if runs:
            rows += self.db.execute(_SELECT_RUNS + tail, [*params, limit])
            rows.sort(key=lambda row: (row[10] is not None, row[10] or 0, row[0]))
        return [_history_row(row) for row in rows[:limit]]

    def history_events(self, job_ids: list[int]) -> dict[int, list[tuple]]:
        """Each job's events (time, old, new, reason, host, attempt) in the order written."""
        out: dict[int, list[tuple]] = {j: [] for j in job_ids}
        for i in range(0, len(job_ids), 500):
            chunk = job_ids[i : i + 500]
            for job_id, *event in self.db.execute(
                "SELECT job_id, time, old, new, reason, host, attempt FROM job_events "
                f"WHERE job_id IN ({', '.join('?' * len(chunk))}) ORDER BY seq",
                chunk,
            ):
                out[job_id].append(tuple(event))
        return out

    def acct_summary(self, flt: Filter) -> dict[str, Any]:
        """bacct's figures over the finished jobs matching `flt`, in one pass."""
        where, params = replace(flt, finished=True).where()
        ((*row,),) = self.db.execute(_SUMMARY + "jobs" + where, params)  # an aggregate: one row
        ((*earlier,),) = self.db.execute(_SUMMARY + _RUNS + where, params)  # requeued runs
        return {f: _merged(f, a, b) for f, a, b in zip(SUMMARY_FIELDS, row, earlier)}


def _merged(field: str, a: Any, b: Any) -> Any:
    """One summary figure over the jobs' last runs (`a`) and the earlier runs (`b`)."""
    if a is None or b is None:
        return b if a is None else a
    if field.endswith("_min") or field == "begin":
        return min(a, b)
    if field.endswith("_max") or field == "end":
        return max(a, b)
    return a + b  # the counts and the totals


def _history_row(row: tuple) -> dict[str, Any]:
    job = dict(zip(FIELDS, row))
    job["cmd"] = json.loads(job["cmd"]) if job["cmd"] else []  # json_extract gives its JSON
    return job


class Reader(Queries):
    """A read-only connection to the store (another thread's or process's), for the queries
    only. The store must not be locked by mbatchd (`store_lock = shared`)."""

    def __init__(self, path: str) -> None:
        self.db = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
        self.db.setbusytimeout(5000)

    def close(self) -> None:
        self.db.close()


def prune(db: apsw.Connection, before: float, batch: int = PRUNE_BATCH) -> int:
    """Remove up to `batch` jobs and `batch` arrays that ended before `before`, with their
    events and parts' marks, in one transaction. Returns how many went (below 2 * `batch`:
    nothing older is left). The highest job and array ids stay: mbatchd continues its ids
    from them."""
    with db:
        gone = 0
        for table, top in _PRUNED:
            ids = [
                i
                for (i,) in db.execute(
                    f"SELECT id FROM {table} WHERE end_time < ? AND id != coalesce(({top}), -1) "
                    "ORDER BY end_time LIMIT ?",
                    (before, batch),
                )
            ]
            if ids:
                marks = ", ".join("?" * len(ids))
                db.execute(f"DELETE FROM job_events WHERE job_id IN ({marks})", ids)
                db.execute(f"DELETE FROM job_parts WHERE job_id IN ({marks})", ids)
                db.execute(f"DELETE FROM job_runs WHERE job_id IN ({marks})", ids)
                db.execute(f"DELETE FROM {table} WHERE id IN ({marks})", ids)
            gone += len(ids)
    return gone


# (table, the query of the id it keeps): Store.load's counters
_PRUNED = (
    ("jobs", f"SELECT max(id) FROM jobs WHERE id < {1 << ELEMENT_BITS}"),
    ("arrays", "SELECT max(id) FROM arrays"),
)
