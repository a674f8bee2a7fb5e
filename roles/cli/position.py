"""btop and bbot as LSF 10.1 documents them: a pending job (or array) moves before the first,
or after the last, of its user's pending jobs of the same priority in its queue; mbatchd
answers `Job <ID> has been moved to position 1 from top.` (roles/mbatchd/jobctl.py)."""

import sys

from roles.cli.bkill import job_id

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


COMMANDS = {
    "top": (setup, top, "move a pending job to the top of your jobs in its queue (btop)"),
    "bottom": (setup, bottom, "move a pending job to the bottom of them (bbot)"),
}
