"""Authentication: HMAC-SHA256 over a cluster key that only root and the lavalite user can read.

Every connection opens with a `hello` frame whose fields are signed with the key. A daemon says
its role and host; a user's hello carries uid and user name, signed by whoever holds the key on
the node where the user runs (the MUNGE idea: the node vouches for the uid it sees). The server
answers with a proof of its own, so a client also knows it talks to the real cluster.

The key file holds the current key on its first line and, during a rotation's overlap window,
the previous key on the next: everyone signs with the current key and accepts both, so hosts
can get the new file one after the other. Daemons re-read the file when it changes.
"""
import json
import os
import time

from lavalite import hmacsha
from lavalite.files import write_whole
from lavalite.protocol import AUTH, BAD_FRAME, VERSION, ProtocolError, reply

HELLO_TTL = 300.0     # seconds a signed hello stays valid (MUNGE's default credential TTL)
_UNSIGNED = ("sig", "id", "v")


class KeyFileError(Exception):
    """The key file is missing or unsafe; the message says which and how to fix it."""


def _new_key():
    return os.urandom(32).hex()        # secrets.token_hex(32), without secrets' OpenSSL import


def _write_keys(path, keys, exclusive=False):
    """Write the key file atomically (a daemon reading it sees the old or the new file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_whole(path, "".join(k + "\n" for k in keys), 0o600, replace=not exclusive)


def create_key(path):
    """Write a new random key, mode 0600, unless one exists."""
    try:
        _write_keys(path, [_new_key()], exclusive=True)
    except FileExistsError:
        pass


def rotate_key(path, finish=False):
    """Start a rotation: a new current key, the old current one kept as previous. With
    `finish`, end the overlap window: keep only the current key. Returns the keys written."""
    ring = load_key(path)
    keys = [ring[0]] if finish else [_new_key().encode(), ring[0]]
    _write_keys(path, [k.decode() for k in keys])
    return keys


class Keyring(tuple):
    """The keys of a key file: the current one first (used to sign), then the previous one."""


def load_key(path):
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


def _stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


class KeyFile:
    """A daemon's key file, re-read whenever it changed (checked at each new connection), so
    a rotation needs no restart. A broken new file keeps the keys already loaded."""

    def __init__(self, path):
        self.path = path
        self.stamp = _stamp(path)
        self.keys = load_key(path)

    def ring(self):
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


def _ring(key):
    """A bare key (bytes) or a Keyring, as a tuple of keys, current first."""
    return key if isinstance(key, tuple) else (key,)


def canonical(fields):
    """The bytes a hello's signature covers. A canonical form of its own, not the wire codec's:
    signer and verifier may use different codecs (protocol.use_orjson), and a signature must
    not depend on one."""
    payload = {k: v for k, v in fields.items() if k not in _UNSIGNED}
    try:
        return json.dumps(payload, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()
    except RecursionError:     # orjson decodes 1,024 levels; the json module stops sooner
        raise ProtocolError(BAD_FRAME, "hello nested too deep to check", fatal=True) from None


def _mac(key, fields):
    return hmacsha.hexdigest(_ring(key)[0], canonical(fields))


def hello(key, role, host, **extra):
    """A signed hello frame. `extra` carries uid/user for role 'user'."""
    msg = {"v": VERSION, "op": "hello", "id": 0, "role": role, "host": host,
           "ts": time.time(), "nonce": os.urandom(8).hex(), **extra}
    msg["sig"] = _mac(key, msg)
    return msg


def verify_hello(key, msg, now=None):
    """Check a hello's signature and age; return the identity dict, or raise ProtocolError."""
    return _check_hello(key, msg, now)[0]


def _check_hello(key, msg, now):
    """(identity, the key of the ring that signed it)."""
    now = time.time() if now is None else now
    sig = msg.get("sig")
    if msg.get("op") != "hello" or not isinstance(sig, str):
        raise ProtocolError(AUTH, "authenticate first: the first frame must be a signed hello",
                            fatal=True)
    matched = [k for k in _ring(key) if hmacsha.compare_digest(sig, _mac(k, msg))]
    if not matched:
        raise ProtocolError(AUTH, "bad signature: this peer does not hold the cluster key",
                            fatal=True)
    ts = msg.get("ts")
    if not isinstance(ts, (int, float)) or abs(now - ts) > HELLO_TTL:
        raise ProtocolError(AUTH, "credential expired or clock skew over "
                                  f"{int(HELLO_TTL)} s", fatal=True)
    role = msg.get("role")
    if role not in ("user", "sbatchd", "lim", "mbatchd"):
        raise ProtocolError(AUTH, f"unknown role {role!r}", fatal=True)
    ident = {"role": role, "host": msg.get("host"), "nonce": msg.get("nonce")}
    if role == "user":
        if not isinstance(msg.get("uid"), int) or not isinstance(msg.get("user"), str):
            raise ProtocolError(AUTH, "a user credential needs uid and user", fatal=True)
        ident.update(uid=msg["uid"], user=msg["user"])
    return ident, matched[0]


def server_proof(key, nonce):
    """What the server answers to a hello: proves it holds the key too."""
    return hmacsha.hexdigest(_ring(key)[0], b"server:" + str(nonce).encode())


def check_server_proof(key, nonce, proof):
    return isinstance(proof, str) and any(
        hmacsha.compare_digest(proof, server_proof(k, nonce)) for k in _ring(key))


def greet(key, msg):
    """Server side of a hello: (identity, reply frame). The proof uses the key the client
    signed with, so a client still on the previous key accepts it during a rotation."""
    ident, used = _check_hello(key, msg, None)
    return ident, reply(msg.get("id"), proof=server_proof(used, msg["nonce"]))
