"""Running jobs' figures from their workers' `usage` frames (roles/sbatchd/usage.py): kept on
the Job in memory for bjobs, never written to the store (the end figures are, from the EXIT
report). O(jobs in the frame): no turn, no transaction."""

from typing import Any

from lavalite.messages import JobUsage
from lavalite.model import WAITING, Job


def apply(jobs: dict[int, Job], host: str, sampled: list[JobUsage], now: float) -> None:
    """Each figure onto its job, if that attempt still runs there (a frame sent just before
    the job ended or moved is late, not wrong: it is dropped)."""
    for u in sampled:
        job = jobs.get(u["job"]) if type(u.get("job")) is int else None
        if (
            job is None
            or job.attempt != u.get("attempt")
            or job.host != host
            or job.finished
            or job.state in WAITING
        ):
            continue
        job.usage = _figures(u, now)


def _figures(u: Any, now: float) -> dict[str, Any]:
    """The job view's names for one attempt's figures (lavalite.model.USAGE_FIELDS)."""
    return {
        "cpu_time": u.get("cpu"),
        "mem": u.get("mem"),
        "max_mem": u.get("max_mem"),
        "swap": u.get("swap"),
        "nthreads": u.get("nthreads"),
        "pgid": u.get("pgid"),
        "run_pids": u.get("pids"),
        "usage_time": now,
    }
