"""bmod as LSF 10.1 documents it: a pending job's bsub options changed (checked as bsub checks
them, all or nothing, stored, scheduled by the new values), a running job's -W and -M, and the
refusals. Fast tests of the option reading and of mbatchd's core; real clusters for the rest."""

import os

import pytest
from conftest import wait_until
from test_core import USER, commit, dispatched, submit, world  # noqa: F401 (a fixture)
from test_jobctl import _bsub, _states
from test_lsf_options import _run

from lavalite.protocol import ProtocolError
from roles.cli import quick_args
from roles.cli.bmod import changes
from roles.mbatchd.core import Core
from roles.mbatchd.modify import MODIFIED
from roles.mbatchd.observe import Observer
from roles.sbatchd import cgroups
from roles.sbatchd.core import Core as SbatchdCore

# --- the option reading (no processes)


def _args(*words, prog="bmod"):
    args = quick_args("modify", list(words))
    assert args is not None
    args.prog = prog
    return args


def test_bmod_reads_bsub_s_options_into_the_spec_fields_bsub_makes():
    args = _args("-W", "1:30", "-M", "2G", "-n", "2,4", "-R", "select[mem>1]", "-oo", "o", "7")
    assert args.job == (7, None)
    assert changes(args, 0.0) == {
        "walltime": 5400.0,
        "memory": 2 << 30,
        "slots": 2,
        "slots_max": 4,
        "resreq": "select[mem>1]",
        "out": "o",
        "out_append": False,
        "report": True,
    }
    assert changes(_args("-sp", "5", "-P", "proj", "-B", "8"), 0.0) == {
        "priority": 5,
        "project": "proj",
        "notify": ["begin"],
    }
    assert _args("-Wn", "-wn", "9").reset_walltime
    assert changes(_args("-Z", "echo a > f", "9"), 0.0) == {"cmd": ["echo a > f"]}
    assert changes(_args("-Z", "sleep 1", "9"), 0.0) == {"cmd": ["sleep", "1"]}


@pytest.mark.parametrize(
    "words, says",
    [
        (["-W", "abc", "7"], "-W takes [HOURS:]MINUTES"),
        (["-n", "0", "7"], "the job slots must be an integer"),
        (["-R", "select[", "7"], "select"),
        (["-app", "a", "7"], "-app is an LSF option that LavaLite does not support"),
        (["-Z", " ", "7"], "-Z: the command is empty"),
        (["-Wx", "7"], "-Wx is not an option of bmod"),
    ],
)
def test_a_value_bsub_refuses_is_a_usage_error_of_bmod(words, says, capsys):
    from roles.cli import main

    try:
        code = main(words, prog="bmod")
    except SystemExit as exc:  # argparse's own exit on a bad value
        code = exc.code
    assert code == 2
    assert says in capsys.readouterr().err


# --- mbatchd's core (no processes)


def _modify(core, job_id, now=101.0, ident=USER, reset=(), **spec):
    return core.modify(ident, {"job": job_id, "spec": spec, "reset": list(reset)}, now)


def test_a_pending_job_s_new_needs_are_scheduled_and_stored(world):
    conf, store, core = world
    busy = dispatched(core, store, slots=2)  # one of h1's two slots taken
    wide = submit(core, store, slots=2)
    assert core.schedule(100.0) == 0 and core.jobs[busy].state == "RUN"
    reply = _modify(core, wide, slots=1, walltime=600.0, name="narrow")
    assert reply["message"] == f"Parameters of job <{wide}> are being changed"
    commit(store, core)
    again = Core(conf, store.load(0), now=101.0)  # what a restarted mbatchd reads
    job = again.jobs[wide]
    assert (job.slots, job.name, job.spec["walltime"]) == (1, "narrow", 600.0)
    event = store.events(wide)[-1]
    assert event[2:4] == ("PEND", "PEND") and event[4].startswith(MODIFIED)
    assert "walltime 600.0" in event[4]
    assert core.schedule(101.0) == 1 and core.jobs[wide].state == "RUN"


def test_nothing_changes_unless_every_change_holds(world):
    conf, store, core = world
    job_id = submit(core, store, walltime=60.0)
    before = dict(core.jobs[job_id].spec)
    with pytest.raises(ProtocolError, match="does not exist"):
        _modify(core, job_id, walltime=120.0, queue="nosuch")
    with pytest.raises(ProtocolError, match="slots"):
        _modify(core, job_id, walltime=120.0, slots=0)
    with pytest.raises(ProtocolError, match="Bad user group name"):
        _modify(core, job_id, walltime=120.0, user_group="no-such-group-here")
    assert core.jobs[job_id].spec == before and not core.out.specs


def test_refusals_name_the_job_as_lsf_does(world):
    conf, store, core = world
    job_id = submit(core, store)
    with pytest.raises(ProtocolError, match="^Job <999>: No matching job found$"):
        _modify(core, 999, walltime=60.0)
    with pytest.raises(ProtocolError, match="User permission denied"):
        _modify(core, job_id, ident=dict(USER, user="bob"), walltime=60.0)
    core.kill(USER, {"jobs": [job_id]}, 101.0)
    with pytest.raises(ProtocolError, match="Job has already finished"):
        _modify(core, job_id, walltime=60.0)
    running = dispatched(core, store)
    with pytest.raises(ProtocolError, match="Job has already started.*not name, slots"):
        _modify(core, running, walltime=60.0, name="x", slots=2)


def test_a_running_job_s_change_is_counted_as_no_start(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    observer = Observer(core, "h0", 0)  # mbatchd's counters (metrics)
    _modify(core, job_id, walltime=60.0)
    observer.events(core.out.events)
    assert observer.started == {}


def test_a_job_in_a_closed_queue_may_still_be_modified(world):
    conf, store, core = world
    running = dispatched(core, store, walltime=600.0)
    pending = submit(core, store)
    core._queue_action("qclose", conf.mbatchd.default_queue, {})  # badmin qclose
    _modify(core, running, walltime=60.0)
    _modify(core, pending, walltime=60.0)
    assert core.jobs[running].spec["walltime"] == core.jobs[pending].spec["walltime"] == 60.0
    with pytest.raises(ProtocolError, match="is closed"):  # as a submit there is refused
        submit(core, store)


def test_a_new_dependency_is_indexed_and_the_old_one_forgotten(world):
    conf, store, core = world
    first, second = submit(core, store), submit(core, store)
    waiting = submit(core, store, depend=f"done({first})")
    assert waiting in core.depend_waiting
    _modify(core, waiting, depend=f"done({second})")
    core.host_register("h1", {"slots": 1, "running": []}, 101.0)
    core.schedule(101.0)  # the first starts and ends: the old condition holds, the new not
    commit(store, core)
    rep = {"rid": 1, "kind": "exit", "job": first, "attempt": 1, "exit_code": 0}
    core.reports("h1", [rep], 102.0)
    assert core.jobs[waiting].pend_seq == 0 and waiting in core.depend_waiting
    _modify(core, waiting, reset=["depend"], now=103.0)  # -wn: into its FIFO
    assert waiting not in core.depend_waiting and core.jobs[waiting].pend_seq


def test_begin_and_termination_times_moved_are_kept_by_the_heaps(world):
    conf, store, core = world
    core.host_register("h1", {"slots": 1, "running": []}, 100.0)
    job_id = submit(core, store, begin=200.0, term_time=300.0)
    _modify(core, job_id, begin=400.0, term_time=500.0)
    core.tick(250.0)  # the old begin time: it holds no longer
    assert core.schedule(250.0) == 0
    core.tick(350.0)  # the old termination time: it ends nothing
    assert core.jobs[job_id].state == "PEND"
    _modify(core, job_id, begin=380.0, now=360.0)  # earlier: its 400 entry is stale
    core.tick(390.0)
    seq = core.jobs[job_id].pend_seq
    core.tick(400.0)
    assert core.jobs[job_id].pend_seq == seq  # not queued a second time
    _modify(core, job_id, reset=["begin"], now=401.0)  # -bn: eligible now
    assert core.schedule(401.0) == 1


def test_a_running_job_s_limits_are_ordered_to_its_host(world):
    conf, store, core = world
    job_id = dispatched(core, store, walltime=600.0)
    _modify(core, job_id, walltime=60.0, memory=1 << 30)
    out = commit(store, core)
    order = {"op": "limits", "job": job_id, "attempt": 1, "walltime": 60.0, "memory": 1 << 30}
    assert out["h1"] == [order]
    _modify(core, job_id, reset=["walltime", "memory"])
    assert commit(store, core)["h1"] == [dict(order, walltime=None, memory=None)]


# --- real clusters


def _bmod(c, tmp_path, *words):
    return _run(c, tmp_path, ["bmod", *words])


def _changed(c, tmp_path, job, *words):
    res = _bmod(c, tmp_path, *words, str(job))
    assert (res.returncode, res.stdout) == (0, f"Parameters of job <{job}> are being changed\n"), (
        res
    )


def test_pending_jobs_run_by_their_new_values(make_cluster, tmp_path):
    c = make_cluster(slots=2, queues={"serial": {"retry_backoff": "1"}, "short": {}})
    blocker = _bsub(c, tmp_path, "sleep 300")
    c.wait_started([blocker])  # one slot left
    wide = _bsub(c, tmp_path, "-n", "2", "true")
    picky = _bsub(c, tmp_path, "-R", "select[mem>999999999]", "true")
    after = _bsub(c, tmp_path, "-w", f"done({blocker})", "true")
    later = _bsub(c, tmp_path, "-b", "2099:1:1:0:0", "true")
    held = _bsub(c, tmp_path, "-H", "-W", "10", "true")
    _changed(c, tmp_path, held, "-J", "renamed", "-W", "20", "-M", "64M")
    c.kill9_restarted("mbatchd")  # what bmod changed is in the store
    wait_until(lambda: _run(c, tmp_path, ["bjobs"]).returncode == 0, 60, c.logs)
    view = c.jobs([held])[held]
    assert (view["name"], view["walltime"], view["memory"]) == ("renamed", 1200.0, 64 << 20)
    assert _states(c, [wide, picky, after, later]) == dict.fromkeys(
        [wide, picky, after, later], "PEND"
    )
    _changed(c, tmp_path, wide, "-n", "1")
    made = os.path.join(c.state, "made")
    _changed(c, tmp_path, picky, "-Rn", "-Z", f"echo new > {made}")
    _changed(c, tmp_path, after, "-wn")
    _changed(c, tmp_path, later, "-bn", "-q", "short")
    done = c.wait([wide, picky, after, later])
    assert {j["state"] for j in done.values()} == {"DONE"}
    assert done[later]["queue"] == "short" and done[wide]["slots"] == 1
    with open(made) as f:  # -Z: the new command ran
        assert f.read() == "new\n"
    res = _run(c, tmp_path, ["bhist", "-l", str(later)])
    assert "Parameters of Job are changed: queue short; begin reset" in res.stdout, res
    assert _run(c, tmp_path, ["bkill", str(blocker), str(held)]).returncode == 0


def test_bmod_refusals_change_nothing(make_cluster, tmp_path):
    c = make_cluster(slots=1, queues={"serial": {"max_walltime": "600"}})
    running = _bsub(c, tmp_path, "sleep 300")
    c.wait_started([running])
    pending = _bsub(c, tmp_path, "-W", "5", "true")
    refusals = [
        (["-J", "x", str(running)], 1, f"Job <{running}>: Job has already started"),
        (["-W", "5", "999"], 1, "Job <999>: No matching job found"),
        (["-W", "20", str(pending)], 1, "walltime 1200 s exceeds queue <serial>'s max_walltime"),
        (["-q", "nosuch", str(pending)], 1, "Queue <nosuch> does not exist"),
        (["-w", "done(99999)", str(pending)], 1, "99999"),
        (["-W", "x", str(pending)], 2, "-W takes [HOURS:]MINUTES"),
        (["-t", "1970:1:1:0:0", str(pending)], 2, "the time is in the past"),
        (["-g", "/grp", str(pending)], 2, "-g is an LSF option that LavaLite does not support"),
        (["-W", "5", "-Wn", str(pending)], 2, "an option and its reset form together"),
        ([str(pending)], 2, "no option to change given"),
    ]
    for words, code, says in refusals:
        res = _bmod(c, tmp_path, *words)
        assert res.returncode == code and says in res.stderr, (words, res)
    assert c.jobs([pending])[pending]["walltime"] == 300.0
    assert not [e for e in c.events(pending) if e[2] == e[3]]  # no change recorded
    assert _run(c, tmp_path, ["bkill", str(running)]).returncode == 0
    c.wait([running, pending])
    res = _bmod(c, tmp_path, "-W", "5", str(pending))
    assert (res.returncode, res.stderr) == (1, f"Job <{pending}>: Job has already finished\n")


# --- sbatchd's side of a running job's new limits (no processes)


def test_sbatchd_moves_a_running_attempt_s_timer_and_keeps_the_new_limits():
    core = SbatchdCore("/work", 1)
    [start] = core.dispatch([{"id": 1, "attempt": 1, "cmd": ["true"], "walltime": 600}], {})
    start.att.spec["started"] = 10.0
    start.att.shepherd = 7
    core.started([start.att], 10.0)
    effects = core.limits(1, 1, 60.0, 1 << 30, 20.0)
    assert [type(e).__name__ for e in effects] == ["SetLimits", "Arm"]
    assert effects[1].at == 70.0  # counted from its start, as LSF's run limit
    assert (start.att.spec["walltime"], start.att.spec["memory"]) == (60.0, 1 << 30)
    assert [type(e).__name__ for e in core.limits(1, 1, None, None, 20.0)] == ["SetLimits"]
    assert core.limits(2, 1, 60.0, None, 20.0) == []  # not here: nothing


def test_a_running_job_s_memory_limit_is_rewritten_in_its_cgroup(tmp_path):
    v2 = cgroups.V2(str(tmp_path), "lavalite")
    v2.controllers = {"memory"}
    group = v2.create("9.1", cgroups.Limits(memory=256 << 20))
    v2.set_memory(group, 64 << 20)
    assert (tmp_path / "lavalite" / "9.1" / "memory.max").read_text().strip() == str(64 << 20)
    v2.set_memory(group, None)
    assert (tmp_path / "lavalite" / "9.1" / "memory.max").read_text().strip() == "max"
    mounts = {c: str(tmp_path / "v1" / c) for c in cgroups.V1_CONTROLLERS}
    v1 = cgroups.V1(mounts, "lavalite")
    v1.create("9.1", cgroups.Limits(memory=256 << 20))
    mem = tmp_path / "v1" / "memory" / "lavalite" / "9.1"
    (mem / "memory.memsw.limit_in_bytes").write_text(str(256 << 20))
    adopted = v1.group("9.1")  # a restarted sbatchd's view: the limits it has are read
    v1.set_memory(adopted, 1 << 30)  # raised: memsw first, never below the limit
    assert (mem / "memory.limit_in_bytes").read_text().strip() == str(1 << 30)
    assert (mem / "memory.memsw.limit_in_bytes").read_text().strip() == str(1 << 30)


def _memory_limit(cgroup_lines):
    """The memory limit of the group a job's /proc/self/cgroup names (v1 or cgroup2)."""
    v2, v1 = cgroups.mounts()
    for line in cgroup_lines.splitlines():
        _, controllers, path = line.split(":", 2)
        if v1.get("memory") and "memory" in controllers.split(","):
            return _read_int(f"{v1['memory']}{path}/memory.limit_in_bytes")
        if not controllers and v2 and not v1.get("memory"):
            return _read_int(f"{v2}{path}/memory.max")
    return None


def _read_int(path):
    with open(path) as f:
        text = f.read().strip()
    return None if text == "max" else int(text)


def test_a_running_job_s_limits_change_and_survive_restarts(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    if c.conf.sbatchd.cgroups == "off" or not any(cgroups.mounts()):
        pytest.skip("no cgroups here: the memory limit has no group to go to")
    where = os.path.join(c.state, "job.cg")
    job = _bsub(c, tmp_path, "-M", "256", "-W", "60", f"cat /proc/self/cgroup > {where}; sleep 300")
    c.wait_started([job])
    wait_until(lambda: os.path.exists(where) and os.path.getsize(where), 30, c.logs)
    with open(where) as f:
        group = f.read()
    assert _memory_limit(group) == 256 << 20
    _changed(c, tmp_path, job, "-M", "128")
    wait_until(lambda: _memory_limit(group) == 128 << 20, 30, c.logs)
    res = _bmod(c, tmp_path, "-J", "x", str(job))  # not a limit: refused for a running job
    assert res.returncode == 1 and "Job has already started" in res.stderr, res
    # a run limit counted from its start, kept in its record: the next sbatchd ends it by it
    res = _run(c, tmp_path, ["lavalite", "modify", "--time", "20", str(job)])
    assert res.returncode == 0, res
    c.kill9_restarted("sbatchd")
    c.kill9_restarted("mbatchd")
    view = c.wait([job], timeout=90)[job]
    assert (view["state"], view["reason"], view["walltime"]) == ("FAILED", "timeout", 20.0)
