"""bjobs page by page: the command asks mbatchd for PAGE jobs at a time (the `jobs` op's
`limit`, `after` and `next`: roles/mbatchd/listing.py) and prints each page as it arrives, so
the first line of `bjobs -u all` comes at once however many jobs are known, and the command
holds one page, not the listing. mbatchd applies every filter (-u -q -p -r -s -d -a -J -P -G
-m), so a page holds only jobs to print. IDs named on the command line go by pages of PAGE
ids."""

import sys

from lavalite import config
from lavalite import protocol as P
from lavalite.model import label, split_id
from roles.cli import array_commands, bjobs_lsf

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from lavalite.client import Client
    from roles.cli.quick import Args

    View = dict[str, Any]

PAGE = 2000  # jobs per request; $LAVALITE_BJOBS_PAGE sets another (the tests take a few)


def page_size() -> int:
    return min(config.from_env("LAVALITE_BJOBS_PAGE", "int>=1", PAGE), P.MAX_JOBS_PAGE)


def order(job_id: int) -> tuple[int, int]:
    """mbatchd's listing order: a job, then an array's elements by index (an element's id
    packs the array id above the index)."""
    array_id, index = split_id(job_id)
    return (array_id, index) if array_id else (job_id, 0)


def views(client: "Client", args: "Args", missing: "list[int]") -> "Iterator[View]":
    """The jobs asked for, one view per job or element, in listing order, as the pages come.
    The IDs not found are said on stderr and added to `missing`."""
    size = page_size()
    ids = sorted((i for group in args.jobs for i in group), key=order)
    fields = {
        "users": [args.user] if args.user else None,
        "all": args.all or args.done,
        "queue": args.queue,
        "states": bjobs_lsf.states(args),
        "name": args.job_name,
        "project": args.project,
        "user_group": args.user_group,
        "host": args.host,
        "limit": size,
    }
    for first in range(0, len(ids), size) if ids else [0]:
        for reply in client.pages("jobs", jobs=ids[first : first + size], **fields):
            for job_id in reply["missing"]:
                print(f"Job <{label(job_id)}> is not found", file=sys.stderr)
            missing += reply["missing"]
            if args.json:
                yield from reply["jobs"]
            else:
                yield from array_commands.expand(reply["jobs"])
