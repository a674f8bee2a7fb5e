#!/usr/bin/env python3
"""Recovery after an mbatchd crash: from `kill -9` of mbatchd to its answering again (LIM
restarts it) and to the next job dispatched (sbatchd registered again), on a single-host
`lavalite up` cluster with the default configuration.

    .venv/bin/python tests/bench/bench_recovery.py [--rounds 4] [--program dist/lavalite]
        [--markdown docs/performance.md]

Each round kills mbatchd as soon as the previous round's job was dispatched: repeated crashes,
the case where LIM's restart backoff grows. A job is submitted right after the kill, again every
20 ms until mbatchd answers, and counted dispatched when it leaves PEND.
"""

import argparse
import os
import shlex
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_drain import ROOT, Cluster  # noqa: E402
from benchlib import report  # noqa: E402

from lavalite import Client, ClientError  # noqa: E402


def one_round(cl, client):
    """(s to mbatchd answering, s to the next job dispatched) after one kill -9."""
    with open(os.path.join(cl.state, "mbatchd.pid")) as f:
        pid = int(f.read())
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    client.close()
    req = os.urandom(16).hex()  # the same request each try: one job
    while True:
        try:
            job = client.submit(["true"], req=req, out="/dev/null")
            break
        except ClientError as exc:
            if exc.code != "unreachable":
                raise
            time.sleep(0.02)
    answered = time.monotonic() - t0
    while client.jobs([job])[0]["state"] == "PEND":
        time.sleep(0.02)
    return answered, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--program", default=f"{sys.executable} {os.path.join(ROOT, 'lavalite.py')}")
    ap.add_argument("--markdown", metavar="FILE")
    args = ap.parse_args()
    rows = [["round", "mbatchd answers (s)", "next job dispatched (s)"]]
    with Cluster(shlex.split(args.program), 2) as cl:
        with Client(conf_path=cl.conf, command_wait=0) as client:  # it polls every 20 ms itself
            for i in range(1, args.rounds + 1):
                answered, dispatched = one_round(cl, client)
                rows.append([str(i), f"{answered:.2f}", f"{dispatched:.2f}"])
    report(
        rows,
        "Recovery after kill -9 of mbatchd (tests/bench/bench_recovery.py)",
        f"{args.rounds} kills in a row, each as soon as a job was dispatched again; {args.program}",
        args.markdown,
    )


if __name__ == "__main__":
    main()
