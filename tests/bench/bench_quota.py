#!/usr/bin/env python3
"""Quota admission benchmark: what [quota NAME] sections cost a submit and a drain.

    .venv/bin/python tests/bench/bench_quota.py [--jobs 3000] [--quotas 20] [--drain 1000]
        [--markdown docs/performance.md]

Same run, fresh `lavalite up` clusters, without quotas then with `--quotas` quotas that all
count the submitter's jobs (by user, by Unix group, by project): (1) the queue inactive,
--jobs submits one request each over one connection, each request's latency from the
client (a reply means the job is durable), and as many submits refused by a full quota;
(2) the queue active on 16 slots, a drain of --drain jobs of /bin/true.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_drain import ROOT, Cluster, cpu_seconds, pct  # noqa: E402
from benchlib import report  # noqa: E402

sys.path.insert(0, ROOT)
from lavalite.client import Client, ClientError  # noqa: E402

ENV = {"PATH": "/usr/bin:/bin"}


class PolicyCluster(Cluster):
    """A cluster whose queues.conf is `queues` (written before `up`, which keeps it)."""

    def __init__(self, queues, slots):
        super().__init__([sys.executable, os.path.join(ROOT, "lavalite.py")], slots)
        with open(os.path.join(self.state, "queues.conf"), "w") as f:
            f.write(queues)


def quotas_conf(n):
    """n quotas counting root's jobs (root submits here), and `full`, which refuses all."""
    kinds = ["users = root", "groups = root", "projects = bench"]
    out = [f"[quota q{i}]\n{kinds[i % 3]}\ncore_hours = 1e12\n" for i in range(n)]
    return "".join(out) + "[quota full]\nprojects = full\ncore_hours = 1\n"


def latencies(cluster, n, project):
    """Each of n submits' latency (s); refused ones (a full quota) are timed as well."""
    times = []
    with Client(conf_path=cluster.conf) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                c.submit(["/bin/true"], env=ENV, cwd="/tmp", walltime=3600, project=project)
            except ClientError as exc:
                if "quota full" not in exc.message:
                    raise
            times.append(time.perf_counter() - t0)
    return sorted(times)


def admission(quotas, args):
    """(p50, p99, max) in ms of admitted submits, then of refused ones (None without quotas)."""
    with PolicyCluster("[serial]\nactive = no\n" + quotas, 1) as cl:
        admitted = latencies(cl, args.jobs, "bench")
        refused = latencies(cl, args.jobs, "full") if quotas else None
    return [None if t is None else (pct(t, 50), pct(t, 99), t[-1]) for t in (admitted, refused)]


def drain(quotas, args):
    """(seconds from the first submit to the last job's end, mbatchd's CPU seconds meanwhile)
    of --drain jobs on 16 slots."""
    with PolicyCluster("[serial]\n" + quotas, 16) as cl:
        cpu0, t0 = cpu_seconds(cl.mbatchd), time.time()
        with Client(conf_path=cl.conf) as c:
            ids = [
                c.submit(["/bin/true"], env=ENV, cwd="/tmp", out="/dev/null", walltime=60)
                for _ in range(args.drain)
            ]
        cl.drain(ids, 600)
        cpu = cpu_seconds(cl.mbatchd) - cpu0
    return max(r[3] for r in cl.rows) - t0, cpu


def ms(figs):
    return "-" if figs is None else " / ".join(f"{f * 1e3:.2f}" for f in figs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (("--jobs", 3000), ("--quotas", 20), ("--drain", 1000)):
        ap.add_argument(name, type=int, default=default)
    ap.add_argument("--markdown", metavar="FILE")
    args = ap.parse_args()
    on = quotas_conf(args.quotas)
    (off_admit, _), (on_admit, on_refuse) = admission("", args), admission(on, args)
    off_drain, on_drain = drain("", args), drain(on, args)
    table = [
        ["", "no quotas", f"{args.quotas + 1} quotas", "ratio"],
        [
            f"submit latency p50 / p99 / max (ms), {args.jobs} admitted",
            ms(off_admit),
            ms(on_admit),
            f"{on_admit[1] / off_admit[1]:.2f} (p99)",
        ],
        [f"refused by a quota, {args.jobs} (ms)", "-", ms(on_refuse), "-"],
    ]
    for i, what in enumerate(("time", "mbatchd CPU")):
        table.append(
            [
                f"drain of {args.drain} jobs on 16 slots, {what} (s)",
                f"{off_drain[i]:.2f}",
                f"{on_drain[i]:.2f}",
                f"{on_drain[i] / off_drain[i]:.2f}",
            ]
        )
    report(table, "Quota admission (tests/bench/bench_quota.py)", "Same run", args.markdown)


if __name__ == "__main__":
    main()
