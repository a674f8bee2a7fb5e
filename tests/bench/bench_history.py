#!/usr/bin/env python3
"""History benchmark: bhist -l ID, bacct -u USER and the bacct summary over a large store,
answered as mbatchd answers the `history` op (roles.mbatchd.history.answer).

    .venv/bin/python tests/bench/bench_history.py [--jobs 1000000] [--events-per-job 10]
        [--users 1000] [--db PATH] [--markdown docs/performance.md]

The store is built directly with the Store API (Job and Event objects committed in batches,
as mbatchd's turns write them), not through daemons: every job finished, with 3 + 2 *
--requeues events (submit, dispatch and requeue pairs, the last dispatch, the end). An existing
--db is reused as it is (build once, time many).
"""

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import report  # noqa: E402

from lavalite.model import DONE, FAILED, PEND, RUN, Job, submitted, transition  # noqa: E402
from roles.mbatchd.history import answer  # noqa: E402
from store import Store  # noqa: E402
from store.history import Filter  # noqa: E402

BATCH = 20_000  # jobs per commit


def build(store: Store, jobs: int, requeues: int, users: int) -> None:
    spec = {"cmd": ["/bin/true"], "cwd": "/tmp", "project": "bench"}  # encoded once per commit
    t = 1.7e9
    for first in range(1, jobs + 1, BATCH):
        batch, events = [], []
        for job_id in range(first, min(first + BATCH, jobs + 1)):
            job = Job(job_id, f"u{job_id % users}", 1000, "serial", "bench", spec, submit_time=t)
            events.append(submitted(job, t))
            for i in range(requeues):
                job.host = "h1"
                events.append(transition(job, RUN, t + 1 + 2 * i))
                events.append(transition(job, PEND, t + 2 + 2 * i, "node_lost"))
            job.host = "h1"
            end = t + 2 * requeues + 1
            events.append(transition(job, RUN, end))
            job.start_time = end
            events.append(transition(job, DONE if job_id % 10 else FAILED, end + 5))
            job.cpu_time, job.max_mem = 4.5, 50 << 20
            batch.append(job)
            t += 0.01
        store.commit(jobs=batch, events=events)


def timed(fn, repeat: int = 3) -> float:
    """The best of `repeat` runs, in ms (the first run warms the page cache)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--requeues", type=int, default=4)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--db", help="the store to build (or reuse); default: a temporary one")
    ap.add_argument("--markdown", help="append the figures to this file")
    args = ap.parse_args()
    path = args.db or os.path.join(tempfile.mkdtemp(prefix="bench-history-"), "lavalite.db")
    fresh = not os.path.exists(path)
    store = Store(path, exclusive=True)
    if fresh:
        t0 = time.perf_counter()
        build(store, args.jobs, args.requeues, args.users)
        print(f"built {path} in {time.perf_counter() - t0:.0f} s")
    ((jobs,),) = store.db.execute("SELECT count(*) FROM jobs")
    ((events,),) = store.db.execute("SELECT count(*) FROM job_events")
    middle = jobs // 2
    one = answer(store, Filter(ids=[middle]), 20_000, summary=False, events=True)
    assert len(one["jobs"]) == 1 and len(one["jobs"][0]["events"]) == 3 + 2 * args.requeues
    user = Filter(users=["u7"], finished=True)
    every = Filter(finished=True)
    rows = [
        ["query", "ms"],
        [
            "bhist -l ID",
            f"{timed(lambda: answer(store, Filter(ids=[middle]), 20_000, False, True)):.1f}",
        ],
        ["bacct -u USER (summary)", f"{timed(lambda: answer(store, user, 0, True, False)):.1f}"],
        ["bacct -l -u USER", f"{timed(lambda: answer(store, user, 20_000, True, True)):.1f}"],
        ["bacct -u all (summary)", f"{timed(lambda: answer(store, every, 0, True, False)):.1f}"],
    ]
    store.close()
    report(
        rows,
        "bhist and bacct over a large store",
        f"{jobs:,} finished jobs of {args.users:,} users, {events:,} events, "
        f"{os.path.getsize(path) >> 20:,} MB store; best of 3",
        args.markdown,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
