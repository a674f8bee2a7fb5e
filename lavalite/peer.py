"""One daemon-side connection: asyncio protocol over the frames of lavalite.protocol.

Kept apart from lavalite.protocol so that the CLI, which speaks the same frames over a blocking
socket, never imports asyncio.
"""
import asyncio
import logging

from lavalite import auth
from lavalite.protocol import (INTERNAL, MAX_FRAME, REDIRECT, VERSION, Decoder, ProtocolError,
                               encode, error)

log = logging.getLogger("lavalite")


class Peer(asyncio.Protocol):
    """One connection of a daemon. Frames go to `handler(peer, msg)`; a ProtocolError raised by
    the handler or by decoding becomes an error reply. `identity` is set once hello succeeds."""

    def __init__(self, handler, on_close=None, max_frame=MAX_FRAME):
        self.handler = handler
        self.on_close = on_close
        self.decoder = Decoder(max_frame)
        self.transport = None
        self.identity = None
        self.closed = False
        self.waiters = {}          # request id -> Future, for requests this side sends
        self.next_id = 1

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        for msg in self.decoder.feed(data):
            if self.closed:
                return
            if isinstance(msg, ProtocolError):
                self.fail(None, msg)
                continue
            if "ok" in msg and "op" not in msg:
                fut = self.waiters.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                continue
            self.guarded(msg, self.handler, self, msg)

    def guarded(self, msg, fn, *args):
        """fn(*args) on behalf of request `msg`; its result, or None once a ProtocolError has
        become an error reply. A bug must cost one request, never the daemon."""
        try:
            return fn(*args)
        except ProtocolError as exc:
            self.fail(msg.get("id"), exc)
        except Exception:
            log.exception("internal error handling %r", msg.get("op"))
            self.fail(msg.get("id"), ProtocolError(INTERNAL, f"internal error handling "
                                                             f"{msg.get('op')!r}; see the log"))
        return None

    def fail(self, req_id, exc):
        self.send(error(req_id, exc.code, exc.message))
        if exc.fatal:
            self.close()

    def connection_lost(self, exc):
        self.closed = True
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))
        self.waiters.clear()
        if self.on_close:
            self.on_close(self)

    def send(self, msg):
        if not self.closed:
            self.transport.write(encode(msg))

    def send_all(self, msgs):
        """Several frames in one write (one system call instead of one each)."""
        if not self.closed:
            self.transport.write(b"".join(map(encode, msgs)))

    def request(self, op, **fields):
        """Send a request and return a Future for its reply."""
        return self.request_msg({"v": VERSION, "op": op, **fields})

    def request_msg(self, msg):
        """Send a prebuilt request under a fresh id; a Future for its reply."""
        msg["id"] = rid = self.next_id
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiters[rid] = fut
        self.send(msg)
        return fut

    def close(self):
        if not self.closed:
            self.closed = True
            self.transport.close()


async def hello(peer, keys, role, host, timeout):
    """Open a dialled connection: send our signed hello and return the reply once the other
    side has proved it holds the key too (a redirect reply is returned for the caller to
    follow). Raises ConnectionError on a refusal or a missing proof."""
    msg = auth.hello(keys, role, host)
    reply = await asyncio.wait_for(peer.request_msg(msg), timeout)
    if (reply.get("error") or {}).get("code") == REDIRECT:
        return reply
    if not reply.get("ok") or not auth.check_server_proof(keys, msg["nonce"], reply.get("proof")):
        raise ConnectionError(f"refused, or no proof of the cluster key: {reply.get('error')}")
    return reply
