"""`lavalite peek [-f] JOBID` (LSF's bpeek): the output of a running job so far, from whichever
host runs it (mbatchd relays to that host's sbatchd). With -f it follows until the job ends;
each request waits on the worker until there is something new, so a line shows within about
a twentieth of a second of being written."""

import base64
import sys

from lavalite import protocol as P
from lavalite.client import ClientError

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from lavalite.client import Client
    from roles.cli.quick import Args, Parser

FOLLOW_WAIT = 5.0  # seconds a follow request may wait on the worker for new output


def _setup(p: "Parser") -> None:
    from roles.cli.commands import _job_id

    p.add_argument(
        "-f", dest="follow", action="store_true", help="keep showing new output until the job ends"
    )
    p.add_argument("job", type=_job_id, metavar="JOBID")


def stream(
    client: "Client", job: int, follow: bool, write: "Callable[[list[int], bytes], None]"
) -> None:
    """Call write(stream_fds, bytes) with the job's output as it comes; returns when all of it
    is shown (without follow: what exists now)."""
    offsets = None
    while True:
        try:
            r = client.call("peek", job=job, offsets=offsets, wait=FOLLOW_WAIT if follow else 0)
        except ClientError as exc:
            if offsets is not None and exc.code == P.NOT_RUNNING:
                return  # it ended between two requests; all was shown
            raise
        for fds, chunk in zip(r["streams"], r["data"]):
            if chunk:
                write(fds, base64.b64decode(chunk))
        offsets = r["offsets"]
        if not r["more"] and not (follow and r["running"]):
            return


def peek(args: "Args") -> int:
    from roles.cli import client

    out = sys.stdout.buffer
    header = args.prog != "lavalite"  # LSF's header line before the output; lavalite's: bare

    def write(fds: list[int], data: bytes) -> None:
        nonlocal header
        if header:
            out.write(b"<< output from stdout >>\n")
            header = False
        out.write(data)
        out.flush()

    with client(args) as c:
        stream(c, args.job, args.follow, write)
    return 0


COMMANDS = {"peek": (_setup, peek, "show the output of a running job (bpeek)")}
