"""Load thresholds per queue (queues.conf `load_sched`, `load_stop`: LSF's loadSched and
loadStop) on the loads LIM reports (`Core.host_load`, every LIM poll).

load_sched is the scheduler's (scheduler/fit.py: a host past it takes no new job of the
queue). Past a queue's load_stop, a host's running jobs of that queue are suspended by the
system (SSUSP, LSF's reason naming the index), one per host per load sample, the most
recently started first (LSF); a host whose load is back within the queue's load_sched (and
its load_stop) resumes one of them per sample, the one stopped last first. A job is stopped
past load_stop and resumed only within load_sched, which config-check keeps at or below
load_stop: between the two a job stays as it is, so it does not flap.

Per sample this walks the hosts only while a queue has load_stop or a job is stopped for
load; it reads a host's jobs only when the host is past a threshold.
"""

from typing import TYPE_CHECKING, Any

from lavalite.loadthreshold import INDICES, parse, reason
from lavalite.model import RUN, SSUSP, Job
from lavalite.resreq import queue_req
from scheduler.fit import Threshold, overloaded

LOAD_REASONS = frozenset(reason(index) for index in INDICES)  # a job stopped for load
PLACING = ("placement", "res_req", "load_sched", "load_stop")  # a queue's keys, for bqueues -l


class LoadStopOps:
    """Mixed into Core (roles/mbatchd/core.py), whose state and helpers it uses."""

    jobs: dict[int, Job]
    hosts: dict[str, Any]
    host_jobs: dict[str, set[int]]
    queues: dict[str, Any]
    load_stop: dict[str, tuple[Threshold, ...]]  # queue -> its load_stop, queues that have one
    load_stopped: dict[str, list[int]]  # host -> jobs it stopped for load, in that order
    load_acted: dict[str, float]  # host -> the time of its last load sample acted on
    wake: bool  # plan (and commit) a turn

    if TYPE_CHECKING:  # SuspendOps' moves

        def suspend_by_system(self, job_id: int, reason: str, now: float) -> bool: ...
        def resume_by_system(self, job_id: int, now: float) -> bool: ...

    def _set_load_policy(self, view: Any, qc: Any) -> None:
        """A queue's placement, res_req and thresholds from its configuration (checked by
        config)."""
        view.placement = qc.placement
        view.load_sched = parse(qc.load_sched)
        view.req = queue_req(qc.res_req) if qc.res_req else None
        stop = parse(qc.load_stop)
        if stop:
            self.load_stop[qc.name] = stop
        else:
            self.load_stop.pop(qc.name, None)

    def _adopt_load_stopped(self, job: Job) -> None:
        """A job loaded from the store, stopped for load: resumed when its host is back."""
        if job.state == SSUSP and job.reason in LOAD_REASONS and job.host:
            self.load_stopped.setdefault(job.host, []).append(job.id)

    def check_loads(self, now: float) -> None:
        """New loads from LIM: on each host, stop one job past its queue's load_stop, or else
        resume one that its host's load lets run again. A move wakes a turn, which commits it
        and sends the hosts their orders."""
        if not self.load_stop and not self.load_stopped:
            return
        for name, host in self.hosts.items():
            sample = host.load.get("time")  # mbatchd may read LIM's view twice a sample
            if not self.host_jobs.get(name) or self.load_acted.get(name) == sample:
                continue
            if self._stop_for_load(name, host.facts, now) or self._resume_after_load(
                name, host.facts, now
            ):
                self.load_acted[name] = sample
                self.wake = True

    def _stop_for_load(self, name: str, facts: dict, now: float) -> bool:
        """Suspend the most recently started running job of a queue whose load_stop the host
        is past: whether one was."""
        over = {q: why for q, stop in self.load_stop.items() if (why := overloaded(stop, facts))}
        if not over:
            return False
        running = [  # a job on several hosts goes by the load of the one it started on
            job
            for job_id in self.host_jobs[name]
            if (job := self.jobs[job_id]).state == RUN and job.queue in over and job.host == name
        ]
        if not running:
            return False
        job = max(running, key=lambda j: (j.start_time or 0, j.id))
        self.suspend_by_system(job.id, over[job.queue], now)
        self.load_stopped.setdefault(name, []).append(job.id)
        return True

    def _resume_after_load(self, name: str, facts: dict, now: float) -> bool:
        """Resume the job stopped last on the host if its queue's thresholds let it run (whether
        one was); jobs no longer stopped for load (ended, stopped by bstop since) are dropped."""
        stopped = self.load_stopped.get(name, [])
        resumed = False
        while stopped and not resumed:
            job = self.jobs.get(stopped[-1])
            if job is not None and job.state == SSUSP and job.reason in LOAD_REASONS:
                view = self.queues.get(job.queue)
                sched = view.load_sched if view is not None else ()
                if overloaded(sched, facts) or overloaded(self.load_stop.get(job.queue, ()), facts):
                    return False
                resumed = self.resume_by_system(job.id, now)
            stopped.pop()
        if not stopped:
            self.load_stopped.pop(name, None)
        return resumed
