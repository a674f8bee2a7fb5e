#!/usr/bin/env python3
"""Dependency benchmark: what bsub -w adds to the drain time of N trivial jobs, measured in one
run against the same jobs without dependencies.

    .venv/bin/python tests/bench/bench_depend.py [--jobs 10000] [--slots 16]
        [--program "python lavalite.py" | --program dist/lavalite] [--repeat K]
        [--markdown docs/performance.md]

(chain) job i+1 waits for done(job i), on ONE slot, against N jobs without dependencies on one
slot: both run one job at a time, so the difference is what the dependencies cost mbatchd
(the index, the release, the FIFO). (fan-in) one last job waits for done() of all N others, on
--slots slots, against N+1 jobs without dependencies. Each column gets a fresh cluster
(bench_drain.Cluster); the drain is from the first submit to the last job's end, read from the
store. Jobs are submitted one request each over one connection, in both columns of a pair (a
chain's job names the one before, which must exist first). --repeat K runs each pair K times
(the order alternating) and gives each round's drains and ratio, then the median ratio: one
drain on a shared machine varies by more than the 10% looked for.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_drain import ROOT, Cluster, fmt  # noqa: E402
from benchlib import drain_arguments, report  # noqa: E402

sys.path.insert(0, ROOT)
from lavalite.client import Client  # noqa: E402

FIGURES = ("drain (s)", "mbatchd CPU (s)")


def plain(c: Client, n: int, cwd: str, name: str = "plain") -> list[int]:
    return [c.submit(["/bin/true"], out="/dev/null", cwd=cwd, name=name) for _ in range(n)]


def chain(c: Client, n: int, cwd: str) -> list[int]:
    ids = [c.submit(["/bin/true"], out="/dev/null", cwd=cwd)]
    for _ in range(n - 1):
        ids.append(c.submit(["/bin/true"], out="/dev/null", cwd=cwd, depend=f"done({ids[-1]})"))
    return ids


def fan_in(c: Client, n: int, cwd: str) -> list[int]:
    """All N-1 named alike: done(NAME) is done() of each (LSF), N-1 conditions."""
    ids = plain(c, n - 1, cwd, "fan")
    return ids + [c.submit(["/bin/true"], out="/dev/null", cwd=cwd, depend="done(fan)")]


def drain(submit, n: int, slots: int, args: argparse.Namespace, cwd: str) -> dict[str, float]:
    """Drain time and mbatchd CPU of `n` jobs submitted by `submit` on a fresh cluster."""
    with Cluster(args.program, slots) as cl:
        cpu0 = cl.cpu()[0]
        t0 = time.time()
        with Client(conf_path=cl.conf) as c:
            ids = submit(c, n, cwd)
        cl.drain(ids, args.timeout)
        cpu = cl.cpu()[0] - cpu0
    ends = [r[3] for r in cl.rows if r[3] is not None]
    done = sum(1 for r in cl.rows if r[0] == "DONE")
    if done != n:
        raise RuntimeError(f"{done} of {n} jobs DONE")
    return dict(zip(FIGURES, (max(ends) - t0, cpu)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    drain_arguments(ap, timeout=900)
    ap.add_argument("--repeat", type=int, default=1, metavar="K", help="rounds of each pair")
    ap.set_defaults(jobs=10_000)
    args = ap.parse_args()
    cwd = tempfile.mkdtemp(prefix="lavalite-bench-cwd-")
    started = time.time()
    pairs = {
        f"chain of {args.jobs}, 1 slot": (chain, 1),
        f"{args.jobs}-to-1 fan-in, {args.slots} slots": (fan_in, args.slots),
    }
    rows = [["workload", "round", "without -w (s)", "with -w (s)", "ratio", "mbatchd CPU (s)"]]
    for name, (submit, slots) in pairs.items():
        ratios = []
        for i in range(args.repeat):
            # the order alternates, so that a machine slowing down hits both columns alike
            order = [(plain, 0), (submit, 1)] if i % 2 == 0 else [(submit, 1), (plain, 0)]
            figs: list[dict[str, float]] = [{}, {}]
            for how, column in order:
                figs[column] = drain(how, args.jobs, slots, args, cwd)
            base, dep = figs
            ratios.append(dep["drain (s)"] / base["drain (s)"])
            rows.append(
                [
                    name,
                    str(i + 1),
                    fmt(base["drain (s)"]),
                    fmt(dep["drain (s)"]),
                    f"{ratios[-1]:.3f}",
                    f"{fmt(base['mbatchd CPU (s)'])} / {fmt(dep['mbatchd CPU (s)'])}",
                ]
            )
        rows.append([name, "median", "", "", f"{statistics.median(ratios):.3f}", ""])
    os.rmdir(cwd)
    head = (
        f"{args.jobs} jobs of /bin/true; each drain a fresh cluster, jobs submitted one "
        f"request each; {args.repeat} round(s); whole run "
        f"{time.time() - started:.0f} s; program `{' '.join(args.program)}`"
    )
    report(rows, "Dependency benchmark (tests/bench/bench_depend.py)", head, args.markdown)


if __name__ == "__main__":
    main()
