"""mbatchd's core on host loss, and the fencing epoch lock, driven directly (no sockets)."""

import subprocess
import sys

import pytest
from test_core import USER, commit

from lavalite import config, fence
from lavalite.config import QueueConf
from roles.mbatchd.core import Core
from store import Store


@pytest.fixture
def world(tmp_path):
    conf = config.defaults(str(tmp_path))
    conf.queues["rerun"] = QueueConf(
        **{**vars(conf.queues["serial"]), "name": "rerun", "rerunnable": True}
    )
    conf.mbatchd.node_lost_grace = 5.0
    store = Store(str(tmp_path / "db"))
    core = Core(conf, store.load(0), now=100.0)
    return conf, store, core


def run_two(core, store):
    core.host_register("h1", {"slots": 2, "running": []}, 100.0)
    ids = [
        core.submit(USER, {"spec": {"cmd": ["sleep", "9"], "queue": q}}, 100.0, store.env_id)["job"]
        for q in ("rerun", "serial")
    ]
    core.schedule(100.0)
    commit(store, core)
    return ids


def test_lost_host_requeues_rerunnable_and_fails_the_rest_after_the_grace(world):
    conf, store, core = world
    rerun, serial = run_two(core, store)
    core.host_gone("h1", 101.0)
    core.tick(105.0)  # within the grace: nothing yet
    assert core.jobs[rerun].state == core.jobs[serial].state == "RUN"
    assert core.next_timer() == 106.0
    core.tick(106.0)
    assert core.jobs[rerun].state == "PEND" and core.jobs[rerun].host is None
    assert core.jobs[serial].stat == "FAILED(node_lost)"
    assert core.hosts["h1"].used == 0
    commit(store, core)
    # The host returns still running both attempt-1 copies: both are stale now.
    core.host_register("h2", {"slots": 1, "running": []}, 107.0)
    core.schedule(107.0)
    assert core.jobs[rerun].host == "h2" and core.jobs[rerun].attempt == 2
    commit(store, core)
    core.host_register("h1", {"slots": 2, "running": [[rerun, 1], [serial, 1]]}, 108.0)
    kills = [m for m in commit(store, core)["h1"] if m["op"] == "kill"]
    assert {(m["job"], m["attempt"]) for m in kills} == {(rerun, 1), (serial, 1)}
    assert all(m["stale"] for m in kills)
    # Their late exit reports change nothing.
    core.reports(
        "h1", [{"rid": 1, "kind": "exit", "job": rerun, "attempt": 1, "exit_code": 0}], 109.0
    )
    assert core.jobs[rerun].state == "RUN" and core.jobs[rerun].host == "h2"


def test_host_back_within_the_grace_keeps_its_jobs(world):
    conf, store, core = world
    ids = run_two(core, store)
    core.host_gone("h1", 101.0)
    core.host_register("h1", {"slots": 2, "running": [[i, 1] for i in ids]}, 103.0)
    core.tick(200.0)
    assert all(core.jobs[i].state == "RUN" for i in ids)
    assert not [m for m in commit(store, core).get("h1", []) if m["op"] == "kill"]


def test_sbatchd_down_on_a_host_whose_lim_answers_keeps_its_jobs(world):
    conf, store, core = world
    ids = run_two(core, store)
    core.host_gone("h1", 101.0)
    core.host_load({"h1": {"alive": True, "silent": 0.2}}, 101.0)
    core.tick(200.0)
    assert all(core.jobs[i].state == "RUN" for i in ids)
    core.host_load({"h1": {"alive": False, "silent": 3.0}}, 201.0)  # now the node is lost
    core.tick(201.0)
    assert core.jobs[ids[1]].stat == "FAILED(node_lost)"


def test_lim_silence_drops_only_a_registration_older_than_it(world):
    conf, store, core = world
    core.host_register("h1", {"slots": 1, "running": []}, 100.0)
    dead = {"h1": {"alive": False, "silent": 3.0}}
    assert core.host_load(dead, 102.0) == [], "registered after the host fell silent"
    assert core.host_load(dead, 104.0) == ["h1"]
    assert core.host_load({"h1": {"alive": True, "silent": 0.1}}, 104.0) == []


def test_a_new_master_gives_unregistered_hosts_the_grace(world):
    conf, store, core = world
    rerun, serial = run_two(core, store)
    again = Core(conf, store.load(0), now=200.0)
    again.tick(204.0)
    assert again.jobs[rerun].state == "RUN"
    again.tick(205.0)
    assert again.jobs[rerun].state == "PEND" and again.jobs[serial].stat == "FAILED(node_lost)"


HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from lavalite import fence
lock = fence.EpochLock(sys.argv[2])
print(lock.acquire(), flush=True)
time.sleep(60)
"""


def test_epoch_lock_excludes_other_processes_and_only_grows(tmp_path):
    from conftest import ROOT

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, ROOT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "1"
        assert fence.EpochLock(str(tmp_path)).acquire() is None
        assert fence.read(str(tmp_path)) == 1
    finally:
        holder.kill()
        holder.wait()
    lock = fence.EpochLock(str(tmp_path))  # the kernel dropped the dead holder's lock
    assert lock.acquire() == 2 and fence.read(str(tmp_path)) == 2
    lock.release()
