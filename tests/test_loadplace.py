"""Load-aware placement without processes: LIM's indices as -R reads them, a queue's placement
(pack, spread), its load thresholds (lavalite.loadthreshold: load_sched in the scheduler,
load_stop in mbatchd's core) and their checks in config-check. The real cluster's side is in
tests/test_loadplace_cluster.py."""

import pytest
from test_config import errors_of, write
from test_core import USER, commit, submit, world  # noqa: F401  (world is a fixture)
from test_resreq import host, pend, placed, reason, snap

from lavalite import config, loadthreshold
from lavalite.model import PR_LOAD_UNKNOWN, PR_NO_SLOT, PR_SELECT, RUN, SSUSP
from lavalite.resreq import host_facts, queue_req
from scheduler import QueueView, Snapshot, plan

UT = loadthreshold.reason("ut")
MEM = loadthreshold.reason("mem")


# --- LIM's indices as -R sees them


def test_r15s_pg_ls_it_are_lims_own_measures():
    """r15s is LIM's 15-second average (lavalite.loadindex), not the 1-minute loadavg."""
    load = {"loadavg": (3.0, 2.0, 1.0), "r15s": 0.5, "pg": 12.0, "ls": 2, "it": 30.0, "cpu": 0.25}
    f = host_facts(load, [])
    assert (f["r15s"], f["r1m"], f["r15m"]) == (0.5, 3.0, 1.0)
    assert (f["pg"], f["ls"], f["it"], f["ut"]) == (12.0, 2, 30.0, 0.25)
    assert host_facts({"loadavg": (3.0, 2.0, 1.0)}, [])["r15s"] == 3.0  # a LIM without it


def test_select_and_order_read_the_current_load():
    q = QueueView("normal")
    idle = pend(q, resreq="select[ut < 0.5]")
    quiet = pend(q, resreq="order[r15s]")
    busy, calm = host("busy", 4, cpu=0.9, r15s=3.0), host("calm", 4, cpu=0.1, r15s=0.2)
    assert placed(plan(snap(q, busy, calm))) == {idle.id: [["calm", 1]], quiet.id: [["calm", 1]]}
    q = QueueView("normal")
    never = pend(q, resreq="select[ut < 0.5]")
    idler = pend(q, resreq="order[-it]")  # the longest idle first
    p = plan(snap(q, busy, host("idle", 4, cpu=0.9, it=60.0)))
    assert reason(p, never) == PR_SELECT and placed(p) == {idler.id: [["idle", 1]]}


# --- placement


def _three():
    """a: 1 free of 4; b: 3 free of 4; c: 2 free of 4 (in that host order)."""
    return host("a", 4, used=3), host("b", 4, used=1), host("c", 4, used=2)


@pytest.mark.parametrize("placement, first", [("first", "a"), ("pack", "a"), ("spread", "b")])
def test_placement_picks_the_host(placement, first):
    q = QueueView("normal")
    q.placement = placement
    job = pend(q)
    assert placed(plan(snap(q, *_three()))) == {job.id: [[first, 1]]}


def test_pack_takes_the_fewest_free_slots_that_fit_and_spread_spreads():
    q = QueueView("normal")
    q.placement = "pack"
    wide = pend(q, slots=2)  # a has 1 free: c is the fullest that fits
    assert placed(plan(snap(q, *_three()))) == {wide.id: [["c", 2]]}
    q = QueueView("normal")
    q.placement = "spread"
    jobs = [pend(q) for _ in range(3)]  # b (3 free), then b or c at 2 free each: b first
    got = placed(plan(snap(q, *_three())))
    assert [got[j.id][0][0] for j in jobs] == ["b", "b", "c"]


def test_order_comes_before_the_queues_placement():
    q = QueueView("normal")
    q.placement = "spread"
    job = pend(q, resreq="order[r15s]")
    a, b, c = _three()
    a.load = {"r15s": 0.1}
    b.load = c.load = {"r15s": 2.0}
    assert placed(plan(snap(q, a, b, c))) == {job.id: [["a", 1]]}


def test_a_queues_res_req_is_the_default_of_its_jobs_without_r():
    q = QueueView("normal")
    q.req = queue_req("select[ut < 0.5] order[r15s]")
    plain, wide, own = pend(q), pend(q, slots=2), pend(q, resreq="select[ut > 0.5]")
    busy = host("busy", 4, cpu=0.9, r15s=0.1)
    loaded, calm = host("loaded", 4, cpu=0.2, r15s=3.0), host("calm", 4, cpu=0.2, r15s=1.0)
    got = placed(plan(snap(q, busy, loaded, calm)))
    assert got == {plain.id: [["calm", 1]], wide.id: [["calm", 2]], own.id: [["busy", 1]]}
    q = QueueView("normal")
    q.req = queue_req("select[ut < 0.5]")
    job = pend(q)
    assert reason(plan(snap(q, busy)), job) == PR_SELECT


def test_a_policy_queue_and_a_host_order_queue_share_a_turn():
    spread, first = QueueView("spread"), QueueView("first")
    spread.placement = "spread"
    a, b, c = host("a", 4, used=3), host("b", 4, used=3), host("c", 4, used=2)
    mine = [pend(spread), pend(spread)]  # c (2 free), then a (1 free, first in host order)
    theirs = [pend(first), pend(first)]  # b, then c: a host left without a slot is passed
    known = {h.name: h for h in (a, b, c)}
    free = {h.name: h.free for h in (a, b, c)}
    p = plan(Snapshot(0.0, [spread, first], free, 4, 4, 0, known))
    assert placed(p) == {
        mine[0].id: [["c", 1]],
        mine[1].id: [["a", 1]],
        theirs[0].id: [["b", 1]],
        theirs[1].id: [["c", 1]],
    }


# --- load_sched in the scheduler


def test_a_host_past_load_sched_takes_no_job_of_the_queue():
    q = QueueView("normal")
    q.load_sched = loadthreshold.parse("ut=0.5")
    job = pend(q)
    p = plan(snap(q, host("busy", 4, cpu=0.9), host("calm", 4, cpu=0.4)))
    assert placed(p) == {job.id: [["calm", 1]]}
    q = QueueView("normal")
    q.load_sched = loadthreshold.parse("ut=0.5 mem=2G")
    first, second = pend(q), pend(q, user="v")
    p = plan(snap(q, host("busy", 4, cpu=0.9), host("small", 4, cpu=0.1, mem_gb=1)))
    assert not p.placements
    assert reason(p, first) == UT or reason(p, first) == MEM
    assert reason(p, second) in (UT, MEM)
    other = QueueView("other")  # another queue's thresholds hold nothing back
    mine = pend(other)
    assert placed(plan(snap(other, host("busy", 4, cpu=0.9)))) == {mine.id: [["busy", 1]]}


def test_a_host_lim_has_not_reported_takes_no_job_of_a_queue_with_thresholds():
    q = QueueView("normal")
    q.load_sched = loadthreshold.parse("ut=0.5")
    job = pend(q)
    assert reason(plan(snap(q, host("new", 4))), job) == PR_LOAD_UNKNOWN


def test_a_full_host_is_no_slot_not_load():
    q = QueueView("normal")
    q.load_sched = loadthreshold.parse("ut=0.5")
    job = pend(q, slots=2)
    p = plan(snap(q, host("calm", 2, used=1, cpu=0.1), host("busy", 1, cpu=0.9)))
    assert reason(p, job) == UT  # the busy host would take it but for its load
    p = plan(snap(q, host("calm", 2, used=1, cpu=0.1)))
    assert reason(p, job) == PR_NO_SLOT


# --- the thresholds' syntax


def test_thresholds_parse_in_lsfs_units():
    got = loadthreshold.parse("r15s=2.0 ut=90% mem=512M, swp=1G it=5")
    assert [(i, limit, up) for i, limit, up, _ in got] == [
        ("r15s", 2.0, True),
        ("ut", 0.9, True),
        ("mem", 512.0, False),
        ("swp", 1024.0, False),
        ("it", 5.0, False),
    ]
    assert loadthreshold.parse("") == ()
    assert UT == "The CPU utilization (ut) is beyond threshold"
    assert MEM == "The available memory (mem) is below threshold"


@pytest.mark.parametrize(
    "text, words",
    [
        ("cpu=2", "unknown load index 'cpu'"),
        ("r15s", "expected INDEX=VALUE"),
        ("r15s=fast", "r15s=fast: expected a number"),
        ("ut=-1", "expected a number >= 0"),
        ("mem=lots", "mem=lots: expected a size"),
        ("ut=0.5 ut=0.6", "ut given twice"),
    ],
)
def test_bad_thresholds_name_the_word(text, words):
    with pytest.raises(ValueError, match=words):
        loadthreshold.parse(text)


def test_load_stop_must_be_at_or_past_load_sched():
    p = loadthreshold.parse
    assert loadthreshold.looser(p("ut=0.9 mem=100"), p("ut=0.8 mem=200 r1m=3")) is None
    assert loadthreshold.looser(p("ut=0.9"), p("ut=0.9")) is None
    assert loadthreshold.looser(p("ut=0.7"), p("ut=0.8")) == "ut"
    assert loadthreshold.looser(p("mem=300"), p("mem=200")) == "mem"
    assert loadthreshold.looser(p("pg=10"), p("ut=0.5")) == "pg"  # no way back within load_sched


def _conf(tmp_path, queue_text):
    """lavalite.conf's path, with `queue_text` as its queues.conf."""
    write(tmp_path, "queues.conf", queue_text)
    return write(tmp_path, "lavalite.conf", "")


def test_config_check_names_file_line_and_key(tmp_path):
    errors = errors_of(
        _conf(
            tmp_path,
            "[serial]\nload_sched = r15s=2 cpu=3\nload_stop = ut=lots\nplacement = scatter\n"
            "[other]\nload_sched = ut=0.9\nload_stop = ut=0.8\nres_req = rusage[mem=100]\n"
            "[third]\nres_req = select[mem>\n",
        )
    )
    text = "\n".join(errors)
    assert "queues.conf:2: [serial] load_sched: 'cpu=3': unknown load index 'cpu'" in text
    assert "queues.conf:3: [serial] load_stop: ut=lots: expected a number" in text
    assert "queues.conf:4: [serial] placement: expected one of first|pack|spread" in text
    assert "queues.conf:7: [other] load_stop: ut needs a load_sched ut at the same load" in text
    assert "queues.conf:8: [other] res_req: a queue's res_req takes select[] and order[]" in text
    assert "queues.conf:10: [third] res_req: Bad resource requirement syntax" in text
    assert len(errors) == 6, errors
    good = config.load(_conf(tmp_path, "[serial]\nload_sched = ut=0.5\nload_stop = ut=0.9\n"))
    assert good.queues["serial"].load_stop == "ut=0.9"


# --- load_stop in mbatchd's core


def _stop_world(conf, store, core, jobs=3):
    """`jobs` jobs of queue serial running on h1, started one a second."""
    conf.queues["serial"].load_sched = "ut=0.5"
    conf.queues["serial"].load_stop = "ut=0.9"
    core.reconfigure(conf)
    core.host_register("h1", {"slots": jobs, "running": []}, 100.0)
    core.host_load({"h1": {"alive": True, "cpu": 0.1, "time": 100.0}}, 100.0)
    ids = []
    for i in range(jobs):
        ids.append(submit(core, store))
        core.schedule(100.0 + i)
        core.jobs[ids[-1]].start_time = 100.0 + i
    commit(store, core)
    return ids


def _sample(core, store, now, cpu):
    """LIM's view with a new sample of h1 taken at `now`; the orders the turn sends h1."""
    core.host_load({"h1": {"alive": True, "cpu": cpu, "time": now}}, now)
    return commit(store, core).get("h1", [])


def test_past_load_stop_one_job_a_sample_stops_newest_first_and_resumes(world):
    conf, store, core = world
    first, second, third = _stop_world(conf, store, core)
    states = lambda: [core.jobs[j].state for j in (first, second, third)]  # noqa: E731
    assert _sample(core, store, 200.0, 0.95) == [{"op": "suspend", "job": third, "attempt": 1}]
    assert core.jobs[third].reason == UT and core.wake
    core.host_load({"h1": {"alive": True, "cpu": 0.95, "time": 200.0}}, 200.5)
    assert states() == [RUN, RUN, SSUSP], "the same sample read again stops no other job"
    _sample(core, store, 201.0, 0.95)
    assert states() == [RUN, SSUSP, SSUSP]
    assert _sample(core, store, 202.0, 0.7) == [], "between the thresholds nothing moves"
    assert states() == [RUN, SSUSP, SSUSP]
    assert _sample(core, store, 203.0, 0.4) == [{"op": "resume", "job": second, "attempt": 1}]
    _sample(core, store, 204.0, 0.4)
    assert states() == [RUN, RUN, RUN] and not core.load_stopped


def test_a_job_stopped_by_its_user_meanwhile_stays_stopped(world):
    conf, store, core = world
    first, second = _stop_world(conf, store, core, jobs=2)
    _sample(core, store, 200.0, 0.95)
    core.stop(USER, {"jobs": [second]}, 200.5)  # SSUSP -> USUSP: now the user's to resume
    _sample(core, store, 201.0, 0.95)
    assert core.jobs[first].state == SSUSP
    _sample(core, store, 202.0, 0.1)
    _sample(core, store, 203.0, 0.1)
    assert (core.jobs[first].state, core.jobs[second].state) == (RUN, "USUSP")


def test_a_restarted_mbatchd_resumes_the_jobs_stopped_for_load(world, tmp_path):
    from roles.mbatchd.core import Core

    conf, store, core = world
    (job,) = _stop_world(conf, store, core, jobs=1)
    _sample(core, store, 200.0, 0.95)
    again = Core(conf, store.load(0), now=300.0)
    again.host_register("h1", {"slots": 1, "running": [[job, 1]], "suspended": [[job, 1]]}, 300.0)
    commit(store, again)
    assert again.load_stopped == {"h1": [job]}
    _sample(again, store, 301.0, 0.1)
    assert again.jobs[job].state == RUN


def test_a_job_on_two_hosts_stops_by_the_load_of_the_host_it_started_on(world):
    conf, store, core = world
    conf.queues["serial"].load_sched = "ut=0.5"
    conf.queues["serial"].load_stop = "ut=0.9"
    core.reconfigure(conf)
    for name in ("h1", "h2"):
        core.host_register(name, {"slots": 2, "running": []}, 100.0)
    loads = lambda cpu1, cpu2, t: {  # noqa: E731
        "h1": {"alive": True, "cpu": cpu1, "time": t},
        "h2": {"alive": True, "cpu": cpu2, "time": t},
    }
    core.host_load(loads(0.1, 0.1, 100.0), 100.0)
    job_id = submit(core, store, slots=4)
    core.schedule(100.0)
    job = core.jobs[job_id]
    assert job.hosts == [["h1", 2], ["h2", 2]]
    commit(store, core)
    core.host_load(loads(0.1, 0.95, 200.0), 200.0)
    assert job.state == RUN, "its other host's load does not stop it"
    core.host_load(loads(0.95, 0.1, 201.0), 201.0)
    assert job.state == SSUSP
    out = commit(store, core)
    assert {h: [m["op"] for m in msgs] for h, msgs in out.items()} == {
        "h1": ["suspend"],
        "h2": ["suspend"],
    }, "every host of it stops it"
    core.host_load(loads(0.1, 0.1, 202.0), 202.0)
    assert job.state == RUN
