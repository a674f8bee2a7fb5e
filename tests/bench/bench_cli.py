#!/usr/bin/env python3
"""CLI latency: `bsub` and `bjobs` as a user runs them (a new process each), beside
`python3 -c pass` and `python3 -S -c pass`, measured in the same run, interleaved; `bsub < script`
(a job script of SCRIPT_LINES lines with #BSUB options) beside `bsub cmd` as LSF users type it.

    .venv/bin/python tests/bench/bench_cli.py [--runs 50] [--also OTHER_ZIPAPP ...] [--installed]
        [--markdown docs/performance.md]

Two programs: the checkout (`python lavalite.py`, through the links, with the dev venv's
python) and dist/lavalite (the shiv zipapp on the system python3, as shipped) if it is built;
--also adds other builds of the zipapp (another branch's, say) to the same interleaved run.
Each is compared with its own interpreter's start-up.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_drain import ROOT, Cluster, pct  # noqa: E402
from benchlib import report  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT_LINES = 40  # a job script's lines: a few #BSUB options, comments and commands


def timed(cmd, env, stdin=None):
    """Seconds `cmd` takes; its stdin from the file `stdin`, else /dev/null."""
    t0 = time.perf_counter()
    with open(stdin or os.devnull, "rb") as f:
        out = subprocess.run(
            cmd, env=env, stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    elapsed = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"{cmd} exited {out.returncode}: {out.stderr.decode()[-500:]}")
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument(
        "--also",
        nargs="*",
        default=[],
        metavar="ZIPAPP",
        help="other builds of dist/lavalite to measure in the same run",
    )
    ap.add_argument(
        "--installed",
        action="store_true",
        help="also dist/lavalite as `lavalite install` run by the system python3 "
        "puts it on a node (#!/usr/bin/python3 -S), run through its #! line",
    )
    ap.add_argument("--markdown", metavar="FILE")
    args = ap.parse_args()
    zipapp = os.path.join(ROOT, "dist", "lavalite")
    programs = {"python lavalite.py": [sys.executable, os.path.join(ROOT, "lavalite.py")]}
    if os.path.exists(zipapp) and os.path.exists(SYSTEM_PYTHON):
        programs["dist/lavalite"] = [SYSTEM_PYTHON, zipapp]
    else:
        print("dist/lavalite not built (./build.sh): measuring the checkout only", file=sys.stderr)
    programs.update(
        (os.path.abspath(path), [SYSTEM_PYTHON, os.path.abspath(path)]) for path in args.also
    )
    prefix = tempfile.mkdtemp(prefix="lavalite-bench-install-")
    if args.installed and "dist/lavalite" in programs:
        subprocess.run(
            [SYSTEM_PYTHON, zipapp, "install", "--prefix", prefix, "--no-user"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        programs["installed"] = [os.path.join(prefix, "usr/local/bin/lavalite")]
    try:
        times = measure(programs, args.runs)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
    rows = [["command", "p50 (ms)", "p99 (ms)"]]
    for name, ts in times.items():
        ts.sort()
        rows.append([name, f"{pct(ts, 50) * 1e3:.1f}", f"{pct(ts, 99) * 1e3:.1f}"])
    report(
        rows,
        "CLI latency (tests/bench/bench_cli.py)",
        f"CLI latency, {args.runs} runs each, interleaved",
        args.markdown,
    )


def measure(programs, runs):
    """{case: [seconds]}; a program is [interpreter, file], or [file] run through its #!."""
    with Cluster(programs["python lavalite.py"], 4) as cl:
        env = dict(os.environ, LAVALITE_CONF=cl.conf)
        script = _job_script(cl.state)
        cases, stdin = {}, {}
        for label, prog in programs.items():
            bindir = os.path.join(cl.state, "bin-" + label.split()[0].replace("/", "_"))
            subprocess.run(prog + ["links", bindir], check=True, stdout=subprocess.DEVNULL)
            # interpreter + link, as the link's shebang would run it: argv[0] = bsub
            launch = prog[:-1]
            for py in launch:
                cases[f"{py} -c pass"] = [py, "-c", "pass"]
                cases[f"{py} -S -c pass"] = [py, "-S", "-c", "pass"]
            cases[f"{label}: bsub"] = [
                *launch,
                os.path.join(bindir, "bsub"),
                "-o",
                "/dev/null",
                "--",
                "true",
            ]
            bsub = [*launch, os.path.join(bindir, "bsub"), "-o", "/dev/null"]
            cases[f"{label}: bsub cmd"] = [*bsub, "echo", "done"]
            cases[f"{label}: bsub < script"] = bsub
            stdin[f"{label}: bsub < script"] = script
            cases[f"{label}: bjobs"] = [*launch, os.path.join(bindir, "bjobs")]
        times = {k: [] for k in cases}
        for _ in range(runs):  # interleaved: machine noise hits every case alike
            for name, cmd in cases.items():
                times[name].append(timed(cmd, env, stdin.get(name)))
    return times


def _job_script(directory):
    """A job script as labs write them: #BSUB options, comments, then its commands."""
    path = os.path.join(directory, "job.sh")
    head = ["#!/bin/sh", "#BSUB -J bench", "#BSUB -q serial", "#BSUB -n 1", "#BSUB -W 10"]
    body = [f"# step {i}\necho step {i}" for i in range((SCRIPT_LINES - len(head)) // 2)]
    with open(path, "w") as f:
        f.write("\n".join(head + body) + "\n")
    return path


if __name__ == "__main__":
    main()
