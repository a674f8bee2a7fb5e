"""Authentication: HMAC-SHA256 over a cluster key that only root and the lavalite user can read.

A login is a challenge and a response. The accepting side opens with a `challenge` frame
carrying a fresh nonce (sn); the dialler answers with a `hello` carrying its own fresh nonce
(cn), its role and host, the role it means to reach, the protocol version and, for a user, uid
and user name, all signed with the key by whoever holds it on the dialler's node (a daemon, or
for a user the local LIM: the MUNGE idea, the node vouches for the uid it sees). A hello is
good for the one connection whose challenge it answers, within HELLO_TTL, once.

Both sides then derive a session key from the cluster key and the two nonces. Every later frame,
both ways, carries a MAC under it over (direction, sequence number, body): a frame cannot be
forged, changed, replayed, reordered, dropped unnoticed or moved to another connection. The
server's first sealed frame (its answer to the hello) is its proof that it holds the key too.

The key file holds the current key on its first line and, during a rotation's overlap window,
the previous key on the next: everyone signs with the current key and accepts both, so hosts
can get the new file one after the other. Daemons re-read the file when it changes.
"""

import json
import os
import time
from collections import OrderedDict

from lavalite import hmacsha
from lavalite.files import write_whole
from lavalite.protocol import AUTH, BAD_FRAME, REDIRECT, VERSION, ProtocolError, loads, reply

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from lavalite import messages

    # a bare key, or a key file's keys (current first)
    Key = bytes | tuple[bytes, ...]

# seconds a signed hello stays valid: a credential the local LIM signs lives this long, and a
# server remembers its nonce as long (clocks of the cluster's hosts must agree within it)
HELLO_TTL = 60.0
TAG = 16  # bytes of a sealed frame's MAC trailer (HMAC-SHA256, truncated)
REPLAY_CAP = 1 << 17  # nonces a ReplayCache holds at most (about 2,000 logins a second)
ROLES = ("user", "sbatchd", "lim", "mbatchd")
_UNSIGNED = ("sig", "id")


class KeyFileError(Exception):
    """The key file is missing or unsafe; the message says which and how to fix it."""


def _new_key() -> str:
    return os.urandom(32).hex()  # secrets.token_hex(32), without secrets' OpenSSL import


def _write_keys(path: str, keys: "list[str]", exclusive: bool = False) -> None:
    """Write the key file atomically (a daemon reading it sees the old or the new file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_whole(path, "".join(k + "\n" for k in keys), 0o600, replace=not exclusive)


def create_key(path: str) -> None:
    """Write a new random key, mode 0600, unless one exists."""
    try:
        _write_keys(path, [_new_key()], exclusive=True)
    except FileExistsError:
        pass


def rotate_key(path: str, finish: bool = False) -> "list[bytes]":
    """Start a rotation: a new current key, the old current one kept as previous. With
    `finish`, end the overlap window: keep only the current key. Returns the keys written."""
    ring = load_key(path)
    keys = [ring[0]] if finish else [_new_key().encode(), ring[0]]
    _write_keys(path, [k.decode() for k in keys])
    return keys


class Keyring(tuple):
    """The keys of a key file: the current one first (used to sign), then the previous one."""


def load_key(path: str) -> "Keyring":
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            keys = f.read().split()
    except OSError as exc:
        raise KeyFileError(f"cannot read cluster key {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise KeyFileError(f"cluster key {path} is readable by group or others; chmod 600 it")
    if not keys or any(len(k) < 32 for k in keys):
        raise KeyFileError(f"cluster key {path} is too short (at least 32 characters)")
    return Keyring(keys[:2])


def _stamp(path: str) -> "tuple[int, int, int] | None":
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


class KeyFile:
    """A daemon's key file, re-read whenever it changed (checked at each new connection), so
    a rotation needs no restart. A broken new file keeps the keys already loaded."""

    def __init__(self, path: str):
        self.path = path
        self.stamp = _stamp(path)
        self.keys = load_key(path)

    def ring(self) -> Keyring:
        stamp = _stamp(self.path)
        if stamp != self.stamp:
            self.stamp = stamp
            # Only daemons get here, and they have logging loaded; user commands must not pay it.
            import logging

            log = logging.getLogger("lavalite.auth")
            try:
                self.keys = load_key(self.path)
                log.info("cluster key file %s re-read (%d keys)", self.path, len(self.keys))
            except KeyFileError as exc:
                log.error("%s; keeping the keys loaded before", exc)
        return self.keys


def _ring(key: "Key") -> "tuple[bytes, ...]":
    """A bare key (bytes) or a Keyring, as a tuple of keys, current first."""
    return key if isinstance(key, tuple) else (key,)


def canonical(fields: "Mapping[str, Any]") -> bytes:
    """The bytes a hello's signature covers. A canonical form of its own, not the wire codec's:
    signer and verifier may use different codecs (protocol.use_orjson), and a signature must
    not depend on one."""
    payload = {k: v for k, v in fields.items() if k not in _UNSIGNED}
    try:
        return json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except RecursionError:  # orjson decodes 1,024 levels; the json module stops sooner
        raise ProtocolError(BAD_FRAME, "hello nested too deep to check", fatal=True) from None


def _mac(key: "Key", fields: "Mapping[str, Any]") -> str:
    return hmacsha.hexdigest(_ring(key)[0], canonical(fields))


def _nonce() -> str:
    return os.urandom(16).hex()


def challenge() -> "messages.Challenge":
    """The accepting side's first frame: a fresh nonce the dialler's hello must sign."""
    return {"v": VERSION, "op": "challenge", "id": None, "nonce": _nonce()}


def hello(key: "Key", role: str, host: str, to: str, sn: str, **extra: "Any") -> "messages.Hello":
    """A signed hello answering challenge nonce `sn` of a `to` server (its role). `extra`
    carries uid/user for role 'user'."""
    msg: dict[str, Any] = {
        "v": VERSION,
        "op": "hello",
        "id": 0,
        "role": role,
        "host": host,
        "to": to,
        "sn": sn,
        "cn": _nonce(),
        "ts": time.time(),
        **extra,
    }
    msg["sig"] = _mac(key, msg)
    # built as a plain dict: mypy cannot check `extra` (a user's uid and name) spread in
    return msg  # type: ignore[return-value]


def session_key(key: "Key", msg: "Mapping[str, Any]") -> bytes:
    """The session key of the connection `msg` (a signed hello) logged in: known only to who
    holds the cluster key (and to the user LIM signed that one hello for)."""
    material = f"session|{msg['sn']}|{msg['cn']}|{msg['sig']}".encode()
    return bytes.fromhex(hmacsha.hexdigest(_ring(key)[0], material))


def verify_hello(
    key: "Key",
    msg: "dict[str, Any]",
    sn: str,
    to: str,
    seen: "ReplayCache",
    now: float | None = None,
) -> "tuple[dict[str, Any], Session]":
    """Check a hello answering challenge `sn` on a `to` server: (identity, its Session on the
    accepting side), or raise ProtocolError (fatal: the connection goes)."""
    now = time.time() if now is None else now
    sig = msg.get("sig")
    if msg.get("op") != "hello" or not isinstance(sig, str):
        raise ProtocolError(
            AUTH, "authenticate first: the first frame must be a signed hello", fatal=True
        )
    # the cheap checks first: a replayed hello costs no HMAC
    if msg.get("sn") != sn:
        raise ProtocolError(
            AUTH, "hello answers another connection's challenge (a replay)", fatal=True
        )
    if msg.get("to") != to:
        raise ProtocolError(AUTH, f"hello meant for {msg.get('to')!r}, not {to!r}", fatal=True)
    matched = [k for k in _ring(key) if hmacsha.compare_digest(sig, _mac(k, msg))]
    if not matched:
        raise ProtocolError(
            AUTH, "bad signature: this peer does not hold the cluster key", fatal=True
        )
    ts = msg.get("ts")
    if not isinstance(ts, (int, float)) or abs(now - ts) > HELLO_TTL:
        raise ProtocolError(
            AUTH, f"credential expired or clock skew over {int(HELLO_TTL)} s", fatal=True
        )
    if not seen.first(msg.get("cn"), now):
        raise ProtocolError(AUTH, "credential used before (a replay)", fatal=True)
    return _identity(msg), Session(session_key(matched[0], msg), dialler=False)


def _identity(msg: dict) -> dict:
    role = msg.get("role")
    if role not in ROLES:
        raise ProtocolError(AUTH, f"unknown role {role!r}", fatal=True)
    ident = {"role": role, "host": msg.get("host"), "nonce": msg.get("cn")}
    if role == "user":
        if not isinstance(msg.get("uid"), int) or not isinstance(msg.get("user"), str):
            raise ProtocolError(AUTH, "a user credential needs uid and user", fatal=True)
        ident.update(uid=msg["uid"], user=msg["user"])
    return ident


def greet(
    key: "Key", msg: "dict[str, Any]", sn: str, to: str, seen: "ReplayCache"
) -> "tuple[dict[str, Any], Session, dict[str, Any]]":
    """Server side of a hello: (identity, Session, reply frame). The session key comes from
    the key the client signed with, so a client still on the previous key during a rotation
    gets an answer it can check."""
    ident, session = verify_hello(key, msg, sn, to, seen)
    return ident, session, reply(msg.get("id"))


class ReplayCache:
    """The hello nonces seen while their hellos could still pass the age check (MUNGE's
    replay cache): a credential used twice is refused. Bounded: past REPLAY_CAP the oldest
    nonce goes, which the challenge (a hello is good for one connection only) makes safe."""

    def __init__(self, cap: int = REPLAY_CAP):
        self.cap = cap
        self.until: OrderedDict[str, float] = OrderedDict()  # nonce -> expiry, oldest first

    def first(self, nonce: "Any", now: float) -> bool:
        """Record `nonce`; whether it is new. A missing nonce is never new."""
        until = self.until
        while until and (len(until) >= self.cap or next(iter(until.values())) < now):
            until.popitem(last=False)
        if not isinstance(nonce, str) or nonce in self.until:
            return False
        # a hello stamped up to HELLO_TTL ahead of our clock passes the age check that long
        self.until[nonce] = now + 2 * HELLO_TTL
        return True


class Session:
    """One logged-in connection's frame seal: each frame's body is followed by TAG bytes of
    HMAC(session key, direction | sequence number | body). Sequence numbers are implicit
    (each side counts the frames of each direction), so a frame dropped, replayed or swapped
    fails the next check."""

    __slots__ = ("mac", "out", "into", "sent", "got")

    def __init__(self, key: bytes, dialler: bool):
        self.mac = hmacsha.Keyed(key)
        self.out, self.into = (b"d", b"a") if dialler else (b"a", b"d")
        self.sent = self.got = 0

    def seal(self, body: bytes) -> bytes:
        tag = self.mac.digest(self.out, self.sent.to_bytes(8, "big"), body)
        self.sent += 1
        return body + tag[:TAG]

    def open(self, frame: bytes) -> bytes:
        """The body of a sealed frame, or raise ProtocolError (fatal)."""
        body, tag = frame[:-TAG], frame[-TAG:]
        good = self.mac.digest(self.into, self.got.to_bytes(8, "big"), body)[:TAG]
        if len(frame) < TAG or not hmacsha.compare_digest(tag, good):
            if self.got == 0 and self.into == b"a" and _refusal(frame):
                return frame  # the server refused our hello: it has no session to seal with
            raise ProtocolError(
                AUTH,
                f"frame {self.got} has a bad MAC (forged, altered, replayed or out of order)",
                fatal=True,
            )
        self.got += 1
        return body


def _refusal(frame: bytes) -> bool:
    """Whether an unsealed frame is a refusal of the hello (an error reply other than a
    redirect): taken as the failure it reports, it can make nothing happen."""
    try:
        msg = loads(frame)
    except ValueError:
        return False
    return (
        isinstance(msg, dict)
        and msg.get("ok") is False
        and (msg.get("error") or {}).get("code") != REDIRECT
    )
