"""Slot reservations and backfill (scheduler/reserve.py): snapshots built by hand, plans checked."""

from collections import deque

import pytest

from lavalite import config
from lavalite.model import Host, Job
from scheduler import QueueView, Snapshot, plan

_seq = iter(range(1, 10**6))


def pend(q, user, slots=1, walltime=None):
    j = Job(next(_seq), user, 1000, q.name, "j", {"walltime": walltime}, slots=slots)
    j.pend_seq = j.id
    q.pending.setdefault(user, deque()).append((j.pend_seq, j))
    return j


def turn(q, free, last=None, now=0.0, ends=None):
    hosts = {h: Host(h, 4) for h in ("h1", "h2", "h3")}
    snap = Snapshot(
        now, [q], free, sum(free.values()), 4, None, hosts, reservations=last, ends=ends
    )
    return plan(snap)


def placed(p):
    return [j for j, _ in p.placements]


def reserving_queue(**kw):
    q = QueueView("wide")
    q.reserve = 60.0
    for k, v in kw.items():
        setattr(q, k, v)
    return q


def test_wide_job_reserves_and_narrow_jobs_do_not_take_reserved_slots():
    q = reserving_queue()
    wide = pend(q, "alice", slots=4)
    narrow = [pend(q, "bob") for _ in range(3)]
    p = turn(q, {"h1": 1})
    assert placed(p) == []
    assert p.reservations[wide.id].hosts == {"h1": 1}
    # another slot frees: the wide job holds both, bob still gets none
    p = turn(q, {"h1": 2}, p.reservations, now=10)
    assert placed(p) == [] and p.reservations[wide.id].hosts == {"h1": 2}
    assert p.reservations[wide.id].since == 0.0
    p = turn(q, {"h1": 4}, p.reservations, now=20)
    assert placed(p) == [wide] and p.reservations == {}
    assert narrow[0].state == "PEND"


def test_without_slot_reserve_narrow_jobs_take_the_free_slots():
    q = QueueView("fifo")
    pend(q, "alice", slots=4)
    bob = pend(q, "bob")
    p = turn(q, {"h1": 1})
    assert placed(p) == [bob] and p.reservations == {}


def test_short_job_backfills_and_jobs_without_or_with_long_limits_do_not():
    q = reserving_queue(backfill=True)
    wide = pend(q, "alice", slots=4)
    long_job = pend(q, "bob", walltime=500)
    no_limit = pend(q, "carol")
    short = pend(q, "dave", walltime=50)

    def ends(host):  # three slots busy on h1 until t=100
        return [(100.0, 3)] if host == "h1" else []

    p = turn(q, {"h1": 1}, ends=ends)
    res = p.reservations[wide.id]
    assert res.start == 100.0 and placed(p) == [short]
    assert long_job.state == no_limit.state == "PEND"
    # the backfill job holds the slot now: the reservation gave it up, its time runs on
    assert res.hosts == {} and res.since == 0.0
    short.state = "RUN"
    p = turn(q, {"h1": 1}, p.reservations, now=30, ends=ends)  # the backfill job ended
    assert placed(p) == [] and p.reservations[wide.id].hosts == {"h1": 1}
    assert p.reservations[wide.id].since == 0.0


def test_backfill_only_in_a_backfill_queue():
    q = reserving_queue()
    wide = pend(q, "alice", slots=4)
    pend(q, "dave", walltime=50)
    p = turn(q, {"h1": 1}, ends=lambda host: [(100.0, 3)])
    p = turn(q, {"h1": 1}, p.reservations, now=5, ends=lambda host: [(100.0, 3)])
    assert placed(p) == [] and p.reservations[wide.id].hosts == {"h1": 1}


def test_no_estimate_when_a_running_job_has_no_run_limit():
    q = reserving_queue(backfill=True)
    wide = pend(q, "alice", slots=4)
    short = pend(q, "dave", walltime=1)

    def ends(host):  # of h1's three busy slots, two run without a run limit
        return [(100.0, 1), (float("inf"), 2)] if host == "h1" else []

    p = turn(q, {"h1": 1}, ends=ends)
    assert p.reservations[wide.id].start is None
    p = turn(q, {"h1": 1}, p.reservations, now=1, ends=ends)
    assert short.state == "PEND" and placed(p) == []


def test_a_job_over_several_hosts_is_estimated_from_every_host():
    q = reserving_queue()
    wide = pend(q, "alice", slots=4)
    ends = {"h1": [(90.0, 3)], "h2": [(30.0, 2)], "h3": [(50.0, 2)]}
    p = turn(q, {"h1": 1}, ends=ends.get)
    # one slot held, three to come: h2's two at 30, then one of h3's at 50
    assert p.reservations[wide.id].start == 50.0


def test_reservation_expires_and_the_job_reserves_again_a_turn_later():
    q = reserving_queue()
    wide = pend(q, "alice", slots=4)
    bob = [pend(q, "bob") for _ in range(2)]
    p = turn(q, {"h1": 1})
    assert p.reservations[wide.id].since == 0.0
    # its reservation time (60 s) is up: dropped, and for this turn the slot is anyone's
    p = turn(q, {"h1": 1}, p.reservations, now=60)
    assert placed(p) == [bob[0]] and p.reservations == {}
    bob[0].state = "RUN"
    p = turn(q, {"h1": 1}, p.reservations, now=61)
    assert placed(p) == [] and p.reservations[wide.id].since == 61


def test_multi_host_reservation():
    q = reserving_queue()
    wide = pend(q, "alice", slots=4)
    pend(q, "bob")
    p = turn(q, {"h1": 1, "h2": 1})
    assert p.reservations[wide.id].hosts == {"h1": 1, "h2": 1}
    p = turn(q, {"h1": 2, "h2": 1, "h3": 1}, p.reservations, now=1)
    assert placed(p) == [wide]
    assert sorted(map(tuple, p.wide[0])) == [("h1", 2), ("h2", 1), ("h3", 1)]


def test_a_reserved_slot_that_is_no_longer_free_is_no_longer_held():
    q = reserving_queue()
    wide = pend(q, "alice", slots=4)
    p = turn(q, {"h1": 2})
    p = turn(q, {"h1": 1}, p.reservations, now=1)
    assert p.reservations[wide.id].hosts == {"h1": 1}


def test_config_keys_and_their_errors(tmp_path):
    (tmp_path / "lavalite.conf").write_text("")
    queues = tmp_path / "queues.conf"
    queues.write_text("[serial]\n[wide]\nslot_reserve = MAX_RESERVE_TIME[5m]\nbackfill = yes\n")
    conf = config.load(str(tmp_path / "lavalite.conf"))
    assert conf.queues["wide"].slot_reserve == 300.0 and conf.queues["wide"].backfill is True
    assert conf.queues["serial"].slot_reserve == 0.0 and conf.queues["serial"].backfill is False
    queues.write_text(
        "[serial]\nslot_reserve = RESERVE[5]\n[b]\nslot_reserve = MAX_RESERVE_TIME[0]\n"
        "[c]\nslot_reserve = MAX_RESERVE_TIME[5\nbackfill = maybe\n"
    )
    with pytest.raises(config.ConfigError) as info:
        config.load(str(tmp_path / "lavalite.conf"))
    where = f"{queues}:"
    assert info.value.errors == [
        f"{where}2: [serial] slot_reserve: expected MAX_RESERVE_TIME[N] (N a duration > 0), "
        "got 'RESERVE[5]'",
        f"{where}4: [b] slot_reserve: '0' out of range: expected duration > 0 (seconds, or "
        "90s/10m/2h/1d)",
        f"{where}6: [c] slot_reserve: expected MAX_RESERVE_TIME[N] (N a duration > 0), "
        "got 'MAX_RESERVE_TIME[5'",
        f"{where}7: [c] backfill: expected yes/no/true/false/on/off/1/0, got 'maybe'",
    ]


def _core_with_reserve(tmp_path):
    from roles.mbatchd.core import Core
    from store import Store

    conf = config.defaults(str(tmp_path))
    conf.queues["serial"].slot_reserve = 60.0
    store = Store(str(tmp_path / "db"))
    core = Core(conf, store.load(0), now=100.0)
    core.host_register("h1", {"slots": 2, "running": []}, 100.0)
    return conf, store, core


def _submit(core, store, user, **spec):
    ident = {"role": "user", "user": user, "uid": 1000 + len(user), "host": "h0"}
    msg = {"spec": {"cmd": ["true"], "env": {}, **spec}}
    return core.submit(ident, msg, 100.0, store.env_id)["job"]


def test_mbatchd_keeps_reservations_in_memory_shows_them_and_a_reload_drops_them(tmp_path):
    conf, store, core = _core_with_reserve(tmp_path)
    running = _submit(core, store, "alice", walltime=50)
    core.schedule(100.0)
    wide = _submit(core, store, "alice", slots=2)
    narrow = _submit(core, store, "bob")
    core.schedule(101.0)
    assert core.jobs[narrow].state == "PEND"  # the free slot is the wide job's
    view = core._view(core.jobs[wide], 101.0)
    assert view["reserved"] == [["h1", 1]] and view["reserved_since"] == 101.0
    assert view["est_start"] == 151.0  # its -W from now: the job has not reported its start
    assert [h["reserved"] for h in core.query_hosts()["hosts"]] == [1]
    assert core.next_timer() == 161.0  # the reservation runs out then
    # a reload without slot_reserve: the next turn drops it, the narrow job takes the slot
    conf.queues["serial"].slot_reserve = 0.0
    core.reconfigure(conf)
    core.schedule(102.0)
    assert core.reservations == {} and core.jobs[narrow].state == "RUN"
    assert core.jobs[running].state == "RUN"
