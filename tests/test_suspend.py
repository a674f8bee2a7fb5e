"""bstop and bresume of running jobs (USUSP), the system's suspension (SSUSP): the state
machine, mbatchd's core and counts, sbatchd's core and paused wall clock without processes;
then real clusters whose jobs count in a loop, frozen by their cgroup or stopped by signal."""

import os
import time

import pytest
from conftest import wait_until
from test_blaunch_hosts import (  # noqa: F401 (a fixture)
    OTHER,
    WIDE,
    _cgroup_of,
    _link,
    _marker,
    _sleeping,
    _submit,
    two_hosts,
)
from test_core import USER, commit, dispatched, submit, world  # noqa: F401 (a fixture)
from test_lsf_options import _run

from lavalite import model
from lavalite.model import IllegalTransition, Job, transition
from roles.mbatchd.core import Core
from roles.sbatchd import core as sb

ADMIN = {**USER, "user": "root", "uid": 0}
NO_SELECTION = "a job ID, 0, or one of -J, -u, -q, -m is required"
BOB = {**USER, "user": "bob", "uid": 1001}


# --- the state machine


def test_a_suspended_job_resumes_the_same_attempt_and_ends_as_a_running_one():
    job = Job(1, "alice", 1000, "serial", "j", {})
    transition(job, model.RUN, 10.0)
    job.start_time = 11.0
    transition(job, model.USUSP, 20.0, model.SR_USER)
    transition(job, model.RUN, 30.0)
    assert (job.attempt, job.start_time) == (1, 11.0), "a resume is no new attempt"
    for state in (model.USUSP, model.SSUSP):
        for end in (model.KILLED, model.FAILED, model.DONE, model.PEND):
            j = Job(2, "alice", 1000, "serial", "j", {})
            transition(j, model.RUN, 10.0)
            transition(j, state, 11.0)
            transition(j, end, 12.0)
    held = Job(3, "alice", 1000, "serial", "j", {})
    transition(held, model.PSUSP, 10.0)
    with pytest.raises(IllegalTransition):
        transition(held, model.USUSP, 11.0)  # only a running job is stopped so


# --- mbatchd's core


def _results(reply):
    return [(r["ok"], r["message"]) for r in reply["results"]]


def test_bstop_of_a_running_job_stops_it_on_its_host_keeps_its_slot_and_counts(world):
    conf, store, core = world
    job_id = dispatched(core, store, slots=2)
    assert _results(core.stop(USER, {"jobs": [job_id]}, 101.0)) == [
        (True, f"Job <{job_id}> is being stopped")
    ]
    job = core.jobs[job_id]
    assert (job.state, job.reason) == ("USUSP", model.SR_USER)
    out = commit(store, core)["h1"]
    assert {"op": "suspend", "job": job_id, "attempt": 1} in out
    assert core.hosts["h1"].used == 1, "a suspended job keeps its slot"
    queue = next(q for q in core.query_queues()["queues"] if q["name"] == "serial")
    assert queue["run"] == 1 and queue["susp"]["USUSP"] == 1
    assert core.query_hosts()["hosts"][0]["susp"]["USUSP"] == 1
    assert core.query_users(["alice"])["users"][0]["ususp"] == 1
    view = core.query_jobs(USER, {"jobs": [job_id]}, 101.0, lambda _: None)["jobs"][0]
    assert view["susp_reason"] == "The job was suspended by user"

    again = _results(core.stop(USER, {"jobs": [job_id]}, 102.0))
    assert again == [(False, f"Job <{job_id}>: Job has already been suspended")]
    assert _results(core.resume(USER, {"jobs": [job_id]}, 103.0)) == [
        (True, f"Job <{job_id}> is being resumed")
    ]
    assert (job.state, job.attempt) == ("RUN", 1)
    assert {"op": "resume", "job": job_id, "attempt": 1} in commit(store, core)["h1"]
    assert core.query_hosts()["hosts"][0]["susp"]["USUSP"] == 0
    not_suspended = _results(core.resume(USER, {"jobs": [job_id]}, 104.0))
    assert not_suspended == [(False, f"Job <{job_id}>: Job is not suspended")]
    assert [e[3] for e in store.events(job_id)] == ["PEND", "RUN", "USUSP", "RUN"]


def test_a_stopped_job_ends_by_its_kill_and_stays_stopped_across_a_reload(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    core.stop(USER, {"jobs": [job_id]}, 101.0)
    commit(store, core)
    again = Core(conf, store.load(0), now=102.0)
    assert again.jobs[job_id].state == "USUSP" and again.hosts["h1"].used == 1
    assert again.suspended_slots("queue", "serial")["USUSP"] == 1
    # its host registers again running it, not stopped (the order lost): told again
    again.host_register("h1", {"slots": 1, "running": [[job_id, 1]]}, 103.0)
    assert {"op": "suspend", "job": job_id, "attempt": 1} in commit(store, again)["h1"]
    stopped = {"slots": 1, "running": [[job_id, 1]], "suspended": [[job_id, 1]]}
    again.host_register("h1", stopped, 103.0)
    assert "h1" not in commit(store, again), "stopped there already: nothing to say"
    # resumed while its host was away: the host that still holds it stopped is told
    again.resume(USER, {"jobs": [job_id]}, 103.5)
    again.host_register("h1", stopped, 103.6)
    assert {"op": "resume", "job": job_id, "attempt": 1} in commit(store, again)["h1"]
    again.stop(USER, {"jobs": [job_id]}, 103.7)
    assert _results(again.kill(USER, {"jobs": [job_id]}, 104.0)) == [
        (True, f"Job <{job_id}> is being terminated")
    ]
    rep = {"rid": 1, "kind": "exit", "job": job_id, "attempt": 1, "reason": "killed"}
    again.reports("h1", [rep], 105.0)
    assert again.jobs[job_id].state == "KILLED" and again.hosts["h1"].used == 0
    assert again.suspended_slots("queue", "serial")["USUSP"] == 0


def test_a_stopped_job_is_requeued_or_lost_with_its_host_as_a_running_one(world):
    conf, store, core = world
    job_id = dispatched(core, store, slots=2)
    core.stop(USER, {"jobs": [job_id]}, 101.0)
    assert _results(core.requeue(USER, {"jobs": [job_id]}, 102.0, store.env))[0][0] is True
    job = core.jobs[job_id]
    assert job.state == "PEND" and core.hosts["h1"].used == 0
    assert core.suspended_slots("host", "h1")["USUSP"] == 0
    core.tick(200.0)
    core.schedule(200.0)
    core.stop(USER, {"jobs": [job_id]}, 201.0)
    assert (job.state, job.attempt) == ("USUSP", 2)
    core.host_gone("h1", 202.0)
    core.tick(202.0 + conf.mbatchd.node_lost_grace + 1)
    assert job.stat == "FAILED(node_lost)" and core.suspended_slots("queue", "serial")["USUSP"] == 0


def test_the_system_suspends_and_resumes_a_running_job(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    assert core.suspend_by_system(job_id, "The load index r1m is too high", 101.0)
    assert not core.suspend_by_system(job_id, "again", 101.0), "a suspended job is not running"
    job = core.jobs[job_id]
    assert (job.state, job.reason) == ("SSUSP", "The load index r1m is too high")
    assert {"op": "suspend", "job": job_id, "attempt": 1} in commit(store, core)["h1"]
    assert core.suspended_slots("host", "h1")["SSUSP"] == 1
    # its user cannot resume what the system suspended, but may stop it too (USUSP)
    refused = _results(core.resume(USER, {"jobs": [job_id]}, 102.0))
    assert refused[0][0] is False and "suspended by the system" in refused[0][1]
    assert core.resume_by_system(job_id, 103.0) and job.state == "RUN"
    core.suspend_by_system(job_id, "preempted", 104.0)
    core.stop(USER, {"jobs": [job_id]}, 105.0)
    assert job.state == "USUSP" and not core.resume_by_system(job_id, 106.0)
    assert core.suspended_slots("host", "h1") == {"PSUSP": 0, "USUSP": 1, "SSUSP": 0}


def test_wrong_state_and_permission_are_refused_and_change_nothing(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    denied = _results(core.stop(BOB, {"jobs": [job_id]}, 101.0))
    assert denied == [(False, f"Job <{job_id}>: User permission denied")]
    assert core.jobs[job_id].state == "RUN" and not core.out.outbox
    # an admin stops again what its user stopped: its user may no longer resume it
    core.stop(USER, {"jobs": [job_id]}, 102.0)
    assert _results(core.stop(ADMIN, {"jobs": [job_id]}, 102.0))[0][0] is True
    assert core.jobs[job_id].reason == model.SR_ADMIN
    again = _results(core.stop(ADMIN, {"jobs": [job_id]}, 102.0))
    assert again == [(False, f"Job <{job_id}>: Job has already been suspended")]
    assert _results(core.resume(USER, {"jobs": [job_id]}, 103.0)) == [
        (False, f"Job <{job_id}>: User permission denied")
    ]
    assert core.jobs[job_id].state == "USUSP"
    assert _results(core.resume(ADMIN, {"jobs": [job_id]}, 104.0))[0][0] is True
    core.kill(USER, {"jobs": [job_id]}, 105.0)
    core.reports("h1", [{"rid": 1, "kind": "exit", "job": job_id, "attempt": 1}], 106.0)
    assert _results(core.stop(USER, {"jobs": [job_id]}, 107.0)) == [
        (False, f"Job <{job_id}>: Job has already finished")
    ]
    missing = _results(core.stop(USER, {"jobs": [999]}, 107.0))
    assert missing == [(False, "Job <999>: No matching job found")]


def test_a_held_job_counts_as_pending_and_psusp_per_queue(world):
    conf, store, core = world
    held = submit(core, store, hold=True)
    assert core.jobs[held].state == "PSUSP"
    assert core.suspended_slots("queue", "serial")["PSUSP"] == 1
    core.resume(USER, {"jobs": [held]}, 101.0)
    assert core.suspended_slots("queue", "serial")["PSUSP"] == 0


def test_an_array_counts_its_suspended_elements_as_running(world):
    conf, store, core = world
    core.host_register("h1", {"slots": 2, "running": []}, 100.0)
    arr = core.submit(USER, {"spec": {"cmd": ["true"], "name": "a[1-2]"}}, 100.0, store.env_id)
    core.schedule(100.0)
    first, second = sorted(j for j in core.jobs if j >> 32 == arr["job"])
    core.stop(USER, {"jobs": [first]}, 101.0)
    assert core.jobs[first].state == "USUSP"
    core.reports("h1", [{"rid": 1, "kind": "exit", "job": second, "attempt": 1}], 102.0)
    assert core.arrays[arr["job"]].end_time is None, "an element is still suspended"
    core.resume(USER, {"jobs": [first]}, 103.0)
    core.reports("h1", [{"rid": 2, "kind": "exit", "job": first, "attempt": 1}], 104.0)
    assert core.arrays[arr["job"]].end_time == 104.0


# --- sbatchd's core


def _running(walltime=None, term_time=None):
    core = sb.Core("/w", 1)
    spec = {"id": 5, "attempt": 1, "started": 1000.0, "walltime": walltime}
    if term_time is not None:
        spec["term_time"] = term_time
    (start,) = core.dispatch([spec], {})
    core.started([start.att], 1000.0)
    return core, start.att


def test_a_stopped_attempts_wall_clock_does_not_run_and_skips_the_time_stopped():
    core, att = _running(walltime=60)
    effects = core.suspend(5, 1, 1010.0)
    assert [type(e) for e in effects] == [sb.Suspend], "no timer while it is stopped"
    assert core.suspend(5, 1, 1011.0) == [], "stopped already"
    effects = core.resume(5, 1, 1030.0)
    assert [type(e) for e in effects] == [sb.Resume, sb.Arm]
    assert effects[1].at == 1000.0 + 20.0 + 60.0
    assert core.resume(5, 1, 1031.0) == []
    # a termination time (bsub -t) still comes while stopped
    core, att = _running(walltime=60, term_time=2000.0)
    arm = core.suspend(5, 1, 1010.0)[1]
    assert (arm.at, arm.reason) == (2000.0, model.DEADLINE)


def test_a_kill_thaws_a_stopped_attempt_first_and_a_restart_keeps_it_stopped():
    core, att = _running(walltime=60)
    core.suspend(5, 1, 1010.0)
    effects = core.kill(5, 1)
    assert [type(e) for e in effects] == [sb.RecordKill, sb.Resume, sb.Signal]
    assert core.suspend(5, 1, 1011.0) == [], "a job being killed is not stopped again"
    adopted = sb.Core("/w", 1)
    rec = {"spec": {"walltime": 60, "started": 1000.0}, "suspended_at": 1010.0, "paused": 5.0}
    effects = adopted.adopt([(5, 1, rec, 123, None)], 1050.0)
    assert [type(e) for e in effects] == [sb.Watch], "stopped: no wall clock armed"
    effects = adopted.resume(5, 1, 1060.0)
    assert effects[1].at == 1000.0 + 5.0 + 50.0 + 60.0


# --- real clusters


def _counter(c, tmp_path, **spec):
    """A running job that appends a line to a file every 0.1 s, and that file (its first
    line: the job's shell's pid)."""
    lines = tmp_path / "lines"
    loop = f"echo $$ > {lines}; while true; do echo x >> {lines}; sleep 0.1; done"
    job = c.submit(["/bin/sh", "-c", loop], **spec)
    wait_until(lambda: lines.exists() and _count(lines) > 2, 60, c.logs)
    return job, lines


def _pid(lines):
    with open(lines) as f:
        return int(f.readline())


def _proc_state(pid):
    """The process's state letter (T: stopped by a signal)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _freezer_state(pid):
    """FROZEN or THAWED: the v1 freezer group the process is in."""
    with open(f"/proc/{pid}/cgroup") as f:
        path = next(line.split(":", 2)[2].strip() for line in f if ":freezer:" in line)
    with open(f"/sys/fs/cgroup/freezer{path}/freezer.state") as f:
        return f.read().strip()


def _count(path):
    with open(path) as f:
        return sum(1 for _ in f)


def _frozen(path):
    """Until the file stops growing (a second with no new line); its line count then."""
    last = [-1, time.monotonic()]

    def still():
        n = _count(path)
        if n != last[0]:
            last[:] = [n, time.monotonic()]
        return time.monotonic() - last[1] > 1.0

    wait_until(still, 30, lambda: f"{path} to stop growing")
    return last[0]


def _grows(path, since):
    wait_until(lambda: _count(path) > since + 3, 30, lambda: f"{path} to grow again")


def _state(c, job):
    return c.jobs([job])[job]["state"]


def _stop_and_resume(c, tmp_path, stopped):
    """bstop, then bresume, of a job counting in a loop; `stopped(pid)` checks how its
    shell's process was stopped."""
    job, lines = _counter(c, tmp_path)
    res = _run(c, tmp_path, ["bstop", str(job)])
    assert (res.returncode, res.stdout) == (0, f"Job <{job}> is being stopped\n"), res
    assert _state(c, job) == "USUSP"
    n = _frozen(lines)
    stopped(_pid(lines))
    res = _run(c, tmp_path, ["bjobs", "-s", str(job)])
    assert "USUSP" in res.stdout and " The job was suspended by user;" in res.stdout, res
    res = _run(c, tmp_path, ["bjobs", "-l", str(job)])
    assert " SUSPENDING REASONS:\n The job was suspended by user;\n" in res.stdout, res
    assert c.cli("jobs", str(job)).stdout.split("\n")[1].split()[2] == "USUSP"  # STAT
    res = _run(c, tmp_path, ["bresume", str(job)])
    assert (res.returncode, res.stdout) == (0, f"Job <{job}> is being resumed\n"), res
    _grows(lines, n)
    assert _state(c, job) == "RUN"
    res = _run(c, tmp_path, ["bresume", str(job)])
    assert (res.returncode, res.stderr) == (1, f"Job <{job}>: Job is not suspended\n"), res
    return job, lines


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/freezer"), reason="no v1 freezer here")
def test_bstop_freezes_a_running_job_and_bresume_thaws_it(make_cluster, tmp_path):
    c = make_cluster(slots=2, sbatchd={"cgroups": "v1"})

    def frozen(pid):
        assert _freezer_state(pid) == "FROZEN" and _proc_state(pid) != "T"

    job, lines = _stop_and_resume(c, tmp_path, frozen)
    assert _freezer_state(_pid(lines)) == "THAWED"
    # bkill of a stopped job: it dies (a frozen task dies of SIGKILL only once thawed)
    assert _run(c, tmp_path, ["bstop", str(job)]).returncode == 0
    _frozen(lines)
    assert _run(c, tmp_path, ["bkill", str(job)]).returncode == 0
    assert c.wait([job])[job]["state"] == "KILLED"


def test_bstop_stops_every_process_by_signal_without_cgroups(make_cluster, tmp_path):
    c = make_cluster(slots=2, sbatchd={"cgroups": "off"})

    def stopped(pid):
        assert _proc_state(pid) == "T"

    job, lines = _stop_and_resume(c, tmp_path, stopped)
    res = _run(c, tmp_path, ["bqueues"])
    assert res.stdout.split("\n")[1].split()[-4:] == ["1", "0", "1", "0"], res
    res = _run(c, tmp_path, ["bstop"])
    assert (res.returncode, res.stderr) == (2, f"bstop: {NO_SELECTION}\n"), res
    res = _run(c, tmp_path, ["bresume", "0"])
    assert (res.returncode, res.stderr) == (1, "No suspended job found\n"), res
    assert _run(c, tmp_path, ["bstop", "0"]).returncode == 0
    _frozen(lines)
    res = _run(c, tmp_path, ["bqueues"])  # NJOBS PEND RUN SUSP
    assert res.stdout.split("\n")[1].split()[-4:] == ["1", "0", "0", "1"], res
    res = _run(c, tmp_path, ["bjobs", "-sum"])
    assert res.stdout.split("\n")[1].split() == ["0", "0", "1", "0", "0", "0", "0"], res
    res = _run(c, tmp_path, ["badmin", "showstatus"])
    assert "        Suspended:            1\n" in res.stdout, res
    assert "        Finished:             0\n" in res.stdout, res
    assert _run(c, tmp_path, ["bkill", str(job)]).returncode == 0
    assert c.wait([job])[job]["state"] == "KILLED"


def test_a_stopped_job_stays_stopped_across_restarts_and_resumes(make_cluster, tmp_path):
    c = make_cluster(slots=2)
    job, lines = _counter(c, tmp_path)
    assert _run(c, tmp_path, ["bstop", str(job)]).returncode == 0
    n = _frozen(lines)
    c.kill9_restarted("sbatchd")
    c.kill9_restarted("mbatchd")
    wait_until(lambda: _run(c, tmp_path, ["bjobs"]).returncode == 0, 60, c.logs)
    assert _state(c, job) == "USUSP"
    c.client.close()  # its connection went with the old mbatchd
    assert _frozen(lines) == n, "the new daemons let it run"
    assert _run(c, tmp_path, ["bresume", str(job)]).returncode == 0
    _grows(lines, n)
    assert _run(c, tmp_path, ["bkill", str(job)]).returncode == 0
    assert c.wait([job])[job]["state"] == "KILLED"


def test_the_run_limit_does_not_count_the_time_stopped(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    limit = 6
    job, lines = _counter(c, tmp_path, walltime=limit)
    assert _run(c, tmp_path, ["bstop", str(job)]).returncode == 0
    stopped = time.time()
    # stopped past its run limit: it does not end while stopped
    wait_until(lambda: time.time() > stopped + 2 * limit, 30, lambda: "the limit to pass")
    assert _state(c, job) == "USUSP"
    assert _run(c, tmp_path, ["bresume", str(job)]).returncode == 0
    resumed = time.time()
    view = c.wait([job], timeout=60)[job]
    assert view["state"] == "FAILED" and view["reason"] == "timeout", view
    assert view["end_time"] > resumed, "it ran the rest of its limit after the resume"
    res = _run(c, tmp_path, ["bhist", "-l", str(job)])
    figures = dict(zip(*[line.split() for line in res.stdout.splitlines()[-3:-1]]))
    assert float(figures["USUSP"]) >= 2 * limit, res


def _stopped(pid):
    """Whether the process is frozen by its v1 freezer group, or else stopped by a signal."""
    try:
        return _freezer_state(pid) == "FROZEN"
    except OSError:  # no freezer group of its own
        return _proc_state(pid) == "T"


def test_bstop_stops_the_jobs_blaunch_task_on_its_other_host(two_hosts, tmp_path):
    cluster = two_hosts
    marker = _marker()
    script = f"{OTHER}{_link(tmp_path, 'blaunch')} $other sleep {marker}"
    job_id = _submit(cluster, *WIDE, "-o", "/dev/null", script)
    (pid,) = wait_until(
        lambda: _sleeping(marker), what=lambda: f"the task running: {cluster.jobs([job_id])}"
    )
    assert f"blaunch-{job_id}.1" in _cgroup_of(pid)
    assert not _stopped(pid)
    assert cluster.cli("stop", str(job_id)).stdout == f"Job <{job_id}> is being stopped\n"
    wait_until(lambda: _stopped(pid), 30, lambda: f"the task {pid} to stop\n{cluster.logs()}")
    res = _run(cluster, tmp_path, ["bhosts", "-w", "h2"])
    assert res.stdout.split("\n")[1].split()[-4:] == ["0", "0", "2", "0"], res  # RUN SSUSP USUSP
    cluster.cli("resume", str(job_id))
    wait_until(lambda: not _stopped(pid), 30, lambda: f"the task {pid} to run again")
    cluster.cli("kill", str(job_id))
    assert cluster.wait([job_id])[job_id]["stat"] == "KILLED"
    wait_until(lambda: not _sleeping(marker), what="the task gone with its job")
