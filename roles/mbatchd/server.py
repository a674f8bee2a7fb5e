"""mbatchd's imperative shell: sockets, the store, timers, the loop turn.

Frames change the core's memory as they arrive; one turn per loop iteration then schedules,
commits everything in one transaction, and only then releases replies, acknowledgements and
dispatches. Many submits arriving together cost one commit.
"""
import asyncio
import gc
import logging
import os
import time
from collections import deque

from lavalite import auth
from lavalite import protocol as P
from lavalite.daemon import sleep_or_stop, write_pid
from lavalite.peer import Peer
from roles.mbatchd.core import Core
from store import Store

log = logging.getLogger("lavalite.mbatchd")

USER_OPS = ("submit", "submit_many", "jobs", "kill", "wait", "queues", "hosts", "ping", "stats")
SBATCHD_OPS = ("register", "report")
# Thousands of sbatchds redial at once when mbatchd restarts: asyncio's default of 100 would
# drop their handshakes while a long turn runs (the kernel caps it at net.core.somaxconn).
BACKLOG = 4096
FREEZE_EVERY = 10.0            # seconds between gc.freeze() calls (see turn)


class Mbatchd:
    def __init__(self, conf, host):
        self.conf = conf
        self.host = host
        self.key = auth.load_key(conf.cluster.key_file)
        self.store = Store(conf.mbatchd.database)
        now = time.time()
        state = self.store.load(now - conf.mbatchd.clean_period)
        self.core = Core(conf, state, now)
        self.core.sort_pending()
        self.store.commit(queues=[(q.name, vars(q)) for q in conf.queue_order()])
        log.info("store %s: %d jobs in memory, next job id %d", conf.mbatchd.database,
                 len(self.core.jobs), self.core.next_id)
        self.held = []                 # (peer, message) to send once the turn has committed
        self.sbatchd = {}              # host -> Peer of its registered sbatchd
        self.turn_pending = False
        self.timer = None
        # Seconds of the last 100,000 turns, whole (schedule, commit, send) and of schedule()
        # alone, for the stats op (lavalite simulate).
        self.turn_times = deque(maxlen=100_000)
        self.sched_times = deque(maxlen=100_000)
        self.frozen_at = 0.0
        self.ops = {"submit": self.op_submit, "jobs": self.op_jobs, "kill": self.op_kill,
                    "submit_many": lambda p, m, n: self.core.submit_many(p.identity, m, n,
                                                                         self.store.env_id),
                    "wait": lambda p, m, n: self.core.wait(p.identity, m, (p, m.get("id"))),
                    "queues": lambda p, m, n: self.core.query_queues(),
                    "hosts": lambda p, m, n: self.core.query_hosts(),
                    "ping": lambda p, m, n: {"host": self.host, "pid": os.getpid()},
                    "stats": lambda p, m, n: self.stats(),
                    "register": self.op_register, "report": self.op_report}

    # --- frames

    def on_frame(self, peer, msg):
        if peer.identity is None:
            peer.identity = auth.verify_hello(self.key, msg)
            peer.send(P.reply(msg.get("id"), proof=auth.server_proof(self.key, msg["nonce"])))
            return
        op = msg.get("op")
        handler = self.ops.get(op)
        if handler is None:
            raise P.ProtocolError(P.UNKNOWN_OP, f"unknown op {op!r}")
        role = peer.identity["role"]
        if (op in USER_OPS) != (role == "user") and op != "ping":
            raise P.ProtocolError(P.DENIED, f"op {op!r} is not for role {role}")
        try:
            result = handler(peer, msg, time.time())
        except P.ProtocolError:
            raise
        except Exception:
            log.exception("internal error handling %s", op)
            raise P.ProtocolError(P.INTERNAL, f"internal error handling {op!r}; see mbatchd log")
        if result is not None:
            self.held.append((peer, P.reply(msg.get("id"), **result)))
        self.request_turn()

    def on_close(self, peer):
        ident = peer.identity or {}
        if ident.get("role") == "sbatchd" and self.sbatchd.get(ident["host"]) is peer:
            del self.sbatchd[ident["host"]]
            self.core.host_gone(ident["host"], time.time())
            log.warning("host %s: sbatchd disconnected", ident["host"])
            self.request_turn()

    def op_submit(self, peer, msg, now):
        return self.core.submit(peer.identity, msg, now, self.store.env_id)

    def op_jobs(self, peer, msg, now):
        return self.core.query_jobs(peer.identity, msg, now, self.store.job)

    def op_kill(self, peer, msg, now):
        return self.core.kill(peer.identity, msg, now)

    def op_register(self, peer, msg, now):
        host = peer.identity["host"]
        old = self.sbatchd.get(host)
        if old is not None and old is not peer:
            old.close()
        self.sbatchd[host] = peer
        acks = self.core.host_register(host, msg, now)
        log.info("host %s: sbatchd registered, %s slots", host, msg.get("slots"))
        self.held.append((peer, {"v": P.VERSION, "op": "ack", "rids": acks}))

    def op_report(self, peer, msg, now):
        acks = self.core.reports(peer.identity["host"], P.require(msg, "reports", list), now)
        self.held.append((peer, {"v": P.VERSION, "op": "ack", "rids": acks}))

    # --- the turn

    def request_turn(self):
        if not self.turn_pending:
            self.turn_pending = True
            asyncio.get_running_loop().call_soon(self.turn)

    def stats(self):
        """Scheduling turn durations (the last 100,000 turns) and what memory holds."""
        out = {}
        for name, times in (("turn", self.turn_times), ("sched", self.sched_times)):
            times = sorted(times) or [0.0]
            for p in (50, 99):
                out[f"{name}_p{p}"] = times[min(len(times) - 1, len(times) * p // 100)]
            out[f"{name}_max"] = times[-1]
        return {"turns": len(self.turn_times), **out,
                "jobs_in_memory": len(self.core.jobs), "arrays_in_memory": len(self.core.arrays),
                "pending": sum(self.core.npend.values()) + sum(
                    a.remaining for a in self.core.arrays.values()),
                "running": sum(q.running for q in self.core.queues.values())}

    def turn(self):
        self.turn_pending = False
        core = self.core
        started = time.perf_counter()
        now = time.time()
        core.tick(now)
        if core.wake:
            t0 = time.perf_counter()
            core.schedule(now)
            self.sched_times.append(time.perf_counter() - t0)
        if (core.dirty_jobs or core.events or core.dirty_hosts or core.new_envs or core.new_users
                or core.dirty_arrays):
            self.store.commit(jobs=core.dirty_jobs.values(), events=core.events,
                              hosts=core.dirty_hosts.values(), envs=core.new_envs,
                              users=core.new_users, arrays=core.dirty_arrays.values())
            for ev in core.events if log.isEnabledFor(logging.INFO) else ():
                log.info("job %s: %s -> %s%s%s", ev.job_id, ev.old or "-", ev.new,
                         f" host={ev.host}" if ev.host else "", f" ({ev.reason})" if ev.reason else "")
        outbox, held = core.outbox, self.held
        for (peer, req_id), result in core.woken:       # bwait requests whose job ended
            held.append((peer, P.error(req_id, result.code, result.message)
                         if isinstance(result, P.ProtocolError) else P.reply(req_id, **result)))
        core.new_turn()
        self.held = []
        for peer, msg in held:
            peer.send(msg)
        for host, msgs in outbox.items():
            peer = self.sbatchd.get(host)
            if peer is not None:       # an absent host gets them again when it registers
                for msg in msgs:
                    peer.send({"v": P.VERSION, "id": None, **msg})
        self._arm_timer()
        if core.wake:                  # the pass stopped at its limit: go on after this turn
            self.request_turn()
        if now - self.frozen_at > FREEZE_EVERY:
            # At scale the heap is a million long-lived jobs: a full cyclic-GC pass over it held
            # a turn for 0.5-1 s. Frozen objects are skipped by the collector (refcounting still
            # frees them); jobs, arrays and events form no reference cycles. Cost: a cycle alive
            # at a freeze and dead later (a closed connection's objects) is never collected.
            gc.freeze()
            self.frozen_at = now
        self.turn_times.append(time.perf_counter() - started)

    def _arm_timer(self):
        """Wake for the next backoff expiry, and at least every 10 s for housekeeping."""
        next_at = self.core.next_timer()
        delay = 10.0 if next_at is None else min(10.0, max(0.0, next_at - time.time()))
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self):
        self.timer = None
        self.request_turn()

    # --- LIM's view of the hosts

    async def pull_load(self, stop):
        """Ask the local LIM for host loads every poll interval (over its Unix socket)."""
        path = os.path.join(self.conf.paths.spool_dir, "lim.sock")
        while not stop.is_set():
            try:
                _, peer = await asyncio.get_running_loop().create_unix_connection(
                    lambda: Peer(lambda p, m: None), path)
                reply = await asyncio.wait_for(peer.request_msg(
                    auth.hello(self.key, "mbatchd", self.host)), 5)
                while reply.get("ok") and not stop.is_set():
                    reply = await asyncio.wait_for(peer.request("load"), 5)
                    if reply.get("ok"):
                        self.core.host_load(reply.get("hosts") or {})
                    await sleep_or_stop(stop, self.conf.lim.poll_interval)
                peer.close()
            except (OSError, ConnectionError, asyncio.TimeoutError):
                pass
            await sleep_or_stop(stop, self.conf.lim.poll_interval)

    async def serve(self, stop):
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Peer(self.on_frame, self.on_close),
                                          self.conf.cluster.listen, self.conf.mbatchd.port,
                                          reuse_address=True, backlog=BACKLOG)
        write_pid(os.path.join(self.conf.paths.state_dir, "mbatchd.pid"))
        log.info("mbatchd listening on %s:%d", self.conf.cluster.listen, self.conf.mbatchd.port)
        self.request_turn()
        loader = asyncio.create_task(self.pull_load(stop))
        await stop.wait()
        server.close()
        loader.cancel()
        self.turn()                    # commit what the last frames changed
        self.store.close()
        log.info("mbatchd stopped")

