"""How the shepherd takes a user's identity (roles/sbatchd/ids.py, shepherd._as_process): each
way in a fresh root process, so the test process keeps its own ids."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

PER_THREAD = """
import os, subprocess, sys, threading
sys.path.insert(0, sys.argv[1])
from roles.sbatchd import ids
t = ids.thread_ids()
assert t is not None, "per-thread ids unavailable"
seen = {}
def worker():
    with t.user(65534, 65534, [65534, 4242], real=True):
        seen["thread"] = os.getresuid(), os.getresgid(), sorted(os.getgroups())
        main = open(f"/proc/self/task/{os.getpid()}/status").read()
        seen["main"] = [l.split()[1:] for l in main.splitlines() if l.startswith(("Uid:", "Gid:"))]
        seen["child"] = subprocess.run(["id", "-u", "-r"], capture_output=True, text=True,
                                       cwd="/").stdout
    seen["after"] = os.getresuid(), os.getresgid(), os.getgroups()
th = threading.Thread(target=worker); th.start(); th.join()
print(seen)
"""

PROCESS = """
import os, sys
sys.path.insert(0, sys.argv[1])
from roles.sbatchd import shepherd
acc = shepherd.Account("nobody", 65534, 65534, True)
with shepherd._as_process(acc):
    inside = os.geteuid(), os.getegid(), os.getuid()
print({"inside": inside, "after": (os.geteuid(), os.getegid())})
"""


def _run(code):
    if os.geteuid() != 0:
        pytest.skip("switching to another user's ids needs root")
    res = subprocess.run(
        [sys.executable, "-c", code, ROOT], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    return eval(res.stdout)  # a dict literal printed by our own snippet


def test_per_thread_ids_change_the_thread_and_its_child_only():
    if os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip(f"no call numbers for {os.uname().machine}: the shepherd forks instead")
    seen = _run(PER_THREAD)
    # saved ids stay root's: the thread comes back; an exec makes a child's the user's
    assert seen["thread"] == ((65534, 65534, 0), (65534, 65534, 0), [4242, 65534])
    assert seen["main"] == [["0"] * 4] * 2, "the other threads keep root's ids"
    assert seen["child"].strip() == "65534", "a child of the thread runs as the user"
    assert seen["after"][:2] == ((0, 0, 0), (0, 0, 0))


def test_process_ids_fallback_switches_effective_ids_and_back():
    seen = _run(PROCESS)
    assert seen == {"inside": (65534, 65534, 0), "after": (0, 0)}
