"""bsub's timing, pre/post-execution and bookkeeping options as LSF 10.1 documents them: -b, -t,
-E, -Ep, -r, -rn, -P, -G, -Jd, -sp, -c, -u, -N, -B. The parsing and mbatchd's core are tested
without processes; the wrapper with real shells; the whole path on a real cluster."""

import os
import signal
import subprocess
import time

import pytest
from conftest import wait_until
from test_core import USER, commit, dispatched, submit, world  # noqa: F401 (a fixture)

from roles.cli import main
from roles.cli.bsub_options import OptionError, cpu_minutes, lsf_time, user_priority
from roles.mbatchd.core import Core
from roles.sbatchd import core as sb
from roles.sbatchd.prepost import PRE_FAILED, wrapped

# --- the CLI's parsing


def _at(now: float, **fields: int) -> float:
    t = time.localtime(now)
    values = {"year": t.tm_year, "month": t.tm_mon, "day": t.tm_mday, **fields}
    return time.mktime(
        (
            values["year"],
            values["month"],
            values["day"],
            fields["hour"],
            fields["minute"],
            0,
            0,
            0,
            -1,
        )
    )


def test_lsf_times_take_the_next_such_time_and_refuse_bad_fields():
    now = _at(time.time(), hour=12, minute=30)  # today 12:30
    assert lsf_time("13:00", now, "-b") == _at(now, hour=13, minute=0)
    assert lsf_time("12:00", now, "-b") == _at(now + 86400, hour=12, minute=0)  # tomorrow
    year = time.localtime(now).tm_year
    assert lsf_time(f"{year + 1}:1:2:3:4", now, "-t") == time.mktime(
        (year + 1, 1, 2, 3, 4, 0, 0, 0, -1)
    )
    assert lsf_time("2000:1:1:0:0", now, "-b") == now  # LSF: the begin time is reached
    with pytest.raises(OptionError, match="-t 2000:1:1:0:0: the time is in the past"):
        lsf_time("2000:1:1:0:0", now, "-t", past_refused=True)
    for bad, why in (
        ("25:00", "the hour must be 0 to 23"),
        ("12:60", "the minute must be 0 to 59"),
        ("32:1:00", "the day must be 1 to 31"),
        ("13:1:1:00", "the month must be 1 to 12"),
        ("2030:2:30:1:1", "no such date"),
        ("12", "-b takes \\[\\[year:\\]\\[month:\\]day:\\]hour:minute"),
        ("1:2:3:4:5:6", "-b takes"),
        ("a:b", "-b takes"),
    ):
        with pytest.raises(OptionError, match=f"^-b {bad}: Bad time specification; {why}"):
            lsf_time(bad, now, "-b")


def test_a_day_without_month_is_the_next_month_that_has_it():
    now = time.mktime((2031, 4, 15, 12, 0, 0, 0, 0, -1))  # April has no 31st
    assert lsf_time("31:8:00", now, "-b") == time.mktime((2031, 5, 31, 8, 0, 0, 0, 0, -1))
    assert lsf_time("2:29:0:0", now, "-b") == time.mktime((2032, 2, 29, 0, 0, 0, 0, 0, -1))


def test_cpu_limit_and_priority_syntax():
    assert cpu_minutes("90") == 90 and cpu_minutes("1:30") == 90
    for bad in ("0", "x", "1:x", "-5", "10/hostA", ""):
        with pytest.raises(OptionError, match=f"^-c {bad}"):
            cpu_minutes(bad)
    assert user_priority("7") == 7
    for bad in ("0", "-1", "x"):
        with pytest.raises(OptionError, match=f"^-sp {bad}"):
            user_priority(bad)


# --- mbatchd's core


def test_a_begin_time_holds_the_job_out_of_the_queue_across_a_restart(world, tmp_path):
    conf, store, core = world
    core.host_register("h1", {"slots": 1, "running": []}, 100.0)
    job_id = submit(core, store, begin=200.0)
    assert core.schedule(100.0) == 0
    assert core.pending_reason(core.jobs[job_id], 150.0) == "The job has a specified start time"
    commit(store, core)
    again = Core(conf, store.load(0), now=150.0)  # mbatchd restarted
    again.host_register("h1", {"slots": 1, "running": []}, 150.0)
    assert again.schedule(150.0) == 0 and again.next_timer() == 200.0
    again.tick(200.0)
    assert again.schedule(200.0) == 1 and again.jobs[job_id].state == "RUN"


def test_a_pending_job_whose_termination_time_comes_ends_without_running(world):
    conf, store, core = world
    job_id = submit(core, store, term_time=301.0)  # pending: no host
    with pytest.raises(Exception, match="later than the begin time"):
        submit(core, store, begin=500.0, term_time=400.0)
    assert core.next_timer() == 301.0
    core.tick(301.0)
    job = core.jobs[job_id]
    assert (job.stat, job.start_time) == ("FAILED(deadline)", None)
    commit(store, core)
    assert [e[3] for e in store.events(job_id)] == ["PEND", "FAILED"]


def test_an_array_waits_for_its_begin_time_and_its_unstarted_indices_end_at_its_deadline(world):
    conf, store, core = world
    core.host_register("h1", {"slots": 1, "running": []}, 100.0)
    arr_id = submit(core, store, name="a[1-3]", begin=200.0, term_time=300.0)
    assert core.schedule(100.0) == 0
    assert core.pending_reason(core.arrays[arr_id], 100.0) == "The job has a specified start time"
    core.tick(200.0)
    assert core.schedule(200.0) == 1  # one slot: index 1 runs, 2 and 3 wait
    core.tick(300.0)
    summary = core.arrays[arr_id].summary()
    assert (summary["run"], summary["pend"], summary["exit"]) == (1, 0, 2)
    assert core.schedule(300.0) == 0


def test_a_begin_time_and_a_dependency_both_hold_a_job(world):
    """-b and -w together: the job starts once both hold, whichever comes last."""
    conf, store, core = world
    core.host_register("h1", {"slots": 2, "running": []}, 100.0)
    first = submit(core, store, cmd=("sleep", "1"))
    core.schedule(100.0)
    early = submit(core, store, depend=f"done({first})", begin=300.0)  # condition first
    late = submit(core, store, depend=f"done({first})", begin=150.0)  # begin time first
    core.tick(200.0)
    assert core.schedule(200.0) == 0, "the begin time alone does not start a dependent job"
    exit_ok = {"rid": 1, "kind": "exit", "job": first, "attempt": 1, "exit_code": 0}
    core.reports("h1", [exit_ok], 250.0)
    assert core.schedule(250.0) == 1 and core.jobs[late].state == "RUN"
    assert core.jobs[early].state == "PEND", "its condition holds, its begin time has not come"
    assert core.next_timer() == 300.0
    core.tick(300.0)
    assert core.schedule(300.0) == 1 and core.jobs[early].state == "RUN"


def test_a_held_job_whose_termination_time_comes_ends_without_running(world):
    conf, store, core = world
    job_id = submit(core, store, hold=True, term_time=301.0)
    assert core.jobs[job_id].state == "PSUSP"
    core.tick(301.0)
    assert core.jobs[job_id].stat == "FAILED(deadline)"


def test_user_priority_orders_a_user_s_jobs_then_first_come_first_served(world):
    conf, store, core = world
    default = conf.mbatchd.max_user_priority // 2
    low, mid, high, plain, high2 = (
        submit(core, store, priority=p) for p in (1, default, 90, None, 90)
    )
    core.host_register("h1", {"slots": 5, "running": []}, 100.0)
    core.schedule(100.0)
    out = commit(store, core)
    assert [j["id"] for j in out["h1"][0]["jobs"]] == [high, high2, mid, plain, low]
    with pytest.raises(Exception, match="priority \\(-sp\\) must be an integer from 1 to 100"):
        submit(core, store, priority=101)
    admin = {**USER, "user": "root", "uid": 0}  # admins may go beyond MAX_USER_PRIORITY
    conf.cluster.allow_root_jobs = True
    core.submit(admin, {"spec": {"cmd": ["true"], "priority": 1000}}, 100.0, store.env_id)


@pytest.mark.parametrize(
    "queue_rerunnable, states",
    [
        (False, ["PEND", "FAILED(node_lost)", "FAILED(node_lost)"]),
        (True, ["PEND", "FAILED(node_lost)", "PEND"]),
    ],
)
def test_rerunnable_options_override_the_queue_on_host_loss(world, queue_rerunnable, states):
    conf, store, core = world
    core.qconf["serial"].rerunnable = queue_rerunnable
    ids = [dispatched(core, store, slots=3, rerunnable=True)]  # -r
    ids += [submit(core, store, rerunnable=False), submit(core, store)]  # -rn, neither
    core.schedule(100.0)
    core.host_gone("h1", 100.0)
    core.tick(100.0 + conf.mbatchd.node_lost_grace)
    assert [core.jobs[i].stat for i in ids] == states
    assert core.jobs[ids[0]].reason == "node_lost: requeued (rerunnable)"


def test_a_failed_pre_exec_requeues_the_job_a_bounded_number_of_times(world):
    conf, store, core = world
    conf.mbatchd.max_preexec_retry = 2
    job_id = dispatched(core, store, pre_exec="false")
    job = core.jobs[job_id]
    now = 100.0
    for attempt in (1, 2, 3):
        rep = {"rid": attempt, "kind": "exit", "job": job_id, "attempt": attempt, "exit_code": 1}
        core.reports("h1", [{**rep, "reason": "pre_exec"}], now)
        if attempt < 3:
            assert job.state == "PEND" and job.reason.startswith(
                f"pre_exec: requeued ({attempt} of 2)"
            )
            now = job.eligible_time
            core.tick(now)
            core.schedule(now)
    assert job.stat == "FAILED(pre_exec)" and job_id not in core.pre_failures


def test_the_cpu_limit_s_signal_ends_the_job_as_cpulimit(world):
    conf, store, core = world
    job_id = dispatched(core, store, cpu_limit=60.0)
    rep = {"rid": 1, "kind": "exit", "job": job_id, "attempt": 1, "exit_signal": signal.SIGXCPU}
    core.reports("h1", [rep], 101.0)
    assert core.jobs[job_id].stat == "FAILED(cpulimit)"


def test_bad_option_fields_are_refused_by_name(world):
    conf, store, core = world
    for spec, field in (
        ({"priority": 0}, "priority \\(-sp\\)"),
        ({"cpu_limit": -1}, "cpu_limit \\(-c\\)"),
        ({"begin": "noon"}, "begin"),
        ({"notify": ["lunch"]}, "notify"),
        ({"rerunnable": "yes"}, "rerunnable"),
        ({"project": "p\0"}, "project \\(-P\\)"),
        ({"user_group": "no-such-group-here"}, "-G no-such-group-here: Bad user group name"),
    ):
        with pytest.raises(Exception, match=field):
            submit(core, store, **spec)
    assert core.jobs == {}


def test_notices_for_begin_and_end_only_when_asked(world):
    conf, store, core = world
    asked = dispatched(core, store, slots=2, notify=["begin", "end"], mail_user="a@b")
    silent = submit(core, store)
    core.schedule(100.0)
    core.new_turn()
    for rid, job_id in enumerate((asked, silent)):
        core.reports("h1", [{"rid": rid, "kind": "start", "job": job_id, "attempt": 1}], 101.0)
        rep = {"rid": 10 + rid, "kind": "exit", "job": job_id, "attempt": 1, "exit_code": 0}
        core.reports("h1", [rep], 102.0)
    notices = core.new_turn().notices
    assert [(n["event"], n["job"], n["to"], n["stat"]) for n in notices] == [
        ("begin", str(asked), "a@b", "RUN"),
        ("end", str(asked), "a@b", "DONE"),
    ]


# --- sbatchd


def test_sbatchd_kills_at_the_termination_time_or_the_wall_clock_whichever_first():
    core = sb.Core("/work", 0)
    early = {"id": 1, "attempt": 1, "walltime": 100.0, "term_time": 50.0, "started": 10.0}
    late = {"id": 2, "attempt": 1, "walltime": 10.0, "term_time": 500.0, "started": 10.0}
    atts = [e.att for e in core.dispatch([early, late], {})]
    arms = [e for e in core.started(atts, 10.0) if isinstance(e, sb.Arm)]
    assert [(a.at, a.reason) for a in arms] == [(50.0, "deadline"), (20.0, "timeout")]
    assert core.timer(atts[0], arms[0].reason)[0] == sb.RecordKill(atts[0], "deadline")


def _wrapper(tmp_path, spec, argv):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    return subprocess.run(wrapped(argv, spec), env=env, capture_output=True, text=True)


def test_the_wrapper_runs_pre_job_post_and_keeps_the_job_s_ending(tmp_path):
    assert wrapped(["true"], {}) == ["true"]  # no option: no shell
    res = _wrapper(
        tmp_path,
        {"pre_exec": "echo pre", "post_exec": "echo post $LSB_JOBEXIT_STAT"},
        ["sh", "-c", "echo job; exit 3"],
    )
    assert (res.returncode, res.stdout) == (3, "pre\njob\npost 768\n")
    res = _wrapper(
        tmp_path, {"post_exec": "echo post $LSB_JOBEXIT_STAT"}, ["sh", "-c", "kill -USR1 $$"]
    )
    assert (res.returncode, res.stdout) == (-signal.SIGUSR1, f"post {int(signal.SIGUSR1)}\n")
    res = _wrapper(tmp_path, {"pre_exec": "exit 4", "post_exec": "echo post"}, ["echo", "job"])
    assert (res.returncode, res.stdout) == (4, "")
    assert (tmp_path / PRE_FAILED).exists()


def test_the_wrapper_limits_each_process_s_cpu_time(tmp_path):
    res = _wrapper(tmp_path, {"cpu_limit": 1.0}, ["sh", "-c", "while :; do :; done"])
    assert res.returncode == -signal.SIGXCPU


# --- on a real cluster


def _bsub(cluster, monkeypatch, capsys, *words):
    """bsub as a user runs it (in this process, as root): (exit code, stdout, stderr)."""
    monkeypatch.setenv("LAVALITE_CONF", cluster.conf_path)
    monkeypatch.chdir(cluster.state)
    code = main(list(words), prog="bsub")
    out, err = capsys.readouterr()
    return code, out, err


def _job_id(out):
    return int(out.split("<")[1].split(">")[0])


def test_bsub_options_reach_bjobs_and_bad_ones_create_nothing(cluster, monkeypatch, capsys):
    year = time.localtime().tm_year + 1
    code, out, err = _bsub(
        cluster,
        monkeypatch,
        capsys,
        "-b",
        f"{year}:1:2:0:00",
        "-t",
        f"{year}:1:3:0:00",
        "-P",
        "proj1",
        "-G",
        "root",
        "-Jd",
        "a description",
        "-sp",
        "70",
        "-r",
        "-E",
        "true",
        "-Ep",
        "true",
        "-c",
        "1:30",
        "-u",
        "me@example.org",
        "-N",
        "-B",
        "true",
    )
    assert code == 0, err
    job_id = _job_id(out)
    view = cluster.jobs([job_id])[job_id]
    assert (view["project"], view["user_group"], view["description"]) == (
        "proj1",
        "root",
        "a description",
    )
    assert (view["priority"], view["rerunnable"], view["cpu_limit"]) == (70, True, 5400.0)
    assert view["notify"] == ["begin", "end"] and view["mail_user"] == "me@example.org"
    assert view["term_time"] > view["begin"] > time.time()
    assert view["pend_reason"] == "The job has a specified start time"
    res = cluster.cli("jobs", "-l", str(job_id))
    assert "Project <proj1>, User Group <root>, Job Priority <70>" in res.stdout
    assert "Pre-execution Command <true>, Post-execution Command <true>" in res.stdout
    assert "CPULIMIT: 90.0 min of each process" in res.stdout
    assert "PENDING REASONS:\n The job has a specified start time;" in res.stdout
    for words, message, exit_code in (
        (
            ["-b", "25:00"],
            "bsub: -b 25:00: Bad time specification; the hour must be 0 to 23. "
            "Job not submitted.\n",
            2,
        ),
        (
            ["-t", "2001:1:1:0:0"],
            "bsub: -t 2001:1:1:0:0: the time is in the past. Job not submitted.\n",
            2,
        ),
        (
            ["-c", "x"],
            "bsub: -c x: Bad CPU limit specification; -c takes [hour:]minute. Job not submitted.\n",
            2,
        ),
        (
            ["-sp", "0"],
            "bsub: -sp 0: Bad user-assigned job priority (1 to MAX_USER_PRIORITY). "
            "Job not submitted.\n",
            2,
        ),
        (
            ["-r", "-rn"],
            "bsub: -r and -rn: a job is either rerunnable or not. Job not submitted.\n",
            2,
        ),
        (["-G", "nogroup"], "bsub: -G nogroup: User not in the specified user group\n", 1),
    ):
        assert _bsub(cluster, monkeypatch, capsys, *words, "true") == (exit_code, "", message)
    assert [j["id"] for j in cluster.client.jobs(all=True)] == [job_id]


def test_pre_exec_failure_requeues_and_post_exec_runs_after_the_job(cluster, tmp_path):
    flag, post = tmp_path / "flag", tmp_path / "post"
    job_id = cluster.submit(
        ["sh", "-c", "echo job; exit 3"],
        pre_exec=f"test -e {flag} || {{ touch {flag}; exit 1; }}",
        post_exec=f"echo $LSB_JOBEXIT_STAT > {post}",
        out=str(tmp_path / "out"),
    )
    view = cluster.wait([job_id])[job_id]
    assert (view["stat"], view["exit_code"], view["attempt"]) == ("FAILED(exit)", 3, 2)
    assert post.read_text() == "768\n"
    assert (tmp_path / "out").read_text() == "job\n"
    assert [e[3] for e in cluster.events(job_id)] == ["PEND", "RUN", "PEND", "RUN", "FAILED"]


def test_a_running_job_is_killed_at_its_termination_time(cluster):
    job_id = cluster.submit(["sleep", "60"], term_time=time.time() + 2)
    view = cluster.wait([job_id])[job_id]
    assert view["stat"] == "FAILED(deadline)"
    res = cluster.cli("jobs", "-l", str(job_id))
    assert "Killed after its termination time (TERM_DEADLINE)." in res.stdout


def test_a_job_over_its_cpu_limit_ends_cpulimit(cluster):
    job_id = cluster.submit(["sh", "-c", "while :; do :; done"], cpu_limit=1.0)
    view = cluster.wait([job_id])[job_id]
    assert view["stat"] == "FAILED(cpulimit)"
    assert "(TERM_CPULIMIT)" in cluster.cli("jobs", "-l", str(job_id)).stdout


def test_the_notify_command_is_told_of_begin_and_end(make_cluster, tmp_path):
    told = tmp_path / "told"
    script = tmp_path / "notify.sh"
    script.write_text(f'#!/bin/sh\necho "$@" "$LSB_JOBSTAT" >> {told}\n')
    script.chmod(0o755)
    cluster = make_cluster(mbatchd={"notify_command": str(script)})
    job_id = cluster.submit(["true"], notify=["begin", "end"], mail_user="x@y")
    cluster.wait([job_id])

    def lines():  # sorted: the two commands may run at once
        return told.exists() and sorted(told.read_text().splitlines())

    wait_until(lambda: len(lines() or ()) == 2, what="two notices")
    assert lines() == [f"begin {job_id} x@y RUN", f"end {job_id} x@y DONE"]


def test_without_a_notify_command_mbatchd_says_so_once(cluster):
    ids = [cluster.submit(["true"], notify=["end"]) for _ in range(2)]
    cluster.wait(ids)
    wait_until(lambda: "no notify_command is set" in cluster.logs(), what=cluster.logs)
    assert cluster.logs().count("no notify_command is set") == 1
