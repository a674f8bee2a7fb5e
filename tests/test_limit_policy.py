"""[limit NAME] sections: the scheduler's checks on hand-built snapshots (pure), the counters
mbatchd keeps, and config-check's refusals. The real cluster: tests/test_limit_cluster.py."""

import textwrap
from collections import deque

import pytest

from lavalite import config
from lavalite.model import Host, Job
from lavalite.resreq import needs
from roles.mbatchd.limits import build
from scheduler import QueueView, Snapshot, plan
from scheduler.limits import Limits, Members, Rule

_seq = iter(range(1, 10**6))
MB = 1 << 20


def pend(q, user, n=1, slots=1, **spec):
    jobs = []
    for _ in range(n):
        job = Job(next(_seq), user, 1000, q.name, "j", spec, slots=slots)
        job.needs = needs(spec, slots)
        job.pend_seq = job.id
        q.pending.setdefault(user, deque()).append((job.pend_seq, job))
        jobs.append(job)
    return jobs


def rule(name, slots=None, mem=None, jobs=None, **consumers):
    """Rule("name", slots=2, per_user="all") as [limit name] would say it."""
    members = {}
    for key, words in consumers.items():
        kind = key.removeprefix("per_").rstrip("s") + "s"
        members[kind] = Members(words.split(), per=key.startswith("per_"))
    return Rule(name, (slots, mem, jobs), **members)


def snap(queues, free, limits, slots=8):
    known = {}
    for name in free:
        known[name] = Host(name, slots)
        known[name].status = "ok"
        known[name].load = {"mem_avail": 64 << 30, "mem_total": 64 << 30}
    return Snapshot(0.0, queues, free, sum(free.values()), slots, 0, known, limits)


def placed(p):
    return [j for j, _ in p.placements]


def reason(p, job):
    return (
        p.reasons.get(("job", job.id))
        or p.reasons.get((job.queue, job.user))
        or p.reasons.get((job.queue, None))
    )


def running(limits, job, host):
    """A job already running on `host`, counted as mbatchd counts it."""
    job.host = host
    limits.count(job, [(host, job.slots)], +1)


def test_per_user_slots_hold_that_user_and_let_others_run():
    limits = Limits([rule("peruser", slots=2, per_user="all")])
    q = QueueView("normal")
    running(limits, pend(QueueView("normal"), "alice")[0], "h1")
    alice, bob = pend(q, "alice", 5), pend(q, "bob", 5)
    p = plan(snap([q], {"h1": 10}, limits))
    assert placed(p) == alice[:1] + bob[:2]
    assert reason(p, alice[1]) == (
        "Resource (slot) limit defined on user or user group has been reached "
        "(Resource limit name: peruser)"
    )
    assert "peruser" in reason(p, bob[2])


def test_users_together_share_one_counter():
    limits = Limits([rule("lab", slots=3, users="alice bob")])
    q = QueueView("normal")
    pend(q, "alice", 3), pend(q, "bob", 3)
    carol = pend(q, "carol", 3)
    p = plan(snap([q], {"h1": 20}, limits))
    got = placed(p)
    assert len([j for j in got if j.user in ("alice", "bob")]) == 3
    assert carol == [j for j in got if j.user == "carol"]  # not named: not limited


def test_exclusion_and_groups_of_users():
    conf = _conf(
        """
        [normal]
        [usergroup lab]
        members = alice bob
        [limit notbob]
        per_user = lab ~bob
        jobs = 1
        """
    )
    limits = build(conf)
    q = QueueView("normal")
    alice, bob = pend(q, "alice", 3), pend(q, "bob", 3)
    p = plan(snap([q], {"h1": 20}, limits))
    assert placed(p) == alice[:1] + bob


def test_per_project_jobs_hold_the_job_not_the_users_other_projects():
    limits = Limits([rule("perproj", jobs=1, per_project="all")])
    q = QueueView("normal")
    p1 = pend(q, "alice", 2, project="p1")
    p2 = pend(q, "alice", 1, project="p2")
    plain = pend(q, "alice", 2)  # no -P: project "default"
    p = plan(snap([q], {"h1": 20}, limits))
    assert placed(p) == [p1[0], p2[0], plain[0]]
    assert reason(p, p1[1]) == (
        "Resource (jobs) limit defined on project has been reached (Resource limit name: perproj)"
    )


def test_per_host_slots_narrow_the_hosts():
    limits = Limits([rule("perhost", slots=1, per_host="all")])
    q = QueueView("normal")
    jobs = pend(q, "alice", 4)
    p = plan(snap([q], {"h1": 4, "h2": 4}, limits))
    assert sorted(h for _, h in p.placements) == ["h1", "h2"]
    assert "(Resource limit name: perhost)" in reason(p, jobs[2])


def test_hosts_together_share_a_counter_and_others_stay_free():
    limits = Limits([rule("pair", slots=3, hosts="h1 h2")])
    q = QueueView("normal")
    jobs = pend(q, "alice", 8)
    p = plan(snap([q], {"h1": 4, "h2": 4, "h3": 2}, limits))
    hosts = [h for _, h in p.placements]
    assert len([h for h in hosts if h in ("h1", "h2")]) == 3 and hosts.count("h3") == 2
    assert len(placed(p)) == 5 and jobs[5] not in placed(p)


def test_queue_limit_holds_every_user_of_that_queue_only():
    limits = Limits([rule("short", slots=2, queues="short")])
    short, other = QueueView("short", priority=50), QueueView("other")
    a, b = pend(short, "alice", 2), pend(short, "bob", 2)
    o = pend(other, "carol", 3)
    p = plan(snap([short, other], {"h1": 20}, limits))
    assert placed(p) == a + o
    assert "defined on queue" in p.reasons[("short", None)] and b[0] not in placed(p)


def test_memory_counts_rusage_per_slot_or_the_jobs_limit():
    limits = Limits([rule("mem", mem=1024 * MB, per_user="all")])
    q = QueueView("normal")
    big = pend(q, "alice", 3, memory=512 * MB)  # -M: two fit in 1024 MB
    rus = pend(q, "bob", 3, slots=2, resreq="rusage[mem=200]")  # 400 MB a job: two fit
    free = pend(q, "carol", 2)  # asks no memory: the limit does not hold it
    p = plan(snap([q], {"h1": 40}, limits))
    assert placed(p) == big[:2] + rus[:2] + free
    assert "Resource (mem) limit" in reason(p, big[2])


def test_per_host_memory_counts_the_jobs_limit_where_it_starts():
    limits = Limits([rule("hostmem", mem=1024 * MB, per_host="all")])
    q = QueueView("normal")
    jobs = pend(q, "alice", 3, memory=600 * MB)
    p = plan(snap([q], {"h1": 4, "h2": 4}, limits))
    assert sorted(h for _, h in p.placements) == ["h1", "h2"]
    assert "Resource (mem) limit defined on host" in reason(p, jobs[2])


def test_several_limits_at_once_each_must_have_room():
    limits = Limits([rule("peruser", slots=3, per_user="all"), rule("all", jobs=4, users="all")])
    q = QueueView("normal")
    pend(q, "alice", 5), pend(q, "bob", 5)
    p = plan(snap([q], {"h1": 40}, limits))
    assert len(placed(p)) == 4
    assert all(len([j for j in placed(p) if j.user == u]) <= 3 for u in ("alice", "bob"))


def test_slots_range_takes_no_more_than_the_limit_leaves():
    limits = Limits([rule("peruser", slots=3, per_user="all")])
    q = QueueView("normal")
    job = pend(q, "alice", 1, slots=1, slots_max=8)[0]
    p = plan(snap([q], {"h1": 8}, limits))
    assert p.placements == [(job, "h1")] and p.wide[0] == [["h1", 3]]


def test_counters_follow_jobs_and_a_turn_does_not_touch_them():
    limits = Limits(
        [rule("peruser", slots=4, per_user="all"), rule("perhost", jobs=1, per_host="all")]
    )
    q = QueueView("normal")
    jobs = pend(q, "alice", 2, slots=2)
    p = plan(snap([q], {"h1": 8, "h2": 8}, limits))
    assert len(p.placements) == 2 and limits.used == {}  # the plan charges a copy
    for job, host in p.placements:
        running(limits, job, host)
    assert limits.used[("peruser", "alice", None, None, None)] == [4, 0, 2]
    for job in jobs:
        limits.count(job, [(job.host, job.slots)], -1)
    assert limits.used == {}


def test_no_limits_no_change():
    q = QueueView("normal")
    jobs = pend(q, "alice", 3)
    assert placed(plan(snap([q], {"h1": 3}, None))) == jobs


# --- configuration


def _conf(text, tmp=None):
    import tempfile

    d = tmp or tempfile.mkdtemp()
    with open(f"{d}/lavalite.conf", "w") as f:
        f.write(f"[paths]\nstate_dir = {d}\n[mbatchd]\ndefault_queue = normal\n")
    with open(f"{d}/queues.conf", "w") as f:
        f.write(textwrap.dedent(text))
    return config.load(f"{d}/lavalite.conf")


def test_a_limit_is_read_with_units(tmp_path):
    conf = _conf(
        """
        [normal]
        [limit big]
        per_user = all
        queues = normal
        mem = 2G
        slots = 8
        """,
        tmp_path,
    )
    lc = conf.limits["big"]
    assert (lc.mem, lc.slots, lc.jobs, lc.per_user, lc.queues) == (
        2 << 30,
        8,
        None,
        ["all"],
        ["normal"],
    )


@pytest.mark.parametrize(
    "body, message",
    [
        ("users = alice", ":3: [limit x]: no resource: give slots, mem or jobs"),
        ("slots = -1", ":4: [limit x] slots: '-1' out of range: expected integer >= 0"),
        ("slots = many", ":4: [limit x] slots: expected an integer, got 'many'"),
        ("mem = lots", ":4: [limit x] mem: expected a size such as 512 (MB), 512M, 2G, got 'lots'"),
        ("jobs = 1\nper_cpu = all", ":5: [limit x] per_cpu: unknown key"),
        (
            "jobs = 1\nusers = a\nper_user = b",
            ":6: [limit x] per_user: give users or per_user, not both",
        ),
        ("jobs = 1\nhosts =", ":5: [limit x] hosts: names no hosts"),
    ],
)
def test_config_check_names_file_line_and_key(tmp_path, body, message):
    with pytest.raises(config.ConfigError) as exc:
        _conf("\n[normal]\n[limit x]\n" + body + "\n", tmp_path)
    assert [e for e in exc.value.errors if message in e], exc.value.errors
    assert all(e.startswith(str(tmp_path / "queues.conf")) for e in exc.value.errors)


# --- mbatchd's counters, driven through its core (no sockets; the store is a file)


def test_core_counts_jobs_in_at_start_and_out_at_end_retry_and_reload(tmp_path):
    from roles.mbatchd.core import Core
    from store import Store

    text = "\n[normal]\n[limit peruser]\nper_user = all\nslots = 1\n"
    conf = _conf(text, tmp_path)
    store = Store(str(tmp_path / "db"))
    core = Core(conf, store.load(0), now=100.0)
    core.host_register("h1", {"slots": 4, "running": []}, 100.0)
    alice = {"role": "user", "user": "alice", "uid": 1000, "host": "h1"}
    spec = {"cmd": ["true"], "env": {}, "retries": 1}
    ids = [core.submit(alice, {"spec": spec}, 100.0, store.env_id)["job"] for _ in range(3)]
    key = ("peruser", "alice", None, None, None)
    assert core.schedule(100.0) == 1 and core.limits.used == {key: [1, 0, 1]}
    assert core.schedule(100.0) == 0
    assert "peruser" in core._view(core.jobs[ids[1]], 100.0)["pend_reason"]
    # a failed attempt with a retry left goes back to PEND: out of the counter
    first = next(i for i in ids if core.jobs[i].state == "RUN")
    rep = {"rid": 1, "kind": "exit", "job": first, "attempt": 1, "exit_code": 2}
    core.reports("h1", [rep], 101.0)
    assert core.limits.used == {}
    assert core.schedule(101.0) == 1 and core.limits.used == {key: [1, 0, 1]}
    # a reload that raises the limit counts the running job again; the next pass starts one
    with open(tmp_path / "queues.conf", "w") as f:
        f.write(text.replace("slots = 1", "slots = 2"))
    core.reconfigure(config.load(str(tmp_path / "lavalite.conf")))
    assert core.limits.used == {key: [1, 0, 1]}
    assert core.schedule(102.0) == 1 and core.limits.used == {key: [2, 0, 2]}
