#!/usr/bin/env python3
"""Drain benchmark: how fast a 16-slot single-host cluster runs N trivial jobs, compared with
the machine's raw rate of running /bin/true 16 at a time, measured in the same run.

    .venv/bin/python tests/bench/bench_drain.py [--jobs 1000] [--slots 16]
        [--program "python lavalite.py" | --program dist/lavalite] [--repeat K]
        [--markdown docs/performance.md] [--tls]

Scenario (a) submits through one Client connection, (b) runs one bsub process per job, 4 at a
time, (c) submits one job array of N elements. Each gets a fresh cluster; times come from the
cluster's store, so polling for the drain adds no requests to mbatchd's CPU figure.
--hq PYTHON runs the same workload on HyperQueue (bench_hq.py, under that python) too; its
drain ends at its last task's exit, read from the kernel's process events (root only).
"""

import argparse
import asyncio
import json
import os
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import drain_arguments, report  # noqa: E402

from lavalite import Client  # noqa: E402  (the scripts' API: orjson, as bench_submit)
from lavalite.hosts import local_host  # noqa: E402
from roles.cli.local import _first_conf  # noqa: E402  (the configuration `up` writes)
from roles.cli.simulator import cpu_seconds, pct, peak_rss_mb  # noqa: E402


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


class Cluster:
    """`lavalite up` in a fresh state directory; always stopped with SIGTERM on exit."""

    def __init__(self, program, slots, settings=(), tls=False):
        self.program, self.slots = program, slots
        self.state = tempfile.mkdtemp(prefix="lavalite-bench-")
        if tls:
            self._tls_conf()
        # `up` keeps a configuration file it finds: this one sets what --slots would, and more
        with open(os.path.join(self.state, "sbatchd.conf"), "w") as f:
            f.write("".join(f"{k} = {v}\n" for k, v in [("[sbatchd]\nslots", slots), *settings]))
        self.conf = os.path.join(self.state, "lavalite.conf")
        self.db = os.path.join(self.state, "lavalite.db")

    def _tls_conf(self):
        """The lavalite.conf `up` would write, with TLS on: certificates for this host by
        `lavalite admin tls-init`."""
        certs = os.path.join(self.state, "tls")
        host = local_host()
        subprocess.run(
            self.program + ["admin", "tls-init", certs, host],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        conf = _first_conf(self.state, self.slots)
        with open(conf) as f:
            text = f.read()
        files = {"tls_ca": "ca.pem", "tls_cert": f"{host}.pem", "tls_key": f"{host}.key"}
        for key, name in files.items():  # set what the sample leaves commented out
            text = text.replace(f"# {key} =\n", f"{key} = {os.path.join(certs, name)}\n")
        with open(conf, "w") as f:
            f.write(text)

    def __enter__(self):
        self.proc = subprocess.Popen(
            self.program + ["up", "--state-dir", self.state, "--slots", str(self.slots)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        # `up` keeps running silently if the cluster never gets ready: bound the wait.
        timer = threading.Timer(90, self.proc.terminate)
        timer.start()
        try:
            for line in self.proc.stdout:
                if "LavaLite is up" in line:
                    break
            else:
                raise RuntimeError(f"lavalite up did not get ready; see {self.state}/log")
        except BaseException:
            self.__exit__()
            raise
        finally:
            timer.cancel()
        with open(os.path.join(self.state, "mbatchd.pid")) as f:
            self.mbatchd = int(f.read())
        pids = [
            os.path.join(dirpath, n)
            for dirpath, _, names in os.walk(self.state)
            for n in names
            if n.startswith("sbatchd-") and n.endswith(".pid")
        ]
        with open(pids[0]) as f:
            self.sbatchd = int(f.read())
        with open(f"/proc/{self.sbatchd}/task/{self.sbatchd}/children") as f:
            self.shepherds = [int(p) for p in f.read().split()]
        return self

    def cpu(self):
        """CPU seconds so far: mbatchd, sbatchd, its shepherds with the jobs they reaped."""
        return (
            cpu_seconds(self.mbatchd),
            cpu_seconds(self.sbatchd),
            sum(cpu_seconds(p, children=True) for p in self.shepherds),
        )

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            print(f"warning: lavalite up ignored SIGTERM for 60 s ({self.state})", file=sys.stderr)
        if exc and exc[0] is None:
            self._read_rows()
            shutil.rmtree(self.state, ignore_errors=True)  # kept on error, for its logs

    def turns(self):
        with Client(conf_path=self.conf) as c:
            return c.call("stats")["turns"]

    def drain(self, ids, timeout):
        """Wait until every job (or array) in ids has ended: a parked `wait` request for the
        last (FIFO: the last to start), then one for each job a query finds unfinished. The
        drain costs mbatchd no polling and no request per job while it runs (a wait each
        came during the drain of (a): a turn each, a tenth of a ms of CPU each side), and
        the store stays mbatchd's alone (it is locked)."""
        with Client(conf_path=self.conf, timeout=timeout) as c:
            c.wait(ids[-1], "ended")
            for job in c.jobs(ids):
                if job["state"] in ("PEND", "RUN"):
                    c.wait(job["id"], "ended")

    def _read_rows(self):
        """Once mbatchd is gone (its store lock released): every job's times."""
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        self.rows = db.execute(
            "SELECT state, submit_time, start_time, end_time FROM jobs"
        ).fetchall()
        db.close()


def submit_client(cluster, n, cwd):
    with Client(conf_path=cluster.conf) as c:
        return [c.submit(["/bin/true"], out="/dev/null", cwd=cwd) for _ in range(n)], []


def submit_array(cluster, n, cwd):
    with Client(conf_path=cluster.conf) as c:
        return [c.submit(["/bin/true"], name=f"drain[1-{n}]", out="/dev/null", cwd=cwd)], []


def submit_bsub(cluster, n, cwd):
    """One bsub process per job through the `links` symlink, 4 at a time."""
    bindir = os.path.join(cluster.state, "bin")
    subprocess.run(
        cluster.program + ["links", bindir], cwd=ROOT, check=True, stdout=subprocess.DEVNULL
    )
    # Same interpreter (if any) as the program, argv[0] = the link: "python lavalite.py" runs
    # as "python bin/bsub", a zipapp as bin/bsub itself.
    bsub = cluster.program[:-1] + [
        os.path.join(bindir, "bsub"),
        "-o",
        "/dev/null",
        "--",
        "/bin/true",
    ]
    env = dict(os.environ, LAVALITE_CONF=cluster.conf)

    def one(_):
        t0 = time.time()
        out = subprocess.run(bsub, cwd=cwd, env=env, capture_output=True, text=True)
        if out.returncode or not out.stdout.startswith("Job <"):
            raise RuntimeError(f"bsub failed ({out.returncode}): {out.stdout}{out.stderr}")
        return int(out.stdout.split("<", 1)[1].split(">", 1)[0]), time.time() - t0

    with ThreadPoolExecutor(4) as pool:
        ids, lat = zip(*pool.map(one, range(n)))
    return list(ids), list(lat)


def scenario(submit, args, cwd):
    """The figures of one workload on a fresh cluster; the raw rate is measured just before,
    so both see the same load on a shared machine."""
    raw = asyncio.run(raw_rate(args.jobs, args.slots))
    with Cluster(args.program, args.slots, args.sbatchd, args.tls) as cl:
        cpu0, turns0 = cl.cpu(), cl.turns()
        t0 = time.time()
        ids, bsub_lat = submit(cl, args.jobs, cwd)
        t_submit = time.time() - t0
        cl.drain(ids, args.timeout)
        time.sleep(0.5)  # the shepherd reaps the last jobs, sbatchd reports
        cpu = [b - a for a, b in zip(cpu0, cl.cpu())]
        turns = cl.turns() - turns0 - 1  # the last call's own turn left out
        rss = peak_rss_mb(cl.mbatchd)
    rows = cl.rows
    states = {}
    for state, *_ in rows:
        states[state] = states.get(state, 0) + 1
    ends = [r[3] for r in rows if r[3] is not None]
    drain = max(ends) - t0 if ends else float("nan")
    waits = [r[2] - r[1] for r in rows if r[2] is not None]
    fig = {"submit time (s)": t_submit, "submit rate (jobs/s)": args.jobs / t_submit}
    fig["bsub process p50 / p99 (ms)"] = (
        (pct(bsub_lat, 50) * 1e3, pct(bsub_lat, 99) * 1e3) if bsub_lat else "-"
    )
    fig.update(
        {
            "raw /bin/true rate (jobs/s)": raw,
            "drain time (s)": drain,
            "jobs/s": len(ends) / drain,
            "jobs/s ÷ raw rate": len(ends) / drain / raw,
            "submit-to-start p50 / p99 (s)": (pct(waits, 50), pct(waits, 99)),
            "mbatchd turns per job": turns / args.jobs,
            "mbatchd CPU (s)": cpu[0],
            "sbatchd CPU (s)": cpu[1],
            "shepherds + jobs CPU (s)": cpu[2],
            "mbatchd peak RSS (MB)": rss,
            "final states": " ".join(f"{k}={v}" for k, v in sorted(states.items())),
        }
    )
    return fig


def hyperqueue(args):
    """bench_hq.py under the bench venv's python prints one JSON line of figures."""
    raw = asyncio.run(raw_rate(args.jobs, args.slots))
    out = subprocess.run(
        [
            args.hq,
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_hq.py"),
            str(args.jobs),
            str(args.slots),
        ],
        capture_output=True,
        text=True,
        timeout=args.timeout,
    )
    if out.returncode:
        raise RuntimeError(f"bench_hq.py failed ({out.returncode}): {out.stderr[-3000:]}")
    hq = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "submit time (s)": hq["submit_s"],
        "submit rate (jobs/s)": args.jobs / hq["submit_s"],
        "bsub process p50 / p99 (ms)": "-",
        "raw /bin/true rate (jobs/s)": raw,
        "drain time (s)": hq["drain_s"],
        "jobs/s": args.jobs / hq["drain_s"],
        "jobs/s ÷ raw rate": args.jobs / hq["drain_s"] / raw,
        "submit-to-start p50 / p99 (s)": "-",
        "mbatchd turns per job": "-",
        "mbatchd CPU (s)": "-",
        "sbatchd CPU (s)": "-",
        "shepherds + jobs CPU (s)": "-",
        "mbatchd peak RSS (MB)": "-",
        "final states": f"finished={hq['finished']}",
    }


def median_run(figs):
    """The run with the median ratio to the raw rate (the higher of two middles), and, with
    several runs, every run's ratio in a row of its own: a noisy machine shows as a spread."""
    figs = sorted(figs, key=lambda f: f["jobs/s ÷ raw rate"])
    fig = dict(figs[len(figs) // 2])
    if len(figs) > 1:
        fig["jobs/s ÷ raw rate, every run"] = " ".join(
            f"{f['jobs/s ÷ raw rate']:.3f}" for f in figs
        )
    return fig


def fmt(value):
    if isinstance(value, tuple):
        return " / ".join(fmt(v) for v in value)
    return (
        f"{value:.3g}"
        if isinstance(value, float) and value < 100
        else (f"{value:.0f}" if isinstance(value, float) else str(value))
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    drain_arguments(ap, timeout=600)  # per scenario
    ap.add_argument(
        "--hq",
        metavar="PYTHON",
        help="a python with the hyperqueue package (a "
        "separate bench venv, never the product's): also run the workload on it",
    )
    ap.add_argument("--skip-bsub", action="store_true", help="leave out (b), the slowest")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="K",
        help="run every column K times, in rounds; the table shows each column's "
        "median run and every run's ratio",
    )
    ap.add_argument(
        "--sbatchd",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        type=lambda kv: tuple(kv.split("=", 1)),
        help="an sbatchd.conf setting, e.g. cgroups=off (jobs unconfined, as "
        "HyperQueue runs them); repeatable; default: the default configuration",
    )
    ap.add_argument(
        "--tls",
        action="store_true",
        help="TLS on every connection ([cluster] "
        "tls_ca, tls_cert, tls_key; certificates by `lavalite admin tls-init`)",
    )
    args = ap.parse_args()
    cwd = tempfile.mkdtemp(prefix="lavalite-bench-cwd-")
    started = time.time()
    columns = {"(a) one client": lambda: scenario(submit_client, args, cwd)}
    if not args.skip_bsub:
        columns["(b) bsub processes"] = lambda: scenario(submit_bsub, args, cwd)
    columns["(c) one array"] = lambda: scenario(submit_array, args, cwd)
    if args.hq:
        columns["HyperQueue"] = lambda: hyperqueue(args)
    runs = {name: [] for name in columns}
    for _ in range(args.repeat):  # in rounds: a drift of the machine's speed hits all
        for name, run in columns.items():
            runs[name].append(run())
    figs = {name: median_run(r) for name, r in runs.items()}
    shutil.rmtree(cwd, ignore_errors=True)
    table = [["", *figs]] + [
        [k, *(fmt(f[k]) for f in figs.values())] for k in figs["(a) one client"]
    ]
    rounds = f"; {args.repeat} rounds, each column's median run" if args.repeat > 1 else ""
    head = (
        f"{args.jobs} jobs of /bin/true, {args.slots} slots; the raw rate runs /bin/true "
        f"{args.slots} at a time from asyncio just before each column{rounds}; whole run "
        f"{time.time() - started:.0f} s; sbatchd.conf: "
        f"{', '.join(f'{k} = {v}' for k, v in args.sbatchd) or 'defaults'}; "
        f"TLS {'on' if args.tls else 'off'}; "
        f"program `{shlex.join(args.program)}`"
    )
    report(table, "Drain benchmark (tests/bench/bench_drain.py)", head, args.markdown)


if __name__ == "__main__":
    main()
