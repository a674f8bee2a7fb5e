"""Stopping a job's processes (bstop) and letting them run again (bresume) on this host.

The job's cgroup is frozen where it has a freezer (cgroup2's cgroup.freeze, v1's freezer
controller): every task of it stops at once, whatever process group or session it made, and
cannot fork meanwhile. Without one (`cgroups = off`, or no freezer mounted), SIGSTOP goes to
each of the job's process groups (the job's own, made by its shepherd, and each blaunch task's
relay's) and to every task its group lists; SIGCONT undoes it.
"""

import contextlib
import os
import signal
from collections.abc import Iterable

from roles.sbatchd import cgroups


def pause(group: cgroups.Group | None, pgids: Iterable[int], frozen: bool) -> None:
    """Freeze (`frozen`) or thaw the group, else stop or continue the process groups and the
    group's tasks by signal."""
    if group is not None and group.freeze(frozen):
        return
    sig = signal.SIGSTOP if frozen else signal.SIGCONT
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    if group is not None:
        group.signal(sig)
