"""blaunch on the worker: a task of a running job started on this host, as the job's user, in
the job's cgroups, under the relay that carries its streams back to blaunch
(roles/sbatchd/relay_job.py), and killed when the job's attempt ends here.

mbatchd has checked that the caller owns the job and that this host is one of its hosts; the
order names the attempt, which must be running here. The relay starts as root, joins the
attempt's cgroups, drops to the user and only then connects and runs the command."""

import json
import os
import signal
import subprocess
from typing import Any

from lavalite import protocol as P
from lavalite.program import self_command
from roles.sbatchd import relay_job, shepherd


class Tasks:
    def __init__(self, sbatchd: Any) -> None:
        self.sbatchd = sbatchd
        self.running: dict[tuple[int, int], set[int]] = {}  # attempt -> its tasks' relays

    def launch(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Start the order's task; the reply's fields (ProtocolError if it cannot run here)."""
        key = (msg.get("job"), msg.get("attempt"))
        att = self.sbatchd.core.attempts.get(key)
        if att is None:
            raise P.ProtocolError(P.NOT_FOUND, f"Job <{key[0]}>: not running on this host")
        task = P.require(msg, "task", dict)
        try:
            account, _ = shepherd.account_for(att.spec, self.sbatchd.conf.cluster.allow_root_jobs)
        except ValueError as exc:
            raise P.ProtocolError(P.DENIED, str(exc)) from None
        groups = att.group.dirs.values() if att.group is not None else ()
        params = {
            **task["interactive"],
            "cwd": task["cwd"],
            "become": {
                "user": account.name,
                "uid": account.uid,
                "gid": account.gid,
                "switch": account.switch,
                "procs": [os.path.join(d, "cgroup.procs") for d in groups],
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
        self.running.setdefault(att.key, set()).add(proc.pid)
        pidfd = os.pidfd_open(proc.pid)
        self.sbatchd.loop.add_reader(pidfd, self._reaped, att.key, proc, pidfd)
        return {"pid": proc.pid}

    def _reaped(self, key: tuple[int, int], proc: subprocess.Popen, pidfd: int) -> None:
        self.sbatchd.loop.remove_reader(pidfd)
        os.close(pidfd)
        proc.wait()
        self.running.get(key, set()).discard(proc.pid)

    def ended(self, key: tuple[int, int]) -> None:
        """The attempt ended here: its tasks end with it (their commands die with their relay)."""
        for pid in self.running.pop(key, ()):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
