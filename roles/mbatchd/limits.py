"""mbatchd's side of queues.conf's [limit NAME] sections (LSF's Limit, docs/policy.md "Limits"):
the rules built from the configuration, and their counters kept as jobs start and end.

A running job is counted in when it starts (or is loaded running) and out when it leaves its
hosts (`Core._count_run`), so the counters cost nothing per turn; the scheduler reads them
(scheduler.limits) and charges its own placements on top. A reload builds the rules again and
counts the running jobs once (the consumers and caps may have changed).
"""

from typing import Any

from lavalite.config import LIMIT_CONSUMERS, Config, LimitConf
from lavalite.model import WAITING, Job
from roles.mbatchd.placement import allocation
from scheduler.limits import JOBS, MEM, SLOTS, Limits, Members, Rule


def _users(words: list[str], groups: dict[str, frozenset[str]]) -> list[str]:
    """A [usergroup] named in users / per_user stands for its members (~GROUP: none of them)."""
    out = []
    for word in words:
        neg = "~" if word.startswith("~") else ""
        name = word[len(neg) :]
        out += [neg + user for user in sorted(groups.get(name, (name,)))]
    return out


def rule_of(lc: LimitConf, groups: dict[str, frozenset[str]]) -> Rule:
    """A Rule from a [limit NAME] as config.py checked it."""
    members: dict[str, Members | None] = {}
    for consumer in LIMIT_CONSUMERS:
        per = f"per_{consumer[:-1]}"
        words = getattr(lc, consumer) or getattr(lc, per)
        if consumer == "users":
            words = _users(words, groups)
        members[consumer] = Members(words, per=bool(getattr(lc, per))) if words else None
    return Rule(lc.name, (lc.slots, lc.mem, lc.jobs), **members)


def build(conf: Config) -> Limits | None:
    """The configuration's limits, no counts yet; None when there are none (the scheduler then
    does no limit work at all)."""
    if not conf.limits:
        return None
    return Limits([rule_of(lc, conf.group_users) for lc in conf.limits.values()])


class LimitOps:
    """Mixed into Core (roles/mbatchd/core.py), whose state it uses."""

    conf: Config
    jobs: dict[int, Job]
    limits: Limits | None

    def _set_limits(self, jobs: dict[int, Job]) -> None:
        """After the configuration is (re)loaded: the rules, with the running jobs of `jobs`
        counted (none yet at start-up: the loaded jobs are counted as they are adopted)."""
        self.limits = build(self.conf)
        for job in jobs.values():
            if job.state not in WAITING and not job.finished:
                self._limit_count(job, +1)

    def _limit_count(self, job: Job, sign: int) -> None:
        """A job on its hosts (+1) or leaving them (-1)."""
        if self.limits is not None:
            self.limits.count(job, allocation(job), sign)

    def query_limits(self) -> dict[str, Any]:
        """blimits: a row per counter in use, and per limit with none in use (`used`: False)."""
        rows, shown = [], set()
        conf = self.conf.limits
        used = self.limits.used if self.limits is not None else {}
        for key, counter in sorted(used.items(), key=lambda kv: [str(k) for k in kv[0]]):
            shown.add(key[0])
            rows.append(_row(conf[key[0]], key[1:], counter, True))
        for name, lc in conf.items():
            if name not in shown:
                rows.append(_row(lc, (None, None, None, None), [0, 0, 0], False))
        return {"limits": rows}


def _row(lc: LimitConf, parts: tuple, counter: list[int], used: bool) -> dict[str, Any]:
    """One blimits row: each consumer as the counter has it (one member of a per- kind) or as
    the limit names it ([]: not limited by that kind), and [used, limit] per resource."""
    row: dict[str, Any] = {"name": lc.name, "used": used}
    for consumer, part in zip(LIMIT_CONSUMERS, (parts[0], parts[1], parts[3], parts[2])):
        per = f"per_{consumer[:-1]}"
        row[consumer] = [part] if part is not None else getattr(lc, consumer) or getattr(lc, per)
    for i, resource in ((SLOTS, "slots"), (MEM, "mem"), (JOBS, "jobs")):
        row[resource] = [counter[i], getattr(lc, resource)]
    return row
