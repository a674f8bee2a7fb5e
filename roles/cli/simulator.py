"""The engine of `lavalite simulate`: a real mbatchd driven by simulated hosts.

mbatchd is the product's own, started as a process with its own store. ONE process plays every
sbatchd: each virtual host has its own TCP connection, its own signed hello and its own
register, exactly as sbatchd sends them, so mbatchd cannot tell them from real hosts. A
dispatched job "runs" as a timer of its spec's `sim_duration` divided by --speed (no fork, no
exec), then reports START and EXIT as sbatchd does. The workload generator queues the jobs
first (arrays and single jobs, several users and queues) through the user protocol, then the
hosts register and the cluster drains.

An array's elements share one spec: element i runs sim_duration * (0.5 .. 1.5), spread by i
and clamped to --duration, so an array is not a block of equal jobs.
"""

import asyncio
import configparser
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from lavalite import auth, config, messages
from lavalite.peer import Peer, hello
from lavalite.program import self_command

DEFAULT_QUEUES = {
    "short": {"priority": "50"},
    "normal": {"priority": "30"},
    "long": {"priority": "10", "max_running_user": "20000"},
}
# --preempt: the default queues with the highest one preemptive (of both others)
PREEMPT_QUEUES = {**DEFAULT_QUEUES, "short": {"priority": "50", "preemption": "PREEMPTIVE"}}
BATCH = 5000  # single jobs per submit_many request
# --fairshare: the queue, and the two users whose slot time is compared (2 shares to 1)
FAIR_QUEUE = "fair"
FAIR_SHARES = "USER_SHARES[[user1, 2] [user2, 1] [default, 1]]"
WATCHED = ("user1", "user2")
HOUR = 3600.0
# (user, queue, kind, size, duration): an array's one duration, or each single job's
WorkItem = tuple[str, str, str, int, Any]


def pct(values: Iterable[float], p: int) -> float:
    """Nearest-rank percentile (the bench scripts use it too)."""
    values = sorted(values)
    return values[max(0, -(-len(values) * p // 100) - 1)] if values else float("nan")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU of a live process (with children=True, plus the children it has
    reaped), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    ticks = sum(int(f) for f in fields[11 : 15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024


class Sim:
    def __init__(self, args: Namespace, key: auth.Keyring, addr: str, port: int) -> None:
        self.args, self.key, self.addr, self.port = args, key, addr, port
        lo, _, hi = args.duration.partition("-")
        self.lo, self.hi = float(lo), float(hi or lo)
        self.loop = asyncio.get_running_loop()
        self.submitted: dict[int, float] = {}  # job or array id -> submit time
        self.total = 0  # jobs (elements counted) the workload queued
        self.ended: set[int] = set()
        self.twice = 0  # jobs that ended more than once: must stay 0
        self.waits: list[float] = []  # submit-to-start, seconds
        self.per_second: dict[int, int] = {}  # int(time) -> dispatches
        self.by_queue: dict[str, list[float]] = {}  # queue -> [waits]
        self.all_ended = asyncio.Event()
        # --fairshare: the simulated hour from the first dispatch (real times), and the
        # (start, real duration, slots) of the WATCHED users' jobs
        self.window: tuple[float, float] | None = None
        self.runs: dict[str, list[tuple[float, float, int]]] = {u: [] for u in WATCHED}

    def duration(self, spec: dict[str, Any]) -> float:
        d = spec.get("sim_duration") or self.lo
        if "index" in spec:
            d *= 0.5 + (spec["index"] * 2654435761 % 1000) / 1000
        return min(self.hi, max(self.lo, d)) / self.args.speed

    def started(self, spec: dict[str, Any], now: float, duration: float) -> None:
        if self.args.fairshare:
            if self.window is None:
                self.window = (now, now + HOUR / self.args.speed)
            if spec["user"] in self.runs:
                self.runs[spec["user"]].append((now, duration, spec["slots"]))
        wait = now - self.submitted[spec.get("array", spec["id"])]
        self.waits.append(wait)
        self.by_queue.setdefault(spec["queue"], []).append(wait)
        sec = int(now)
        self.per_second[sec] = self.per_second.get(sec, 0) + 1

    def slot_time(self, user: str) -> float:
        """The user's slot-seconds within the simulated hour, in simulated seconds."""
        assert self.window is not None  # set by the first dispatch
        lo, hi = self.window
        used = sum(
            n * max(0.0, min(hi, start + dur) - max(lo, start)) for start, dur, n in self.runs[user]
        )
        return used * self.args.speed

    def done(self) -> bool:
        """Every job ended, or (--fairshare) the simulated hour is over."""
        over = self.window is not None and time.time() >= self.window[1]
        return self.all_ended.is_set() or over

    def finished(self, job_id: int) -> None:
        if job_id in self.ended:
            self.twice += 1
        self.ended.add(job_id)
        if len(self.ended) >= self.total:
            self.all_ended.set()

    async def connect(self, role: str, name: str, **extra: Any) -> Peer:
        _, peer = await self.loop.create_connection(
            lambda: Peer(self._frame(name)), self.addr, self.port
        )
        try:
            reply = await hello(peer, self.key, role, name, "mbatchd", 30, **extra)
        except ConnectionError as exc:
            raise RuntimeError(f"mbatchd refused {role} {name}: {exc}") from None
        if not reply.get("ok"):
            raise RuntimeError(f"mbatchd refused {role} {name}: {reply}")
        return peer

    def _frame(self, name: str) -> Callable[[Peer, dict[str, Any]], None]:
        host = SimHost(self, name) if name.startswith("sim") else None
        return host.on_frame if host else (lambda peer, msg: None)


class SimHost:
    """One virtual sbatchd. Reports are batched per loop iteration, as sbatchd does."""

    __slots__ = ("sim", "name", "peer", "reports", "rid", "timers")

    def __init__(self, sim: Sim, name: str) -> None:
        self.sim, self.name = sim, name
        self.peer: Peer | None = None  # set by the first frame, which any report answers
        self.reports: list[messages.JobReport] = []
        self.rid = 0
        # (job, attempt) -> TimerHandle
        self.timers: dict[tuple[int, int], asyncio.TimerHandle] = {}

    def on_frame(self, peer: Peer, msg: dict[str, Any]) -> None:
        self.peer = peer
        op = msg.get("op")
        if op == "dispatch":
            now = time.time()
            for spec in msg["jobs"]:
                key = (spec["id"], spec["attempt"])
                duration = self.sim.duration(spec)
                self.sim.started(spec, now, duration)
                self.timers[key] = self.sim.loop.call_later(duration, self.exit, key, 0, "")
                self.report({"kind": "start", "job": key[0], "attempt": key[1], "time": now})
        elif op == "kill":
            key = (msg.get("job"), msg.get("attempt"))
            timer = self.timers.get(key)
            if timer is not None:
                timer.cancel()
                self.exit(key, None, "killed")
        # "ack": nothing to drop, the simulator keeps no journal

    def exit(self, key: tuple[int, int], code: int | None, reason: str) -> None:
        del self.timers[key]
        self.sim.finished(key[0])
        self.report(
            {
                "kind": "exit",
                "job": key[0],
                "attempt": key[1],
                "time": time.time(),
                "exit_code": code,
                "exit_signal": None,
                "reason": reason,
            }
        )

    def report(self, rep: messages.JobReport) -> None:
        rep["rid"] = self.rid
        self.rid += 1
        if not self.reports:
            self.sim.loop.call_soon(self.flush)
        self.reports.append(rep)

    def flush(self) -> None:
        assert self.peer is not None  # a report answers a frame, which set the peer
        self.peer.send(messages.report(self.reports))
        self.reports = []


def workload(
    args: Namespace, queues: list[str], rng: random.Random, lo: float, hi: float
) -> list[WorkItem]:
    """[(user, queue, kind, size, duration)]: arrays (kind "array") and batches of single jobs
    (kind "singles", one duration per job), shuffled."""
    users = [f"user{i + 1}" for i in range(args.users)]
    if args.fairshare:  # every user the same work, so shares alone make the difference
        each = max(1, args.jobs // len(users))
        return [(u, queues[0], "array", each, (lo + hi) / 2) for u in users]
    items: list[WorkItem] = []
    left = int(args.jobs * args.array_share)
    while left > 0:
        size = min(left, rng.randint(max(1, args.array_size // 10), max(1, args.array_size)))
        items.append((rng.choice(users), rng.choice(queues), "array", size, rng.uniform(lo, hi)))
        left -= size
    left = args.jobs - int(args.jobs * args.array_share)
    while left > 0:
        size = min(left, BATCH)
        items.append(
            (
                rng.choice(users),
                rng.choice(queues),
                "singles",
                size,
                [round(rng.uniform(lo, hi), 2) for _ in range(size)],
            )
        )
        left -= size
    rng.shuffle(items)
    return items


async def submit_all(sim: Sim, items: list[WorkItem]) -> dict[str, Peer]:
    peers = {}
    for user, queue, kind, size, dur in items:
        if user not in peers:
            peers[user] = await sim.connect("user", "simsubmit", uid=os.getuid(), user=user)
        peer = peers[user]
        now = time.time()
        base = {"cmd": ["true"], "cwd": "/", "env": {}, "queue": queue}
        if kind == "array":
            reply = await peer.request(
                "submit", spec={**base, "name": f"sim[1-{size}]", "sim_duration": dur}
            )
            ids = [reply.get("job")]
        else:
            reply = await peer.request(
                "submit_many", defaults=base, specs=[{"sim_duration": d} for d in dur]
            )
            ids = reply.get("jobs") or []
        if not reply.get("ok"):
            raise RuntimeError(f"submit refused: {reply.get('error')}")
        for job_id in ids:
            sim.submitted[job_id] = now
        sim.total += size
    return peers


async def register_hosts(sim: Sim, n: int, slots: int) -> list[Peer]:
    async def one(i: int) -> Peer:
        for attempt in range(5):  # as sbatchd: a refused or dropped dial is tried again
            try:
                peer = await sim.connect("sbatchd", f"sim{i:05d}")
                break
            except (OSError, ConnectionError):
                if attempt == 4:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
        peer.send(messages.register(slots, [], []))
        return peer

    peers = []
    for start in range(0, n, 200):  # 200 handshakes at a time, within mbatchd's backlog
        peers += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 200))))
    return peers


async def drive(args: Namespace, conf: config.Config, pid: int) -> tuple[Sim, dict[str, Any]]:
    key = auth.load_key(conf.cluster.key_file)
    sim = Sim(args, key, "127.0.0.1", conf.mbatchd.port)
    rng = random.Random(args.seed)
    queues = [q.name for q in conf.queue_order()]
    items = workload(args, queues, rng, sim.lo, sim.hi)
    t0 = time.time()
    users = await submit_all(sim, items)
    t_submit = time.time() - t0
    t1 = time.time()
    hosts = await register_hosts(sim, args.hosts, args.slots)
    t_register = time.time() - t1
    last = time.time()
    while not sim.done():
        try:
            await asyncio.wait_for(sim.all_ended.wait(), 1 if args.fairshare else 10)
        except TimeoutError:
            if not args.json:
                print(
                    f"  {time.time() - t1:6.0f} s: {sum(sim.per_second.values())} started, "
                    f"{len(sim.ended)} of {sim.total} ended",
                    file=sys.stderr,
                    flush=True,
                )
        last = time.time()
    drain = last - t1
    stats = await next(iter(users.values())).request("stats")
    cpu, rss = cpu_seconds(pid), peak_rss_mb(pid)
    for peer in list(users.values()) + hosts:
        peer.close()
    return sim, {
        "submit_s": t_submit,
        "register_s": t_register,
        "drain_s": drain,
        "stats": stats,
        "mbatchd_cpu_s": cpu,
        "mbatchd_peak_rss_mib": rss,
    }


def _state(args: Namespace) -> tuple[str, bool]:
    if args.state_dir:
        return os.path.abspath(args.state_dir), False
    return tempfile.mkdtemp(prefix="lavalite-sim-"), True


def _write_conf(
    state: str, args: Namespace, fair: bool = False, preempt: bool = False, placement: str = ""
) -> str:
    from roles.cli.local import free_port

    qfile = os.path.join(state, "queues.conf")
    overrides = {}
    if args.fairshare:
        one = {"fairshare": FAIR_SHARES} if fair else {}
        overrides["queues.conf"] = {FAIR_QUEUE: one}
        names = [FAIR_QUEUE]
    elif args.queues:
        shutil.copyfile(args.queues, qfile)
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(args.queues)
        # [usergroup|quota|limit NAME] are no queues; [queue NAME] is LSF's way to name one
        names = [n for n in (s.removeprefix("queue ") for s in parser.sections()) if " " not in n]
    else:
        overrides["queues.conf"] = {
            name: {**q, **({"placement": placement} if placement else {})}
            for name, q in (PREEMPT_QUEUES if preempt else DEFAULT_QUEUES).items()
        }
        names = list(DEFAULT_QUEUES)
    overrides["lavalite.conf"] = {
        "cluster": {
            "master_candidates": "simmaster",
            "listen": "127.0.0.1",
            # a private cluster whose jobs never run: whoever simulates may submit
            "allow_root_jobs": "yes",
            "key_file": os.path.join(state, "cluster.key"),
        },
        "hosts": {"simmaster": "127.0.0.1"},
        "mbatchd": {"port": str(free_port()), "default_queue": names[0] if names else "serial"},
        "logging": {"level": "warning"},
    }  # one log line per job event would be the cost
    return config.write_state_conf(state, overrides)


def main(args: Namespace) -> int:
    lo, _, hi = args.duration.partition("-")
    try:
        if not 0 < float(lo) <= float(hi or lo) or args.speed <= 0 or args.hosts < 1:
            raise ValueError
    except ValueError:
        print(
            "simulate: --duration is MIN-MAX seconds (0 < MIN <= MAX), --speed and --hosts "
            "positive",
            file=sys.stderr,
        )
        return 2
    if args.reserve:
        from roles.cli import simulate_reserve

        return simulate_reserve.main(args)
    if args.preempt and (args.queues or args.fairshare):
        print(
            "simulate: --preempt runs its own queues: no --queues or --fairshare", file=sys.stderr
        )
        return 2
    if args.fairshare:
        sim, fig = simulate(args, "fair", fair=True)
        fifo_sim, fifo_fig = simulate(args, "fifo")
        report(args, sim, fig, {"fairshare_hour": _compare(args, sim, fig, fifo_sim, fifo_fig)})
        return 0 if sim.twice == fifo_sim.twice == 0 else 1
    if args.preempt:
        sim, fig = simulate(args, "preempt", preempt=True)
        plain_sim, plain_fig = simulate(args, "plain")
        cost = {"preempt_to_plain": _cost(sim, fig, plain_sim, plain_fig)}
        report(args, sim, fig, {"preemption": cost})
        ok = all(s.twice == 0 and len(s.ended) == s.total for s in (sim, plain_sim))
        return 0 if ok else 1
    if args.placement:  # the same workload placed by host order, then by the policy
        first_sim, first_fig = simulate(args, "first")
        sim, fig = simulate(args, args.placement, placement=args.placement)
        cost = {f"{args.placement}_to_first": _cost(sim, fig, first_sim, first_fig)}
        report(args, sim, fig, {"placement": cost})
        return 0 if sim.twice == first_sim.twice == 0 and len(sim.ended) == sim.total else 1
    sim, fig = simulate(args)
    report(args, sim, fig)
    return 0 if sim.twice == 0 and len(sim.ended) == sim.total else 1


Driver = Callable[[Namespace, config.Config, int], Coroutine[Any, Any, tuple[Sim, dict[str, Any]]]]


def simulate(
    args: Namespace,
    run: str = "",
    fair: bool = False,
    preempt: bool = False,
    placement: str = "",
    driver: "Driver | None" = None,
) -> tuple["Sim", dict[str, Any]]:
    """One simulation with its own mbatchd and state (in `run` under --state-dir), driven by
    `driver` (default: the queued workload, then the hosts)."""
    state, temporary = _state(args)
    state = os.path.join(state, run)
    os.makedirs(state, exist_ok=True)
    conf_path = _write_conf(state, args, fair, preempt, placement)
    conf = config.load(conf_path)  # a bad queues.conf stops here, every error listed
    auth.create_key(conf.cluster.key_file)
    os.makedirs(conf.paths.log_dir, exist_ok=True)
    with open(os.path.join(conf.paths.log_dir, "mbatchd.log"), "ab") as log:
        mbatchd = subprocess.Popen(
            self_command() + ["--role", "mbatchd", "--conf", conf_path, "--host", "simmaster"],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        _wait_port(conf, mbatchd)
        sim, fig = asyncio.run((driver or drive)(args, conf, mbatchd.pid))
    finally:
        mbatchd.send_signal(signal.SIGTERM)
        try:
            mbatchd.wait(120)
        except subprocess.TimeoutExpired:
            mbatchd.kill()
    db = conf.mbatchd.database
    fig["store_mib"] = (
        sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p)) / 2**20
    )
    if temporary:
        shutil.rmtree(os.path.dirname(state) if run else state, ignore_errors=True)
    return sim, fig


def _wait_port(conf: config.Config, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"simulate: mbatchd exited with {proc.returncode}; see "
                f"{conf.paths.log_dir}/mbatchd.log"
            )
        try:
            socket.create_connection(("127.0.0.1", conf.mbatchd.port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("simulate: mbatchd did not listen within 60 s")


def _compare(
    args: Namespace, sim: Sim, fig: dict[str, Any], fifo_sim: Sim, fifo_fig: dict[str, Any]
) -> dict[str, Any]:
    """--fairshare's figures: the watched users' slot time over the simulated hour with
    fairshare (goal: 2:1) and without, and the fairshare run's cost as ratios to the FIFO run."""

    def share(s: Sim) -> dict[str, Any]:
        a, b = (s.slot_time(u) for u in WATCHED)
        return {"user1_slot_s": round(a), "user2_slot_s": round(b), "ratio": _ratio(a, b)}

    return {
        "fairshare": share(sim),
        "fifo": share(fifo_sim),
        "fair_to_fifo": _cost(sim, fig, fifo_sim, fifo_fig),
    }


def _cost(sim: Sim, fig: dict[str, Any], base: Sim, base_fig: dict[str, Any]) -> dict[str, Any]:
    """A run's dispatch rate, scheduling-pass p99 and peak RSS as ratios to the base run's."""

    def rate(s: Sim) -> float:
        return len(s.waits) / max(1e-9, max(s.per_second) - min(s.per_second) + 1)

    return {
        "dispatch_per_s": _ratio(rate(sim), rate(base)),
        "sched_p99": _ratio(fig["stats"]["sched_p99"], base_fig["stats"]["sched_p99"]),
        "mbatchd_peak_rss": _ratio(fig["mbatchd_peak_rss_mib"], base_fig["mbatchd_peak_rss_mib"]),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def report(
    args: Namespace, sim: Sim, fig: dict[str, Any], compared: dict[str, Any] | None = None
) -> None:
    waits = sorted(sim.waits)
    busy = sorted(sim.per_second.values())
    started = len(waits)
    first, last = (min(sim.per_second), max(sim.per_second)) if sim.per_second else (0, 0)
    mean = (sim.lo + sim.hi) / 2
    out = {
        "hosts": args.hosts,
        "slots": args.hosts * args.slots,
        "jobs": sim.total,
        "speed": args.speed,
        "submit_s": round(fig["submit_s"], 3),
        "submit_jobs_per_s": round(sim.total / fig["submit_s"]) if fig["submit_s"] else None,
        "register_s": round(fig["register_s"], 3),
        "drain_s": round(fig["drain_s"], 1),
        "dispatches": started,
        "dispatch_per_s_mean": round(started / max(1, last - first + 1)),
        "dispatch_per_s_median_second": pct(busy, 50),
        "offered_per_s": round(args.hosts * args.slots * args.speed / mean),
        "wait_p50_s": round(pct(waits, 50), 3),
        "wait_p99_s": round(pct(waits, 99), 3),
        "wait_max_s": round(waits[-1], 3) if waits else None,
        "turn_p50_ms": round(fig["stats"]["turn_p50"] * 1e3, 2),
        "turn_p99_ms": round(fig["stats"]["turn_p99"] * 1e3, 2),
        "turn_max_ms": round(fig["stats"]["turn_max"] * 1e3, 1),
        "sched_p50_ms": round(fig["stats"]["sched_p50"] * 1e3, 2),
        "sched_p99_ms": round(fig["stats"]["sched_p99"] * 1e3, 2),
        "sched_max_ms": round(fig["stats"]["sched_max"] * 1e3, 1),
        "mbatchd_cpu_s": round(fig["mbatchd_cpu_s"], 1),
        "mbatchd_peak_rss_mib": round(fig["mbatchd_peak_rss_mib"], 1),
        "store_mib": round(fig["store_mib"], 1),
        "ended": len(sim.ended),
        "ended_twice": sim.twice,
        "queues": {
            q: {"started": len(w), "wait_p50_s": round(pct(sorted(w), 50), 3)}
            for q, w in sorted(sim.by_queue.items())
        },
    }
    out.update(compared or {})
    if args.json:
        print(json.dumps(out))
        return
    width = max(map(len, out))
    for k, v in out.items():
        if k != "queues" and k not in (compared or {}):
            print(f"{k.ljust(width)}  {v}")
    for block in (compared or {}).values():
        for k, v in block.items():
            print(f"{k.ljust(width)}  {' '.join(f'{n} {x}' for n, x in v.items())}")
    for q, v in out["queues"].items():
        print(f"queue {q}: {v['started']} started, submit-to-start p50 {v['wait_p50_s']} s")
