"""bsub -w on the CLI side: a malformed dependency expression is refused here, with exit 2
and nothing sent (mbatchd parses it again, and resolves the jobs it names)."""

import sys


def check(text: str, prog: str = "bsub") -> bool:
    """True if `text` parses; else LSF's message on stderr."""
    from lavalite.depend import DependError, parse

    try:
        parse(text)
    except DependError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return False
    return True
