"""blimits / `lavalite limits`: the usage of queues.conf's [limit NAME] sections (LSF's Limit,
docs/policy.md "Limits"), as LSF 10.1's blimits shows it: a row per limit and consumer in use,
each resource as USED/LIMIT (MEM in MB), `-` where the limit has none."""

from roles.cli.commands import table
from roles.cli.views import _cut

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from roles.cli.quick import Args, Parser

HEADER = ["NAME", "USERS", "QUEUES", "HOSTS", "PROJECTS", "SLOTS", "MEM", "JOBS"]
CONSUMERS = ("users", "queues", "hosts", "projects")
# the options that pick rows by a consumer: (option, dest, the row's field)
FILTERS = (
    ("-u", "user", "users"),
    ("-q", "queue", "queues"),
    ("-m", "host", "hosts"),
    ("-P", "project", "projects"),
)
MB = 1 << 20


def _setup(p: "Parser") -> None:
    p.add_argument(
        "-a", dest="all", action="store_true", help="every limit, also those no job uses now"
    )
    p.add_argument("-w", dest="wide", action="store_true", help="wide format: names in full")
    p.add_argument("-n", dest="name", help="only the limits of these names (space-separated)")
    for opt, dest, field in FILTERS:
        p.add_argument(opt, dest=dest, help=f"only the limits that apply to these {field}")


def limits(args: "Args") -> int:
    from roles.cli import client

    rows = [r for r in client(args).call("limit_usage")["limits"] if args.all or r["used"]]
    rows = [r for r in rows if _wanted(r, args)]
    if not rows:
        print("No resource usage found.")  # LSF's words: nothing to show is no error
        return 0
    print("INTERNAL RESOURCE LIMITS:\n")
    table([_row(r, args.wide) for r in rows], HEADER)
    return 0


def _wanted(row: "dict[str, Any]", args: "Args") -> bool:
    """Does the row survive -n, -u, -q, -m and -P: a consumer kind the limit does not name, or
    names as `all`, takes everyone (but a ~NAME it leaves out)."""
    if args.name and row["name"] not in args.name.split():
        return False
    for _, dest, field in FILTERS:
        wanted = getattr(args, dest)
        if wanted and not any(_names(row[field], name) for name in wanted.split()):
            return False
    return True


def _names(members: list[str], name: str) -> bool:
    if f"~{name}" in members:
        return False
    return not members or name in members or "all" in members


def _row(r: "dict[str, Any]", wide: bool) -> list[str]:
    cells = [_cut(r["name"], 12, wide)]
    cells += [_cut(" ".join(r[c]) or "-", 12, wide) for c in CONSUMERS]
    for resource, unit in (("slots", 1), ("mem", MB), ("jobs", 1)):
        used, cap = r[resource]
        cells.append("-" if cap is None else f"{used // unit}/{cap // unit}")
    return cells


COMMANDS = {"limits": (_setup, limits, "show the usage of every [limit] (blimits)")}
