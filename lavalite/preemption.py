"""Preemption configuration as LSF writes it in a queue: `preemption = PREEMPTIVE[low normal]`
(this queue's jobs may preempt those of the lower-priority queues named; bare PREEMPTIVE: of
every lower-priority queue) and/or `PREEMPTABLE[high]` (this queue's jobs may be preempted by
those of the higher-priority queues named; bare: by every higher-priority queue). Parsing,
checking and the resulting pairs; the choice of victims is scheduler.preempt's. Imports stay
cheap: config (every command) uses this.
"""

import re

PREEMPTIVE, PREEMPTABLE = "PREEMPTIVE", "PREEMPTABLE"
_WORD = re.compile(r"(PREEMPTIVE|PREEMPTABLE)(?:\[([^\[\]]*)\])?")
_SYNTAX = "expected PREEMPTIVE[queue ...] and/or PREEMPTABLE[queue ...] (or either alone)"

# PREEMPTIVE or PREEMPTABLE -> the queues named, or None when bare (every lower / higher queue)
Policy = dict[str, list[str] | None]


def parse(text: str) -> Policy:
    """`PREEMPTIVE[a b] PREEMPTABLE` -> {PREEMPTIVE: [a, b], PREEMPTABLE: None}; ValueError
    says what is wrong."""
    out: Policy = {}
    pos = 0
    for m in _WORD.finditer(text):
        if text[pos : m.start()].strip():
            break
        word, names = m.group(1), m.group(2)
        if word in out:
            raise ValueError(f"{word} is given twice")
        if names is not None and not names.split():
            raise ValueError(f"{word}[] names no queue: name one, or write {word} alone")
        out[word] = names.split() if names is not None else None
        pos = m.end()
    if text[pos:].strip() or not out:
        raise ValueError(f"{_SYNTAX}, got {text!r}")
    return out


def problems(name: str, policy: Policy, priorities: dict[str, int]) -> list[str]:
    """What is wrong with queue `name`'s policy among the queues' `priorities`: a queue that is
    unknown, is this one, or is not of lower (PREEMPTIVE) or higher (PREEMPTABLE) priority."""
    out = []
    own = priorities[name]
    for word, names in policy.items():
        lower = word == PREEMPTIVE
        for other in names or ():
            if other == name:
                out.append(f"{word}[{other}]: a queue cannot preempt itself")
            elif other not in priorities:
                out.append(f"{word}[{other}]: no queue {other}")
            elif (priorities[other] >= own) if lower else (priorities[other] <= own):
                side = "lower" if lower else "higher"
                out.append(
                    f"{word}[{other}]: {other} (priority {priorities[other]}) is not of {side} "
                    f"priority than {name} ({own})"
                )
    return out


def pairs(policies: dict[str, Policy], priorities: dict[str, int]) -> dict[str, list[str]]:
    """{preemptive queue: the queues whose jobs it may preempt, lowest priority first}, from
    every queue's (checked) policy; strictly lower priorities only, so no two queues preempt
    each other."""
    found: dict[str, set[str]] = {}
    for name, policy in policies.items():
        own = priorities[name]
        if PREEMPTIVE in policy:
            listed = policy[PREEMPTIVE]
            lower = listed if listed is not None else [q for q, p in priorities.items() if p < own]
            found.setdefault(name, set()).update(q for q in lower if priorities.get(q, own) < own)
        if PREEMPTABLE in policy:
            listed = policy[PREEMPTABLE]
            higher = listed if listed is not None else [q for q, p in priorities.items() if p > own]
            for q in higher:
                if priorities.get(q, own) > own:
                    found.setdefault(q, set()).add(name)
    return {q: sorted(names, key=lambda n: priorities[n]) for q, names in found.items() if names}
