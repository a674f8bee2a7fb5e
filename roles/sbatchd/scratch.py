"""The jobs' TMPDIRs (sbatchd.conf `tmp_dir`): made for each attempt as its user, mode 0700.

A job that ended with its cgroup empty (nothing of it can still write there) and its TMPDIR
empty leaves the directory to the same user's next job on the shepherd, renamed to that job's
name, instead of an rmdir now and a mkdir then: on ext4 those allocate and free an inode and
a block (about 90 us here, more while the shepherds and their cleaners contend for the
directory's lock) where a rename costs about 16 us. A directory no job takes within KEEP_FOR
seconds goes to the cleaner.
"""

import os
import stat
from collections import deque

KEEP_FOR = 5.0  # seconds an empty TMPDIR waits for its user's next job
_CHECK = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def mkdir(path: str) -> None:
    """A new TMPDIR, by the calling thread's ids (the job's user's, so it is theirs)."""
    try:
        os.mkdir(path, 0o700)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create TMPDIR {path}: {exc.strerror}") from None


class Scratch:
    """One shepherd's kept TMPDIRs, per user."""

    def __init__(self) -> None:
        # uid -> deque of (until, path), oldest first
        self.kept: dict[int, deque[tuple[float, str]]] = {}
        self.check_at = 0.0  # monotonic time of the next look for expired ones

    def make(self, path: str, uid: int, now: float) -> list[str]:
        """The attempt's TMPDIR at `path`: a kept one of this user's renamed, else a new one.
        Called with the user's ids; returns the kept paths that could not be taken (gone, or
        the name refused), for the cleaner."""
        kept, lost = self.kept.get(uid), []
        while kept:
            until, old = kept.pop()  # the newest: its blocks are the likeliest cached
            if until <= now:
                lost.append(old)
                continue
            try:
                os.rename(old, path)
                return lost
            except OSError:
                lost.append(old)
        mkdir(path)
        return lost

    def keep(self, path: str, uid: int, now: float) -> bool:
        """Keep an ended attempt's TMPDIR if it is still the user's, private and empty (a
        directory, not a link put in its place). Whether it was kept."""
        try:
            fd = os.open(path, _CHECK)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if st.st_uid != uid or stat.S_IMODE(st.st_mode) != 0o700 or os.listdir(fd):
                return False
        except OSError:
            return False
        finally:
            os.close(fd)
        self.kept.setdefault(uid, deque()).append((now + KEEP_FOR, path))
        return True

    def expired(self, now: float) -> list[str]:
        """The kept directories no job took in time, looked for at most once a second."""
        if now < self.check_at:
            return []
        self.check_at = now + 1.0
        gone = []
        for uid, kept in list(self.kept.items()):
            while kept and kept[0][0] <= now:
                gone.append(kept.popleft()[1])
            if not kept:
                del self.kept[uid]
        return gone

    def drain(self) -> list[str]:
        """Every kept directory (the shepherd is leaving)."""
        gone = [path for kept in self.kept.values() for _, path in kept]
        self.kept.clear()
        return gone
