"""bpeek on the worker: the output a running attempt has written so far, read from the file it
writes while it runs (the hidden temp file beside its -o/-e path), from the caller's offsets.

A request may wait (long poll): the answer goes out as soon as there is something new or the
attempt ends, so `lavalite peek -f` shows a line about one poll interval after the job wrote
it. After the end the attempt's file has been renamed onto its final path, which is read
instead, so a follower gets the output complete.
"""
import base64
import os
import time

from lavalite import protocol as P

CHUNK = 1 << 20            # bytes per stream per answer; the caller asks again for more
RECENT = 256               # ended attempts remembered, for a follower's last read
POLL = 0.05                # seconds between looks at the files while a request waits
MAX_WAIT = 10.0


def remember(recent, att):
    recent[att.key] = att.spec.get("outputs") or []
    while len(recent) > RECENT:
        recent.pop(next(iter(recent)))


def _read_one(temp, final, offset):
    """Bytes from offset of the running file, or of the final one it was renamed to. A target
    that is no regular file (temp None: /dev/null, a fifo) is never read."""
    for path in (temp, final) if temp else ():
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read(CHUNK + 1)
        except FileNotFoundError:
            continue
        except OSError:
            break
    return b""


def read(outputs, offsets):
    """(base64 chunks, new offsets, more): one entry per output file."""
    data, new, more = [], [], False
    for (_, final, temp), offset in zip(outputs, offsets):
        chunk = _read_one(temp, final, offset)
        more |= len(chunk) > CHUNK
        chunk = chunk[:CHUNK]
        data.append(base64.b64encode(chunk).decode())
        new.append(offset + len(chunk))
    return data, new, more


def serve(sbatchd, peer, msg):
    """Answer a peek request relayed by mbatchd: {job, attempt, offsets, wait}."""
    key = (msg.get("job"), msg.get("attempt"))
    att = sbatchd.attempts.get(key)
    outputs = att.spec.get("outputs") if att is not None else sbatchd.recent.get(key)
    if outputs is None:
        raise P.ProtocolError(P.NOT_FOUND, f"Job <{key[0]}>: not running on this host")
    offsets = msg.get("offsets") or [0] * len(outputs)
    if (not isinstance(offsets, list) or len(offsets) != len(outputs)
            or not all(isinstance(o, int) and o >= 0 for o in offsets)):
        raise P.ProtocolError(P.BAD_REQUEST, f"offsets must be {len(outputs)} integers >= 0")
    wait = msg.get("wait") or 0
    if isinstance(wait, bool) or not isinstance(wait, (int, float)):
        raise P.ProtocolError(P.BAD_REQUEST, "wait must be a number of seconds")
    deadline = time.monotonic() + min(max(wait, 0), MAX_WAIT)

    def answer():
        data, new, more = read(outputs, offsets)
        running = key in sbatchd.attempts
        if (new == offsets and running and not peer.closed and time.monotonic() < deadline):
            sbatchd.loop.call_later(POLL, answer)
            return
        peer.send(P.reply(msg.get("id"), data=data, offsets=new, more=more, running=running,
                          streams=[list(fds) for fds, _, _ in outputs]))

    answer()
