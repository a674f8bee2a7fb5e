"""bsub -K and the interactive jobs (-I, -Ip, -Is) on a real cluster: the job's streams relayed
between bsub and the job, exit codes as LSF's, Ctrl-C, and a submitter that goes away."""

import fcntl
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time

import pytest
from conftest import ROOT, wait_until

from lavalite import relay


def bsub(cluster, *args, stdin=subprocess.DEVNULL, input=None, timeout=60):
    """bsub as a user runs it: a new process, under the LSF name."""
    return subprocess.run(
        cluster.program + ["submit", *args],
        env=cluster.env,
        cwd=cluster.state,
        input=input,
        stdin=None if input is not None else stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_bsub(cluster, *args):
    """bsub left running, its stdout and stderr piped, no stdin."""
    return subprocess.Popen(
        cluster.program + ["submit", *args],
        env=cluster.env,
        cwd=cluster.state,
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def job_id_in(text: str) -> int:
    return int(text.split("Job <", 1)[1].split(">", 1)[0])


def running_job(cluster, job_id: int) -> bool:
    return cluster.jobs([job_id])[job_id]["stat"] == "RUN"


# --- -K


@pytest.mark.parametrize("code", [0, 3])
def test_K_waits_and_exits_with_the_jobs_exit_code(cluster, code):
    res = bsub(cluster, "-K", "-o", "/dev/null", "--", "sh", "-c", f"exit {code}")
    assert res.returncode == code, res.stderr
    job_id = job_id_in(res.stdout)
    assert cluster.jobs([job_id])[job_id]["state"] == ("DONE" if code == 0 else "FAILED")
    assert "<<Waiting for dispatch ...>>" in res.stderr
    assert res.stderr.rstrip().endswith("<<Job is finished>>")


@pytest.mark.parametrize("how", ["bkill", "ctrl-c"])
def test_K_of_a_killed_job(cluster, how):
    """bkill from another process, or Ctrl-C at bsub -K (which kills the job, as LSF)."""
    proc = start_bsub(cluster, "-K", "-o", "/dev/null", "--", "sleep", "300")
    job_id = job_id_in(proc.stdout.readline())
    wait_until(lambda: running_job(cluster, job_id), what="the job running")
    if how == "bkill":
        cluster.cli("kill", str(job_id))
    else:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    view = cluster.jobs([job_id])[job_id]
    assert view["state"] == "KILLED", view
    assert view["exit_signal"] in (signal.SIGTERM, signal.SIGKILL)
    assert proc.returncode == 128 + view["exit_signal"], err
    assert how == "bkill" or f"Job <{job_id}> is being terminated" in err


@pytest.mark.parametrize("option", ["-K", "-I"])
def test_bsub_waiting_survives_an_mbatchd_restart(cluster, option):
    """mbatchd killed and restarted while bsub -K or -I waits: the wait is sent again and bsub
    still exits with the job's exit code (its relay never went through mbatchd)."""
    go = os.path.join(cluster.state, "go")
    script = f"while [ ! -e {go} ]; do sleep 0.1; done; echo went; exit 4"
    proc = start_bsub(cluster, option, "-o", "out.%J", "--", "sh", "-c", script)
    job_id = job_id_in(proc.stdout.readline())
    wait_until(lambda: running_job(cluster, job_id), what="the job running")
    cluster.kill9_restarted("mbatchd")
    open(go, "w").close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err


def test_K_of_a_job_killed_while_pending_exits_126(make_cluster):
    cluster = make_cluster(slots=1)
    blocker = cluster.submit(["sleep", "300"])
    cluster.wait_started([blocker])
    proc = start_bsub(cluster, "-K", "--", "true")
    job_id = job_id_in(proc.stdout.readline())
    cluster.cli("kill", str(job_id))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 126, err
    assert "<<Terminated while pending>>" in err


# --- -I


def _interactive_job_running(cluster):
    """(bsub -I, its job id) once the job runs and has said so through the relay."""
    proc = start_bsub(cluster, "-I", "--", "sh", "-c", "echo ready; exec sleep 300")
    job_id = job_id_in(proc.stdout.readline())
    assert proc.stdout.readline() == "ready\n"
    return proc, job_id


def test_I_relays_piped_stdin_and_stdout(cluster, tmp_path):
    res = bsub(cluster, "-I", "cat", input="hi\n")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("Job <") and lines[1:] == ["hi"], res.stdout
    assert "<<Waiting for dispatch ...>>" in res.stderr
    assert "<<Starting on testhost>>" in res.stderr
    job_id = job_id_in(res.stdout)
    assert not os.path.exists(os.path.join(cluster.state, f"lavalite-{job_id}.out"))


def test_I_relays_megabytes_both_ways_at_once(cluster):
    """cat echoes while stdin still streams: neither side's buffers may wait on the other."""
    data = os.urandom(1 << 20) * 6
    res = subprocess.run(
        cluster.program + ["submit", "-I", "cat"],
        env=cluster.env,
        cwd=cluster.state,
        input=data,
        capture_output=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split(b"\n", 1)[1] == data


def test_I_exit_code_and_stderr_relayed_apart(cluster):
    res = bsub(cluster, "-I", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert res.returncode == 7, res.stderr
    assert res.stdout.splitlines()[1:] == ["out"]
    assert "err\n" in res.stderr and "out" not in res.stderr
    job_id = job_id_in(res.stdout)
    assert cluster.jobs([job_id])[job_id]["exit_code"] == 7


def test_I_with_o_writes_stdout_to_the_file(cluster):
    res = bsub(cluster, "-I", "-o", "out.%J", "--", "sh", "-c", "echo to-file; echo to-tty >&2")
    assert res.returncode == 0, res.stderr
    job_id = job_id_in(res.stdout)
    with open(os.path.join(cluster.state, f"out.{job_id}")) as f:
        assert f.read() == "to-file\n"
    assert "to-tty" in res.stderr and "to-file" not in res.stdout


def test_I_command_not_found(cluster):
    res = bsub(cluster, "-I", "--", "no-such-command-here")
    assert res.returncode == 127, res.stderr
    assert "no-such-command-here: command not found" in res.stderr


def test_I_ctrl_c_goes_to_the_job(cluster):
    proc, job_id = _interactive_job_running(cluster)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    view = cluster.jobs([job_id])[job_id]
    assert view["exit_signal"] == signal.SIGINT, (view, err)
    assert proc.returncode == 128 + signal.SIGINT


def test_I_submitter_gone_kills_the_job(cluster):
    proc, job_id = _interactive_job_running(cluster)
    proc.kill()
    proc.wait()
    view = cluster.wait([job_id], timeout=60)[job_id]
    assert view["state"] == "FAILED" and view["exit_signal"] == signal.SIGKILL, str(view)


def test_I_listener_closed_before_dispatch_ends_the_job(make_cluster):
    """bsub gone while the job pends: the job's side finds no one and the job ends (hung up)."""
    cluster = make_cluster(slots=1)
    blocker = cluster.submit(["sleep", "300"])
    cluster.wait_started([blocker])
    proc = start_bsub(cluster, "-I", "--", "sleep", "300")
    job_id = job_id_in(proc.stdout.readline())
    proc.kill()
    proc.wait()
    cluster.cli("kill", str(blocker))
    view = cluster.wait([job_id], timeout=60)[job_id]
    assert view["state"] == "FAILED" and view["exit_signal"] == signal.SIGHUP, view


def test_I_and_K_together_are_refused(cluster):
    res = bsub(cluster, "-I", "-K", "true")
    assert res.returncode == 2
    assert "bsub: -I and -K cannot be used together" in res.stderr
    assert cluster.client.jobs(all=True) == []


def test_queue_interactive_setting(make_cluster):
    """queues.conf `interactive`: no refuses -I, only refuses anything else (LSF's INTERACTIVE)."""
    cluster = make_cluster(
        queues={
            "serial": {},
            "batch": {"interactive": "no"},
            "terminal": {"interactive": "only"},
        }
    )
    refused = bsub(cluster, "-q", "batch", "-I", "true")
    assert refused.returncode == 1
    assert "queue <batch> does not accept interactive jobs" in refused.stderr
    refused = bsub(cluster, "-q", "terminal", "true")
    assert refused.returncode == 1
    assert "queue <terminal> accepts interactive jobs only" in refused.stderr
    assert cluster.client.jobs(all=True) == []
    assert bsub(cluster, "-q", "terminal", "-I", "true").returncode == 0
    assert bsub(cluster, "-q", "batch", "-o", "/dev/null", "-K", "true").returncode == 0


def test_I_job_array_is_refused(cluster):
    res = bsub(cluster, "-I", "-J", "a[1-3]", "true")
    assert res.returncode == 2 and "cannot be a job array" in res.stderr


# --- -Is, -Ip: a real terminal


def _drive(cluster, argv, react=None, timeout=60):
    """Run bsub on a pty as a user at a terminal of 33 rows and 101 columns; `react(fd, out)`
    acts on the terminal (types, resizes) after each read. (exit status, all it printed)."""
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        os.chdir(cluster.state)
        os.execve(cluster.program[0], cluster.program + ["submit", *argv], cluster.env)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: bsub has exited and closed the terminal
                break
            if not data:
                break
            out += data
        if react is not None:
            react(fd, out)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), bytes(out)


def _once_ready(keys: bytes):
    """A `react` that types `keys` once the job has printed "ready"."""
    typed = []

    def react(fd, out):
        if not typed and b"ready" in out:
            os.write(fd, keys)
            typed.append(keys)

    return react


def test_Is_runs_on_a_terminal(cluster):
    code, out = _drive(cluster, ["-Is", "--", "sh", "-c", "tty; stty size"])
    assert code == 0, out
    assert b"/dev/pts/" in out and b"not a tty" not in out, out
    assert b"33 101" in out, out  # the terminal's size, on the job's pty


def test_Is_window_size_changes_reach_the_job(cluster):
    """The terminal resized while the job runs: the job's pty takes the new size (SIGWINCH)."""
    script = 'echo ready; while read x; do [ "$x" = q ] && exit 0; stty size; done'
    resized = []

    def react(fd, out):
        if b"ready" not in out:
            return
        if not resized:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            resized.append(True)
        os.write(fd, b"q\r" if b"40 120" in out else b"x\r")

    code, out = _drive(cluster, ["-Is", "--", "sh", "-c", script], react)
    assert code == 0 and b"40 120" in out, out


@pytest.mark.parametrize("mode", ["-Is", "-Ip"])
def test_ctrl_c_at_the_terminal_kills_the_job(cluster, mode):
    """-Is: Ctrl-C is a key for the job's pty, which signals the job; -Ip: bsub gets SIGINT
    and sends it to the job."""
    code, out = _drive(
        cluster, [mode, "--", "sh", "-c", "echo ready; exec sleep 300"], _once_ready(b"\x03")
    )
    assert code == 128 + signal.SIGINT, out


def test_Is_from_a_pipe_still_gets_a_pty(cluster):
    res = bsub(cluster, "-Is", "--", "sh", "-c", "tty", input="")
    assert res.returncode == 0, res.stderr
    assert "/dev/pts/" in res.stdout


# --- the relay's handshake (no cluster)


def test_relay_handshake_refuses_a_wrong_token():
    listener = socket.create_server(("127.0.0.1", 0))
    token = relay.new_token()
    port = listener.getsockname()[1]
    with pytest.raises(relay.RelayError):
        _both(listener, token, relay.new_token(), port)
    conn = _both(listener, token, token, port)
    conn.close()
    listener.close()


def _both(listener, token, their_token, port):
    """The job's side connects with `their_token` while the listener checks `token`."""
    import threading

    result = {}

    def job_side():
        try:
            result["sock"] = relay.connect(("127.0.0.1", port), their_token)
        except (OSError, relay.RelayError) as exc:
            result["error"] = exc

    t = threading.Thread(target=job_side)
    t.start()
    conn, _ = listener.accept()
    try:
        relay.accept(conn, token)
    finally:
        t.join()
        conn.close()
    return result["sock"]


# --- blaunch


def _blaunch(tmp_path) -> str:
    """How a job runs blaunch: the program under that name (argv[0] picks the command)."""
    link = tmp_path / "blaunch"
    if not link.exists():
        link.symlink_to(os.path.join(ROOT, "lavalite.py"))
    return f"{sys.executable} {link}"


def _job_output(cluster, job_id, stream="out"):
    with open(os.path.join(cluster.state, f"{stream}.{job_id}")) as f:
        return f.read()


def _output_of_job(cluster, script: str) -> str:
    """What a job running `script` wrote on its stdout, once it has ended."""
    job_id = job_id_in(bsub(cluster, "-o", "out.%J", "--", "sh", "-c", script).stdout)
    cluster.wait([job_id])
    return _job_output(cluster, job_id)


def test_blaunch_runs_a_task_on_the_jobs_host_in_its_cgroups(cluster, tmp_path):
    task = "cat /proc/self/cgroup > task.cg; echo task $LSB_JOBID; echo task-err >&2; exit 5"
    script = f"cat /proc/self/cgroup > job.cg; {_blaunch(tmp_path)} testhost '{task}'"
    res = bsub(cluster, "-o", "out.%J", "-e", "err.%J", "--", "sh", "-c", script)
    job_id = job_id_in(res.stdout)
    view = cluster.wait([job_id])[job_id]
    assert view["exit_code"] == 5, (view, _job_output(cluster, job_id, "err"))
    assert _job_output(cluster, job_id) == f"task {job_id}\n"
    assert _job_output(cluster, job_id, "err") == "task-err\n"
    with (
        open(os.path.join(cluster.state, "job.cg")) as f,
        open(os.path.join(cluster.state, "task.cg")) as g,
    ):
        assert f.read() == g.read()  # the job's own groups


def test_blaunch_relays_stdin_unless_n(cluster, tmp_path):
    script = (
        f"echo piped | {_blaunch(tmp_path)} testhost cat; "
        f"echo dropped | {_blaunch(tmp_path)} -n testhost cat; echo end"
    )
    assert _output_of_job(cluster, script) == "piped\nend\n"


def test_blaunch_z_runs_a_task_on_each_host_named(cluster, tmp_path):
    """-z "HOST ...": one task per word (the same host twice here: a single-host job);
    -no-shell: the command's words as they are."""
    script = (
        f"{_blaunch(tmp_path)} -z 'testhost testhost' -no-shell sh -c 'echo t; exit 3'; "
        "echo exit=$?"
    )
    assert _output_of_job(cluster, script) == "t\nt\nexit=3\n"


def test_blaunch_refuses_a_host_outside_the_job(cluster, tmp_path):
    script = f"{_blaunch(tmp_path)} elsewhere true; echo exit=$?"
    out = _output_of_job(cluster, script)
    assert "host 'elsewhere' is not one of the job's hosts" in out and "exit=1" in out, out


def test_blaunch_of_a_command_not_found_exits_127(cluster, tmp_path):
    script = f"{_blaunch(tmp_path)} testhost no-such-command-here; echo exit=$?"
    out = _output_of_job(cluster, script)
    assert "no-such-command-here: command not found" in out and "exit=127" in out, out


def test_blaunch_outside_a_job_is_refused(cluster, tmp_path):
    env = {k: v for k, v in cluster.env.items() if k != "LSB_JOBID"}
    res = subprocess.run(
        [*_blaunch(tmp_path).split(), "testhost", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "blaunch: not inside a job" in res.stderr


def test_blaunch_task_is_killed_with_its_job(cluster, tmp_path):
    marker = f"{os.getpid()}.{time.monotonic_ns() % 1000}"
    script = f"{_blaunch(tmp_path)} testhost sleep 3{marker}"
    res = bsub(cluster, "-o", "/dev/null", "--", "sh", "-c", script)
    job_id = job_id_in(res.stdout)

    def task_running():
        return any(f"sleep\0003{marker}" in _cmdline(pid) for pid in os.listdir("/proc"))

    wait_until(task_running, what="the task running")
    cluster.cli("kill", str(job_id))
    cluster.wait([job_id])
    wait_until(lambda: not task_running(), what="the task gone with its job")


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read()
    except (OSError, ValueError):
        return ""
