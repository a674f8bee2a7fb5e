"""The one module that reads a private detail of CPython, kept for a measured gain
(docs/throughput.md, "CPython internals"); tests/test_cpython.py fails loudly when an
interpreter changes it. Everything here falls back to the public API without it."""

import os

# HMAC-SHA256 without OpenSSL for user commands (lavalite/hmacsha.py): CPython's built-in
# SHA-256 (_sha256 in 3.11, _sha2 from 3.12) and the constant-time comparison that
# hmac.compare_digest falls back to; `import hmac` would load libcrypto, 3 ms of a command.
try:
    from _sha256 import sha256
except ImportError:
    try:
        from _sha2 import sha256
    except ImportError:  # an interpreter built with OpenSSL's hashes only
        from hashlib import sha256
from _operator import _compare_digest as compare_digest

__all__ = ["compare_digest", "environ_data", "sha256"]


def environ_data() -> dict | None:
    """os.environ's raw data (CPython's `os.environ._data`: the undecoded bytes on POSIX),
    which compares with a copy of itself in C, where reading os.environ decodes every name and
    value in Python; None when the interpreter has no such attribute."""
    return getattr(os.environ, "_data", None)
