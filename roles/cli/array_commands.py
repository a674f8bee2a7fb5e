"""The CLI side of job arrays and bulk work: bjobs rows of array elements, bjobs -A, bsub
--each-line's file, and bwait (blocks on one connection until mbatchd answers)."""

import re
import sys

from lavalite.job_array import parse_ranges

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

    from roles.cli.quick import Args, Parser

_COND = r"^\s*(done|ended)\(\s*([^)]+?)\s*\)\s*$"  # re.match compiles it for bwait only


def read_lines(path: str) -> list[str]:
    """--each-line FILE: its lines without their newline; empty lines are skipped (a trailing
    newline or a blank line is not an element)."""
    try:
        f = sys.stdin if path == "-" else open(path, encoding="utf-8", errors="surrogateescape")
        with f:
            lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    except OSError as exc:
        sys.exit(f"bsub: cannot read --each-line file {path}: {exc.strerror}")
    if not lines:
        sys.exit(f"bsub: --each-line file {path} has no lines: nothing to submit")
    return lines


def expand(views: "Iterable[dict[str, Any]]") -> "Iterator[dict[str, Any]]":
    """mbatchd sends a run of an array's not-yet-started indices as one view with "indices";
    bjobs prints one row per element, as LSF does (made as they are printed)."""
    for v in views:
        if "indices" not in v:
            yield v
            continue
        for first, last, step in parse_ranges(v["indices"]):
            for i in range(first, last + 1, step):
                yield {**v, "id": v["array"] << 32 | i, "label": f"{v['array']}[{i}]"}


def public(view: dict) -> dict:
    """A job view as users see it (bjobs --json): an element is job `array` with its `index`,
    as in its label ID[INDEX]; the id on the wire packs both into one number, never shown."""
    return {**view, "id": view["array"]} if view.get("array") else view


def print_arrays(arrays: "list[dict[str, Any]]", args: "Args") -> int:
    """bjobs -A: one line per array, LSF's columns (EXIT counts killed elements too)."""
    if args.json:
        import json

        for a in arrays:
            print(json.dumps(a))
        return 0
    if not arrays:
        print("No job array found", file=sys.stderr)
        return 0
    from roles.cli.commands import table

    table(
        [
            [
                a["id"],
                f"{a['name']}[{a['indices']}]" + (f"%{a['throttle']}" if a["throttle"] else ""),
                a["user"],
                a["total"],
                a["pend"],
                a["done"],
                a["run"],
                a["exit"],
            ]
            for a in sorted(arrays, key=lambda a: a["id"])
        ],
        ["JOBID", "ARRAY_SPEC", "OWNER", "NJOBS", "PEND", "DONE", "RUN", "EXIT"],
    )
    return 0


# --- bwait


def setup_wait(p: "Parser") -> None:
    p.add_argument(
        "-w",
        dest="cond",
        required=True,
        metavar="'done(ID)'|'ended(ID)'",
        help="the condition: the job (or every element of the array) done, or ended",
    )
    p.add_argument(
        "-t",
        dest="minutes",
        type=_minutes,
        metavar="MINUTES",
        help="give up after MINUTES (default: wait as long as it takes)",
    )


def _minutes(text: str) -> float:
    from roles.cli.commands import seconds

    return seconds(text, "the time to wait", unit=60) / 60


def wait(args: "Args") -> int:
    from lavalite.client import Client, ClientError
    from lavalite.job_array import ArrayError, parse_label

    m = re.match(_COND, args.cond)
    try:
        job_id = parse_label(m.group(2)) if m else None
    except ArrayError:
        job_id = None
    if m is None or job_id is None:  # job_id is None whenever m is
        print(
            f"bwait: bad condition {args.cond!r} (use 'done(ID)' or 'ended(ID)')", file=sys.stderr
        )
        return 2
    # The request waits on this one connection until mbatchd replies: no polling.
    timeout = args.minutes * 60 if args.minutes else 10 * 365 * 86400.0
    try:
        Client(conf_path=args.conf, timeout=timeout).call("wait", cond=m.group(1), job=job_id)
    except ClientError as exc:
        if exc.code != "timeout":
            raise
        print(
            f"bwait: wait condition {args.cond} not satisfied within {args.minutes:g} minutes",
            file=sys.stderr,
        )
        return 1
    return 0
