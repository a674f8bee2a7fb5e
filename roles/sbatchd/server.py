"""sbatchd: runs the jobs mbatchd dispatches here, enforces their wall clock, reports START
and EXIT, and keeps every report until mbatchd acknowledges it.

Each attempt gets a directory `<work_dir>/<job>.<attempt>/` (its TMPDIR, its shepherd's files).
A directory that exists is an attempt this node has started: that is what makes a repeated
dispatch harmless and what a restarted sbatchd adopts.
"""
import asyncio
import json
import logging
import os
import random
import shutil
import signal
import time

from lavalite import auth
from lavalite import protocol as P
from lavalite.daemon import sleep_or_stop, write_pid
from lavalite.hosts import mbatchd_endpoints
from lavalite.model import KILLED_REASON, NODE_LOST, TIMEOUT
from lavalite.peer import Peer
from roles.sbatchd import shepherd
from roles.sbatchd.journal import Journal

log = logging.getLogger("lavalite.sbatchd")


class Attempt:
    __slots__ = ("job", "attempt", "dir", "spec", "shepherd", "pidfd", "timer", "kill_timer")

    def __init__(self, job, attempt, adir, spec):
        self.job, self.attempt, self.dir, self.spec = job, attempt, adir, spec
        self.shepherd = None
        self.pidfd = None
        self.timer = None
        self.kill_timer = None

    @property
    def key(self):
        return (self.job, self.attempt)

    def read(self, name):
        try:
            with open(os.path.join(self.dir, name)) as f:
                return f.read()
        except OSError:
            return None


class Sbatchd:
    def __init__(self, conf, host):
        self.conf = conf
        self.host = host
        self.key = auth.load_key(conf.cluster.key_file)
        self.work = conf.sbatchd.work_dir
        os.makedirs(self.work, exist_ok=True)
        self.journal = Journal(os.path.join(conf.paths.spool_dir, f"reports-{host}.log"))
        self.attempts = {}             # (job, attempt) -> Attempt running here
        self.peer = None               # the registered connection to mbatchd
        self.outgoing = []
        self.loop = None

    # --- reports

    def report(self, rep):
        self.journal.add(rep)
        if self.peer is not None:
            if not self.outgoing:
                self.loop.call_soon(self._flush)
            self.outgoing.append(rep)

    def _flush(self):
        if self.peer is not None and self.outgoing:
            self.peer.send({"v": P.VERSION, "op": "report", "id": None, "reports": self.outgoing})
        self.outgoing = []

    # --- frames from mbatchd

    def on_frame(self, peer, msg):
        op = msg.get("op")
        if op == "dispatch":
            envs = msg.get("envs") or {}
            for spec in P.require(msg, "jobs", list):
                self.start(spec, envs.get(str(spec.get("env_id"))) or {})
        elif op == "kill":
            att = self.attempts.get((msg.get("job"), msg.get("attempt")))
            if att is not None:
                self.terminate(att, KILLED_REASON)
        elif op == "ack":
            self.journal.ack(P.require(msg, "rids", list))
        else:
            raise P.ProtocolError(P.UNKNOWN_OP, f"unknown op {op!r}")

    # --- running jobs

    def start(self, spec, env):
        job, attempt = spec["id"], spec["attempt"]
        adir = os.path.join(self.work, f"{job}.{attempt}")
        if (job, attempt) in self.attempts or os.path.exists(adir):
            return                     # this attempt started here already: never twice
        os.makedirs(os.path.join(adir, "tmp"))
        att = Attempt(job, attempt, adir, spec)
        self.attempts[att.key] = att
        cwd = spec.get("cwd") or "/"
        outputs = self._outputs(spec, cwd, adir)
        shepherd.write_json(os.path.join(adir, "job.json"), {**spec, "started": time.time()})
        att.shepherd = shepherd.launch(adir, _argv(spec["cmd"]), self._env(spec, env, adir),
                                       cwd, outputs)
        with open(os.path.join(adir, "shepherd"), "w") as f:
            f.write(str(att.shepherd))
        self._watch(att)
        self.report({"kind": "start", "job": job, "attempt": attempt, "time": time.time()})

    def _outputs(self, spec, cwd, adir):
        """-o and -e with %J (job or array id) and %I (array index, 0 outside arrays)
        substituted; without -e, stderr joins stdout (as LSF); without -o, sbatchd.conf's
        default_output decides (lavalite-%J.out, lavalite-%J_%I.out for an array element)."""
        job_id, index = str(spec.get("array", spec["id"])), str(spec.get("index", 0))

        def resolve(path):
            return os.path.join(cwd, path.replace("%J", job_id).replace("%I", index)) if path else None
        out, err = resolve(spec.get("out")), resolve(spec.get("err"))
        if out is None and self.conf.sbatchd.default_output == "cwd":
            out = resolve("lavalite-%J_%I.out" if "array" in spec else "lavalite-%J.out")
        if err is None or err == out:
            return [((1, 2), out, _temp(out, spec))]
        return [((1,), out, _temp(out, spec)), ((2,), err, _temp(err, spec))]

    def _env(self, spec, env, adir):
        env = dict(env)
        env.update(LSB_JOBID=str(spec.get("array", spec["id"])), LSB_JOBNAME=spec.get("name") or "",
                   LSB_QUEUE=spec.get("queue") or "", LSB_JOBINDEX=str(spec.get("index", 0)),
                   LSB_HOSTS=" ".join(h for h in spec["hosts"] for _ in range(spec["slots"])),
                   LSB_MCPU_HOSTS=" ".join(f"{h} {spec['slots']}" for h in spec["hosts"]),
                   LSB_DJOB_NUMPROC=str(spec["slots"]), LSB_SUB_HOST=spec.get("from_host") or "",
                   LS_SUBCWD=spec.get("cwd") or "", LAVALITE_ATTEMPT=str(spec["attempt"]),
                   TMPDIR=os.path.join(adir, "tmp"))
        if "line" in spec:             # bsub --each-line: this element's line
            env["LSB_JOBLINE"] = spec["line"]
        return env

    def _watch(self, att):
        """Learn of the shepherd's end through a pidfd: works for our children and, after a
        restart, for shepherds the previous sbatchd forked."""
        try:
            att.pidfd = os.pidfd_open(att.shepherd) if att.shepherd > 0 else None
        except ProcessLookupError:
            att.pidfd = None
        if att.pidfd is None:
            self.loop.call_soon(self._ended, att)
            return
        self.loop.add_reader(att.pidfd, self._ended, att)
        walltime = att.spec.get("walltime")
        if walltime:
            started = att.spec.get("started") or time.time()
            att.timer = self.loop.call_later(max(0.0, started + walltime - time.time()),
                                             self.terminate, att, TIMEOUT)

    def terminate(self, att, reason):
        """TERM the job's process group, KILL it after kill_grace. The reason is written down
        first, so it survives an sbatchd restart."""
        if att.kill_timer is not None or att.key not in self.attempts:
            return
        if att.read("kill") is None:
            with open(os.path.join(att.dir, "kill"), "w") as f:
                f.write(reason)
        pid = att.read("pid")
        if pid is None:                # the shepherd has not started it yet: try again shortly
            self.loop.call_later(0.05, self.terminate, att, reason)
            return
        _killpg(int(pid), signal.SIGTERM)
        att.kill_timer = self.loop.call_later(self.conf.sbatchd.kill_grace, _killpg, int(pid),
                                              signal.SIGKILL)

    def _ended(self, att):
        if att.pidfd is not None:
            self.loop.remove_reader(att.pidfd)
            os.close(att.pidfd)
            att.pidfd = None
        try:
            if att.shepherd > 0:
                os.waitpid(att.shepherd, os.WNOHANG)
        except ChildProcessError:      # adopted: the previous sbatchd's child, reaped by init
            pass
        for timer in (att.timer, att.kill_timer):
            if timer is not None:
                timer.cancel()
        status = json.loads(att.read("status") or "null")
        if status is None:
            status = {"reason": NODE_LOST, "message": "the job's shepherd vanished"}
        kill = att.read("kill")
        rep = {"kind": "exit", "job": att.job, "attempt": att.attempt, "time": time.time(),
               "start_time": status.get("start"), "exit_code": status.get("exit_code"),
               "exit_signal": status.get("exit_signal"),
               "reason": kill or status.get("reason") or "", "message": status.get("message")}
        del self.attempts[att.key]
        self.report(rep)
        shutil.rmtree(att.dir, ignore_errors=True)

    def adopt(self):
        """After a restart: every attempt directory is a job this node started. Watch those
        still running; report those that ended while sbatchd was away."""
        for name in os.listdir(self.work):
            job, _, attempt = name.partition(".")
            if not (job.isdigit() and attempt.isdigit()):
                continue
            adir = os.path.join(self.work, name)
            att = Attempt(int(job), int(attempt), adir, {})
            try:
                with open(os.path.join(adir, "job.json")) as f:
                    att.spec = json.load(f)
            except (OSError, ValueError):
                pass
            self.attempts[att.key] = att
            pid = att.read("shepherd")
            att.shepherd = int(pid) if pid and pid.isdigit() else 0
            self._watch(att)
            if att.read("kill"):
                self.terminate(att, att.read("kill"))
        if self.attempts:
            log.info("adopted %d job attempts from %s", len(self.attempts), self.work)

    # --- the connection to mbatchd

    async def connect(self, stop):
        """Dial mbatchd, register, serve its frames; on loss retry with backoff and jitter."""
        delay = 0.2
        while not stop.is_set():
            for host, addr, port in mbatchd_endpoints(self.conf, self.host):
                try:
                    await self._session(addr, port, stop)
                    delay = 0.2
                except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                    log.debug("mbatchd at %s:%s: %s", addr, port, exc)
            if stop.is_set():
                break
            await sleep_or_stop(stop, delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.conf.sbatchd.reconnect_max)

    async def _session(self, addr, port, stop):
        closed = asyncio.Event()
        _, peer = await asyncio.wait_for(self.loop.create_connection(
            lambda: Peer(self.on_frame, lambda p: closed.set()), addr, port), 5)
        hello = auth.hello(self.key, "sbatchd", self.host)
        reply = await asyncio.wait_for(peer.request_msg(hello), 10)
        if not reply.get("ok") or not auth.check_server_proof(self.key, hello["nonce"],
                                                               reply.get("proof")):
            peer.close()
            raise ConnectionError(f"mbatchd refused us or failed to prove the key: {reply}")
        self.outgoing = []
        self.peer = peer
        peer.send({"v": P.VERSION, "op": "register", "id": None, "slots": self.conf.sbatchd.slots,
                   "running": [list(k) for k in self.attempts], "reports": self.journal.pending()})
        log.info("registered with mbatchd at %s:%s (%d slots, %d running)", addr, port,
                 self.conf.sbatchd.slots, len(self.attempts))
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, asyncio.ensure_future(closed.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        self.peer = None
        peer.close()
        if not stop.is_set():
            log.warning("lost mbatchd at %s:%s; jobs keep running, reports are kept", addr, port)

    async def serve(self, stop):
        self.loop = asyncio.get_running_loop()
        write_pid(os.path.join(self.conf.paths.spool_dir, f"sbatchd-{self.host}.pid"))
        self.adopt()
        await self.connect(stop)
        log.info("sbatchd stopped; %d jobs left running under their shepherds", len(self.attempts))


def _argv(cmd):
    """A single string with shell syntax runs through /bin/sh, as LSF runs a command line;
    a list of arguments (bsub ... -- prog args) is executed as it is."""
    if len(cmd) == 1 and any(c in cmd[0] for c in " \t\n|&;<>()$`\\\"'*?[#~=%{}"):
        return ["/bin/sh", "-c", cmd[0]]
    return list(cmd)


def _temp(final, spec):
    """The file an attempt writes while it runs, beside the final one so that the rename at
    the end is atomic; None where the target is no regular file (/dev/null, a fifo, a tty)."""
    if final is None or (os.path.exists(final) and not os.path.isfile(final)):
        return None
    head, tail = os.path.split(final)
    return os.path.join(head, f".{tail}.lavalite-{spec['id']}.{spec['attempt']}")


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass

