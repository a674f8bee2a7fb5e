"""One daemon-side connection: asyncio protocol over the frames of lavalite.protocol.

Kept apart from lavalite.protocol so that the CLI, which speaks the same frames over a blocking
socket, never imports asyncio.
"""

import asyncio
import logging
import resource
from collections.abc import Callable, Iterable
from typing import Any

from lavalite import auth
from lavalite.log import Throttled, address
from lavalite.messages import Challenge
from lavalite.protocol import (
    AUTH,
    INTERNAL,
    MAX_FRAME,
    REDIRECT,
    STRANGER_FRAME,
    VERSION,
    Decoder,
    ProtocolError,
    encode,
    error,
)

log = logging.getLogger("lavalite")
# a peer with the key whose frame fails its MAC: one line per 10 s however many do
_bad_mac = Throttled(log)

HELLO_DEADLINE = 5.0  # seconds an accepted connection has to get its hello verified
MAX_STRANGERS = 1024  # connections a daemon holds before their hello: then the oldest goes
# bytes sent to a peer and not yet read by it past which one more frame for it drops it: above
# any one reply (a slow reader of a big answer is served), below what a few stuck peers could
# make a daemon hold
WRITE_BOUND = 8 << 20


def stranger_cap() -> int:
    """MAX_STRANGERS, or half the descriptors this process may open if that is less: the cap
    must bite before accept() runs out of descriptors, with room left for the peers that have
    the key."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_STRANGERS if soft == resource.RLIM_INFINITY else min(MAX_STRANGERS, soft // 2)


class Strangers:
    """A daemon's policy for the connections its listeners accepted that have not proved they
    hold the cluster key: each gets HELLO_DEADLINE seconds; past stranger_cap() of them the
    oldest is dropped (a silent one most likely: a real client says hello at once). Shared by
    every listener of the daemon; its warnings are throttled."""

    def __init__(self, deadline: float = HELLO_DEADLINE):
        self.deadline, self.cap = deadline, stranger_cap()
        self.waiting: dict[Peer, asyncio.TimerHandle] = {}  # oldest first
        self.warn = Throttled(log)

    def admit(self, peer: "Peer") -> None:
        if len(self.waiting) >= self.cap:
            self.drop(
                next(iter(self.waiting)),
                f"{self.cap} connections were waiting for their hello; the oldest dropped",
            )
        self.waiting[peer] = asyncio.get_running_loop().call_later(
            self.deadline, self.drop, peer, f"no hello within {self.deadline:g} s"
        )

    def forget(self, peer: "Peer") -> None:
        timer = self.waiting.pop(peer, None)
        if timer is not None:
            timer.cancel()

    def drop(self, peer: "Peer", why: str) -> None:
        self.forget(peer)
        self.refused(peer, why)
        peer.abort()

    def refused(self, peer: "Peer", why: str) -> None:
        self.warn.warning("unauthenticated peer %s refused: %s", peer.name(), why)


class Peer(asyncio.Protocol):
    """One connection of a daemon. Frames go to `handler(peer, msg)`; a ProtocolError raised by
    the handler or by decoding becomes an error reply. `identity` is set once hello succeeds.
    A connection a listener accepted comes with the daemon's `strangers` policy: until its
    identity is set its frames are limited to STRANGER_FRAME and it is under that policy, and
    it opens with a challenge its hello must answer (login()). A dialled connection waits for
    the challenge (`challenged`) and logs in with hello()."""

    def __init__(
        self,
        handler: "Callable[[Peer, dict[str, Any]], Any]",
        on_close: "Callable[[Peer], Any] | None" = None,
        strangers: Strangers | None = None,
    ):
        self.handler = handler
        self.on_close = on_close
        self.strangers = strangers
        self.decoder = Decoder(MAX_FRAME if strangers is None else STRANGER_FRAME)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set at once
        # the hello's identity (a dict), None before: Any, as handlers see only logged-in peers
        self._identity: Any = None
        self.session: auth.Session | None = None  # set by the login: seals every frame
        self.challenge: Challenge | None = None  # the one we sent (accepted side)
        self.challenged: asyncio.Future | None = None  # its nonce, when dialled
        self.closed = False
        self.paused = False  # the transport's buffer is over its high-water mark
        self.waiters: dict[int | None, asyncio.Future] = {}  # request id -> reply, for our requests
        self.next_id = 1

    @property
    def identity(self) -> Any:
        return self._identity

    @identity.setter
    def identity(self, ident: Any) -> None:
        self._identity = ident
        if ident is not None and self.strangers is not None:
            self.strangers.forget(self)
            self.strangers = None
            self.decoder.max_frame = MAX_FRAME

    def name(self) -> str:
        return address(self.transport.get_extra_info("peername"))

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        if self.strangers is not None:
            self.strangers.admit(self)
            self.challenge = auth.challenge()
            self.send(self.challenge)
        else:
            self.challenged = asyncio.get_running_loop().create_future()

    def login(self, keys: auth.Keyring, msg: dict, to: str, seen: auth.ReplayCache) -> dict:
        """Check `msg` as the hello answering our challenge (we serve as role `to`): from
        now on every frame is sealed. Returns the answer to send (sealed: the proof that we
        hold the key too); raises ProtocolError (fatal) on a bad hello."""
        assert self.challenge is not None, "only an accepted connection is challenged"
        ident, session, answer = auth.greet(keys, msg, self.challenge["nonce"], to, seen)
        self.session = self.decoder.session = session
        self.identity = ident
        return answer

    def data_received(self, data: bytes) -> None:
        # A stranger's frames one at a time: its hello, once verified, lifts the limit for the
        # frames sent right behind it (a client sends hello and request in one write).
        while self.strangers is not None and not self.closed:
            msgs = self.decoder.feed(data, most=1)
            data = b""
            if not msgs:
                return
            self.take(msgs[0])
        if self.closed:
            return
        for msg in self.decoder.feed(data):
            if self.closed:
                return
            self.take(msg)

    def take(self, msg: dict[str, Any] | ProtocolError) -> None:
        """One decoded frame (or decoding error): a request to handle or a reply awaited."""
        if isinstance(msg, ProtocolError):
            self.fail(None, msg)
        elif self.challenged is not None and not self.challenged.done():
            self.challenged.set_result(msg)
        elif "ok" in msg and "op" not in msg:
            fut = self.waiters.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        else:
            self.guarded(msg, self.handler, self, msg)

    def guarded(self, msg: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on behalf of request `msg`; its result, or None once a ProtocolError has
        become an error reply. A bug must cost one request, never the daemon."""
        try:
            return fn(*args)
        except ProtocolError as exc:
            self.fail(msg.get("id"), exc)
        except Exception:
            log.exception("internal error handling %r", msg.get("op"))
            self.fail(
                msg.get("id"),
                ProtocolError(INTERNAL, f"internal error handling {msg.get('op')!r}; see the log"),
            )
        return None

    def fail(self, req_id: Any, exc: ProtocolError) -> None:
        strangers = self.strangers
        if strangers is not None:
            strangers.refused(self, exc.message)
        elif exc.code == AUTH:
            _bad_mac.warning(
                "peer %s (%s) refused: %s",
                self.name(),
                (self.identity or {}).get("role", "dialled"),
                exc.message,
            )
        self.send(error(req_id, exc.code, exc.message))
        if exc.fatal or strangers is not None:  # a stranger's first frame is its hello, or it goes
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))
        self.waiters.clear()
        if self.challenged is not None and not self.challenged.done():
            self.challenged.set_exception(ConnectionError("closed before its challenge"))
        if self.strangers is not None:
            self.strangers.forget(self)
        if self.on_close:
            self.on_close(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def keeps_up(self) -> bool:
        """While writing is paused: whether this peer still reads. One that has left more than
        WRITE_BOUND bytes unread is dropped instead (logged once: it is closed from then on)."""
        unread = self.transport.get_write_buffer_size()
        if unread <= WRITE_BOUND:
            return True
        log.warning(
            "peer %s (%s) has not read the last %d bytes sent to it; dropping it",
            self.name(),
            (self.identity or {}).get("role", "unauthenticated"),
            unread,
        )
        self.abort()
        return False

    def send(self, msg: Any) -> None:
        if not self.closed and (not self.paused or self.keeps_up()):
            self.transport.write(encode(msg, self.session))

    def send_all(self, msgs: Iterable[Any]) -> None:
        """Several frames in one write (one system call instead of one each)."""
        if not self.closed and (not self.paused or self.keeps_up()):
            self.transport.write(b"".join([encode(m, self.session) for m in msgs]))

    def request(self, op: str, **fields: Any) -> asyncio.Future:
        """Send a request and return a Future for its reply."""
        return self.request_msg({"v": VERSION, "op": op, **fields})

    def request_msg(self, msg: Any) -> asyncio.Future:
        """Send a prebuilt request under a fresh id; a Future for its reply."""
        msg["id"] = rid = self.next_id
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiters[rid] = fut
        self.send(msg)
        return fut

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Close without flushing what the peer has not read."""
        if not self.closed:
            self.closed = True
            self.transport.abort()


async def hello(
    peer: Peer,
    keys: auth.Keyring,
    role: str,
    host: str,
    to: str,
    timeout: float,
    **extra: Any,
) -> dict[str, Any]:
    """Log a dialled connection in to a `to` server: answer its challenge with our signed
    hello and return its reply once it has proved it holds the key too (its reply is sealed
    under the session key; a redirect reply is returned for the caller to follow). Raises
    ConnectionError on a refusal or a missing proof. `extra`: uid and user for role 'user'."""
    assert peer.challenged is not None, "a dialled connection awaits a challenge"
    challenge = await asyncio.wait_for(peer.challenged, timeout)
    if challenge.get("op") != "challenge" or not isinstance(challenge.get("nonce"), str):
        raise ConnectionError(f"expected a challenge, got {challenge.get('op')!r}")
    msg = auth.hello(keys, role, host, to, challenge["nonce"], **extra)
    answer = peer.request_msg(msg)
    peer.session = peer.decoder.session = auth.Session(auth.session_key(keys, msg), dialler=True)
    reply = await asyncio.wait_for(answer, timeout)
    if (reply.get("error") or {}).get("code") == REDIRECT:
        return reply
    if not reply.get("ok"):
        raise ConnectionError(f"refused: {reply.get('error')}")
    return reply
