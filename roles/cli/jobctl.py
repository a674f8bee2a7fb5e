"""btop, bbot, brequeue and bswitch as LSF 10.1 documents them (mbatchd's side:
roles/mbatchd/jobctl.py). btop/bbot: a pending job (or array) moves before the first, or after
the last, of its user's pending jobs of the same priority in its queue. brequeue: running jobs
are killed and pending again. bswitch: pending jobs go to another queue. bstop: pending jobs
are held (PSUSP), running ones stopped (USUSP) until bresume."""

import sys

from roles.cli.bkill import job_id, print_results, selected, setup_selection, usage

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from roles.cli.quick import Args, Parser


def setup(p: "Parser") -> None:
    p.add_argument("job", type=job_id, metavar="JOBID")


def top(args: "Args") -> int:
    return _move(args, "top")


def bottom(args: "Args") -> int:
    return _move(args, "bottom")


def _move(args: "Args", to: str) -> int:
    from lavalite.client import ClientError
    from roles.cli import client

    try:
        print(client(args).call("move", job=args.job, to=to)["message"])
    except ClientError as exc:
        if exc.code == "unreachable":
            raise
        print(exc.message, file=sys.stderr)  # LSF's "Job <ID>: ..." line, as bkill's
        return 1
    return 0


def setup_requeue(p: "Parser") -> None:
    p.add_argument("-r", dest="running", action="store_true", help="running jobs (the default)")
    p.add_argument("jobs", nargs="+", type=job_id, metavar="JOBID")


def requeue(args: "Args") -> int:
    from roles.cli import client

    return print_results(client(args).call("requeue", jobs=args.jobs)["results"])


def stop(args: "Args") -> int:
    """bstop: the jobs named, or the unfinished ones 0 and the filters select that are not
    stopped already."""
    from lavalite.model import PEND, RUN, SSUSP

    picked = selected(args, "stop", (PEND, RUN, SSUSP))
    if isinstance(picked, int):
        return picked
    cli, ids = picked
    return print_results(cli.call("stop", jobs=ids)["results"])


def setup_switch(p: "Parser") -> None:
    # one positional: the quick parser (roles.cli.quick) takes one, and checks LSF's options
    p.add_argument("words", nargs="+", metavar="QUEUE JOBID")


def switch(args: "Args") -> int:
    import argparse

    from roles.cli import client

    queue, words = args.words[0], args.words[1:]
    if not words:
        return usage(args, "switch", "a destination queue and job IDs are required")
    try:
        ids = [job_id(w) for w in words]
    except argparse.ArgumentTypeError as exc:
        return usage(args, "switch", str(exc))
    return print_results(client(args).call("switch", queue=queue, jobs=ids)["results"])


COMMANDS = {
    "top": (setup, top, "move a pending job to the top of your jobs in its queue (btop)"),
    "bottom": (setup, bottom, "move a pending job to the bottom of them (bbot)"),
    "requeue": (setup_requeue, requeue, "kill running jobs and queue them again (brequeue)"),
    "switch": (setup_switch, switch, "move pending jobs to another queue (bswitch)"),
    "stop": (setup_selection, stop, "stop running jobs, hold pending ones (bstop)"),
}
