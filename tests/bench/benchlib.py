"""What the bench scripts share: print a table, append it to docs/performance.md."""

import datetime
import os
import platform
import shlex
import sys


def report(table, title, head, markdown=None):
    """table: rows of strings, the first the header. Printed aligned; with `markdown`, appended
    to that file under `title` with the machine and `head`."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    print(head)
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    if not markdown:
        return
    with open(markdown, "a") as f:
        f.write(
            f"\n## {title}, {datetime.date.today()}\n\n"
            f"Machine: {len(os.sched_getaffinity(0))} CPUs shared with other work, "
            f"{platform.platform()}, Python {platform.python_version()}. {head}.\n\n"
        )
        for i, row in enumerate(table):
            f.write("| " + " | ".join(row) + " |\n")
            if i == 0:
                f.write("|" + "---|" * len(row) + "\n")


def drain_arguments(ap, timeout):
    """The options every drain-style benchmark takes: how many jobs, on how many slots, run by
    which program, for how long at most, and where to append the figures."""
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument(
        "--program",
        type=shlex.split,
        default=[sys.executable, "lavalite.py"],
        help='how to run LavaLite, from the checkout (default: "python lavalite.py")',
    )
    ap.add_argument("--timeout", type=float, default=timeout, help="drain timeout (s)")
    ap.add_argument("--markdown", metavar="FILE", help="also append the figures to FILE")
