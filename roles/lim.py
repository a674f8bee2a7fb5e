"""LIM, on every node: collects the node's load and heartbeats the master candidates; the
candidates elect the master, whose LIM starts mbatchd and restarts it with backoff when it dies
(LIM, not sbatchd, owns mbatchd's lifecycle).

Heartbeats: every LIM keeps one authenticated TCP connection to each master candidate and sends
its load every heartbeat_interval; the reply carries the candidate's load. A host not heard from
for heartbeat_misses intervals (T_fail) is unavailable. Every frame says whether its sender is
master, so any LIM can tell where mbatchd runs.

Election v1: the first live candidate in master_candidates order is master. It becomes master
only by taking the epoch lock (lavalite.fence), so two LIMs that cannot see each other never both
run mbatchd. A master that sees a live candidate of higher priority, or loses the lock's use,
stops its mbatchd first, then releases the lock. A candidate that is not master answers on the
mbatchd port with a redirect to the master.

mbatchd reads the host view over LIM's Unix socket (`<spool_dir>/lim.sock`).
"""

import asyncio
import logging
import os
import platform
import random
import re
import shutil
import signal
import time
from typing import Any

import psutil

from lavalite import auth, credential, daemon, fence, private
from lavalite import protocol as P
from lavalite.auth import KeyFileError
from lavalite.config import Config, Section
from lavalite.daemon import sleep_or_stop, write_pid
from lavalite.hosts import address
from lavalite.loadindex import Indices
from lavalite.metrics import Exporter, counter, gauge
from lavalite.peer import Peer, Strangers, hello
from lavalite.program import self_command
from lavalite.tls import DaemonTLS

log = logging.getLogger("lavalite.lim")
# An mbatchd that ran this long did not fail to start: its next restart waits only
# restart_backoff (a crash after a while is no loop; every second it is down stalls the cluster).
HEALTHY = 10.0


def _host_kind() -> dict[str, str]:
    """-R's type (the machine, as X86_64) and model (the CPU's name, as one word)."""
    kind = platform.machine().upper() or "UNKNOWN"
    model = kind
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1] for line in f if line.startswith("model name")]
        model = re.sub(r"\W+", "_", names[0].strip()).strip("_") or kind if names else kind
    except OSError:
        pass
    return {"type": kind, "model": model}


HOST_KIND = _host_kind()  # read once: it does not change while LIM runs


def restart_delay(last: float | None, ran: float, lc: Section) -> float:
    """The wait before restarting an mbatchd that ran `ran` seconds, the wait before its start
    having been `last` (None: none): restart_backoff after a healthy run (HEALTHY), else
    doubled (a failure to start, looping) up to restart_backoff_max."""
    if last is None or ran > HEALTHY:
        return lc.restart_backoff
    return min(last * 2, lc.restart_backoff_max)


class Lim:
    def __init__(self, conf: Config, host: str) -> None:
        self.conf = conf
        self.host = host
        self.keys = auth.KeyFile(conf.cluster.key_file)
        self.seen = auth.ReplayCache()  # the nonces of recent hellos: each is good once
        self.load: dict[str, Any] = {"alive": True, "time": time.time()}
        self.indices = Indices()  # r15s, pg, ls, it: averaged across the samples
        self.mbatchd: asyncio.subprocess.Process | None = None  # the supervised process
        self.candidates = conf.cluster.master_candidates or [host]
        self.t_fail = conf.lim.heartbeat_interval * conf.lim.heartbeat_misses
        # host -> (monotonic time, its load, it says it is master)
        self.heard: dict[str, tuple[float, dict[str, Any], bool]] = {}
        self.lock = fence.EpochLock(conf.paths.state_dir)
        self.master = False
        # (stop event, supervisor task) while master
        self.reign: tuple[asyncio.Event, asyncio.Task] | None = None
        # the server on the mbatchd port while a non-master candidate
        self.redirector: asyncio.Server | None = None
        self.strangers = Strangers()  # every listener's connections until their hello
        self.tls = DaemonTLS(conf)
        self.started = time.monotonic()
        self.lock_busy_logged = False
        self.mbatchd_starts = 0
        self.exporter = Exporter(self.families, self.status, conf.lim.metrics_port)

    def sample(self) -> None:
        mem = psutil.virtual_memory()
        swap = psutil.swap_memory()
        tmp = shutil.disk_usage("/tmp")
        self.load = {
            "alive": True,
            "time": time.time(),
            "cpu": psutil.cpu_percent(interval=None) / 100.0,
            "loadavg": os.getloadavg(),
            "ncpu": os.cpu_count(),
            "mem_total": mem.total,
            "mem_avail": mem.available,
            "swap_total": swap.total,
            "swap_free": swap.free,
            "tmp_total": tmp.total,
            "tmp_free": tmp.free,
            **self.indices.sample(
                time.monotonic(),
                time.time(),
                ((u.name, u.terminal) for u in psutil.users()),
                psutil.boot_time(),
            ),
            "cpuf": self.conf.lim.cpu_factor,
            **HOST_KIND,
            "labels": self.conf.lim.labels.get(self.host, []),
        }

    def on_frame(self, peer: Peer, msg: dict[str, Any]) -> None:
        if peer.identity is None and msg.get("op") == "sign":
            peer.send(
                P.reply(msg.get("id"), **credential.sign(self.keys.ring(), self.host, peer, msg))
            )
            peer.close()
        elif peer.identity is None:
            peer.send(peer.login(self.keys.ring(), msg, "lim", self.seen))
        elif msg.get("op") == "load":
            peer.send(P.reply(msg.get("id"), hosts=self.view(), master=self.master_host()))
        elif msg.get("op") == "heartbeat" and peer.identity["role"] == "lim":
            self.on_heartbeat(peer.identity["host"], msg)
            peer.send(P.reply(msg.get("id"), load=self.load, master=self.master))
        else:
            raise P.ProtocolError(P.UNKNOWN_OP, f"unknown op {msg.get('op')!r}")

    # --- observability and reload

    @property
    def rank(self) -> str:
        """master; backup: a later master candidate; worker: never runs mbatchd."""
        return "master" if self.master else "backup" if self.host in self.candidates else "worker"

    def mbatchd_state(self) -> str:
        if not (self.master and self.conf.lim.supervise_mbatchd):
            return "not supervised here"
        return "running" if self.mbatchd and self.mbatchd.returncode is None else "restarting"

    def status(self) -> dict[str, Any]:
        return {
            "lim": self.rank,
            "host": self.host,
            "pid": os.getpid(),
            "master": self.master_host(),
            "mbatchd": self.mbatchd_state(),
            "mbatchd_pid": self.mbatchd.pid if self.mbatchd else None,
            "load_age": round(time.time() - self.load["time"], 3),
        }

    def families(self) -> list[Any]:
        now = time.monotonic()
        silent = {(h,): now - seen for h, (seen, _, _) in self.heard.items()}
        load = self.load
        return [
            counter(
                "lavalite_mbatchd_starts",
                "mbatchd (re)starts by LIM",
                (),
                {(): self.mbatchd_starts},
            ),
            gauge("lavalite_lim_master", "1 on the master LIM", (), {(): int(self.master)}),
            gauge(
                "lavalite_mbatchd_up",
                "1 while the supervised mbatchd runs",
                (),
                {(): int(self.mbatchd_state() == "running")},
            ),
            gauge(
                "lavalite_heartbeat_age_seconds",
                "Seconds since each host's last "
                "heartbeat (over heartbeat_interval x heartbeat_misses: lost)",
                ("host",),
                silent,
            ),
            gauge(
                "lavalite_hosts_alive",
                "Hosts heard from within T_fail",
                (),
                {(): sum(self.alive(h, now) for h in self.heard)},
            ),
            gauge(
                "lavalite_load_sample_age_seconds",
                "Age of the last load sample",
                (),
                {(): time.time() - load["time"]},
            ),
            gauge("lavalite_host_cpu_ratio", "CPU busy, 0..1", (), {(): load.get("cpu", 0)}),
            gauge(
                "lavalite_host_mem_avail_bytes",
                "Available memory",
                (),
                {(): load.get("mem_avail", 0)},
            ),
        ]

    def reload(self) -> None:
        """SIGHUP: new sampling settings and labels; the supervised mbatchd reloads too (it is
        LIM's child, so `llctrl lim reload` reaches it)."""
        conf = daemon.reread("lim", self.host, self.conf)
        if conf is None:
            return
        self.conf = conf
        if self.mbatchd is not None and self.mbatchd.returncode is None:
            self.mbatchd.send_signal(signal.SIGHUP)

    # --- membership

    def on_heartbeat(self, host: str, msg: dict[str, Any]) -> None:
        first = host not in self.heard
        self.heard[host] = (time.monotonic(), msg.get("load") or {}, bool(msg.get("master")))
        if first:
            log.info("host %s: heartbeats received", host)

    def alive(self, host: str, now: float | None = None) -> bool:
        if host == self.host:
            return True
        seen = self.heard.get(host)
        return seen is not None and (now or time.monotonic()) - seen[0] < self.t_fail

    def view(self) -> dict[str, dict[str, Any]]:
        """{host: load + alive} for this host and every host heard from: what mbatchd uses."""
        now = time.monotonic()
        out = {self.host: self.load}
        for host, (seen, load, _) in self.heard.items():
            out[host] = {**load, "alive": self.alive(host, now), "silent": now - seen}
        return out

    def master_host(self) -> str | None:
        if self.master:
            return self.host
        now = time.monotonic()
        return next((h for h, (_, _, m) in self.heard.items() if m and self.alive(h, now)), None)

    async def heartbeat(self, target: str, stop: asyncio.Event) -> None:
        """Keep a connection to candidate `target` and heartbeat over it; the replies tell us
        that `target` lives."""
        addr, port = address(self.conf, target), self.conf.lim.port
        interval = self.conf.lim.heartbeat_interval
        while not stop.is_set():
            peer = None
            try:
                _, peer = await asyncio.wait_for(
                    asyncio.get_running_loop().create_connection(
                        lambda: Peer(self.on_frame), addr, port, **self.tls.dial(target)
                    ),
                    self.t_fail,
                )
                await hello(peer, self.keys.ring(), "lim", self.host, "lim", self.t_fail)
                peer.identity = {"role": "lim", "host": target}
                while not stop.is_set():
                    reply = await asyncio.wait_for(
                        peer.request("heartbeat", load=self.load, master=self.master), self.t_fail
                    )
                    if reply.get("ok"):
                        self.on_heartbeat(target, reply)
                    await sleep_or_stop(stop, interval)
            except (TimeoutError, OSError, ConnectionError) as exc:
                log.debug("heartbeat to %s (%s:%s): %s", target, addr, port, exc)
            finally:
                if peer is not None:
                    peer.close()
            await sleep_or_stop(stop, interval)

    # --- election

    async def elect(self, stop: asyncio.Event) -> None:
        """Every heartbeat interval: the first live candidate should be master."""
        while not stop.is_set():
            now = time.monotonic()
            # A fresh LIM first listens for T_fail, so it does not take over from a live master.
            settled = len(self.candidates) == 1 or now - self.started >= self.t_fail
            first = next((c for c in self.candidates if self.alive(c, now)), None)
            if first == self.host and not self.master and settled:
                await self.take_over()
            elif first != self.host and self.master:
                log.warning("candidate %s is alive and ranks first: stepping down", first)
                await self.step_down()
                await self.redirect()
            await sleep_or_stop(stop, self.conf.lim.heartbeat_interval)

    async def take_over(self) -> None:
        try:
            epoch = self.lock.acquire()
        except OSError as exc:
            log.error("cannot use the master lock %s: %s", self.lock.path, exc)
            return
        if epoch is None:
            if not self.lock_busy_logged:
                log.warning(
                    "master lock %s is held by another LIM: not taking over", self.lock.path
                )
                self.lock_busy_logged = True
            return
        self.lock_busy_logged = False
        if self.redirector is not None:
            self.redirector.close()
            await self.redirector.wait_closed()
            self.redirector = None
        self.master = True
        reign = asyncio.Event()
        supervise = (
            self.supervise(reign, epoch) if self.conf.lim.supervise_mbatchd else reign.wait()
        )
        self.reign = (reign, asyncio.create_task(supervise))
        log.info("this host is master now (epoch %d)", epoch)

    async def step_down(self) -> None:
        """Stop mbatchd first, then release the lock: never two mbatchd."""
        assert self.reign is not None  # called while master
        reign, task = self.reign
        reign.set()
        await task
        await self.stop_mbatchd()
        self.lock.release()
        self.master = False
        self.reign = None

    async def redirect(self) -> None:
        """A candidate that is not master answers on the mbatchd port: 'ask the master'."""
        try:
            self.redirector = await asyncio.get_running_loop().create_server(
                lambda: Peer(self.on_redirect, strangers=self.strangers),
                self.conf.cluster.listen,
                self.conf.mbatchd.port,
                reuse_address=True,
                **self.tls.listen(users=True),
            )
        except OSError as exc:
            log.warning("cannot answer redirects on port %d: %s", self.conf.mbatchd.port, exc)

    def on_redirect(self, peer: Peer, msg: dict[str, Any]) -> None:
        if peer.identity is None:  # the redirect goes sealed: a client can trust it
            peer.login(self.keys.ring(), msg, "mbatchd", self.seen)
        master = self.master_host()
        err = P.error(
            msg.get("id"),
            P.REDIRECT,
            f"{self.host} is not the master; "
            + (f"mbatchd runs on {master}" if master else "no master elected yet"),
        )
        peer.send({**err, "master": master})
        peer.close()

    async def collect(self, stop: asyncio.Event) -> None:
        lc = self.conf.lim
        while not stop.is_set():
            self.sample()
            await sleep_or_stop(
                stop,
                lc.poll_interval + random.uniform(-lc.poll_jitter, lc.poll_jitter)
                if lc.poll_interval > lc.poll_jitter
                else lc.poll_interval,
            )

    async def supervise(self, stop: asyncio.Event, epoch: int) -> None:
        """Keep mbatchd running: restart it when it exits, after restart_delay()."""
        lc = self.conf.lim
        delay = None
        while not stop.is_set():
            started = time.monotonic()
            self.mbatchd = await asyncio.create_subprocess_exec(
                *self_command(),
                "--role",
                "mbatchd",
                "--conf",
                self.conf.path,
                "--host",
                self.host,
                "--epoch",
                str(epoch),
            )
            self.mbatchd_starts += 1
            log.info("started mbatchd, pid %d", self.mbatchd.pid)
            waiter = asyncio.ensure_future(self.mbatchd.wait())
            await asyncio.wait(
                [waiter, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            if stop.is_set():
                break
            delay = restart_delay(delay, time.monotonic() - started, lc)
            log.error("mbatchd exited with status %s; restarting in %.1f s", waiter.result(), delay)
            await sleep_or_stop(stop, delay)

    async def stop_mbatchd(self) -> None:
        proc = self.mbatchd
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def accepted(self) -> Peer:
        """A connection to one of our listeners."""
        return Peer(self.on_frame, strangers=self.strangers)

    async def serve(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        private.make_dir(self.conf.paths.spool_dir, traversable=True)  # lim.sock is for all
        path = os.path.join(self.conf.paths.spool_dir, "lim.sock")
        if os.path.exists(path):
            os.unlink(path)
        server = await loop.create_unix_server(self.accepted, path)
        os.chmod(path, 0o666)  # every local user may ask for a credential (`sign`)
        metrics = await self.exporter.serve(self.conf.cluster.listen)
        write_pid(os.path.join(self.conf.paths.spool_dir, f"lim-{self.host}.pid"))
        servers = [server] + ([metrics] if metrics is not None else [])
        if self.host in self.candidates:  # the other LIMs heartbeat to the candidates
            servers.append(
                await loop.create_server(
                    self.accepted,
                    self.conf.cluster.listen,
                    self.conf.lim.port,
                    reuse_address=True,
                    **self.tls.listen(users=False),
                )
            )
        tasks = [asyncio.create_task(self.collect(stop)), asyncio.create_task(self.elect(stop))]
        tasks += [
            asyncio.create_task(self.heartbeat(c, stop)) for c in self.candidates if c != self.host
        ]
        log.info(
            "lim on %s: candidates %s, T_fail %.1f s",
            self.host,
            " ".join(self.candidates),
            self.t_fail,
        )
        if self.host in self.candidates and len(self.candidates) > 1:
            await self.redirect()
        await stop.wait()
        for srv in servers:
            srv.close()
        if self.master:
            await self.step_down()
        if self.redirector is not None:
            self.redirector.close()
        for t in tasks:
            t.cancel()
        log.info("lim stopped")


def main(argv: list[str]) -> int:
    return daemon.main("lim", argv, lambda conf, host, args: Lim(conf, host), (KeyFileError,))
