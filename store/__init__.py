"""The job store: SQLite through APSW in WAL mode. The only code that speaks SQL.

mbatchd answers from memory; the store is its durable record. Writes come in batches, one
transaction per loop turn, with synchronous=NORMAL: a commit costs no fsync (WAL checkpoints
do), a process crash loses nothing committed, and a power loss at most the last turns.
"""

import json
import operator
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import apsw

from lavalite.model import ELEMENT_BITS, PEND, PSUSP, RUN, SSUSP, USUSP, Event, Host, Job
from store.history import JOB_RUN_COLS, Queries, prune

SCHEMA_VERSION = 7
# Schema changes: {version: "SQL"}, applied in order above what the file has. None re-runs
# schema.sql, whose CREATE ... IF NOT EXISTS adds only what is new (2: the arrays table).
MIGRATIONS = {
    2: None,
    3: "ALTER TABLE jobs ADD COLUMN message TEXT",
    4: "ALTER TABLE jobs ADD COLUMN hosts TEXT",
    5: "ALTER TABLE jobs ADD COLUMN cpu_time REAL; ALTER TABLE jobs ADD COLUMN max_mem INTEGER; "
    "CREATE INDEX IF NOT EXISTS jobs_user_end ON jobs(user, end_time) WHERE end_time IS NOT NULL",
    6: None,
    7: None,  # fairshare_usage, quota_usage, job_runs
}

# The columns a job's life changes (written again at each update), then the whole row: the ones
# set at submit first. Rows are read back by name, so the order is the store's own.
_MUTABLE = (
    "queue",  # bswitch
    "state",
    "reason",
    "attempt",
    "host",
    "start_time",
    "end_time",
    "eligible_time",
    "exit_code",
    "exit_signal",
    "kill_requested",
    "pend_seq",
    "message",
    "hosts",
    "cpu_time",
    "max_mem",
)
_JOB_COLS = (
    "id",
    "req_id",
    "user",
    "uid",
    "name",
    "slots",
    "spec",
    "max_attempts",
    "submit_time",
    *_MUTABLE,
)
_INSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(_JOB_COLS)}) VALUES ({', '.join('?' * len(_JOB_COLS))})"
)
_SPEC = _JOB_COLS.index("spec")
_HOSTS_COL = _JOB_COLS.index("hosts")  # JSON in the row, a list in memory
# Row values read in C: a commit at scale builds thousands of rows per turn.
_job_values = operator.attrgetter(*_JOB_COLS)
_update_values = operator.attrgetter(*_MUTABLE, "id")
_HOSTS = _MUTABLE.index("hosts")  # in the UPDATE values
_UPDATE_SPEC = "UPDATE jobs SET name=?, slots=?, spec=? WHERE id=?"  # bmod
_UPDATE_JOB = f"UPDATE jobs SET {', '.join(c + '=?' for c in _MUTABLE)} WHERE id=?"
# A part of a job on another of its hosts (roles/mbatchd/parts.py) added to its stored figures:
# only to the attempt it ran in, from a host the job had other than its first, and once
# (job_parts, by the time its host ended it: ?7); ?6: the job's row is written from memory,
# only the part's mark is to add.
_ADD_PART = (
    "UPDATE jobs SET "
    "cpu_time = CASE WHEN ?1 IS NULL THEN cpu_time ELSE ifnull(cpu_time, 0) + ?1 END, "
    "max_mem = CASE WHEN ?2 IS NULL THEN max_mem ELSE ifnull(max_mem, 0) + ?2 END "
    "WHERE NOT ?6 AND id = ?3 AND attempt = ?4 AND EXISTS (SELECT 1 FROM json_each(jobs.hosts) "
    "WHERE json_each.key > 0 AND json_extract(json_each.value, '$[0]') = ?5) "
    "AND NOT EXISTS (SELECT 1 FROM job_parts WHERE job_id = ?3 AND attempt = ?4 AND host = ?5 "
    "AND time = ?7)"
)
_MARK_PART = "INSERT OR IGNORE INTO job_parts (job_id, attempt, host, time) VALUES (?, ?, ?, ?)"
_SELECT_JOB = f"SELECT {', '.join(_JOB_COLS)} FROM jobs"
_ARRAY_COLS = (
    "id",
    "req_id",
    "user",
    "uid",
    "queue",
    "name",
    "slots",
    "spec",
    "max_attempts",
    "submit_time",
    "indices",
    "throttle",
    "cursor",
    "skip",
    "counts",
    "killed",
    "end_time",
    "pend_seq",
)
_SELECT_ARRAY = f"SELECT {', '.join(_ARRAY_COLS)} FROM arrays"
_ARRAY_MUTABLE = ("cursor", "skip", "counts", "killed", "end_time")
_UPDATE_ARRAY = f"UPDATE arrays SET {', '.join(c + '=?' for c in _ARRAY_MUTABLE)} WHERE id=?"
# bmod of an array: what it changes of the indices not handed out (its -J throttle too)
_ARRAY_MODIFIED = ("queue", "name", "slots", "spec", "throttle", "pend_seq")
_UPDATE_ARRAY_SPEC = f"UPDATE arrays SET {', '.join(c + '=?' for c in _ARRAY_MODIFIED)} WHERE id=?"


_INSERT_RUN = (
    f"INSERT OR REPLACE INTO job_runs ({', '.join(JOB_RUN_COLS)}) "
    f"VALUES ({', '.join('?' * len(JOB_RUN_COLS))})"
)


class StoreError(Exception):
    pass


class StoreFull(StoreError):
    """A commit found no space left on the database's filesystem (SQLITE_FULL); nothing of
    it was written."""


class Store(Queries):
    def __init__(self, path: str, exclusive: bool = False) -> None:
        """`exclusive`: hold the database lock for the life of the connection. WAL then needs
        no shared-memory file, which is what makes the store safe on NFS, and a second
        mbatchd cannot open it (it fails after the busy timeout)."""
        self.dir = os.path.dirname(os.path.abspath(path))
        os.makedirs(self.dir, exist_ok=True)
        try:
            self.db = apsw.Connection(path)
            self.db.setbusytimeout(5000)
            if exclusive:
                self.db.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
            self.db.execute("PRAGMA journal_mode=WAL").fetchall()
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except apsw.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from None

    def _migrate(self) -> None:
        ((version,),) = self.db.execute("PRAGMA user_version")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store schema {version} is newer than this LavaLite ({SCHEMA_VERSION})"
            )
        if version == SCHEMA_VERSION:  # nothing to write: a store on a full disk still opens
            return
        with self.db:
            schema = (Path(__file__).with_name("schema.sql")).read_text()
            if version == 0:
                self.db.execute(schema)
                version = SCHEMA_VERSION
            for v in range(version + 1, SCHEMA_VERSION + 1):
                self.db.execute(MIGRATIONS[v] or schema)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    def prune(self, before: float) -> int:
        """One batch of history_days' retention (store.history.prune)."""
        try:
            return prune(self.db, before)
        except apsw.Error as exc:
            raise StoreError(f"cannot prune the history: {exc}") from None

    def free_bytes(self) -> int:
        """Bytes free for us on the database's filesystem (one statvfs call)."""
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize

    # --- reading, at start-up and for jobs no longer in memory

    def load(self, finished_since: float) -> dict[str, Any]:
        """Everything mbatchd keeps in memory: live jobs, jobs finished since `finished_since`,
        hosts, the environments those jobs use, and the counters to continue from."""
        jobs = [
            _job(r)
            for r in self.db.execute(
                f"{_SELECT_JOB} WHERE state IN (?, ?, ?, ?, ?) OR end_time >= ? ORDER BY id",
                (PEND, RUN, PSUSP, USUSP, SSUSP, finished_since),
            )
        ]
        arrays = [
            _array_rec(r)
            for r in self.db.execute(
                f"{_SELECT_ARRAY} WHERE end_time IS NULL OR end_time >= ?", (finished_since,)
            )
        ]
        specs = [j.spec for j in jobs] + [a["spec"] for a in arrays]
        env_ids = sorted({s.get("env_id") for s in specs if s.get("env_id")})
        envs: dict[int, tuple[str, dict]] = {}
        for i in range(0, len(env_ids), 500):
            chunk = env_ids[i : i + 500]
            for eid, h, data in self.db.execute(
                f"SELECT id, hash, data FROM envs WHERE id IN ({','.join('?' * len(chunk))})", chunk
            ):
                envs[eid] = (h, json.loads(data))
        hosts = []
        for name, slots, status in self.db.execute("SELECT name, slots, status FROM hosts"):
            host = Host(name, slots)
            host.status = status
            host.stored = True
            hosts.append(host)
        ((max_id,),) = self.db.execute(f"SELECT max(id) FROM jobs WHERE id < {1 << ELEMENT_BITS}")
        ((max_seq,),) = self.db.execute("SELECT max(pend_seq) FROM jobs")
        ((max_aid, max_aseq),) = self.db.execute("SELECT max(id), max(pend_seq) FROM arrays")
        ((max_env,),) = self.db.execute("SELECT max(id) FROM envs")
        return {
            "jobs": jobs,
            "arrays": arrays,
            "envs": envs,
            "hosts": hosts,
            "next_job_id": max(max_id or 0, max_aid or 0) + 1,
            "next_pend_seq": max(max_seq or 0, max_aseq or 0) + 1,
            "next_env_id": (max_env or 0) + 1,
            "users": {n for (n,) in self.db.execute("SELECT name FROM users")},
            # fairshare: (queue, account) -> (run, cpu, at)
            "fairshare": {
                (q, a): (run, cpu, at)
                for q, a, run, cpu, at in self.db.execute(
                    "SELECT queue, account, run, cpu, at FROM fairshare_usage"
                )
            },
            # the blaunch parts already counted in the figures of the jobs loaded
            "quota_usage": {
                (name, start): used
                for name, start, used in self.db.execute(
                    "SELECT quota, period_start, core_seconds FROM quota_usage"
                )
            },
            "parts": list(
                self.db.execute(
                    "SELECT p.job_id, p.attempt, p.host, p.time FROM job_parts p JOIN jobs j "
                    "ON j.id = p.job_id WHERE j.state IN (?, ?, ?) OR j.end_time >= ?",
                    (RUN, USUSP, SSUSP, finished_since),
                )
            ),
        }

    def job(self, job_id: int) -> Job | None:
        row = self.db.execute(f"{_SELECT_JOB} WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def array(self, array_id: int) -> dict[str, Any] | None:
        """An array's record (Array.from_record builds the object), or None."""
        row = self.db.execute(f"{_SELECT_ARRAY} WHERE id=?", (array_id,)).fetchone()
        return _array_rec(row) if row else None

    def env_id(self, digest: str) -> int | None:
        row = self.db.execute("SELECT id FROM envs WHERE hash=?", (digest,)).fetchone()
        return row[0] if row else None

    def env(self, env_id: int) -> tuple[str, dict] | None:
        """(hash, environment) of a stored environment: a finished job's that left memory
        (brequeue -d, -e runs the job again)."""
        row = self.db.execute("SELECT hash, data FROM envs WHERE id=?", (env_id,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def events(self, job_id: int | None = None) -> list[tuple]:
        """Event rows (job_id, time, old, new, reason, host, attempt) in the order written."""
        sql = "SELECT job_id, time, old, new, reason, host, attempt FROM job_events"
        if job_id is None:
            return self.db.execute(sql + " ORDER BY seq").fetchall()
        return self.db.execute(sql + " WHERE job_id=? ORDER BY seq", (job_id,)).fetchall()

    # --- writing: one transaction per mbatchd loop turn

    def commit(
        self,
        jobs: Iterable[Job] = (),
        events: Iterable[Event] = (),
        hosts: Iterable[Host] = (),
        envs: Iterable[tuple[int, str, dict]] = (),
        users: Iterable[tuple[str, int, float]] = (),
        queues: Iterable[tuple[str, dict]] = (),
        arrays: Iterable[Any] = (),
        parts: Iterable[tuple[int, int, str, float, float | None, int | None, bool]] = (),
        fairshare: Iterable[tuple[str, str, float, float, float]] = (),
        quota_usage: Iterable[tuple[str, float, float]] = (),
        specs: Iterable[Job] = (),
        runs: Iterable[tuple] = (),
        array_specs: Iterable[Any] = (),
    ) -> None:
        """jobs: Job objects changed this turn (inserted if not yet stored, else updated);
        events: model.Event; hosts: Host; envs: (id, hash, dict); users: (name, uid, time);
        queues: (name, config dict); arrays: Array objects, as jobs; parts: (job, attempt,
        host, end time, cpu_time, max_mem, in memory) of blaunch parts: marked counted, and
        added to the stored job's figures unless mbatchd holds the job in memory (its row is
        written then); fairshare: (queue, account, run, cpu, at) of the usage changed;
        quota_usage: (quota, period start, core-seconds used in it), the totals; specs: Job
        objects whose spec, name and slots bmod changed; runs: job_runs rows (JOB_RUN_COLS)
        of the runs a requeue superseded; array_specs: Array objects bmod changed.
        Raises StoreFull when the filesystem is full; any error leaves the
        store as it was (the transaction rolls back)."""
        try:
            self._commit(
                jobs,
                events,
                hosts,
                envs,
                users,
                queues,
                arrays,
                parts,
                fairshare,
                quota_usage,
                runs,
                modified=specs,
                modified_arrays=array_specs,
            )
        except apsw.FullError:
            raise StoreFull(f"disk full on {self.dir}") from None

    def _commit(
        self,
        jobs: Iterable[Job],
        events: Iterable[Event],
        hosts: Iterable[Host],
        envs: Iterable[tuple[int, str, dict]],
        users: Iterable[tuple[str, int, float]],
        queues: Iterable[tuple[str, dict]],
        arrays: Iterable[Any],
        parts: Iterable[tuple[int, int, str, float, float | None, int | None, bool]],
        fairshare: Iterable[tuple[str, str, float, float, float]],
        quota_usage: Iterable[tuple[str, float, float]],
        runs: Iterable[tuple],
        modified: Iterable[Job] = (),
        modified_arrays: Iterable[Any] = (),
    ) -> None:
        new: list[Job] = []
        changed: list[Job] = []
        for j in jobs:
            (changed if j.stored else new).append(j)
        new_arrays = [a for a in arrays if not a.stored]
        with self.db:
            cur = self.db.cursor()
            if new_arrays:
                cur.executemany(
                    f"INSERT INTO arrays ({', '.join(_ARRAY_COLS)}) VALUES "
                    f"({', '.join('?' * len(_ARRAY_COLS))})",
                    [_array_row(a) for a in new_arrays],
                )
            changed_arrays = [_array_update(a) for a in arrays if a.stored]
            if changed_arrays:
                cur.executemany(_UPDATE_ARRAY, changed_arrays)
            if new:
                specs: dict[int, str] = {}  # an array's elements share its spec: encoded once
                cur.executemany(_INSERT_JOB, [_row(j, specs) for j in new])
            if changed:
                cur.executemany(
                    _UPDATE_JOB,
                    [_update_values(j) if j.hosts is None else _hosts_update(j) for j in changed],
                )
            if modified:  # after the inserts: a job submitted and modified in one turn
                cur.executemany(
                    _UPDATE_SPEC, [(j.name, j.slots, json.dumps(j.spec), j.id) for j in modified]
                )
            if modified_arrays:
                cur.executemany(_UPDATE_ARRAY_SPEC, [_array_spec(a) for a in modified_arrays])
            if parts:
                cur.executemany(
                    _ADD_PART,
                    [
                        (cpu, mem, job, att, host, kept, t)
                        for job, att, host, t, cpu, mem, kept in parts
                    ],
                )
                cur.executemany(_MARK_PART, [p[:4] for p in parts])
            if fairshare:
                cur.executemany(
                    "INSERT OR REPLACE INTO fairshare_usage (queue, account, run, cpu, at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    fairshare,
                )
            if runs:
                cur.executemany(_INSERT_RUN, runs)
            if events:
                cur.executemany(
                    "INSERT INTO job_events (job_id, time, old, new, reason, host, "
                    "attempt) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [e.as_tuple() for e in events],
                )
            if hosts:
                cur.executemany(
                    "INSERT INTO hosts (name, slots, status, last_seen) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                    "slots=excluded.slots, status=excluded.status, "
                    "last_seen=excluded.last_seen",
                    [(h.name, h.slots, h.status, h.load.get("time")) for h in hosts],
                )
            if envs:
                cur.executemany(
                    "INSERT OR IGNORE INTO envs (id, hash, data) VALUES (?, ?, ?)",
                    [(i, h, json.dumps(d)) for i, h, d in envs],
                )
            if users:
                cur.executemany(
                    "INSERT OR IGNORE INTO users (name, uid, first_seen) VALUES (?, ?, ?)", users
                )
            if quota_usage:
                cur.executemany(
                    "INSERT OR REPLACE INTO quota_usage (quota, period_start, core_seconds) "
                    "VALUES (?, ?, ?)",
                    quota_usage,
                )
            if queues:
                cur.executemany(
                    "INSERT OR REPLACE INTO queues (name, config) VALUES (?, ?)",
                    [(n, json.dumps(c)) for n, c in queues],
                )
        for j in new + new_arrays:
            j.stored = True


def _row(job: Job, specs: dict[int, str]) -> list:
    """The INSERT values of `job`; `specs` maps id(spec) -> its JSON, for the commit's life."""
    values = list(_job_values(job))
    key = id(job.spec)
    if key not in specs:
        specs[key] = json.dumps(job.spec)
    values[_SPEC] = specs[key]
    if job.hosts is not None:
        values[_HOSTS_COL] = json.dumps(job.hosts)
    return values


def _hosts_update(job: Job) -> list:
    """The UPDATE values of a job placed on several hosts: its hosts as JSON."""
    values = list(_update_values(job))
    values[_HOSTS] = json.dumps(job.hosts)
    return values


def _job(row: tuple) -> Job:
    rec = dict(zip(_JOB_COLS, row))
    job = Job(
        rec["id"],
        rec["user"],
        rec["uid"],
        rec["queue"],
        rec["name"],
        json.loads(rec["spec"]),
        req_id=rec["req_id"],
        slots=rec["slots"],
        max_attempts=rec["max_attempts"],
        submit_time=rec["submit_time"],
    )
    for col in _MUTABLE:
        setattr(job, col, rec[col])
    job.kill_requested = bool(job.kill_requested)
    if rec["hosts"] is not None:
        job.hosts = json.loads(rec["hosts"])
    job.stored = True
    return job


def _array_row(arr: Any) -> list:
    values = [getattr(arr, c) for c in _ARRAY_COLS]
    values[_ARRAY_COLS.index("spec")] = json.dumps(arr.spec)
    for col, value in zip(_ARRAY_MUTABLE, _array_update(arr)):
        values[_ARRAY_COLS.index(col)] = value
    return values


def _array_update(arr: Any) -> list:
    """The UPDATE values of a stored array, in _ARRAY_MUTABLE's order: what changes as its
    elements run (its spec, written once, is not encoded again each turn)."""
    return [
        arr.cursor,
        json.dumps(sorted(arr.skip)),
        json.dumps(arr.counts),
        int(arr.killed),
        arr.end_time,
        arr.id,
    ]


def _array_spec(arr: Any) -> list:
    """The UPDATE values of an array bmod changed, in _ARRAY_MODIFIED's order."""
    values = [getattr(arr, c) for c in _ARRAY_MODIFIED] + [arr.id]
    values[_ARRAY_MODIFIED.index("spec")] = json.dumps(arr.spec)
    return values


def _array_rec(row: tuple) -> dict[str, Any]:
    """An arrays row as a dict (lavalite.job_array.Array.from_record builds the object)."""
    rec = dict(zip(_ARRAY_COLS, row))
    for col in ("spec", "skip", "counts"):
        rec[col] = json.loads(rec[col])
    return rec
