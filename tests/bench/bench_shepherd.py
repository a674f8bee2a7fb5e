#!/usr/bin/env python3
"""Shepherd benchmark: what it costs sbatchd to start and finish one attempt of /bin/true, with
the real code path (attempt directory, cgroup, fork of the shepherd, fork+exec of the job,
cgroup removal, status file), without cgroups and with each hierarchy this machine offers,
beside the machine's raw rate of starting /bin/true from Python.

    .venv/bin/python tests/bench/bench_shepherd.py [--jobs 300] [--parallel 8]

Prints jobs/s and the parent's time per launch (what sbatchd's event loop pays per dispatch;
the rest runs in the shepherd). Run as root to include the cgroup backends.
"""
import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from roles.sbatchd import cgroups, shepherd  # noqa: E402
from roles.sbatchd.cgroups import Limits  # noqa: E402


def run(backend, jobs, parallel, work):
    account = shepherd.Account("bench", os.getuid(), os.getgid(), False)
    env = {"PATH": "/usr/bin:/bin"}
    launch_s, running, started = 0.0, {}, time.perf_counter()
    for n in range(jobs):
        while len(running) >= parallel:
            pid, _ = os.wait()
            running.pop(pid)
        adir = os.path.join(work, f"{n}.1")
        os.makedirs(os.path.join(adir, "tmp"))
        t0 = time.perf_counter()
        group = backend.create(f"{n}.1", Limits(memory=256 << 20, pids=64, cpus=1))
        pid = shepherd.launch(adir, ["/bin/true"], env, adir, [((1, 2), None, None)], account,
                              group)
        launch_s += time.perf_counter() - t0
        running[pid] = adir
    while running:
        pid, _ = os.wait()
        running.pop(pid)
    elapsed = time.perf_counter() - started
    bad = [d for d in os.listdir(work) if '"exit_code": 0' not in
           open(os.path.join(work, d, "status")).read()]
    assert not bad, f"attempts that did not end with exit code 0: {bad[:5]}"
    return jobs / elapsed, launch_s / jobs * 1000


def baseline(jobs, parallel):
    """The machine's raw rate: subprocess.Popen("/bin/true"), `parallel` at a time."""
    import subprocess
    running, started = [], time.perf_counter()
    for _ in range(jobs):
        if len(running) >= parallel:
            running.pop(0).wait()
        running.append(subprocess.Popen(["/bin/true"]))
    for p in running:
        p.wait()
    return jobs / (time.perf_counter() - started)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--parallel", type=int, default=8)
    args = ap.parse_args()
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{args.jobs} attempts of /bin/true, {args.parallel} at a time")
    print(f"  raw Popen(/bin/true): {baseline(args.jobs, args.parallel):7.1f} jobs/s")
    backends = [cgroups.NoCgroups()]
    if os.geteuid() == 0:
        slice_name = f"lavalite-bench-{uuid.uuid4().hex[:8]}"
        for mode in ("v1", "v2"):
            try:
                backends.append(cgroups.choose(mode, slice_name))
            except cgroups.CgroupError as exc:
                print(f"  ({mode}: {exc})")
    else:
        print("  (not root: cgroup backends skipped)")
    for backend in backends:
        work = tempfile.mkdtemp(prefix="lavalite-bench-shepherd-")
        try:
            rate, launch_ms = run(backend, args.jobs, args.parallel, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            backend.remove_slice()
        controllers = ",".join(sorted(backend.controllers)) or "-"
        print(f"  cgroups {backend.name:4} ({controllers}): {rate:7.1f} jobs/s, "
              f"{launch_ms:.2f} ms in sbatchd per launch")


if __name__ == "__main__":
    main()
