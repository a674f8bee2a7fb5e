#!/usr/bin/env python3
"""Submit benchmark: how fast mbatchd accepts work through the Python client.

    .venv/bin/python tests/bench/bench_submit.py [--jobs 10000] [--array 100000] [--repeat 5]
        [--markdown docs/performance.md]

On a fresh `lavalite up` cluster whose queue is inactive (nothing dispatches, so only the
submit path is measured): N jobs in ONE submit_many request; N jobs one request each over one
connection; one array of M elements (--repeat times). Times are the client's wall clock from
request to reply, which includes mbatchd's commit: a reply means the jobs are durable.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_drain import ROOT, Cluster, cpu_seconds, pct  # noqa: E402
from benchlib import report  # noqa: E402

sys.path.insert(0, ROOT)
import lavalite  # noqa: E402


class InactiveCluster(Cluster):
    def __enter__(self):
        with open(os.path.join(self.state, "queues.conf"), "w") as f:
            f.write("[serial]\nactive = no\n")
        return super().__enter__()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--array", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--markdown", metavar="FILE")
    args = ap.parse_args()
    rows = []
    with InactiveCluster([sys.executable, os.path.join(ROOT, "lavalite.py")], 1) as cl:
        c = lavalite.Client(conf_path=cl.conf)
        env = {"PATH": os.environ["PATH"]}
        cpu0 = cpu_seconds(cl.mbatchd)
        t0 = time.perf_counter()
        ids = c.submit_many([["/bin/true"]] * args.jobs, env=env, cwd="/tmp")
        t = time.perf_counter() - t0
        assert len(ids) == args.jobs
        rows.append(
            (
                f"{args.jobs} jobs, one submit_many request",
                t,
                args.jobs / t,
                cpu_seconds(cl.mbatchd) - cpu0,
            )
        )
        cpu0 = cpu_seconds(cl.mbatchd)
        t0 = time.perf_counter()
        for _ in range(args.jobs):
            c.submit(["/bin/true"], env=env, cwd="/tmp")
        t = time.perf_counter() - t0
        rows.append(
            (
                f"{args.jobs} jobs, one request each, one connection",
                t,
                args.jobs / t,
                cpu_seconds(cl.mbatchd) - cpu0,
            )
        )
        times = []
        cpu0 = cpu_seconds(cl.mbatchd)
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            c.submit(["/bin/true"], name=f"big[1-{args.array}]", env=env, cwd="/tmp")
            times.append(time.perf_counter() - t0)
        times.sort()
        rows.append(
            (
                f"one array of {args.array} (p50 of {args.repeat}; max {times[-1] * 1e3:.1f} ms)",
                pct(times, 50),
                args.array / pct(times, 50),
                (cpu_seconds(cl.mbatchd) - cpu0) / args.repeat,
            )
        )
        c.close()
    table = [["submit", "time (ms)", "jobs/s", "mbatchd CPU (ms)"]] + [
        [name, f"{t * 1e3:.1f}", f"{rate:.0f}", f"{cpu * 1e3:.0f}"] for name, t, rate, cpu in rows
    ]
    report(
        table,
        "Submit (tests/bench/bench_submit.py)",
        "Queue inactive: the submit path only",
        args.markdown,
    )


if __name__ == "__main__":
    main()
