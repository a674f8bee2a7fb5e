"""HMAC-SHA256 on the interpreter's own SHA-256, without OpenSSL.

`import hmac` (or hashlib, or secrets) loads OpenSSL's libcrypto through _hashlib: about 3 ms
of every user command's start-up, spent to sign one hello. HMAC itself is small (RFC 2104):
H((K ^ opad) || H((K ^ ipad) || m)), and CPython has SHA-256 built in (_sha256 in 3.11, _sha2
from 3.12). The digests are byte-identical to hmac.new(key, msg, "sha256") (tests/test_hmacsha.py).
The built-in hash is portable C, about six times slower than OpenSSL's on a long message: a
long-running process (daemons, scripts) calls use_openssl() once, as it calls use_orjson().
"""

from lavalite.cpython import compare_digest, sha256  # the interpreter's own (no OpenSSL)

__all__ = ["Keyed", "compare_digest", "hexdigest", "use_openssl"]


def use_openssl() -> None:
    """Hash with OpenSSL from now on (the Keyed made after this call): worth its import in a
    process that seals frames all day."""
    global sha256
    from hashlib import sha256


_BLOCK = 64  # SHA-256's block size in bytes
_IPAD = int.from_bytes(b"\x36" * _BLOCK, "big")
_OPAD = int.from_bytes(b"\x5c" * _BLOCK, "big")


def hexdigest(key: bytes, msg: bytes) -> str:
    """hmac.new(key, msg, "sha256").hexdigest() for bytes `key` and `msg`."""
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    k = int.from_bytes(key.ljust(_BLOCK, b"\0"), "big")
    inner = sha256((k ^ _IPAD).to_bytes(_BLOCK, "big") + msg).digest()
    return sha256((k ^ _OPAD).to_bytes(_BLOCK, "big") + inner).hexdigest()


class Keyed:
    """HMAC-SHA256 under one key, its padded-key blocks hashed once: each digest() then costs
    two hash copies and the message's own blocks (what a session pays per frame)."""

    __slots__ = ("inner", "outer")

    def __init__(self, key: bytes):
        if len(key) > _BLOCK:
            key = sha256(key).digest()
        k = int.from_bytes(key.ljust(_BLOCK, b"\0"), "big")
        self.inner = sha256((k ^ _IPAD).to_bytes(_BLOCK, "big"))
        self.outer = sha256((k ^ _OPAD).to_bytes(_BLOCK, "big"))

    def digest(self, *parts: bytes) -> bytes:
        """The HMAC of the concatenated `parts` (hashed in turn, never joined)."""
        inner = self.inner.copy()
        for part in parts:
            inner.update(part)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.digest()
