"""bquota / `lavalite quota`: usage against every [quota NAME] of queues.conf (docs/policy.md).

LSF has no such command (its closest, blimits, shows slot limits); the figures are
core-hours: used (ended attempts in the current period), running and pending (the
estimates of the jobs running and waiting), against the quota's core_hours.
"""

from roles.cli.commands import _short_time, table
from roles.cli.views import _cut, _pick

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from roles.cli.quick import Args, Parser

HEADER = ["QUOTA", "MEMBERS", "PERIOD", "ENDS", "USED", "RUN", "PEND", "LIMIT", "ADMIT", "PCT"]


def _setup(p: "Parser") -> None:
    p.add_argument(
        "-w", dest="wide", action="store_true", help="wide format: names and members in full"
    )
    p.add_argument(
        "-json", "--json", dest="json", action="store_true", help="JSON, as LSF's -json output"
    )
    p.add_argument("names", nargs="*", metavar="QUOTA", help="quotas to show (default: all)")


def quota(args: "Args") -> int:
    import json

    from roles.cli import client

    rows, code = _pick(client(args).call("quotas")["quotas"], args.names, "No such quota")
    for r in rows:
        r["percent"] = percent(r)
    if args.json:
        print(json.dumps({"COMMAND": "bquota", "QUOTAS": len(rows), "RECORDS": rows}, indent=2))
    elif rows:
        table([_row(r, args.wide) for r in rows], HEADER)
    elif not args.names:  # a name not found was said on stderr
        print("No quota is defined")
    return code


def percent(r: "dict[str, Any]") -> float:
    """Used + running + pending as a share of the limit, in percent."""
    return 100.0 * (r["used"] + r["running"] + r["pending"]) / r["core_hours"]


def members(r: "dict[str, Any]") -> str:
    """users, then group:NAME and project:NAME, comma-separated."""
    return ",".join(
        r["users"] + [f"group:{g}" for g in r["groups"]] + [f"project:{p}" for p in r["projects"]]
    )


def period(seconds: float) -> str:
    """30d, 24h -> 1d, 90m, 45s: the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"


def _row(r: "dict[str, Any]", wide: bool) -> list:
    return [
        _cut(r["name"], 12, wide),
        _cut(members(r), 24, wide),
        period(r["period"]),
        _short_time(r["period_end"]),
        f"{r['used']:.1f}",
        f"{r['running']:.1f}",
        f"{r['pending']:.1f}",
        f"{r['core_hours']:g}",
        f"{r['admit_below'] * 100:g}%",
        f"{r['percent']:.1f}%",
    ]


COMMANDS = {"quota": (_setup, quota, "show usage against every core-hour quota (bquota)")}
