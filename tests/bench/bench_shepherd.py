#!/usr/bin/env python3
"""Shepherd benchmark: how fast the real shepherd process (roles/sbatchd/shepherd.py) starts
and finishes attempts of /bin/true ordered over its link, as sbatchd orders them (attempt
record made and locked here, TMPDIR, cgroup with memory/pids/cpu limits, vfork+exec of the
job, status, cgroup kept for reuse or removed, clean-up), without cgroups and with each hierarchy
this machine offers, beside the machine's raw rate of starting /bin/true from Python.

    .venv/bin/python tests/bench/bench_shepherd.py [--jobs 1000] [--parallel 16] [--user NAME]

Prints jobs/s, the shepherd's CPU per attempt (its own and its jobs') and the ordering side's
(what sbatchd's event loop pays). Run as root to include the cgroup backends.
"""

import argparse
import asyncio
import os
import platform
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from roles.cli.simulator import cpu_seconds, pct  # noqa: E402
from roles.sbatchd import cgroups, record  # noqa: E402
from roles.sbatchd.link import ShepherdLink  # noqa: E402

# where `lavalite up` keeps attempt records (a RAM filesystem, as /run/lavalite when installed)
RUN_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None


async def run(backend, slice_name, jobs, parallel, work, tmp, account):
    """Figures of one backend: jobs/s, CPU ms per attempt (the shepherd's own, with its jobs,
    the ordering side's), order-to-answer latency p50/p99 ms."""
    loop = asyncio.get_running_loop()
    done, statuses, sent_at, latency = asyncio.Event(), {}, {}, []
    order_cpu = 0.0

    def order(batch):
        nonlocal order_cpu
        t0 = time.process_time()
        orders, locks = [], []
        for n in batch:
            sent_at[n] = time.perf_counter()
            path = os.path.join(work, f"{n}.1")
            lock = record.create(path)
            spec = {"id": n, "attempt": 1, "slots": 1, "memory": 256 << 20, "pids": 64}
            record.append(lock, shepherd=link.pid, spec=spec)
            locks.append(lock)
            orders.append(
                {
                    "job": n,
                    "attempt": 1,
                    "record": path,
                    "limits": [spec["memory"], spec["pids"], spec["slots"]],
                    "argv": ["/bin/true"],
                    "cwd": tmp,
                    "env": {
                        "PATH": "/usr/bin:/bin",
                        "TMPDIR": os.path.join(tmp, f"lavalite.{n}.1"),
                    },
                    "outputs": [[[1, 2], None]],
                    "account": account,
                    # named as sbatchd names them: the groups it kept first
                    "cgroup": None if backend == "none" else link.group_name(),
                }
            )
        link.start(orders, locks)
        for lock in locks:
            os.close(lock)
        order_cpu += time.process_time() - t0

    queued = iter(range(jobs))

    def ended(msg):
        statuses[msg["job"]] = msg["status"]
        latency.append(time.perf_counter() - sent_at[msg["job"]])
        link.clean([os.path.join(work, f"{msg['job']}.1")])
        more = [n for n in [next(queued, None)] if n is not None]
        if more:
            order(more)
        if len(statuses) == jobs:
            done.set()

    link = ShepherdLink(
        loop,
        backend,
        slice_name,
        ended,
        lambda _: done.set(),
        program=[sys.executable, os.path.join(ROOT, "lavalite.py")],
    )
    await asyncio.sleep(1.0)  # its start-up is not what is measured
    own0, cpu0 = cpu_seconds(link.pid), cpu_seconds(link.pid, children=True)
    started = time.perf_counter()
    order([next(queued) for _ in range(min(parallel, jobs))])
    await done.wait()
    elapsed = time.perf_counter() - started
    own, cpu = cpu_seconds(link.pid) - own0, cpu_seconds(link.pid, children=True) - cpu0
    link.close()
    link.proc.wait(10)
    bad = [n for n, st in statuses.items() if st.get("exit_code") != 0]
    assert len(statuses) == jobs and not bad, f"attempts that did not end with 0: {bad[:5]}"
    per_job = 1000 / jobs
    return {
        "rate": jobs / elapsed,
        "own": own * per_job,
        "cpu": cpu * per_job,
        "order": order_cpu * per_job,
        "p50": pct(latency, 50) * 1e3,
        "p99": pct(latency, 99) * 1e3,
    }


def baseline(jobs, parallel):
    """The machine's raw rate: subprocess.Popen("/bin/true"), `parallel` at a time."""
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
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument(
        "--user",
        help="run the jobs as this user (root only): the fork path a "
        "cluster's users take; default: the bench's own user, the "
        "vfork path",
    )
    ap.add_argument(
        "--backends",
        default="none,v1,v2",
        help="which of none, v1, v2 to measure (those this machine offers)",
    )
    args = ap.parse_args()
    pw = pwd.getpwnam(args.user) if args.user else pwd.getpwuid(os.geteuid())
    account = [pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_uid != os.geteuid()]
    print(
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.jobs} attempts of /bin/true, {args.parallel} at a time, as {pw.pw_name}"
    )
    wanted = args.backends.split(",")
    backends = ["none"] if "none" in wanted else []
    slice_name = f"lavalite-bench-{uuid.uuid4().hex[:8]}"
    if os.geteuid() == 0:
        for mode in [m for m in ("v1", "v2") if m in wanted]:
            try:
                cgroups.choose(mode, slice_name)
                backends.append(mode)
            except cgroups.CgroupError as exc:
                print(f"  ({mode}: {exc})")
    else:
        print("  (not root: cgroup backends skipped)")
    for backend in backends:
        raw = baseline(args.jobs, args.parallel)
        work = tempfile.mkdtemp(prefix="lavalite-bench-shepherd-", dir=RUN_DIR)
        tmp = tempfile.mkdtemp(prefix="lavalite-bench-tmp-")  # TMPDIRs: /tmp, the default
        os.chmod(tmp, 0o1777)  # as /tmp, for --user
        try:
            fig = asyncio.run(
                run(backend, slice_name, args.jobs, args.parallel, work, tmp, account)
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)
            if backend != "none":
                cgroups.choose(backend, slice_name).remove_slice()
        print(
            f"  cgroups {backend:4}: {fig['rate']:6.0f} jobs/s (raw Popen just before "
            f"{raw:.0f}: ratio {fig['rate'] / raw:.2f}); CPU ms per attempt: shepherd "
            f"{fig['own']:.2f}, with its job {fig['cpu']:.2f}, ordering {fig['order']:.2f}; "
            f"order to answer p50 {fig['p50']:.1f} ms, p99 {fig['p99']:.1f} ms"
        )


if __name__ == "__main__":
    main()
