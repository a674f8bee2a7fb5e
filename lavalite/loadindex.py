"""LSF's load indices that LIM derives on its sample tick (roles/lim.py) from /proc, /dev and
the login records: r15s, pg, ls, it (docs/admin.md, "lsload"). Cheap: two small /proc files
and one stat per login terminal a tick. The parsers are plain functions over text, tested
without processes; `Indices` keeps the averages between ticks."""

import math
import os
from collections.abc import Iterable

R15S_SECONDS = 15.0  # r15s: the run queue length averaged over 15 s, as LSF's
PG_SECONDS = 60.0  # pg: the paging rate averaged over the last minute, as LSF's


def runnable(loadavg: str) -> int | None:
    """Processes runnable now, from /proc/loadavg's "running/total" field, less the one
    reading it (LIM itself); None for a text that is not one."""
    fields = loadavg.split()
    try:
        return max(0, int(fields[3].partition("/")[0]) - 1)
    except (IndexError, ValueError):
        return None


def pages_swapped(vmstat: str) -> int | None:
    """Pages swapped in and out since boot (/proc/vmstat's pswpin + pswpout): the paging LSF's
    pg counts; None if the kernel gives neither."""
    found = None
    for line in vmstat.splitlines():
        name, _, value = line.partition(" ")
        if name in ("pswpin", "pswpout") and value.strip().isdigit():
            found = (found or 0) + int(value)
    return found


def averaged(old: float | None, value: float, elapsed: float, over: float) -> float:
    """An exponential average over `over` seconds, `elapsed` seconds after the last one."""
    if old is None:
        return value
    return old + (value - old) * (1.0 - math.exp(-elapsed / over))


def idle_minutes(terminals: Iterable[str], now: float, boot: float, dev: str = "/dev") -> float:
    """LSF's it: minutes since the most recently used login terminal was last read from (its
    access time); with no login terminal, since the host booted."""
    used = []
    for tty in terminals:
        try:
            used.append(os.stat(os.path.join(dev, tty)).st_atime)
        except OSError:  # a session's terminal gone meanwhile
            continue
    return max(0.0, now - (max(used) if used else boot)) / 60.0


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


class Indices:
    """r15s and pg averaged across LIM's ticks; ls and it measured at each."""

    def __init__(self, proc: str = "/proc", dev: str = "/dev") -> None:
        self.proc, self.dev = proc, dev
        self.at: float | None = None  # monotonic time of the last tick
        self.r15s: float | None = None
        self.pg: float | None = None
        self.pages: int | None = None  # pages swapped as of the last tick

    def sample(
        self, mono: float, now: float, sessions: Iterable[tuple[str, str]], boot: float
    ) -> dict[str, float | int | None]:
        """The four indices now; `sessions`: (user, terminal) of each login (utmp)."""
        elapsed = mono - self.at if self.at is not None else 0.0
        self.at = mono
        queue = runnable(_read(os.path.join(self.proc, "loadavg")))
        if queue is not None:
            self.r15s = averaged(self.r15s, queue, elapsed, R15S_SECONDS)
        pages = pages_swapped(_read(os.path.join(self.proc, "vmstat")))
        if pages is not None and self.pages is not None and elapsed > 0:
            rate = max(0, pages - self.pages) / elapsed
            self.pg = averaged(self.pg, rate, elapsed, PG_SECONDS)
        self.pages = pages
        sessions = list(sessions)
        return {
            "r15s": self.r15s,
            "pg": self.pg,
            "ls": len({user for user, _ in sessions}),
            "it": idle_minutes((tty for _, tty in sessions if tty), now, boot, self.dev),
        }
