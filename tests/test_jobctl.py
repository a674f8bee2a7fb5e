"""Job control as LSF 10.1 documents it: bkill's selection (0, -J, -u, -q, -m), -s (a signal,
not a kill), -r (removed without waiting for the host), -b. Fast tests of the option readings;
real clusters for the commands."""

import argparse
import os
import signal

import pytest
from conftest import wait_until
from test_core import USER, commit, dispatched, submit, world  # noqa: F401 (a fixture)
from test_depend import _reloaded
from test_lsf_options import _run

from lavalite.model import element_id
from lavalite.protocol import ProtocolError
from roles.cli.bkill import ALL, job_id, signal_number

ADMIN = {"role": "user", "user": "root", "uid": 0, "host": "h0"}

# --- the option readings (no processes)


def test_signals_by_name_or_number_as_lsf_takes_them():
    assert signal_number("USR1") == signal.SIGUSR1
    assert signal_number("sigterm") == signal.SIGTERM
    assert signal_number("9") == signal.SIGKILL
    for bad in ("FOO", "0", "999", "SIG_DFL"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not a signal name or number"):
            signal_number(bad)


def test_job_zero_means_every_selected_job():
    assert job_id("0") == ALL
    assert job_id("12[3]") == element_id(12, 3)
    with pytest.raises(argparse.ArgumentTypeError, match="is not a job id"):
        job_id("x")


# --- mbatchd's core (no processes)


def _live_order(core, job_id):
    job = core.jobs[job_id]
    fifo = core._queue(job.queue).pending[job.user]
    return [j.id for seq, j in fifo if j.state == "PEND" and j.pend_seq == seq]


def test_btop_bbot_move_among_jobs_of_the_same_priority(world):
    conf, store, core = world
    high = submit(core, store, priority=90)
    a, b, c = (submit(core, store) for _ in range(3))
    assert core.move(USER, {"job": c, "to": "top"}, 100.0)["message"] == (
        f"Job <{c}> has been moved to position 1 from top."
    )
    assert _live_order(core, a) == [high, c, a, b]  # not above a job of a higher priority
    core.move(USER, {"job": a, "to": "bottom"}, 100.0)
    assert _live_order(core, a) == [high, c, b, a]
    commit(store, core)
    stored = {row[0]: row[1] for row in store.db.execute("SELECT id, pend_seq FROM jobs")}
    assert sorted((c, b, a), key=stored.get) == [c, b, a]
    with pytest.raises(ProtocolError, match="No matching job found"):
        core.move(USER, {"job": 999, "to": "top"}, 100.0)
    with pytest.raises(ProtocolError, match="'to': 'top' or 'bottom'"):
        core.move(USER, {"job": a, "to": "middle"}, 100.0)
    other = dict(USER, user="bob")
    with pytest.raises(ProtocolError, match="User permission denied"):
        core.move(other, {"job": a, "to": "top"}, 100.0)


def test_bkill_r_frees_the_slots_at_once_and_the_late_report_changes_nothing(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    reply = core.kill(USER, {"jobs": [job_id], "force": True}, 101.0)
    assert reply["results"][0]["ok"]
    job = core.jobs[job_id]
    assert job.state == "KILLED" and core.hosts["h1"].used == 0
    out = commit(store, core)
    assert out["h1"] == [{"op": "kill", "job": job_id, "attempt": 1, "stale": True}]
    rep = {"rid": 1, "kind": "exit", "job": job_id, "attempt": 1, "exit_code": 0}
    assert core.reports("h1", [rep], 102.0) == [1] and job.state == "KILLED"


def test_bkill_s_signals_running_jobs_only(world):
    conf, store, core = world
    running = dispatched(core, store)
    pending = submit(core, store)
    results = core.kill(USER, {"jobs": [running, pending], "signal": 10}, 101.0)["results"]
    assert [r["ok"] for r in results] == [True, False]
    assert "Job has not started yet" in results[1]["message"]
    order = {"op": "signal", "job": running, "attempt": 1, "signal": 10}
    assert commit(store, core)["h1"] == [order]
    assert core.jobs[pending].state == "PEND" and core.jobs[running].state == "RUN"
    with pytest.raises(ProtocolError, match="field 'signal' of 'kill'"):
        core.kill(USER, {"jobs": [running], "signal": "USR1"}, 101.0)


def test_bkill_s_of_an_array_index_not_started_leaves_it_its_turn(world):
    conf, store, core = world
    arr = submit(core, store, name="arr[1-3]")
    index = element_id(arr, 2)
    result = core.kill(USER, {"jobs": [index], "signal": 10}, 101.0)["results"][0]
    assert not result["ok"] and "Job has not started yet" in result["message"]
    assert index not in core.jobs and 2 not in core.arrays[arr].skip
    result = core.kill(USER, {"jobs": [index], "signal": 9}, 101.0)["results"][0]
    assert result["ok"] and core.jobs[index].state == "KILLED"


def test_bswitch_of_someone_elses_job_or_to_no_queue_changes_nothing(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    queue = core.jobs[job_id].queue
    bob = dict(USER, user="bob")
    result = core.switch(bob, {"queue": queue, "jobs": [job_id]}, 101.0)["results"][0]
    assert result["message"] == f"Job <{job_id}>: User permission denied"
    with pytest.raises(ProtocolError, match="nosuch: No such queue"):
        core.switch(USER, {"queue": "nosuch", "jobs": [job_id]}, 101.0)
    assert core.jobs[job_id].queue == queue and core._queue(queue).running == 1
    assert core.out.jobs == {}


# --- real clusters


def _bsub(c, tmp_path, *words):
    res = _run(c, tmp_path, ["bsub", *words])
    assert res.returncode == 0, res
    return int(res.stdout.split("<")[1].split(">")[0])


def _bkill(c, tmp_path, *words):
    return _run(c, tmp_path, ["bkill", *words])


def _states(c, ids):
    return {i: j["state"] for i, j in c.jobs(ids).items()}


def test_bkill_selects_by_name_queue_and_host(make_cluster, tmp_path):
    c = make_cluster(slots=1, queues={"serial": {"retry_backoff": "1"}, "other": {}})
    running = _bsub(c, tmp_path, "-q", "serial", "-J", "run1", "sleep 300")
    c.wait_started([running])
    a1 = _bsub(c, tmp_path, "-q", "serial", "-J", "alpha1", "true")
    a2 = _bsub(c, tmp_path, "-q", "serial", "-J", "alpha2", "true")
    b1 = _bsub(c, tmp_path, "-q", "serial", "-J", "beta", "sleep 300")
    b2 = _bsub(c, tmp_path, "-q", "serial", "-J", "beta", "true")
    o1 = _bsub(c, tmp_path, "-q", "other", "-J", "alpha3", "sleep 300")

    # -J without a job ID: the latest job of that name only
    res = _bkill(c, tmp_path, "-J", "beta")
    assert res.returncode == 0 and res.stdout == f"Job <{b2}> is being terminated\n", res
    # 0 with -J and -q: every match, nothing else
    res = _bkill(c, tmp_path, "-J", "alpha*", "-q", "serial", "0")
    assert res.returncode == 0, res
    assert sorted(res.stdout.splitlines()) == sorted(
        f"Job <{j}> is being terminated" for j in (a1, a2)
    )
    # -m: the jobs running on that host, not the pending ones
    res = _bkill(c, tmp_path, "-m", "testhost", "0")
    assert res.stdout == f"Job <{running}> is being terminated\n", res
    c.wait([a1, a2, b2, running])
    assert "KILLED" not in _states(c, [b1, o1]).values()
    # a job ID beside the filters: LSF ignores them
    assert _bkill(c, tmp_path, "-q", "serial", str(o1)).returncode == 0
    res = _bkill(c, tmp_path, "0")
    assert res.stdout == f"Job <{b1}> is being terminated\n", res
    assert {j["state"] for j in c.wait([b1, o1]).values()} == {"KILLED"}
    res = _bkill(c, tmp_path, "0")
    assert (res.returncode, res.stderr) == (1, "No unfinished job found\n"), res


def test_bkill_s_signals_a_running_job_that_keeps_running(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    mark = tmp_path / "usr1"
    job = _bsub(c, tmp_path, f"trap 'echo got >> {mark}' USR1; while true; do sleep 0.2; done")
    c.wait_started([job])
    pending = _bsub(c, tmp_path, "true")
    res = _bkill(c, tmp_path, "-s", "USR1", str(job))
    assert (res.returncode, res.stdout) == (0, f"Job <{job}> is being signaled\n"), res
    wait_until(lambda: mark.exists(), 30, lambda: f"USR1 to reach job {job}\n{c.logs()}")
    assert _states(c, [job]) == {job: "RUN"}
    # a pending job has no process: only a killing signal reaches it
    res = _bkill(c, tmp_path, "-s", "USR1", str(pending))
    assert res.returncode == 1 and "Job has not started yet" in res.stderr, res
    assert _states(c, [pending]) == {pending: "PEND"}
    assert _bkill(c, tmp_path, "-s", "KILL", str(pending)).returncode == 0
    assert _bkill(c, tmp_path, "-s", "TERM", str(job)).returncode == 0
    views = c.wait([pending, job])
    assert views[pending]["state"] == "KILLED"
    assert views[job]["exit_signal"] == signal.SIGTERM


def _sleeper(c, tmp_path):
    """(a running job, the pid of its process) once that process exists."""
    pid_file = tmp_path / "pid"
    job = _bsub(c, tmp_path, f"echo $$ > {pid_file}; exec sleep 300")
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, c.logs)
    return job, int(pid_file.read_text())


def test_bkill_r_ends_the_job_at_once_and_its_host_kills_it(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    job, pid = _sleeper(c, tmp_path)
    res = _bkill(c, tmp_path, "-r", str(job))
    assert (res.returncode, res.stdout) == (0, f"Job <{job}> is being terminated\n"), res
    # KILLED as soon as mbatchd answered: no wait for the host
    assert _states(c, [job]) == {job: "KILLED"}
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 30, lambda: f"pid {pid} to end")
    nxt = _bsub(c, tmp_path, "true")  # its slot is free again
    assert c.wait([nxt])[nxt]["state"] == "DONE"
    assert _states(c, [job]) == {job: "KILLED"}  # the host's late report changed nothing


def test_bkill_b_with_0_skips_what_cannot_be_killed(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    mine = [_bsub(c, tmp_path, "sleep 300") for _ in range(3)]
    res = _bkill(c, tmp_path, "-b", "0")
    assert res.returncode == 0 and res.stderr == "", res
    c.wait(mine)
    assert set(_states(c, mine).values()) == {"KILLED"}


@pytest.mark.parametrize(
    "words, says",
    [
        ([], "a job ID, 0, or one of -J, -u, -q, -m is required"),
        (["-s", "FOO", "1"], "'FOO' is not a signal name or number"),
        (["-r", "-s", "9", "1"], "-r and -s cannot be used together"),
        (["-d", "1"], "-d is an LSF option that LavaLite does not support"),
    ],
)
def test_bad_bkill_lines_are_refused_by_name(cluster, tmp_path, words, says):
    job = cluster.submit(["sleep", "300"])
    res = _bkill(cluster, tmp_path, *words)
    assert res.returncode == 2 and says in res.stderr, res
    assert _states(cluster, [job])[job] in ("PEND", "RUN")


# --- btop, bbot


def test_btop_and_bbot_reorder_pending_jobs_across_an_mbatchd_restart(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    order = tmp_path / "order"
    blocker = _bsub(c, tmp_path, "sleep 300")
    c.wait_started([blocker])
    first, second, third = (_bsub(c, tmp_path, f"echo {n} >> {order}") for n in (1, 2, 3))
    res = _run(c, tmp_path, ["btop", str(third)])
    assert (res.returncode, res.stdout) == (
        0,
        f"Job <{third}> has been moved to position 1 from top.\n",
    ), res
    res = _run(c, tmp_path, ["bbot", str(first)])
    assert res.stdout == f"Job <{first}> has been moved to position 1 from bottom.\n", res
    c.kill9_restarted("mbatchd")  # the order is in the store
    wait_until(lambda: _run(c, tmp_path, ["bjobs"]).returncode == 0, 60, c.logs)
    # a running job has no place in the order; nothing changes
    res = _run(c, tmp_path, ["btop", str(blocker)])
    assert (res.returncode, res.stderr) == (1, f"Job <{blocker}>: Job has already started\n")
    res = _run(c, tmp_path, ["bbot", "999"])
    assert (res.returncode, res.stderr) == (1, "Job <999>: No matching job found\n"), res
    assert _bkill(c, tmp_path, str(blocker)).returncode == 0
    c.wait([first, second, third])
    assert order.read_text().split() == ["3", "2", "1"]
    res = _run(c, tmp_path, ["bbot", str(first)])
    assert (res.returncode, res.stderr) == (1, f"Job <{first}>: Job has already finished\n")


def test_btop_and_bbot_with_a_position_as_lsf_numbers_it(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    order = tmp_path / "order"
    blocker = _bsub(c, tmp_path, "sleep 300")
    c.wait_started([blocker])
    jobs = [_bsub(c, tmp_path, f"echo {n} >> {order}") for n in (1, 2, 3, 4)]
    res = _run(c, tmp_path, ["btop", str(jobs[3]), "2"])
    assert res.stdout == f"Job <{jobs[3]}> has been moved to position 2 from top.\n", res
    res = _run(c, tmp_path, ["bbot", "-u", str(jobs[0]), "2"])  # -u: an admin's form
    assert res.stdout == f"Job <{jobs[0]}> has been moved to position 2 from bottom.\n", res
    for words, says in (
        ([str(jobs[0]), "0"], "btop: position '0' is not a positive number"),
        ([str(jobs[0]), "1", "2"], "btop: one job ID and at most one position are taken"),
    ):
        res = _run(c, tmp_path, ["btop", *words])
        assert (res.returncode, res.stderr) == (2, says + "\n"), res
    assert _bkill(c, tmp_path, str(blocker)).returncode == 0
    c.wait(jobs)
    assert order.read_text().split() == ["4", "2", "1", "3"]


# --- brequeue


def test_brequeue_in_the_core_is_a_stored_pend_and_a_stale_kill(world):
    conf, store, core = world
    job_id = dispatched(core, store)
    results = core.requeue(USER, {"jobs": [job_id, 999]}, 101.0, store.env)["results"]
    assert [r["message"] for r in results] == [
        f"Job <{job_id}> is being requeued",
        "Job <999>: No matching job found",
    ]
    job = core.jobs[job_id]
    assert job.state == "PEND" and core.hosts["h1"].used == 0
    assert commit(store, core)["h1"] == [{"op": "kill", "job": job_id, "attempt": 1, "stale": True}]
    assert [e[3] for e in store.events(job_id)] == ["PEND", "RUN", "PEND"]
    again = core.requeue(USER, {"jobs": [job_id]}, 101.0, store.env)["results"][0]
    assert again["message"] == f"Job <{job_id}>: Job has not started yet" and not again["ok"]
    core.tick(101.0 + conf.sbatchd.kill_grace)
    core.schedule(101.0 + conf.sbatchd.kill_grace)
    assert job.state == "RUN" and job.attempt == 2


def test_brequeue_runs_a_running_job_again_across_an_mbatchd_restart(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    starts = tmp_path / "starts"
    job = _bsub(c, tmp_path, f"echo start >> {starts}; exec sleep 300")
    wait_until(lambda: starts.exists(), 30, c.logs)
    res = _run(c, tmp_path, ["brequeue", str(job)])
    assert (res.returncode, res.stdout) == (0, f"Job <{job}> is being requeued\n"), res
    c.kill9_restarted("mbatchd")
    wait_until(lambda: starts.read_text().split() == ["start", "start"], 60, lambda: f"{c.logs()}")
    assert c.wait([job], states=("RUN",))[job]["attempt"] == 2
    pending = _bsub(c, tmp_path, "true")
    res = _run(c, tmp_path, ["brequeue", str(pending)])
    assert (res.returncode, res.stderr) == (1, f"Job <{pending}>: Job has not started yet\n")
    assert _bkill(c, tmp_path, str(job)).returncode == 0
    c.wait([job, pending])
    res = _run(c, tmp_path, ["brequeue", str(job)])
    assert (res.returncode, res.stderr) == (1, f"Job <{job}>: Job has already finished\n")
    res = _run(c, tmp_path, ["brequeue", "-e", str(job)])  # KILLED is LSF's EXIT
    assert (res.returncode, res.stdout) == (0, f"Job <{job}> is being requeued\n"), res
    wait_until(lambda: starts.read_text().split() == ["start"] * 3, 60, c.logs)
    assert c.wait([job], states=("RUN",))[job]["attempt"] == 3
    assert _bkill(c, tmp_path, str(job)).returncode == 0


# --- bswitch


def test_bswitch_moves_a_pending_job_and_refuses_what_the_queue_would(make_cluster, tmp_path):
    queues = {
        "serial": {"retry_backoff": "1"},
        "short": {"max_walltime": "60"},
        "shut": {"open": "no"},
    }
    c = make_cluster(slots=1, queues=queues)
    blocker = _bsub(c, tmp_path, "-q", "serial", "sleep 300")
    c.wait_started([blocker])
    job = _bsub(c, tmp_path, "-q", "serial", "true")
    long = _bsub(c, tmp_path, "-q", "serial", "-W", "10", "true")
    res = _run(c, tmp_path, ["bswitch", "short", str(job)])
    assert (res.returncode, res.stdout) == (0, f"Job <{job}> is switched to queue <short>\n")
    c.kill9_restarted("mbatchd")  # the queue is in the store
    wait_until(lambda: _run(c, tmp_path, ["bjobs"]).returncode == 0, 60, c.logs)
    assert c.jobs([job])[job]["queue"] == "short"
    refusals = {
        ("short", long): f"Job <{long}>: its walltime exceeds queue <short>'s max_walltime",
        ("shut", job): f"Job <{job}>: Queue <shut> is closed",
        ("short", 999): "Job <999>: No matching job found",
    }
    for (queue, target), says in refusals.items():
        res = _run(c, tmp_path, ["bswitch", queue, str(target)])
        assert (res.returncode, res.stderr) == (1, says + "\n"), res
    res = _run(c, tmp_path, ["bswitch", "nosuch", str(job)])
    assert (res.returncode, res.stderr) == (1, "bswitch: nosuch: No such queue\n"), res
    assert c.jobs([long])[long]["queue"] == "serial"  # refused: where it was
    assert _bkill(c, tmp_path, str(blocker)).returncode == 0
    assert c.wait([job, long])[job]["queue"] == "short"  # it ran from its new queue


def test_bswitch_moves_a_running_job_that_keeps_running_and_selects_as_lsf(make_cluster, tmp_path):
    queues = {"serial": {}, "other": {}, "ionly": {"interactive": "only"}}
    c = make_cluster(slots=1, queues=queues)
    running = _bsub(c, tmp_path, "-q", "serial", "-J", "long", "sleep 300")
    c.wait_started([running])
    pending = _bsub(c, tmp_path, "-q", "serial", "-J", "later", "true")
    res = _run(c, tmp_path, ["bswitch", "ionly", str(running)])
    says = f"Job <{running}>: Queue <ionly> does not accept batch jobs\n"
    assert (res.returncode, res.stderr) == (1, says), res
    res = _run(c, tmp_path, ["bswitch", "-J", "lo*", "other"])  # the latest job of that name
    assert (res.returncode, res.stdout) == (0, f"Job <{running}> is switched to queue <other>\n")
    c.kill9_restarted("mbatchd")  # the queue is in the store; the job runs on
    wait_until(lambda: _run(c, tmp_path, ["bjobs"]).returncode == 0, 60, c.logs)
    view = c.jobs([running])[running]
    assert (view["queue"], view["state"], view["attempt"]) == ("other", "RUN", 1)
    res = _run(c, tmp_path, ["bqueues"])  # PEND RUN SUSP: it counts in its new queue
    rows = {line.split()[0]: line.split()[-3:] for line in res.stdout.splitlines()[1:]}
    assert (rows["other"], rows["serial"]) == (["0", "1", "0"], ["1", "0", "0"]), res
    res = _run(c, tmp_path, ["bswitch", "-q", "serial", "other", "0"])  # every job in serial
    assert (res.returncode, res.stdout) == (0, f"Job <{pending}> is switched to queue <other>\n")
    res = _run(c, tmp_path, ["bswitch", "-q", "serial", "other"])
    assert (res.returncode, res.stderr) == (1, "No unfinished job found\n"), res
    assert _bkill(c, tmp_path, str(running)).returncode == 0
    views = c.wait([running, pending])
    assert (views[running]["queue"], views[pending]["state"]) == ("other", "DONE")


# --- bstop (pending jobs)


def test_bstop_holds_a_pending_job_that_the_scheduler_then_passes(world):
    conf, store, core = world
    core.host_register("h1", {"slots": 1, "running": []}, 100.0)
    stopped, later = submit(core, store), submit(core, store)
    result = core.stop(USER, {"jobs": [stopped]}, 100.0)["results"][0]
    assert result["message"] == f"Job <{stopped}> is being stopped"
    again = core.stop(USER, {"jobs": [stopped]}, 100.0)["results"][0]
    assert again["message"] == f"Job <{stopped}>: Job has already been suspended"
    core.schedule(100.0)
    assert core.jobs[stopped].state == "PSUSP" and core.jobs[later].state == "RUN"
    commit(store, core)
    assert store.events(stopped)[-1][3:5] == ("PSUSP", "stopped by bstop")


def test_bstop_of_a_pending_job_holds_across_an_mbatchd_restart(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    blocker = _bsub(c, tmp_path, "sleep 300")
    c.wait_started([blocker])
    held = _bsub(c, tmp_path, "true")
    later = _bsub(c, tmp_path, "true")
    res = _run(c, tmp_path, ["bstop", str(held)])
    assert (res.returncode, res.stdout) == (0, f"Job <{held}> is being stopped\n"), res
    c.kill9_restarted("mbatchd")
    wait_until(lambda: _run(c, tmp_path, ["bjobs"]).returncode == 0, 60, c.logs)
    assert _bkill(c, tmp_path, str(blocker)).returncode == 0
    c.wait([later])  # it was behind the stopped job
    assert _states(c, [held]) == {held: "PSUSP"}
    res = _run(c, tmp_path, ["bjobs", "-s", "-noheader", "-o", "jobid stat"])
    assert res.stdout.split() == [str(held), "PSUSP"], res
    assert _run(c, tmp_path, ["bresume", str(held)]).returncode == 0
    assert c.wait([held])[held]["state"] == "DONE"


def test_bkill_r_while_sbatchd_is_down_ends_the_job_when_it_returns(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    job, pid = _sleeper(c, tmp_path)
    c.kill9_restarted("sbatchd")  # the job runs on under its shepherd
    res = _bkill(c, tmp_path, "-r", str(job))
    assert (res.returncode, res.stdout) == (0, f"Job <{job}> is being terminated\n"), res
    assert _states(c, [job]) == {job: "KILLED"}
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 60, lambda: f"pid {pid}\n{c.logs()}")
    assert _states(c, [job]) == {job: "KILLED"}


def test_btop_bbot_take_a_position_among_the_users_jobs_of_that_priority(world):
    conf, store, core = world
    high = submit(core, store, priority=90)
    a, b, c, d, e = (submit(core, store) for _ in range(5))
    reply = core.move(USER, {"job": e, "to": "top", "position": 3}, 100.0)
    assert reply["message"] == f"Job <{e}> has been moved to position 3 from top."
    assert _live_order(core, a) == [high, a, b, e, c, d]  # the seqs ahead made room
    reply = core.move(USER, {"job": a, "to": "bottom", "position": 2}, 100.0)
    assert reply["message"] == f"Job <{a}> has been moved to position 2 from bottom."
    assert _live_order(core, a) == [high, b, e, c, a, d]
    reply = core.move(ADMIN, {"job": b, "to": "top", "position": 99}, 100.0)  # an admin's
    assert reply["message"] == f"Job <{b}> has been moved to position 5 from top."
    assert _live_order(core, a) == [high, e, c, a, d, b]
    commit(store, core)
    reloaded = _reloaded(conf, store)
    assert _live_order(reloaded, a) == [high, e, c, a, d, b]
    for bad in (0, -1, "2", True):
        with pytest.raises(ProtocolError, match="field 'position' of 'move' must be 1 or more"):
            core.move(USER, {"job": a, "to": "top", "position": bad}, 100.0)
