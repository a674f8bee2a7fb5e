"""What the bench scripts share: print a table, append it to docs/performance.md."""

import datetime
import os
import platform


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
