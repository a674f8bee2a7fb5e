"""bsub as LSF 10.1 documents it where the rest leaves off: the `bsub> ` prompt on a terminal,
-L beside -env, -i with interactive jobs, the job report's submit time and usage, bjobs -l of
interactive and script jobs. Real clusters, a real pseudo-terminal."""

import os
import pty
import re
import subprocess
import time

import pytest
from conftest import wait_until
from test_bsub_scripts import _bsub, _job, _read
from test_lsf_options import _lsf_command

from roles.sbatchd import cgroups


class _Terminal:
    """A command on a pseudo-terminal of its own, read as it writes."""

    def __init__(self, argv: list[str], env: dict, cwd: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True
        )
        os.close(slave)
        os.set_blocking(self.master, False)
        self.seen = b""

    def _read(self) -> bytes:
        try:
            self.seen += os.read(self.master, 4096)
        except (BlockingIOError, OSError):  # nothing yet; EIO once the command has gone
            pass
        return self.seen

    def wait_for(self, text: bytes, count: int = 1) -> None:
        wait_until(lambda: self._read().count(text) >= count, what=lambda: repr(self.seen))

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> bytes:
        """What the command wrote, once it has ended."""
        wait_until(lambda: self._read() and self.proc.poll() is not None, what="bsub to end")
        self._read()
        os.close(self.master)
        return self.seen


def test_bsub_on_a_terminal_prompts_for_the_job_commands(cluster, tmp_path):
    term = _Terminal(
        _lsf_command(tmp_path, "bsub") + ["-oo", "typed.out"], cluster.env, cluster.state
    )
    term.wait_for(b"bsub> ")
    term.type(b"#BSUB -J typed\n")
    term.wait_for(b"bsub> ", 2)
    term.type(b"echo one $LSB_JOBNAME\n")
    term.wait_for(b"bsub> ", 3)
    term.type(b"echo two\n")
    term.wait_for(b"bsub> ", 4)
    term.type(b"\x04")  # Ctrl-D on a new line ends the job's commands
    said = term.close().decode()
    assert term.proc.returncode == 0, said
    job = int(re.search(r"Job <(\d+)> is submitted", said).group(1))
    view = cluster.wait([job])[job]
    assert (view["state"], view["name"]) == ("DONE", "typed"), view
    assert _read(cluster, "typed.out").endswith("one typed\ntwo\n")


def test_bsub_on_a_terminal_with_nothing_typed_runs_nothing(cluster, tmp_path):
    term = _Terminal(_lsf_command(tmp_path, "bsub"), cluster.env, cluster.state)
    term.wait_for(b"bsub> ")
    term.type(b"\x04")
    said = term.close().decode()
    assert term.proc.returncode == 2 and "bsub: no command to run" in said, said
    assert cluster.client.jobs(all=True) == []


def test_login_shell_takes_effect_over_env(cluster, tmp_path):
    shell = tmp_path / "loginsh"  # a login shell whose profile sets FROM, then runs the job
    shell.write_text('#!/bin/sh\nexport FROM=profile\nshift\nexec /bin/sh "$@"\n')
    shell.chmod(0o755)
    job = _job(
        _bsub(
            cluster,
            tmp_path,
            *("-L", str(shell), "-env", "all, FROM=env, SHELL=/bin/false", "-oo", "l.out"),
            'echo "$FROM $SHELL"',
        )
    )
    assert cluster.wait([job])[job]["state"] == "DONE"
    assert _read(cluster, "l.out").endswith(f"profile {shell}\n")


def _interactive(cluster, tmp_path, *argv):
    """bsub under its LSF name, its own stdin empty (/dev/null), its output captured."""
    return subprocess.run(
        _lsf_command(tmp_path, "bsub") + list(argv),
        env=cluster.env,
        cwd=cluster.state,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_interactive_job_reads_its_input_file(cluster, tmp_path):
    with open(os.path.join(cluster.state, "in.txt"), "w") as f:
        f.write("from the file\n")
    for mode, given in (("-I", "-i"), ("-Ip", "-i"), ("-Is", "-is")):  # on pipes, on a pty
        res = _interactive(cluster, tmp_path, mode, given, "in.txt", "cat")
        assert (res.returncode, res.stdout.splitlines()[1:]) == (0, ["from the file"]), res


# a job that holds 64 MiB written (counted as resident) and spends CPU time
HUNGRY = "python3 -c 'import time; b = b\"x\" * (64 << 20)\nwhile time.process_time() < 0.3: pass'"


def test_job_report_says_when_the_job_was_submitted_and_what_it_used(cluster, tmp_path):
    job = _job(_bsub(cluster, tmp_path, "-o", "r.out", HUNGRY))
    view = cluster.wait([job])[job]
    assert view["state"] == "DONE", view
    out = _read(cluster, "r.out")
    submitted = time.ctime(view["submit_time"])
    assert f"in cluster <lavalite> at {submitted}\n" in out, out
    cpu = float(re.search(r"CPU time :\s+([\d.]+) sec\.", out).group(1))
    assert cpu >= 0.3, out
    v2, v1 = cgroups.mounts()
    if "memory" not in v1 and v2 is None:
        pytest.skip("no memory cgroup here: Max Memory is '-' without one")
    peak = int(re.search(r"Max Memory :\s+(\d+) MB", out).group(1))
    assert 64 <= peak < 1024, out


def _long(cluster, tmp_path, job):
    res = subprocess.run(
        _lsf_command(tmp_path, "bjobs") + ["-l", str(job)],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res
    return res.stdout


def test_bjobs_l_says_interactive_mode_and_shows_a_script_as_lsf(cluster, tmp_path):
    modes = {
        "-I": "Interactive mode",
        "-Ip": "Interactive pseudo-terminal mode",
        "-Is": "Interactive pseudo-terminal shell mode",
    }
    for option, words in modes.items():
        res = _interactive(cluster, tmp_path, option, "true")
        job = int(re.search(r"Job <(\d+)>", res.stdout).group(1))
        assert f", {words}, Command <true>" in _long(cluster, tmp_path, job)
    script = _job(
        _bsub(cluster, tmp_path, "-oo", "s.out", stdin="#!/bin/sh\n#BSUB -q serial\n\necho a\n")
    )
    cluster.wait([script])
    long = _long(cluster, tmp_path, script)
    assert "Command <#!/bin/sh;#BSUB -q serial;echo a>" in long and "Interactive" not in long
