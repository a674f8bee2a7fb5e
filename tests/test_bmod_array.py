"""bmod of job arrays as LSF 10.1 documents it: a whole array (its indices not handed out and
its elements not finished), an index list "ID[1-3,7]", -J "%N" (the throttle) and -J NAME, the
refusals (nothing changes), the quota sums; mbatchd's core without processes, then a real
cluster whose array runs by its new values and keeps them across a restart."""

import pytest
from conftest import wait_until
from test_core import USER, commit, world  # noqa: F401 (a fixture)
from test_jobctl import _bsub
from test_lsf_options import _run
from test_quota import T0, _as_recounted, _core_submit, _quota

from lavalite import config
from lavalite.model import element_id
from lavalite.protocol import ProtocolError
from roles.cli import quick_args
from roles.mbatchd.core import Core
from roles.mbatchd.modify import MODIFIED
from store import Store

# --- the job argument (no processes)


def test_bmod_takes_an_array_s_index_list():
    def target(word):
        args = quick_args("modify", ["-W", "5", word])
        assert args is not None
        return args.job

    assert target("12") == (12, None)
    assert target("12[3]") == (element_id(12, 3), None)
    assert target("12[1-3,7]") == (12, "1-3,7")


@pytest.mark.parametrize("word", ["12[1-", "12[3-1]", "x[1-3]"])
def test_a_bad_index_list_is_a_usage_error(word, capsys):
    from roles.cli import main

    try:
        code = main(["-W", "5", word], prog="bmod")
    except SystemExit as exc:  # argparse's own exit on a bad value
        code = exc.code
    assert code == 2
    assert "argument JOBID" in capsys.readouterr().err


# --- mbatchd's core (no processes)


def _array(core, store, name="a[1-6]", **spec):
    msg = {"spec": {"cmd": ["true"], "env": {"A": "1"}, "name": name, **spec}}
    return core.submit(USER, msg, 100.0, store.env_id)["job"]


def _modify(core, job_id, now=101.0, ident=USER, reset=(), indices=None, **spec):
    msg = {"job": job_id, "spec": spec, "reset": list(reset)}
    if indices is not None:
        msg["indices"] = indices
    return core.modify(ident, msg, now)


def _end(core, job_id, now):
    rep = {"rid": job_id, "kind": "exit", "job": job_id, "attempt": 1, "exit_code": 0}
    core.reports("h1", [rep], now)


def _dispatched(outbox):
    return {j["id"]: j for m in outbox.get("h1", []) if m["op"] == "dispatch" for j in m["jobs"]}


def test_a_whole_array_change_reaches_its_indices_and_its_running_element(world):
    conf, store, core = world
    core.host_register("h1", {"slots": 1, "running": []}, 100.0)
    arr = _array(core, store, walltime=600.0)
    assert core.schedule(100.0) == 1
    commit(store, core)
    first = element_id(arr, 1)
    reply = _modify(core, arr, walltime=60.0, out="/tmp/new.out")
    assert reply["message"] == f"Parameters of job <{arr}> are being changed"
    order = {"op": "limits", "job": first, "attempt": 1, "walltime": 60.0, "memory": None}
    assert commit(store, core)["h1"] == [order]  # a running element: -W only
    assert core.jobs[first].spec.get("out") is None
    event = store.events(first)[-1]
    assert event[4] == f"{MODIFIED}: walltime 60.0"
    again = Core(conf, store.load(0), now=102.0)  # what a restarted mbatchd reads
    assert (again.arrays[arr].spec["walltime"], again.arrays[arr].spec["out"]) == (
        60.0,
        "/tmp/new.out",
    )
    _end(core, first, 103.0)
    assert core.schedule(103.0) == 1
    second = _dispatched(commit(store, core))[element_id(arr, 2)]
    assert (second["walltime"], second["out"]) == (60.0, "/tmp/new.out")


def test_an_index_list_changes_those_elements_only(world):
    conf, store, core = world
    arr = _array(core, store, walltime=600.0)
    reply = _modify(core, arr, indices="2-3", walltime=60.0)
    assert reply["message"] == f"Parameters of job <{arr}[2-3]> are being changed"
    _modify(core, element_id(arr, 5), walltime=30.0)  # "ID[INDEX]": one element
    assert core.arrays[arr].spec["walltime"] == 600.0 and core.arrays[arr].remaining == 3
    commit(store, core)
    again = Core(conf, store.load(0), now=102.0)
    assert {i: again.jobs[element_id(arr, i)].spec["walltime"] for i in (2, 3, 5)} == {
        2: 60.0,
        3: 60.0,
        5: 30.0,
    }
    assert again.arrays[arr].remaining == 3
    again.host_register("h1", {"slots": 6, "running": []}, 102.0)
    assert again.schedule(102.0) == 6  # each index once
    sent = _dispatched(commit(store, again))
    assert {i: sent[element_id(arr, i)]["walltime"] for i in range(1, 7)} == {
        1: 600.0,
        2: 60.0,
        3: 60.0,
        4: 600.0,
        5: 30.0,
        6: 600.0,
    }


def test_j_changes_an_array_s_throttle_and_name(world):
    conf, store, core = world
    core.host_register("h1", {"slots": 4, "running": []}, 100.0)
    arr = _array(core, store, name="a[1-6]%1")
    assert core.schedule(100.0) == 1
    _modify(core, arr, name="%3")
    assert core.schedule(101.0) == 2  # three running now
    _modify(core, arr, name="b%4")
    assert core.schedule(101.0) == 1
    commit(store, core)
    again = Core(conf, store.load(0), now=102.0)
    assert (again.arrays[arr].name, again.arrays[arr].throttle) == ("b", 4)
    assert {again.jobs[element_id(arr, i)].name for i in range(1, 5)} == {"b"}


@pytest.mark.parametrize(
    "spec, says",
    [
        ({"name": "x[1-3]"}, "the index list of a job array cannot be changed"),
        ({"name": "%0"}, "%LIMIT must be from 1"),
        ({"reset": ["name"]}, "-Jn: a job array keeps a name"),
        ({"slots": 0}, "slots"),
        ({"indices": "2", "name": "y"}, "-J: an array's elements keep their array's name"),
        ({"indices": "2", "queue": "serial"}, "-q: an array's elements keep"),
        ({"indices": "1", "out": "/tmp/o"}, r"Job <\d+\[1\]>: Job has already started"),
        ({"indices": "2,9", "walltime": 60.0}, r"Job <\d+\[9\]>: No matching job found"),
        ({"indices": "2", "walltime": 60.0, "ident": dict(USER, user="bob")}, "permission"),
        ({"indices": "x", "walltime": 60.0}, "bad array index"),
        ({"indices": "2", "walltime": 60.0, "depend": "done(99999)"}, "99999"),
    ],
)
def test_refusals_change_nothing(world, spec, says):
    conf, store, core = world
    core.host_register("h1", {"slots": 1, "running": []}, 100.0)
    arr = _array(core, store, walltime=600.0)
    core.schedule(100.0)
    commit(store, core)
    before = (dict(core.arrays[arr].spec), core.arrays[arr].remaining, sorted(core.jobs))
    with pytest.raises(ProtocolError, match=says):
        _modify(core, arr, **spec)
    assert (dict(core.arrays[arr].spec), core.arrays[arr].remaining, sorted(core.jobs)) == before
    assert not (core.out.specs or core.out.array_specs or core.out.events)


def test_indices_of_a_plain_job_and_a_finished_array_are_refused(world):
    conf, store, core = world
    plain = core.submit(USER, {"spec": {"cmd": ["true"]}}, 100.0, store.env_id)["job"]
    with pytest.raises(ProtocolError, match=rf"^Job <{plain}\[1-2\]>: No matching job found$"):
        _modify(core, plain, indices="1-2", walltime=60.0)
    arr = _array(core, store, name="a[1-2]")
    core.kill(USER, {"jobs": [arr]}, 101.0)
    with pytest.raises(ProtocolError, match=f"^Job <{arr}>: Job has already finished$"):
        _modify(core, arr, walltime=60.0)


def test_the_quota_sums_follow_an_array_s_change(tmp_path):
    conf = config.defaults(str(tmp_path))
    conf.quotas = {"lab": _quota("lab", core_hours=20.0, admit_below=1.0)}
    store = Store(str(tmp_path / "db"))
    core = Core(conf, store.load(0), now=T0)
    core.host_register("h1", {"slots": 1, "running": []}, T0)
    arr = _core_submit(core, store, T0, name="a[1-5]")  # 5 x 1 core-hour
    core.schedule(T0)  # its first element runs
    assert core.quota.sums["lab"] == [4 * 3600.0, 3600.0]
    core.modify(USER, {"job": arr, "spec": {"walltime": 7200}, "reset": []}, T0)
    assert core.quota.sums["lab"] == [4 * 7200.0, 7200.0]
    _as_recounted(core)
    core.modify(USER, {"job": arr, "indices": "2-3", "spec": {"walltime": 1800}, "reset": []}, T0)
    assert core.quota.sums["lab"] == [2 * 7200.0 + 2 * 1800.0, 7200.0]
    _as_recounted(core)
    before = list(core.quota.sums["lab"])
    with pytest.raises(ProtocolError, match="quota lab"):  # 2 h running + 4 x 5 h pending
        core.modify(USER, {"job": arr, "spec": {"walltime": 5 * 3600}, "reset": []}, T0)
    assert core.quota.sums["lab"] == before and core.arrays[arr].spec["walltime"] == 7200
    _as_recounted(core)


# --- a real cluster


def test_an_array_runs_by_its_new_values_and_keeps_them_across_a_restart(make_cluster, tmp_path):
    c = make_cluster(slots=1, queues={"serial": {}, "short": {}})
    arr = _bsub(c, tmp_path, "-J", "a[1-6]", "-W", "10", "sleep 3")
    first = element_id(arr, 1)
    c.wait_started([first])
    res = _run(c, tmp_path, ["bmod", "-W", "5", "-q", "short", "-R", "select[ncpus>0]", str(arr)])
    assert (res.returncode, res.stdout) == (0, f"Parameters of job <{arr}> are being changed\n"), (
        res
    )
    res = _run(c, tmp_path, ["bmod", "-W", "4", f"{arr}[5-6]"])
    assert res.returncode == 0, res
    c.kill9_restarted("mbatchd")  # what bmod changed is in the store
    wait_until(lambda: _run(c, tmp_path, ["bjobs"]).returncode == 0, 60, c.logs)
    ids = [element_id(arr, i) for i in range(1, 7)]
    done = c.wait(ids, timeout=180)
    assert {j["state"] for j in done.values()} == {"DONE"}
    assert (done[first]["queue"], done[first]["walltime"]) == ("serial", 300.0)  # as it ran
    for i in range(2, 7):
        view = done[element_id(arr, i)]
        assert (view["queue"], view["resreq"]) == ("short", "select[ncpus>0]"), view
        assert view["walltime"] == (240.0 if i >= 5 else 300.0), view
    res = _run(c, tmp_path, ["bhist", "-l", f"{arr}[1]"])
    assert "Parameters of Job are changed: walltime 300.0" in res.stdout, res


def test_each_element_of_an_index_list_waits_on_its_new_condition(world):
    conf, store, core = world
    first = core.submit(USER, {"spec": {"cmd": ["true"]}}, 100.0, store.env_id)["job"]
    arr = _array(core, store, name="a[1-3]")
    _modify(core, arr, indices="2-3", depend=f"done({first})")
    waiting = [element_id(arr, 2), element_id(arr, 3)]
    assert all(j in core.depend_waiting for j in waiting)
    core.host_register("h1", {"slots": 1, "running": []}, 101.0)
    core.schedule(101.0)  # the plain job first (submitted first), then the condition holds
    commit(store, core)
    _end(core, first, 102.0)
    assert not any(j in core.depend_waiting for j in waiting)
    core.host_register("h1", {"slots": 3, "running": []}, 103.0)
    core.schedule(103.0)
    assert {core.jobs[j].state for j in waiting} == {"RUN"}


def test_an_each_line_array_s_elements_keep_their_lines(world):
    conf, store, core = world
    msg = {"spec": {"cmd": ["true"], "name": "lines%1", "lines": ["a", "b", "c"]}}
    arr = core.submit(USER, msg, 100.0, store.env_id)["job"]
    _modify(core, arr, indices="2", walltime=60.0)
    _modify(core, arr, name="%2", walltime=120.0)
    element = core.jobs[element_id(arr, 2)]
    assert (element.spec["lines"], element.spec["walltime"]) == (["a", "b", "c"], 120.0)
    assert core.arrays[arr].throttle == 2
