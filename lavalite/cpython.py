"""The one module that reads a private detail of CPython, kept for a measured gain
(docs/throughput.md, "CPython internals"); tests/test_cpython.py fails loudly when an
interpreter changes it. Everything here falls back to the public API without it."""
import os


def environ_data() -> dict | None:
    """os.environ's raw data (CPython's `os.environ._data`: the undecoded bytes on POSIX),
    which compares with a copy of itself in C, where reading os.environ decodes every name and
    value in Python; None when the interpreter has no such attribute."""
    return getattr(os.environ, "_data", None)
