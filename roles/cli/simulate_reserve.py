"""`lavalite simulate --reserve SECONDS`: one wide job behind a flood of narrow ones.

The cluster is filled with narrow jobs of --users users (each with its exact run time as its run
limit, -W), then a wide job of another user is queued, then the rest of the flood behind it.
Three runs of the same workload, each with its own mbatchd: slot_reserve with backfill,
slot_reserve alone, and neither. For each: the wide job's wait (to set against the
reservation time) and the slot utilisation from its submission to the end of the flood.
"""

import asyncio
import math
import os
import random
import sys
import tempfile
import time
from argparse import Namespace
from typing import Any

from lavalite import auth, config
from lavalite.peer import Peer
from roles.cli.simulator import Sim, register_hosts, simulate

QUEUE = "flood"
RUNS = {  # run -> the flood queue's keys
    "reserve+backfill": {"backfill": "yes"},
    "reserve": {},
    "neither": None,
}


class ReserveSim(Sim):
    """A Sim that keeps every start (for utilisation) and the wide job's (user "wide")."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.busy: list[tuple[float, float, int]] = []  # (start, real duration, slots)
        self.wide_start: float | None = None

    def started(self, spec: dict[str, Any], now: float, duration: float) -> None:
        self.submitted.setdefault(spec["id"], now)  # dispatched before its submit's reply came
        super().started(spec, now, duration)
        self.busy.append((now, duration, spec["slots"]))
        if spec["user"] == "wide":
            self.wide_start = now

    def utilisation(self, lo: float, hi: float, slots: int) -> float:
        """Share of the slot-time between lo and hi that jobs used."""
        used = sum(n * max(0.0, min(hi, s + d) - max(lo, s)) for s, d, n in self.busy)
        return used / (slots * (hi - lo)) if hi > lo else 0.0


def queues_conf(directory: str, args: Namespace, keys: dict[str, str] | None) -> str:
    """A queues.conf with the flood queue as the run wants it."""
    path = os.path.join(directory, "queues.conf")
    lines = [f"[{QUEUE}]"]
    if keys is not None:
        lines.append(f"slot_reserve = MAX_RESERVE_TIME[{args.reserve:g}]")
        lines += [f"{k} = {v}" for k, v in keys.items()]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


async def _flood(sim: Sim, peers: list[Peer], durations: list[float]) -> None:
    """The narrow jobs, dealt round the flood's users in turn."""
    base = {"cmd": ["true"], "cwd": "/", "env": {}, "queue": QUEUE}
    for i, peer in enumerate(peers):
        specs = [
            {"sim_duration": d, "walltime": math.ceil(d / sim.args.speed * 100) / 100}
            for d in durations[i :: len(peers)]
        ]
        reply = await peer.request("submit_many", defaults=base, specs=specs)
        if not reply.get("ok"):
            raise RuntimeError(f"submit refused: {reply.get('error')}")
        now = time.time()
        for job_id in reply["jobs"]:
            sim.submitted[job_id] = now
        sim.total += len(specs)


async def drive(args: Namespace, conf: config.Config, pid: int) -> tuple[Sim, dict[str, Any]]:
    sim = ReserveSim(args, auth.load_key(conf.cluster.key_file), "127.0.0.1", conf.mbatchd.port)
    hosts = await register_hosts(sim, args.hosts, args.slots)
    flood = [
        await sim.connect("user", "simsubmit", uid=os.getuid(), user=f"user{i + 1}")
        for i in range(args.users)
    ]
    wide = await sim.connect("user", "simsubmit", uid=os.getuid(), user="wide")
    rng = random.Random(args.seed)
    durations = [round(rng.uniform(sim.lo, sim.hi), 2) for _ in range(args.jobs)]
    slots = args.hosts * args.slots
    await _flood(sim, flood, durations[:slots])
    while len(sim.waits) < slots:  # the cluster full
        await asyncio.sleep(0.02)
    submitted = time.time()
    reply = await wide.request(
        "submit",
        spec={
            "cmd": ["true"],
            "cwd": "/",
            "env": {},
            "queue": QUEUE,
            "slots": args.wide,
            "sim_duration": sim.hi,
        },
    )
    if not reply.get("ok"):
        raise RuntimeError(f"submit refused: {reply.get('error')}")
    sim.total += 1
    await _flood(sim, flood, durations[slots:])
    await sim.all_ended.wait()
    ended = time.time()
    for peer in [*flood, wide, *hosts]:
        peer.close()
    start = sim.wide_start or ended
    return sim, {
        "wide_wait_s": round(start - submitted, 2),
        "utilisation": round(sim.utilisation(submitted, ended, slots), 3),
    }


def main(args: Namespace) -> int:
    """Run the three configurations; print each one's figures."""
    if args.wide < 2 or args.reserve <= 0:
        print("simulate: --reserve takes seconds > 0, --wide at least 2 slots", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"reserve_s": args.reserve, "wide_slots": args.wide}
    with tempfile.TemporaryDirectory(prefix="lavalite-sim-queues-") as directory:
        for run, keys in RUNS.items():
            one = Namespace(**{**vars(args), "queues": queues_conf(directory, args, keys)})
            _, fig = simulate(one, run, driver=drive)
            out[run] = {k: fig[k] for k in ("wide_wait_s", "utilisation")}
    if args.json:
        import json

        print(json.dumps(out))
        return 0
    print(f"wide job of {args.wide} slots, reservation time {args.reserve:g} s")
    for run in RUNS:
        fig = out[run]
        print(
            f"{run:17}  wide job's wait {fig['wide_wait_s']:8.2f} s  utilisation "
            f"{fig['utilisation']:.1%}"
        )
    return 0
