"""The store on its own: schema, WAL, migrations by user_version, round trips."""

import apsw
import pytest

from lavalite.model import Job, submitted
from store import SCHEMA_VERSION, Store, StoreError


def test_wal_schema_version_and_round_trip(tmp_path):
    path = str(tmp_path / "l.db")
    s = Store(path)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    job = Job(7, "alice", 1000, "serial", "n", {"cmd": ["true"], "env_id": 1}, req_id="r1")
    s.commit(
        jobs=[job],
        events=[submitted(job, 5.0)],
        envs=[(1, "h", {"A": "1"})],
        users=[("alice", 1000, 5.0)],
    )
    assert job.stored
    job.state, job.attempt, job.end_time = "FAILED", 1, 6.0
    job.message = "cannot move output to /x: No space"
    s.commit(jobs=[job])
    s.close()
    state = Store(path).load(0)
    (back,) = state["jobs"]
    assert (back.id, back.state, back.attempt, back.req_id, back.spec["cmd"], back.message) == (
        7,
        "FAILED",
        1,
        "r1",
        ["true"],
        "cannot move output to /x: No space",
    )
    assert state["envs"] == {1: ("h", {"A": "1"})} and state["next_job_id"] == 8
    assert state["users"] == {"alice"}


def test_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "l.db")
    db = apsw.Connection(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)
