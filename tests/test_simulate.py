"""`lavalite simulate` on a small configuration: a real mbatchd, simulated hosts; every job
must end exactly once, as the simulator saw it and as the store recorded it."""

import json
import subprocess

import apsw
from conftest import LAUNCHER

QUEUES = """[fast]
priority = 50
max_running_user = 6

[slow]
priority = 10
"""


def test_simulate_small_every_job_ends_once(tmp_path):
    qconf = tmp_path / "queues.conf"
    qconf.write_text(QUEUES)
    state = tmp_path / "sim"
    out = subprocess.run(
        LAUNCHER
        + [
            "simulate",
            "--json",
            "--hosts",
            "12",
            "--slots",
            "2",
            "--jobs",
            "600",
            "--array-size",
            "120",
            "--users",
            "3",
            "--duration",
            "1-4",
            "--speed",
            "40",
            "--queues",
            str(qconf),
            "--state-dir",
            str(state),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    fig = json.loads(out.stdout.strip().splitlines()[-1])
    assert fig["jobs"] == fig["ended"] == fig["dispatches"] == 600 and fig["ended_twice"] == 0
    assert set(fig["queues"]) == {"fast", "slow"}
    db = apsw.Connection(str(state / "lavalite.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        ends = dict(
            db.execute("SELECT job_id, count(*) FROM job_events WHERE new = 'DONE' GROUP BY job_id")
        )
        ((live,),) = db.execute("SELECT count(*) FROM jobs WHERE state IN ('PEND', 'RUN')")
        ((open_arrays,),) = db.execute("SELECT count(*) FROM arrays WHERE end_time IS NULL")
        # the per-user cap of queue fast, observed from the events
        running, peak = {}, 0
        for _job_id, old, new, user in db.execute(
            "SELECT e.job_id, e.old, e.new, j.user FROM job_events e JOIN jobs j "
            "ON j.id = e.job_id WHERE j.queue = 'fast' ORDER BY e.seq"
        ):
            running[user] = running.get(user, 0) + (new == "RUN") - (old == "RUN")
            peak = max(peak, running[user])
    finally:
        db.close()
    assert len(ends) == 600 and set(ends.values()) == {1}
    assert live == 0 and open_arrays == 0
    assert 0 < peak <= 6


def test_simulate_refuses_a_bad_queues_conf(tmp_path):
    bad = tmp_path / "queues.conf"
    bad.write_text("[q]\npriority = high\n")
    out = subprocess.run(
        LAUNCHER + ["simulate", "--queues", str(bad), "--state-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "priority" in out.stderr, out.stdout + out.stderr


def _simulate(*args):
    return subprocess.run(
        LAUNCHER + ["simulate", *args], capture_output=True, text=True, timeout=300
    )


SMALL = ["--hosts", "6", "--slots", "2", "--jobs", "200", "--duration", "1-2", "--speed", "40"]


def test_simulate_preempt_compares_with_the_same_run_without(tmp_path):
    out = _simulate("--preempt", "--json", *SMALL, "--state-dir", str(tmp_path / "s"))
    assert out.returncode == 0, out.stdout + out.stderr
    fig = json.loads(out.stdout.strip().splitlines()[-1])
    assert fig["jobs"] == fig["ended"] == 200 and fig["ended_twice"] == 0
    ratios = fig["preemption"]["preempt_to_plain"]
    assert set(ratios) == {"dispatch_per_s", "sched_p99", "mbatchd_peak_rss"}
    assert ratios["mbatchd_peak_rss"] > 0, ratios  # the others may be 0 or None this small
    (tmp_path / "q.conf").write_text("[q]\n")
    refused = _simulate("--preempt", "--queues", str(tmp_path / "q.conf"))
    assert refused.returncode == 2 and "--preempt" in refused.stderr, refused


def test_simulate_placement_compares_it_with_host_order_in_one_run(tmp_path):
    out = _simulate("--json", *SMALL, "--placement", "spread")
    assert out.returncode == 0, out.stdout + out.stderr
    fig = json.loads(out.stdout.strip().splitlines()[-1])
    assert fig["ended"] == 200 and fig["ended_twice"] == 0
    ratios = fig["placement"]["spread_to_first"]
    assert set(ratios) == {"dispatch_per_s", "sched_p99", "mbatchd_peak_rss"}
    assert all(r is None or r > 0 for r in ratios.values()), ratios
