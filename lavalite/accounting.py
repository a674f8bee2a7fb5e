"""What a job used and when, as bhist and bacct count it: pure arithmetic, no I/O.

A job's CPU time and peak memory come from its worker (the shepherd reads the job's cgroup
at its end, or the rusage of its processes) in sbatchd's EXIT report; times in states come
from its events in the store.
"""

import time
from typing import Any

from lavalite.model import DONE, FINISHED

# bhist's columns of time in states; a state not named here counts as UNKWN
STATE_COLUMNS = ("PEND", "PSUSP", "RUN", "USUSP", "SSUSP", "UNKWN")


def usage(report: dict[str, Any]) -> tuple[float | None, int | None]:
    """(cpu_time seconds, max_mem bytes) of an EXIT report, None for a figure it lacks or
    that is not a number >= 0 (a report is a wire value)."""
    cpu, mem = report.get("cpu_time"), report.get("max_mem")
    if not (isinstance(cpu, (int, float)) and not isinstance(cpu, bool) and cpu >= 0):
        cpu = None
    if not (isinstance(mem, int) and not isinstance(mem, bool) and mem >= 0):
        mem = None
    return (None if cpu is None else float(cpu)), mem


def combined(
    a: tuple[float | None, int | None], b: tuple[float | None, int | None]
) -> tuple[float | None, int | None]:
    """Two hosts' (cpu_time, max_mem) as one job's: each figure summed, as LSF counts a
    parallel job's use over all its hosts; a figure neither measured stays None."""
    return _sum(a[0], b[0]), _sum(a[1], b[1])


def _sum(x: Any, y: Any) -> Any:
    return y if x is None else x if y is None else x + y


def time_in_states(events: list[tuple], until: float) -> dict[str, float]:
    """Seconds spent in each of STATE_COLUMNS, and TOTAL, by a job whose events (time, old,
    new, ...) are given in order: each state lasts until the next event, the last one until
    `until` unless it is a finished state."""
    spent = dict.fromkeys(STATE_COLUMNS, 0.0)
    for (t, _, state, *_), nxt in zip(events, [*events[1:], None]):
        if state in FINISHED:
            continue
        end = until if nxt is None else nxt[0]
        spent[state if state in STATE_COLUMNS else "UNKWN"] += max(0.0, end - t)
    spent["TOTAL"] = sum(spent.values())
    return spent


def summary(raw: dict[str, Any]) -> dict[str, Any]:
    """bacct's SUMMARY from the store's one-pass totals (store.history.SUMMARY_FIELDS):
    averages over the jobs counted, throughput over the span from the first end to the last."""
    jobs = raw["done"] + raw["exited"]
    out = dict(raw, jobs=jobs)
    for name in ("cpu", "wait", "turnaround", "hog"):
        out[f"{name}_avg"] = raw[f"{name}_total"] / jobs if jobs else 0.0
    span = (raw["end"] - raw["begin"]) if jobs and raw["begin"] is not None else 0.0
    out["hours"] = span / 3600.0
    # jobs per hour; a span under a second (one job, say) counts as one second, as LSF does
    out["throughput"] = jobs / max(span, 1.0) * 3600.0 if jobs else 0.0
    return out


def lsf_status(state: str) -> str:
    """DONE, or EXIT for a job that failed or was killed (LSF's two finished states)."""
    return "DONE" if state == DONE else "EXIT"


def parse_interval(text: str, now: float) -> tuple[float, float]:
    """LSF's time0,time1 (bacct -C, bhist -C): each [[[year/]month/]day/]hour:minute, or
    '.' for now; an empty time1 means now; a lone time means from it to now. Raises
    ValueError naming the time it cannot read."""
    first, _, second = text.partition(",")
    t0 = _lsf_time(first, now)
    t1 = _lsf_time(second, now) if second else now
    if t1 < t0:
        raise ValueError(f"time1 is before time0 in '{text}'")
    return t0, t1


def _lsf_time(word: str, now: float) -> float:
    if word.strip() == ".":
        return now
    *dates, clock = word.strip().split("/")
    hour, colon, minute = clock.partition(":")
    today = time.localtime(now)
    try:
        if not colon or len(dates) > 3:
            raise ValueError
        year, month, day = [today.tm_year, today.tm_mon, today.tm_mday][: 3 - len(dates)] + [
            int(d) for d in dates
        ]
        return time.mktime((year, month, day, int(hour), int(minute), 0, 0, 0, -1))
    except (ValueError, OverflowError):
        raise ValueError(
            f"bad time '{word}': give [[[year/]month/]day/]hour:minute or '.'"
        ) from None
