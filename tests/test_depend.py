"""bsub -w dependencies and bsub -H held jobs: the expression parser (fast), then real clusters
running chains, fan-out, fan-in, arrays, exit codes and names, conditions never satisfied,
refusals that create nothing, bresume and bkill of held jobs, and an mbatchd restart."""

import pytest
from conftest import wait_until
from test_core import USER, commit, submit, world  # noqa: F401 (world: a fixture)
from test_lsf_options import _run

from lavalite import depend
from lavalite.depend import DependError, format, parse, resolve
from lavalite.model import PR_DEPEND, PR_DEPEND_NEVER, PR_HELD, element_id
from roles.mbatchd.core import Core

# --- the parser: LSF's documented examples, and what it refuses


def test_lsf_examples_parse_and_format_back_the_same():
    cases = {
        'done(312) && (started(Job2)||exit("99Job"))': (
            'done(312) && (started("Job2") || exit("99Job"))'
        ),
        "312": "done(312)",
        '"210"': 'done("210")',
        "exit(678,0)": "exit(678, == 0)",
        'exit("678",!=0)': 'exit("678", != 0)',
        "exit (myjob)": 'exit("myjob")',
        "ended(jobA*)": 'ended("jobA*")',
        "done(1234[1-10:2,20])": "done(1234[1-10:2,20])",
        "!ended(7[3]) || numdone(8, >= 5) && numrun(9,*)": (
            "!ended(7[3]) || (numdone(8, >= 5) && numrun(9, *))"
        ),
        "!(done(1) || done(2))": "!(done(1) || done(2))",
    }
    for text, canonical in cases.items():
        tree = parse(text)
        assert format(tree) == canonical, text
        assert parse(canonical) == tree, text


def test_a_bare_job_means_done_and_and_binds_before_or():
    assert parse("7") == ("cond", "done", ("id", 7, None), None, None)
    assert parse("1 || 2 && 3")[0] == "or"
    assert parse("(1 || 2) && 3")[0] == "and"


@pytest.mark.parametrize(
    "text, where",
    [
        ("done(12", "at the end"),
        ("done(12 13)", 'at "13" (column 9)'),
        ("done(1) &&", "at the end"),
        ("&& done(1)", 'at "&&" (column 1)'),
        ("bogus(3)", 'at "bogus" (column 1)'),
        ("99Job", 'at "99Job"'),
        ("exit(5, x)", 'at "x"'),
        ("numdone(5)", 'at ")"'),
        ("done(0)", 'at "0"'),
        ("done($x)", 'at "$"'),
        ("started(3, 4)", 'at "4"'),
        ("done(4[0-2])", 'at "4[0-2]"'),
        ("", "the expression is empty"),
    ],
)
def test_malformed_expressions_name_the_token(text, where):
    with pytest.raises(DependError) as exc:
        parse(text)
    assert str(exc.value).startswith(depend.SYNTAX)
    assert where in str(exc.value)


@pytest.mark.parametrize(
    "text, named",
    [
        ("post_done(3)", "post_done"),
        ("post_err(3)", "post_err"),
        ('external(3, "x")', "external"),
        ("numhold(3, > 1)", "numhold"),
        ("done(myarrayA[*])", "ID[*]"),
    ],
)
def test_lsf_conditions_lavalite_lacks_are_refused_by_name(text, named):
    with pytest.raises(DependError, match=named.replace("[", r"\[").replace("*", r"\*")):
        parse(text)


def test_a_name_stands_for_all_its_jobs():
    tree = resolve(parse('done("prep") || 5'), {"prep": [3, 4]}.__getitem__)
    assert format(tree) == "(done(3) && done(4)) || done(5)"


# --- mbatchd's core driven directly (no processes; the store is a real file)


def _reloaded(conf, store):
    core = Core(conf, store.load(0), now=200.0)
    core.watch_loaded(store.job, store.array, 200.0)
    core.sort_pending()
    return core


def _queued(core):
    """Ids of the jobs in the scheduler's FIFOs."""
    return {job.id for q in core.queues.values() for f in q.pending.values() for _, job in f}


def test_a_name_of_thousands_of_jobs_waits_outside_the_fifos_and_across_a_reload(world):
    conf, store, core = world
    n = 5000  # resolved, the condition is longer than the 64 KiB a user may type
    defaults = {"cmd": ["true"], "name": "fan"}
    fan = core.submit_many(USER, {"defaults": defaults, "specs": [{}] * n}, 100.0, store.env_id)[
        "jobs"
    ]
    last = submit(core, store, depend="ended(fan)")
    assert len(core.jobs[last].spec["depend"]) > depend.MAX_TEXT
    assert core.pending_reason(core.jobs[last], 100.0) == PR_DEPEND
    assert last not in _queued(core) and set(fan) <= _queued(core)
    commit(store, core)
    core = _reloaded(conf, store)
    assert last not in _queued(core)
    core.kill(USER, {"op": "kill", "jobs": fan[:-1]}, 200.0)
    assert last not in _queued(core)
    core.kill(USER, {"op": "kill", "jobs": fan[-1:]}, 200.0)
    assert last in _queued(core)
    assert core.pending_reason(core.jobs[last], 200.0) != PR_DEPEND


def test_a_released_job_is_not_tested_again_after_a_reload(world):
    conf, store, core = world
    target = submit(core, store)
    released = submit(core, store, depend=f"!ended({target})")  # holds at once
    waiting = submit(core, store, depend=f"ended({target})")
    assert released in _queued(core) and waiting not in _queued(core)
    core.kill(USER, {"op": "kill", "jobs": [target]}, 100.0)  # !ended() is false from now on
    commit(store, core)
    core = _reloaded(conf, store)
    assert {released, waiting} <= _queued(core)


# --- on a real cluster


def _submit(c, cmd, **spec):
    return c.submit(["sh", "-c", cmd], **spec)


def _long(c, job_id):
    return c.cli("jobs", "-l", str(job_id)).stdout


def _pend_reason(c, job_id):
    return c.jobs([job_id])[job_id]["pend_reason"]


def _started(c, job_id):
    """When the job's attempt was dispatched (its first RUN event)."""
    return next(t for j, t, _, new, *_ in c.events(job_id) if new == "RUN")


def _ended(c, job_id):
    return c.jobs([job_id])[job_id]["end_time"]


def test_chain_fan_out_and_fan_in_run_in_order(make_cluster):
    c = make_cluster(slots=4)
    first = _submit(c, "sleep 0.5")
    left = _submit(c, "sleep 0.3", depend=f"done({first})")
    right = _submit(c, "sleep 0.3", depend=str(first))  # a bare id is done()
    join = _submit(c, "true", depend=f"done({left}) && done({right})")
    again = _submit(c, "true", depend=f"ended({join})")
    assert _pend_reason(c, join) == PR_DEPEND
    jobs = c.wait([first, left, right, join, again])
    assert {j["state"] for j in jobs.values()} == {"DONE"}
    for child, parents in ((left, [first]), (right, [first]), (join, [left, right])):
        assert all(_started(c, child) >= _ended(c, p) for p in parents)
    assert _started(c, again) >= _ended(c, join)
    assert f"Dependency Condition <done({left}) && done({right})>" in _long(c, join)


def test_exit_codes_names_and_conditions_never_satisfied(make_cluster):
    c = make_cluster(slots=4)
    failing = _submit(c, "exit 3", name="prep")
    c.wait([failing])
    runs = {
        "exit code 3": _submit(c, "true", depend='exit("prep", 3)'),
        "any exit code": _submit(c, "true", depend=f"exit({failing})"),
        "a name prefix": _submit(c, "true", depend="ended(pr*)"),
        "started, not done": _submit(c, "true", depend=f"started({failing}) && !done({failing})"),
        "exit code above 2": _submit(c, "true", depend=f"exit({failing}, > 2)"),
    }
    never = {
        "done of a failed job": _submit(c, "true", depend=f"done({failing})"),
        "another exit code": _submit(c, "true", depend=f"exit({failing}, == 4)"),
    }
    jobs = c.wait(list(runs.values()))
    assert {j["state"] for j in jobs.values()} == {"DONE"}
    for what, job_id in never.items():
        assert c.jobs([job_id])[job_id]["state"] == "PEND", what
        assert _pend_reason(c, job_id) == PR_DEPEND_NEVER, what
        assert f"{PR_DEPEND_NEVER};" in _long(c, job_id)


def test_array_dependencies(make_cluster):
    c = make_cluster(slots=4)
    arr = c.submit(["sh", "-c", 'test "$LSB_JOBINDEX" != 3'], name="x[1-4]")
    waiting = _submit(c, "true", depend=f"done({arr}[1-2])")
    assert _pend_reason(c, waiting) in (PR_DEPEND, None)  # None: it may hold already
    cases = {
        f"done({arr}[1-2])": "DONE",
        f"exit({arr}[3], == 1)": "DONE",
        f"ended({arr})": "DONE",
        f"numdone({arr}, == 3)": "DONE",
        f"numexit({arr}, >= 1)": "DONE",
        "ended(x)": "DONE",  # an array by its name
        f"done({arr})": "PEND",  # element 3 failed: never
        f"done({arr}[3])": "PEND",
    }
    ids = {expr: _submit(c, "true", depend=expr) for expr in cases}
    c.wait([i for e, i in ids.items() if cases[e] == "DONE"])
    for expr, job_id in ids.items():
        if cases[expr] == "PEND":
            assert _pend_reason(c, job_id) == PR_DEPEND_NEVER, expr
    dependent_array = c.submit(["true"], name="y[1-3]", depend=f"done({arr}[1])")
    c.client.wait(dependent_array)
    views = c.client.jobs([dependent_array])
    assert {v["state"] for v in views} == {"DONE"} and len(views) == 3
    assert element_id(arr, 1) in c.jobs([element_id(arr, 1)])


def test_bad_dependencies_are_refused_and_create_nothing(cluster):
    gone = 99999
    for args, code, message in (
        (["-w", "done(12"], 2, "Dependency condition syntax error at the end"),
        (["-w", "post_done(1)"], 2, "post_done(): post-execution processing"),
        (["-w", f"done({gone})"], 1, f"{gone}: No matching job found. Job not submitted."),
        (["-w", 'done("nobody")'], 1, "nobody: No matching job found. Job not submitted."),
        (["-w", f"done({gone}[2])"], 1, f"{gone}[]: No matching job found. Job not submitted."),
        (["-H", "-J", "a[1-2]"], 1, "holding a job array is not supported"),
    ):
        res = cluster.cli("submit", *args, "true", check=False)
        assert res.returncode == code, (args, res.stderr)
        assert message in res.stderr, (args, res.stderr)
        assert res.stderr.count("\n") == 1 and res.stdout == ""
    assert cluster.client.jobs(all=True) == []
    assert cluster.events() == []


def test_held_job_waits_for_bresume_and_bkill_ends_a_held_one(cluster):
    held = cluster.submit(["true"], hold=True)
    doomed = cluster.submit(["true"], hold=True)
    assert cluster.jobs([held])[held]["stat"] == "PSUSP"
    assert f" {PR_HELD};" in _long(cluster, held)
    assert "PSUSP" in cluster.cli("jobs").stdout
    res = cluster.cli("kill", str(doomed))
    assert res.stdout == f"Job <{doomed}> is being terminated\n"
    assert cluster.jobs([doomed])[doomed]["state"] == "KILLED"
    assert cluster.jobs([held])[held]["stat"] == "PSUSP"  # nothing ran it meanwhile
    res = cluster.cli("resume", str(held))
    assert res.stdout == f"Job <{held}> is being resumed\n"
    assert cluster.wait([held])[held]["state"] == "DONE"
    res = cluster.cli("resume", str(held), str(doomed), "424242", check=False)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        f"Job <{held}>: Job has already finished",
        f"Job <{doomed}>: Job has already finished",
        "Job <424242>: No matching job found",
    ]
    running = cluster.submit(["sleep", "30"])
    cluster.wait_started([running])
    res = cluster.cli("resume", str(running), check=False)
    assert (res.returncode, res.stderr) == (1, f"Job <{running}>: Job is not suspended\n")
    cluster.client.kill([running])
    events = [(old, new) for _, _, old, new, *_ in cluster.events(held)]
    assert events[:3] == [(None, "PEND"), ("PEND", "PSUSP"), ("PSUSP", "PEND")]


def test_dependent_and_held_jobs_survive_an_mbatchd_restart(make_cluster):
    c = make_cluster(slots=4)
    first = _submit(c, "sleep 2")
    second = _submit(c, "true", depend=f"done({first})")
    third = _submit(c, "true", depend=f"done({second})")
    held = _submit(c, "true", depend=f"done({first})", hold=True)
    c.kill9_restarted("mbatchd")
    jobs = c.wait([first, second, third])
    assert {j["state"] for j in jobs.values()} == {"DONE"}
    assert _started(c, second) >= _ended(c, first)
    assert _started(c, third) >= _ended(c, second)
    assert c.jobs([held])[held]["stat"] == "PSUSP"
    c.kill9_restarted("mbatchd")  # held, with its condition now true
    wait_until(lambda: c.cli("resume", str(held), check=False).returncode == 0)
    assert c.wait([held])[held]["state"] == "DONE"


def test_a_dependency_on_a_job_gone_from_memory_reads_the_store(make_cluster):
    c = make_cluster(mbatchd={"clean_period": "1"})
    ok, failed = c.submit(["true"]), c.submit(["false"])
    c.wait([ok, failed])
    wait_until(lambda: c.client.call("stats")["jobs_in_memory"] == 0)
    runs = _submit(c, "true", depend=f"done({ok}) && exit({failed}, == 1)")
    never = _submit(c, "true", depend=f"done({failed})")
    assert c.wait([runs])[runs]["state"] == "DONE"
    assert _pend_reason(c, never) == PR_DEPEND_NEVER


def test_under_the_lsf_names(cluster, tmp_path):
    def run(*argv):
        return _run(cluster, tmp_path, list(argv))

    held = int(run("bsub", "-H", "true").stdout.split("<")[1].split(">")[0])
    after = int(run("bsub", "-w", f"done({held})", "true").stdout.split("<")[1].split(">")[0])
    assert cluster.jobs([held])[held]["stat"] == "PSUSP"
    assert _pend_reason(cluster, after) == PR_DEPEND
    res = run("bresume", str(held))
    assert (res.returncode, res.stdout) == (0, f"Job <{held}> is being resumed\n")
    assert {j["state"] for j in cluster.wait([held, after]).values()} == {"DONE"}
    res = run("bsub", "-w", "done(1", "true")
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == "bsub: Dependency condition syntax error at the end of 'done(1'\n"
    res = run("bresume", "-C", "why", str(held))
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == "bresume: -C is an LSF option that LavaLite does not support\n"
    assert len(cluster.client.jobs(all=True)) == 2
