"""badmin's actions in mbatchd, and busers' counts.

An admin closes and opens hosts (LSF's hclose/hopen) and closes, opens, inactivates and
activates queues (qclose/qopen/qinact/qact), each with an optional comment. A closed host is
`closed_Adm` in the store's hosts table, so it stays closed across a restart; a queue's state
set by an admin overrides queues.conf's open/active and lives, with every comment, in
`<state_dir>/badmin.json` (load_state/save_state: the shell reads it at start and writes it
whole after each action), so it survives restarts and reconfigurations alike.
"""

import json
import logging
import os
from typing import TYPE_CHECKING, Any

from lavalite import files, messages
from lavalite import protocol as P
from lavalite.config import QueueConf
from lavalite.job_array import Array
from lavalite.model import (
    HOST_CLOSED,
    HOST_OK,
    HOST_UNAVAIL,
    PEND,
    PSUSP,
    RUN,
    SSUSP,
    USUSP,
    Host,
    Job,
)
from scheduler import QueueView

_USER_STATES = (PEND, PSUSP, RUN, USUSP, SSUSP)  # busers' figures, lower-case in its reply

if TYPE_CHECKING:  # core imports this module
    from roles.mbatchd.core import TurnOutput

log = logging.getLogger("lavalite.mbatchd")

HOST_ACTIONS = {"hclose": HOST_CLOSED, "hopen": HOST_OK}
# action -> (the queue's flag it sets, to what, the word LSF prints)
QUEUE_ACTIONS = {
    "qclose": ("open", False, "closed"),
    "qopen": ("open", True, "opened"),
    "qinact": ("active", False, "inactivated"),
    "qact": ("active", True, "activated"),
}
STATE_FILE = "badmin.json"


def empty_state() -> dict[str, dict[str, Any]]:
    """queues: name -> {"open"/"active": bool set by an admin}; comments: "host NAME" or
    "queue NAME" -> {"action", "user", "time", "comment"} of the last admin action."""
    return {"queues": {}, "comments": {}}


def load_state(state_dir: str) -> dict[str, dict[str, Any]]:
    """What admins set before this start; none when the file is missing. A file that cannot
    be read is logged and passed over: mbatchd starts with queues.conf's word (closed hosts
    are in the store, unaffected)."""
    path = os.path.join(state_dir, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return {**empty_state(), **json.load(f)}
    except FileNotFoundError:
        return empty_state()
    except (OSError, ValueError) as exc:
        log.error("%s: unreadable (%s); queues start as queues.conf says", path, exc)
        return empty_state()


def save_state(state_dir: str, state: dict[str, dict[str, Any]]) -> None:
    files.write_whole(os.path.join(state_dir, STATE_FILE), json.dumps(state, indent=1))


class AdminOps:
    """Mixed into Core: uses its hosts, queues, jobs, arrays, admins and _set_free."""

    # Core's state, declared for the checker (Core.__init__ sets it)
    admin_state: dict[str, dict[str, Any]]
    admins: set[str]
    hosts: dict[str, Host]
    queues: dict[str, QueueView]
    qconf: dict[str, QueueConf]
    jobs: dict[int, Job]
    arrays: dict[int, Array]
    out: "TurnOutput"
    wake: bool

    def _set_free(self, host: Host) -> None: ...  # Core's

    def require_admin(self, ident: dict[str, Any], what: str) -> None:
        if ident["user"] not in self.admins:
            raise P.ProtocolError(
                P.DENIED,
                f"{what}: User <{ident['user']}> is not a cluster administrator "
                f"(admins: {', '.join(sorted(self.admins))})",
            )

    def badmin_control(self, ident: dict[str, Any], msg: "messages.Badmin", now: float) -> dict:
        """hclose/hopen/qclose/qopen/qinact/qact on the named hosts or queues ("all": every
        one). Each target's result is LSF's line; an unknown name fails alone."""
        action = P.require(msg, "action", str)
        names = P.require(msg, "names", list)
        self.require_admin(ident, f"badmin {action}")  # the shell asked already; the core holds
        if action not in HOST_ACTIONS and action not in QUEUE_ACTIONS:
            raise P.ProtocolError(P.BAD_REQUEST, f"unknown badmin action {action!r}")
        known = self.hosts if action in HOST_ACTIONS else self.qconf
        targets = list(known) if names == ["all"] else [str(n) for n in names]
        note = {"action": action, "user": ident["user"], "time": now}
        if msg.get("comment"):
            note["comment"] = str(msg["comment"])
        act = self._host_action if action in HOST_ACTIONS else self._queue_action
        return {"results": [act(action, name, note) for name in targets]}

    def _host_action(self, action: str, name: str, note: dict[str, Any]) -> dict[str, Any]:
        verb = "Close" if action == "hclose" else "Open"
        host = self.hosts.get(name)
        if host is None:
            return {"ok": False, "message": f"{verb} <{name}> ...... Bad host name"}
        if action == "hclose":
            host.status = HOST_CLOSED
        elif host.status == HOST_CLOSED:
            host.status = HOST_OK if host.connected else HOST_UNAVAIL
        self._set_free(host)
        self.out.hosts[name] = host
        self.admin_state["comments"][f"host {name}"] = note
        self.wake = True
        return {"ok": True, "message": f"{verb} <{name}> ...... done"}

    def _queue_action(self, action: str, name: str, note: dict[str, Any]) -> dict[str, Any]:
        if name not in self.qconf:
            return {"ok": False, "message": f"{name}: No such queue"}
        flag, value, word = QUEUE_ACTIONS[action]
        self.admin_state["queues"].setdefault(name, {})[flag] = value
        self.admin_state["comments"][f"queue {name}"] = note
        self.apply_queue_state()
        self.wake = True
        return {"ok": True, "message": f"Queue <{name}> is {word}"}

    def queue_flag(self, name: str, flag: str) -> bool:
        """A queue's open or active: an admin's word over queues.conf's."""
        qc = self.qconf.get(name)
        return self.admin_state["queues"].get(name, {}).get(flag, bool(qc and getattr(qc, flag)))

    def apply_queue_state(self) -> None:
        """The scheduler's views take the admins' active flags (after each (re)configuration)."""
        for name, view in self.queues.items():
            if name in self.qconf:
                view.active = self.queue_flag(name, "active")

    def admin_comment(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.admin_state["comments"].get(f"{kind} {name}")

    def query_users(self, names: list[str] | None) -> dict[str, Any]:
        """busers: per user, the slots of pending, running and suspended jobs. A query, not an
        event: one pass over the jobs in memory."""
        counts: dict[str, dict[str, int]] = {}

        def add(user: str, state: str, slots: int) -> None:
            row = counts.setdefault(user, dict.fromkeys(_USER_STATES, 0))
            row[state] += slots

        for job in self.jobs.values():
            if job.state in _USER_STATES:
                add(job.user, job.state, job.slots)
        for arr in self.arrays.values():
            if arr.remaining:
                add(arr.user, PEND, arr.remaining * arr.slots)
        wanted = sorted(counts) if not names or names == ["all"] else names
        return {
            "users": [
                {"user": u, **{s.lower(): counts.get(u, {}).get(s, 0) for s in _USER_STATES}}
                for u in wanted
            ]
        }
