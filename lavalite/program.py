"""How to start this same program again: LIM starts mbatchd, sbatchd its shepherds, and
`lavalite up` a whole cluster, each from the file it was itself run from."""

import os
import sys


def self_command() -> list[str]:
    """The argv that starts this same program again (the zipapp, the launcher or the script,
    whatever name it was called by)."""
    return [sys.executable, os.path.realpath(sys.argv[0])]
