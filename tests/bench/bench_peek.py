#!/usr/bin/env python3
"""bpeek -f latency: a job prints a timestamped line every 0.2 s; `lavalite peek -f` (a real
CLI process) follows it on a fresh single-host cluster; prints how long each line took from
the job's write to the follower's read (same clock: same host, loopback).

    .venv/bin/python tests/bench/bench_peek.py [--lines 50]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from bench_drain import pct  # noqa: E402
from conftest import Cluster  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=50)
    args = ap.parse_args()
    c = Cluster(tempfile.mkdtemp(prefix="lavalite-bench-peek-"), slots=2).start()
    try:
        job = c.submit(
            [
                "python3",
                "-u",
                "-c",
                "import time\n"
                f"for i in range({args.lines}):\n"
                "    print(i, repr(time.time()), flush=True); time.sleep(0.2)\n",
            ]
        )
        c.wait([job], states=("RUN",))
        follower = subprocess.Popen(
            c.program + ["peek", "-f", str(job)], env=c.env, stdout=subprocess.PIPE, text=True
        )
        lat = [time.time() - float(line.split()[1]) for line in follower.stdout]
        follower.wait()
    finally:
        c.stop()
    lat = [x * 1000 for x in lat[2:]]  # the first lines predate the follower
    print(
        f"peek -f latency over {len(lat)} lines (ms): median {statistics.median(lat):.0f}, "
        f"p90 {pct(lat, 90):.0f}, max {max(lat):.0f}"
    )


if __name__ == "__main__":
    main()
