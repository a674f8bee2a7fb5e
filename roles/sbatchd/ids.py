"""Acting as a job's user, one thread at a time.

The kernel keeps credentials per thread; glibc's setuid family (os.setuid and the rest)
changes every thread of the process, signalling each one to do it. The raw system calls
change only the calling thread's. So the shepherd's loop opens and renames a user's files with
the user's effective ids (16 us to switch and back here, against 63 through glibc, and 204 with
one more thread to signal), and a user's job is a vfork from a thread whose real and effective
ids are the user's: the child inherits them, the saved uid stays 0 so the thread can come back,
and the exec makes the child's saved ids the user's too, its capabilities none.

Call numbers are known here for x86_64 and aarch64; elsewhere, without ctypes, or if the
calls do not act as expected, `thread_ids()` is None and the shepherd uses glibc's calls and a
fork per job of another user.
"""

import contextlib
import logging
import os
from collections.abc import Iterator
from types import ModuleType

log = logging.getLogger("lavalite.shepherd")

# setgroups, setresgid, setresuid
_CALLS = {"x86_64": (116, 119, 117), "aarch64": (159, 149, 147)}
PROBE = 65534  # the ids of the start-up check (nobody's, usually)


class ThreadIds:
    def __init__(self, ctypes: ModuleType, numbers: tuple[int, int, int]) -> None:
        self.c = ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.nr_setgroups, self.nr_setresgid, self.nr_setresuid = numbers

    def _check(self, result):
        if result != 0:
            err = self.c.get_errno()
            raise OSError(err, os.strerror(err))

    def _ids(self, nr, real, effective, saved):
        c = self.c
        self._check(
            self.libc.syscall(c.c_long(nr), c.c_long(real), c.c_long(effective), c.c_long(saved))
        )

    def _groups(self, groups):
        c = self.c
        self._check(
            self.libc.syscall(
                c.c_long(self.nr_setgroups),
                c.c_long(len(groups)),
                (c.c_uint * len(groups))(*groups),
            )
        )

    @contextlib.contextmanager
    def user(self, uid: int, gid: int, groups: list[int], real: bool = False) -> Iterator[None]:
        """The calling thread with the user's groups and effective ids, and real ones too with
        real=True (for a child it forks); as it was after. A thread that cannot come back
        ends the process: nothing it did next would be done as root."""
        old = os.getresuid(), os.getresgid(), os.getgroups()
        try:
            self._groups(groups)
            self._ids(self.nr_setresgid, gid if real else -1, gid, -1)
            self._ids(self.nr_setresuid, uid if real else -1, uid, -1)
            yield
        finally:
            try:
                self._ids(self.nr_setresuid, *old[0])
                self._ids(self.nr_setresgid, *old[1])
                self._groups(old[2])
            except OSError as exc:
                log.critical("cannot take back root's ids: %s", exc)
                os._exit(70)


def thread_ids() -> ThreadIds | None:
    """ThreadIds where the raw calls work as described (checked once), else None."""
    numbers = _CALLS.get(os.uname().machine)
    if numbers is None or os.geteuid() != 0:
        return None
    before = os.geteuid(), os.getegid()
    try:
        import ctypes

        ids = ThreadIds(ctypes, numbers)
        with ids.user(PROBE, PROBE, [PROBE]):
            seen = os.geteuid(), os.getegid()
    except (ImportError, OSError) as exc:
        why = str(exc)
    else:
        if seen == (PROBE, PROBE) and (os.geteuid(), os.getegid()) == before:
            return ids
        why = f"the calls gave ids {seen}"
    log.warning("per-thread ids unavailable (%s): jobs of other users are forked", why)
    return None
