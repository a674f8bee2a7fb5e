"""LSF job scripts and the files of a job, as bsub users know them: `bsub < script` with #BSUB
lines (written from LSF 10.1's documented examples), `echo cmd | bsub`, `bsub job_script` with
and without `parse_script`, LSF's command line (joined; /bin/sh when it needs one), -i/-is,
-o appending with the job report, -oo, -outdir, -cwd, -env, -L, the umask, the job variables.
Real clusters; the parsers and the shell check are tested without processes first."""

import os
import re
import stat
import subprocess

import pytest
from conftest import wait_until
from test_lsf_options import _lsf_command, _run
from test_users import _job_id, accounts, as_user, multiuser, readable  # noqa: F401 (fixtures)

from lavalite import jobscript, jobspec
from roles.cli import bsub_script
from roles.cli.quick import Refused
from roles.sbatchd import cgroups

# --- without processes


def test_bsub_lines_are_read_wherever_they_are_as_lsf_does():
    text = (
        "#!/bin/bash\n"
        "\n"
        "# a comment\n"
        "#BSUB -J 'my job' -q normal  # trailing comment\n"
        "  #BSUB -o out.%J\n"
        "#BSUBX not ours\n"
        "echo first command\n"
        "#BSUB -n 4\n"
    )
    assert jobscript.bsub_lines(text) == [
        (4, ["-J", "my job", "-q", "normal"]),
        (5, ["-o", "out.%J"]),
        (8, ["-n", "4"]),  # among the commands, as in LSF's job_script example (-P there)
    ]
    assert jobscript.commands_of(text) == "echo first command"
    with pytest.raises(jobscript.ScriptError, match="line 1"):
        jobscript.bsub_lines("#BSUB -J 'unclosed\n")


def test_lsf_command_line_goes_through_the_shell_only_when_it_needs_one():
    assert jobscript.command_line(["sleep", "1"]) == ["sleep", "1"]
    assert jobscript.command_line(["cd", "/tmp", "&&", "pwd"]) == ["cd /tmp && pwd"]
    assert jobscript.command_line(["myJob", "-f", "input.$LSB_JOBINDEX"]) == [
        "myJob -f input.$LSB_JOBINDEX"
    ]
    assert jobscript.argv_of(["cd /tmp && pwd"]) == ["/bin/sh", "-c", "cd /tmp && pwd"]
    assert jobscript.argv_of(["true"]) == ["true"]
    assert jobscript.script_argv("#!/usr/bin/env python3 -u\nprint()\n", "/s") == [
        "/usr/bin/env",
        "python3 -u",
        "/s",
    ]
    assert jobscript.script_argv("echo hi\n", "/s") == ["/bin/sh", "/s"]


def test_env_forms_as_lsf_documents_them(monkeypatch):
    monkeypatch.setenv("filename", "/data")
    current = {"A": "1", "B": "2", "PATH": "/bin"}
    assert bsub_script.environment(None, current) == current
    assert bsub_script.environment("none", current) == {}
    assert bsub_script.environment("all, ~B, C=3", current) == {"A": "1", "PATH": "/bin", "C": "3"}
    assert bsub_script.environment("A, D='x, y', E=/tmp/:$filename", current) == {
        "A": "1",
        "D": "x, y",
        "E": "/tmp/:/data",
    }
    for bad in ("~A", "all, ~A=1", "all, none=1"):
        with pytest.raises(Refused, match="-env"):
            bsub_script.environment(bad, current)


def test_a_script_bigger_than_the_bound_is_refused_by_field():
    with pytest.raises(jobspec.SpecError, match="script"):
        jobscript.checked({"script": "x" * (jobspec.MAX_SCRIPT + 1)}, 1)
    assert jobscript.checked({"script": "true\n", "out_append": True}, 3) == {
        "script": "true\n",
        "out_append": True,
        "attempts": 3,
    }


# --- real clusters


def _bsub(cluster, tmp_path, *argv, stdin=None, env=None, umask=None):
    """bsub as a user runs it (its LSF name) in the cluster's directory, stdin from `stdin`
    (text) or /dev/null, with `env` (default the cluster's) and `umask` if given."""
    return subprocess.run(
        _lsf_command(tmp_path, "bsub") + list(argv),
        env=env or cluster.env,
        cwd=cluster.state,
        capture_output=True,
        text=True,
        timeout=60,
        **({"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}),
        preexec_fn=None if umask is None else lambda: os.umask(umask),
    )


def _job(res):
    assert res.returncode == 0, res
    return int(re.search(r"Job <(\d+)>", res.stdout).group(1))


def _read(cluster, name):
    with open(os.path.join(cluster.state, name)) as f:
        return f.read()


SCRIPT = """#!/bin/sh
# From LSF's documented example: options in #BSUB lines, then the commands.
#BSUB -J script_name
#BSUB -o out.%J
#BSUB -q serial
#BSUB -n 1
#BSUB -W 10
echo "name=$LSB_JOBNAME out=$LSB_OUTPUTFILE file=$LSB_JOBFILENAME subcwd=$LSB_SUBCWD"
cat "$LSB_JOBFILENAME" | head -1
"""


def test_bsub_reads_a_script_on_stdin_and_the_command_line_wins(cluster, tmp_path):
    job = _job(_bsub(cluster, tmp_path, "-J", "from_cmdline", stdin=SCRIPT))
    view = cluster.wait([job])[job]
    assert (view["state"], view["name"], view["queue"]) == ("DONE", "from_cmdline", "serial")
    assert view["walltime"] == 600
    out = _read(cluster, f"out.{job}")
    assert f"Subject: Job {job}: <from_cmdline>" in out and "Successfully completed." in out
    assert "# LSBATCH: User input\n#!/bin/sh\n" in out  # the script as submitted
    line = next(x for x in out.splitlines() if x.startswith("name="))
    assert f"name=from_cmdline out={cluster.state}/out.{job} file=" in line
    assert line.endswith(f"subcwd={cluster.state}")
    spooled = line.split("file=")[1].split()[0]
    assert spooled.endswith(jobscript.SCRIPT_NAME) and "#!/bin/sh\n" in out.split(line)[1]
    # the spooled script goes with the attempt's TMPDIR (removed by the shepherd's cleaner)
    wait_until(lambda: not os.path.exists(spooled), what=f"{spooled} to be removed")
    long = _bsub_long(cluster, tmp_path, job)
    assert "Command <#!/bin/sh;# From LSF's documented example" in long  # LSF's: every line


def _bsub_long(cluster, tmp_path, job):
    res = _run(cluster, tmp_path, ["bjobs", "-l", str(job)])
    assert res.returncode == 0, res
    return res.stdout


def test_echo_cmd_into_bsub_and_the_command_line_as_lsf(cluster, tmp_path):
    piped = _job(_bsub(cluster, tmp_path, "-oo", "piped.out", stdin="echo piped $LSB_JOBID\n"))
    shell = _job(_bsub(cluster, tmp_path, "-oo", "cd.out", "cd", "/tmp", "&&", "pwd"))
    array = _job(
        _bsub(cluster, tmp_path, "-J", "a[1-3]", "-oo", "arr.%I", "echo", "input.$LSB_JOBINDEX")
    )
    plain = _job(_bsub(cluster, tmp_path, "-oo", "plain.out", "echo", "a", "b"))
    failed = _job(_bsub(cluster, tmp_path, "-oo", "failed.out", "exit 5; true"))
    views = cluster.wait([piped, shell, plain, failed])
    assert views.pop(failed)["exit_code"] == 5
    assert all(v["state"] == "DONE" for v in views.values()), views
    report = _read(cluster, "failed.out")
    assert f"Subject: Job {failed}: <exit 5; true> in cluster <lavalite> Exited" in report
    assert "\nExited with exit code 5.\n" in report
    assert views[plain]["cmd"] == ["echo", "a", "b"]  # no shell syntax: exec'd directly
    assert views[shell]["cmd"] == ["cd /tmp && pwd"]
    assert f"piped {piped}\n" in _read(cluster, "piped.out")
    assert "\n/tmp\n" in _read(cluster, "cd.out")
    wait_until(
        lambda: all(os.path.exists(os.path.join(cluster.state, f"arr.{i}")) for i in (1, 2, 3))
    )
    for i in (1, 2, 3):
        wait_until(lambda i=i: f"input.{i}\n" in _read(cluster, f"arr.{i}"), what=f"arr.{i}")
    assert "Command <cd /tmp && pwd>" in _bsub_long(cluster, tmp_path, shell)
    assert array


def test_a_job_script_file_is_parsed_only_where_the_site_says(make_cluster, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n#BSUB -J parsed\necho ran $LSB_JOBNAME\n")
    script.chmod(0o755)
    plain = make_cluster()
    job = _job(_bsub(plain, tmp_path, "-oo", "o", str(script)))
    view = plain.wait([job])[job]  # a command: its #BSUB lines are comments
    assert view["cmd"] == [str(script)] and view["name"] != "parsed"
    assert f"ran {view['name']}\n" in _read(plain, "o")
    parsing = make_cluster(conf={"cluster": {"parse_script": "yes"}})
    script.chmod(0o644)  # read as a script: it need not be executable
    job = _job(_bsub(parsing, tmp_path, "-oo", "o", str(script)))
    assert parsing.wait([job])[job]["name"] == "parsed"
    assert "ran parsed" in _read(parsing, "o")
    binary = _job(_bsub(parsing, tmp_path, "-oo", "b", "/bin/true"))  # a program, not a script
    assert parsing.wait([binary])[binary]["cmd"] == ["/bin/true"]


def test_append_keeps_only_the_attempt_that_ends_the_job_and_the_text_submitted(
    make_cluster, tmp_path
):
    """-o appends, once, the attempt that ends the job (the failed one retried is dropped);
    the retry runs the script as submitted though the file changed since; -oo overwrites."""
    c = make_cluster(conf={"cluster": {"parse_script": "yes"}})
    script = tmp_path / "retry.sh"
    script.write_text(
        '#BSUB -o appended.out\nif [ "$LAVALITE_ATTEMPT" = 1 ]; then echo first; exit 3; fi\n'
        "echo second\n"
    )
    with open(os.path.join(c.state, "appended.out"), "w") as f:
        f.write("before\n")
    job = _job(_bsub(c, tmp_path, "--retries", "1", str(script)))
    script.write_text("echo changed\n")
    view = c.wait([job], timeout=60)[job]
    assert (view["state"], view["attempt"]) == ("DONE", 2), view
    out = _read(c, "appended.out")
    assert out.startswith("before\nSender: ") and out.count("Sender: ") == 1
    output = out.split("The output (if any) follows:\n")[1]
    assert output == "\nsecond\n" and "changed" not in out
    again = _job(_bsub(c, tmp_path, "-o", "appended.out", "echo", "third"))
    c.wait([again])
    out = _read(c, "appended.out")
    assert out.count("Successfully completed.") == 2 and out.index("second") < out.index("third")
    over = _job(_bsub(c, tmp_path, "-oo", "appended.out", "echo", "fourth"))
    c.wait([over])
    out = _read(c, "appended.out")
    assert out.count("Sender: ") == 1 and "fourth" in out and "third" not in out


def test_the_job_report_is_a_site_choice(make_cluster, tmp_path):
    c = make_cluster(conf={"cluster": {"job_report": "no"}})
    job = _job(
        _bsub(
            c, tmp_path, "-o", "r.out", "-e", "r.err", "echo $LSB_ERRORFILE; echo err >&2; exit 4"
        )
    )
    assert c.wait([job])[job]["exit_code"] == 4
    assert _read(c, "r.out") == f"{c.state}/r.err\n" and _read(c, "r.err") == "err\n"


def test_input_files_directories_and_umask(cluster, tmp_path):
    data = os.path.join(cluster.state, "in.txt")
    with open(data, "w") as f:
        f.write("from -i\n")
    spooled = tmp_path / "spool.txt"
    spooled.write_text("from -is\n")
    i = _job(_bsub(cluster, tmp_path, "-i", "in.txt", "-oo", "i.out", "cat"))
    is_ = _job(_bsub(cluster, tmp_path, "-is", str(spooled), "-oo", "is.out", "cat"))
    spooled.unlink()  # -is read it at submit
    outdir = _job(
        _bsub(cluster, tmp_path, "-outdir", "od/%J", "-oo", "o.txt", "echo", "in $LSB_OUTDIR")
    )
    cwd = _job(_bsub(cluster, tmp_path, "-cwd", "wd/%J", "-oo", "c.out", "pwd"))
    in_dir = _job(_bsub(cluster, tmp_path, "-o", "logs/", "-e", "logs/", "echo", "in logs"))
    masked = _job(_bsub(cluster, tmp_path, "-oo", "m.out", "touch", "masked.file", umask=0o027))
    views = cluster.wait([i, is_, outdir, cwd, masked, in_dir])
    assert all(v["state"] == "DONE" for v in views.values()), views
    assert "from -i\n" in _read(cluster, "i.out")
    assert "from -is\n" in _read(cluster, "is.out")
    assert f"in {cluster.state}/od/{outdir}\n" in _read(cluster, f"od/{outdir}/o.txt")
    assert f"{cluster.state}/wd/{cwd}\n" in _read(cluster, f"wd/{cwd}/c.out")
    assert "\nin logs\n" in _read(cluster, f"logs/{in_dir}.out")  # -o DIR/: LSF's JOB.out
    assert _read(cluster, f"logs/{in_dir}.err") == ""
    mode = stat.S_IMODE(os.stat(os.path.join(cluster.state, "masked.file")).st_mode)
    assert mode == 0o640, oct(mode)


def test_env_and_login_shell(cluster, tmp_path):
    env = dict(cluster.env, KEEP="k", DROP="d")
    none = _job(_bsub(cluster, tmp_path, "-env", "none", "-oo", "none.out", "env", env=env))
    some = _job(
        _bsub(cluster, tmp_path, "-env", "all, ~DROP, NEW=n", "-oo", "some.out", "env", env=env)
    )
    shell = tmp_path / "loginsh"  # says how it was started, then runs what it was given
    shell.write_text('#!/bin/sh\necho "started with $1"\nshift\nexec /bin/sh "$@"\n')
    shell.chmod(0o755)
    login = _job(_bsub(cluster, tmp_path, "-L", str(shell), "-oo", "login.out", "echo", "hi"))
    views = cluster.wait([none, some, login])
    assert all(v["state"] == "DONE" for v in views.values()), views
    assert "KEEP=" not in _read(cluster, "none.out")
    some_out = _read(cluster, "some.out")
    assert "KEEP=k" in some_out and "NEW=n" in some_out and "DROP=" not in some_out
    assert "started with -l\nhi\n" in _read(cluster, "login.out")


def test_bad_scripts_and_inputs_are_refused_and_nothing_is_created(cluster, tmp_path):
    cases = [
        (dict(stdin="#BSUB -q serial\n#BSUB -Zs\ntrue\n"), "-Zs is an LSF option", "line 2"),
        (dict(stdin="#BSUB -bogus 1\ntrue\n"), "-bogus is not an option", "line 1"),
        (dict(stdin="#BSUB serial\ntrue\n"), "takes options only", "line 1"),
        (dict(stdin="true\n" + "#" * (jobspec.MAX_SCRIPT + 1)), "script", "bytes"),
    ]
    for kw, said, where in cases:
        res = _bsub(cluster, tmp_path, **kw)
        assert res.returncode == 2 and said in res.stderr and where in res.stderr, res
    res = _bsub(cluster, tmp_path, "-i", "missing.txt", "cat")
    assert res.returncode == 2
    assert res.stderr == "bsub: missing.txt: No such file or directory. Job not submitted.\n"
    assert cluster.client.jobs(all=True) == []


FORKED = """#BSUB -J forked
read line
echo "got $line"
: > made.file
umask
"""


def test_a_script_job_of_another_user_forked_into_its_cgroup(multiuser, accounts, tmp_path):
    """The shepherd's fork path (another user's job that cannot be spawned from inside its
    groups: --pids 1 under cgroup v1): the script and the -is input are spooled by the job's
    own process, as the user, its umask the submitter's; only builtins run (one task)."""
    if "pids" not in cgroups.mounts()[1]:
        pytest.skip("needs cgroup v1's pids controller (the fork path under --pids 1)")
    c, pw = multiuser, accounts["llt4a"]
    data = os.path.join(pw.pw_dir, "in.txt")
    with open(data, "w") as f:
        f.write("hello\n")
    os.chown(data, pw.pw_uid, pw.pw_gid)
    res = as_user(
        c, pw, "submit", "--pids", "1", "-is", "in.txt", "-oo", "out.txt", input=FORKED, umask=0o027
    )
    job = _job_id(res)
    view = c.wait([job])[job]
    assert (view["state"], view["name"]) == ("DONE", "forked"), view
    with open(os.path.join(pw.pw_dir, "out.txt")) as f:
        assert f.read() == "got hello\n0027\n"
    made = os.stat(os.path.join(pw.pw_dir, "made.file"))
    assert (made.st_uid, stat.S_IMODE(made.st_mode)) == (pw.pw_uid, 0o640)
