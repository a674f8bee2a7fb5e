"""Authentication: HMAC-SHA256 over a cluster key that only root and the lavalite user can read.

Every connection opens with a `hello` frame whose fields are signed with the key. A daemon says
its role and host; a user's hello carries uid and user name, signed by whoever holds the key on
the node where the user runs (the MUNGE idea: the node vouches for the uid it sees). The server
answers with a proof of its own, so a client also knows it talks to the real cluster.
"""
import hashlib
import hmac
import json
import os
import secrets
import time

from lavalite.protocol import AUTH, VERSION, ProtocolError

HELLO_TTL = 300.0     # seconds a signed hello stays valid (MUNGE's default credential TTL)
_UNSIGNED = ("sig", "id", "v")


class KeyFileError(Exception):
    """The key file is missing or unsafe; the message says which and how to fix it."""


def create_key(path):
    """Write a new random key, mode 0600, unless one exists."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


def load_key(path):
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read cluster key {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise KeyFileError(f"cluster key {path} is readable by group or others; chmod 600 it")
    if len(key) < 32:
        raise KeyFileError(f"cluster key {path} is too short (at least 32 characters)")
    return key


def _mac(key, fields):
    payload = {k: v for k, v in fields.items() if k not in _UNSIGNED}
    # A canonical form of its own, not the wire codec's: signer and verifier may use different
    # codecs (protocol.use_orjson), and a signature must not depend on one.
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def hello(key, role, host, **extra):
    """A signed hello frame. `extra` carries uid/user for role 'user'."""
    msg = {"v": VERSION, "op": "hello", "id": 0, "role": role, "host": host,
           "ts": time.time(), "nonce": secrets.token_hex(8), **extra}
    msg["sig"] = _mac(key, msg)
    return msg


def verify_hello(key, msg, now=None):
    """Check a hello's signature and age; return the identity dict, or raise ProtocolError."""
    now = time.time() if now is None else now
    sig = msg.get("sig")
    if msg.get("op") != "hello" or not isinstance(sig, str):
        raise ProtocolError(AUTH, "authenticate first: the first frame must be a signed hello",
                            fatal=True)
    if not hmac.compare_digest(sig, _mac(key, msg)):
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
    return ident


def server_proof(key, nonce):
    """What the server answers to a hello: proves it holds the key too."""
    return hmac.new(key, b"server:" + str(nonce).encode(), hashlib.sha256).hexdigest()


def check_server_proof(key, nonce, proof):
    return isinstance(proof, str) and hmac.compare_digest(proof, server_proof(key, nonce))
