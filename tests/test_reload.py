"""SIGHUP (what `systemctl reload` and `llctrl ... reload` send) re-reads the configuration in
the running daemons; a bad one is refused with config-check's message and the old one stays;
jobs are neither lost nor restarted. Logging goes to syslog (a test socket) or rotated files."""

import os
import re
import signal

from conftest import wait_until
from syslogsink import SyslogSink

QUEUES = "[serial]\nretry_backoff = 1\n"
FAST = QUEUES + "\n[fast]\npriority = 50\n"


def _write(c, name, text):
    with open(os.path.join(c.state, name), "w") as f:
        f.write(text)


def _sleep_until_running(c):
    job = c.submit(["sleep", "60"])
    c.wait([job], states=("RUN",))
    return job


def test_reload_adds_a_queue_refuses_a_broken_file_and_keeps_jobs(make_cluster, tmp_path):
    sink = SyslogSink(tmp_path / "log.sock")
    try:
        c = make_cluster(conf={"logging": {"target": "syslog", "syslog_address": sink.path}})
        sleeper = _sleep_until_running(c)
        _write(c, "queues.conf", FAST)
        mark = len(sink.lines)
        os.kill(c.pid("lim"), signal.SIGHUP)  # LIM passes it on to its mbatchd
        sink.wait_for(r"^lavalite-lim\[\d+\]: INFO reloaded ", start=mark)
        sink.wait_for(r"^lavalite-mbatchd\[\d+\]: INFO queues now: fast, serial$", start=mark)
        job = c.submit(["true"], queue="fast")  # usable right after the reload
        assert c.wait([job])[job]["stat"] == "DONE"
        assert "fast" in c.cli("queues").stdout

        _write(c, "queues.conf", FAST.replace("priority = 50", "priority = high"))
        mark = len(sink.lines)
        os.kill(c.pid("mbatchd"), signal.SIGHUP)
        facility, severity, refused = sink.wait_for(r"reload refused", start=mark)
        assert (facility, severity) == (3, 3)  # daemon.err
        assert "queues.conf:5: [fast] priority: expected an integer, got 'high'" in refused
        check = c.cli("config-check", check=False)  # the very message config-check gives
        assert check.returncode == 2 and "priority: expected an integer, got 'high'" in check.stderr
        job = c.submit(["true"], queue="fast")  # the old configuration still runs
        assert c.wait([job])[job]["stat"] == "DONE"

        view = c.jobs([sleeper])[sleeper]
        assert (view["state"], view["attempt"]) == ("RUN", 1)
        assert [(old, new) for _, _, old, new, *_ in c.events(sleeper)] == [
            (None, "PEND"),
            ("PEND", "RUN"),
        ]  # not restarted, not requeued

        # one line per job state change and per host state change, facility daemon
        _, _, line = sink.wait_for(
            rf"INFO job {job} user=\S+ queue=fast host=testhost "
            r"RUN -> DONE$"
        )
        assert line.startswith("lavalite-mbatchd[")
        sink.wait_for(r"INFO host testhost (-|unavail) -> ok \(sbatchd registered, 4 slots\)$")
    finally:
        sink.close()


def test_sbatchd_reload_changes_its_slots_without_touching_jobs(make_cluster):
    c = make_cluster(slots=4)
    sleeper = _sleep_until_running(c)
    conf = open(os.path.join(c.state, "sbatchd.conf")).read()
    _write(c, "sbatchd.conf", conf.replace("slots = 4", "slots = 2"))
    os.kill(c.pid("sbatchd"), signal.SIGHUP)
    wait_until(
        lambda: c.client.call("hosts")["hosts"][0]["slots"] == 2,
        30,
        lambda: "sbatchd's new slot count\n" + c.logs(),
        0.2,
    )
    assert c.jobs([sleeper])[sleeper]["attempt"] == 1
    assert len(c.events(sleeper)) == 2


def test_file_logs_rotate(make_cluster):
    c = make_cluster(
        conf={"logging": {"target": "file", "rotate_size": "2000", "rotate_keep": "2"}}
    )
    jobs = []
    for _ in range(6):  # mbatchd writes job lines gathered (50 ms): waves make several records
        wave = [c.submit(["true"]) for _ in range(5)]
        c.wait(wave)
        jobs += wave
    current = os.path.join(c.state, "log", "mbatchd-testhost.log")
    wait_until(
        lambda: f"INFO job {jobs[-1]} user=" in open(current).read(),
        10,
        "the last job's lines in the log",
    )
    logs = sorted(os.listdir(os.path.join(c.state, "log")))
    assert {"mbatchd-testhost.log", "mbatchd-testhost.log.1", "mbatchd-testhost.log.2"} <= set(logs)
    assert "mbatchd-testhost.log.3" not in logs


def test_a_turns_job_lines_are_one_record_yet_each_a_full_line(make_cluster):
    """mbatchd writes a turn's job lines in one record (one write): each still reads as its own
    line, with the time, role, host, pid and level, one per state change."""
    c = make_cluster(conf={"logging": {"target": "file"}})
    jobs = c.client.submit_many([["true"]] * 20, cwd=c.state)  # one turn: 20 submit lines
    c.wait(jobs)
    path = os.path.join(c.state, "log", "mbatchd-testhost.log")
    wait_until(
        lambda: open(path).read().count(" RUN -> DONE") >= 20,
        10,
        "the 20 jobs' RUN -> DONE lines in the log",
    )
    prefix = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} mbatchd@testhost\[\d+\] [A-Z]+ ")
    lines = open(path).read().splitlines()
    assert lines and all(prefix.match(line) for line in lines), lines
    for job in jobs:
        changes = [
            line.split(" host=", 1)[1].split(" ", 1)[1]
            for line in lines
            if f" INFO job {job} user=" in line
        ]
        assert changes == ["- -> PEND reason=submitted", "PEND -> RUN", "RUN -> DONE"], (
            job,
            changes,
        )
