"""The protocol's messages, one type per operation: what each end sends and reads.

Types only, checked by mypy: at run time a message is the plain dict the JSON codec makes, with
no validation layer (a handler checks the fields it takes, lavalite.protocol.require). Where two
programs build the same message (sbatchd and `lavalite simulate`), they build it here.
Standard library only, and cheap to import: the CLI loads it.
"""

from typing import Any, NotRequired, TypedDict

from lavalite.protocol import VERSION


class Envelope(TypedDict):
    """Every request and one-way message: the version, the operation, the request id (None
    for a message nobody answers)."""

    v: int
    op: str
    id: int | None


class ErrorBody(TypedDict):
    code: str
    message: str


class Reply(TypedDict):
    """Every reply: the request's id; `ok`, with the op's fields, or the error."""

    v: int
    id: int | None
    ok: bool
    error: NotRequired[ErrorBody]


class Redirect(Reply):
    """A backup candidate's refusal (error code "redirect")."""

    master: str | None  # the master to dial instead; None while none is elected


# --- login (lavalite.auth): the accepting side's challenge, the dialler's signed hello


class Challenge(Envelope):
    nonce: str


class Hello(Envelope):
    role: str
    host: str
    to: str
    sn: str  # the challenge's nonce this hello answers
    cn: str  # the dialler's own nonce
    ts: float
    sig: str
    uid: NotRequired[int]  # role "user"
    user: NotRequired[str]


class HelloAnswer(Reply):
    """The acceptor's sealed answer to a good hello: its proof that it holds the key."""

    sig: NotRequired[str]


# --- user requests to mbatchd


class Submit(Envelope):
    spec: dict[str, Any]  # lavalite.jobspec: cmd, queue, name, env, cwd, ...
    req: str | None  # the client's request id: a submit sent again makes no second job


class SubmitReply(Reply):
    job: str | int
    queue: str


class SubmitMany(Envelope):
    defaults: dict[str, Any]
    specs: list[dict[str, Any]]
    req: str | None


class SubmitManyReply(Reply):
    jobs: list[int]
    queues: list[str]


class Jobs(Envelope):
    jobs: list[str | int]
    users: NotRequired[list[str] | None]
    all: NotRequired[bool]
    queue: NotRequired[str | None]
    arrays: NotRequired[bool]
    # a page (roles/mbatchd/listing.py): jobs at most, the cursor of the last answer, states
    limit: NotRequired[int | None]
    after: NotRequired[int | None]
    states: NotRequired[list[str] | None]
    # bjobs -J (`*` matches any characters), -P, -G, -m
    name: NotRequired[str | None]
    project: NotRequired[str | None]
    user_group: NotRequired[str | None]
    host: NotRequired[str | None]


class History(Envelope):
    """bhist and bacct: jobs from the store (roles/mbatchd/history.py)."""

    ids: NotRequired[list[int] | None]
    users: NotRequired[list[str] | None]  # None: the caller's; "all" among them: everyone's
    queue: NotRequired[str | None]
    project: NotRequired[str | None]
    ended: NotRequired[list[float] | None]  # [time0, time1] of the end
    finished: NotRequired[bool | None]  # True: finished only; False: unfinished only
    events: NotRequired[bool]  # each job's events too
    summary: NotRequired[bool]  # bacct's summary too
    limit: NotRequired[int | None]  # jobs at most (0: the summary alone)


class HistoryReply(Reply):
    jobs: list[dict[str, Any]]
    more: bool  # more jobs matched than the answer holds
    summary: NotRequired[dict[str, Any]]


class JobsReply(Reply):
    jobs: list[dict[str, Any]]
    missing: list[str | int]
    next: int | None  # the `after` of the next page; None: this was the last


class Kill(Envelope):
    jobs: list[str | int]
    signal: NotRequired[int]  # bkill -s: this signal instead of a kill
    force: NotRequired[bool]  # bkill -r: KILLED now, without waiting for the host


class KillResult(TypedDict):
    job: str | int
    ok: bool
    message: str
    code: NotRequired[str]


class KillReply(Reply):
    results: list[KillResult]


class Resume(Envelope):
    """bresume: held jobs (PSUSP) back to PEND; the reply is a KillReply's results."""

    jobs: list[str | int]


class Requeue(Envelope):
    """brequeue: jobs killed or ended and queued again; the reply is a KillReply's results."""

    jobs: list[str | int]
    kinds: NotRequired[list[str]]  # of "run" (the default), "pend", "done", "exit"
    hold: NotRequired[bool]  # -H: requeued to PSUSP


class Move(Envelope):
    """btop/bbot: a pending job to the top or bottom of its user's jobs in its queue."""

    job: int
    to: str  # "top" or "bottom"
    position: NotRequired[int]  # from the top or the bottom, 1 (the default) the first


class Switch(Envelope):
    """bswitch: pending jobs to another queue; the reply is a KillReply's results."""

    queue: str
    jobs: list[str | int]


class Modify(Envelope):
    """bmod: one job's spec fields changed (`spec`) or set back to their defaults (`reset`)."""

    job: int  # a job, an array (all its elements not finished) or an element
    spec: dict[str, Any]
    reset: list[str]
    indices: NotRequired[str]  # of array `job`: only these ("1-3,7"), as bmod "ID[1-3,7]"


class Badmin(Envelope):
    action: str  # hclose hopen qclose qopen qinact qact reconfig mbdrestart showstatus
    names: NotRequired[list[str]]  # hosts or queues, or ["all"]
    comment: NotRequired[str]  # -C


class Wait(Envelope):
    job: str | int
    cond: str  # "ended" or "done"


class WaitReply(Reply):
    job: str | int
    cond: str


class Queues(Envelope):
    pass


class QueuesReply(Reply):
    queues: list[dict[str, Any]]


class Quotas(Envelope):
    pass


class QuotasReply(Reply):
    quotas: list[dict[str, Any]]  # roles/mbatchd/quotas.py QuotaBook.view


class LimitUsage(Envelope):
    pass


class LimitUsageReply(Reply):
    limits: list[dict[str, Any]]  # roles/mbatchd/limits.py LimitOps.query_limits


class Hosts(Envelope):
    pass


class HostsReply(Reply):
    hosts: list[dict[str, Any]]


class Users(Envelope):
    """busers: pending and running slots of these users (None: the caller; "all")."""

    users: NotRequired[list[str] | None]


class LoadView(Envelope):
    """lsload, lshosts: the master LIM's last view of every host, as mbatchd holds it."""


class Ping(Envelope):
    pass


class PingReply(Reply):
    host: str
    pid: int


class Stats(Envelope):
    pass


class StatsReply(Reply):
    """Turn and scheduling durations in seconds (p50, p99, max of the last 100,000 turns)
    and what mbatchd's memory holds."""

    turns: int
    turn_p50: float
    turn_p99: float
    turn_max: float
    sched_p50: float
    sched_p99: float
    sched_max: float
    reports_waiting: int
    budget_places: int
    jobs_in_memory: int
    arrays_in_memory: int
    pending: int
    running: int


class Peek(Envelope):
    job: str | int
    offsets: NotRequired[list[int] | None]  # bytes of each output already read
    wait: NotRequired[float | None]  # seconds to wait for more output


class Launch(Envelope):
    """blaunch: start `cmd` on `host`, one of the running job's hosts, relayed to `interactive`."""

    job: int
    host: str
    cmd: list[str]
    cwd: str
    env: dict[str, str]
    interactive: dict[str, Any]  # where blaunch listens: host, port, token


class PeekReply(Reply):
    data: list[str | None]
    offsets: list[int]
    more: bool
    running: bool
    streams: list[list[int]]


# --- sbatchd to mbatchd


class JobReport(TypedDict):
    """What happened to an attempt, journaled by sbatchd until mbatchd acknowledges its rid."""

    kind: str  # "start", "exit", or "part": a job's blaunch tasks on another of its hosts ended
    job: int | str
    attempt: int
    time: float
    rid: NotRequired[int]
    exit_code: NotRequired[int | None]
    exit_signal: NotRequired[int | None]
    reason: NotRequired[str]
    cpu_time: NotRequired[float | None]  # seconds of CPU the attempt (exit) or part used
    max_mem: NotRequired[int | None]  # its peak memory, bytes (exit, part)


class Register(Envelope):
    slots: int
    running: list[list[Any]]  # [job, attempt] of each attempt running on the host
    reports: list[JobReport]  # every report not yet acknowledged
    suspended: NotRequired[list[list[Any]]]  # [job, attempt] of those stopped there (bstop)


class Report(Envelope):
    reports: list[JobReport]


class JobUsage(TypedDict):
    """A running attempt's figures now (roles/sbatchd/usage.py); None: not known."""

    job: int
    attempt: int
    cpu: float | None  # seconds of CPU so far
    mem: int | None  # memory now, bytes
    swap: int | None  # swap now, bytes
    max_mem: int | None  # peak memory so far, bytes
    nthreads: int | None
    pgid: int  # the job's process group (its first process)
    pids: list[int]  # every process of the job


class Usage(Envelope):
    """sbatchd's running attempts, every usage_interval: one-way, kept in mbatchd's memory."""

    jobs: list[JobUsage]


# --- mbatchd's orders to sbatchd (each stamped with mbatchd's fencing epoch)


class Order(Envelope):
    epoch: int


class Dispatch(Order):
    jobs: list[dict[str, Any]]  # one spec per attempt: id, attempt, user, uid, cmd, ...
    envs: dict[str, dict[str, str]]  # env id -> environment, sent once per message


class LimitsOrder(Order):
    """mbatchd -> sbatchd: a running attempt's new run limit and memory limit (bmod -W, -M)."""

    job: int
    attempt: int
    walltime: float | None
    memory: int | None


class SignalOrder(Order):
    """bkill -s: one signal to the attempt's processes."""

    job: int | str
    attempt: int
    signal: int


class SuspendOrder(Order):
    """bstop, bresume (op `suspend`, `resume`): the attempt's processes stopped or running
    again, with its blaunch tasks on that host."""

    job: int | str
    attempt: int


class KillOrder(Order):
    job: int | str
    attempt: int
    stale: NotRequired[bool]  # an attempt mbatchd no longer runs: kill it, report nothing


class Ack(Order):
    rids: list[int]  # reports now durable in mbatchd's store: drop them from the journal


class PeekOrder(Order):
    job: int | str
    attempt: int
    offsets: list[int] | None
    wait: float | None


class LaunchOrder(Order):
    job: int
    attempt: int
    task: dict[str, Any]  # cmd, cwd, env, interactive, as mbatchd checked them


# --- LIM's ops


class Sign(Envelope):
    """To the local LIM over its Unix socket: a user hello for the caller's uid."""

    sn: str
    to: str


class SignReply(Reply):
    hello: Hello
    session: str  # that hello's session key, hex


class Load(Envelope):
    pass


class LoadReply(Reply):
    hosts: dict[str, Any]
    master: str | None


class Heartbeat(Envelope):
    load: dict[str, Any]
    master: bool


class HeartbeatReply(Reply):
    load: dict[str, Any]
    master: bool


# Each server's requests, by op: what the type checks and tests/test_messages.py hold the
# handlers to.
MBATCHD_REQUESTS: dict[str, type] = {
    "submit": Submit,
    "submit_many": SubmitMany,
    "jobs": Jobs,
    "kill": Kill,
    "resume": Resume,
    "wait": Wait,
    "queues": Queues,
    "hosts": Hosts,
    "ping": Ping,
    "stats": Stats,
    "peek": Peek,
    "launch": Launch,
    "history": History,
    "badmin": Badmin,
    "users": Users,
    "load": LoadView,
    "quotas": Quotas,
    "limit_usage": LimitUsage,
    "move": Move,
    "requeue": Requeue,
    "switch": Switch,
    "stop": Resume,
    "modify": Modify,
    "register": Register,
    "report": Report,
    "usage": Usage,
}
SBATCHD_ORDERS: dict[str, type] = {
    "dispatch": Dispatch,
    "kill": KillOrder,
    "ack": Ack,
    "peek": PeekOrder,
    "launch": LaunchOrder,
    "signal": SignalOrder,
    "limits": LimitsOrder,
    "suspend": SuspendOrder,
    "resume": SuspendOrder,
}
LIM_REQUESTS: dict[str, type] = {
    "sign": Sign,
    "load": Load,
    "heartbeat": Heartbeat,
}
LOGIN: dict[str, type] = {"challenge": Challenge, "hello": Hello}


def register(
    slots: int,
    running: list[list[Any]],
    reports: list[JobReport],
    suspended: list[list[Any]] | None = None,
) -> Register:
    """sbatchd's first frame on a connection: its slots, what runs (and of it, what is
    stopped), what is unacknowledged."""
    msg: Register = {
        "v": VERSION,
        "op": "register",
        "id": None,
        "slots": slots,
        "running": running,
        "reports": reports,
    }
    if suspended:
        msg["suspended"] = suspended
    return msg


def usage(jobs: list[JobUsage]) -> Usage:
    """One frame of every running attempt's figures (one-way, never acknowledged)."""
    return {"v": VERSION, "op": "usage", "id": None, "jobs": jobs}


def report(reports: list[JobReport]) -> Report:
    """One frame of reports (one-way: the acknowledgement comes as an `ack` order)."""
    return {"v": VERSION, "op": "report", "id": None, "reports": reports}
