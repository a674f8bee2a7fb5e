"""Fairshare as LSF computes it: who a job charges (its share account) and that account's
dynamic priority,

    shares / (cpu_time * CPU_TIME_FACTOR + run_time * RUN_TIME_FACTOR
              + (1 + slots) * RUN_JOB_FACTOR)

cpu_time and run_time in hours, decayed with a half-life; run_time counts finished jobs and the
slot-time of running ones. Pure: mbatchd keeps the Usage objects, the time is an argument.
"""

from typing import Any

GROUP_MARK = "/"  # a group's account is NAME/, as LSF's SHARE_INFO_FOR shows it
OTHERS = "others"


class Factors:
    __slots__ = ("cpu_time", "run_time", "run_job", "half_life")

    def __init__(
        self,
        cpu_time: float = 0.7,
        run_time: float = 0.7,
        run_job: float = 3.0,
        half_life: float = 5.0,
    ) -> None:
        self.cpu_time, self.run_time, self.run_job = cpu_time, run_time, run_job
        self.half_life = half_life * 3600.0  # seconds; 0 = usage never decays


class Usage:
    """One account's use of one queue: run and cpu are slot-seconds and CPU seconds, decayed up
    to `at`; the `running` slots add their run time from `at` on."""

    __slots__ = ("run", "cpu", "at", "running")

    def __init__(self, run: float = 0.0, cpu: float = 0.0, at: float = 0.0) -> None:
        self.run, self.cpu, self.at = run, cpu, at
        self.running = 0

    def at_time(self, now: float, half_life: float) -> tuple[float, float]:
        """(run, cpu) as of `now`: decayed, with the running slots' time since `at`."""
        dt = max(0.0, now - self.at)
        keep = 0.5 ** (dt / half_life) if half_life > 0 else 1.0
        return self.run * keep + self.running * dt, self.cpu * keep

    def advance(self, now: float, half_life: float) -> None:
        """Fold the time up to `now` in, before `running` or the totals change."""
        self.run, self.cpu = self.at_time(now, half_life)
        self.at = max(self.at, now)


class Policy:
    """A queue's USER_SHARES resolved: account(user, group) -> (account name, shares).
    users: user -> (account, shares) of the users named alone or through `group@`, or charged to
    a group they are a member of; groups: group -> (NAME/, shares) of the groups that share."""

    __slots__ = ("users", "groups", "default", "others")

    def __init__(
        self,
        users: dict[str, tuple[str, int]],
        groups: dict[str, tuple[str, int]],
        default: int = 0,
        others: int = 0,
    ) -> None:
        self.users, self.groups, self.default, self.others = users, groups, default, others

    @classmethod
    def build(cls, entries: list[tuple[str, int]], members: dict[str, frozenset[str]]) -> "Policy":
        """From parse_shares' entries and expand_groups' members. A user named alone comes
        first, then `group@`, then the first group that shares; the rest fall to `default`
        (shares of their own) or `others` (shares together), else to none."""
        users: dict[str, tuple[str, int]] = {}
        groups: dict[str, tuple[str, int]] = {}
        default = others = 0
        for name, shares in entries:
            if name == "default":
                default = shares
            elif name == OTHERS:
                others = shares
            elif name.endswith("@"):
                for user in sorted(members.get(name[:-1], ())):
                    users.setdefault(user, (user, shares))
            elif name in members:
                groups[name] = (name + GROUP_MARK, shares)
        for name, shares in entries:
            if name not in members and not name.endswith("@") and name not in ("default", OTHERS):
                users[name] = (name, shares)
        for group, (account, shares) in groups.items():
            for user in sorted(members[group]):
                users.setdefault(user, (account, shares))
        return cls(users, groups, default, others)

    def account(self, user: str, group: Any = None) -> tuple[str, int]:
        """The account a job of `user` charges; bsub -G `group` charges that group where it
        shares in this queue."""
        if group is not None and group in self.groups:
            return self.groups[group]
        found = self.users.get(user)
        if found is not None:
            return found
        if self.default or not self.others:
            return user, self.default
        return OTHERS, self.others


def priority(shares: int, usage: Usage | None, now: float, f: Factors, extra: int = 0) -> float:
    """LSF's dynamic priority of an account with `extra` slots placed beyond its running ones."""
    run, cpu, slots = 0.0, 0.0, extra
    if usage is not None:
        run, cpu = usage.at_time(now, f.half_life)
        slots += usage.running
    load = cpu / 3600.0 * f.cpu_time + run / 3600.0 * f.run_time + (1 + slots) * f.run_job
    return shares / load if load > 0 else float(shares) * 1e9


class Fair:
    """What a fairshare queue adds to its QueueView: the policy, the factors and the usage by
    account, which mbatchd keeps current."""

    __slots__ = ("policy", "factors", "usage")

    def __init__(self, policy: Policy, factors: Factors) -> None:
        self.policy, self.factors = policy, factors
        self.usage: dict[str, Usage] = {}

    def priority(self, account: str, shares: int, now: float, extra: int = 0) -> float:
        return priority(shares, self.usage.get(account), now, self.factors, extra)
