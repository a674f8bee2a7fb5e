"""LIM, on every node: collects the node's load; on the master node it also starts mbatchd and
restarts it with backoff when it dies (LIM, not sbatchd, owns mbatchd's lifecycle).

mbatchd reads the load over LIM's Unix socket (`<spool_dir>/lim.sock`). Heartbeats between
LIMs and the election of the master among the candidates build on this (issue 5); until then
the master is the first master candidate, or this node when none is configured.
"""
import argparse
import asyncio
import logging
import os
import random
import time

import psutil

from lavalite import auth, credential, daemon
from lavalite import protocol as P
from lavalite.auth import KeyFileError
from lavalite.daemon import sleep_or_stop, write_pid
from lavalite.entry import self_command
from lavalite.peer import Peer

log = logging.getLogger("lavalite.lim")


class Lim:
    def __init__(self, conf, host):
        self.conf = conf
        self.host = host
        self.key = auth.load_key(conf.cluster.key_file)
        self.load = {"alive": True, "time": time.time()}
        self.mbatchd = None        # the supervised process
        candidates = conf.cluster.master_candidates
        self.master = not candidates or candidates[0] == host

    def sample(self):
        mem = psutil.virtual_memory()
        self.load = {"alive": True, "time": time.time(),
                     "cpu": psutil.cpu_percent(interval=None) / 100.0,
                     "loadavg": os.getloadavg(), "ncpu": os.cpu_count(),
                     "mem_total": mem.total, "mem_avail": mem.available,
                     "labels": self.conf.lim.labels.get(self.host, [])}

    def on_frame(self, peer, msg):
        if peer.identity is None and msg.get("op") == "sign":
            peer.send(P.reply(msg.get("id"), hello=credential.sign(self.key, self.host, peer)))
            peer.close()
        elif peer.identity is None:
            peer.identity = auth.verify_hello(self.key, msg)
            peer.send(P.reply(msg.get("id"), proof=auth.server_proof(self.key, msg["nonce"])))
        elif msg.get("op") == "load":
            peer.send(P.reply(msg.get("id"), hosts={self.host: self.load},
                              master=self.host if self.master else None))
        else:
            raise P.ProtocolError(P.UNKNOWN_OP, f"unknown op {msg.get('op')!r}")

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
        os.chmod(path, 0o666)          # every local user may ask for a credential (`sign`)
        write_pid(os.path.join(self.conf.paths.spool_dir, f"lim-{self.host}.pid"))
        log.info("lim on %s (%s)", self.host, "master" if self.master else "not master")
        tasks = [asyncio.create_task(self.collect(stop))]
        if self.master:
            tasks.append(asyncio.create_task(self.supervise(stop)))
        await stop.wait()
        server.close()
        await self.stop_mbatchd()
        for t in tasks:
            t.cancel()
        log.info("lim stopped")


def main(argv):
    ap = argparse.ArgumentParser(prog="lavalite --role lim")
    ap.add_argument("--conf")
    ap.add_argument("--host")
    args = ap.parse_args(argv)
    conf, host = daemon.setup("lim", args.conf, args.host)
    try:
        lim = Lim(conf, host)
    except KeyFileError as exc:
        daemon.log.error("lim cannot start: %s", exc)
        return 2
    daemon.run(lim.serve)
    return 0
