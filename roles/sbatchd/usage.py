"""Running jobs' usage, as LSF's PIM collects it: every `[sbatchd] usage_interval` seconds
sbatchd samples each attempt running here (CPU time, memory now and at its peak, swap,
threads, its process group and PIDs) and sends mbatchd one `usage` frame for all of them.
Figures of the moment: not journaled, not stored (mbatchd keeps them in memory; the end
figures still come with the EXIT report).

Sources: the attempt's cgroup where it has one (cgroup.procs; CPU and peak as the end
figures read them, `Group.usage`; the memory charge now; swap; pids.current, which counts
threads); what a counter lacks, and everything without cgroups, from /proc: the processes of
the job's process group (utime+stime+cutime+cstime, RSS, threads), the peak being the
largest sum seen. `Sampler.sample` runs on a worker thread, so the loop only lists the
attempts and sends the frame (docs/performance.md has its cost for 1,000 jobs).
"""

import os
from collections.abc import Iterable
from typing import NamedTuple

from lavalite.messages import JobUsage
from roles.sbatchd import record
from roles.sbatchd.cgroups import Group
from roles.sbatchd.core import RUNNING, Attempt

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# per backend: (dir key, file) of the memory charge now, of memory+swap (v1) or swap (v2), and
# of the tasks (threads) in the group
_FILES = {
    "v2": (("", "memory.current"), ("", "memory.swap.current"), ("", "pids.current")),
    "v1": (
        ("memory", "memory.usage_in_bytes"),
        ("memory", "memory.memsw.usage_in_bytes"),
        ("pids", "pids.current"),
    ),
}


class Target(NamedTuple):
    """An attempt to sample: its cgroup (None without cgroups) and its record (the job's
    pid, which is its process group)."""

    job: int
    attempt: int
    group: Group | None
    record: str


class ProcStat(NamedTuple):
    """What /proc/<pid>/stat says of one process."""

    pgrp: int
    ticks: int  # utime + stime + cutime + cstime: its CPU and its reaped children's
    threads: int
    rss: int  # resident pages


def targets(attempts: Iterable[Attempt]) -> list[Target]:
    """The attempts whose job runs (their shepherd has the order)."""
    return [Target(a.job, a.attempt, a.group, a.path) for a in attempts if a.state == RUNNING]


def parse_stat(text: str) -> ProcStat | None:
    """/proc/<pid>/stat's fields (after the command name, which may hold spaces and
    parentheses: it ends at the last ')'); None for a text that is not one."""
    fields = text.rpartition(")")[2].split()
    try:  # fields[0] is the state: field 3 of proc(5)
        return ProcStat(
            int(fields[2]),
            sum(int(f) for f in fields[11:15]),
            int(fields[17]),
            int(fields[21]),
        )
    except (IndexError, ValueError):
        return None


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # a process or group gone meanwhile
        return ""


def _number(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


class Figures(NamedTuple):
    """One attempt's figures before they become a JobUsage (None: not known)."""

    cpu: float | None
    mem: int | None
    swap: int | None
    peak: int | None
    threads: int | None
    pids: list[int]


def sum_procs(stats: list[ProcStat]) -> Figures:
    """The figures of a set of processes, as LSF sums its job's processes."""
    return Figures(
        sum(s.ticks for s in stats) / CLOCK_TICKS,
        sum(s.rss for s in stats) * PAGE_SIZE,
        None,
        None,
        sum(s.threads for s in stats),
        [],
    )


def group_figures(group: Group, exclude: set[int], proc: str) -> Figures:
    """An attempt's figures from its cgroup, /proc filling what the kernel does not count
    (no cpuacct with v1's cpu, no memory or pids controller). `exclude`: sbatchd's shepherds,
    whose spawning thread is in a v1 group for a moment."""
    procs = _read(os.path.join(next(iter(group.dirs.values())), "cgroup.procs")).split()
    pids = [int(p) for p in procs if int(p) not in exclude]
    cpu, peak = group.usage()
    mem, swap, threads = (
        _number(group.knob(*f)) if f[0] in group.dirs else None for f in _FILES[group.backend.name]
    )
    if swap is not None and group.backend.name == "v1":
        swap = max(0, swap - (mem or 0))  # memsw counts memory and swap together
    if cpu is None or mem is None or threads is None:
        stats = [s for pid in pids if (s := parse_stat(_read(f"{proc}/{pid}/stat")))]
        summed = sum_procs(stats)
        cpu = summed.cpu if cpu is None else cpu
        mem = summed.mem if mem is None else mem
        threads = summed.threads if threads is None else threads
    return Figures(cpu, mem, swap, peak, threads, pids)


def scan(pgids: set[int], proc: str = "/proc") -> dict[int, list[tuple[int, ProcStat]]]:
    """Every process of those process groups: one pass over /proc for all the jobs."""
    found: dict[int, list[tuple[int, ProcStat]]] = {}
    for name in os.listdir(proc) if pgids else ():  # with cgroups: no scan
        if name.isdigit():
            stat = parse_stat(_read(f"{proc}/{name}/stat"))
            if stat is not None and stat.pgrp in pgids:
                found.setdefault(stat.pgrp, []).append((int(name), stat))
    return found


class Sampler:
    """Samples the attempts it is given; remembers, per attempt, its process group (read
    from its record once) and, where the kernel keeps no peak, the largest memory seen."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.pgids: dict[tuple[int, int], int] = {}
        self.peaks: dict[tuple[int, int], int] = {}

    def sample(self, attempts: list[Target], exclude: set[int]) -> list[JobUsage]:
        """The figures of every attempt whose job has started (its pid in its record)."""
        keys = {(t.job, t.attempt) for t in attempts}
        self.pgids = {k: v for k, v in self.pgids.items() if k in keys}
        self.peaks = {k: v for k, v in self.peaks.items() if k in keys}
        started = [(t, pgid) for t in attempts if (pgid := self._pgid(t)) is not None]
        groups = scan({pgid for t, pgid in started if t.group is None}, self.proc)
        out = []
        for t, pgid in started:
            if t.group is not None:
                figures = group_figures(t.group, exclude, self.proc)
            else:
                procs = groups.get(pgid, [])
                figures = sum_procs([s for _, s in procs])._replace(pids=[p for p, _ in procs])
            if figures.pids:  # none: it has just ended, its EXIT report says the rest
                out.append(self._usage(t, pgid, figures))
        return out

    def _pgid(self, t: Target) -> int | None:
        key = (t.job, t.attempt)
        pgid = self.pgids.get(key)
        if pgid is None:
            pgid = record.read(t.record).get("pid")
            if pgid is not None:
                self.pgids[key] = pgid
        return pgid

    def _usage(self, t: Target, pgid: int, f: Figures) -> JobUsage:
        peak = f.peak
        if peak is None and f.mem is not None:
            peak = self.peaks[t.job, t.attempt] = max(self.peaks.get((t.job, t.attempt), 0), f.mem)
        return {
            "job": t.job,
            "attempt": t.attempt,
            "cpu": None if f.cpu is None else round(f.cpu, 2),
            "mem": f.mem,
            "swap": f.swap,
            "max_mem": peak,
            "nthreads": f.threads,
            "pgid": pgid,
            "pids": sorted(f.pids),
        }
