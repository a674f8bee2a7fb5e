#!/usr/bin/env python3
"""Scale benchmark: `lavalite simulate` over hosts x jobs, to see how each figure grows.

    .venv/bin/python tests/bench/bench_scale.py [--hosts 1000,10000] [--jobs 100000,1000000]
        [--slots 8] [--speed 10] [--markdown docs/performance.md]

Each cell is one `lavalite simulate --json` run (a fresh real mbatchd, one process playing the
hosts, the jobs queued first: 90% in arrays, 4 users, 3 queues, 1-60 s simulated run times).
--speed divides the run times so the hosts free slots faster than mbatchd can refill them at
the larger sizes: the dispatch rate is then mbatchd's, not the workload's (`offered/s`).
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLUMNS = [
    ("hosts", "hosts"),
    ("jobs", "jobs"),
    ("submit_jobs_per_s", "submit jobs/s"),
    ("register_s", "register (s)"),
    ("offered_per_s", "offered/s"),
    ("dispatch_per_s_mean", "dispatch/s mean"),
    ("dispatch_per_s_median_second", "dispatch/s median second"),
    ("wait_p50_s", "wait p50 (s)"),
    ("wait_p99_s", "wait p99 (s)"),
    ("turn_p50_ms", "turn p50 (ms)"),
    ("turn_p99_ms", "turn p99 (ms)"),
    ("turn_max_ms", "turn max (ms)"),
    ("sched_p99_ms", "schedule() p99 (ms)"),
    ("sched_max_ms", "schedule() max (ms)"),
    ("mbatchd_cpu_s", "mbatchd CPU (s)"),
    ("mbatchd_peak_rss_mib", "mbatchd peak RSS (MiB)"),
    ("store_mib", "store (MiB)"),
    ("drain_s", "drain (s)"),
    ("ended_twice", "ended twice"),
]


def ints(text):
    return [int(x) for x in text.split(",")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=ints, default=[1000, 10000])
    ap.add_argument("--jobs", type=ints, default=[100000, 1000000])
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--speed", type=float, default=10)
    ap.add_argument("--program", default=f"{sys.executable} {os.path.join(ROOT, 'lavalite.py')}")
    ap.add_argument("--markdown", metavar="FILE", help="also append the table to FILE")
    args = ap.parse_args()
    rows = []
    started = time.time()
    for jobs in args.jobs:
        for hosts in args.hosts:
            cmd = args.program.split() + [
                "simulate",
                "--json",
                "--hosts",
                str(hosts),
                "--slots",
                str(args.slots),
                "--jobs",
                str(jobs),
                "--speed",
                str(args.speed),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(
                    f"{hosts} hosts, {jobs} jobs: exit {out.returncode}\n{out.stderr[-2000:]}",
                    file=sys.stderr,
                )
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(" ".join(f"{label}={rows[-1][key]}" for key, label in COLUMNS), flush=True)
    table = [[label for _, label in COLUMNS]] + [[str(r[k]) for k, _ in COLUMNS] for r in rows]
    head = (
        f"`lavalite simulate`, {args.slots} slots per host, speed {args.speed:g}; "
        f"whole run {time.time() - started:.0f} s"
    )
    report(table, "Scale benchmark (tests/bench/bench_scale.py)", head, args.markdown)


if __name__ == "__main__":
    main()
