"""The attempt record: `<work_dir>/<job>.<attempt>`, the one file an attempt has on its worker.

- Made with O_EXCL when sbatchd takes the attempt: it is the mark that this node started it
  (a repeated dispatch finds it; a restarted sbatchd adopts every record it finds).
- Its flock is the attempt's lock: sbatchd takes it before the order leaves and passes the
  descriptor along (SCM_RIGHTS); the shepherd holds it until the status is written. Lock held
  = running, whoever holds it (immune to pid reuse: a lock dies with its last descriptor).
- It holds JSON lines, each appended in one write (O_APPEND), so readers see whole lines (a
  line torn by a crash is skipped, as if never written):
      {"shepherd": pid, "spec": {...}}     sbatchd, before the order leaves
      {"pid": job pid, "outfds": [...]}    the shepherd, once the job runs (peek's files)
      {"kill": reason}                     sbatchd, when it kills the job
      {"suspended_at": t|null, "paused": s} sbatchd, at bstop and bresume (s: seconds stopped)
      {"status": {...}}                    the shepherd, last, then it lets the lock go
  A record whose lock is free and that has no status never ran a job to its end (its
  shepherd, or sbatchd before the order, died): the attempt is lost.
It stays root's, mode 0600: a job must not be able to forge it.

One file, not a directory of five (lock, job.json, pid, outfds, status) written through
temporary files and renames: 3 system calls an attempt for the record against about 30
(0.06 against 0.26 ms of CPU on tmpfs here).
"""

import fcntl
import os
import shutil
from typing import Any

from lavalite import protocol as P


def create(path: str) -> int:
    """The record, locked: its descriptor, or FileExistsError if this node has it already."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def append(fd: int, **fields: Any) -> None:
    os.write(fd, P.dumps(fields) + b"\n")


def add(path: str, **fields: Any) -> None:
    """Append through a descriptor of our own (the shepherd holds the record's lock)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        append(fd, **fields)
    finally:
        os.close(fd)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:  # no record: a stray directory (or an older LavaLite's)
        shutil.rmtree(path, ignore_errors=True)


def read(path: str) -> dict[str, Any]:
    """Every field its whole lines hold ({} for a missing record); a later line wins."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        return _fields(fd)
    except OSError:  # a directory where a record should be: nothing to trust
        return {}
    finally:
        os.close(fd)


def _fields(fd):
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    out = {}
    for line in b"".join(chunks).split(b"\n"):
        try:
            out.update(P.loads(line))
        except (ValueError, TypeError):  # the torn (or empty) last line
            pass
    return out


def holder(path: str) -> int | None:
    """The pid of the attempt's shepherd if the lock is held (0 if the record does not name
    it yet: sbatchd holds it before the order), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        try:
            return _fields(fd).get("shepherd") or 0
        except OSError:
            return 0
    finally:
        os.close(fd)
