"""Resource allocation limits (queues.conf's [limit NAME], LSF's Limit sections) as the
scheduler checks them: pure data and arithmetic, no I/O.

A `Rule` is one [limit NAME]: the consumers it counts (users, queues, hosts, projects, each
together or per member) and its caps on slots, memory and jobs. A job falls under a rule when
its user, queue and project are among the rule's (a kind of consumer the rule does not name
takes everyone). Usage is kept in counters keyed by (rule name, the job's user, queue, project
and host where the rule is per that kind, else None), so `per_user = all` gives each user a
counter of their own and `users = alice bob` one for the two together.

`Limits` holds the rules and the counters; mbatchd owns it and counts a job in when it starts
and out when it ends (`count`), so no turn walks the running jobs. `TurnLimits` is one
scheduling pass's view: the counters plus what the pass has placed, which it never mutates.
"""

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

SLOTS, MEM, JOBS = 0, 1, 2  # indexes of a counter and of a rule's caps
RESOURCES = ("slot", "mem", "jobs")  # as LSF's pending reasons name them
ALL = "all"
_NONE = (0, 0, 0)  # a counter nobody charged
DEFAULT_PROJECT = "default"  # LSF's project of a job submitted without -P
Key = tuple[str, str | None, str | None, str | None, str | None]  # rule, user, queue, project, host
Part = Sequence[Any]  # (host, slots) of a placed job, a list or a tuple


class Members:
    """Whom one kind of consumer of a rule names: `all` (or only exclusions) is everyone but
    the `~NAME`s; `per`: each member has the limit alone."""

    __slots__ = ("names", "excluded", "per")

    def __init__(self, words: Iterable[str], per: bool) -> None:
        words = list(words)
        named = [w for w in words if not w.startswith("~")]
        self.names = None if not named or ALL in named else frozenset(named)
        self.excluded = frozenset(w[1:] for w in words if w.startswith("~"))
        self.per = per

    def has(self, name: str) -> bool:
        return name not in self.excluded and (self.names is None or name in self.names)

    def part(self, name: str) -> str | None:
        """The counter key's part for `name`: itself where per member, else None (shared)."""
        return name if self.per else None


class Rule:
    """One [limit NAME]: users, queues, hosts, projects are Members or None (not limited by
    that kind); caps: (slots, mem bytes, jobs), None where the resource is not limited."""

    __slots__ = ("name", "users", "queues", "hosts", "projects", "caps", "limited")

    def __init__(
        self,
        name: str,
        caps: tuple[int | None, int | None, int | None],
        users: Members | None = None,
        queues: Members | None = None,
        hosts: Members | None = None,
        projects: Members | None = None,
    ) -> None:
        self.name, self.caps = name, caps
        self.limited = tuple((i, cap) for i, cap in enumerate(caps) if cap is not None)
        self.users, self.queues, self.hosts, self.projects = users, queues, hosts, projects

    def applies(self, user: str, queue: str, project: str) -> bool:
        return all(
            m is None or m.has(name)
            for m, name in ((self.users, user), (self.queues, queue), (self.projects, project))
        )

    def key(self, user: str, queue: str, project: str, host: str | None) -> Key:
        return (
            self.name,
            self.users.part(user) if self.users else None,
            self.queues.part(queue) if self.queues else None,
            self.projects.part(project) if self.projects else None,
            self.hosts.part(host) if self.hosts and host is not None else None,
        )

    def reason(self, resource: int) -> str:
        """LSF's pending reason for a job this rule holds back."""
        where = next(
            (
                text
                for members, text in (
                    (self.users, "on user or user group"),
                    (self.projects, "on project"),
                    (self.queues, "on queue"),
                    (self.hosts, "on host"),
                )
                if members is not None
            ),
            "cluster-wide",
        )
        return (
            f"Resource ({RESOURCES[resource]}) limit defined {where} has been reached "
            f"(Resource limit name: {self.name})"
        )


def project_of(job: Any) -> str:
    return job.spec.get("project") or DEFAULT_PROJECT


def part_mem(job: Any, slots: int, first: bool) -> int:
    """Memory a job's part of `slots` slots counts: rusage[mem] per slot, else its -M, which
    counts once, on the host where the job starts."""
    needs = job.needs
    if needs is not None and needs.req is not None and needs.req.mem:
        return needs.req.mem * slots
    return (job.spec.get("memory") or 0) if first else 0


class Limits:
    """The rules and their counters: key -> [slots, mem, jobs] in use by running (and
    suspended) jobs. `of` is memoized per (queue, user, project): a reload builds a new
    Limits."""

    __slots__ = ("rules", "used", "_of")

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.used: dict[Key, list[int]] = {}
        self._of: dict[tuple[str, str, str], tuple[Rule, ...]] = {}

    def of(self, queue: str, user: str, project: str) -> tuple[Rule, ...]:
        """The rules a job of `user` in `queue` and `project` falls under."""
        key = (queue, user, project)
        rules = self._of.get(key)
        if rules is None:
            rules = self._of[key] = tuple(r for r in self.rules if r.applies(user, queue, project))
        return rules

    def count(self, job: Any, parts: Sequence[Part], sign: int) -> None:
        """A running job in (+1) or out (-1) of every counter it charges."""
        for key, add in charges(self.of(job.queue, job.user, project_of(job)), job, parts):
            counter = self.used.setdefault(key, [0, 0, 0])
            for i in (SLOTS, MEM, JOBS):
                counter[i] += sign * add[i]
            if not any(counter):
                del self.used[key]


def charges(rules: Iterable[Rule], job: Any, parts: Sequence[Part]) -> Iterator[tuple[Key, list]]:
    """(counter key, [slots, mem, jobs]) of a job placed on `parts` under each rule: a rule of
    hosts counts the parts on the hosts it names (per host, or together), another the whole;
    a job counts once per counter however many of its hosts it holds."""
    user, queue, project = job.user, job.queue, project_of(job)
    for rule in rules:
        if rule.hosts is None:
            slots = sum(n for _, n in parts)
            yield rule.key(user, queue, project, None), [slots, part_mem(job, slots, True), 1]
            continue
        adds: dict[Key, list[int]] = {}
        for i, (host, n) in enumerate(parts):
            if rule.hosts.has(host):
                add = adds.setdefault(rule.key(user, queue, project, host), [0, 0, 1])
                add[SLOTS] += n
                add[MEM] += part_mem(job, n, i == 0)
        yield from adds.items()


class TurnLimits:
    """One pass's view of the limits: the counters plus what the pass has placed (`added`),
    so a pass never places past a limit and leaves mbatchd's counters alone."""

    __slots__ = ("limits", "added")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.added: dict[Key, list[int]] = {}

    def rules(self, job: Any, queue: str, user: str) -> tuple[Rule, ...]:
        return self.limits.of(queue, user, project_of(job))

    def _in_use(self, key: Key, i: int) -> int:
        """Resource i at `key`: running jobs' and this pass's placements'."""
        return self.limits.used.get(key, _NONE)[i] + self.added.get(key, _NONE)[i]

    def _full(self, key: Key, rule: Rule, add: list[int]) -> int | None:
        """The resource of `rule` that `add` more at `key` would pass, or None."""
        for i, cap in rule.limited:
            if add[i] and self._in_use(key, i) + add[i] > cap:
                return i
        return None

    def blocked(self, rules: tuple[Rule, ...], job: Any, slots: int) -> tuple[Rule, str] | None:
        """The first rule not of hosts without room for `slots` slots of the job, with its
        pending reason; None where every one has room."""
        for rule in rules:
            if rule.hosts is None:
                key = rule.key(job.user, job.queue, project_of(job), None)
                full = self._full(key, rule, [slots, part_mem(job, slots, True), 1])
                if full is not None:
                    return rule, rule.reason(full)
        return None

    def fits(self, rules: tuple[Rule, ...], job: Any, parts: Sequence[Part]) -> str | None:
        """None if the job placed on `parts` stays within every rule, else a pending reason."""
        for rule in rules:
            for key, add in charges((rule,), job, parts):
                full = self._full(key, rule, add)
                if full is not None:
                    return rule.reason(full)
        return None

    def charge(self, rules: tuple[Rule, ...], job: Any, parts: Sequence[Part]) -> None:
        for key, add in charges(rules, job, parts):
            counter = self.added.setdefault(key, [0, 0, 0])
            for i in (SLOTS, MEM, JOBS):
                counter[i] += add[i]

    def room(self, rules: tuple[Rule, ...], job: Any, host: str | None, free: int) -> int:
        """How many of `free` slots the job may take under the rules (of hosts, on `host`;
        of no host, with host None), counting rusage[mem] per slot."""
        per_slot = part_mem(job, 1, False)
        for rule in rules:
            if rule.hosts is None:
                if host is not None:
                    continue
            elif host is None or not rule.hosts.has(host):
                continue
            key = rule.key(job.user, job.queue, project_of(job), host)
            slots, mem, jobs = rule.caps
            if jobs is not None and self._in_use(key, JOBS) >= jobs:
                return 0
            if slots is not None:
                free = min(free, slots - self._in_use(key, SLOTS))
            if mem is not None and per_slot:
                free = min(free, (mem - self._in_use(key, MEM)) // per_slot)
            elif mem is not None and self._in_use(key, MEM) + part_mem(job, free, True) > mem:
                return 0  # its -M, which counts on the host where it starts
        return max(free, 0)


class JobLimit:
    """The limits of one job in one pass, as fit.place reads them: the slots it may have at
    most, what each host may give it, and the last word on an allocation."""

    __slots__ = ("turn", "rules", "job", "most")

    def __init__(self, turn: TurnLimits, rules: tuple[Rule, ...], job: Any, want: int) -> None:
        self.turn, self.rules, self.job = turn, rules, job
        self.most = turn.room(rules, job, None, want)

    def cap(self, host: str, free: int) -> int:
        return self.turn.room(self.rules, self.job, host, free)

    def fits(self, host: str, n: int) -> bool:
        """May n slots on `host` go to the job (for a job on one host: the rules not of hosts
        were checked already)."""
        return self.cap(host, n) >= n

    def refusal(self, parts: Sequence[Part]) -> str | None:
        return self.turn.fits(self.rules, self.job, parts)
