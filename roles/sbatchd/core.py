"""sbatchd's functional core: what happens to the attempts on this host, decided over memory.

One method per event (a dispatch, a kill, an epoch, a shepherd's answer, a lost shepherd, a
wall clock that ran out, a record found free, the records found at start); each changes the
attempts it knows and returns effects, small frozen objects that the asyncio shell
(`server.py`) carries out in order: make a record and order a shepherd, signal a job, arm a
timer, journal and send a report, clean a record. No files, sockets or clocks here (the time
is an argument), so the worker's promises are tested without processes
(tests/test_sbatchd_core.py): an attempt starts once, a restart adopts what runs, a kill
survives a restart, a lost shepherd's attempts are watched through their locks.
"""

from typing import Any, NamedTuple

from lavalite.model import DEADLINE, EXEC_FAILED, KILLED_REASON, NODE_LOST, TIMEOUT

ORDERED, RUNNING = "ordered", "running"


class StaleEpoch(Exception):
    """An order from a deposed mbatchd: older than the newest epoch this host has seen."""


class Attempt:
    __slots__ = (
        "job",
        "attempt",
        "path",
        "spec",
        "state",
        "shepherd",
        "adopted",
        "kill",
        "signalled",
        "timer",
        "kill_timer",
        "group",
        "peek",
        "suspended_at",
        "paused",
    )

    def __init__(self, job: int, attempt: int, path: str, spec: dict) -> None:
        self.job, self.attempt, self.path, self.spec = job, attempt, path, spec
        self.state = ORDERED  # RUNNING once its shepherd has the order
        self.shepherd: int | None = None  # the pid of the shepherd process that runs it
        self.adopted = False  # its end is learnt from its lock, not from our shepherd
        self.kill: str | None = None  # why it is being killed
        self.signalled = False  # TERM (then KILL) ordered: once per attempt
        # the shell's handles, carried along: its timers, cgroup, and files opened for bpeek
        self.timer: Any = None
        self.kill_timer: Any = None
        self.group: Any = None
        self.peek: Any = None
        # bstop: when it was stopped (None: it runs), and the seconds it spent stopped before:
        # its wall clock does not count them (LSF)
        self.suspended_at: float | None = None
        self.paused = 0.0

    @property
    def key(self) -> tuple[int, int]:
        return (self.job, self.attempt)


# --- effects, carried out by the shell in the order returned. Named tuples: immutable and
# typed, and cheaper to make than dataclasses (the hot path makes about five per job); the
# shell tells them apart by type.


class SaveEpoch(NamedTuple):
    """Remember the newest epoch across restarts."""

    epoch: int


class Start(NamedTuple):
    """Make the attempt's record (O_EXCL: the mark that this node started it) and order a
    shepherd to run it; the outcome comes back as `started`, `duplicate` or `not_started`."""

    att: Attempt
    env: dict


class Report(NamedTuple):
    """Journal the report, and send it to mbatchd with the turn's others."""

    report: dict


class Arm(NamedTuple):
    """Call `timer(att, reason)` at wall-clock time `at`: its wall clock runs out (TIMEOUT), or
    its termination time comes (DEADLINE)."""

    att: Attempt
    at: float
    reason: str = TIMEOUT


class RecordKill(NamedTuple):
    """Append the kill's reason to the attempt's record: a restarted sbatchd kills it too."""

    att: Attempt
    reason: str


class Signal(NamedTuple):
    """TERM the job (once its pid is known), KILL it after kill_grace."""

    att: Attempt


class Reap(NamedTuple):
    """Its shepherd died before the job ended: KILL what is left, remove its TMPDIR."""

    att: Attempt
    pid: int | None


class Suspend(NamedTuple):
    """Write down that the attempt is stopped, cancel its timer, freeze its processes (and
    its blaunch tasks here)."""

    att: Attempt


class Resume(NamedTuple):
    """Write down that the attempt runs again (with the time it spent stopped), thaw it."""

    att: Attempt


class Finish(NamedTuple):
    """The attempt ended: cancel its timers; its cgroup is removed if it was adopted (no
    shepherd of ours keeps it), else its shepherd has one attempt less."""

    att: Attempt


class SetLimits(NamedTuple):
    """bmod -W/-M of a running attempt: its timer cancelled (an Arm may follow), its new spec
    appended to its record (a restarted sbatchd adopts the new limits), its memory limit
    written to its cgroup."""

    att: Attempt


class Clean(NamedTuple):
    """Remove the attempt's record once the journal holds its EXIT report."""

    path: str


class Watch(NamedTuple):
    """Look at the adopted attempts' locks until none runs (`lock_freed` for each that ends)."""


class Ack(NamedTuple):
    """mbatchd holds these reports: the journal lets them go."""

    rids: list


Effect = (
    SaveEpoch
    | Start
    | Report
    | Arm
    | RecordKill
    | Signal
    | Reap
    | Suspend
    | Resume
    | Finish
    | Clean
    | Watch
    | Ack
    | SetLimits
)


class Core:
    def __init__(self, work: str, epoch: int) -> None:
        self.work = work  # the attempt records' directory
        self.epoch = epoch  # the newest master epoch seen
        self.attempts: dict[tuple[int, int], Attempt] = {}  # ordered or running here
        self.starts = 0  # attempts started since sbatchd started

    # --- mbatchd's frames

    def fence(self, epoch: int) -> list[Effect]:
        """Every frame's epoch: an older one is refused (StaleEpoch), a newer one kept."""
        if epoch < self.epoch:
            raise StaleEpoch(f"epoch {epoch} is older than {self.epoch}")
        if epoch == self.epoch:
            return []
        self.epoch = epoch
        return [SaveEpoch(epoch)]

    def dispatch(self, specs: list[dict], envs: dict) -> list[Effect]:
        """Attempts to start. One this host already has is not started again."""
        effects: list[Effect] = []
        for spec in specs:
            key = (spec["id"], spec["attempt"])
            if key in self.attempts:
                continue
            att = self.attempts[key] = Attempt(
                key[0], key[1], f"{self.work}/{key[0]}.{key[1]}", spec
            )
            effects.append(Start(att, envs.get(str(spec.get("env_id"))) or {}))
        return effects

    def kill(self, job: Any, attempt: Any, reason: str = KILLED_REASON) -> list[Effect]:
        """mbatchd's kill (or a wall clock's, a restart's): the reason is written down before
        the job is signalled, once. An attempt not here is no longer anything to kill."""
        att = self.attempts.get((job, attempt))
        if att is None or att.signalled:
            return []
        att.signalled = True
        thaw: list[Effect] = []
        if att.suspended_at is not None:  # a stopped job runs again to receive TERM
            att.suspended_at = None
            thaw.append(Resume(att))
        if att.kill is not None:  # adopted with its reason recorded already
            return [*thaw, Signal(att)]
        att.kill = reason
        return [RecordKill(att, reason), *thaw, Signal(att)]

    def suspend(self, job: Any, attempt: Any, now: float) -> list[Effect]:
        """bstop (or the system): the attempt's processes stopped and its wall clock paused
        (a termination time, bsub -t, still comes). Nothing for an attempt not here, stopped
        already, or being killed."""
        att = self.attempts.get((job, attempt))
        if att is None or att.suspended_at is not None or att.signalled:
            return []
        att.suspended_at = now
        return [Suspend(att), *self._arm(att, now)]

    def resume(self, job: Any, attempt: Any, now: float) -> list[Effect]:
        """bresume: the attempt runs again; its wall clock goes on where it stopped."""
        att = self.attempts.get((job, attempt))
        if att is None or att.suspended_at is None:
            return []
        att.paused += max(0.0, now - att.suspended_at)
        att.suspended_at = None
        return [Resume(att), *self._arm(att, now)]

    def limits(
        self, job: Any, attempt: Any, walltime: Any, memory: Any, now: float
    ) -> list[Effect]:
        """bmod of a running attempt: its run limit counted from its start again (a limit
        already passed ends it at once, as TERM_RUNLIMIT) and its memory limit. An attempt
        not here (ended meanwhile, or a job's other host) changes nothing."""
        att = self.attempts.get((job, attempt))
        if att is None:
            return []
        att.spec = {**att.spec, "walltime": walltime, "memory": memory}
        return [SetLimits(att), *self._arm(att, now)]

    def ack(self, rids: list) -> list[Effect]:
        return [Ack(rids)]

    def part_ended(
        self, job: int, attempt: int, usage: tuple[float | None, int | None], now: float
    ) -> list[Effect]:
        """A job's part on this host (its blaunch tasks, the job started on another host)
        ended: what its group used is reported, for mbatchd to add to the job. Nothing when
        nothing was measured (no cgroups here)."""
        cpu, mem = usage
        if cpu is None and mem is None:
            return []
        report: dict[str, Any] = {"kind": "part", "job": job, "attempt": attempt, "time": now}
        if cpu is not None:
            report["cpu_time"] = round(cpu, 6)
        if mem is not None:
            report["max_mem"] = mem
        return [Report(report)]

    # --- how a Start went

    def started(self, atts: list[Attempt], now: float) -> list[Effect]:
        """Their shepherd has the orders: START reported, wall clocks armed."""
        effects: list[Effect] = []
        for att in atts:
            att.state = RUNNING
            self.starts += 1
            effects.append(
                Report({"kind": "start", "job": att.job, "attempt": att.attempt, "time": now})
            )
            effects += self._arm(att, now)
        return effects

    def duplicate(self, att: Attempt) -> list[Effect]:
        """Its record exists: started here before a restart, and its report is made or
        adopted. Never twice."""
        del self.attempts[att.key]
        return []

    def cannot_run(self, att: Attempt, message: str, now: float) -> list[Effect]:
        """No account for the job on this host: it fails as a command that cannot run."""
        return [self._never_ran(att, now, reason=EXEC_FAILED, message=message, exit_code=126)]

    def not_started(self, att: Attempt, message: str, now: float) -> list[Effect]:
        """No shepherd could take it (its record exists, unlocked): it is lost."""
        report = self._never_ran(
            att, now, reason=NODE_LOST, message=f"sbatchd could not start it: {message}"
        )
        return [report, Clean(att.path)]

    def _never_ran(self, att: Attempt, now: float, **fields: Any) -> Report:
        """The attempt is forgotten; the report of an end it had without running."""
        del self.attempts[att.key]
        return Report(
            {"kind": "exit", "job": att.job, "attempt": att.attempt, "time": now, **fields}
        )

    # --- the shepherds, the clocks, the locks

    def shepherd_answered(self, job: Any, attempt: Any, status: dict, now: float) -> list[Effect]:
        """A shepherd's `ended`; an adopted attempt's end is read from its record instead."""
        att = self.attempts.get((job, attempt))
        if att is None or att.adopted:
            return []
        return self._end(att, status, now)

    def shepherd_lost(self, pid: int) -> list[Effect]:
        """Its attempts are watched through their locks, as after a restart: those that ended
        have a status, the others are reported lost."""
        for att in self.attempts.values():
            if att.shepherd == pid:
                att.adopted = True
        return [Watch()]

    def timer(self, att: Attempt, reason: str = TIMEOUT) -> list[Effect]:
        """Its wall clock ran out, or its termination time came."""
        return self.kill(att.job, att.attempt, reason)

    def lock_freed(self, att: Attempt, record: dict, now: float) -> list[Effect]:
        """An adopted attempt's lock is free: its status says how it ended; without one its
        shepherd died before it could say, and the job is ended here."""
        status = record.get("status")
        if status is not None:
            return self._end(att, status, now)
        return [
            Reap(att, record.get("pid")),
            *self._end(att, {"reason": NODE_LOST, "message": "the job's shepherd vanished"}, now),
        ]

    def adopt(
        self, found: list[tuple[int, int, dict, int | None, Any]], now: float
    ) -> list[Effect]:
        """At start: every record (job, attempt, its fields, the pid holding its lock, its
        cgroup) is an attempt this node started. Each is watched through its lock, its wall
        clock armed again, and a kill it records carried on."""
        effects: list[Effect] = []
        for job, attempt, rec, holder, group in found:
            att = Attempt(job, attempt, f"{self.work}/{job}.{attempt}", rec.get("spec") or {})
            att.state, att.adopted, att.shepherd, att.group = RUNNING, True, holder, group
            att.kill = rec.get("kill")
            att.suspended_at, att.paused = rec.get("suspended_at"), rec.get("paused") or 0.0
            self.attempts[att.key] = att
            effects += self._arm(att, now)
            if att.kill:
                effects += self.kill(job, attempt, att.kill)
        if found:
            effects.append(Watch())
        return effects

    def _arm(self, att: Attempt, now: float) -> list[Effect]:
        """The earlier of its wall clock's end and its termination time (bsub -t). The wall
        clock does not run while the attempt is stopped, nor count the time it was."""
        walltime, term_time = att.spec.get("walltime"), att.spec.get("term_time")
        ends = [(term_time, DEADLINE)] if term_time is not None else []
        if walltime and att.suspended_at is None:
            ends.append(((att.spec.get("started") or now) + att.paused + walltime, TIMEOUT))
        return [Arm(att, *min(ends))] if ends else []

    def _end(self, att: Attempt, status: dict, now: float) -> list[Effect]:
        del self.attempts[att.key]
        return [
            Finish(att),
            Report(
                {
                    "kind": "exit",
                    "job": att.job,
                    "attempt": att.attempt,
                    "time": now,
                    "start_time": status.get("start"),
                    "exit_code": status.get("exit_code"),
                    "exit_signal": status.get("exit_signal"),
                    "reason": att.kill or status.get("reason") or "",
                    "message": status.get("message"),
                    # what the shepherd measured (roles/sbatchd/shepherd.py _measure), if it did
                    **{k: status[k] for k in ("cpu_time", "max_mem") if k in status},
                }
            ),
            Clean(att.path),
        ]
