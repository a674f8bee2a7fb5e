"""bmod as LSF 10.1 documents it: a pending job's bsub options changed (checked as bsub checks
them, all or nothing, stored, scheduled by the new values), a running job's -W and -M, and the
refusals. Fast tests of the option reading and of mbatchd's core; real clusters for the rest."""

import pytest
from test_core import USER, commit, dispatched, submit, world  # noqa: F401 (a fixture)

from lavalite.protocol import ProtocolError
from roles.cli import quick_args
from roles.cli.bmod import changes
from roles.mbatchd.core import Core
from roles.mbatchd.modify import MODIFIED

# --- the option reading (no processes)


def _args(*words, prog="bmod"):
    args = quick_args("modify", list(words))
    assert args is not None
    args.prog = prog
    return args


def test_bmod_reads_bsub_s_options_into_the_spec_fields_bsub_makes():
    args = _args("-W", "1:30", "-M", "2G", "-n", "2,4", "-R", "select[mem>1]", "-oo", "o", "7")
    assert args.job == 7
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


@pytest.mark.parametrize(
    "words, says",
    [
        (["-W", "abc", "7"], "-W takes [HOURS:]MINUTES"),
        (["-n", "0", "7"], "the job slots must be an integer"),
        (["-R", "select[", "7"], "select"),
        (["-Z", "true", "7"], "-Z is an LSF option that LavaLite does not support"),
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
    _modify(core, job_id, reset=["begin"], now=360.0)  # -bn: eligible now
    assert core.schedule(360.0) == 1


def test_a_running_job_s_limits_are_ordered_to_its_host(world):
    conf, store, core = world
    job_id = dispatched(core, store, walltime=600.0)
    _modify(core, job_id, walltime=60.0, memory=1 << 30)
    out = commit(store, core)
    order = {"op": "limits", "job": job_id, "attempt": 1, "walltime": 60.0, "memory": 1 << 30}
    assert out["h1"] == [order]
    _modify(core, job_id, reset=["walltime", "memory"])
    assert commit(store, core)["h1"] == [dict(order, walltime=None, memory=None)]
