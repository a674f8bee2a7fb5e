"""bpeek on the worker: the output a running attempt has written so far, from the caller's
offsets.

The files are read through the shepherd's own descriptors (`/proc/<shepherd>/fd/N`, numbers in
the attempt's record, "outfds"), never by path: the user owns the directory of their output
and could swap the file for a symlink to something only root may read. The descriptors
sbatchd opens that way stay valid after the rename at the end, so a follower gets the output
complete.

A request may wait (long poll): the answer goes out as soon as there is something new or the
attempt ends, so `lavalite peek -f` shows a line about one poll interval after the job wrote
it. Targets that are no regular file (/dev/null, a fifo) are never read.
"""

import base64
import os
import stat
import time
from typing import Any

from lavalite import messages
from lavalite import protocol as P
from lavalite.peer import Peer
from roles.sbatchd import record
from roles.sbatchd.core import Attempt

CHUNK = 1 << 20  # bytes per stream per answer; the caller asks again for more
RECENT = 256  # ended attempts whose files stay open, for a follower's last read
POLL = 0.05  # seconds between looks at the files while a request waits
MAX_WAIT = 10.0


def remember(recent: dict[tuple[int, int], tuple[list, list | None]], att: Attempt) -> None:
    """An attempt ended: keep its open files a while for followers, close the oldest."""
    recent[att.key] = (att.spec.get("outputs") or [], att.peek)
    while len(recent) > RECENT:
        close(recent.pop(next(iter(recent)))[1])


def close(files: list[int | None] | None) -> None:
    for fd in files or ():
        if fd is not None:
            os.close(fd)


def _open(att: Attempt) -> list[int | None] | None:
    """The attempt's output files, opened through its live shepherd; None if not yet known.
    Each must be the very file the shepherd opened for this attempt (device and inode as it
    wrote them): a number reused for another job since, or a pid reused by another process,
    never shows someone else's file."""
    entries = record.read(att.path).get("outfds")
    if entries is None or not att.shepherd:
        return None  # the shepherd has not opened them yet
    files: list[int | None] = []
    for entry in entries:
        fd = None
        if entry is not None:
            n, dev, ino = entry
            try:
                fd = os.open(f"/proc/{att.shepherd}/fd/{n}", os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                close(files)
                return None  # ended, or not ours to read
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (dev, ino) or not stat.S_ISREG(st.st_mode):
                os.close(fd)
                close(files)
                return None
        files.append(fd)
    return files


def read(files: list[int | None], offsets: list[int]) -> tuple[list[str], list[int], bool]:
    """(base64 chunks, new offsets, more): one entry per output file."""
    data, new, more = [], [], False
    for fd, offset in zip(files, offsets):
        chunk = os.pread(fd, CHUNK + 1, offset) if fd is not None else b""
        more |= len(chunk) > CHUNK
        chunk = chunk[:CHUNK]
        data.append(base64.b64encode(chunk).decode())
        new.append(offset + len(chunk))
    return data, new, more


# sbatchd: the Sbatchd, as Any: its maps are keyed by int job ids, PeekOrder's job is int | str
def serve(sbatchd: Any, peer: Peer, msg: messages.PeekOrder) -> None:
    """Answer a peek request relayed by mbatchd: {job, attempt, offsets, wait}."""
    key = (msg.get("job"), msg.get("attempt"))
    att = sbatchd.core.attempts.get(key)
    if att is None and key not in sbatchd.recent:
        raise P.ProtocolError(P.NOT_FOUND, f"Job <{key[0]}>: not running on this host")
    outputs = att.spec.get("outputs") or [] if att is not None else sbatchd.recent[key][0]
    offsets = msg.get("offsets") or [0] * len(outputs)
    if (
        not isinstance(offsets, list)
        or len(offsets) != len(outputs)
        or not all(isinstance(o, int) and o >= 0 for o in offsets)
    ):
        raise P.ProtocolError(P.BAD_REQUEST, f"offsets must be {len(outputs)} integers >= 0")
    wait = msg.get("wait") or 0
    if isinstance(wait, bool) or not isinstance(wait, (int, float)):
        raise P.ProtocolError(P.BAD_REQUEST, "wait must be a number of seconds")
    deadline = time.monotonic() + min(max(wait, 0), MAX_WAIT)

    def answer():
        running = key in sbatchd.core.attempts
        if running and att.peek is None:
            att.peek = _open(att)
        files = att.peek if running else sbatchd.recent.get(key, (None, None))[1]
        data, new, more = read(files or [None] * len(offsets), offsets)
        if new == offsets and running and not peer.closed and time.monotonic() < deadline:
            sbatchd.loop.call_later(POLL, answer)
            return
        peer.send(
            P.reply(
                msg.get("id"),
                data=data,
                offsets=new,
                more=more,
                running=running,
                streams=[list(fds) for fds, _ in outputs],
            )
        )

    answer()
