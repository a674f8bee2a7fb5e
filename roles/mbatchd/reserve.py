"""Slot reservations as mbatchd keeps them: the last plan's (scheduler/reserve.py), in memory
only. They are soft state: after a restart the wide jobs reserve again from the next turn on.
What bjobs -l and bhosts show of them, and the running jobs' ends the scheduler estimates
a reservation's start from (read from the host's jobs, only for the hosts a reservation holds).
"""

import math
from typing import Any

from scheduler.reserve import Reservation


class ReserveOps:
    """Core's part for reservations; Core sets `reservations` from each plan."""

    reservations: dict[int, Reservation]
    host_jobs: dict[str, set[int]]
    jobs: dict[int, Any]
    queues: dict[str, Any]
    clock: float

    def running_ends(self, host: str) -> list[tuple[float, int]]:
        """[(end, slots)] of the jobs running on `host`: start + run limit, inf without one."""
        out = []
        for job_id in self.host_jobs.get(host, ()):
            job = self.jobs[job_id]
            limit = job.spec.get("walltime")
            end = (job.start_time or self.clock) + limit if limit else math.inf
            out.append((end, _slots_on(job, host)))
        return out

    def reservation_view(self, job_id: int) -> dict[str, Any]:
        """A pending job's reservation for its view: hosts and slots held, since, estimate."""
        res = self.reservations.get(job_id)
        if res is None:
            return {"reserved": None, "reserved_since": None, "est_start": None}
        return {
            "reserved": [[host, n] for host, n in res.hosts.items()],
            "reserved_since": res.since,
            "est_start": res.start,
        }

    def reserved_by_host(self) -> dict[str, int]:
        """host -> slots held by reservations (bhosts' RSV)."""
        held: dict[str, int] = {}
        for res in self.reservations.values():
            for host, n in res.hosts.items():
                held[host] = held.get(host, 0) + n
        return held

    def reservation_due(self) -> float | None:
        """When the first reservation runs out (a turn then gives its slots to others)."""
        times = [
            res.since + self.queues[res.job.queue].reserve
            for res in self.reservations.values()
            if res.job.queue in self.queues
        ]
        return min(times, default=None)


def _slots_on(job: Any, host: str) -> int:
    if job.hosts:
        return sum(n for name, n in job.hosts if name == host)
    return int(job.slots)
