"""Fairshare configuration as LSF writes it: a queue's `USER_SHARES[[alice, 2] [grp, 1]]` and
the user groups of queues.conf's `[usergroup NAME]` sections. Parsing and checking only; the
priority itself is scheduler.fairshare's. Imports stay cheap: config (every command) uses this.
"""

import re

# share-entry names with a meaning of their own (LSF): `default` gives every user named nowhere
# else that many shares of their own, `others` gives all of them that many shares together
DEFAULT, OTHERS = "default", "others"
_ENTRY = re.compile(r"\[\s*([^\[\],\s]+)\s*,\s*([^\[\],\s]+)\s*\]")
_WHOLE = re.compile(r"USER_SHARES\s*\[(.*)\]", re.S)


def parse_shares(text: str) -> list[tuple[str, int]]:
    """`USER_SHARES[[name, N] ...]` -> [(name, N)] in order; ValueError says what is wrong.
    A name is a user, a group (its members share N together), `group@` (each member gets N),
    `default` or `others`."""
    whole = _WHOLE.fullmatch(text.strip())
    if whole is None:
        raise ValueError(f"expected USER_SHARES[[name, shares] ...], got {text!r}")
    inner, out, seen = whole.group(1), [], set()
    rest = _ENTRY.sub("", inner).strip()
    if rest or not inner.strip():
        raise ValueError(f"expected [name, shares] entries, got {rest or inner!r}")
    for name, num in _ENTRY.findall(inner):
        if not num.isdigit() or int(num) < 1:
            raise ValueError(f"[{name}, {num}]: shares must be an integer >= 1")
        if name in seen:
            raise ValueError(f"{name} is given shares twice")
        seen.add(name)
        out.append((name, int(num)))
    return out


class GroupLoop(ValueError):
    def __init__(self, group: str, message: str) -> None:
        super().__init__(message)
        self.group = group


def expand_groups(groups: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    """{group: members, which may name groups} -> {group: its users, nested groups resolved};
    GroupLoop names a group that contains itself, directly or through others."""
    users: dict[str, frozenset[str]] = {}

    def resolve(name: str, path: tuple[str, ...]) -> frozenset[str]:
        if name in path:
            loop = " -> ".join(path[path.index(name) :] + (name,))
            raise GroupLoop(path[0], f"group {path[0]} contains itself ({loop})")
        if name not in users:
            found: set[str] = set()
            for member in groups[name]:
                found |= resolve(member, path + (name,)) if member in groups else {member}
            users[name] = frozenset(found)
        return users[name]

    for name in groups:
        resolve(name, ())
    return users


def unknown_groups(entries: list[tuple[str, int]], groups: dict[str, list[str]]) -> list[str]:
    """The `group@` entries whose group is not defined."""
    return [n for n, _ in entries if n.endswith("@") and n[:-1] not in groups]
