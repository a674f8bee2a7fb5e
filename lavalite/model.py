"""The job/host/queue model and the job state machine.

Plain data with __slots__ (mbatchd holds every unfinished job in memory), and one transition
function through which every state change goes, so an illegal move cannot be written.
"""

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from lavalite.job_array import Array
    from lavalite.resreq import Needs

PEND, RUN, DONE, FAILED, KILLED = "PEND", "RUN", "DONE", "FAILED", "KILLED"
PSUSP = "PSUSP"  # LSF's held pending job (bsub -H): it waits for bresume
# LSF's suspended running jobs: stopped by their user or an admin (bstop), or by the system
# (Core.suspend_by_system: load, preemption). Their processes are frozen on their hosts; they
# keep their slots, and their run limit does not count the time suspended.
USUSP, SSUSP = "USUSP", "SSUSP"
FINISHED = frozenset((DONE, FAILED, KILLED))
WAITING = frozenset((PEND, PSUSP))  # not started: bjobs -l gives the pending reason
SUSPENDED = frozenset((USUSP, SSUSP))
STARTED = frozenset((RUN, USUSP, SSUSP))  # an attempt holds its hosts
STATES = (PEND, PSUSP, RUN, USUSP, SSUSP, DONE, FAILED, KILLED)

# Legal moves. RUN -> PEND is a retry (after backoff), a requeue after node loss, or a dispatch
# that never reached its host. PEND -> FAILED: its termination time (bsub -t) came first.
# PEND <-> PSUSP: held at submit (-H), released by bresume. RUN <-> USUSP/SSUSP: stopped and
# resumed; a suspended job ends as a running one does (bkill, node loss, brequeue), and a job
# the system suspended may be stopped by its user too (SSUSP -> USUSP). brequeue: a job goes
# back to PEND, or PSUSP with -H, from any state but PSUSP (a running job killed, a pending one
# queued again, a finished one run again: -d, -e); it keeps its id and its next run is attempt
# N+1.
_REQUEUED = (PEND, PSUSP)
_ENDS = (DONE, FAILED, KILLED, *_REQUEUED)
TRANSITIONS = {
    PEND: frozenset((RUN, KILLED, FAILED, *_REQUEUED)),
    PSUSP: frozenset((PEND, KILLED, FAILED)),
    RUN: frozenset((*_ENDS, USUSP, SSUSP)),
    USUSP: frozenset((*_ENDS, RUN)),
    SSUSP: frozenset((*_ENDS, RUN, USUSP)),
    DONE: frozenset(_REQUEUED),
    FAILED: frozenset(_REQUEUED),
    KILLED: frozenset(_REQUEUED),
}

# Why an attempt ended (FAILED(reason) in bjobs). "exit" and "signal" come with a number.
EXIT, SIGNAL, TIMEOUT, KILLED_REASON, OOM, NODE_LOST, EXEC_FAILED = (
    "exit",
    "signal",
    "timeout",
    "killed",
    "oom",
    "node_lost",
    "exec_failed",
)
# Endings of bsub's options: -E failed (requeued), -t came, -c exceeded (LSF's TERM_DEADLINE,
# TERM_CPULIMIT).
PRE_EXEC, DEADLINE, CPULIMIT = "pre_exec", "deadline", "cpulimit"
# Endings worth another attempt: the job itself failed. A timeout, a kill or an OOM would only
# repeat, so they end the job at once (Slurm and LSF requeue only on request, too).
RETRYABLE = frozenset((EXIT, SIGNAL, EXEC_FAILED, NODE_LOST))

# Why a job is pending (bjobs -l), as LSF's pending reasons.
PR_NEW = "New job is waiting for scheduling"
PR_USER_CAP = "The user has reached the queue's per-user job slot limit (max_running_user)"
PR_QUEUE_CAP = "The queue has reached its job slot limit (max_running_queue)"
PR_NO_SLOT = "No host has a free job slot"
PR_BACKOFF = "Waiting for the retry backoff to expire"
PR_QUEUE_INACTIVE = "The queue is inactivated"
PR_ARRAY_LIMIT = "The job array has reached its limit of running elements (%LIMIT)"
PR_HELD = "The job was suspended by the user while pending"
PR_DEPEND = "Job dependency condition not satisfied"
PR_DEPEND_NEVER = "Dependency condition invalid or never satisfied"
# A job with -R, -m, -x: the first test that turned every host with a free slot away
PR_ASKED_HOSTS = "Not specified in job submission"
PR_SELECT = "Job's resource requirements not satisfied"
PR_EXCLUSIVE = "Job's requirement for exclusive execution not satisfied"
PR_RUSAGE_MEM = "Job's requirements for reserving resource (mem) not satisfied"
PR_SPAN = "Not enough processors to meet the job's spanning requirement"
# a host LIM has not reported yet, to a job of a queue with load_sched
PR_LOAD_UNKNOWN = "Load information unavailable"
# Why a job is suspended (bjobs -l, -s; the event's reason), as LSF's suspending reasons.
SR_USER = "The job was suspended by user"
SR_ADMIN = "The job was suspended by LSF admin or root"

# The spec's fields of bsub's timing, pre/post-execution and bookkeeping options, as job_view
# shows them (roles/cli/bsub_options.py makes them)
OPTION_FIELDS = (
    "begin",
    "term_time",
    "pre_exec",
    "post_exec",
    "rerunnable",
    "project",
    "user_group",
    "description",
    "priority",
    "cpu_limit",
    "notify",
    "mail_user",
)

# Host states as bhosts shows them.
HOST_OK, HOST_CLOSED, HOST_UNAVAIL = "ok", "closed_Adm", "unavail"


# An array element is the job `array_id << ELEMENT_BITS | index` (see lavalite.job_array): it needs
# no id of its own, and `ID[INDEX]` maps to one integer on the wire.
ELEMENT_BITS = 32
MAX_INDEX = (1 << ELEMENT_BITS) - 1


def element_id(array_id: int, index: int) -> int:
    return array_id << ELEMENT_BITS | index


def split_id(job_id: int) -> tuple[int, int]:
    """(array id, index) of an element; (0, job id) of anything else."""
    return job_id >> ELEMENT_BITS, job_id & MAX_INDEX


def label(job_id: int) -> str:
    """How users see a job id: 42, or 42[7] for an element."""
    array_id, index = split_id(job_id)
    return f"{array_id}[{index}]" if array_id else str(job_id)


class IllegalTransition(Exception):
    pass


class Job:
    """One job. `spec` is immutable after submit (cmd, cwd, out, err, env_id, walltime, ...);
    the other attributes are its mutable state."""

    __slots__ = (
        "id",
        "req_id",
        "user",
        "uid",
        "queue",
        "name",
        "spec",
        "slots",
        "state",
        "reason",
        "attempt",
        "max_attempts",
        "host",
        "submit_time",
        "start_time",
        "end_time",
        "eligible_time",
        "exit_code",
        "exit_signal",
        "message",
        "cpu_time",
        "max_mem",
        "kill_requested",
        "pend_seq",
        "stored",
        "array",
        "needs",
        "hosts",
        "usage",
    )

    def __init__(
        self,
        id: int,
        user: str,
        uid: int | None,
        queue: str,
        name: str,
        spec: dict,
        *,
        req_id: str | None = None,
        slots: int = 1,
        max_attempts: int = 1,
        submit_time: float = 0.0,
    ) -> None:
        self.id = id
        self.req_id = req_id
        self.user = user
        self.uid = uid
        self.queue = queue
        self.name = name
        self.spec = spec
        self.slots = slots
        self.state = PEND
        self.reason = ""
        self.attempt = 0
        self.max_attempts = max_attempts
        self.host: str | None = None
        self.submit_time = submit_time
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.eligible_time = submit_time
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self.message: str | None = (
            None  # what the worker said of the last attempt's end, if anything
        )
        # what the last attempt used, as its worker measured it at its end (None: not known)
        self.cpu_time: float | None = None  # seconds
        self.max_mem: int | None = None  # peak memory, bytes
        self.kill_requested = False
        self.pend_seq = 0  # FIFO key inside its queue; set each time the job enters PEND
        self.stored = False  # has a row in the store (insert vs update)
        self.array: Array | None = None  # the Array of an array element
        self.needs: Needs | None = None  # -R, -m, -x, -n MIN,MAX (lavalite.resreq)
        # [[host, slots], ...] while placed on several hosts or with -n MIN,MAX (first = host)
        self.hosts: list[list] | None = None
        # a started attempt's figures now, from its worker's last usage frame (job_view's
        # USAGE_FIELDS), kept while it runs or is suspended; in memory only
        self.usage: dict | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def stat(self) -> str:
        """The STAT column: FAILED carries its reason, as FAILED(timeout)."""
        if self.state == FAILED and self.reason:
            return f"FAILED({self.reason})"
        return self.state


class Event:
    """A row of job_events: one state change, written in the same transaction as the job row."""

    __slots__ = ("job_id", "time", "old", "new", "reason", "host", "attempt")

    def __init__(
        self,
        job_id: int,
        time: float,
        old: str | None,
        new: str,
        reason: str,
        host: str | None,
        attempt: int,
    ) -> None:
        self.job_id, self.time, self.old, self.new = job_id, time, old, new
        self.reason, self.host, self.attempt = reason, host, attempt

    def as_tuple(self) -> tuple:
        return (self.job_id, self.time, self.old, self.new, self.reason, self.host, self.attempt)


def transition(job: Job, new: str, now: float, reason: str = "") -> Event:
    """Move `job` to state `new`, or raise IllegalTransition. Returns the Event to store.

    Side effects on times follow the state: entering RUN clears the previous attempt's end
    (resuming a suspended job goes on with the same attempt), entering a finished state stamps
    end_time."""
    old = job.state
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"job {label(job.id)}: {old} -> {new} is not allowed")
    job.state = new
    job.reason = reason
    if new == RUN and old not in SUSPENDED:
        job.attempt += 1
        job.start_time = None  # set by the START report
        job.end_time = None
        job.exit_code = job.exit_signal = job.message = job.cpu_time = job.max_mem = None
        job.usage = None
    elif new in _REQUEUED:
        job.start_time = None  # bjobs shows the attempt to come, not the one that ended
        job.end_time = None  # a finished job requeued (brequeue -d, -e) has not ended
        job.usage = None
    elif new in FINISHED:
        job.end_time = now
        job.usage = None  # its end figures are cpu_time and max_mem
    return Event(job.id, now, old, new, reason, job.host, job.attempt)


def run_record(job: Job) -> tuple:
    """A finished job's run as the store keeps it when brequeue -d/-e supersedes it
    (store.history.JOB_RUN_COLS): the job's row then holds the next run."""
    return (
        job.id,
        job.attempt,
        job.state,
        job.reason,
        job.host,
        job.slots,
        job.start_time,
        job.end_time,
        job.exit_code,
        job.exit_signal,
        job.cpu_time,
        job.max_mem,
    )


class Host:
    """A worker as mbatchd sees it: slots from sbatchd's registration, load from LIM."""

    __slots__ = (
        "name",
        "slots",
        "used",
        "status",
        "connected",
        "load",
        "labels",
        "stored",
        "reserved",
        "exclusive",
        "_facts",
        "_facts_of",
    )

    def __init__(self, name: str, slots: int = 0) -> None:
        self.name = name
        self.slots = slots
        self.used = 0
        self.status = HOST_UNAVAIL
        self.connected = False
        self.load: dict = {}
        self.labels: list[str] = []
        self.stored = False
        self._facts: dict = {}
        self._facts_of: dict | None = None  # the load _facts were made from
        self.reserved = 0  # bytes of memory that running jobs' rusage[mem] hold
        self.exclusive = 0  # running -x jobs: the host takes no other job meanwhile

    @property
    def facts(self) -> dict:
        """-R's view of the host (lavalite.resreq.host_facts), made from its load when first
        asked after each load report: mbatchd does not pay for it on every report."""
        if self._facts_of is not self.load:
            from lavalite.resreq import host_facts

            self._facts = host_facts(self.load, self.labels)
            self._facts_of = self.load
        return self._facts

    @property
    def free(self) -> int:
        return self.slots - self.used if self.status == HOST_OK and not self.exclusive else 0


# A running job's figures in its view; None until its worker's first sample, and once it ended
USAGE_FIELDS = ("mem", "swap", "nthreads", "pgid", "run_pids", "usage_time")
_NO_USAGE = dict.fromkeys(USAGE_FIELDS)


def job_view(job: Job, pend_reason: str | None = None) -> dict:
    """The JSON shape of a job in replies (bjobs, --json). Stable: scripts read it.
    An array element's id is array_id << 32 | index; "label" is how users write it, ID[INDEX]."""
    spec = job.spec
    array_id, index = split_id(job.id)
    return {
        "id": job.id,
        "label": label(job.id),
        "array": array_id or None,
        "index": index if array_id else None,
        "user": job.user,
        "queue": job.queue,
        "name": job.name,
        "state": job.state,
        "stat": job.stat,
        "reason": job.reason,
        "pend_reason": pend_reason if job.state in WAITING else None,
        "susp_reason": job.reason if job.state in SUSPENDED else None,
        "depend": spec.get("depend"),
        "from_host": spec.get("from_host"),
        "exec_host": job.host,
        "exec_hosts": job.hosts or ([[job.host, job.slots]] if job.host else None),
        "submit_time": job.submit_time,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "exit_code": job.exit_code,
        "exit_signal": job.exit_signal,
        "message": job.message,
        "cpu_time": job.cpu_time,
        "max_mem": job.max_mem,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "slots": job.slots,
        "cmd": spec.get("cmd"),
        "cwd": spec.get("cwd"),
        "out": spec.get("out"),
        "err": spec.get("err"),
        "walltime": spec.get("walltime"),
        "memory": spec.get("memory"),
        "pids": spec.get("pids"),
        "kill_requested": job.kill_requested,
        **{field: spec.get(field) for field in OPTION_FIELDS},
        "resreq": spec.get("resreq"),
        "asked_hosts": spec.get("asked_hosts"),
        "exclusive": bool(spec.get("exclusive")),
        "interactive": _interactive_option(spec.get("interactive")),
        **_NO_USAGE,
        **(job.usage or {}),  # while it runs: cpu_time and max_mem so far too
    }


def _interactive_option(params: dict | None) -> str | None:
    """Which of bsub -I, -Ip, -Is made an interactive job (None: a batch job)."""
    if params is None:
        return None
    return "-Is" if params.get("shell") else "-Ip" if params.get("pty") else "-I"


def submitted(job: Job, now: float) -> Event:
    """The first event of a job's life (no previous state)."""
    return Event(job.id, now, None, PEND, "submitted", None, 0)
