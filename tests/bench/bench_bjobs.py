#!/usr/bin/env python3
"""bjobs over a million jobs: `bjobs -u all` through the real program (the zipapp), page by
page, against `bjobs ID` of one job in the same run.

    ./build.sh && .venv/bin/python tests/bench/bench_bjobs.py [--jobs 1000000]
        [--program dist/lavalite] [--db PATH] [--repeat 2]

The store is built with the Store API (PEND jobs of 100 users committed in batches, as
mbatchd's turns write them), then `lavalite up` starts on it: mbatchd loads every job, so all
of them are known to it and listed by `bjobs -u all`. An existing --db is copied in as it is
(build once, time many). Printed: the time to the first line and to the last, the lines, the
command's peak RSS, and how much mbatchd's RSS grew during the listing (sampled every 20 ms).
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_drain import ROOT, Cluster  # noqa: E402
from benchlib import report  # noqa: E402

from lavalite.model import Job, submitted  # noqa: E402
from store import Store  # noqa: E402

BATCH = 20_000  # jobs per commit


def build(path: str, jobs: int) -> None:
    store = Store(path, exclusive=True)
    spec = {"cmd": ["/bin/sleep", "60"], "cwd": "/tmp", "from_host": "bench"}
    t = 1.7e9
    for first in range(1, jobs + 1, BATCH):
        batch = [
            Job(i, f"u{i % 100}", 1000 + i % 100, "normal", "bench", spec, submit_time=t + i)
            for i in range(first, min(first + BATCH, jobs + 1))
        ]
        store.commit(jobs=batch, events=[submitted(j, j.submit_time) for j in batch])
    store.close()


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def listing(program: list[str], env: dict[str, str], words: list[str], mbatchd: int) -> list[str]:
    """One run of bjobs WORDS: [first line s, last line s, lines, CLI peak MB, mbatchd +MB]."""
    base = rss_kb(mbatchd)
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_kb(mbatchd))

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    proc = subprocess.Popen(program + words, env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    t_first = time.perf_counter() - t0
    lines = 1 + sum(1 for _ in proc.stdout)
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.perf_counter() - t0
    done.set()
    sampler.join()
    if status != 0 or not first:
        raise RuntimeError(f"bjobs {' '.join(words)} failed (status {status})")
    return [
        f"bjobs {' '.join(words)}",
        f"{t_first:.3f}",
        f"{total:.2f}",
        f"{lines:,}",
        f"{usage.ru_maxrss / 1024:.0f}",
        f"{(peak[0] - base) / 1024:.0f}",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--program", default=os.path.join(ROOT, "dist", "lavalite"))
    ap.add_argument("--repeat", type=int, default=2, help="runs of each command, alternately")
    ap.add_argument("--db", help="the store to build (or reuse); default: built in the cluster")
    args = ap.parse_args()
    program = shlex.split(args.program)
    cl = Cluster(program, 1)
    t0 = time.perf_counter()
    if args.db and os.path.exists(args.db):
        shutil.copy(args.db, cl.db)
    else:
        build(cl.db, args.jobs)
        if args.db:
            shutil.copy(cl.db, args.db)
    print(f"store of {args.jobs:,} jobs ready in {time.perf_counter() - t0:.0f} s")
    # the LSF name: a link to the program (argv[0] picks the command)
    bjobs = os.path.join(cl.state, "bjobs")
    os.symlink(os.path.abspath(program[-1]), bjobs)
    command = program[:-1] + [bjobs]
    env = dict(os.environ, LAVALITE_CONF=cl.conf)
    t0 = time.perf_counter()
    with cl:
        print(f"lavalite up on it in {time.perf_counter() - t0:.0f} s")
        rows = [["command", "first line (s)", "total (s)", "lines", "CLI peak RSS (MB)"]]
        rows[0].append("mbatchd RSS growth (MB)")
        for _ in range(args.repeat):
            rows.append(listing(command, env, [str(args.jobs // 2)], cl.mbatchd))
            rows.append(listing(command, env, ["-u", "all"], cl.mbatchd))
    report(
        rows,
        "bjobs -u all",
        f"{args.jobs:,} PEND jobs known to mbatchd, {os.path.basename(program[-1])}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
