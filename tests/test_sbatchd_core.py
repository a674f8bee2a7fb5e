"""sbatchd's core driven directly: events in, effects out, no processes, files or sockets
(except the report journal, a real file in tmp_path, where replay is the promise)."""

import pytest

from lavalite.model import EXEC_FAILED, KILLED_REASON, NODE_LOST, TIMEOUT
from roles.sbatchd.core import Ack, Core, Report, SaveEpoch, StaleEpoch
from roles.sbatchd.journal import Journal

WORK = "/work"


def spec(job, attempt=1, **more):
    return {"id": job, "attempt": attempt, "cmd": ["true"], "env_id": 5, **more}


def kinds(effects):
    return [type(e).__name__ for e in effects]


def reports(effects):
    return [e.report for e in effects if isinstance(e, Report)]


def running(core, *jobs):
    """Jobs dispatched and handed to a shepherd (pid 7)."""
    atts = [e.att for e in core.dispatch([spec(j) for j in jobs], {})]
    for att in atts:
        att.shepherd = 7
    core.started(atts, 10.0)
    return atts


def test_an_attempt_starts_once_under_a_repeated_dispatch():
    core = Core(WORK, 1)
    first = core.dispatch([spec(1), spec(1), spec(2)], {"5": {"A": "1"}})
    assert kinds(first) == ["Start", "Start"]
    assert [e.att.key for e in first] == [(1, 1), (2, 1)] and first[0].env == {"A": "1"}
    assert first[0].att.path == "/work/1.1"
    assert core.dispatch([spec(1)], {}) == []  # ordered, not yet started
    started = core.started([e.att for e in first], 10.0)
    assert [(r["kind"], r["job"]) for r in reports(started)] == [("start", 1), ("start", 2)]
    assert core.dispatch([spec(1), spec(2)], {}) == [] and core.starts == 2
    assert kinds(core.dispatch([spec(1, attempt=2)], {})) == ["Start"]  # a new attempt runs


def test_a_record_found_on_disk_is_never_started_again():
    core = Core(WORK, 1)
    [start] = core.dispatch([spec(1)], {})
    assert core.duplicate(start.att) == [] and core.attempts == {}


def test_a_job_that_cannot_run_here_fails_as_exec_failed():
    core = Core(WORK, 1)
    [start] = core.dispatch([spec(1)], {})
    [rep] = reports(core.cannot_run(start.att, "no user bob", 10.0))
    assert (rep["reason"], rep["exit_code"], rep["message"]) == (EXEC_FAILED, 126, "no user bob")
    assert core.attempts == {}


def test_no_shepherd_for_it_reports_it_lost_and_cleans_its_record():
    core = Core(WORK, 1)
    [start] = core.dispatch([spec(1)], {})
    effects = core.not_started(start.att, "fork failed", 10.0)
    assert kinds(effects) == ["Report", "Clean"] and effects[1].path == "/work/1.1"
    assert effects[0].report["reason"] == NODE_LOST and core.attempts == {}


def test_adoption_after_a_restart_watches_running_and_reports_ended():
    core = Core(WORK, 4)
    found = [
        (1, 1, {"shepherd": 7, "spec": {"walltime": 60, "started": 100.0}}, 7, "g1"),
        (2, 1, {"shepherd": 7, "spec": {}, "status": {"exit_code": 3, "start": 90.0}}, None, None),
    ]
    effects = core.adopt(found, 130.0)
    assert kinds(effects) == ["Arm", "Watch"] and effects[0].at == 160.0
    one, two = core.attempts[(1, 1)], core.attempts[(2, 1)]
    assert one.adopted and one.shepherd == 7 and one.group == "g1"
    assert core.dispatch([spec(1)], {}) == []  # mbatchd sends it again: not twice
    assert core.shepherd_answered(1, 1, {"exit_code": 0}, 131.0) == []  # not its shepherd's now
    ended = core.lock_freed(two, {"status": {"exit_code": 3, "start": 90.0}}, 131.0)
    assert kinds(ended) == ["Finish", "Report", "Clean"]
    assert reports(ended)[0] == {
        "kind": "exit",
        "job": 2,
        "attempt": 1,
        "time": 131.0,
        "start_time": 90.0,
        "exit_code": 3,
        "exit_signal": None,
        "reason": "",
        "message": None,
    }
    assert list(core.attempts) == [(1, 1)]


def test_a_kill_during_a_restart_is_carried_on_and_reported_as_a_kill():
    before = Core(WORK, 1)
    [att] = running(before, 1)
    assert kinds(before.kill(1, 1)) == ["RecordKill", "Signal"]
    assert before.kill(1, 1) == []  # signalled once
    # sbatchd restarts before the job ends: the record holds the reason
    after = Core(WORK, 1)
    effects = after.adopt(
        [(1, 1, {"shepherd": 7, "spec": {}, "kill": KILLED_REASON}, 7, None)], 20.0
    )
    assert kinds(effects) == ["Signal", "Watch"]  # signalled again, not re-recorded
    adopted = after.attempts[(1, 1)]
    [rep] = reports(after.lock_freed(adopted, {"status": {"exit_signal": 15}}, 21.0))
    assert rep["reason"] == KILLED_REASON and rep["exit_signal"] == 15


def test_a_kill_for_an_attempt_not_here_does_nothing():
    core = Core(WORK, 1)
    running(core, 1)
    assert core.kill(1, 2) == [] and core.kill(9, 1) == [] and core.kill(None, None) == []
    assert not core.attempts[(1, 1)].signalled


def test_the_wall_clock_kills_with_timeout_and_the_first_reason_stays():
    core = Core(WORK, 1)
    [start] = core.dispatch([spec(1, walltime=30)], {})
    start.att.spec["started"] = 10.0
    start.att.shepherd = 7
    effects = core.started([start.att], 10.0)
    assert kinds(effects) == ["Report", "Arm"] and effects[1].at == 40.0
    fired = core.timer(start.att)
    assert kinds(fired) == ["RecordKill", "Signal"] and fired[0].reason == TIMEOUT
    assert core.kill(1, 1) == []  # a later bkill changes nothing
    [rep] = reports(core.shepherd_answered(1, 1, {"exit_signal": 15, "reason": ""}, 41.0))
    assert rep["reason"] == TIMEOUT


def test_a_lost_shepherds_attempts_are_watched_and_lost_without_a_status():
    core = Core(WORK, 1)
    a, b = running(core, 1, 2)
    [c] = running(core, 3)
    c.shepherd = 8
    assert kinds(core.shepherd_lost(7)) == ["Watch"]
    assert a.adopted and b.adopted and not c.adopted
    assert core.shepherd_answered(1, 1, {"exit_code": 0}, 11.0) == []
    effects = core.lock_freed(a, {"pid": 4242}, 12.0)
    assert kinds(effects) == ["Reap", "Finish", "Report", "Clean"] and effects[0].pid == 4242
    assert reports(effects)[0]["reason"] == NODE_LOST
    assert kinds(core.lock_freed(b, {"status": {"exit_code": 0}}, 12.0)) == [
        "Finish",
        "Report",
        "Clean",
    ]
    assert kinds(core.shepherd_answered(3, 1, {"exit_code": 0}, 12.0)) == [
        "Finish",
        "Report",
        "Clean",
    ]
    assert core.attempts == {}


def test_an_order_from_a_stale_epoch_is_refused_and_changes_nothing():
    core = Core(WORK, 2)
    assert core.fence(2) == []
    assert core.fence(3) == [SaveEpoch(3)]
    with pytest.raises(StaleEpoch, match="epoch 2 is older than 3"):
        core.fence(2)
    assert core.epoch == 3


class Shell:
    """The part of sbatchd's shell that keeps reports: a real journal, no socket."""

    def __init__(self, path):
        self.journal = Journal(path)
        self.sent = []

    def run(self, effects):
        for effect in effects:
            if isinstance(effect, Report):
                self.sent.append(self.journal.add(effect.report))
            elif isinstance(effect, Ack):
                self.journal.ack(effect.rids)
        self.journal.flush()


def test_unacknowledged_reports_are_replayed_after_a_restart_and_acks_trim_them(tmp_path):
    path = str(tmp_path / "reports.log")
    core, shell = Core(WORK, 1), Shell(path)
    [att] = [e.att for e in core.dispatch([spec(1)], {})]
    att.shepherd = 7
    shell.run(core.started([att], 10.0))
    shell.run(core.shepherd_answered(1, 1, {"exit_code": 0}, 11.0))
    start, end = shell.sent
    shell.run(core.ack([start["rid"]]))
    # sbatchd restarts: what mbatchd has not acknowledged is sent again when it registers
    replayed = Shell(path).journal.pending()
    assert [(r["kind"], r["rid"]) for r in replayed] == [("exit", end["rid"])]
    again = Shell(path)
    again.run(Core(WORK, 1).ack([end["rid"], 999]))  # an unknown rid is ignored
    assert Shell(path).journal.pending() == []
