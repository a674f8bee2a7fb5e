"""bkill as LSF 10.1 documents it: job IDs, or `0` for every unfinished job of the caller that
the filters -J (name, `*` matches anything), -u (user, or `all`), -q (queue) and -m (host)
select; filters without a job ID select the caller's most recently submitted matching job.
-s SIGNAL sends that signal instead of killing, -r removes the job without waiting for its
host (LSF's force), -b kills many jobs quickly and, with 0, skips silently the ones that
cannot be killed. mbatchd does the selection's kills (roles/mbatchd/jobctl.py); the selection
itself reads bjobs' view of the jobs, so no new query exists for it."""

import signal
import sys

from lavalite.job_array import ArrayError, parse_label
from lavalite.model import split_id
from roles.cli import array_commands, bjobs_lsf

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from lavalite.client import Client
    from roles.cli.quick import Args, Parser

ALL = 0  # the job ID that means every job the filters select


def setup(p: "Parser") -> None:
    p.add_argument("-s", dest="signal", type=signal_number, help="send this signal, not a kill")
    p.add_argument("-r", dest="force", action="store_true", help="remove without waiting")
    p.add_argument("-b", dest="batch", action="store_true", help="kill many jobs quickly")
    setup_selection(p)


def setup_selection(p: "Parser") -> None:
    """The job IDs and filters that select jobs, as bkill, bstop and bresume take them."""
    p.add_argument("-J", dest="job_name", help="jobs of this name (* matches any characters)")
    p.add_argument("-u", dest="user", help="jobs of this user (all: every user's; admins)")
    p.add_argument("-q", dest="queue", help="jobs in this queue")
    p.add_argument("-m", dest="host", help="jobs running on this host")
    p.add_argument("jobs", nargs="*", type=job_id, metavar="JOBID")


def job_id(text: str) -> int:
    """ID, ID[INDEX] or 0 (every job the filters select)."""
    if text.strip() == "0":
        return ALL
    try:
        return parse_label(text)
    except ArrayError as exc:
        raise bjobs_lsf.usage_error(str(exc)) from None


def signal_number(text: str) -> int:
    """-s KILL, SIGKILL, kill or 9: the signal's number."""
    if text.isdigit() and 0 < int(text) < signal.NSIG:
        return int(text)
    name = text.upper()
    sig = getattr(signal, name if name.startswith("SIG") else "SIG" + name, None)
    if not isinstance(sig, signal.Signals):
        raise bjobs_lsf.usage_error(f"{text!r} is not a signal name or number")
    return int(sig)


def kill(args: "Args") -> int:
    if args.force and args.signal is not None:
        return usage(args, "kill", "-r and -s cannot be used together")
    picked = selected(args, "kill")
    if isinstance(picked, int):
        return picked
    cli, ids = picked
    fields: dict[str, Any] = {"signal": args.signal} if args.signal is not None else {}
    if args.force:
        fields["force"] = True
    results = cli.call("kill", jobs=ids, **fields)["results"]
    # -b with 0 skips what cannot be killed; -b means nothing beside -r or -s (LSF)
    quiet = args.batch and ALL in args.jobs and not fields
    return print_results(results, quiet)


def usage(args: "Args", command: str, message: str) -> int:
    """A usage error of `command` run: its name as typed, the message, exit 2."""
    typed = f"lavalite {command}" if args.prog == "lavalite" else args.prog
    print(f"{typed}: {message}", file=sys.stderr)
    return 2


def print_results(results: "list[dict[str, Any]]", quiet_refusals: bool = False) -> int:
    """mbatchd's line per job; exit 1 if any was refused (and not skipped quietly)."""
    failed = False
    for r in results:
        if not r["ok"] and quiet_refusals:
            continue
        print(r["message"], file=sys.stdout if r["ok"] else sys.stderr)
        failed |= not r["ok"]
    return 1 if failed else 0


def selected(
    args: "Args",
    command: str,
    states: "Callable[[str], bool] | None" = None,
    nothing: str = "No unfinished job found",
    required: bool = True,
) -> "tuple[Client, list[int]] | int":
    """(the client, the job IDs `command` acts on): those named, or, with 0 or filters
    alone, the jobs `_select` finds (whose state passes `states`, if given); else its exit
    status, the message printed. `required`: a job ID, 0 or a filter must be given (bkill,
    bstop, bresume); else none selects the caller's latest job (brequeue, bswitch)."""
    from roles.cli import client

    filters = args.job_name or args.user or args.queue or args.host
    if required and not args.jobs and not filters:
        return usage(args, command, "a job ID, 0, or one of -J, -u, -q, -m is required")
    cli = client(args)
    ids = args.jobs
    if not ids or ALL in ids:  # LSF ignores the filters beside job IDs other than 0
        ids = _select(cli, args, ALL in ids, states)
        if not ids:
            print(nothing, file=sys.stderr)
            return 1
    return cli, ids


def _select(
    cli: "Client", args: "Args", every: bool, states: "Callable[[str], bool] | None"
) -> list[int]:
    """The jobs the filters select among the unfinished ones, or among those whose state
    passes `states` (finished ones too): all of them, or the latest submitted one. An array's
    indices not started yet are its array ID (one kill ends them all)."""
    from roles.cli.bjobs_pages import page_size

    pages = cli.pages(
        "jobs",
        users=[args.user] if args.user else None,
        queue=args.queue,
        all=states is not None,
        name=args.job_name,
        host=args.host,
        limit=page_size(),
    )
    chosen = [v for page in pages for v in page["jobs"] if states is None or states(v["state"])]
    if not every:
        latest = max((v["id"] for v in array_commands.expand(chosen)), default=None)
        return [] if latest is None else [latest]
    arrays = {v["array"] for v in chosen if "indices" in v}
    started = (v["id"] for v in chosen if "indices" not in v)
    return sorted(arrays) + [i for i in started if split_id(i)[0] not in arrays]
