"""blaunch on the worker: a task of a running job started on this host, as the job's user, in
the job's cgroups, under the relay that carries its streams back to blaunch
(roles/sbatchd/relay_job.py).

mbatchd has checked that the caller owns the job and that this host is one of its hosts. On the
job's first host the task joins the attempt's cgroups and is killed when the attempt ends. On
another host of the job no attempt runs: the first task there makes the job's part, a group
`blaunch-JOB.ATTEMPT` with the limits of the job's slots there (the order's `part`), and the
part ends, its tasks killed and its group removed, at mbatchd's kill, which it sends to these
hosts when the job is killed and when it ends. What the group used is reported to mbatchd
before it goes (a `part` report), which adds it to the job's (roles/mbatchd/parts.py). A part
is written down in the spool (`parts-HOST/JOB.ATTEMPT`) so that a restarted sbatchd, which no
longer owns its tasks, kills them (`clean_left`). The relay starts as root, joins the
cgroups, drops to the user and only then connects and runs the command."""

import contextlib
import json
import os
import signal
import subprocess
import time
from typing import Any

from lavalite import protocol as P
from lavalite.program import self_command
from roles.sbatchd import cgroups, freeze, relay_job, shepherd

REMOVE_TRIES = 50  # looks, 0.1 s apart, for a killed part's group to empty before rmdir


class Tasks:
    def __init__(self, sbatchd: Any) -> None:
        self.sbatchd = sbatchd
        self.running: dict[tuple[int, int], set[int]] = {}  # attempt -> its tasks' relays
        # the parts of jobs that started on another host: attempt -> their group here
        self.parts: dict[tuple[int, int], cgroups.Group | None] = {}
        # CPU seconds of a part's tasks that ended, from wait4: its figure where its group
        # counts no CPU (cgroup v1 with cpuacct apart from cpu) or there is no group
        self.waited_cpu: dict[tuple[int, int], float] = {}
        self.spool = os.path.join(sbatchd.conf.paths.spool_dir, f"parts-{sbatchd.host}")

    def launch(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Start the order's task; the reply's fields (ProtocolError if it cannot run here)."""
        key = (P.require(msg, "job", int), P.require(msg, "attempt", int))
        task = P.require(msg, "task", dict)
        att = self.sbatchd.core.attempts.get(key)
        if att is not None:
            spec, group = att.spec, att.group
        elif isinstance(task.get("part"), dict):
            spec = task["part"]
            group = self._part(key, spec["limits"])
        else:
            raise P.ProtocolError(P.NOT_FOUND, f"Job <{key[0]}>: not running on this host")
        try:
            account, _ = shepherd.account_for(spec, self.sbatchd.conf.cluster.allow_root_jobs)
        except ValueError as exc:
            raise P.ProtocolError(P.DENIED, str(exc)) from None
        params = {
            **task["interactive"],
            "cwd": task["cwd"],
            "become": {
                "user": account.name,
                "uid": account.uid,
                "gid": account.gid,
                "switch": account.switch,
                "procs": [os.path.join(d, "cgroup.procs") for d in group.dirs.values()]
                if group is not None
                else [],
            },
        }
        proc = subprocess.Popen(
            relay_job.relay_argv(self_command(), task["cmd"]),
            env={**task["env"], relay_job.ENV: json.dumps(params)},
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.running.setdefault(key, set()).add(proc.pid)
        if key in self.parts:
            self._write_part(key)
        pidfd = os.pidfd_open(proc.pid)
        self.sbatchd.loop.add_reader(pidfd, self._reaped, key, proc, pidfd)
        return {"pid": proc.pid}

    def _part(self, key: tuple[int, int], limits: list[Any]) -> cgroups.Group | None:
        """The job's group on this host, made by its first task here."""
        if key in self.parts:
            return self.parts[key]
        name = f"blaunch-{key[0]}.{key[1]}"
        try:
            group = self.sbatchd.cg.create(name, cgroups.Limits(*limits))
        except OSError as exc:  # a task must not run unconfined when cgroups are in use
            raise P.ProtocolError(
                P.UNAVAILABLE, f"Job <{key[0]}>: cannot create its cgroup here: {exc}"
            ) from None
        self.parts[key] = group
        return group

    def _write_part(self, key: tuple[int, int]) -> None:
        """The part's record: its group and its relays (pid, start time), for `clean_left`."""
        group = self.parts[key]
        pids = [[pid, _started(pid)] for pid in sorted(self.running.get(key, ()))]
        os.makedirs(self.spool, mode=0o700, exist_ok=True)
        path = os.path.join(self.spool, f"{key[0]}.{key[1]}")
        with open(path + ".new", "w") as f:
            json.dump(
                {"cgroup": group and group.name, "slice": self.sbatchd.slice, "pids": pids},
                f,
            )
        os.replace(path + ".new", path)

    def _reaped(self, key: tuple[int, int], proc: subprocess.Popen, pidfd: int) -> None:
        self.sbatchd.loop.remove_reader(pidfd)
        os.close(pidfd)
        _, status, usage = os.wait4(proc.pid, 0)  # the relay and the children it waited for
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.running.get(key, set()).discard(proc.pid)
        if key in self.parts:
            self.waited_cpu[key] = self.waited_cpu.get(key, 0.0) + usage.ru_utime + usage.ru_stime

    def ended(self, key: tuple[int, int]) -> None:
        """The attempt ended here: its tasks end with it (their commands die with their relay)."""
        for pid in self.running.pop(key, ()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def end_part(self, job: Any, attempt: Any) -> None:
        """mbatchd's kill of a job whose part runs here: every task of it killed, its group
        removed, its record dropped. Nothing for a job with no part here."""
        key = (job, attempt)
        if key not in self.parts:
            return
        self.ended(key)
        group = self.parts.pop(key)
        if group is not None:
            group.kill()
        self._account(key, group)
        if group is not None:
            self._remove(group, REMOVE_TRIES)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.spool, f"{key[0]}.{key[1]}"))

    def pause_part(self, key: tuple[Any, Any], frozen: bool) -> None:
        """bstop or bresume of a job whose part runs here: its group frozen or thawed, or
        its tasks stopped by signal. Nothing for a job with no part here (its tasks on its
        first host are in its attempt's group, or stopped with it)."""
        if key in self.parts:
            freeze.pause(self.parts[key], self.running.get(key, ()), frozen)

    def _account(self, key: tuple[int, int], group: cgroups.Group | None) -> None:
        """What the part used, reported to mbatchd (journaled: a disconnect loses nothing)
        before its group goes: the group's counters, else (CPU) what wait4 gave of its tasks
        that ended by themselves."""
        cpu, mem = group.usage() if group is not None else (None, None)
        waited = self.waited_cpu.pop(key, None)
        usage = (waited if cpu is None else cpu, mem)
        self.sbatchd.run(self.sbatchd.core.part_ended(*key, usage, time.time()))

    def _remove(self, group: cgroups.Group, tries: int) -> None:
        """rmdir once its killed tasks are gone, looked at again later rather than waited for
        in the loop."""
        if not group.remove() and tries > 1:
            self.sbatchd.loop.call_later(0.1, self._remove, group, tries - 1)

    def clean_left(self) -> None:
        """At start: the parts a previous sbatchd ran, whose tasks nothing owns any more
        (their blaunch cannot be answered), killed and their groups removed."""
        try:
            names = os.listdir(self.spool)
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(self.spool, name)
            try:
                with open(path) as f:
                    rec = json.load(f)
            except (OSError, ValueError):
                rec = {}
            for pid, started in rec.get("pids") or ():
                if _started(pid) == started:  # the same process, not a reused pid
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
            job, _, attempt = name.partition(".")
            if rec.get("cgroup"):
                group = self.sbatchd.cg.group(rec["cgroup"], rec.get("slice"))
                if group is not None:  # None: no cgroups on this host now
                    if job.isdigit() and attempt.isdigit():
                        self._account((int(job), int(attempt)), group)
                    group.remove(wait=1.0)
            os.unlink(path)


def _started(pid: int) -> int | None:
    """A process's start time (clock ticks after boot), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
