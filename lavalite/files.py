"""Whole-file writes: a reader, a crash or a full disk sees the old file or the new one, never
an empty or partial one (an empty pid or key file would break the next start)."""

import contextlib
import os


def write_whole(path: str, text: str, mode: int | None = None, replace: bool = True) -> None:
    """Write `text` to `path` through a temporary file moved into place. mode: exactly this,
    whatever the umask; None: as the umask says (a daemon's is private). replace=False keeps
    an existing file: FileExistsError, and nothing written. An OSError names `path`."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if mode is not None:
                os.fchmod(fd, mode)
            f.write(text)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic, and fails when path exists
    except OSError as exc:  # the temporary name would only puzzle the reader
        raise type(exc)(exc.errno, exc.strerror, path) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
