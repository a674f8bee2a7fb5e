"""mbatchd's side of bsub's timing, pre/post-execution and bookkeeping options (LSF 10.1):
the checks of the spec fields roles/cli/bsub_options.py makes, the begin time (-b) and the
termination time (-t) of pending jobs, user-assigned priority (-sp) in a user's FIFO,
rerunnable jobs (-r, -rn), the requeue after a failed pre-execution command (-E), the CPU
limit's ending (-c) and the notifications (-B, -N).

A job with a begin time waits in Core's backoff heap (eligible_time = its begin time, stored,
so a restarted mbatchd keeps it there); a pending job with a termination time sits in a heap of
deadlines. Neither costs anything per turn: tick pops what is due.
"""

import asyncio
import grp
import heapq
import logging
import os
import pwd
import shlex
from bisect import bisect_right
from collections import deque
from typing import TYPE_CHECKING, Any

from lavalite import jobspec
from lavalite import protocol as P
from lavalite.job_array import Array
from lavalite.model import DEADLINE, FAILED, OPTION_FIELDS, PEND, PRE_EXEC, WAITING, Job, label
from roles.mbatchd.placement import unplace

log = logging.getLogger("lavalite.mbatchd")

PR_BEGIN = "The job has a specified start time"  # LSF's pending reason for -b
NOTIFY_EVENTS = ("begin", "end")
NOTIFY_WAIT = 60.0  # seconds a notify command may run before it is killed

_TEXTS = (  # field, option, bound
    ("pre_exec", "-E", jobspec.MAX_ARG),
    ("post_exec", "-Ep", jobspec.MAX_ARG),
    ("project", "-P", jobspec.MAX_NAME),
    ("user_group", "-G", jobspec.MAX_NAME),
    ("description", "-Jd", jobspec.MAX_PATH),
    ("mail_user", "-u", jobspec.MAX_NAME),
)


_FIELDS = frozenset(OPTION_FIELDS)


def checked(spec: dict, conf: Any, user: str, admins: set[str]) -> dict:
    """The option fields of a submitted spec, checked: what is stored with the job (only the
    fields given). SpecError or ProtocolError names the option."""
    out: dict[str, Any] = {}
    if _FIELDS.isdisjoint(spec):  # most jobs: nothing more to check
        return out
    for field, option, bound in _TEXTS:
        if spec.get(field) is not None:
            out[field] = jobspec.text(f"{field} ({option})", spec[field], bound)
    for field in ("begin", "term_time"):
        if spec.get(field) is not None:
            out[field] = _epoch(field, spec[field])
    if "term_time" in out and out["term_time"] <= out.get("begin", 0.0):
        raise jobspec.SpecError("term_time (-t) must be later than the begin time (-b)")
    if spec.get("rerunnable") is not None:
        if not isinstance(spec["rerunnable"], bool):
            raise jobspec.SpecError("rerunnable (-r, -rn) must be a boolean")
        out["rerunnable"] = spec["rerunnable"]
    if spec.get("priority") is not None:
        top = jobspec.MAX_PRIORITY if user in admins else conf.mbatchd.max_user_priority
        out["priority"] = jobspec.integer("priority (-sp)", spec["priority"], 1, top)
    if spec.get("cpu_limit") is not None:
        out["cpu_limit"] = jobspec.seconds("cpu_limit (-c)", spec["cpu_limit"])
    notify = spec.get("notify")
    if notify is not None:
        if not isinstance(notify, list) or not set(notify) <= set(NOTIFY_EVENTS):
            raise jobspec.SpecError(f"notify (-B, -N) must list events of {NOTIFY_EVENTS}")
        out["notify"] = sorted(set(notify))
    if "user_group" in out:
        check_group(out["user_group"], user, conf.group_users)
    return out


def _epoch(field: str, value: object) -> float:
    """A time since the epoch: a finite number within the years LSF takes."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2**37:
        raise jobspec.SpecError(f"{field} must be a time in seconds since the epoch")
    return float(value)


def check_group(group: str, user: str, configured: dict[str, frozenset[str]]) -> None:
    """-G: the group exists and the user is in it (LSF refuses the job otherwise): a
    [usergroup] of queues.conf (fairshare) by its members, else the system's group."""
    if group in configured:
        member = user in configured[group]
    else:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise P.ProtocolError(P.NOT_FOUND, f"-G {group}: Bad user group name") from None
        try:
            member = gid in os.getgrouplist(user, pwd.getpwnam(user).pw_gid)
        except KeyError:
            member = False
    if not member:
        raise P.ProtocolError(P.DENIED, f"-G {group}: User not in the specified user group")


def rerunnable(job: Job, queue_rerunnable: bool) -> bool:
    """-r or -rn, else the queue's `rerunnable`."""
    return bool(job.spec.get("rerunnable", queue_rerunnable))


def default_priority(conf: Any) -> int:
    """The priority of a job without -sp: half of MAX_USER_PRIORITY, as LSF."""
    return conf.mbatchd.max_user_priority // 2


def fifo_add(fifo: deque, entry: tuple[int, Any], conf: Any) -> None:
    """Into a user's FIFO, kept in (-priority, pend_seq) order: after the jobs of the same or
    a higher priority. Appended when neither it nor the last has -sp (every job, in a cluster
    without -sp) or the last's priority is not below its own: most jobs cost O(1)."""
    if not fifo or ("priority" not in entry[1].spec and "priority" not in fifo[-1][1].spec):
        fifo.append(entry)
        return
    default = default_priority(conf)

    def rank(e: tuple[int, Any]) -> int:
        return -e[1].spec.get("priority", default)

    if rank(fifo[-1]) <= rank(entry):
        fifo.append(entry)
    else:
        fifo.insert(bisect_right(fifo, rank(entry), key=rank), entry)


def fifo_order(conf: Any) -> Any:
    """The sort key of a FIFO's entries (after a reload)."""
    default = default_priority(conf)
    return lambda e: (-e[1].spec.get("priority", default), e[0])


class OptionOps:
    """Mixed into Core: uses its jobs, arrays, backoff, deadlines, out, conf and methods."""

    jobs: dict[int, Job]
    arrays: dict[int, Array]
    backoff: list[tuple[float, int]]
    deadlines: list[tuple[float, int]]
    pre_failures: dict[int, int]
    out: Any
    conf: Any
    qconf: dict[str, Any]
    touched: set[tuple[str, str]]

    if TYPE_CHECKING:  # Core's methods these call

        def _enqueue(self, job: Job | Array) -> None: ...
        def _move(self, job: Job, new: str, now: float, reason: str = "") -> None: ...
        def _finish(self, job: Job, now: float) -> None: ...
        def _dirty(self, job: Job, event: Any = None) -> None: ...
        def _array_check_end(self, arr: Array, now: float) -> None: ...
        def _quota_dropped(self, arr: Array) -> None: ...

    def _admit(self, obj: Job | Array, now: float) -> None:
        """A job or array nothing else keeps pending (no -H, its -w holds): into its FIFO, or
        held until its begin time (-b)."""
        if "begin" not in obj.spec or not self._hold_until_begin(obj, now):
            self._enqueue(obj)

    def _hold_until_begin(self, obj: Job | Array, now: float) -> bool:
        begin = obj.spec.get("begin")
        if begin is None or begin <= now:
            return False
        obj.eligible_time = begin
        heapq.heappush(self.backoff, (begin, obj.id))
        return True

    def _track_deadline(self, obj: Job | Array) -> None:
        term_time = obj.spec.get("term_time")
        if term_time is not None:
            heapq.heappush(self.deadlines, (term_time, obj.id))

    def _expire_deadlines(self, now: float) -> None:
        """Pending jobs whose termination time (-t) came end FAILED(deadline) without running
        (a running one is killed by its sbatchd); an array's indices not started yet end."""
        while self.deadlines and self.deadlines[0][0] <= now:
            _, job_id = heapq.heappop(self.deadlines)
            job = self.jobs.get(job_id)
            # pending, held or waiting on -w, and its -t (bmod may have changed it) has come
            if (
                job is not None
                and job.state in WAITING
                and job.spec.get("term_time", now + 1) <= now
            ):
                job.message = "its termination time (-t) came before it could start"
                self._move(job, FAILED, now, DEADLINE)
                self._finish(job, now)
            arr = self.arrays.get(job_id)
            if arr is not None and arr.remaining:
                self._quota_dropped(arr)
                arr.killed = True
                self.out.arrays[arr.id] = arr
                self.touched.add((arr.queue, arr.user))  # its FIFO entry is stale now
                self._array_check_end(arr, now)

    def _requeue_pre_exec(self, job: Job, now: float) -> bool:
        """The pre-execution command (-E) failed: back to PEND after the queue's retry backoff,
        at most max_preexec_retry times (counted while this mbatchd runs)."""
        failures = self.pre_failures.get(job.id, 0) + 1
        if failures > self.conf.mbatchd.max_preexec_retry:
            self.pre_failures.pop(job.id, None)
            return False
        self.pre_failures[job.id] = failures
        qc = self.qconf.get(job.queue)
        self._move(
            job,
            PEND,
            now,
            f"{PRE_EXEC}: requeued ({failures} of "
            f"{self.conf.mbatchd.max_preexec_retry}), exit code {job.exit_code}",
        )
        unplace(job)
        job.eligible_time = now + (qc.retry_backoff if qc else 10.0)
        heapq.heappush(self.backoff, (job.eligible_time, job.id))
        return True

    def _options_ended(self, job: Job) -> None:
        if self.pre_failures:
            self.pre_failures.pop(job.id, None)
        if "notify" in job.spec:
            self._notice(job, "end")

    def _notice(self, job: Job, event: str) -> None:
        """-B (begin) and -N (end): a notice for the shell to hand the notify command."""
        if event not in job.spec["notify"]:
            return
        self.out.notices.append(
            {
                "event": event,
                "job": label(job.id),
                "name": job.name,
                "user": job.user,
                "to": job.spec.get("mail_user") or job.user,
                "stat": job.stat,
                "exit_code": job.exit_code,
            }
        )


class Notifier:
    """Runs the notify command for each notice, off the loop: one process each, waited for by a
    task, killed after NOTIFY_WAIT. Without a command, says so in the log once."""

    def __init__(self) -> None:
        self.told = False
        self.tasks: set[asyncio.Task] = set()

    def send(self, command: str, notices: list[dict]) -> None:
        if not command:
            if not self.told:
                self.told = True
                log.info(
                    "a job asked for notification (bsub -B/-N); no notify_command is set "
                    "in lavalite.conf [mbatchd], so none is sent"
                )
            return
        for notice in notices:
            task = asyncio.ensure_future(self._run(shlex.split(command), notice))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, argv: list[str], n: dict) -> None:
        env = dict(
            os.environ,
            LSB_JOBID=n["job"],
            LSB_JOBNAME=n["name"],
            LSB_USER=n["user"],
            LSB_NOTIFY_EVENT=n["event"],
            LSB_MAILTO=n["to"],
            LSB_JOBSTAT=n["stat"],
            LSB_JOBEXIT_STAT="" if n["exit_code"] is None else str(n["exit_code"]),
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                n["event"],
                n["job"],
                n["to"],
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("notify_command %s for job %s: %s", argv[0], n["job"], exc)
            return
        try:
            code = await asyncio.wait_for(proc.wait(), NOTIFY_WAIT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.warning("notify_command for job %s killed after %g s", n["job"], NOTIFY_WAIT)
            return
        if code:
            log.warning("notify_command for job %s exited %d", n["job"], code)
