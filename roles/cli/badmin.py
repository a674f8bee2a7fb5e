"""badmin, as LSF 10.1's: hclose/hopen [-C comment] [HOST ... | all], qclose/qopen/qinact/qact
[-C comment] [QUEUE ... | all], reconfig, mbdrestart, showstatus. Cluster admins only
([cluster] admins): mbatchd refuses anyone else by name.

A closed host takes no new job (its running jobs go on) and stays closed across restarts of
mbatchd; a queue's state set here overrides queues.conf's open/active until an admin changes it
again (docs/admin.md).
"""

import sys
import time

from lavalite.hosts import local_host
from lavalite.model import FINISHED, PSUSP, SUSPENDED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace
    from typing import Any

HOST_ACTIONS = ("hclose", "hopen")
QUEUE_ACTIONS = ("qclose", "qopen", "qinact", "qact")


def setup(p: "ArgumentParser") -> None:
    sub = p.add_subparsers(dest="action", metavar="SUBCOMMAND", required=True)
    for action in HOST_ACTIONS + QUEUE_ACTIONS:
        kind = "HOST" if action in HOST_ACTIONS else "QUEUE"
        sp = sub.add_parser(action, help=f"{action} {kind}s (all: every one)")
        sp.add_argument("-C", dest="comment", help="a comment, shown by bhosts -l / bqueues -l")
        sp.add_argument(
            "names",
            nargs="*",
            metavar=kind,
            help="this host (hclose/hopen) or the default queue when none is given",
        )
    sub.add_parser("reconfig", help="check the configuration and reload it in mbatchd")
    sub.add_parser("mbdrestart", help="check the configuration and restart mbatchd")
    sub.add_parser("showstatus", help="mbatchd's view of hosts, jobs and users")


def badmin(args: "Namespace") -> int:
    from roles.cli import client

    cl = client(args)
    if args.action in HOST_ACTIONS + QUEUE_ACTIONS:
        names = args.names or [
            local_host() if args.action in HOST_ACTIONS else cl.conf.mbatchd.default_queue
        ]
        fields = {"names": names, **({"comment": args.comment} if args.comment else {})}
        results = cl.call("badmin", action=args.action, **fields)["results"]
        for r in results:
            print(r["message"], file=sys.stdout if r["ok"] else sys.stderr)
        return 0 if all(r["ok"] for r in results) else 1
    reply = cl.call("badmin", action=args.action)
    if args.action == "showstatus":
        print_status(reply)
        return 0
    print("\nChecking configuration files ...")
    if reply["error"]:
        print(f"There are fatal errors.\n\n{reply['error']}", file=sys.stderr)
        return 2
    print("No errors found.\n")
    print("Reconfiguration initiated" if args.action == "reconfig" else "MBD restart initiated")
    return 0


def print_status(s: "dict[str, Any]") -> None:
    """LSF's showstatus layout, with what mbatchd counts."""
    hosts, jobs = s["hosts"], s["jobs"]
    closed = sum(n for k, n in hosts.items() if k.startswith("closed"))
    finished = sum(n for k, n in jobs.items() if k in FINISHED)
    suspended = sum(n for k, n in jobs.items() if k in (PSUSP, *SUSPENDED))
    lines = [
        "LSF runtime mbatchd information",
        f"    Job slots (free/total):   {s['free']}/{s['slots']}",
        f"    Number of servers:    {sum(hosts.values())}",
        f"        Ok:                   {hosts.get('ok', 0)}",
        f"        Closed:               {closed}",
        f"        Unavailable:          {hosts.get('unavail', 0)}",
        f"    Number of jobs:       {sum(jobs.values())}",
        f"        Running:              {jobs.get('RUN', 0)}",
        f"        Suspended:            {suspended}",
        f"        Pending:              {jobs.get('PEND', 0)}",
        f"        Finished:             {finished}",
        f"    Number of users:      {s['users']}",
        f"    Number of active users:   {s['active_users']}",
        f"    Latest mbatchd start:     {time.ctime(s['started'])}",
        f"    Active mbatchd PID:       {s['pid']} on {s['host']}",
    ]
    if s["reconfigured"]:
        lines.append(f"    Latest mbatchd reconfig:  {time.ctime(s['reconfigured'])}")
    print("\n".join(lines))


COMMANDS = {
    "badmin": (setup, badmin, "LSF's badmin: close/open hosts and queues, reconfig, mbdrestart"),
}
