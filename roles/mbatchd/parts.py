"""What a multi-host job's blaunch tasks used on its other hosts, added to the job.

sbatchd on a host other than the job's first runs its blaunch tasks in a group of their own
(roles/sbatchd/tasks.py) and, when that part ends, reports what the group used: a `part`
report (job, attempt, cpu_time, max_mem). The job's figures are summed over its hosts, as LSF
accounts a parallel job's tasks with the job: CPU time, and peak memory as the sum of each
host's peak. A part usually ends after the job's own EXIT (mbatchd's kill at the job's end),
so it updates a finished job: in memory while it is there (within clean_period), else its
row in the store, by the turn's commit (no read in the turn). A report of an attempt that is
not the job's current one, of a host that is not one of the job's other hosts, or of a job
mbatchd does not know, changes nothing; nor does one already counted (a report sbatchd sends
again when the connection dropped between mbatchd's commit and its acknowledgement): the
store marks each part counted (job_parts), and mbatchd holds the marks of the jobs in memory.
"""

from typing import TYPE_CHECKING, Any

from lavalite import accounting
from lavalite.model import Job

if TYPE_CHECKING:  # core imports this module
    from roles.mbatchd.core import TurnOutput


def counts(job: Job, host: str, attempt: Any) -> bool:
    """Whether `host`'s part of `attempt` belongs to the job's figures: its current attempt,
    placed on that host other than its first."""
    return job.attempt == attempt and any(h == host for h, _ in (job.hosts or ())[1:])


class PartOps:
    """Mixed into Core (roles/mbatchd/core.py), whose state and helpers it uses."""

    jobs: dict[int, Job]
    out: "TurnOutput"
    counted: dict[int, set[tuple[int, str, float]]]  # job -> its parts counted

    if TYPE_CHECKING:  # Core's

        def _dirty(self, job: Job) -> None: ...

    def part_report(self, host: str, rep: dict[str, Any]) -> None:
        """A part's figures added to its job, in memory or by the commit in the store."""
        cpu, mem = accounting.usage(rep)
        if cpu is None and mem is None:
            return
        job_id, attempt, ended = rep.get("job"), rep.get("attempt"), rep.get("time")
        if type(job_id) is not int or type(attempt) is not int or type(ended) is not float:
            return
        job = self.jobs.get(job_id)
        if job is None:  # gone from memory, or never known: the store's row, if it counts
            self.out.parts.append((job_id, attempt, host, ended, cpu, mem, False))
            return
        seen = self.counted.setdefault(job_id, set())
        if counts(job, host, attempt) and (attempt, host, ended) not in seen:
            seen.add((attempt, host, ended))  # a part by the time its host ended it
            job.cpu_time, job.max_mem = accounting.combined((job.cpu_time, job.max_mem), (cpu, mem))
            self._dirty(job)
            self.out.parts.append((job_id, attempt, host, ended, cpu, mem, True))
