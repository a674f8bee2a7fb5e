#!/usr/bin/env python3
"""Launcher: `python lavalite.py ARGS` is the zipapp's entry point, run from a checkout."""

import sys

from lavalite.entry import main

if __name__ == "__main__":
    sys.exit(main())
