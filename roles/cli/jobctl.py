"""btop, bbot, brequeue and bswitch as LSF 10.1 documents them (mbatchd's side:
roles/mbatchd/jobctl.py). btop/bbot: a pending job (or array) moves to a position among its
user's pending jobs of the same priority in its queue (the first or the last by default).
brequeue: jobs running or stopped (killed), pending, DONE or EXIT are pending (or held) again.
bswitch: unfinished jobs go to another queue. bstop: pending jobs are held (PSUSP), running
ones stopped (USUSP) until bresume. They select as bkill does (-J, -u, and -q, -m but for
brequeue)."""

import sys

from roles.cli import bjobs_lsf
from roles.cli.bkill import job_id, print_results, selected, setup_selection, usage

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from roles.cli.quick import Args, Parser


def setup(p: "Parser") -> None:
    p.add_argument("-u", dest="own", action="store_true", help="admins: among the owner's jobs")
    # one positional: the quick parser (roles.cli.quick) takes one
    p.add_argument("words", nargs="+", metavar="JOBID [POSITION]")


def top(args: "Args") -> int:
    return _move(args, "top")


def bottom(args: "Args") -> int:
    return _move(args, "bottom")


def _move(args: "Args", to: str) -> int:
    """btop/bbot JOBID [POSITION]. -u changes nothing: a user's pending jobs have an order of
    their own in a queue (users share it by turns), so an admin moves a job among its
    owner's jobs, as LSF's -u does."""
    import argparse

    from lavalite.client import ClientError
    from roles.cli import client

    command = "top" if to == "top" else "bottom"
    if len(args.words) > 2:
        return usage(args, command, "one job ID and at most one position are taken")
    try:
        job = job_id(args.words[0])
        position = _position(args.words[1]) if len(args.words) == 2 else 1
    except argparse.ArgumentTypeError as exc:
        return usage(args, command, str(exc))
    try:
        print(client(args).call("move", job=job, to=to, position=position)["message"])
    except ClientError as exc:
        if exc.code == "unreachable":
            raise
        print(exc.message, file=sys.stderr)  # LSF's "Job <ID>: ..." line, as bkill's
        return 1
    return 0


def _position(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise bjobs_lsf.usage_error(f"position {text!r} is not a positive number")
    return int(text)


def setup_requeue(p: "Parser") -> None:
    p.add_argument("-a", dest="any_state", action="store_true", help="jobs in any state below")
    p.add_argument("-d", dest="done", action="store_true", help="finished DONE jobs")
    p.add_argument("-e", dest="exited", action="store_true", help="finished EXIT jobs")
    p.add_argument("-p", dest="pending", action="store_true", help="pending jobs")
    p.add_argument("-r", dest="running", action="store_true", help="running jobs (the default)")
    p.add_argument("-H", dest="hold", action="store_true", help="requeued as PSUSP (held)")
    p.add_argument("-J", dest="job_name", help="jobs of this name (* matches any characters)")
    p.add_argument("-u", dest="user", help="jobs of this user (all: every user's; admins)")
    p.add_argument("jobs", nargs="*", type=job_id, metavar="JOBID")
    p.set_defaults(queue=None, host=None)  # bkill's selection reads them; brequeue has neither


def requeue(args: "Args") -> int:
    """brequeue: the jobs named, or those -J and -u select (the latest one; all with 0), or
    the caller's latest job, in the states the options ask."""
    from lavalite.requeue import states_test

    kinds = _requeue_kinds(args)
    picked = selected(args, "requeue", states_test(kinds), "No matching job found", False)
    if isinstance(picked, int):
        return picked
    cli, ids = picked
    reply = cli.call("requeue", jobs=ids, kinds=kinds, hold=args.hold)
    return print_results(reply["results"])


def _requeue_kinds(args: "Args") -> list[str]:
    """-a: every kind; else those asked, -r alone by default (LSF)."""
    asked = {"run": args.running, "pend": args.pending, "done": args.done, "exit": args.exited}
    kinds = [k for k, on in asked.items() if on or args.any_state]
    return kinds or ["run"]


def stop(args: "Args") -> int:
    """bstop: the jobs named, or the unfinished ones 0 and the filters select that are not
    stopped already."""
    from lavalite.model import PEND, RUN, SSUSP

    picked = selected(args, "stop", (PEND, RUN, SSUSP).__contains__)
    if isinstance(picked, int):
        return picked
    cli, ids = picked
    return print_results(cli.call("stop", jobs=ids)["results"])


def setup_switch(p: "Parser") -> None:
    p.add_argument("-J", dest="job_name", help="jobs of this name (* matches any characters)")
    p.add_argument("-u", dest="user", help="jobs of this user (all: every user's; admins)")
    p.add_argument("-q", dest="queue", help="jobs in this queue")
    p.add_argument("-m", dest="host", help="jobs running on this host")
    # one positional: the quick parser (roles.cli.quick) takes one, and checks LSF's options
    p.add_argument("words", nargs="+", metavar="QUEUE [0 | JOBID ...]")


def switch(args: "Args") -> int:
    """bswitch QUEUE JOBID..., or the jobs -J, -u, -q, -m select (the latest one; all with
    0), or the caller's latest unfinished job."""
    import argparse

    queue, words = args.words[0], args.words[1:]
    try:
        args.jobs = [job_id(w) for w in words]
    except argparse.ArgumentTypeError as exc:
        return usage(args, "switch", str(exc))
    picked = selected(args, "switch", required=False)
    if isinstance(picked, int):
        return picked
    cli, ids = picked
    return print_results(cli.call("switch", queue=queue, jobs=ids)["results"])


COMMANDS = {
    "top": (setup, top, "move a pending job to the top of your jobs in its queue (btop)"),
    "bottom": (setup, bottom, "move a pending job to the bottom of them (bbot)"),
    "requeue": (
        setup_requeue,
        requeue,
        "run jobs again: running, pending or ended (brequeue)",
    ),
    "switch": (setup_switch, switch, "move unfinished jobs to another queue (bswitch)"),
    "stop": (setup_selection, stop, "stop running jobs, hold pending ones (bstop)"),
}
