"""roles.cli.quick against argparse: whatever it parses, it parses as argparse does; whatever
else it leaves to argparse (None); and the everyday forms of the user commands it parses."""

import contextlib
import io
import subprocess
import sys

import pytest
from conftest import ROOT

from roles.cli import QUICK, quick_args
from roles.cli.parser import build_parser

# Each command: lines Quick must parse itself, then lines it may leave to argparse.
OWN = {
    "submit": [
        ["--", "true"],
        ["-o", "/dev/null", "--", "true"],
        ["true"],
        ["-K", "true"],
        ["-Is", "-q", "q", "sh", "-i"],
        ["-I", "-Ip", "cat"],
        ["echo", "-n", "x"],
        [
            "-q",
            "short",
            "-J",
            "a[1-10]%2",
            "-o",
            "o.%J",
            "-e",
            "e.%J",
            "-W",
            "1:30",
            "--time",
            "60",
            "-n",
            "2",
            "--retries",
            "3",
            "-M",
            "2G",
            "--pids",
            "50",
            "--each-line",
            "f",
            "--conf",
            "c",
            "--",
            "sh",
            "-c",
            "x -y",
        ],
        ["--time=5", "-n", "3", "-n", "4", "cmd", "--", "-h"],
        ["-J", "", "-"],
        [],
        ["-o", "x", "--"],
        ["--", "-o", "x"],
        ["-w", "done(3) && exit(4, != 0)", "-H", "true"],
    ],
    "jobs": [
        [],
        ["-a"],
        ["-a", "-u", "all", "-q", "q", "-l", "-A", "--json"],
        ["1", "2[3]"],
        ["-l", "7"],
        ["--conf=/x", "-u", "bob", "42"],
    ],
    "kill": [["1"], ["1", "2[5]", "3"], ["--conf", "c", "9"]],
    "resume": [["1"], ["1", "2[5]"], ["--conf", "c", "9"]],
    "queues": [[], ["--conf", "c"], ["-l", "-w", "serial", "x"]],
    "hosts": [[], ["-w"], ["-l", "h1", "h2"]],
    "users": [[], ["-w", "all"], ["bob", "alice"]],
    "load": [[], ["-l"], ["-w", "h1"]],
    "hostinfo": [[], ["-w", "h1", "h2"]],
    "wait": [["-w", "done(3)"], ["-w", "ended(3[1])", "-t", "0.5"]],
    "peek": [["5"], ["-f", "5[2]"], ["--conf", "c", "-f", "7"]],
    "launch": [
        ["h", "true"],
        ["-n", "h", "sh", "-c", "x -n"],
        ["-z", "a b", "cmd", "-x"],
        ["--", "h", "true"],
    ],
    "history": [[], ["-l", "5"], ["-a", "-u", "all", "-n", "0"], ["-d", "-C", "10:00,.", "-t"]],
    "acct": [[], ["-l", "5", "6[2]"], ["-u", "ann bob", "-q", "q", "-P", "p", "-C", "1:00"]],
    "top": [["5"], ["5[2]"], ["5", "3"], ["-u", "5"]],
    "bottom": [["7"], ["7", "2"]],
    "requeue": [["7"], ["-r", "7", "8[2]"], [], ["-d", "-e", "-H", "-J", "n*", "-u", "all", "0"]],
    "switch": [
        ["short", "7"],
        ["short", "7", "8[2]"],
        ["short"],
        ["-J", "a*", "-u", "all", "-q", "q", "-m", "h", "short", "0"],
    ],
    "stop": [["7"], ["7", "8[2]"]],
    "modify": [["-W", "10", "7"], ["-Wn", "-n", "2,4", "-R", "select[mem>1]", "8[2]"]],
    "limits": [[], ["-a", "-w"], ["-u", "alice bob", "-q", "q", "-m", "h1", "-P", "p", "-n", "x"]],
}
OTHERS = {
    "submit": [
        ["-h"],
        ["--help"],
        ["-n", "x", "true"],
        ["-n"],
        ["-n", "-1", "true"],
        ["-M", "0", "true"],
        ["--pids", "0", "true"],
        ["--ret", "2", "true"],
        ["-ofile", "true"],
        ["-o=f", "true"],
        ["--json", "true"],
        ["-x", "true"],
        ["--time", "x"],
        ["-J", "-x", "true"],
        ["-o", "-", "true"],
        ["-w"],
        ["-H=1", "true"],
    ],
    "jobs": [
        ["-al"],
        ["abc"],
        ["1", "-l"],
        ["1", "-l", "2"],
        ["--", "5"],
        ["-u"],
        ["-h"],
        ["--json=1"],
        ["-1"],
        ["-"],
    ],
    "kill": [[], ["x"], ["-h"], ["1", "--conf", "c"]],
    "resume": [[], ["x"], ["-h"]],
    "top": [[], ["x"], ["5", "x"], ["5", "6", "7"]],
    "bottom": [["-h"], ["0x"]],
    "requeue": [["-h"], ["x"], ["-J"]],
    "switch": [[], ["-h"]],
    "stop": [[], ["-h"], ["x"]],
    "modify": [[], ["-h"], ["-W", "x", "7"], ["7", "8"]],
    "limits": [["-h"], ["x"], ["-u"], ["-aw"]],
    "queues": [["-x"], ["-h"], ["--conf"]],
    "hosts": [["-lw"], ["--con", "c"]],
    "users": [["-h"], ["-l"]],
    "load": [["-N"], ["-wl"]],
    "hostinfo": [["-l"], ["-h"]],
    "wait": [[], ["-t", "1"], ["-w"], ["-w", "done(1)", "-t", "x"], ["-w", "-t"]],
    "peek": [[], ["5", "6"], ["5", "-f"], ["x"], ["-f"]],
    "launch": [["-h"], ["-nz"], ["-z"], ["-n", "-z"]],
    "history": [["-n", "x"], ["-n", "-1"], ["x"], ["-u"], ["-la"]],
    "acct": [["-u"], ["abc"], ["-C"], ["5", "-l"]],
}


def _argparse(command, argv):
    """argparse's namespace as a dict, or the exit code it chose."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
            return vars(build_parser(command).parse_args(argv))
    except SystemExit as exc:
        return exc.code


def test_tables_cover_every_quick_command():
    assert sorted(OWN) == sorted(OTHERS) == sorted(QUICK)


@pytest.mark.parametrize("command", QUICK)
def test_quick_parses_as_argparse_does(command):
    for argv in OWN[command]:
        quick = quick_args(command, argv)
        assert quick is not None, (command, argv, "left to argparse")
        assert vars(quick) == _argparse(command, argv), (command, argv)
    for argv in OTHERS[command]:
        quick = quick_args(command, argv)
        assert quick is None or vars(quick) == _argparse(command, argv), (command, argv)


def test_unknown_kinds_of_argument_are_left_to_argparse():
    from roles.cli.quick import Quick

    for kwargs in ({"choices": ["a"]}, {"action": "append"}, {"nargs": 2}, {"action": "count"}):
        q = Quick()
        q.add_argument("-x", **kwargs)
        assert q.parse([]) is None, kwargs
    q = Quick()
    q.add_argument("a")
    q.add_argument("b")
    assert q.parse(["1", "2"]) is None


def test_help_and_errors_are_argparse_s():
    """Left to argparse, the user sees exactly argparse's help and messages, exit 2."""
    for argv, words in (
        (["jobs", "-h"], "usage: lavalite jobs"),
        (["jobs", "abc"], "argument JOBID: 'abc' is not a job id"),
        (["submit", "-n", "x", "true"], "argument -n: 'x' is not an integer"),
        (["submit", "--pids", "0", "true"], "the process limit must be an integer from 1 to"),
        (["kill", "-s", "FOO", "1"], "argument -s: 'FOO' is not a signal name or number"),
    ):
        res = subprocess.run(
            [sys.executable, "lavalite.py"] + argv,
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={"LAVALITE_CONF": "/nonexistent"},
        )
        assert res.returncode == (0 if "-h" in argv else 2), (argv, res.stderr)
        assert words in res.stdout + res.stderr, (argv, res.stdout + res.stderr)
