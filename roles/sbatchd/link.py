"""sbatchd's end of the link to its shepherd process (roles/sbatchd/shepherd.py): starts it,
sends it orders, hands each answer to sbatchd's loop.

Orders go out at once when the socket takes them whole (the usual case: they are small and
the shepherd always reads, never blocking on sbatchd); what it does not take (an order with a
large environment is more than the socket's buffer) waits in `waiting`, in order, and goes out
as the shepherd drains the socket. Answers come in through the event loop.
"""

import array
import asyncio
import json
import logging
import os
import socket
import subprocess
from collections import deque
from collections.abc import Callable

from lavalite import private
from lavalite import protocol as P
from lavalite.program import self_command

log = logging.getLogger("lavalite.sbatchd")
FDS_PER_MESSAGE = 200  # the kernel takes at most 253 descriptors in one message


class ShepherdLink:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        backend: str,
        slice_name: str,
        on_ended: Callable[[dict], None],
        on_lost: Callable[["ShepherdLink"], None],
        program: list[str] | None = None,
        log_to: dict | None = None,
    ) -> None:
        """backend: the cgroup backend's name (v1, v2, none); on_ended(msg) for each ended
        attempt; on_lost(link) once, when the shepherd is gone; program: how to run LavaLite
        (default: as this process was run); log_to: where it logs (lavalite.log.helper_spec;
        default: its stderr, sbatchd's). A shepherd keeps it for its life: after a reload
        that changes [logging], the shepherds started later log to the new place."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen(
            (program or self_command())
            + [
                "--role",
                "sbatchd",
                "--shepherd",
                str(theirs.fileno()),
                backend,
                slice_name,
                json.dumps(log_to or {}),
            ],
            pass_fds=[theirs.fileno()],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            umask=private.inherited(),
        )  # the jobs' (and their output files'), not sbatchd's
        theirs.close()
        self.pid = self.proc.pid
        self.sock, self.loop = ours, loop
        self.on_ended, self.on_lost = on_ended, on_lost
        self.decoder = P.Decoder()
        # [(bytes, descriptors)] of orders the socket has yet to take
        self.waiting: deque[tuple[memoryview, list[int]]] = deque()
        self.alive = True
        self.attempts = 0  # in its care: kept by sbatchd, to pick the least busy
        self.kept_groups: list[str] = []  # its cgroups kept for reuse (v1), by name
        self.made = 0  # cgroup names made for it
        loop.add_reader(ours, self._read)

    def start(self, orders: list[dict], locks: list[int]) -> bool:
        """Attempts to start; `locks` the descriptors of their locked `shepherd` files, in
        the same order, which the shepherd holds from now on (the caller closes its own)."""
        return all(
            self._send(
                {"op": "start", "orders": orders[at : at + FDS_PER_MESSAGE]},
                locks[at : at + FDS_PER_MESSAGE],
            )
            for at in range(0, len(orders), FDS_PER_MESSAGE)
        )

    def group_name(self) -> str:
        """The cgroup of its next attempt: one it kept, else a new name. Named after the
        shepherd, unique while it lives: a kept group serves job after job without a rename."""
        if self.kept_groups:
            return self.kept_groups.pop()
        self.made += 1
        return f"shepherd-{self.pid}.{self.made}"

    def exited(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the shepherd to exit (once told to, by close):
        whether it did."""
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def limits(self, group: str, memory: int | None) -> None:
        """A running job's memory limit that sbatchd wrote to its group (bmod -M): the limit
        the shepherd counts for the group, should it keep it for a later job."""
        self._send({"op": "limits", "cgroup": group, "memory": memory})

    def clean(self, records: list[str]) -> None:
        """Remove attempt records whose reports are in the journal (off sbatchd's loop)."""
        self._send({"op": "clean", "records": records})

    def _send(self, msg, fds=()):
        """One frame, its descriptors riding on its first bytes; what the socket does not take
        now waits for it to drain (`_drain`). False: the shepherd is lost."""
        if not self.alive:
            return False
        frame = memoryview(P.encode({"v": P.VERSION, **msg}))
        sent = 0 if self.waiting else self._put(frame, fds)
        if sent is None:
            return False
        if sent < len(frame):
            # the caller closes its descriptors: the locks stay held by copies until sent
            self.waiting.append((frame[sent:], [os.dup(fd) for fd in fds] if not sent else []))
            if len(self.waiting) == 1:
                self.loop.add_writer(self.sock, self._drain)
        return True

    def _put(self, data: memoryview, fds: list[int]) -> int | None:
        """Bytes of `data` the socket took, `fds` riding on the first; 0: it is full. None:
        the shepherd is lost (and `_lost` has run)."""
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            return self.sock.sendmsg([data], anc)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._lost(f"cannot send it an order: {exc}")
            return None

    def _drain(self) -> None:
        """The socket has room: the waiting orders, in order, until it is full again."""
        while self.waiting:
            data, fds = self.waiting[0]
            sent = self._put(data, fds)
            if not sent:  # full again, or lost (which let the waiting go)
                return
            _close_all(fds)  # the shepherd has its own now
            if sent < len(data):
                self.waiting[0] = (data[sent:], [])
            else:
                self.waiting.popleft()
        self.loop.remove_writer(self.sock)

    def _read(self):
        try:
            data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost("it exited")
            return
        for msg in self.decoder.feed(data):
            if isinstance(msg, P.ProtocolError):
                log.error("shepherd %d: %s", self.pid, msg)
            else:
                if "kept" in msg:
                    self.kept_groups.append(msg["kept"])
                self.on_ended(msg)

    def _lost(self, why):
        if not self.alive:
            return
        self._unlink()
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        log.error(
            "the shepherd (pid %d) is gone: %s (exit status %s); its jobs are checked "
            "through their locks",
            self.pid,
            why,
            code,
        )
        self.on_lost(self)

    def close(self) -> None:
        """sbatchd stops: the shepherd sees the end of the link, finishes its jobs and exits."""
        if self.alive:
            self._unlink()

    def _unlink(self) -> None:
        """Off the loop and closed; the locks of orders never sent are let go (their attempts
        did not start: sbatchd finds their records unlocked without a status)."""
        self.alive = False
        self.loop.remove_reader(self.sock)
        if self.waiting:
            self.loop.remove_writer(self.sock)
            for _, fds in self.waiting:
                _close_all(fds)
            self.waiting.clear()
        self.sock.close()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
