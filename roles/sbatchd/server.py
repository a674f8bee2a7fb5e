"""sbatchd: runs the jobs mbatchd dispatches here, enforces their wall clock, reports START
and EXIT, and keeps every report until mbatchd acknowledges it.

Each attempt gets a record `<work_dir>/<job>.<attempt>` (roles/sbatchd/record.py) and a TMPDIR
`<tmp_dir>/lavalite.<job>.<attempt>.<random>`.
A record that exists is an attempt this node has started: that is what makes a repeated
dispatch harmless and what a restarted sbatchd adopts. The jobs themselves are started and
waited for by the shepherd process (roles/sbatchd/shepherd.py). What happens to an attempt is
decided by the core (roles/sbatchd/core.py); this is its shell: it hands each event to the
core and carries out the effects the core returns (`run`), so its cost per job stays small.
"""

import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import stat
import time
from collections.abc import Callable
from typing import Any, cast

from lavalite import auth, daemon, fence, jobscript, messages, private
from lavalite import log as log_setup
from lavalite import protocol as P
from lavalite.config import Config
from lavalite.daemon import sleep_or_stop, write_pid
from lavalite.files import write_whole
from lavalite.hosts import mbatchd_endpoints
from lavalite.metrics import Exporter, counter, gauge
from lavalite.peer import Peer, hello
from lavalite.tls import DaemonTLS
from roles.sbatchd import (
    cgroups,
    freeze,
    hostfile,
    jobfiles,
    peek,
    prepost,
    record,
    relay_job,
    shepherd,
    usage,
)
from roles.sbatchd.core import (
    Ack,
    Arm,
    Attempt,
    Clean,
    Core,
    Effect,
    Finish,
    Reap,
    RecordKill,
    Report,
    Resume,
    SaveEpoch,
    SetLimits,
    Signal,
    StaleEpoch,
    Start,
    Suspend,
    Watch,
)
from roles.sbatchd.journal import Journal
from roles.sbatchd.link import ShepherdLink
from roles.sbatchd.tasks import Tasks

log = logging.getLogger("lavalite.sbatchd")
LEGACY_SLICE = "lavalite"  # the cgroup slice every cluster shared before it was derived per cluster
# seconds a stopping sbatchd waits for its idle shepherds (a cleaner retries a busy group 5 s)
SHEPHERD_EXIT = 10.0
POLL_ADOPTED = 0.25  # seconds between looks at the locks of adopted attempts
JOBS_PER_SHEPHERD = 200  # at most, on average: more slots than that start more shepherds
# For this long after losing mbatchd (or starting), retry at least about this often: a
# crashed mbatchd is back within seconds (LIM restarts it) and every second away stalls the
# host's jobs; jitter spreads the hosts' attempts. Past it, back off up to reconnect_max.
RECONNECT_FAST = (60.0, 0.5)


class Sbatchd:
    def __init__(self, conf: Config, host: str) -> None:
        self.conf = conf
        self.host = host
        self.keys = auth.KeyFile(conf.cluster.key_file)
        self.tls = DaemonTLS(conf)
        # the newest master epoch seen, kept across restarts: older orders are refused
        self.epoch_file = os.path.join(conf.paths.spool_dir, f"epoch-{host}")
        self.work = conf.sbatchd.work_dir
        private.make_dir(conf.paths.spool_dir, traversable=True)  # LIM's lim.sock is for all
        os.makedirs(self.work, exist_ok=True)
        _check_owned(self.work)
        # what a restart adopts, reports and cleans there must be this cluster's own
        daemon.claim(conf.paths.spool_dir, "[paths] spool_dir", conf.paths.state_dir)
        daemon.claim(self.work, "[sbatchd] work_dir", conf.paths.state_dir)
        self.slice = conf.sbatchd.cgroup_slice
        self.cg = cgroups.choose(conf.sbatchd.cgroups, self.slice)
        # the pids of the shepherds this sbatchd started: whose cgroups are its own to clean
        self.made = os.path.join(conf.paths.spool_dir, f"shepherds-{host}")
        # (job, attempt) -> (outputs, open files): ended lately
        self.recent: dict[tuple[int, int], tuple[list, list | None]] = {}
        self.tasks = Tasks(self)  # blaunch's tasks of the jobs running here
        self.journal = Journal(os.path.join(conf.paths.spool_dir, f"reports-{host}.log"))
        self.core = Core(self.work, fence.read_file(self.epoch_file))
        self.peer: Peer | None = None  # the registered connection to mbatchd
        self.outgoing: list = []  # the turn's reports (the core's JobReport dicts)
        self.flushed = 0.0  # loop time of the last _flush
        self.loop: asyncio.AbstractEventLoop  # the running loop, from serve
        self.links: dict[int, ShepherdLink] = {}  # pid -> ShepherdLink: the shepherd processes
        self.cleaning: list[str] = []  # attempt records to remove, sent by _flush
        # the timer that looks at adopted attempts' locks
        self.polling: asyncio.TimerHandle | None = None
        self.carry: dict[type, Callable[[Any], None]] = {
            SaveEpoch: self._save_epoch,
            Report: self._report,
            Arm: self._arm,
            RecordKill: self._record_kill,
            Signal: self._signal_job,
            Reap: self._reap,
            Suspend: self._suspend,
            Resume: self._resume,
            Finish: self._finish,
            Clean: self._clean_later,
            Watch: self._watch,
            Ack: self._ack,
            SetLimits: self._set_limits,
        }
        self.exporter = Exporter(self.families, self.status, conf.sbatchd.metrics_port)

    # --- the core's effects

    def run(self, effects: list[Effect]) -> None:
        """Carry out the core's effects in order; the attempts to start are ordered together,
        one frame per shepherd."""
        batch: list = []
        carry = self.carry
        for effect in effects:
            if type(effect) is Start:
                self._prepare(effect.att, effect.env, batch)
            else:
                carry[type(effect)](effect)
        if batch:
            self._order(batch)

    def _save_epoch(self, effect: SaveEpoch) -> None:
        fence.remember(self.epoch_file, effect.epoch)

    def _report(self, effect: Report) -> None:
        """Journaled and sent by `_flush`: at the end of this turn, or while reports stream in,
        P.GATHER after the last frame, so mbatchd gets one frame (one turn) for all of them."""
        self.journal.add(effect.report)
        if not self.outgoing:
            self.loop.call_at(max(self.loop.time(), self.flushed + P.GATHER), self._flush)
        self.outgoing.append(effect.report)

    def _ack(self, effect: Ack) -> None:
        self.journal.ack(effect.rids)

    def _clean_later(self, effect: Clean) -> None:
        self.cleaning.append(effect.path)  # by _flush, once the journal holds the report

    def _flush(self):
        """Journal, send, then clean the attempt records whose reports the journal holds."""
        self.flushed = self.loop.time()
        self.journal.flush()
        if self.peer is not None and self.outgoing:
            self.peer.send(messages.report(self.outgoing))
        self.outgoing = []
        if self.cleaning:
            self._clean()

    # --- frames from mbatchd

    def on_frame(self, peer: Peer, msg: dict[str, Any]) -> None:
        epoch = msg.get("epoch") or 0
        try:
            self.run(self.core.fence(epoch))
        except StaleEpoch as exc:
            log.error(
                "refused an order of epoch %d (seen %d): a deposed mbatchd", epoch, self.core.epoch
            )
            raise P.ProtocolError(P.STALE_EPOCH, str(exc), fatal=True) from None
        op = msg.get("op")
        if op == "dispatch":
            self.run(self.core.dispatch(P.require(msg, "jobs", list), msg.get("envs") or {}))
        elif op == "kill":
            self.run(self.core.kill(msg.get("job"), msg.get("attempt")))
            self.tasks.end_part(msg.get("job"), msg.get("attempt"))  # the job's part here, if any
        elif op == "signal":  # bkill -s
            self._deliver(cast(messages.SignalOrder, msg))
        elif op == "suspend" or op == "resume":  # bstop, bresume
            self._pause_order(op, cast(messages.SuspendOrder, msg))
        elif op == "ack":
            self.run(self.core.ack(P.require(msg, "rids", list)))
        elif op == "limits":  # bmod -W, -M of a running job
            job, attempt = msg.get("job"), msg.get("attempt")
            walltime, memory = msg.get("walltime"), msg.get("memory")
            self.run(self.core.limits(job, attempt, walltime, memory, time.time()))
        elif op == "peek":
            peek.serve(self, peer, cast(messages.PeekOrder, msg))
        elif op == "launch":  # blaunch
            peer.send(P.reply(msg.get("id"), **self.tasks.launch(msg)))
        else:
            raise P.ProtocolError(P.UNKNOWN_OP, f"unknown op {op!r}")

    # --- running jobs

    def _prepare(self, att: Attempt, env: dict, batch: list) -> None:
        """Make the attempt's record; its order joins `batch`, sent to the shepherd by
        `_order`."""
        job, attempt, now = att.job, att.attempt, time.time()
        try:
            account, pw = shepherd.account_for(att.spec, self.conf.cluster.allow_root_jobs)
        except ValueError as exc:
            log.warning("job %s.%s cannot run here: %s", job, attempt, exc)
            self.run(self.core.cannot_run(att, str(exc), now))
            return
        try:
            # the mark that this node started the attempt, locked until the shepherd has it
            lock = record.create(att.path)
        except FileExistsError:
            self.run(self.core.duplicate(att))  # started here already (before a restart)
            return
        except OSError as exc:  # work_dir full or gone: lost here, mbatchd retries it
            log.error("job %s.%s not started: its record: %s", job, attempt, exc)
            self.run(self.core.not_started(att, str(exc), now))
            return
        try:
            batch.append(self._order_for(att, env, lock, account, pw))
        except Exception as exc:  # no shepherd could be started, say: it is lost
            log.exception("job %s.%s not started", job, attempt)
            os.close(lock)
            self.run(self.core.not_started(att, str(exc), now))

    def _order_for(self, att, env, lock, account, pw):
        """The attempt's order to its shepherd, once its record names the shepherd."""
        job, attempt, spec = att.job, att.attempt, att.spec
        cwd, outbase, made = jobfiles.places(spec, pw.pw_name)
        outputs = self._outputs(spec, outbase)
        # unguessable, so no other user can take the name first in a shared /tmp
        tmpdir = os.path.join(
            self.conf.sbatchd.tmp_dir, f"lavalite.{job}.{attempt}.{os.urandom(4).hex()}"
        )
        env = self._env(spec, env, tmpdir, pw)
        jobfiles.job_variables(env, spec, outputs, tmpdir, outbase)
        hosts_file = None
        if int(env["LSB_DJOB_NUMPROC"]) > 1:  # a parallel job: its slots, one per line
            hosts_file = env["LSB_DJOB_HOSTFILE"] = tmpdir + ".hosts"
            hostfile.write(hosts_file, spec["hosts"])
        link = self._shepherd()
        att.group = self.cg.group(link.group_name())  # one it kept: taken once it will be used
        argv, extra = jobfiles.prepare(spec, jobscript.argv_of(spec["cmd"]), tmpdir, cwd)
        order = {
            "job": job,
            "attempt": attempt,
            "record": att.path,
            "argv": relay_job.wrapped(spec, prepost.wrapped(argv, spec), env),
            "env": env,
            "cwd": cwd,
            "outputs": outputs,
            "account": [account.name, account.uid, account.gid, account.switch],
            # CPUs: the job's slots on this host (a wide job has the rest on its others)
            "limits": [spec.get("memory"), spec.get("pids"), spec["hosts"][0][1]],
            "cgroup": att.group and att.group.name,
            **extra,
        }
        if "pre_exec" in spec:  # where the wrapper says that it failed
            order["pre_marker"] = os.path.join(tmpdir, prepost.PRE_FAILED)
        if made or "attempts" in spec or "report" in spec:
            order.update(self._output_modes(spec, made, pw, cwd))
        att.spec = {
            **spec,
            "started": time.time(),
            "outputs": outputs,
            "tmpdir": tmpdir,
            "cgroup": order["cgroup"],
            "slice": self.slice,
            "hostfile": hosts_file,
        }
        # locked before the order leaves and held by the shepherd after: never a moment when
        # a restarted sbatchd could take a started attempt for a dead one
        record.append(lock, shepherd=link.pid, spec=att.spec)
        link.attempts += 1
        att.shepherd = link.pid
        return link, att, lock, order

    def _order(self, batch: list) -> None:
        """One frame per shepherd for the attempts of a dispatch."""
        per_link: dict[ShepherdLink, list[tuple[Attempt, int, dict]]] = {}
        for link, att, lock, order in batch:
            per_link.setdefault(link, []).append((att, lock, order))
        for link, items in per_link.items():
            sent = link.start([order for _, _, order in items], [lock for _, lock, _ in items])
            for _, lock, _ in items:
                os.close(lock)
            if sent:  # else the link is lost and the attempts are polled
                self.run(self.core.started([att for att, _, _ in items], time.time()))

    def _shepherd(self):
        """The least busy shepherd; the missing ones (sbatchd.conf `shepherds`) started."""
        # each job holds about four of a shepherd's descriptors (soft limit usually 1024)
        sb = self.conf.sbatchd
        wanted = max(sb.shepherds, -(-sb.slots // JOBS_PER_SHEPHERD))
        while len(self.links) < wanted:
            link = ShepherdLink(
                self.loop,
                self.cg.name,
                self.slice,
                self._shepherd_ended,
                self._shepherd_lost,
                log_to=log_setup.helper_spec("sbatchd", self.host, self.conf),
            )
            self.links[link.pid] = link
            _add_pid(self.made, link.pid)
            log.info("shepherd started (pid %d)", link.pid)
        return min(self.links.values(), key=lambda link: link.attempts)

    def _shepherd_ended(self, msg):
        self.run(
            self.core.shepherd_answered(
                msg.get("job"), msg.get("attempt"), msg.get("status"), time.time()
            )
        )

    def _shepherd_lost(self, link):
        del self.links[link.pid]
        for name in link.kept_groups:  # empty, and no other shepherd will name them
            group = self.cg.group(name)
            assert group is not None  # a shepherd keeps groups only under a cgroup backend
            group.remove()
        self.run(self.core.shepherd_lost(link.pid))

    def _output_modes(self, spec, made, pw, cwd):
        """The order's directories to make, which outputs are appended (and up to which
        attempt), and LSF's job report unless the site turned it off (`job_report`)."""
        modes = {
            "mkdirs": made,
            "append": [spec.get("out_append", False), spec.get("err_append", False)],
            "attempts": spec.get("attempts"),
        }
        if "cpu_limit" in spec:  # its signals end the job as cpulimit (lavalite.endings)
            modes["cpu_limit"] = spec["cpu_limit"]
        if spec.get("report") and self.conf.cluster.job_report:
            modes["report"] = jobfiles.report_facts(
                spec, self.host, self.conf.cluster.name, pw.pw_dir, cwd
            )
        return modes

    def _outputs(self, spec, cwd):
        """-o and -e with %J (job or array id) and %I (array index, 0 outside arrays)
        substituted; without -e, stderr joins stdout (as LSF); without -o, sbatchd.conf's
        default_output decides (lavalite-%J.out, lavalite-%J_%I.out for an array element).
        An interactive job writes no file but those it names."""
        out = jobfiles.output_path(spec, spec.get("out"), "out", cwd)
        err = jobfiles.output_path(spec, spec.get("err"), "err", cwd)
        if "interactive" in spec:  # relayed to bsub, each stream unless sent to a file
            return [((1,), out), ((2,), err)]
        if out is None and self.conf.sbatchd.default_output == "cwd":
            default = "lavalite-%J_%I.out" if "array" in spec else "lavalite-%J.out"
            out = jobfiles.output_path(spec, default, "out", cwd)
        if err is None or err == out:
            return [((1, 2), out)]
        return [((1,), out), ((2,), err)]

    def _env(self, spec, env, tmpdir, pw):
        """The submitter's environment, with HOME, USER, LOGNAME and SHELL of the user's
        account on this host (as LSF), and the LSB_* variables. With -L, SHELL is the login
        shell: where -L and -env conflict, -L takes effect (LSF)."""
        env = dict(env)
        shell = spec.get("login_shell") or pw.pw_shell or "/bin/sh"
        env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name, SHELL=shell)
        env.update(
            LSB_JOBID=str(spec.get("array", spec["id"])),
            LSB_JOBNAME=spec.get("name") or "",
            LSB_QUEUE=spec.get("queue") or "",
            LSB_JOBINDEX=str(spec.get("index", 0)),
            **hostfile.variables(spec),
            LSB_SUB_HOST=spec.get("from_host") or "",
            LS_SUBCWD=spec.get("cwd") or "",
            LAVALITE_ATTEMPT=str(spec["attempt"]),
            TMPDIR=tmpdir,
        )
        if "line" in spec:  # bsub --each-line: this element's line
            env["LSB_JOBLINE"] = spec["line"]
        return env

    def _arm(self, effect: Arm) -> None:
        att = effect.att
        if att.timer is not None:  # armed again: bstop, bresume
            att.timer.cancel()
        att.timer = self.loop.call_later(
            max(0.0, effect.at - time.time()), lambda: self.run(self.core.timer(att, effect.reason))
        )

    def _watch(self, effect: Watch | None = None) -> None:
        """Adopted attempts end when their lock is free (their holder exited or closed it)."""
        if self.polling is not None:
            self.polling.cancel()
            self.polling = None
        running = False
        for att in [a for a in self.core.attempts.values() if a.adopted]:
            if record.holder(att.path) is None:
                self.run(self.core.lock_freed(att, record.read(att.path), time.time()))
            else:
                running = True
        if running:
            self.polling = self.loop.call_later(POLL_ADOPTED, self._watch)

    def _set_limits(self, effect: SetLimits) -> None:
        att = effect.att
        if att.timer is not None:
            att.timer.cancel()
            att.timer = None
        record.add(att.path, spec=att.spec)
        if att.group is None:
            return
        memory = att.spec.get("memory")
        try:
            self.cg.set_memory(att.group, memory)
        except OSError as exc:  # v1 refuses a limit below what the job holds (EBUSY)
            log.warning("job %s: cannot set its memory limit to %s: %s", att.job, memory, exc)
            return
        link = self.links.get(att.shepherd or 0) if not att.adopted else None
        if link is not None:  # the shepherd keeps the group for a later job (v1)
            link.limits(att.group.name, memory)

    def _record_kill(self, effect: RecordKill) -> None:
        record.add(effect.att.path, kill=effect.reason)

    def _signal_job(self, effect: Signal) -> None:
        """TERM the job's process group, KILL it after kill_grace; until the shepherd has
        started the job (its pid in the record), try again shortly."""
        att = effect.att
        if att.key not in self.core.attempts:
            return
        pid = record.read(att.path).get("pid")
        if pid is None:
            self.loop.call_later(0.05, self._signal_job, effect)
            return
        self._signal(att, pid, signal.SIGTERM)
        att.kill_timer = self.loop.call_later(
            self.conf.sbatchd.kill_grace, self._signal, att, pid, signal.SIGKILL
        )

    def _deliver(self, order: messages.SignalOrder) -> None:
        """One signal to an attempt running here; one not here, or not started yet, has no
        process to receive it (LSF drops it the same way)."""
        job, attempt, sig = order.get("job"), order.get("attempt"), order.get("signal")
        att = self.core.attempts.get((job, attempt)) if type(job) is int else None
        if att is None or type(sig) is not int:
            return
        pid = record.read(att.path).get("pid")
        if pid is not None:
            self._signal(att, pid, sig)

    def _signal(self, att, pgid, sig):
        """The job's process group, and with cgroups every task of its group (which catches
        what left the process group); SIGKILL through the cgroup kill."""
        _killpg(pgid, sig)
        if att.group is not None:
            if sig == signal.SIGKILL:
                att.group.kill()
            else:
                att.group.signal(sig)

    def _pause_order(self, op: str, order: messages.SuspendOrder) -> None:
        """bstop or bresume of an attempt here, or of the job's part here (its blaunch tasks,
        the job started on another host)."""
        job, attempt = order.get("job"), order.get("attempt")
        frozen = op == "suspend"
        change = self.core.suspend if frozen else self.core.resume
        self.run(change(job, attempt, time.time()))
        self.tasks.pause_part((job, attempt), frozen)

    def _suspend(self, effect: Suspend) -> None:
        """The attempt's timer stops, its record says it is stopped (a restart keeps it so),
        and its processes stop once the shepherd has started them (their pid recorded: the
        shepherd's thread has left the job's groups by then, so it is never frozen there)."""
        att = effect.att
        if att.key not in self.core.attempts or att.suspended_at is None:
            return  # ended, or resumed before it could be stopped
        if att.timer is not None:
            att.timer.cancel()
            att.timer = None
        pid = record.read(att.path).get("pid")
        if pid is None:
            self.loop.call_later(0.05, self._suspend, effect)
            return
        record.add(att.path, suspended_at=att.suspended_at, paused=att.paused)
        freeze.pause(att.group, [pid, *self.tasks.running.get(att.key, ())], True)

    def _resume(self, effect: Resume) -> None:
        att = effect.att
        record.add(att.path, suspended_at=None, paused=att.paused)
        pid = record.read(att.path).get("pid")
        pgids = [pid] if pid is not None else []
        freeze.pause(att.group, [*pgids, *self.tasks.running.get(att.key, ())], False)

    def _reap(self, effect: Reap) -> None:
        if effect.pid:
            _killpg(effect.pid, signal.SIGKILL)
        if effect.att.spec.get("tmpdir"):
            shutil.rmtree(effect.att.spec["tmpdir"], ignore_errors=True)

    def _finish(self, effect: Finish) -> None:
        att = effect.att
        if att.spec.get("hostfile"):
            with contextlib.suppress(OSError):
                os.unlink(att.spec["hostfile"])
        for timer in (att.timer, att.kill_timer):
            if timer is not None:
                timer.cancel()
        if att.adopted:  # its shepherd removes it; not if it died first
            if att.group is not None:
                att.group.remove()
        else:
            assert att.shepherd is not None  # set by _prepare as the order left
            self.links[att.shepherd].attempts -= 1
        peek.remember(self.recent, att)
        self.tasks.ended(att.key)

    def _clean(self):
        records, self.cleaning = self.cleaning, []
        if self.links:
            next(iter(self.links.values())).clean(records)
        else:
            for path in records:
                record.remove(path)

    def adopt(self) -> None:
        """After a restart: every attempt record is a job this node started. Watch those
        still running; report those that ended while sbatchd was away."""
        found = []
        for name in os.listdir(self.work):
            job, _, attempt = name.partition(".")
            if not (job.isdigit() and attempt.isdigit()):
                continue
            path = os.path.join(self.work, name)
            rec = record.read(path)
            found.append(
                (
                    int(job),
                    int(attempt),
                    rec,
                    record.holder(path),
                    adopted_group(self.cg, rec.get("spec") or {}, name),
                )
            )
        if found:
            log.info("adopted %d job attempts from %s", len(found), self.work)
        self.run(self.core.adopt(found, time.time()))
        self._remove_stale_groups()
        self.tasks.clean_left()

    def _remove_stale_groups(self) -> None:
        """The groups of our shepherds (those this host's sbatchd started, listed in the spool)
        that no adopted attempt uses: those of attempts that ended while no sbatchd ran, and
        those the old shepherds kept (they start no attempt any more). A group of another
        cluster's, should a slice be shared, is never named there, so never touched."""
        ours = _read_pids(self.made)
        running = {att.group.name for att in self.core.attempts.values() if att.group is not None}
        left = set()
        for name in self.cg.names():
            pid = _shepherd_of(name)
            if pid not in ours:
                continue
            group = self.cg.group(name)
            assert group is not None  # only a cgroup backend names groups
            if name in running or not group.remove(wait=1.0):
                left.add(pid)
            else:
                log.info("removed stale cgroup %s", name)
        _write_pids(self.made, left)

    # --- operations: status, metrics, reload

    def status(self) -> dict[str, Any]:
        return {
            "sbatchd": "connected" if self.peer else "disconnected",
            "host": self.host,
            "pid": os.getpid(),
            "jobs": len(self.core.attempts),
            "slots": self.conf.sbatchd.slots,
        }

    def families(self) -> list[Any]:
        return [
            counter(
                "lavalite_sbatchd_attempts_started",
                "Job attempts started on this host",
                (),
                {(): self.core.starts},
            ),
            gauge(
                "lavalite_sbatchd_jobs",
                "Job attempts running here",
                (),
                {(): len(self.core.attempts)},
            ),
            gauge(
                "lavalite_sbatchd_slots",
                "Job slots of this host",
                (),
                {(): self.conf.sbatchd.slots},
            ),
            gauge(
                "lavalite_sbatchd_connected",
                "1 while registered with mbatchd",
                (),
                {(): int(self.peer is not None)},
            ),
            gauge(
                "lavalite_sbatchd_reports_unacked",
                "Reports kept until mbatchd acks",
                (),
                {(): len(self.journal.unacked)},
            ),
        ]

    def reload(self) -> None:
        """SIGHUP: new limits and defaults apply to the next attempts; running attempts keep
        going. A slot count change is sent to mbatchd at once by registering again."""
        conf = daemon.reread("sbatchd", self.host, self.conf)
        if conf is None:
            return
        old, self.conf = self.conf, conf
        if self.peer is not None and conf.sbatchd.slots != old.sbatchd.slots:
            self._register(self.peer)

    async def sample_usage(self, stop: asyncio.Event) -> None:
        """Every usage_interval: the running attempts' figures, sampled on a worker thread
        (the loop keeps serving), to mbatchd in one frame while it is connected."""
        sampler = usage.Sampler()
        while not stop.is_set():
            interval = self.conf.sbatchd.usage_interval  # a reload may change it
            await sleep_or_stop(stop, interval or 60.0)
            found = usage.targets(self.core.attempts.values())
            if not interval or self.peer is None or not found:
                continue
            try:
                sampled = await self.loop.run_in_executor(
                    None, sampler.sample, found, set(self.links)
                )
            except Exception:  # a figure missed is no reason to stop the next ones
                log.exception("sampling the running jobs' usage failed")
                continue
            if sampled and self.peer is not None:
                self.peer.send(messages.usage(sampled))

    # --- the connection to mbatchd

    async def connect(self, stop: asyncio.Event) -> None:
        """Dial mbatchd (the master the local LIM knows first, then the candidates in order,
        following redirects), register, serve its frames; on loss retry with backoff and
        jitter (RECONNECT_FAST). Running jobs are not touched."""
        delay, since = 0.2, time.monotonic()
        while not stop.is_set():
            order = mbatchd_endpoints(self.conf, self.host, await self._lim_master())
            tried = set()
            while order and not stop.is_set():
                host, addr, port = order.pop(0)
                tried.add(host)
                try:
                    master = await self._session(host, addr, port, stop)
                    delay, since = 0.2, time.monotonic()
                except (TimeoutError, OSError, ConnectionError) as exc:
                    log.debug("mbatchd at %s:%s: %s", addr, port, exc)
                    continue
                if master and master not in tried:
                    order = mbatchd_endpoints(self.conf, self.host, master)[:1] + order
            if stop.is_set():
                break
            await sleep_or_stop(stop, delay * random.uniform(0.5, 1.5))
            delay = reconnect_delay(
                delay, time.monotonic() - since, self.conf.sbatchd.reconnect_max
            )

    async def _lim_master(self):
        """Where the local LIM says mbatchd runs (None if it does not know or is down)."""
        path = os.path.join(self.conf.paths.spool_dir, "lim.sock")
        peer = None
        try:
            _, peer = await self.loop.create_unix_connection(lambda: Peer(lambda p, m: None), path)
            await hello(peer, self.keys.ring(), "sbatchd", self.host, "lim", 2)
            return (await asyncio.wait_for(peer.request("load"), 2)).get("master")
        except (TimeoutError, OSError, ConnectionError):
            return None
        finally:
            if peer is not None:
                peer.close()

    async def _session(self, host, addr, port, stop):
        """One registered connection, until it drops or mbatchd stops answering pings for
        T_fail (a cut network closes nothing). Returns the master named by a redirect."""
        closed = asyncio.Event()
        _, peer = await asyncio.wait_for(
            self.loop.create_connection(
                lambda: Peer(self.on_frame, lambda p: closed.set()),
                addr,
                port,
                **self.tls.dial(host),
            ),
            5,
        )
        try:
            reply = await hello(peer, self.keys.ring(), "sbatchd", self.host, "mbatchd", 10)
        except ConnectionError:
            peer.close()
            raise
        if not reply.get("ok"):  # a redirect
            peer.close()
            return reply.get("master")
        self.outgoing = []
        self.peer = peer
        self._register(peer)
        log.info(
            "registered with mbatchd at %s:%s (%d slots, %d running)",
            addr,
            port,
            self.conf.sbatchd.slots,
            len(self.core.attempts),
        )
        lc = self.conf.lim
        try:
            while not stop.is_set() and not closed.is_set():
                await asyncio.wait_for(
                    peer.request("ping"), lc.heartbeat_interval * lc.heartbeat_misses
                )
                await sleep_or_stop(stop, lc.heartbeat_interval, closed)
        except (TimeoutError, ConnectionError):
            pass
        self.peer = None
        peer.close()
        if not stop.is_set():
            log.warning("lost mbatchd at %s:%s; jobs keep running, reports are kept", addr, port)
        return None

    def _register(self, peer):
        peer.send(
            messages.register(
                self.conf.sbatchd.slots,
                # the jobs' parts too: one that ended while we were away is killed (stale)
                [list(k) for k in [*self.core.attempts, *self.tasks.parts]],
                self.journal.pending(),
                [list(a.key) for a in self.core.attempts.values() if a.suspended_at is not None],
            )
        )

    async def serve(self, stop: asyncio.Event) -> None:
        self.loop = asyncio.get_running_loop()
        metrics = await self.exporter.serve(self.conf.cluster.listen)
        write_pid(os.path.join(self.conf.paths.spool_dir, f"sbatchd-{self.host}.pid"))
        self.adopt()
        self._shepherd()
        sampling = asyncio.ensure_future(self.sample_usage(stop))
        await self.connect(stop)
        await sampling
        self._flush()  # the records of ended attempts go with the shepherds
        for link in list(self.links.values()):
            link.close()
        if metrics is not None:
            metrics.close()
        if self.core.attempts:
            log.info(
                "sbatchd stopped; %d jobs left running under their shepherds",
                len(self.core.attempts),
            )
        else:
            self._leave_nothing()
            log.info("sbatchd stopped")

    def _leave_nothing(self) -> None:
        """No job left: once the shepherds have removed what they hold (their cgroups, the
        TMPDIRs they kept, the records they were told to clean), the slice and the records'
        directory go too (rmdir: never what another process put there meanwhile)."""
        deadline = time.monotonic() + SHEPHERD_EXIT
        for link in self.links.values():
            if not link.exited(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "shepherd %d still removing after %g s; the slice may be left",
                    link.pid,
                    SHEPHERD_EXIT,
                )
        self.cg.remove_slice()
        with contextlib.suppress(OSError):
            daemon.unclaim(self.work)
            os.rmdir(self.work)


def reconnect_delay(last: float, away: float, reconnect_max: float) -> float:
    """The next wait between attempts to reach mbatchd, `away` seconds after losing it:
    doubled, up to RECONNECT_FAST's bound for its first window, then up to reconnect_max."""
    window, fast = RECONNECT_FAST
    return min(last * 2, fast if away < window else reconnect_max)


def _check_owned(path):
    """The records of running jobs decide what is killed and reported: their directory (and
    its parent, which may be in a shared /dev/shm) must be ours or root's, and no symlink."""
    for p in (path, os.path.dirname(path)):
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode) or st.st_uid not in (0, os.geteuid()):
            raise OSError(
                f"work_dir {path}: {p} is a symlink or belongs to uid {st.st_uid}; "
                f"refusing to keep job records there"
            )


def adopted_group(cg, spec: dict, name: str) -> cgroups.Group | None:
    """An adopted attempt's cgroup, under the slice its record names. A record of a version
    that named no slice: under ours, else under that version's default slice (an upgrade
    must not lose the groups of running jobs); one that named groups after the attempt
    (`name`) has no "cgroup" either."""
    group = cg.group(spec.get("cgroup") or name, spec.get("slice"))
    if group is None or "slice" in spec or group.exists():
        return group
    return cg.group(group.name, LEGACY_SLICE)


def _shepherd_of(group: str) -> int | None:
    """The shepherd pid in a group name `shepherd-<pid>.<n>` (None for another name)."""
    prefix, _, rest = group.partition("-")
    pid = rest.partition(".")[0]
    return int(pid) if prefix == "shepherd" and pid.isdigit() else None


def _read_pids(path: str) -> set[int]:
    try:
        with open(path) as f:
            return {int(line) for line in f if line.strip().isdigit()}
    except FileNotFoundError:
        return set()


def _add_pid(path: str, pid: int) -> None:
    """One line, appended in one write: a crash tears nothing before it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{pid}\n".encode())
    finally:
        os.close(fd)


def _write_pids(path: str, pids: set[int]) -> None:
    write_whole(path, "".join(f"{pid}\n" for pid in sorted(pids)))


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass
