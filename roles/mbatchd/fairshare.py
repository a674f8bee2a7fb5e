"""Fairshare's inputs, kept by mbatchd as jobs start and end: each fairshare queue's usage by
share account (scheduler.fairshare.Usage), which the scheduler reads to order the queue.

A job charges its account when it starts (its slots count as running) and when it ends (its
CPU time is added); the run time of running slots is folded in each time the account changes,
so nothing is done per turn or per running job. Changed usage is written with the turn's other
rows (fairshare_usage), so it survives a restart: the running slots are counted again as the
running jobs are loaded, and their run time since the last write is folded in then.
"""

from typing import TYPE_CHECKING, Any

from lavalite.config import Config
from lavalite.fairshare import parse_shares
from lavalite.model import WAITING, Job
from scheduler import QueueView
from scheduler.fairshare import Factors, Fair, Policy, Usage

if TYPE_CHECKING:  # core imports this module
    from roles.mbatchd.core import TurnOutput

UsageKey = tuple[str, str]  # (queue, account)


def factors(conf: Config) -> Factors:
    m = conf.mbatchd
    return Factors(m.cpu_time_factor, m.run_time_factor, m.run_job_factor, m.fairshare_half_life)


class FairOps:
    """Mixed into Core (roles/mbatchd/core.py), whose state and helpers it uses."""

    conf: Config
    queues: dict[str, QueueView]
    qconf: dict[str, Any]
    out: "TurnOutput"
    clock: float  # the time of the turn: tick and schedule set it

    if TYPE_CHECKING:  # Core's

        def _queue(self, name: str) -> QueueView: ...

    def _init_fair(self, state: dict[str, Any], now: float) -> None:
        """The usage the store kept, until the queues' views take it. While the jobs are
        loaded (fair_loading) their slots are counted without folding time in: _fair_loaded
        then credits the running slots with their run time since the usage was written."""
        self.clock = now
        self.fair_loading = True
        self.fair_loaded: dict[UsageKey, Usage] = {
            key: Usage(*row) for key, row in state.get("fairshare", {}).items()
        }

    def _fair_loaded(self) -> None:
        self.fair_loading = False
        self.fair_loaded.clear()
        for fair in (view.fair for view in self.queues.values() if view.fair):
            for usage in fair.usage.values():
                usage.advance(self.clock, fair.factors.half_life)

    def _set_fair(self, jobs: dict[int, Job]) -> None:
        """After the queues are (re)configured: a Fair on each fairshare queue, with the usage
        it had (or the store's), its running slots counted again from `jobs` (an account may
        have changed with the shares)."""
        f = factors(self.conf)
        for name, view in self.queues.items():
            qc = self.qconf.get(name)
            if qc is None or not qc.fairshare:
                view.fair = None
                continue
            old = view.fair.usage if view.fair else self._loaded_usage(name)
            view.fair = Fair(Policy.build(parse_shares(qc.fairshare), self.conf.group_users), f)
            view.fair.usage = old
            for usage in old.values() if not self.fair_loading else ():
                usage.advance(self.clock, f.half_life)
                usage.running = 0
        for job in jobs.values():
            if job.state not in WAITING and not job.finished:
                self._fair_count(job, +1)

    def _loaded_usage(self, queue: str) -> dict[str, Usage]:
        return {a: u for (q, a), u in self.fair_loaded.items() if q == queue}

    def _fair_count(self, job: Job, sign: int) -> None:
        """A job of a fairshare queue starts (+1) or leaves its slots (-1): its account's
        running slots, and at the end its CPU time."""
        fair = self._queue(job.queue).fair
        if fair is None:
            return
        account = fair.policy.account(job.user, job.spec.get("user_group"))[0]
        usage = fair.usage.get(account)
        if usage is None:
            usage = fair.usage[account] = Usage(at=self.clock)
        if not self.fair_loading:
            usage.advance(self.clock, fair.factors.half_life)
        usage.running = max(0, usage.running + sign * job.slots)
        if sign < 0 and job.cpu_time:
            usage.cpu += job.cpu_time
        self.out.fairshare[(job.queue, account)] = usage

    def share_info(self, queue: str) -> list[dict[str, Any]] | None:
        """bqueues -l's SHARE_INFO_FOR: every account the shares name or that has used the
        queue, highest priority first; None for a queue without fairshare."""
        fair = self._queue(queue).fair
        if fair is None:
            return None
        pol, now = fair.policy, self.clock
        shares = {a: s for a, s in (*pol.users.values(), *pol.groups.values())}
        for account in fair.usage:
            shares.setdefault(account, pol.account(account)[1])
        rows = []
        for account, n in shares.items():
            usage = fair.usage.get(account) or Usage(at=now)
            run, cpu = usage.at_time(now, fair.factors.half_life)
            rows.append(
                {
                    "account": account,
                    "shares": n,
                    "priority": fair.priority(account, n, now),
                    "started": usage.running,
                    "reserved": 0,
                    "cpu_time": cpu,
                    "run_time": run,
                    "adjust": 0.0,
                }
            )
        return sorted(rows, key=lambda r: (-r["priority"], r["account"]))
