"""LIM, on every node: collects the node's load; on the master node it also starts mbatchd and
restarts it with backoff when it dies (LIM, not sbatchd, owns mbatchd's lifecycle).

mbatchd reads the load over LIM's Unix socket (`<spool_dir>/lim.sock`). Heartbeats between
LIMs and the election of the master among the candidates build on this (issue 5); until then
the master is the first master candidate, or this node when none is configured.
"""
import asyncio
import logging
import os
import random
import signal
import time

import psutil

from lavalite import auth, daemon
from lavalite import protocol as P
from lavalite.auth import KeyFileError
from lavalite.daemon import sleep_or_stop, write_pid
from lavalite.entry import self_command
from lavalite.metrics import CounterMetricFamily, Exporter, gauge
from lavalite.peer import Peer

log = logging.getLogger("lavalite.lim")


class Lim:
    def __init__(self, conf, host):
        self.conf = conf
        self.host = host
        self.key = auth.load_key(conf.cluster.key_file)
        self.load = {"alive": True, "time": time.time()}
        self.mbatchd = None        # the supervised process
        self.mbatchd_starts = 0
        candidates = conf.cluster.master_candidates
        self.master = not candidates or candidates[0] == host
        # "backup": a later master candidate; "worker": never runs mbatchd
        self.rank = "master" if self.master else "backup" if host in candidates else "worker"
        self.exporter = Exporter(self.families, self.status)

    def sample(self):
        mem = psutil.virtual_memory()
        self.load = {"alive": True, "time": time.time(),
                     "cpu": psutil.cpu_percent(interval=None) / 100.0,
                     "loadavg": os.getloadavg(), "ncpu": os.cpu_count(),
                     "mem_total": mem.total, "mem_avail": mem.available,
                     "labels": self.conf.lim.labels.get(self.host, [])}

    def on_frame(self, peer, msg):
        if peer.identity is None:
            peer.identity = auth.verify_hello(self.key, msg)
            peer.send(P.reply(msg.get("id"), proof=auth.server_proof(self.key, msg["nonce"])))
        elif msg.get("op") == "load":
            peer.send(P.reply(msg.get("id"), hosts={self.host: self.load},
                              master=self.host if self.master else None))
        else:
            raise P.ProtocolError(P.UNKNOWN_OP, f"unknown op {msg.get('op')!r}")

    def mbatchd_state(self):
        if not (self.master and self.conf.lim.supervise_mbatchd):
            return "not supervised here"
        return "running" if self.mbatchd and self.mbatchd.returncode is None else "restarting"

    def status(self):
        return {"lim": self.rank, "host": self.host, "pid": os.getpid(),
                "mbatchd": self.mbatchd_state(),
                "mbatchd_pid": self.mbatchd.pid if self.mbatchd else None,
                "load_age": round(time.time() - self.load["time"], 3)}

    def families(self):
        # Heartbeats between LIMs (latency, loss) arrive with the election (issue 5); what
        # exists today: the load sample and mbatchd's supervision (mbatchd exports the
        # latency and failures of its load requests to this LIM).
        starts = CounterMetricFamily("lavalite_mbatchd_starts", "mbatchd (re)starts by LIM")
        starts.add_metric([], self.mbatchd_starts)
        load = self.load
        return [starts,
                gauge("lavalite_lim_master", "1 on the master LIM", (), {(): int(self.master)}),
                gauge("lavalite_mbatchd_up", "1 while the supervised mbatchd runs", (),
                      {(): int(self.mbatchd_state() == "running")}),
                gauge("lavalite_load_sample_age_seconds", "Age of the last load sample", (),
                      {(): time.time() - load["time"]}),
                gauge("lavalite_host_cpu_ratio", "CPU busy, 0..1", (), {(): load.get("cpu", 0)}),
                gauge("lavalite_host_mem_avail_bytes", "Available memory", (),
                      {(): load.get("mem_avail", 0)})]

    def reload(self):
        """SIGHUP: new sampling settings and labels; the supervised mbatchd reloads too (it is
        LIM's child, so `llctrl lim reload` reaches it)."""
        conf = daemon.reread("lim", self.host, self.conf)
        if conf is None:
            return
        self.conf = conf
        if self.mbatchd is not None and self.mbatchd.returncode is None:
            self.mbatchd.send_signal(signal.SIGHUP)

    async def collect(self, stop):
        lc = self.conf.lim
        while not stop.is_set():
            self.sample()
            await sleep_or_stop(stop, lc.poll_interval + random.uniform(-lc.poll_jitter, lc.poll_jitter)
                                if lc.poll_interval > lc.poll_jitter else lc.poll_interval)

    async def supervise(self, stop):
        """Keep mbatchd running: restart it when it exits, waiting restart_backoff, doubled
        after each quick death up to restart_backoff_max, reset after a minute of good health."""
        lc = self.conf.lim
        delay = lc.restart_backoff
        while not stop.is_set():
            started = time.monotonic()
            self.mbatchd = await asyncio.create_subprocess_exec(
                *self_command(), "--role", "mbatchd", "--conf", self.conf.path, "--host", self.host)
            self.mbatchd_starts += 1
            log.info("started mbatchd, pid %d", self.mbatchd.pid)
            waiter = asyncio.ensure_future(self.mbatchd.wait())
            await asyncio.wait([waiter, asyncio.ensure_future(stop.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                break
            code = waiter.result()
            delay = lc.restart_backoff if time.monotonic() - started > 60 else delay
            log.error("mbatchd exited with status %s; restarting in %.1f s", code, delay)
            await sleep_or_stop(stop, delay)
            delay = min(delay * 2, lc.restart_backoff_max)

    async def stop_mbatchd(self):
        proc = self.mbatchd
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()

    async def serve(self, stop):
        loop = asyncio.get_running_loop()
        os.makedirs(self.conf.paths.spool_dir, exist_ok=True)
        path = os.path.join(self.conf.paths.spool_dir, "lim.sock")
        if os.path.exists(path):
            os.unlink(path)
        server = await loop.create_unix_server(lambda: Peer(self.on_frame), path)
        os.chmod(path, 0o600)
        metrics = await self.exporter.serve(self.conf.cluster.listen, self.conf.lim.metrics_port)
        write_pid(os.path.join(self.conf.paths.spool_dir, f"lim-{self.host}.pid"))
        log.info("lim on %s (%s)", self.host, self.rank)
        tasks = [asyncio.create_task(self.collect(stop))]
        if self.master and self.conf.lim.supervise_mbatchd:
            tasks.append(asyncio.create_task(self.supervise(stop)))
        await stop.wait()
        server.close()
        if metrics is not None:
            metrics.close()
        await self.stop_mbatchd()
        for t in tasks:
            t.cancel()
        log.info("lim stopped")


def main(argv):
    return daemon.main("lim", argv, Lim, (KeyFileError,))
