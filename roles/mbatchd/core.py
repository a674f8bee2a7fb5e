"""mbatchd's functional core: every event is a method over in-memory state.

No sockets and no SQL here. Each handler changes memory and records what the shell must do
afterwards in one `TurnOutput` (`Core.out`): rows to commit (jobs, events, hosts, envs, users,
arrays), bwait answers, messages to send to hosts (outbox). The shell commits once per loop
turn, then takes the output (`new_turn`) and sends it, so nothing leaves mbatchd before it is
durable.
"""

import hashlib
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lavalite import accounting, endings, jobscript, jobspec, messages, relay, resreq
from lavalite import protocol as P
from lavalite.config import Config
from lavalite.job_array import Array
from lavalite.limits import format_size
from lavalite.model import (
    DONE,
    EXIT,
    FAILED,
    FINISHED,
    HOST_CLOSED,
    HOST_OK,
    HOST_UNAVAIL,
    KILLED,
    KILLED_REASON,
    NODE_LOST,
    PEND,
    PR_BACKOFF,
    PR_LOAD_UNKNOWN,
    PR_NEW,
    PR_NO_SLOT,
    PR_RUSAGE_MEM,
    PR_SELECT,
    PRE_EXEC,
    PSUSP,
    RUN,
    SIGNAL,
    STARTED,
    WAITING,
    Host,
    Job,
    job_view,
    label,
    split_id,
    submitted,
    transition,
)
from roles.mbatchd import job_options
from roles.mbatchd.admin_ops import AdminOps, empty_state
from roles.mbatchd.array_ops import ArrayOps, check_array
from roles.mbatchd.depends import DependOps
from roles.mbatchd.fairshare import FairOps
from roles.mbatchd.job_options import OptionOps
from roles.mbatchd.jobctl import ControlOps, requested_signal, unstarted_refusal
from roles.mbatchd.limits import LimitOps
from roles.mbatchd.listing import Listing, ListingOps
from roles.mbatchd.loadstop import LOAD_REASONS, PLACING, LoadStopOps
from roles.mbatchd.modify import ModifyOps
from roles.mbatchd.modify_array import ArrayModifyOps
from roles.mbatchd.parts import PartOps
from roles.mbatchd.placement import (
    allocation,
    check_needs,
    hold,
    memory_limit,
    part_of,
    unplace,
)
from roles.mbatchd.preempt import PreemptOps
from roles.mbatchd.quotas import QuotaOps
from roles.mbatchd.reserve import ReserveOps
from roles.mbatchd.suspend import COUNTED, SuspendOps
from scheduler import QueueView, Snapshot, live, plan

MAX_CMD_BYTES = 128 << 10
# pending reasons that new host facts (LIM's load) may lift
WAIT_ON_FACTS = frozenset((PR_SELECT, PR_RUSAGE_MEM, PR_LOAD_UNKNOWN)) | LOAD_REASONS
MAX_MESSAGE = 2000  # characters of a worker's message kept with the job
# the spec's strings that are no part of exec, and their bounds (the name holds [INDICES]%LIMIT)
_TEXTS = (
    ("cwd", jobspec.MAX_PATH),
    ("out", jobspec.MAX_PATH),
    ("err", jobspec.MAX_PATH),
    ("name", jobspec.MAX_NAME),
    ("from_host", jobspec.MAX_NAME),
)


@dataclass(slots=True)
class TurnOutput:
    """What the handlers of one turn recorded: the rows the shell commits, then what it sends."""

    jobs: dict = field(default_factory=dict)  # id -> Job changed
    events: list = field(default_factory=list)  # model.Event rows
    hosts: dict = field(default_factory=dict)  # name -> Host changed
    envs: list = field(default_factory=list)  # (env id, hash, env) new
    users: list = field(default_factory=list)  # (name, uid, time) new
    arrays: dict = field(default_factory=dict)  # id -> Array changed
    woken: list = field(default_factory=list)  # (token, result or ProtocolError) of bwaits
    outbox: dict = field(default_factory=dict)  # host -> [message]
    notices: list = field(default_factory=list)  # for the notify command (bsub -B, -N)
    parts: list = field(default_factory=list)  # (job, attempt, host, time, cpu, mem, in memory)
    fairshare: dict = field(default_factory=dict)  # (queue, account) -> its Usage changed
    quota_usage: dict = field(default_factory=dict)  # (quota, period start) -> core-seconds
    specs: dict = field(default_factory=dict)  # id -> Job whose spec, name, slots bmod changed
    runs: list = field(default_factory=list)  # model.run_record of runs a requeue superseded
    array_specs: dict = field(default_factory=dict)  # id -> Array whose spec bmod changed

    def rows(self) -> dict | None:
        """Store.commit's arguments; None when there is nothing to write."""
        if not (
            self.jobs
            or self.events
            or self.hosts
            or self.envs
            or self.users
            or self.arrays
            or self.parts
            or self.fairshare
            or self.quota_usage
            or self.specs
            or self.runs
            or self.array_specs
        ):
            return None
        return {
            "jobs": self.jobs.values(),
            "events": self.events,
            "hosts": self.hosts.values(),
            "envs": self.envs,
            "users": self.users,
            "arrays": self.arrays.values(),
            "parts": self.parts,
            "fairshare": [(q, a, u.run, u.cpu, u.at) for (q, a), u in self.fairshare.items()],
            "quota_usage": [(*key, used) for key, used in self.quota_usage.items()],
            "specs": self.specs.values(),
            "runs": self.runs,
            "array_specs": self.array_specs.values(),
        }


class Core(
    ArrayOps,
    OptionOps,
    DependOps,
    AdminOps,
    ControlOps,
    PartOps,
    FairOps,
    QuotaOps,
    ModifyOps,
    ArrayModifyOps,
    SuspendOps,
    ListingOps,
    LimitOps,
    ReserveOps,
    PreemptOps,
    LoadStopOps,
):
    def __init__(self, conf, state, now):
        """`state` is what Store.load returned."""
        self.conf = conf
        self.admins = set(conf.cluster.admins)
        self.queues = {}  # name -> QueueView, in priority order
        self.qconf = {}
        self.admin_state = state.get("badmin") or empty_state()  # see roles.mbatchd.admin_ops
        self._init_fair(state, now)
        self._init_preempt()
        self._set_queues(conf)
        self.jobs = {}  # id -> Job: live, and finished within clean_period
        self.arrays = {}  # id -> Array: live, and ended within clean_period
        self.waiters = {}  # job or array id -> [(cond, token)] (bwait)
        self.max_slots = 0  # the largest slot count of any host seen
        self.all_slots = 0  # every known host's slots: the widest job that could run
        self.by_req = {}  # client request id -> job id
        self.host_jobs: dict[str, set[int]] = {}  # host -> {job id} running there
        self.hosts = {}
        self.free_by_host = {}  # host -> free slots, usable hosts with free > 0
        self.total_free = 0
        self.backoff = []  # heap of (eligible_time, job id): retry backoff and begin time (-b)
        self.deadlines = []  # heap of (term_time, job id) of jobs with -t, pending when pushed
        self.pre_failures = {}  # job id -> its pre-execution commands that failed (-E)
        self.finished = deque()  # (end_time, job id), for expiry from memory
        self.reasons = {}  # last plan's pending reasons
        self.reservations = {}  # job id -> the last plan's slot reservation (soft state)
        self.npend = {}  # queue -> PEND jobs, kept as jobs move
        self.suspended = {}  # (kind, name, state) -> slots: SuspendOps'
        self.load_stopped = {}  # host -> jobs it stopped for load: LoadStopOps'
        self.load_acted = {}  # host -> its load sample last acted on: LoadStopOps'
        self.envs = {}  # env id -> [hash, env dict, live jobs using it]
        self.env_ids = {}  # hash -> env id, for envs in memory
        self.env_sizes = {}  # hash -> exec bytes, of envs in memory (checked)
        self.lost = {}  # host -> since when it is UNAVAIL with jobs on it
        self.registered = {}  # host -> when its sbatchd last registered
        self.users = state["users"]
        self.counted: dict[int, set[tuple[int, str, float]]] = {}  # parts.PartOps'
        for job_id, attempt, host, ended in state.get("parts", ()):
            self.counted.setdefault(job_id, set()).add((attempt, host, ended))
        self.next_id = state["next_job_id"]
        self.next_seq = state["next_pend_seq"]
        self.next_env = state["next_env_id"]
        self.out = TurnOutput()  # what this turn must commit, then send
        self.touched = set()  # (queue, user) FIFOs whose heads may be stale
        self.wake = True
        self._init_depend()
        for host in state["hosts"]:
            host.status = HOST_CLOSED if host.status == HOST_CLOSED else HOST_UNAVAIL
            self.hosts[host.name] = host
            self.host_jobs[host.name] = set()
            self.max_slots = max(self.max_slots, host.slots)
            self.all_slots += host.slots
        for rec in state["arrays"]:
            self._adopt_array(Array.from_record(rec), state["envs"], now)
        for job in state["jobs"]:
            self._adopt(job, state["envs"], now)
        # bjobs' order (roles/mbatchd/listing.py): the plain jobs and arrays, by id
        self.listing = Listing(
            [i for i in self.jobs if not split_id(i)[0]] + list(self.arrays), self._in_memory
        )
        for name, ids in self.host_jobs.items():
            if ids:  # their hosts have node_lost_grace to register
                self.lost[name] = now
        self._fair_loaded()
        self._preempt_loaded()
        self._build_quotas(state.get("quota_usage", {}))

    def _in_memory(self, job_id: int) -> bool:
        return job_id in self.jobs or job_id in self.arrays

    def new_turn(self) -> TurnOutput:
        """What the last turn recorded, handed to the shell after its commit; the next turn
        records afresh."""
        out, self.out = self.out, TurnOutput()
        self.touched = set()
        return out

    def _set_queues(self, conf):
        """Queue views in conf's priority order; a view keeps its jobs and counters across a
        reload, and a queue dropped from queues.conf lives on inactive (see _queue)."""
        old, self.queues, self.qconf, self.load_stop = self.queues, {}, {}, {}
        for qc in conf.queue_order():
            view = old.pop(qc.name, None) or QueueView(qc.name)
            view.priority, view.active = qc.priority, qc.active
            view.max_running_user, view.max_running_queue = (
                qc.max_running_user,
                qc.max_running_queue,
            )
            view.reserve, view.backfill = qc.slot_reserve, qc.backfill
            self.queues[qc.name] = view
            self.qconf[qc.name] = qc
            self._set_load_policy(view, qc)
        for name, view in old.items():
            if self.npend.get(name) or view.running:
                view.priority, view.active = -1, False
                self.queues[name] = view
        self.apply_queue_state()
        self._set_preemption()
        self._set_fair(getattr(self, "jobs", {}))  # none yet at start-up: counted as loaded
        self._set_limits(getattr(self, "jobs", {}))

    def reconfigure(self, conf: Config) -> None:
        """A reloaded configuration (SIGHUP): queues, admins, defaults. Jobs stay as they are."""
        self.conf = conf
        self.admins = set(conf.cluster.admins)
        self._set_queues(conf)
        self._build_quotas(self.quota.used)
        self.wake = True

    def _queue(self, name):
        """A queue a stored job names: one dropped from queues.conf lives on, inactive, so its
        jobs stay visible and killable."""
        if name not in self.queues:
            self.queues[name] = QueueView(name, priority=-1, active=False)
        return self.queues[name]

    def _adopt(self, job, envs, now):
        """Put a job loaded from the store back into the indexes."""
        self.jobs[job.id] = job
        if job.req_id:
            self.by_req[job.req_id] = job.id
        array_id, index = split_id(job.id)
        job.array = self.arrays.get(array_id) if array_id else None
        job.needs = resreq.needs(job.spec, job.slots)
        if job.hosts:  # the slots it was given (-n MIN,MAX), the store keeps MIN
            job.slots = sum(n for _, n in job.hosts)
        if job.state in FINISHED:
            self.finished.append((job.end_time, job.id))
            return
        env_id = job.spec.get("env_id")
        self._suspension_moved(job, "", job.state)
        self._adopt_load_stopped(job)
        if job.array is not None:
            job.array.live.add(index)  # its env is the array's, counted once
        elif env_id in envs:
            digest, env = envs[env_id]
            self._env_ref(env_id, digest, env)
        if job.state in WAITING:
            if job.state == PEND:
                self.npend[job.queue] = self.npend.get(job.queue, 0) + 1
            self._track_deadline(job)
            self._pend_loaded(job, now)
        else:
            self._count_run(job, +1)
            hold(job, self.hosts, self.host_jobs, +1)

    def _adopt_array(self, arr, envs, now):
        self.arrays[arr.id] = arr
        arr.needs = resreq.needs(arr.spec, arr.slots)
        if arr.req_id:
            self.by_req[arr.req_id] = arr.id
        if arr.end_time is not None:
            self.finished.append((arr.end_time, arr.id))
            return
        env_id = arr.spec.get("env_id")
        if env_id in envs:
            self._env_ref(env_id, *envs[env_id])
        if arr.remaining:
            self._track_deadline(arr)
            self._pend_loaded(arr, now)

    def _pend_loaded(self, job: Job | Array, now: float, watched: bool = False) -> None:
        """A pending job or array read from the store back in its FIFO with its pend_seq, or
        in retry backoff, or held until its begin time (-b: an array's is not stored as its
        eligible time). One held (-H), or with a condition (-w) that never let it in a FIFO
        (no pend_seq yet), first waits for watch_loaded, which calls this again once its
        condition is `watched`."""
        if not watched and (job.state == PSUSP or job.spec.get("depend") and not job.pend_seq):
            self.depend_loaded.append(job)
        elif job.eligible_time > now:
            heapq.heappush(self.backoff, (job.eligible_time, job.id))
        elif "begin" in job.spec and self._hold_until_begin(job, now):
            pass
        elif job.pend_seq:
            self._queue(job.queue).pending.setdefault(job.user, deque()).append((job.pend_seq, job))
        else:  # released by its condition at load, never queued before
            self._admit(job, now)

    def sort_pending(self) -> None:
        """After a reload, put every FIFO in (-priority, pend_seq) order (jobs came in id
        order)."""
        order = job_options.fifo_order(self.conf)
        for q in self.queues.values():
            for user, fifo in q.pending.items():
                q.pending[user] = deque(sorted(fifo, key=order))

    # --- bookkeeping helpers

    def _dirty(self, job, event=None):
        self.out.jobs[job.id] = job
        if event is not None:
            self.out.events.append(event)

    def _move(self, job, new, now, reason=""):
        """Every state change of a job: the model's transition, the event, the counters."""
        old, start = job.state, job.start_time
        self._dirty(job, transition(job, new, now, reason))
        self._quota_moved(job, old, start, now)
        for state, sign in ((old, -1), (new, +1)):
            if state == PEND:
                self.npend[job.queue] = self.npend.get(job.queue, 0) + sign
        if old in COUNTED or new in COUNTED:
            self._suspension_moved(job, old, new)
        if self.lent or self.victims:
            self._preempt_moved(job, new)
        if job.array is not None:
            self._element_changed(job.array, job, old, new, now)
        self._depend_moved(job, now)

    def _send(self, host, msg):
        self.out.outbox.setdefault(host, []).append(msg)

    def _kill_order(self, host: str, job_id: int, attempt: int, stale: bool = False) -> None:
        """`host`'s sbatchd told to kill the attempt; `stale`: one mbatchd no longer counts as
        running there, so its end is not waited for."""
        msg: dict[str, Any] = {"op": "kill", "job": job_id, "attempt": attempt}
        if stale:
            msg["stale"] = True
        self._send(host, msg)

    def _count_run(self, job, sign):
        q = self._queue(job.queue)
        q.running += sign * job.slots
        q.running_user[job.user] = q.running_user.get(job.user, 0) + sign * job.slots
        if not q.running_user[job.user]:
            del q.running_user[job.user]
        if q.started is not None:  # a queue that may be preempted: scheduler/preempt.py
            if sign > 0:
                q.started[job.id] = job
            else:
                q.started.pop(job.id, None)
        self._fair_count(job, sign)
        self._limit_count(job, sign)

    def _set_free(self, host):
        old = self.free_by_host.pop(host.name, 0)
        self.total_free -= old
        if host.free > 0:
            self.free_by_host[host.name] = host.free
            self.total_free += host.free

    def _enqueue(self, job):
        job.pend_seq = self.next_seq
        self.next_seq += 1
        job_options.fifo_add(
            self._queue(job.queue).pending.setdefault(job.user, deque()),
            (job.pend_seq, job),
            self.conf,
        )
        self.wake = True

    def _env_ref(self, env_id, digest, env):
        entry = self.envs.get(env_id)
        if entry is None:
            entry = self.envs[env_id] = [digest, env, 0]
            self.env_ids[digest] = env_id
        entry[2] += 1

    def _env_unref(self, job):
        entry = self.envs.get(job.spec.get("env_id"))
        if entry is not None:
            entry[2] -= 1
            if entry[2] <= 0:
                del self.envs[job.spec["env_id"]]
                del self.env_ids[entry[0]]
                self.env_sizes.pop(entry[0], None)

    def _finish(self, job, now):
        """Bookkeeping common to every end of a job. The scheduler is woken: a pending job
        that ends (bkill) may have held its user's FIFO, with a job behind it that can run."""
        self.wake = True
        self.finished.append((now, job.id))
        if job.array is None:  # elements share their array's environment
            self._env_unref(job)
        self.touched.add((job.queue, job.user))
        self._fire(job.id)
        self._options_ended(job)
        self._forget_depend(job.id)

    # --- client requests

    def submit(
        self,
        ident: dict[str, Any],
        msg: messages.Submit,
        now: float,
        lookup_env: Callable[[str], int | None],
    ) -> dict[str, Any]:
        """lookup_env(digest) -> env id already in the store, or None."""
        self._check_submitter(ident)
        req = _req(msg.get("req"))
        dup = self._duplicate(req)
        if dup:
            return dup
        prep = self._check(P.require(msg, "spec", dict), ident)
        self._quota_admit(ident, [prep], now)
        return self._create(ident, prep, req, now, lookup_env)

    def submit_many(
        self,
        ident: dict[str, Any],
        msg: messages.SubmitMany,
        now: float,
        lookup_env: Callable[[str], int | None],
    ) -> dict[str, Any]:
        """Many jobs in one request: `defaults` (cwd, env, ...) sent once, merged under each of
        `specs`. All are checked before any is created: one bad spec refuses the request whole.
        With `req`, job i's request id is REQ:i, so a retried request makes no job twice."""
        self._check_submitter(ident)
        req = _req(msg.get("req"))
        defaults = msg.get("defaults") or {}
        specs = P.require(msg, "specs", list)
        if not isinstance(defaults, dict) or not all(isinstance(x, dict) for x in specs):
            raise P.ProtocolError(P.BAD_REQUEST, "defaults and each of specs must be objects")
        checked, known_env = [], self._known_env(defaults)
        for i, spec in enumerate(specs):
            try:
                checked.append(self._check({**defaults, **spec}, ident, known_env))
            except P.ProtocolError as exc:
                raise P.ProtocolError(exc.code, f"job {i}: {exc.message}") from None
        subs = [None if req is None else f"{req}:{i}" for i in range(len(checked))]
        # a request sent again: the jobs it made already count
        self._quota_admit(ident, [p for p, s in zip(checked, subs) if not self._duplicate(s)], now)
        out = []
        for prep, sub in zip(checked, subs):
            out.append(self._duplicate(sub) or self._create(ident, prep, sub, now, lookup_env))
        return {"jobs": [r["job"] for r in out], "queues": [r["queue"] for r in out]}

    def _check_submitter(self, ident):
        if ident["uid"] == 0 and not self.conf.cluster.allow_root_jobs:
            raise P.ProtocolError(
                P.DENIED,
                "root may not submit jobs (allow_root_jobs = no "
                "in lavalite.conf); submit as a normal user",
            )

    def _duplicate(self, req):
        known = self.by_req.get(req) if req is not None else None
        if known is None:
            return None
        job = self.jobs.get(known) or self.arrays.get(known)
        return job and {"job": job.id, "queue": job.queue, "duplicate": True}

    def _check(self, spec: dict, ident: dict[str, Any], known_env: tuple = (None,)) -> dict:
        """Validate a submitted spec; return what _create needs. Changes nothing.
        known_env: an environment's (env, hash, exec bytes) already checked, so that
        submit_many checks the environment its specs share once. `ident`: the submitter (whose
        job names a -w condition may use)."""
        try:
            prep = self._checked(spec, ident, known_env)
            fields, prep["depend"] = self._check_depend(spec, ident["user"])  # -w, -H
            prep["spec"].update(fields)
            return prep
        except jobspec.SpecError as exc:
            raise P.ProtocolError(P.BAD_REQUEST, str(exc)) from None

    def _checked(
        self, spec: dict, ident: dict[str, Any], known_env: tuple, in_queue: str | None = None
    ) -> dict:
        """`in_queue`: the queue a job modified by bmod is in (taken closed or not)."""
        cmd, env_info = self._check_exec(spec, known_env)
        qname, qc = self._check_queue(spec, in_queue)
        walltime = spec.get("walltime")
        if walltime is None:
            walltime = qc.default_walltime or None
        else:
            walltime = jobspec.seconds("walltime", walltime)
        if walltime and qc.max_walltime and walltime > qc.max_walltime:
            raise P.ProtocolError(
                P.BAD_REQUEST,
                f"walltime {walltime:g} s exceeds queue "
                f"<{qname}>'s max_walltime of {qc.max_walltime:g} s",
            )
        retries = spec.get("retries")
        attempts = (
            qc.max_attempts
            if retries is None
            else 1
            + jobspec.integer(
                f"retries in queue <{qname}>", retries, 0, min(qc.max_retries, jobspec.MAX_RETRIES)
            )
        )
        slots = jobspec.integer("slots (-n)", spec.get("slots", 1), 1, jobspec.MAX_SLOTS)
        placing = check_needs(spec, slots, self.hosts, self.max_slots, self.all_slots)
        memory = _limit(
            spec,
            "memory",
            "-M",
            qname,
            qc.default_memory,
            qc.max_memory,
            format_size,
            jobspec.MAX_MEMORY,
        )
        pids = _limit(
            spec, "pids", "--pids", qname, qc.default_pids, qc.max_pids, str, jobspec.MAX_PIDS
        )
        texts = {
            field: jobspec.text(field, spec.get(field) or "", limit) for field, limit in _TEXTS
        }
        if not (texts["cwd"] or "/").startswith("/"):  # -o/-e resolve against it
            raise P.ProtocolError(P.BAD_REQUEST, "cwd must be an absolute path")
        sim = spec.get("sim_duration")
        name, ranges, throttle, lines = check_array(spec)
        stored = {
            "cmd": cmd,
            "cwd": texts["cwd"] or "/",
            "out": spec.get("out"),
            "err": spec.get("err"),
            "walltime": walltime,
            "memory": memory,
            "pids": pids,
            "from_host": spec.get("from_host"),
        }
        stored.update(jobscript.checked(spec, attempts))  # script, -i, -o append, umask...
        if sim is not None:  # for `lavalite simulate`; sbatchd ignores it
            stored["sim_duration"] = jobspec.seconds("sim_duration", sim, zero=True)
        if lines is not None:
            stored["lines"] = lines
        stored.update(job_options.checked(spec, self.conf, ident["user"], self.admins))
        interactive = _check_interactive(spec.get("interactive"), qname, qc, ranges)
        if interactive is not None:  # bsub -I: its terminal cannot take a rerun
            stored["interactive"], attempts = interactive, 1
        if placing is not None:
            stored.update(placing)
        return {
            "queue": qname,
            "slots": slots,
            "attempts": attempts,
            "env": env_info,
            "spec": stored,
            "name": name or " ".join(cmd)[:60],
            "ranges": ranges,
            "throttle": throttle,
            "needs": resreq.needs(stored, slots) if placing else None,
        }

    def _check_exec(self, spec: dict, known_env: tuple) -> tuple:
        """(cmd, (env, its hash, its bytes)): what exec takes, each string checked, within
        MAX_EXEC."""
        cmd = spec.get("cmd")
        if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
            raise P.ProtocolError(P.BAD_REQUEST, "cmd must be a non-empty list of strings")
        env = spec.get("env") or {}
        if not isinstance(env, dict):
            raise P.ProtocolError(P.BAD_REQUEST, "env must map names to strings")
        size = jobspec.command_bytes(cmd)
        if size > MAX_CMD_BYTES:  # stored with every job (an env is stored once)
            raise P.ProtocolError(P.BAD_REQUEST, f"cmd takes {size} bytes; at most {MAX_CMD_BYTES}")
        env_info = known_env if env is known_env[0] else self._env_info(env)
        jobspec.check_exec_size(size + env_info[2])
        return cmd, env_info

    def _env_info(self, env: dict) -> tuple:
        """(env, its hash, its exec bytes). One in memory was checked when it came: the
        submitter's environment, the same job after job, costs its hash, as before."""
        digest = hashlib.sha1(P.dumps_sorted(env)).hexdigest()
        size = self.env_sizes.get(digest)
        return env, digest, jobspec.environment_bytes(env) if size is None else size

    def _known_env(self, defaults: dict) -> tuple:
        """submit_many's shared environment, checked once for all its specs."""
        env = defaults.get("env")
        if not isinstance(env, dict):
            return (None,)
        try:
            return self._env_info(env)
        except jobspec.SpecError as exc:
            raise P.ProtocolError(P.BAD_REQUEST, f"defaults: {exc}") from None

    def _check_queue(self, spec: dict, in_queue: str | None = None) -> tuple:
        qname = jobspec.text(
            "queue", spec.get("queue") or self.conf.mbatchd.default_queue, jobspec.MAX_NAME
        )
        if qname not in self.qconf:
            raise P.ProtocolError(
                P.NOT_FOUND, f"Queue <{qname}> does not exist (queues: {', '.join(self.qconf)})"
            )
        qc = self.qconf[qname]
        if qname != in_queue and not self.queue_flag(qname, "open"):
            raise P.ProtocolError(P.DENIED, f"Queue <{qname}> is closed")
        return qname, qc

    def _create(self, ident, prep, req, now, lookup_env):
        job_id = self.next_id
        self.next_id += 1
        stored = prep["spec"]
        stored["env_id"] = self._intern_env(prep["env"], lookup_env)
        stored["from_host"] = stored["from_host"] or ident.get("host")
        kind = Array if prep["ranges"] else Job
        extra = {"ranges": prep["ranges"], "throttle": prep["throttle"]} if prep["ranges"] else {}
        job = kind(
            job_id,
            ident["user"],
            ident["uid"],
            prep["queue"],
            prep["name"],
            stored,
            req_id=req,
            slots=prep["slots"],
            max_attempts=prep["attempts"],
            submit_time=now,
            **extra,
        )
        job.needs = prep["needs"]
        if req is not None:
            self.by_req[req] = job_id
        if ident["user"] not in self.users:
            self.users.add(ident["user"])
            self.out.users.append((ident["user"], ident["uid"], now))
        if isinstance(job, Array):
            self.arrays[job_id] = job
            self.out.arrays[job_id] = job
        else:
            self.jobs[job_id] = job
            self._dirty(job, submitted(job, now))
            self.npend[job.queue] = self.npend.get(job.queue, 0) + 1
        self.listing.add(job_id)
        self._track_deadline(job)  # -t, whatever keeps it pending
        self._quota_created(job)
        if not self._depend_admit(job, now, prep["depend"]):  # -H, -w
            self._admit(job, now)  # -b
        return {"job": job_id, "queue": job.queue}

    def refuse_created(self, error: P.ProtocolError) -> int:
        """After a commit that failed: forget the jobs and arrays this turn created, and all
        that happened to them since (placed, killed, waited on), so that memory holds the store
        plus this turn's changes to stored jobs, which the shell writes again. Their bwaits
        get `error` (a ProtocolError). Returns how many it forgot."""
        arrays = [a for a in self.out.arrays.values() if not a.stored]
        jobs = [
            j
            for j in self.out.jobs.values()
            if not j.stored and (j.array is None or not j.array.stored)
        ]
        if not jobs and not arrays:
            return 0
        gone = {a.id for a in arrays} | {j.id for j in jobs if j.array is None}
        for job_id in gone:
            self._forget_depend(job_id)

        def refused(job_id: int) -> bool:
            return job_id in gone or split_id(job_id)[0] in gone

        for job in jobs:
            if job.state in STARTED:
                self._release(job)
            elif job.state == PEND:
                self.npend[job.queue] -= 1
            if job.array is None and job.state not in FINISHED:
                self._env_unref(job)
            del self.jobs[job.id], self.out.jobs[job.id]
        for arr in arrays:
            if arr.end_time is None:
                self._env_unref(arr)
            del self.arrays[arr.id], self.out.arrays[arr.id]
        for obj in jobs + arrays:
            self.by_req.pop(obj.req_id, None)
        for qname, user in {(o.queue, o.user) for o in jobs + arrays}:
            pending = self._queue(qname).pending
            fifo = deque(e for e in pending.get(user, ()) if not refused(e[1].id))
            if fifo:
                pending[user] = fifo
            else:
                pending.pop(user, None)
        self.out.events = [e for e in self.out.events if not refused(e.job_id)]
        self.users.difference_update(name for name, _, _ in self.out.users)
        self.out.users, self.out.envs = [], []  # only new jobs add them
        for msgs in self.out.outbox.values():
            for msg in msgs:
                if msg["op"] == "dispatch":
                    msg["jobs"] = [s for s in msg["jobs"] if not refused(s["id"])]
            msgs[:] = [m for m in msgs if m["op"] != "dispatch" or m["jobs"]]
        for job_id in [k for k in self.waiters if refused(k)]:
            self.out.woken += [(token, error) for _, token in self.waiters.pop(job_id)]
        self.out.woken = [
            (token, error if isinstance(r, dict) and refused(r["job"]) else r)
            for token, r in self.out.woken
        ]
        self._build_quotas(self.quota.used)  # without the jobs refused
        self.wake = True
        return len(gone)

    def _intern_env(self, env_info, lookup_env):
        env, digest, size = env_info
        env_id = self.env_ids.get(digest)
        if env_id is None:
            env_id = lookup_env(digest)
            if env_id is None:
                env_id = self.next_env
                self.next_env += 1
                self.out.envs.append((env_id, digest, env))
        self._env_ref(env_id, digest, env)
        self.env_sizes[digest] = size
        return env_id

    def kill(self, ident: dict[str, Any], msg: messages.Kill, now: float) -> dict[str, Any]:
        results = []
        for job_id in P.job_ids(msg):
            job = self._target(job_id)
            pending_in = self._pending_index(job_id) if job is None else None
            who = job or pending_in
            if who is None:
                results.append(
                    {
                        "job": job_id,
                        "ok": False,
                        "code": P.NOT_FOUND,
                        "message": f"Job <{label(job_id)}>: No matching job found",
                    }
                )
                continue
            if not self._may_act_on(ident, who):
                results.append(
                    {
                        "job": job_id,
                        "ok": False,
                        "code": P.DENIED,
                        "message": f"Job <{label(job_id)}>: User permission denied",
                    }
                )
                continue
            if job is None:
                assert pending_in is not None  # `who` is one of the two
                refusal = unstarted_refusal(job_id, requested_signal(msg))
                if refusal is not None:  # the index keeps its turn
                    results.append(refusal)
                    continue
                job = self._element_out_of_turn(pending_in, job_id)
            results.append(self._control(job, msg, now))  # -s, -r: roles/mbatchd/jobctl.py
        return {"results": results}

    def _may_act_on(self, ident, job):
        """Only the owner or a cluster admin may kill, modify or peek at a job."""
        return ident["user"] == job.user or ident["user"] in self.admins

    def peek_target(self, ident: dict[str, Any], job_id: object) -> Job:
        """The running job `bpeek JOBID` reads, or ProtocolError saying why not."""
        if type(job_id) is not int:
            raise P.ProtocolError(P.BAD_REQUEST, "field 'job' of 'peek' must be a job id")
        job = self.jobs.get(job_id)
        if job is None:
            raise P.ProtocolError(P.NOT_FOUND, f"Job <{label(job_id)}>: No matching job found")
        if not self._may_act_on(ident, job):
            raise P.ProtocolError(P.DENIED, f"Job <{label(job_id)}>: User permission denied")
        if job.state == PEND:
            raise P.ProtocolError(
                P.NOT_RUNNING, f"Job <{label(job_id)}>: Job is pending; no output yet"
            )
        if job.state not in STARTED:
            raise P.ProtocolError(
                P.NOT_RUNNING, f"Job <{label(job_id)}>: Job has finished; {self._output_of(job)}"
            )
        return job

    def _output_of(self, job: Job) -> str:
        """Where a finished job's output went, the path expanded as its host opened it."""
        array_id, index = split_id(job.id)
        job_index = (str(array_id), str(index)) if array_id else (str(job.id), "0")
        path = job.spec.get("out")
        if path is None and self.conf.sbatchd.default_output == "cwd":
            path = "lavalite-%J_%I.out" if array_id else "lavalite-%J.out"
        if path is None:
            return "its output was not kept (no -o)"
        base = jobscript.output_base(job.spec, *job_index, job.user)
        return f"its output is in {jobscript.output_file(path, 'out', base, *job_index)}"

    def launch_task(self, ident: dict[str, Any], msg: messages.Launch) -> tuple[Job, dict]:
        """blaunch: (the running job, the task to start on msg's host), or ProtocolError saying
        why not. Only the job's owner may start a task in it, and only on a host of its
        allocation."""
        job_id, host = msg.get("job"), msg.get("host")
        job = self.jobs.get(job_id) if type(job_id) is int else None
        if job is None or job.state != RUN:
            raise P.ProtocolError(
                P.NOT_RUNNING,
                f"Job <{label(job_id)}>: not running; blaunch starts tasks of a running job",
            )
        if ident["user"] != job.user:
            raise P.ProtocolError(P.DENIED, f"Job <{label(job_id)}>: User permission denied")
        slots_here = next((n for name, n in allocation(job) if name == host), None)
        if slots_here is None:
            raise P.ProtocolError(
                P.DENIED, f"Job <{label(job_id)}>: host {host!r} is not one of the job's hosts"
            )
        try:
            cmd, (env, _, _) = self._check_exec(dict(msg), (None,))
            task = {
                "cmd": cmd,
                "env": env,
                "cwd": jobspec.text("cwd", msg.get("cwd") or "/", jobspec.MAX_PATH),
                "interactive": relay.checked(msg.get("interactive")),
            }
        except jobspec.SpecError as exc:
            raise P.ProtocolError(P.BAD_REQUEST, str(exc)) from None
        if host != job.host:  # no attempt runs there: what its share of the job is
            task["part"] = part_of(job, slots_here)
        return job, task

    def _kill(self, job, now):
        name = label(job.id)
        if job.state == KILLED:
            return {
                "job": job.id,
                "ok": True,
                "message": f"Job <{name}>: Job has already been killed",
            }
        if job.state in FINISHED:
            return {
                "job": job.id,
                "ok": False,
                "code": "finished",
                "message": f"Job <{name}>: Job has already finished",
            }
        if job.state in WAITING:
            self._move(job, KILLED, now, KILLED_REASON)
            self._finish(job, now)
        else:
            if not job.kill_requested:
                job.kill_requested = True
                self._dirty(job)
            for host, _ in allocation(job):  # the tasks on its other hosts too (blaunch)
                self._kill_order(host, job.id, job.attempt)
        return {"job": job.id, "ok": True, "message": f"Job <{name}> is being terminated"}

    def _view(self, job, now):
        view = job_view(job, self.pending_reason(job, now) if job.state in WAITING else None)
        return {**view, **self.reservation_view(job.id)}

    def pending_reason(self, job: Job | Array, now: float) -> str:
        waits = self.depend_reason(job)
        if waits:
            return waits
        held = job.array is not None and self.reasons.get(("array", job.array.id))
        if held:
            return held
        if job.spec.get("begin", 0) > now:
            return job_options.PR_BEGIN
        if job.eligible_time > now:
            return f"{PR_BACKOFF} (eligible in {job.eligible_time - now:.0f} s)"
        reason = (
            self.reasons.get(("job", job.id))
            or self.reasons.get((job.queue, job.user))
            or self.reasons.get((job.queue, None))
        )
        if reason:
            return reason
        return PR_NO_SLOT if self.total_free <= 0 else PR_NEW

    def query_queues(self) -> dict[str, Any]:
        unhanded: dict[str, int] = {}
        for arr in self.arrays.values():
            unhanded[arr.queue] = unhanded.get(arr.queue, 0) + arr.remaining
        out = []
        for name, q in self.queues.items():
            qc = self.qconf.get(name)
            out.append(
                {
                    "name": name,
                    "priority": q.priority,
                    "status": ("Open" if self.queue_flag(name, "open") else "Closed")
                    + ":"
                    + ("Active" if q.active else "Inact"),
                    "max": q.max_running_queue,
                    "max_user": q.max_running_user,
                    "pend": self.npend.get(name, 0) + unhanded.get(name, 0),
                    "run": q.running,  # suspended jobs' slots too ("susp": how many)
                    "susp": self.suspended_slots("queue", name),
                    "description": qc.description if qc else "(not in queues.conf)",
                    "admin": self.admin_comment("queue", name),
                    "fairshare": qc.fairshare if qc else "",
                    "preemption": [qc.preemption, qc.preempt_action] if qc else ["", ""],
                    "share_info": self.share_info(name),
                    "placing": {k: getattr(qc, k) for k in PLACING} if qc else {},
                    "limits": {
                        k: getattr(qc, k)
                        for k in ("default_walltime", "max_walltime", "max_memory")
                    }
                    if qc
                    else {},
                }
            )
        return {"queues": out}

    def query_hosts(self) -> dict[str, Any]:
        held = self.reserved_by_host()
        return {
            "hosts": [
                {
                    "name": h.name,
                    # LSF's word for a host that a -x job holds
                    "status": "closed_Excl" if h.exclusive and h.status == HOST_OK else h.status,
                    "slots": h.slots,
                    "used": h.used,
                    "free": h.free,
                    "load": h.load,
                    "jobs": len(self.host_jobs[h.name]),
                    "susp": self.suspended_slots("host", h.name),
                    "admin": self.admin_comment("host", h.name),
                    "reserved": held.get(h.name, 0),
                }
                for h in self.hosts.values()
            ]
        }

    # --- hosts

    def host_register(self, name: str, msg: messages.Register, now: float) -> list[int]:
        """sbatchd (re)connects: its slots, the attempts it runs, its unacknowledged reports."""
        slots = P.require(msg, "slots", int)
        running = {(j, a) for j, a in P.require(msg, "running", list)}
        stopped = {(j, a) for j, a in msg.get("suspended") or ()}
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = Host(name)
            self.host_jobs[name] = set()
        self.all_slots += slots - host.slots
        host.slots = slots
        self.max_slots = max(self.max_slots, slots)
        host.connected = True
        self.registered[name] = now
        self.lost.pop(name, None)
        if host.status != HOST_CLOSED:
            host.status = HOST_OK
        self.out.hosts[name] = host
        acks = self.reports(name, msg.get("reports") or [], now)
        for job_id in list(self.host_jobs[name]):
            job = self.jobs[job_id]
            if job.host != name:  # a job that started on another of its hosts
                continue
            if (job.id, job.attempt) in running:
                if job.kill_requested:
                    self._kill_order(name, job.id, job.attempt)
                self._suspended_again(name, job, (job.id, job.attempt) in stopped)
            elif job.kill_requested:
                # never delivered, and killed meanwhile: it ends here, it is not sent again
                self._ended(job, {"reason": KILLED_REASON}, now)
            else:
                # Committed as RUN but never delivered (mbatchd died in between): send again.
                # sbatchd starts an attempt at most once, so this cannot run it twice.
                self._dispatch_msgs(name, [job])
        for job_id, attempt in running:
            known = self.jobs.get(job_id)
            if (
                known is None
                or known.state not in STARTED
                or known.attempt != attempt
                or all(host != name for host, _ in allocation(known))
            ):
                self._kill_order(name, job_id, attempt, stale=True)
        self._set_free(host)
        self.wake = True
        return acks

    def host_gone(self, name: str, now: float) -> None:
        """The sbatchd connection dropped. Its jobs keep running there; it reports on return."""
        host = self.hosts.get(name)
        if host is None:
            return
        host.connected = False
        if host.status == HOST_OK:
            host.status = HOST_UNAVAIL
        host.load["time"] = now
        self.out.hosts[name] = host
        self._set_free(host)
        if self.host_jobs[name]:
            self.lost.setdefault(name, now)

    def host_load(self, loads: dict[str, dict[str, Any]], now: float) -> list[str]:
        """LIM's view: {host: {...load...}}. Returns the hosts whose sbatchd is connected but
        which LIM declares dead (heartbeats missed): the shell drops those connections. An
        sbatchd that registered after the host fell silent is trusted: its LIM comes back
        a little later."""
        dead = []
        for name, load in loads.items():
            host = self.hosts.get(name)
            if host is not None:
                host.load = load
                host.labels = load.get("labels", [])
                silent_since = now - load.get("silent", 0)
                if (
                    host.connected
                    and not load.get("alive", True)
                    and self.registered.get(name, 0) < silent_since
                ):
                    dead.append(name)
        self.check_loads(now)
        if any(reason in WAIT_ON_FACTS for reason in self.reasons.values()):
            self.wake = True  # a job waits for a host's facts to change: plan again
        return dead

    def _check_lost(self, now):
        """Hosts UNAVAIL for node_lost_grace: their jobs go back to PEND (rerunnable queue) or
        end FAILED(node_lost). A copy still running there is killed when the host returns
        (host_register: an attempt mbatchd does not expect). A host whose LIM still answers
        only lost its sbatchd (restarting, say): its jobs run on, as LSF's UNKWN jobs."""
        grace = self.conf.mbatchd.node_lost_grace
        for name, since in list(self.lost.items()):
            if now - since < grace or self.hosts[name].load.get("alive"):
                continue
            del self.lost[name]
            for job_id in sorted(self.host_jobs[name]):
                self._node_lost(self.jobs[job_id], name, now)

    def _node_lost(self, job, lost, now):
        """`job` had a part on the lost host `lost`: what runs on its other hosts is killed."""
        for host, _ in allocation(job):
            if host != lost:
                self._kill_order(host, job.id, job.attempt)
        qc = self.qconf.get(job.queue)
        if job.kill_requested or not job_options.rerunnable(job, bool(qc and qc.rerunnable)):
            self._ended(job, {"reason": KILLED_REASON if job.kill_requested else NODE_LOST}, now)
            return
        self._release(job)
        self._move(job, PEND, now, f"{NODE_LOST}: requeued (rerunnable)")
        unplace(job)
        self._enqueue(job)

    # --- reports from sbatchd

    def reports(self, host: str, reports: list[Any], now: float) -> list[int]:
        """Apply START/EXIT/part reports; return the report ids to acknowledge after commit.
        A report of an attempt that is no longer current changes nothing and is acknowledged."""
        acks = []
        for rep in reports:
            if not isinstance(rep, dict) or not isinstance(rep.get("rid"), int):
                raise P.ProtocolError(P.BAD_REQUEST, "a report needs an integer rid")
            acks.append(rep["rid"])
            if rep.get("kind") == "part":  # blaunch's tasks on another host: after the job, often
                self.part_report(host, rep)
                continue
            job = self.jobs.get(rep.get("job"))  # type: ignore[arg-type]  # a wire value: no id, no job
            if (
                job is None
                or job.state not in STARTED
                or job.attempt != rep.get("attempt")
                or job.host != host
            ):
                continue
            if rep.get("kind") == "start":
                job.start_time = rep.get("time", now)
                self._dirty(job)
                if "notify" in job.spec:
                    self._notice(job, "begin")
            elif rep.get("kind") == "exit":
                self._ended(job, rep, now)
        return acks

    def _ended(self, job, rep, now):
        code, sig = rep.get("exit_code"), rep.get("exit_signal")
        why = endings.reason(job.spec, rep.get("reason") or "", code, sig)
        job.exit_code, job.exit_signal = code, sig
        message = rep.get("message")
        job.message = message[:MAX_MESSAGE] if isinstance(message, str) and message else None
        # with what the job's parts on its other hosts reported before this (roles/mbatchd/parts.py)
        job.cpu_time, job.max_mem = accounting.combined(
            (job.cpu_time, job.max_mem), accounting.usage(rep)
        )
        if job.start_time is None:
            job.start_time = rep.get("start_time")
        self._release(job)
        # KILLED only if the kill ended it (sbatchd says so): a job that ended by itself
        # before a bkill reached it (its report waiting in the inbox, say) keeps its ending,
        # as in LSF and Slurm, but is not tried again
        if why == KILLED_REASON:
            state = KILLED
        else:
            state = FAILED if why else DONE
        if why == PRE_EXEC and not job.kill_requested and self._requeue_pre_exec(job, now):
            return
        if (
            state == FAILED
            and endings.retried(why, job.attempt, job.max_attempts)
            and not job.kill_requested
        ):
            qc = self.qconf.get(job.queue)
            base = qc.retry_backoff if qc else 10.0
            cap = qc.retry_backoff_max if qc else 300.0
            delay = min(cap, base * 2 ** (job.attempt - 1))
            detail = f"retry {job.attempt + 1}/{job.max_attempts} after {_describe(why, code, sig)}"
            self._move(job, PEND, now, detail)
            unplace(job)
            job.eligible_time = now + delay
            heapq.heappush(self.backoff, (job.eligible_time, job.id))
            return
        self._move(job, state, now, "" if state == DONE else why)
        self._finish(job, now)

    def _release(self, job):
        """A RUN job leaves its hosts: give their slots back."""
        if job.needs is None and job.hosts is None:  # one host, slots only
            host = self.hosts[job.host]
            host.used -= job.slots
            self.host_jobs[job.host].discard(job.id)
            self._set_free(host)
        else:
            for host in hold(job, self.hosts, self.host_jobs, -1):
                self._set_free(host)
            for host, _ in (job.hosts or ())[1:]:  # blaunch's tasks there end with the job
                self._kill_order(host, job.id, job.attempt)
        self._count_run(job, -1)
        self.wake = True

    # --- time and scheduling

    def tick(self, now: float) -> None:
        """Release jobs whose backoff expired; drop finished jobs older than clean_period from
        memory (they stay in the store)."""
        self.clock = now
        while self.backoff and self.backoff[0][0] <= now:
            due, job_id = heapq.heappop(self.backoff)
            job = self.jobs.get(job_id) or self.arrays.get(job_id)  # an array: its begin time
            # an entry is pushed with the job's eligible time: bmod -b may have moved it since
            if job is not None and job.state == PEND and job.eligible_time == due:
                self._enqueue(job)
                if not isinstance(job, Array):
                    self._dirty(job)
        self._expire_deadlines(now)
        self._check_lost(now)
        runs_out = self.reservation_due()
        if runs_out is not None and runs_out <= now:
            self.wake = True  # a reservation ran out: its slots go to others this turn
        horizon = now - self.conf.mbatchd.clean_period
        while self.finished and self.finished[0][0] < horizon:
            _, job_id = self.finished.popleft()
            gone = self.jobs.get(job_id) or self.arrays.get(job_id)
            if gone is not None and gone.finished and gone.end_time < horizon:
                del (self.arrays if isinstance(gone, Array) else self.jobs)[job_id]
                if not split_id(job_id)[0]:
                    self.listing.gone()
                self.counted.pop(job_id, None)
                self.depend_final.pop(job_id, None)  # no brequeue reaches it now
                if gone.req_id:
                    self.by_req.pop(gone.req_id, None)

    def next_timer(self) -> float | None:
        times = [heap[0][0] for heap in (self.backoff, self.deadlines) if heap]
        times += [since + self.conf.mbatchd.node_lost_grace for since in self.lost.values()]
        due = self.reservation_due()
        if due is not None:
            times.append(due)
        return min(times, default=None)

    def schedule(self, now: float, limit: int = 0) -> int:
        """One scheduling pass: plan, then apply the placements to memory and the outbox.
        `limit`: slots to place at most (0: all it can), so that a turn stays short when
        thousands of slots free at once; the rest go in the next turn."""
        self.wake = False
        self.clock = now
        if self.to_resume:  # preempted jobs get their slots back before anyone else
            self._resume_preempted(now)
        queues = list(self.queues.values())
        result = plan(
            Snapshot(
                now,
                queues,
                self.free_by_host,
                self.total_free,
                self.max_slots,
                limit,
                self.hosts,
                self.limits,
                self.reservations,
                self.running_ends,
                self.preempt,
            )
        )
        self.reservations = result.reservations
        if result.victims:
            self._apply_preemptions(result, now)
        placed = sum(job.slots for job, _ in result.placements)
        self.wake = bool(limit) and placed >= limit  # more to place: plan again next turn
        self.reasons = result.reasons
        by_host: dict[str, list[Job]] = {}
        wide = result.wide
        for i, (job, host_name) in enumerate(result.placements):
            if isinstance(job, Array):
                job = self._element(job, job.take())
            job.host = host_name
            if wide and i in wide:
                job.hosts = wide[i]
                job.slots = sum(n for _, n in job.hosts)
                for other, _ in job.hosts[1:]:
                    by_host.setdefault(other, [])  # its free slots change too
            self._move(job, RUN, now)
            if job.needs is None and job.hosts is None:
                self.hosts[host_name].used += job.slots
                self.host_jobs[host_name].add(job.id)
            else:
                hold(job, self.hosts, self.host_jobs, +1)
            self._count_run(job, +1)
            self.touched.add((job.queue, job.user))
            by_host.setdefault(host_name, []).append(job)
        for host_name, jobs in by_host.items():
            self._set_free(self.hosts[host_name])
            if jobs:
                self._dispatch_msgs(host_name, jobs)
        # Drop the stale heads of the FIFOs that changed, not of every queue and user.
        for qname, user in self.touched:
            pending = self._queue(qname).pending
            fifo = pending.get(user)
            while fifo and not live(fifo[0]):
                fifo.popleft()
            if fifo is not None and not fifo:
                del pending[user]
        self.touched.clear()
        return len(result.placements)

    def _dispatch_msgs(self, host, jobs):
        """One dispatch message per host per turn; environments sent once per message."""
        envs, specs = {}, []
        for job in jobs:
            env_id = job.spec.get("env_id")
            if env_id in self.envs:
                envs[str(env_id)] = self.envs[env_id][1]
            spec = {
                "id": job.id,
                "attempt": job.attempt,
                "user": job.user,
                "uid": job.uid,
                "queue": job.queue,
                "name": job.name,
                "slots": job.slots,
                "hosts": job.hosts or [[host, job.slots]],
                "submit_time": job.submit_time,  # LSF's job report says it
                **job.spec,
            }
            if job.needs is not None and spec.get("memory") is None:
                spec["memory"] = memory_limit(job, spec["hosts"][0][1])
            if job.array is not None:  # LSF: LSB_JOBID is the array's, LSB_JOBINDEX the index
                spec["array"], spec["index"] = split_id(job.id)
                lines = spec.pop("lines", None)
                if lines is not None:
                    spec["line"] = lines[spec["index"] - 1]
            specs.append(spec)
        self._send(host, {"op": "dispatch", "jobs": specs, "envs": envs})


def _check_interactive(params: object, qname: str, qc: Any, ranges: object) -> dict | None:
    """bsub -I's `interactive` as stored (None for a batch job), within the queue's
    `interactive` setting (LSF's INTERACTIVE = YES | NO | ONLY)."""
    if params is None:
        if qc.interactive == "only":
            raise jobspec.SpecError(f"queue <{qname}> accepts interactive jobs only (bsub -I)")
        return None
    if qc.interactive == "no":
        raise jobspec.SpecError(f"queue <{qname}> does not accept interactive jobs")
    if ranges is not None:
        raise jobspec.SpecError("an interactive job (-I) cannot be a job array")
    return relay.checked(params)


def _req(req):
    if req is not None and (not isinstance(req, str) or len(req) > 128):
        raise P.ProtocolError(P.BAD_REQUEST, "field 'req' must be a string of at most 128")
    return req


def _limit(spec, field, option, qname, default, maximum, fmt, bound):
    """A per-job limit (memory bytes, pids): the job's, else the queue's default; bounded by
    the queue's maximum (0 = none), and by `bound` in any case. None = unlimited."""
    value = spec.get(field)
    if value is None:
        return default or None
    jobspec.integer(f"{field} ({option})", value, 1, bound)
    if maximum and value > maximum:
        raise P.ProtocolError(
            P.BAD_REQUEST,
            f"{option} {fmt(value)} exceeds queue <{qname}>'s max_{field} of {fmt(maximum)}",
        )
    return value


def _describe(why, code, sig):
    if why == EXIT:
        return f"exit code {code}"
    if why == SIGNAL:
        return f"signal {sig}"
    return why
