"""mbatchd's imperative shell: sockets, the store, timers, the loop turn.

Frames change the core's memory as they arrive, except sbatchd's reports: they wait in an inbox
and each turn applies a bounded number of them. One turn per loop iteration then schedules,
commits everything in one transaction, and only then releases replies, acknowledgements and
dispatches. Many submits arriving together cost one commit.
"""

import asyncio
import gc
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from lavalite import auth, config, daemon, fence, messages
from lavalite import protocol as P
from lavalite.config import Config
from lavalite.daemon import sleep_or_stop, write_pid
from lavalite.model import FINISHED, PEND, Job, label
from lavalite.peer import Peer, Strangers, hello
from lavalite.tls import DaemonTLS
from roles.mbatchd import admin_ops, usage
from roles.mbatchd.budget import TurnBudget
from roles.mbatchd.core import Core
from roles.mbatchd.history import History
from roles.mbatchd.inbox import Inbox
from roles.mbatchd.job_options import Notifier
from roles.mbatchd.observe import Observer
from store import Store, StoreFull

log = logging.getLogger("lavalite.mbatchd")

# An op's handler: (peer, request, now) -> the reply's fields, or None when it answers later
Handler = Callable[[Peer, Any, float], dict[str, Any] | None]

USER_OPS = (
    "submit",
    "submit_many",
    "jobs",
    "kill",
    "resume",
    "move",
    "requeue",
    "switch",
    "stop",
    "modify",
    "wait",
    "queues",
    "hosts",
    "ping",
    "stats",
    "peek",
    "launch",
    "history",
    "badmin",
    "users",
    "load",
    "quotas",
    "limit_usage",
)
SBATCHD_OPS = ("register", "report", "usage")
QUIET_OPS = ("usage",)  # change no state: no turn for them
# What each role that connects to mbatchd may ask; any peer may ping. A lim or mbatchd peer
# (it holds the key, but mbatchd has nothing to ask of it) may do nothing else.
ROLE_OPS = {"user": USER_OPS, "sbatchd": SBATCHD_OPS}
SUBMIT_OPS = ("submit", "submit_many")
# Thousands of sbatchds redial at once when mbatchd restarts: asyncio's default of 100 would
# drop their handshakes while a long turn runs (the kernel caps it at net.core.somaxconn).
BACKLOG = 4096
FREEZE_EVERY = 10.0  # seconds between gc.freeze() calls (see turn)
# job control answered at once: refused while the disk is full, as the change could not be kept
CONTROL_OPS = frozenset(("kill", "resume", "move", "requeue", "switch", "stop", "modify"))
FULL_RETRY = 2.0  # seconds between commits tried while the store's disk is full
SPACE_EVERY = 5.0  # seconds between two looks at the store's free space


class Mbatchd:
    def __init__(self, conf: Config, host: str, epoch: int = 0) -> None:
        self.conf = conf
        self.host = host
        self.epoch = epoch  # fencing token from the master LIM, on every order we send
        self.parent = os.getppid()
        self.keys = auth.KeyFile(conf.cluster.key_file)
        self.tls = DaemonTLS(conf)
        self.seen = auth.ReplayCache()  # the nonces of recent hellos: each is good once
        self.store = Store(conf.mbatchd.database, exclusive=conf.mbatchd.store_lock == "exclusive")
        now = time.time()
        state = self.store.load(now - conf.mbatchd.clean_period)
        state["badmin"] = admin_ops.load_state(conf.paths.state_dir)
        self.core = Core(conf, state, now)
        self.core.watch_loaded(self.store.job, self.store.array, now)
        self.core.sort_pending()
        self.store_queues(conf)
        self.observer = Observer(self.core, host, conf.mbatchd.metrics_port)
        log.info(
            "store %s: %d jobs in memory, next job id %d",
            conf.mbatchd.database,
            len(self.core.jobs),
            self.core.next_id,
        )
        # (peer, message) to send once the turn has committed
        self.held: list[tuple[Peer, dict[str, Any]]] = []
        # (peer, reply) of the turn's submits: refused if it fails
        self.submits: list[tuple[Peer, dict[str, Any]]] = []
        self.full: str | None = None  # "disk full on DIR" while the turn's changes wait
        self.space_at = 0.0  # when to look at the free space again
        self.sbatchd: dict[str, Peer] = {}  # host -> Peer of its registered sbatchd
        self.inbox = Inbox()  # report frames not yet applied
        self.budget = TurnBudget()  # slots to place and reports to apply per turn
        self.turn_pending = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0  # when self.timer fires (time.time())
        # Seconds of the last 100,000 turns, whole (apply reports, schedule, commit, send) and
        # of schedule() alone, for the stats op (lavalite simulate).
        self.turn_times: deque[float] = deque(maxlen=100_000)
        self.sched_times: deque[float] = deque(maxlen=100_000)
        self.frozen_at = 0.0
        self.notifier = Notifier()  # bsub -B and -N
        self.history = History(self.store, conf)  # bhist, bacct, history_days
        self.ops: dict[str, Handler] = {
            "submit": self.op_submit,
            "jobs": self.op_jobs,
            "kill": self.op_kill,
            "resume": lambda p, m, n: self.core.resume(p.identity, m, n),
            "move": lambda p, m, n: self.core.move(p.identity, m, n),  # btop, bbot
            "requeue": lambda p, m, n: self.core.requeue(p.identity, m, n, self.store.env),
            "switch": lambda p, m, n: self.core.switch(p.identity, m, n),  # bswitch
            "stop": lambda p, m, n: self.core.stop(p.identity, m, n),  # bstop
            "modify": lambda p, m, n: self.core.modify(p.identity, m, n),  # bmod
            "submit_many": lambda p, m, n: self.core.submit_many(
                p.identity, m, n, self.store.env_id
            ),
            "wait": lambda p, m, n: self.core.wait(p.identity, m, (p, m.get("id")), self.store.job),
            "queues": lambda p, m, n: self.core.query_queues(),
            "hosts": lambda p, m, n: self.core.query_hosts(),
            "ping": lambda p, m, n: {"host": self.host, "pid": os.getpid()},
            "stats": lambda p, m, n: self.stats(),
            "register": self.op_register,
            "report": self.op_report,
            "usage": lambda p, m, n: usage.apply(
                self.core.jobs, p.identity["host"], P.require(m, "jobs", list), n
            ),
            "peek": self.op_peek,
            "launch": self.op_launch,
            "history": self.history.op_history,
            "badmin": self.op_badmin,
            "users": lambda p, m, n: self.core.query_users(m.get("users")),
            "load": lambda p, m, n: {"hosts": self.lim_view},
            "quotas": lambda p, m, n: self.core.query_quotas(n),  # bquota
            "limit_usage": lambda p, m, n: self.core.query_limits(),  # blimits
        }
        self.stop: asyncio.Event | None = None  # serve's: badmin mbdrestart sets it
        self.started_at = now
        # the master LIM's last view of every host it hears, for lsload and lshosts
        self.lim_view: dict[str, dict[str, Any]] = {}
        self.reconfig_at: float | None = None

    # --- frames

    def on_frame(self, peer: Peer, msg: dict[str, Any]) -> None:
        if peer.identity is None:
            self.tls.check_hello(peer.transport, msg)
            peer.send(peer.login(self.keys.ring(), msg, "mbatchd", self.seen))
            return
        op = msg["op"]  # Peer.take hands on only frames with an op
        handler = self.ops.get(op)
        if handler is None:
            raise P.ProtocolError(P.UNKNOWN_OP, f"unknown op {op!r}")
        role = peer.identity["role"]
        if op not in ROLE_OPS.get(role, ()) and op != "ping":
            raise P.ProtocolError(P.DENIED, f"op {op!r} is not for role {role}")
        if op in CONTROL_OPS and self.full:  # a user's answer would precede the commit
            raise P.ProtocolError(P.UNAVAILABLE, f"{self.full}: {op} again once space is freed")
        result = handler(peer, msg, time.time())
        if result is not None:
            held = self.submits if op in SUBMIT_OPS else self.held
            held.append((peer, P.reply(msg.get("id"), **result)))
        if op not in QUIET_OPS:
            self.request_turn()

    def on_close(self, peer: Peer) -> None:
        ident = peer.identity or {}
        if ident.get("role") == "sbatchd" and self.sbatchd.get(ident["host"]) is peer:
            del self.sbatchd[ident["host"]]
            old = self.core.hosts[ident["host"]].status
            self.core.host_gone(ident["host"], time.time())
            self.observer.host_changed(ident["host"], old, "sbatchd disconnected")
            self.request_turn()

    def op_submit(self, peer: Peer, msg: messages.Submit, now: float) -> dict[str, Any]:
        return self.core.submit(peer.identity, msg, now, self.store.env_id)

    def op_jobs(self, peer: Peer, msg: messages.Jobs, now: float) -> dict[str, Any]:
        return self.core.query_jobs(peer.identity, msg, now, self.store.job)

    def op_kill(self, peer: Peer, msg: messages.Kill, now: float) -> dict[str, Any]:
        return self.core.kill(peer.identity, msg, now)

    def op_peek(self, peer: Peer, msg: messages.Peek, now: float) -> None:
        """Relay to the sbatchd that runs the job; its answer goes back as it arrives (it
        changes no state, so it does not wait for a turn)."""
        job = self.core.peek_target(peer.identity, msg.get("job"))
        order = {"offsets": msg.get("offsets"), "wait": msg.get("wait")}
        self._ask_worker(peer, msg, job, job.host, "peek", order)

    def op_launch(self, peer: Peer, msg: messages.Launch, now: float) -> None:
        """blaunch: the task goes to the sbatchd of the host it names, which answers once it
        has started the task's relay (or says why not)."""
        job, task = self.core.launch_task(peer.identity, msg)
        self._ask_worker(peer, msg, job, msg["host"], "launch", {"task": task})

    def _ask_worker(
        self, peer: Peer, msg: Any, job: Job, host: str | None, op: str, order: dict[str, Any]
    ) -> None:
        """Send `op` about the job's attempt to `host`'s sbatchd; its answer goes back to
        `peer` as the reply to `msg`."""
        worker = self.sbatchd.get(host or "")
        if worker is None:
            raise P.ProtocolError(
                P.UNAVAILABLE, f"Job <{label(job.id)}>: its host {host} is not connected"
            )
        fut = worker.request_msg(
            self._order({"op": op, "job": job.id, "attempt": job.attempt, **order})
        )

        def relay(fut):
            if fut.exception() is not None:
                answer = P.error(
                    msg.get("id"),
                    P.UNAVAILABLE,
                    f"Job <{label(job.id)}>: lost the connection to {host}",
                )
            else:
                answer = {**fut.result(), "id": msg.get("id")}
            peer.send(answer)

        fut.add_done_callback(relay)

    def op_badmin(self, peer: Peer, msg: messages.Badmin, now: float) -> dict[str, Any] | None:
        """badmin: host and queue control (answered once the turn has stored the hosts'
        status), reconfig (a SIGHUP's reload, its error answered), mbdrestart (answered, then
        mbatchd stops; the master LIM starts it again) and showstatus."""
        action = P.require(msg, "action", str)
        self.core.require_admin(peer.identity, f"badmin {action}")
        # the record of who did what, as LSF's lsb.events keeps it
        log.info(
            "badmin %s %s by %s%s",
            action,
            " ".join(map(str, msg.get("names") or [])),
            peer.identity["user"],
            f": {msg['comment']}" if msg.get("comment") else "",
        )
        if action in ("reconfig", "mbdrestart"):
            error = self.config_error()
            if error is not None:  # the running configuration stays, and so does mbatchd
                return {"error": error}
        if action == "reconfig":
            self.reload()
            return {"error": None}
        if action == "mbdrestart":
            peer.send(P.reply(msg.get("id"), error=None, supervised=bool(self.epoch)))
            if self.stop is not None:
                self.stop.set()
            return None
        if action == "showstatus":
            return self.showstatus()
        result = self.core.badmin_control(peer.identity, msg, now)
        try:
            admin_ops.save_state(self.conf.paths.state_dir, self.core.admin_state)
        except OSError as exc:  # done in memory; the admin must know it is not kept
            log.error("badmin %s: %s", action, exc)
            raise P.ProtocolError(
                P.UNAVAILABLE, f"{exc}: done, but only until mbatchd restarts"
            ) from None
        return result

    def config_error(self) -> str | None:
        """badmin reconfig and mbdrestart check the configuration first: what is wrong with
        it is the admin's answer, and nothing changes."""
        try:
            config.load(self.conf.path)
        except config.ConfigError as exc:
            return str(exc)
        return None

    def showstatus(self) -> dict[str, Any]:
        """badmin showstatus: hosts by status, slots, jobs by state, users."""
        core = self.core
        hosts: dict[str, int] = {}
        for h in core.hosts.values():
            hosts[h.status] = hosts.get(h.status, 0) + 1
        jobs: dict[str, int] = {}
        for j in core.jobs.values():
            jobs[j.state] = jobs.get(j.state, 0) + 1
        jobs[PEND] = jobs.get(PEND, 0) + sum(a.remaining for a in core.arrays.values())
        return {
            "hosts": hosts,
            "slots": sum(h.slots for h in core.hosts.values()),
            "free": core.total_free,
            "jobs": jobs,
            "users": len(core.users),
            "active_users": len({j.user for j in core.jobs.values() if j.state not in FINISHED}),
            "started": self.started_at,
            "reconfigured": self.reconfig_at,
            "pid": os.getpid(),
            "host": self.host,
        }

    def op_register(self, peer: Peer, msg: messages.Register, now: float) -> None:
        host = peer.identity["host"]
        old = self.sbatchd.get(host)
        if old is not None and old is not peer:
            old.close()
        self.sbatchd[host] = peer
        was = getattr(self.core.hosts.get(host), "status", None)
        acks = self.core.host_register(host, msg, now)
        self.observer.host_changed(host, was, f"sbatchd registered, {msg.get('slots')} slots")
        self.held.append((peer, self._order({"op": "ack", "rids": acks})))

    def op_report(self, peer: Peer, msg: messages.Report, now: float) -> None:
        """Applied by a turn (apply_reports). A register applied before reports still waiting
        from the same host's previous connection is safe: they are unacknowledged, so its
        register carries them again, and applied twice a report changes nothing."""
        self.inbox.put(peer, msg, P.require(msg, "reports", list))

    def apply_reports(self, now: float) -> int:
        """The oldest waiting reports, up to the turn's budget; acknowledged after this turn's
        commit. A closed connection's reports still count: they are what happened. Returns
        how many it applied."""
        applied = 0
        for peer, msg, reports in self.inbox.take(self.budget.reports):
            applied += len(reports)
            acks = peer.guarded(msg, self.core.reports, peer.identity["host"], reports, now)
            if acks is not None:
                self.held.append((peer, self._order({"op": "ack", "rids": acks})))
        return applied

    def _order(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A message to sbatchd, stamped with our epoch so a deposed mbatchd is refused."""
        return {"v": P.VERSION, "id": None, "epoch": self.epoch, **msg}

    # --- the turn

    def request_turn(self) -> None:
        if not self.turn_pending:
            self.turn_pending = True
            asyncio.get_running_loop().call_soon(self.turn)

    def stats(self) -> dict[str, Any]:
        """Scheduling turn durations (the last 100,000 turns) and what memory holds."""
        out = {}
        for name, times in (("turn", self.turn_times), ("sched", self.sched_times)):
            ordered = sorted(times) or [0.0]
            for p in (50, 99):
                out[f"{name}_p{p}"] = ordered[min(len(ordered) - 1, len(ordered) * p // 100)]
            out[f"{name}_max"] = ordered[-1]
        return {
            "turns": len(self.turn_times),
            **out,
            "reports_waiting": self.inbox.waiting,
            "budget_places": self.budget.places,
            "jobs_in_memory": len(self.core.jobs),
            "arrays_in_memory": len(self.core.arrays),
            "pending": sum(self.core.npend.values())
            + sum(a.remaining for a in self.core.arrays.values()),
            "running": sum(q.running for q in self.core.queues.values()),
        }

    def turn(self) -> None:
        self.turn_pending = False
        core = self.core
        started = time.perf_counter()
        now = time.time()
        core.tick(now)
        work = 0
        if self.full is None:  # else memory runs no further ahead of the store
            work = self.apply_reports(now)
            if core.wake:
                t0 = time.perf_counter()
                work += core.schedule(now, self.budget.places)
                self.sched_times.append(time.perf_counter() - t0)
        if now >= self.space_at:
            self.space_at = now + SPACE_EVERY
            self.observer.disk_space(
                self.store.dir, self.store.free_bytes(), self.conf.mbatchd.disk_warn_free
            )
        if not self._commit():
            self._answer_users()
            self._arm_timer()
            return
        out, held = core.new_turn(), self.submits + self.held
        for (peer, req_id), result in out.woken:  # bwait requests whose job ended
            held.append(
                (
                    peer,
                    P.error(req_id, result.code, result.message)
                    if isinstance(result, P.ProtocolError)
                    else P.reply(req_id, **result),
                )
            )
        self.held, self.submits = [], []
        # One write per connection: a host's acknowledgement and its dispatch go together.
        sends = _by_peer(held)
        for host, msgs in out.outbox.items():
            peer = self.sbatchd.get(host)
            if peer is not None:  # an absent host gets them again when it registers
                sends.setdefault(peer, []).extend(map(self._order, msgs))
        for peer, msgs in sends.items():
            peer.send_all(msgs)
        if out.notices:
            self.notifier.send(self.conf.mbatchd.notify_command, out.notices)
        self._arm_timer()
        if core.wake or self.inbox:  # the budget ran out: go on after the loop's next poll
            self.request_turn()
        if now - self.frozen_at > FREEZE_EVERY:
            # At scale the heap is a million long-lived jobs: a full cyclic-GC pass over it held
            # a turn for 0.5-1 s. Frozen objects are skipped by the collector (refcounting still
            # frees them); jobs, arrays and events form no reference cycles. Cost: a cycle alive
            # at a freeze and dead later (a closed connection's objects) is never collected.
            gc.freeze()
            self.frozen_at = now
        self.turn_times.append(time.perf_counter() - started)
        self.budget.turn(self.turn_times[-1], work)

    def _commit(self) -> bool:
        """Make the turn's changes durable. When that fails, the turn's new jobs are refused
        and the rest is written again; False when that cannot be written either (see
        _unstorable)."""
        try:
            self._write()
        except Exception as exc:
            if not self._refuse_submits(exc):  # nothing taken out: the same write would fail
                return self._unstorable(exc)
            try:
                self._write()
            except Exception as again:
                return self._unstorable(again)
        self._set_full(None)
        return True

    def _refuse_submits(self, exc: Exception) -> int:
        """The turn's new jobs leave memory (Core.refuse_created) and their submitters get
        the error instead of their ids. Returns how many jobs it refused."""
        why = (
            str(exc)
            if isinstance(exc, StoreFull)
            else f"cannot store this request: {type(exc).__name__}: {exc}"
        )
        refused = self.core.refuse_created(P.ProtocolError(P.UNAVAILABLE, why))
        if refused:
            log.error("%s; refused %d new jobs", why, refused)
            self.submits = [
                (peer, P.error(reply["id"], P.UNAVAILABLE, why)) for peer, reply in self.submits
            ]
        return refused

    def _unstorable(self, exc: Exception) -> bool:
        """What memory holds beyond the store cannot be written. On a full disk it waits in
        memory, written again by later turns and acknowledged and dispatched only then
        (False). Any other error: memory can no longer be trusted to match the store, so
        mbatchd exits and LIM restarts it from the store."""
        if isinstance(exc, StoreFull):
            self._set_full(str(exc))
            return False
        log.critical(
            "cannot store the turn even without its new jobs; exiting, so that LIM "
            "restarts mbatchd from the store",
            exc_info=exc,
        )
        logging.shutdown()
        os._exit(1)

    def _write(self) -> None:
        rows = self.core.out.rows()
        if rows is not None:
            self.store.commit(**rows)
            self.observer.events(rows["events"])

    def _set_full(self, full: str | None) -> None:
        if full == self.full:
            return
        if full:
            log.error(
                "%s: submits and kills are refused; job state changes wait in memory, "
                "written again every %g s",
                full,
                FULL_RETRY,
            )
        else:
            log.warning("store writable again on %s: scheduling resumes", self.store.dir)
        self.full = full

    def _answer_users(self) -> None:
        """After a turn that could not commit: answer the users now (queries, refused
        submits); what goes to sbatchd waits for a commit."""
        users = [(p, m) for p, m in self.held if p.identity["role"] == "user"]
        self.held = [(p, m) for p, m in self.held if p.identity["role"] != "user"]
        for peer, msgs in _by_peer(self.submits + users).items():
            peer.send_all(msgs)
        self.submits = []

    def _arm_timer(self):
        """Wake for the next backoff expiry, and at least every 10 s for housekeeping. A timer
        already set to fire no later is kept (an early wake costs one turn, which arms
        again): re-arming every turn cost more than the rest of a small turn's bookkeeping."""
        next_at = self.core.next_timer()
        now = time.time()
        wake = now + (10.0 if next_at is None else min(10.0, max(0.0, next_at - now)))
        if self.full:
            wake = min(wake, now + FULL_RETRY)
        if self.timer is not None:
            if self.timer_at <= wake:
                return
            self.timer.cancel()
        self.timer_at = wake
        self.timer = asyncio.get_running_loop().call_later(wake - now, self._on_timer)

    def _on_timer(self):
        self.timer = None
        self.request_turn()

    def store_queues(self, conf: Config) -> None:
        """Queues are kept for the record; memory has them from the configuration, so a
        full disk delays the record (to the next start or reload) and nothing else."""
        try:
            self.store.commit(queues=[(q.name, vars(q)) for q in conf.queue_order()])
        except StoreFull as exc:
            log.warning("%s: the queue definitions are not recorded", exc)

    def reload(self) -> None:
        """SIGHUP: new queues, limits and settings; jobs and connections are untouched."""
        conf = daemon.reread("mbatchd", self.host, self.conf)
        if conf is None:
            return
        self.conf = self.history.conf = conf
        self.core.reconfigure(conf)
        self.reconfig_at = time.time()
        self.store_queues(conf)
        log.info("queues now: %s", ", ".join(self.core.qconf))
        self.request_turn()

    # --- LIM's view of the hosts

    async def pull_load(self, stop: asyncio.Event) -> None:
        """Every heartbeat, take the local LIM's view of the hosts (over its Unix socket) and
        check that we are still the master's mbatchd."""
        path = os.path.join(self.conf.paths.spool_dir, "lim.sock")
        every = min(self.conf.lim.poll_interval, self.conf.lim.heartbeat_interval)
        while not self.fenced(stop):
            try:
                _, peer = await asyncio.get_running_loop().create_unix_connection(
                    lambda: Peer(lambda p, m: None), path
                )
                reply = await hello(peer, self.keys.ring(), "mbatchd", self.host, "lim", 5)
                while reply.get("ok") and not self.fenced(stop):
                    sent = time.monotonic()
                    reply = await asyncio.wait_for(peer.request("load"), 5)
                    if reply.get("ok"):
                        self.observer.lim_poll.observe((time.monotonic() - sent) * 1000)
                        self.host_view(reply.get("hosts") or {})
                    await sleep_or_stop(stop, every)
                peer.close()
            except (TimeoutError, OSError, ConnectionError):
                pass
            self.observer.lim_polls_failed += 1
            await sleep_or_stop(stop, every)

    def host_view(self, loads: dict[str, dict[str, Any]]) -> None:
        self.lim_view = loads
        for name in self.core.host_load(loads, time.time()):
            log.warning("host %s: LIM lost its heartbeats; dropping its sbatchd", name)
            self.sbatchd[name].close()
            self.on_close(self.sbatchd[name])
        if self.core.wake:  # -R jobs wait on the facts that just came
            self.request_turn()

    def fenced(self, stop: asyncio.Event) -> bool:
        """Stop (set `stop`) once a newer master exists or the LIM that started us is gone:
        a deposed mbatchd must not accept work."""
        if self.epoch and not stop.is_set():
            newer = fence.read(self.conf.paths.state_dir)
            if newer > self.epoch or os.getppid() != self.parent:
                log.error(
                    "fenced: epoch %d, store epoch %d, LIM %s; stopping",
                    self.epoch,
                    newer,
                    "alive" if os.getppid() == self.parent else "gone",
                )
                stop.set()
        return stop.is_set()

    async def serve(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        strangers = Strangers()
        server = await loop.create_server(
            lambda: Peer(self.on_frame, self.on_close, strangers),
            self.conf.cluster.listen,
            self.conf.mbatchd.port,
            reuse_address=True,
            backlog=BACKLOG,
            **self.tls.listen(users=True),
        )
        metrics = await self.observer.exporter.serve(self.conf.cluster.listen)
        write_pid(os.path.join(self.conf.paths.state_dir, "mbatchd.pid"))
        log.info("mbatchd listening on %s:%d", self.conf.cluster.listen, self.conf.mbatchd.port)
        self.request_turn()
        self.stop = stop
        loader = asyncio.create_task(self.pull_load(stop))
        pruner = asyncio.create_task(self.history.prune(stop))
        await stop.wait()
        server.close()
        if metrics is not None:
            metrics.close()
        loader.cancel()
        await pruner
        self.history.close()
        self.turn()  # commit what the last frames changed
        while self.inbox and not self.full:  # and every report that arrived before the stop
            self.turn()
        self.observer.flush()
        self.store.close()
        log.info("mbatchd stopped")


def _by_peer(held: list) -> dict:
    """(peer, message) pairs as {peer: [message]}: one write per connection."""
    sends: dict[Peer, list[dict]] = {}
    for peer, msg in held:
        sends.setdefault(peer, []).append(msg)
    return sends
