#!/usr/bin/env python3
"""Usage sampling benchmark: what one `usage_interval` round of sbatchd's sampler costs with
N running jobs (roles/sbatchd/usage.py, on sbatchd's worker thread).

    .venv/bin/python tests/bench/bench_usage.py [--jobs 1000] [--markdown docs/performance.md]

The jobs' cgroups are a fake v1 tree on /dev/shm (the files the sampler reads, written as the
kernel shows them), so the figure is the sampler's own cost, not the kernel's; the first round
also reads each attempt's record for its pid, the next ones do not. Without cgroups it is one
pass over this machine's /proc, whatever the number of jobs.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import report  # noqa: E402

from roles.sbatchd import cgroups, record, usage  # noqa: E402
from roles.sbatchd.cgroups import Limits  # noqa: E402

CONTROLLERS = ("cpu", "memory", "pids", "freezer")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def fake_jobs(root: str, jobs: int) -> list[usage.Target]:
    """`jobs` attempts, each with a record naming its pid and a v1 group holding one task."""
    mounts = {c: os.path.join(root, c) for c in CONTROLLERS}
    for d in mounts.values():  # the hierarchy counts CPU (cpu,cpuacct)
        os.makedirs(d)
    _write(os.path.join(mounts["cpu"], "cpuacct.usage"), "0\n")
    backend = cgroups.V1(mounts, "slice")
    backend.setup()
    found = []
    for i in range(jobs):
        group = backend.create(f"shepherd-1.{i}", Limits())
        pid = 100_000 + i
        for key in CONTROLLERS:
            _write(os.path.join(group.dirs[key], "cgroup.procs"), f"{pid}\n")
        _write(os.path.join(group.dirs["cpu"], "cpuacct.usage"), "1500000000\n")
        _write(os.path.join(group.dirs["memory"], "memory.usage_in_bytes"), "104857600\n")
        _write(os.path.join(group.dirs["memory"], "memory.max_usage_in_bytes"), "115343360\n")
        _write(os.path.join(group.dirs["pids"], "pids.current"), "1\n")
        path = os.path.join(root, f"{i + 1}.1")
        fd = record.create(path)
        record.append(fd, pid=pid)
        os.close(fd)
        found.append(usage.Target(i + 1, 1, group, path))
    return found


def timed(sample, targets: list[usage.Target]) -> tuple[float, float, int]:
    """(wall ms, CPU ms, jobs sampled) of one round."""
    wall, cpu = time.perf_counter(), time.process_time()
    sampled = sample(targets, set())
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3, len(sampled)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--markdown")
    args = ap.parse_args()
    root = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        targets = fake_jobs(root, args.jobs)
        sampler = usage.Sampler()
        rows = [["round", "jobs", "wall ms", "CPU ms"]]
        for name in ("cgroups v1, first (records read)", "cgroups v1, next"):
            wall, cpu, n = timed(sampler.sample, targets)
            rows.append([name, f"{n:,}", f"{wall:.0f}", f"{cpu:.0f}"])
        bare = [t._replace(group=None) for t in targets]
        bare_sampler = usage.Sampler()
        bare_sampler.sample(bare, set())  # the records read
        wall, cpu, _ = timed(bare_sampler.sample, bare)
        procs = sum(1 for p in os.listdir("/proc") if p.isdigit())
        rows.append(
            [
                f"no cgroups (/proc: {procs} processes)",
                f"{args.jobs:,}",
                f"{wall:.0f}",
                f"{cpu:.0f}",
            ]
        )
    finally:
        shutil.rmtree(root)
    report(rows, "Sampling running jobs' usage", f"{args.jobs:,} running jobs", args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
