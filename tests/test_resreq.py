"""-R, -m, -x and -n MIN,MAX without processes: the parser (lavalite.resreq), the scheduler's
placement of jobs that ask more than free slots (scheduler.fit), and mbatchd's core holding and
giving back every host of a job placed on several (roles/mbatchd/placement.py)."""

from collections import deque

import pytest
from test_core import USER, commit, submit, world  # noqa: F401  (world is a fixture)

from lavalite.model import (
    PR_ASKED_HOSTS,
    PR_EXCLUSIVE,
    PR_NO_SLOT,
    PR_RUSAGE_MEM,
    PR_SELECT,
    PR_SPAN,
    RUN,
    Host,
    Job,
)
from lavalite.protocol import ProtocolError
from lavalite.resreq import MB, ResReqError, host_facts, needs, parse, parse_hosts
from roles.mbatchd.core import Core
from scheduler import QueueView, Snapshot, plan
from store import Store

GB = 1 << 30


# --- the parser


def facts(**kw):
    base = {"labels": frozenset(kw.pop("labels", ())), "maxmem": 8000.0, "mem": 6000.0}
    return {**base, **kw}


@pytest.mark.parametrize(
    "text, host, expected",
    [
        ("mem>1000", facts(), True),  # a bare string is select (LSF)
        ("select[mem>7000]", facts(), False),
        ("select[mem>1000 && ncpus>=4]", facts(ncpus=4), True),
        ("select[mem>1000 && ncpus>=4]", facts(ncpus=2), False),
        ("select[gpu]", facts(labels=["gpu"]), True),
        ("select[gpu]", facts(), False),
        ("select[!gpu && (ut<0.5 || r1m<1)]", facts(ut=0.9, r1m=0.2), True),
        ("select[defined(gpu)]", facts(labels=["gpu"]), True),
        ("select[type==X86_64]", facts(type="X86_64"), True),
        ("select[type!=X86_64]", facts(type="X86_64"), False),
        ("select[type==any]", facts(), True),
        ("select[swp>1]", facts(), False),  # an index the host does not report: no match
        ("select[mem>=6000 && maxmem==8000]", facts(), True),
        ("select[swap>100 && cpu<1]", facts(swp=200, r1m=0.5), True),  # LSF's aliases
    ],
)
def test_select_over_host_facts(text, host, expected):
    assert parse(text).select(host) is expected


def test_sections_rusage_units_span_order():
    req = parse("select[mem>100] rusage[mem=500] span[ptile=2] order[-r15s:mem]")
    assert (req.mem, req.span_hosts, req.ptile) == (500 * MB, 0, 2)
    assert req.order == (("r15s", True), ("mem", True))  # -r15s: the larger first
    assert parse("rusage[mem=2G]").mem == 2 * GB
    assert parse("rusage[mem=1.5GB]").mem == int(1.5 * GB)
    assert parse("span[hosts=1]").span_hosts == 1
    assert parse("order[r1m]").order == (("r1m", False),)  # a run queue: the smaller first


@pytest.mark.parametrize(
    "text, words",
    [
        ("select[mem>]", "Bad resource requirement syntax: select[mem>] ends too soon"),
        ("mem>>3", "Bad resource requirement syntax: unexpected '>'"),
        ("select[mem>1000", "Bad resource requirement syntax: missing ] in 'select[mem>1000'"),
        ("select[mem>1]]", "Bad resource requirement syntax: at ']'"),
        ("select[mem > 1 &]", "Bad resource requirement syntax: at '&'"),
        ("select[mem>1] select[mem>2]", "select[] given twice"),
        ("foo[1]", "unknown section 'foo[]'"),
        ("select[gpu>1]", "'gpu' is no numeric load index"),
        ("select[type<3]", "'type' compares with == or != only"),
        ("select[type==local]", "type==local is not supported"),
        ("order[foo]", "order[] takes load indices"),
        ("rusage[mem=-5]", "Bad resource requirement syntax: memory '-5'"),
        ("affinity[core(1)]", "the affinity[] section of -R is not supported"),
        ("same[type]", "the same[] section of -R is not supported"),
        ("cu[type=enclosure]", "the cu[] section of -R is not supported"),
        ("{select[mem>1]} || {select[mem>2]}", "alternative resource requirements"),
        ("2*{select[mem>1]} + {select[gpu]}", "compound and alternative"),
        ("rusage[swp=10]", "rusage[swp] is not supported"),
        ("rusage[mem=10:duration=5]", "rusage[] options ('10:duration=5') are not supported"),
        ("rusage[mem=10 || mem=20]", "alternative or per-host/per-task rusage[]"),
        ("span[hosts=2]", "span[hosts=2] is not supported"),
        ("span[ptile=0]", "span[ptile=0] is not supported"),
        ("", "empty string"),
    ],
)
def test_bad_strings_are_refused_naming_the_token(text, words):
    with pytest.raises(ResReqError) as exc:
        parse(text)
    assert words in str(exc.value)


def test_host_list_with_preference_levels():
    assert parse_hosts("h1 h2+2 h3+") == {"h1": 0, "h2": 2, "h3": 1}
    for bad in ("", "h1+x", "+2", "h1 others", "~h2"):
        with pytest.raises(ResReqError):
            parse_hosts(bad)


def test_host_facts_in_lsf_units():
    load = {
        "mem_avail": 3 * GB,
        "mem_total": 4 * GB,
        "cpu": 0.25,
        "loadavg": (0.5, 0.4, 0.3),
        "ncpu": 8,
        "type": "X86_64",
    }
    got = host_facts(load, ["gpu"])
    assert got["mem"] == 3072 and got["maxmem"] == 4096 and got["ut"] == 0.25
    assert (got["ncpus"], got["r1m"], got["r15m"], got["type"]) == (8, 0.5, 0.3, "X86_64")
    assert got["labels"] == {"gpu"} and "swp" not in got


# --- the scheduler


_seq = iter(range(1, 10**6))


def pend(q, slots=1, user="u", **spec):
    job = Job(next(_seq), user, 1000, q.name, "j", spec, slots=slots)
    job.needs = needs(spec, slots)
    job.pend_seq = job.id
    q.pending.setdefault(user, deque()).append((job.pend_seq, job))
    return job


def host(name, slots, used=0, labels=(), mem_gb=None, **load):
    h = Host(name, slots)
    h.status, h.used = "ok", used
    if mem_gb is not None:
        load.update(mem_avail=mem_gb * GB, mem_total=mem_gb * GB)
    h.load, h.labels = load, list(labels)
    return h


def snap(q, *hosts):
    known = {h.name: h for h in hosts}
    free = {h.name: h.free for h in hosts if h.free > 0}
    return Snapshot(0.0, [q], free, sum(free.values()), max(h.slots for h in hosts), 0, known)


def reason(p, job):
    """Why the plan left `job` pending: its own reason (no host eligible), else its group's."""
    return p.reasons.get(("job", job.id)) or p.reasons.get((job.queue, job.user))


def placed(p):
    """{job id: [[host, slots], ...]} of a plan."""
    return {j.id: p.wide.get(i, [[h, j.slots]]) for i, (j, h) in enumerate(p.placements)}


def test_select_takes_only_matching_hosts_and_says_why_not():
    q = QueueView("normal")
    big = pend(q, resreq="select[mem>6000 && gpu]")
    p = plan(snap(q, host("a", 4, mem_gb=16), host("b", 4, mem_gb=16, labels=["gpu"])))
    assert placed(p) == {big.id: [["b", 1]]}
    q = QueueView("normal")
    never = pend(q, resreq="select[mem>64000]")
    after = pend(q)  # the user's next job is not held behind one no host is eligible for
    p = plan(snap(q, host("a", 4, mem_gb=16)))
    assert placed(p) == {after.id: [["a", 1]]} and reason(p, never) == PR_SELECT


def test_rusage_reserves_memory_on_the_host_while_running():
    """rusage[mem] is per slot; what running jobs reserve (Host.reserved) and what this turn
    placed both count, so a 16 GB host takes three 5 GB jobs, not four."""
    q = QueueView("normal")
    jobs = [pend(q, resreq="rusage[mem=5G]") for _ in range(4)]
    p = plan(snap(q, host("a", 8, mem_gb=16)))
    assert list(placed(p)) == [j.id for j in jobs[:3]]
    assert reason(p, jobs[3]) == PR_RUSAGE_MEM
    busy = host("a", 8, used=2, mem_gb=16)
    busy.reserved = 12 * GB  # two running jobs hold 12 GB of it
    q = QueueView("normal")
    big = pend(q, resreq="rusage[mem=5G]")
    assert reason(plan(snap(q, busy)), big) == PR_RUSAGE_MEM
    q = QueueView("normal")
    two = pend(q, slots=2, resreq="rusage[mem=3G]")  # 6 GB for two slots: 4 GB left, no
    small = pend(q, user="v", resreq="rusage[mem=3G]")
    p = plan(snap(q, busy))
    assert list(placed(p)) == [small.id] and two.id not in placed(p)


def test_order_sorts_candidates_best_first():
    q = QueueView("normal")
    jobs = [pend(q, resreq=r) for r in ("order[mem]", "order[r1m]", "order[-mem]")]
    hosts = (
        host("low", 4, mem_gb=2, loadavg=(3.0, 3.0, 3.0)),
        host("high", 4, mem_gb=32, loadavg=(0.1, 0.1, 0.1)),
        host("mid", 4, mem_gb=8, loadavg=(1.0, 1.0, 1.0)),
    )
    got = placed(plan(snap(q, *hosts)))
    assert [got[j.id][0][0] for j in jobs] == ["high", "high", "low"]


def test_asked_hosts_restrict_and_prefer():
    q = QueueView("normal")
    pinned = pend(q, asked_hosts={"c": 0})
    preferred = pend(q, asked_hosts={"a": 0, "b": 2})
    nowhere = pend(q, user="v", asked_hosts={"d": 0})
    hosts = [host(n, 2) for n in "abcd"]
    hosts[3].used = 2  # d is full
    p = plan(snap(q, *hosts))
    assert placed(p) == {pinned.id: [["c", 1]], preferred.id: [["b", 1]]}
    assert reason(p, nowhere) == PR_ASKED_HOSTS and nowhere.id not in placed(p)


def test_exclusive_runs_alone_and_keeps_others_off():
    q = QueueView("normal")
    first = pend(q)
    alone = pend(q, user="x", exclusive=True)
    after = pend(q, user="y")
    p = plan(snap(q, host("a", 4), host("b", 4)))
    # a took the first job, so the exclusive one goes to b, and nothing joins it there
    assert placed(p) == {first.id: [["a", 1]], alone.id: [["b", 1]], after.id: [["a", 1]]}
    q = QueueView("normal")
    waiting = pend(q, exclusive=True)
    assert reason(plan(snap(q, host("a", 4, used=1))), waiting) == PR_EXCLUSIVE
    taken = host("a", 4)
    taken.exclusive = 1  # an exclusive job runs there: the host is full for everyone
    assert taken.free == 0


def test_span_ptile_and_hosts_1():
    q = QueueView("normal")
    wide = pend(q, slots=4, resreq="span[ptile=2]")
    one = pend(q, user="v", slots=3, resreq="span[hosts=1]")
    p = plan(snap(q, host("a", 3), host("b", 2), host("c", 4)))
    assert placed(p) == {wide.id: [["a", 2], ["b", 2]], one.id: [["c", 3]]}
    q = QueueView("normal")
    pend(q, slots=4, resreq="span[ptile=4]")
    assert plan(snap(q, host("a", 3), host("b", 3))).reasons[("normal", "u")] == PR_SPAN


def test_wide_placement_is_all_or_nothing():
    """A job that cannot have all its slots takes none: the next user's job gets them."""
    q = QueueView("normal")
    wide = pend(q, slots=6, resreq="span[ptile=3]")  # c could give 3, nobody else
    narrow = pend(q, user="v", slots=2)
    p = plan(snap(q, host("a", 2), host("b", 2), host("c", 4, used=1)))
    assert placed(p) == {narrow.id: [["a", 2]]} and wide.id not in placed(p)
    assert p.reasons[("normal", "u")] == PR_SPAN
    q = QueueView("normal")
    pend(q, slots=6)
    assert plan(snap(q, host("a", 2), host("b", 2))).reasons[("normal", "u")] == PR_NO_SLOT


def test_slots_min_max_takes_what_is_free():
    q = QueueView("normal")
    ranged = pend(q, slots=2, slots_max=8)
    p = plan(snap(q, host("a", 4, used=1), host("b", 2)))
    assert placed(p) == {ranged.id: [["a", 3], ["b", 2]]}
    q = QueueView("normal")
    pend(q, slots=4, slots_max=6)
    assert plan(snap(q, host("a", 3))).reasons[("normal", "u")] == PR_NO_SLOT
    q = QueueView("normal")
    one = pend(q, slots=2, slots_max=6, resreq="span[hosts=1]")
    assert placed(plan(snap(q, host("a", 3), host("b", 5)))) == {one.id: [["b", 5]]}


def test_plain_jobs_keep_the_fast_path():
    """No Needs and one host with room: one host, no allocation recorded."""
    q = QueueView("normal")
    jobs = [pend(q, slots=2) for _ in range(3)]
    p = plan(snap(q, host("a", 4), host("b", 2)))
    assert [(j.id, h) for j, h in p.placements] == [
        (jobs[0].id, "a"),
        (jobs[1].id, "a"),
        (jobs[2].id, "b"),
    ]
    assert p.wide == {}


# --- mbatchd's core


def test_core_holds_every_host_and_gives_them_back(world):
    conf, store, core = world
    for name in ("h1", "h2"):
        core.host_register(name, {"slots": 2, "running": []}, 100.0)
    core.host_load({h: {"mem_avail": GB, "mem_total": GB} for h in ("h1", "h2")}, 100.0)
    job_id = submit(core, store, slots=4, resreq="span[ptile=2] rusage[mem=100]")
    assert core.schedule(100.0) == 1
    job = core.jobs[job_id]
    assert job.state == RUN and job.hosts == [["h1", 2], ["h2", 2]]
    assert [core.hosts[h].used for h in ("h1", "h2")] == [2, 2]
    assert core.hosts["h2"].reserved == 200 * MB and core.total_free == 0
    outbox = commit(store, core)
    assert list(outbox) == ["h1"]  # it starts on the first host only
    (spec,) = outbox["h1"][0]["jobs"]
    assert spec["hosts"] == [["h1", 2], ["h2", 2]] and spec["memory"] == 200 * MB
    core.kill(USER, {"jobs": [job_id]}, 101.0)
    assert set(core.out.outbox) == {"h1", "h2"}  # killed on all its hosts
    commit(store, core)
    core.reports(
        "h1", [{"rid": 1, "job": job_id, "attempt": 1, "kind": "exit", "reason": "killed"}], 102.0
    )
    assert [(core.hosts[h].used, core.hosts[h].reserved) for h in ("h1", "h2")] == [(0, 0)] * 2
    assert core.total_free == 4 and not core.host_jobs["h2"]


def running_on_two_hosts(core, store):
    """A job of 4 slots placed on h1 and h2 (2 slots each: it spans both), committed."""
    for name in ("h1", "h2"):
        core.host_register(name, {"slots": 2, "running": []}, 100.0)
    job_id = submit(core, store, slots=4)
    core.schedule(100.0)
    commit(store, core)
    return job_id


def test_losing_any_host_of_a_job_counts(world):
    conf, store, core = world
    job_id = running_on_two_hosts(core, store)
    core.host_gone("h2", 101.0)
    core.tick(101.0 + conf.mbatchd.node_lost_grace + 1)
    job = core.jobs[job_id]
    assert job.stat == "FAILED(node_lost)" and core.hosts["h1"].used == 0
    assert core.out.outbox["h1"][0] == {"op": "kill", "job": job_id, "attempt": 1}


def test_hosts_survive_a_restart(world, tmp_path):
    conf, store, core = world
    for name in ("h1", "h2"):
        core.host_register(name, {"slots": 2, "running": []}, 100.0)
    job_id = submit(core, store, slots=2, slots_max=4, exclusive=True)
    core.schedule(100.0)
    commit(store, core)
    again = Core(conf, Store(str(tmp_path / "db")).load(0), now=200.0)
    job = again.jobs[job_id]
    assert job.hosts == [["h1", 2], ["h2", 2]] and job.slots == 4
    assert [(again.hosts[h].used, again.hosts[h].exclusive) for h in ("h1", "h2")] == [(2, 1)] * 2
    again.host_register("h2", {"slots": 2, "running": []}, 201.0)
    assert "h2" not in again.out.outbox, "not sent again to a host where it did not start"


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"resreq": "select[mem>"}, "-R: Bad resource requirement syntax"),
        ({"resreq": "affinity[core(1)]"}, "-R: the affinity[] section of -R is not supported"),
        ({"asked_hosts": "nohost"}, "nohost: Bad host name, host group name or cluster name"),
        ({"asked_hosts": {"h1": "x"}}, "asked_hosts (-m) must be a host list"),
        ({"slots": 3, "slots_max": 2}, "slots_max (-n 3,MAX) must be an integer from 3"),
    ],
)
def test_mbatchd_checks_again(world, spec, words):
    conf, store, core = world
    core.host_register("h1", {"slots": 2, "running": []}, 100.0)
    before = core.next_id
    with pytest.raises(ProtocolError) as exc:
        core.submit(USER, {"spec": {"cmd": ["true"], **spec}}, 100.0, store.env_id)
    assert words in exc.value.message and core.next_id == before
