#!/usr/bin/env python3
"""Drain benchmark: how fast a 16-slot single-host cluster runs N trivial jobs, compared with
the machine's raw rate of running /bin/true 16 at a time, measured in the same run.

    .venv/bin/python tests/bench/bench_drain.py [--jobs 1000] [--slots 16]
        [--program "python lavalite.py" | --program dist/lavalite] [--markdown docs/performance.md]

Scenario (a) submits through one Client connection, (b) runs one bsub process per job, 4 at a
time; each gets a fresh cluster. Job times come from the cluster's store.
"""
import argparse
import asyncio
import collections
import contextlib
import datetime
import glob
import os
import platform
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from lavalite.client import Client  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values, p):
    """Nearest-rank percentile."""
    values = sorted(values)
    return values[max(0, -(-len(values) * p // 100) - 1)]


def cpu_seconds(pid):
    """(own, reaped children's) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()   # the name in parentheses may hold spaces
    utime, stime, cutime, cstime = (int(x) / CLK_TCK for x in fields[11:15])
    return utime + stime, cutime + cstime


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


async def raw_rate(n, slots):
    """Jobs/s of /bin/true run straight from asyncio, `slots` at a time: the ceiling."""
    sem = asyncio.Semaphore(slots)

    async def one():
        async with sem:
            proc = await asyncio.create_subprocess_exec("/bin/true")
            await proc.wait()
    t0 = time.time()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.time() - t0)


def read_pid(path):
    with open(path) as f:
        return int(f.read())


@contextlib.contextmanager
def cluster(program, slots):
    """`lavalite up` in a fresh state directory, stopped with SIGTERM whatever happens; yields
    (state dir, mbatchd pid, sbatchd pid). The state dir is kept after an error, for its logs."""
    state = tempfile.mkdtemp(prefix="lavalite-bench-")
    proc = subprocess.Popen(program + ["up", "--state-dir", state, "--slots", str(slots)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    # `up` stays running without a word if the cluster never gets ready: bound the wait.
    timer = threading.Timer(90, proc.terminate)
    timer.start()
    try:
        if not any("LavaLite is up" in line for line in proc.stdout):
            raise RuntimeError(f"lavalite up did not get ready; see {state}/log")
        timer.cancel()
        # sbatchd too: its CPU (and its shepherds', reaped children) is the other half of a job.
        yield (state, read_pid(os.path.join(state, "mbatchd.pid")),
               read_pid(glob.glob(os.path.join(state, "spool", "sbatchd-*.pid"))[0]))
    finally:
        timer.cancel()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            print(f"warning: lavalite up ignored SIGTERM for 60 s ({state})", file=sys.stderr)
    shutil.rmtree(state, ignore_errors=True)


def drain(state, timeout):
    """Wait until no job is pending or running; return the store's rows of all jobs. Reading
    the store, not asking mbatchd, keeps the polling out of mbatchd's CPU figure."""
    db = sqlite3.connect(f"file:{state}/lavalite.db?mode=ro", uri=True)
    deadline = time.time() + timeout
    while time.time() < deadline and db.execute(
            "SELECT count(*) FROM jobs WHERE state IN ('PEND', 'RUN')").fetchone()[0]:
        time.sleep(0.2)
    rows = db.execute("SELECT state, submit_time, start_time, end_time FROM jobs").fetchall()
    db.close()
    return rows


def submit_client(program, conf, n, cwd):
    with Client(conf_path=conf) as c:
        return [c.submit(["/bin/true"], out="/dev/null", cwd=cwd) for _ in range(n)], []


def submit_bsub(program, conf, n, cwd):
    """One bsub process per job through the `links` symlink, 4 at a time."""
    bindir = os.path.join(os.path.dirname(conf), "bin")
    subprocess.run(program + ["links", bindir], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    # The program's interpreter (if any) with the link as argv[0]: "python lavalite.py" runs
    # as "python bin/bsub", a zipapp as bin/bsub itself.
    bsub = program[:-1] + [os.path.join(bindir, "bsub"), "-o", "/dev/null", "--", "/bin/true"]
    env = dict(os.environ, LAVALITE_CONF=conf)

    def one(_):
        t0 = time.time()
        out = subprocess.run(bsub, cwd=cwd, env=env, capture_output=True, text=True)
        if out.returncode or not out.stdout.startswith("Job <"):
            raise RuntimeError(f"bsub failed ({out.returncode}): {out.stdout}{out.stderr}")
        return int(out.stdout.split("<", 1)[1].split(">", 1)[0]), time.time() - t0
    with ThreadPoolExecutor(4) as pool:
        ids, lat = zip(*pool.map(one, range(n)))
    return ids, lat


def scenario(submit, args, raw, cwd):
    with cluster(args.program, args.slots) as (state, mbatchd, sbatchd):
        cpu0 = {pid: cpu_seconds(pid) for pid in (mbatchd, sbatchd)}
        t0 = time.time()
        ids, bsub_lat = submit(args.program, os.path.join(state, "lavalite.conf"), args.jobs, cwd)
        t_submit = time.time() - t0
        rows = drain(state, args.timeout)
        cpu = {pid: tuple(b - a for a, b in zip(cpu0[pid], cpu_seconds(pid))) for pid in cpu0}
        rss = peak_rss_mb(mbatchd)
    states = collections.Counter(r[0] for r in rows)
    ends = [r[3] for r in rows if r[3] is not None]
    drain_s = max(ends) - t0 if ends else float("nan")
    waits = [r[2] - r[1] for r in rows if r[2] is not None]
    return {"submit time (s)": t_submit, "submit rate (jobs/s)": len(ids) / t_submit,
            "bsub process p50 / p99 (ms)":
                (pct(bsub_lat, 50) * 1e3, pct(bsub_lat, 99) * 1e3) if bsub_lat else "-",
            "drain time (s)": drain_s, "jobs/s": len(ends) / drain_s,
            "jobs/s ÷ raw rate": len(ends) / drain_s / raw,
            "submit-to-start p50 / p99 (s)": (pct(waits, 50), pct(waits, 99)),
            "mbatchd CPU (s)": cpu[mbatchd][0], "mbatchd peak RSS (MB)": rss,
            "sbatchd CPU: own / shepherds+jobs (s)": cpu[sbatchd],
            "final states": " ".join(f"{k}={v}" for k, v in sorted(states.items()))}


def fmt(value):
    if isinstance(value, tuple):
        return " / ".join(fmt(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    return str(value)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--program", type=shlex.split, default=[sys.executable, "lavalite.py"],
                    help='how to run LavaLite, from the checkout (default: "python lavalite.py")')
    ap.add_argument("--timeout", type=float, default=600, help="drain timeout per scenario (s)")
    ap.add_argument("--markdown", metavar="FILE", help="also append the figures to FILE")
    args = ap.parse_args()
    cwd = tempfile.mkdtemp(prefix="lavalite-bench-cwd-")
    started = time.time()
    raw = asyncio.run(raw_rate(args.jobs, args.slots))
    try:
        figs = {"(a) one client": scenario(submit_client, args, raw, cwd),
                "(b) bsub processes": scenario(submit_bsub, args, raw, cwd)}
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    table = [["", *figs]] + [[k, *(fmt(f[k]) for f in figs.values())]
                             for k in figs["(a) one client"]]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    head = (f"{args.jobs} jobs of /bin/true, {args.slots} slots; raw /bin/true rate "
            f"{args.slots} at a time: {raw:.0f} jobs/s; whole run {time.time() - started:.0f} s")
    print(head)
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    if args.markdown:
        new = not os.path.exists(args.markdown)
        with open(args.markdown, "a") as f:
            if new:
                f.write("# Performance\n\nFrom `tests/bench/bench_drain.py`, newest last.\n")
            f.write(f"\n## Drain benchmark, {datetime.date.today()}\n\n"
                    f"Machine: {len(os.sched_getaffinity(0))} CPUs (nproc), "
                    f"{platform.platform()}, Python {platform.python_version()}; "
                    f"program `{shlex.join(args.program)}`.\n"
                    f"{head}.\n\n")
            for i, row in enumerate(table):
                f.write("| " + " | ".join(row) + " |\n")
                if i == 0:
                    f.write("|" + "---|" * len(row) + "\n")


if __name__ == "__main__":
    main()
