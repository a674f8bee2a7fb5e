"""What mbatchd refuses at submit (roles/mbatchd/core.py, lavalite/jobspec.py), driven through
the core without processes: a NUL byte, a number past its bound, a name of a megabyte, a job
wider than any host. Each is refused with the field named, and nothing is created."""

import pytest
from test_core import USER, commit, submit, world  # noqa: F401  (world is a fixture)

from lavalite import jobspec
from lavalite.protocol import ProtocolError

NUL = "a\0b"
BIG = 2**63


def refused(core, store, spec, words):
    """The spec is refused with a message holding `words`; nothing was created."""
    before = (core.next_id, len(core.jobs), len(core.out.envs))
    with pytest.raises(ProtocolError) as exc:
        core.submit(USER, {"spec": {"cmd": ["true"], **spec}}, 100.0, store.env_id)
    assert words in exc.value.message, (spec, exc.value.message)
    assert (core.next_id, len(core.jobs), len(core.out.envs)) == before
    return exc.value


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"cmd": ["echo", NUL]}, "command argument 1 holds a NUL byte"),
        ({"cwd": "/tmp/" + NUL}, "cwd holds a NUL byte"),
        ({"name": NUL}, "name holds a NUL byte"),
        ({"out": NUL}, "out holds a NUL byte"),
        ({"err": NUL}, "err holds a NUL byte"),
        ({"queue": NUL}, "queue holds a NUL byte"),
        ({"from_host": NUL}, "from_host holds a NUL byte"),
        ({"env": {"A": NUL}}, "environment variable 'A' holds a NUL byte"),
        ({"env": {NUL: "1"}}, "holds a NUL byte"),
        ({"env": {"": "1"}}, "environment name '' must be non-empty, without '='"),
        ({"env": {"A=B": "1"}}, "environment name 'A=B' must be non-empty, without '='"),
        ({"name": "each", "lines": ["x", NUL]}, "without NUL"),
    ],
)
def test_a_nul_byte_or_a_bad_environment_name_is_refused_by_field(world, spec, words):
    conf, store, core = world
    assert refused(core, store, spec, words).code == "bad_request"


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"slots": BIG}, "slots (-n) must be an integer from 1 to"),
        ({"slots": True}, "slots (-n) must be an integer"),
        ({"slots": float("nan")}, "slots (-n) must be an integer"),
        ({"slots": 2.0}, "slots (-n) must be an integer"),
        ({"walltime": 1e308}, "walltime must be a number of seconds above 0 and at most"),
        ({"walltime": float("nan")}, "walltime must be a number"),
        ({"walltime": float("inf")}, "walltime must be a number"),
        ({"walltime": True}, "walltime must be a number"),
        ({"walltime": -1}, "walltime must be a number"),
        ({"memory": BIG}, "memory (-M) must be an integer from 1 to"),
        ({"memory": True}, "memory (-M) must be an integer"),
        ({"pids": BIG}, "pids (--pids) must be an integer from 1 to"),
        ({"retries": True}, "retries in queue <serial> must be an integer from 0 to 10"),
        ({"retries": BIG}, "retries in queue <serial> must be an integer"),
        ({"sim_duration": float("nan")}, "sim_duration must be a number"),
        ({"name": "a[1-3]%" + "9" * 30}, "%LIMIT must be from 1 to"),
        ({"name": "a%" + "9" * 30, "lines": ["x", "y"]}, "%LIMIT must be from 1 to"),
    ],
)
def test_every_number_is_bounded(world, spec, words):
    """What SQLite cannot hold (past 64 bits), what a timer cannot take (1e308, NaN), and a
    boolean where a number belongs."""
    conf, store, core = world
    refused(core, store, spec, words)


def test_names_and_paths_are_bounded(world):
    conf, store, core = world
    refused(
        core,
        store,
        {"name": "x" * (1 << 20)},
        f"name has {1 << 20} characters; at most {jobspec.MAX_NAME}",
    )
    refused(core, store, {"queue": "q" * (1 << 20)}, "queue has")
    for field in ("cwd", "out", "err"):
        refused(
            core,
            store,
            {field: "/" + "d" * jobspec.MAX_PATH},
            f"{field} has {jobspec.MAX_PATH + 1} characters; at most {jobspec.MAX_PATH}",
        )


def test_command_and_environment_are_bounded_by_size(world):
    """A legal large environment gets in; past MAX_EXEC the refusal names the size."""
    conf, store, core = world
    big = {f"V{i}": "x" * 1000 for i in range(400)}  # about 400 KB
    assert submit(core, store, env=big) in core.jobs
    over = {f"V{i}": "x" * 1000 for i in range(1100)}
    refused(core, store, {"env": over}, "command and environment take 1")
    refused(core, store, {"env": over}, f"bytes; at most {jobspec.MAX_EXEC}")
    refused(
        core,
        store,
        {"env": {"A": "x" * jobspec.MAX_ARG}},
        f"environment variable 'A' has {jobspec.MAX_ARG + 3} bytes; exec takes at most",
    )


def test_a_job_wider_than_the_hosts_is_refused(world):
    """Refused once a host is known; before any host registered only MAX_SLOTS bounds it.
    As LSF, a job without span[hosts=1] may take slots on several hosts: the bound is every
    host's slots; with span[hosts=1] it is the largest host's."""
    conf, store, core = world
    assert submit(core, store, slots=8) in core.jobs
    core.host_register("h1", {"slots": 4, "running": []}, 100.0)
    core.host_register("h2", {"slots": 2, "running": []}, 100.0)
    refused(core, store, {"slots": 7}, "slots (-n) 7: the hosts have in all 6 slots")
    assert submit(core, store, slots=6) in core.jobs
    one = {"slots": 5, "resreq": "span[hosts=1]"}
    refused(core, store, one, "slots (-n) 5: the largest host has 4 slots")
    assert submit(core, store, slots=4, resreq="span[hosts=1]") in core.jobs


def test_submit_many_checks_its_shared_environment_once_and_names_the_bad_spec(world):
    conf, store, core = world

    def many(defaults, specs):
        return core.submit_many(USER, {"defaults": defaults, "specs": specs}, 100.0, store.env_id)

    with pytest.raises(ProtocolError, match="job 1: slots"):
        many({"cmd": ["true"]}, [{}, {"slots": BIG}])
    with pytest.raises(ProtocolError, match="defaults: environment variable 'A' holds a NUL"):
        many({"cmd": ["true"], "env": {"A": NUL}}, [{}])
    with pytest.raises(ProtocolError, match="job 0: environment name 'B=' must be"):
        many({"cmd": ["true"], "env": {"A": "1"}}, [{"env": {"B=": "1"}}])
    assert core.jobs == {}
    assert len(many({"cmd": ["true"], "env": {"A": "1"}}, [{}, {}])["jobs"]) == 2


def test_killing_a_pending_job_wakes_the_scheduler_for_the_job_behind_it(world):
    """A wide job waits at the head of its user's FIFO; killed, the narrow one behind it
    starts in the next turn, not when some other event happens to wake the scheduler."""
    conf, store, core = world
    core.host_register("h1", {"slots": 2, "running": []}, 100.0)
    running = submit(core, store)
    wide, narrow = submit(core, store, slots=2), submit(core, store)
    core.schedule(100.0)
    commit(store, core)
    assert [core.jobs[j].state for j in (running, wide, narrow)] == ["RUN", "PEND", "PEND"]
    assert not core.wake
    core.kill(USER, {"jobs": [wide]}, 101.0)
    assert core.wake
    assert core.schedule(101.0) == 1 and core.jobs[narrow].state == "RUN"


def test_killing_a_pending_array_wakes_the_scheduler(world):
    conf, store, core = world
    core.host_register("h1", {"slots": 2, "running": []}, 100.0)
    submit(core, store)
    arr = submit(core, store, slots=2, name="a[1-3]")
    behind = submit(core, store)
    core.schedule(100.0)
    commit(store, core)
    assert core.jobs[behind].state == "PEND" and not core.wake
    core.kill(USER, {"jobs": [arr]}, 101.0)
    assert core.wake
    core.schedule(101.0)
    assert core.jobs[behind].state == "RUN"


@pytest.mark.parametrize(
    "op, msg, field",
    [
        ("jobs", {"users": 5}, "users"),
        ("jobs", {"users": [5]}, "users"),
        ("jobs", {"jobs": "x"}, "jobs"),
        ("jobs", {"jobs": ["x"]}, "jobs"),
        ("jobs", {"queue": ["q"]}, "queue"),
        ("kill", {"jobs": [[1]]}, "jobs"),
        ("kill", {"jobs": [True]}, "jobs"),
        ("peek", {"job": "x"}, "job"),
    ],
)
def test_request_fields_of_the_wrong_type_are_a_bad_request_naming_them(world, op, msg, field):
    """Not a TypeError deep in a handler, logged with a traceback as an internal error."""
    conf, store, core = world
    calls = {
        "jobs": lambda m: core.query_jobs(USER, m, 100.0, lambda job_id: None),
        "kill": lambda m: core.kill(USER, m, 100.0),
        "peek": lambda m: core.peek_target(USER, m["job"]),
    }
    with pytest.raises(ProtocolError) as exc:
        calls[op]({"op": op, **msg})
    assert exc.value.code == "bad_request" and f"'{field}'" in exc.value.message
