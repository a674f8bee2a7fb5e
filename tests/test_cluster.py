"""The MVP test plan, sections B, C, D, F, G: a real single-host cluster, real processes."""

import os
import signal

import pytest
from conftest import wait_until

from roles.cli.local import free_port


def test_free_port_never_hands_out_the_same_port_twice():
    """`up` takes five ports in a row; bind(0) alone gives one again now and then (once lim
    and mbatchd were both given the same, and mbatchd could not listen)."""
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


def test_ten_trivial_jobs_done(cluster):
    ids = [cluster.submit(["/bin/true"]) for _ in range(10)]
    jobs = cluster.wait(ids)
    assert [jobs[i]["stat"] for i in ids] == ["DONE"] * 10
    assert all(j["exit_code"] == 0 and j["attempt"] == 1 for j in jobs.values())


def test_bsub_bjobs_through_the_cli(cluster, tmp_path):
    res = cluster.cli(
        "submit",
        "-o",
        "out.%J",
        "-e",
        "err.%J",
        "-J",
        "greet",
        "--",
        "sh",
        "-c",
        "echo to-stdout $LSB_JOBID $LSB_JOBNAME $LSB_QUEUE; echo to-stderr >&2",
    )
    assert (
        res.stdout.startswith("Job <") and "is submitted to default queue <serial>." in res.stdout
    )
    job_id = int(res.stdout.split("<")[1].split(">")[0])
    cluster.wait([job_id])
    with open(os.path.join(cluster.state, f"out.{job_id}")) as f:
        assert f.read() == f"to-stdout {job_id} greet serial\n"
    with open(os.path.join(cluster.state, f"err.{job_id}")) as f:
        assert f.read() == "to-stderr\n"
    listing = cluster.cli("jobs", "-a").stdout.splitlines()
    assert listing[0].split() == [
        "JOBID",
        "USER",
        "STAT",
        "QUEUE",
        "FROM_HOST",
        "EXEC_HOST",
        "JOB_NAME",
        "SUBMIT_TIME",
    ]
    row = [line for line in listing if line.startswith(str(job_id))][0].split()
    assert row[2:4] == ["DONE", "serial"] and row[5] == "testhost" and row[6] == "greet"
    long = cluster.cli("jobs", "-l", str(job_id)).stdout
    assert (
        "Done successfully." in long and f"Job <{job_id}>" in long and "Started 1 Task(s)" in long
    )


def test_default_output_goes_to_cwd_and_env_is_the_submitters(cluster):
    job_id = cluster.submit(
        ["sh", "-c", "echo $MY_VAR; pwd"], env={"PATH": os.environ["PATH"], "MY_VAR": "carried"}
    )
    cluster.wait([job_id])
    with open(os.path.join(cluster.state, f"lavalite-{job_id}.out")) as f:
        assert f.read().split() == ["carried", cluster.state]


def test_per_user_cap_never_exceeded(make_cluster):
    c = make_cluster(slots=6, queues={"serial": {"max_running_user": "2"}})
    ids = [c.submit(["sleep", "0.3"]) for _ in range(12)]
    c.wait(ids)
    running, peak = 0, 0
    for _job_id, _, old, new, *_ in c.events():
        if new == "RUN":
            running += 1
        elif old == "RUN":
            running -= 1
        peak = max(peak, running)
    assert peak == 2, f"peak concurrent RUN for the user was {peak}"


def _pending_for(c, job_id, reason):
    """The job's view once it is pending for `reason` (a turn has looked at it), else None."""
    view = c.jobs([job_id])[job_id]
    return view if reason in (view.get("pend_reason") or "") else None


def test_pending_reason_names_the_user_cap(make_cluster):
    c = make_cluster(slots=4, queues={"serial": {"max_running_user": "1"}})
    first = c.submit(["sleep", "30"])
    second = c.submit(["sleep", "30"])
    c.wait([first], states=("RUN",))
    view = wait_until(
        lambda: _pending_for(c, second, "per-user job slot limit"),
        30,
        "the second job to pend for the user's cap",
    )
    assert view["state"] == "PEND"
    assert "PENDING REASONS" in c.cli("jobs", "-l", str(second)).stdout
    c.client.kill([first, second])


def test_queue_priority_and_queue_cap(make_cluster):
    c = make_cluster(
        slots=1,
        queues={
            "low": {"priority": "10"},
            "high": {"priority": "50", "max_running_queue": "1"},
            "serial": {},
        },
    )
    blocker = c.submit(["sleep", "1"], queue="low")
    c.wait([blocker], states=("RUN",))
    low = c.submit(["/bin/true"], queue="low")
    high = c.submit(["/bin/true"], queue="high")
    jobs = c.wait([blocker, low, high])
    starts = {e[0]: e[1] for e in c.events() if e[3] == "RUN"}
    assert starts[high] < starts[low], "the higher-priority queue must be served first"
    assert jobs[low]["stat"] == jobs[high]["stat"] == "DONE"


def test_walltime_ends_in_failed_timeout(cluster):
    job_id = cluster.submit(["sleep", "30"], walltime=1)
    job = cluster.wait([job_id], timeout=30)[job_id]
    assert job["stat"] == "FAILED(timeout)" and job["exit_signal"] == signal.SIGTERM
    assert job["end_time"] - job["start_time"] < 10


def test_retries_stop_after_n_attempts_with_backoff(make_cluster):
    c = make_cluster(queues={"serial": {"retry_backoff": "1", "retry_backoff_max": "10"}})
    job_id = c.submit(["sh", "-c", "exit 3"], retries=2)
    job = c.wait([job_id], timeout=60)[job_id]
    assert job["stat"] == "FAILED(exit)" and job["exit_code"] == 3 and job["attempt"] == 3
    runs = [e for e in c.events(job_id) if e[3] == "RUN"]
    ends = [e for e in c.events(job_id) if e[2] == "RUN"]
    assert len(runs) == 3 and [e[3] for e in ends] == ["PEND", "PEND", "FAILED"]
    # backoff 1 s then 2 s (doubling): each retry starts no earlier than its backoff allows
    assert runs[1][1] - ends[0][1] >= 1.0 - 0.05
    assert runs[2][1] - ends[1][1] >= 2.0 - 0.05


def test_bkill_running_and_pending_twice_is_fine(make_cluster):
    c = make_cluster(slots=1)
    running = c.submit(["sleep", "60"])
    c.wait([running], states=("RUN",))
    pending = c.submit(["sleep", "60"])
    res = c.cli("kill", str(running), str(pending))
    assert f"Job <{running}> is being terminated" in res.stdout
    jobs = c.wait([running, pending], timeout=30)
    assert jobs[running]["stat"] == "KILLED" and jobs[pending]["stat"] == "KILLED"
    again = c.cli("kill", str(running))
    assert again.returncode == 0 and "already been killed" in again.stdout
    done = c.submit(["/bin/true"])
    c.wait([done])
    finished = c.cli("kill", str(done), check=False)
    assert finished.returncode == 1 and "already finished" in finished.stderr


def test_burst_of_1000_drains_each_job_done_once(make_cluster, tmp_path):
    c = make_cluster(slots=8)
    log = tmp_path / "runs.log"
    ids = [
        c.submit(["sh", "-c", f"echo $LSB_JOBID >> {log}"], out="/dev/null") for _ in range(1000)
    ]
    jobs = c.wait(ids, timeout=300)
    assert all(j["stat"] == "DONE" for j in jobs.values())
    runs = log.read_text().split()
    assert sorted(map(int, runs)) == sorted(ids), "every job ran exactly once"
    dones = [e[0] for e in c.events() if e[3] == "DONE"]
    assert sorted(dones) == sorted(ids)


def test_mbatchd_kill9_mid_burst_loses_and_duplicates_nothing(make_cluster, tmp_path):
    c = make_cluster(slots=4)
    log = tmp_path / "runs.log"
    ids = [
        c.submit(
            ["sh", "-c", f"sleep 0.05; echo $LSB_JOBID.$LAVALITE_ATTEMPT >> {log}"], out="/dev/null"
        )
        for _ in range(300)
    ]
    wait_until(
        lambda: log.exists() and log.read_text().count("\n") >= 10, 60, "the burst to be running"
    )
    c.kill9_restarted("mbatchd")
    c.client.close()
    more = [
        c.submit(["sh", "-c", f"echo $LSB_JOBID.$LAVALITE_ATTEMPT >> {log}"], out="/dev/null")
        for _ in range(50)
    ]
    jobs = c.wait(ids + more, timeout=300)
    assert all(j["stat"] == "DONE" for j in jobs.values())
    runs = log.read_text().split()
    assert len(runs) == len(set(runs)), "an attempt ran twice"
    assert sorted(int(r.split(".")[0]) for r in runs) == sorted(ids + more)


def test_restart_keeps_queued_jobs_and_adopts_running_ones(make_cluster):
    c = make_cluster(slots=1)
    blocker = c.submit(["sleep", "2"])
    queued = [c.submit(["/bin/true"]) for _ in range(5)]
    c.wait([blocker], states=("RUN",))
    c.stop(kill_jobs=False)  # the whole cluster goes down; the running job does not
    c.start()
    jobs = c.wait([blocker] + queued, timeout=60)
    assert all(j["stat"] == "DONE" for j in jobs.values()), jobs


@pytest.mark.parametrize(
    "cmd, code, says",
    [
        (["/nonexistent/prog"], 127, "/nonexistent/prog: No such file or directory"),
        (["no-such-command-here"], 127, "no-such-command-here: command not found"),
        (["{tmp}/data"], 126, "{tmp}/data: Permission denied"),
        (["/etc"], 126, "/etc: Permission denied"),
    ],
)
def test_unrunnable_command_fails_with_reason(cluster, tmp_path, cmd, code, says):
    """As a shell says it: 127 for a command that is not there, 126 for one that cannot run,
    and why in the job's error file."""
    (tmp_path / "data").write_text("not a program\n")  # mode 0644: no x bit, even for root
    cmd, says = [c.format(tmp=tmp_path) for c in cmd], says.format(tmp=tmp_path)
    err = tmp_path / "err"
    job_id = cluster.submit(cmd, err=str(err), out=str(tmp_path / "out"))
    job = cluster.wait([job_id])[job_id]
    assert job["stat"] == "FAILED(exec_failed)" and job["exit_code"] == code, job
    assert err.read_text() == f"lavalite: {says}\n"
    # and in what mbatchd keeps: bjobs -l says it as long as the job is remembered
    assert job["message"] == says
    assert f"\n  {says}\n" in cluster.cli("jobs", "-l", str(job_id)).stdout


def test_an_executable_file_without_interpreter_line_runs_under_sh(cluster, tmp_path):
    """execvp's (and LSF's) way: ENOEXEC means a shell script; its arguments follow."""
    script = tmp_path / "plain"
    script.write_text("echo ran with $# args: $1\n")
    script.chmod(0o755)
    out = tmp_path / "out"
    job_id = cluster.submit([str(script), "first"], out=str(out))
    assert cluster.wait([job_id])[job_id]["stat"] == "DONE"
    assert out.read_text() == "ran with 1 args: first\n"


def test_a_job_holds_only_its_three_standard_descriptors(cluster, tmp_path):
    """Nothing of the shepherd's (its link to sbatchd, other attempts' locks and outputs, the
    cgroup files it keeps open) reaches a job: only stdin, stdout and stderr."""
    out = tmp_path / "fds"
    blockers = [cluster.submit(["sleep", "30"]) for _ in range(2)]  # other attempts' files
    cluster.wait_started(blockers)
    job = cluster.submit(["ls", "/proc/self/fd"], out=str(out))
    assert cluster.wait([job])[job]["stat"] == "DONE"
    cluster.client.kill(blockers)
    # ls itself opens one more, for the directory it lists
    assert sorted(int(n) for n in out.read_text().split()) == [0, 1, 2, 3]
    # the shepherds enter a job's directory only to start it: they pin none (an unmount, an
    # automount's expiry, `fuser -k` on a user's directory would meet them)
    shepherds = cluster.shepherds()
    assert shepherds and all(os.readlink(f"/proc/{p}/cwd") == "/" for p in shepherds)
