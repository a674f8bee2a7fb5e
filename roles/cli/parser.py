"""The commands' argparse parsers: help, errors, and whatever roles.cli.quick leaves to them.
No parser takes an abbreviation of a long option (allow_abbrev=False): `--ret 2` is no --retries."""

import argparse
import os
import sys

from roles.cli import MODULES, add_command, command_parts, module_of


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter at the terminal's width, as shutil.get_terminal_size() gives it
    ($COLUMNS, then stdout's terminal, else 80), without importing shutil: that import (bz2,
    lzma, fnmatch) was a tenth of a command's start-up, and argparse makes a formatter for
    every add_argument."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


def _columns() -> int:
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    stdout = sys.__stdout__
    if stdout is None:  # started without a standard output
        return 80
    try:
        return os.get_terminal_size(stdout.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


def build_parser(command: str | None = None, prog: str = "lavalite") -> argparse.ArgumentParser:
    """The parser of `command` alone when it is known: the fast path, one parser to build (it
    parses the arguments after the command, and its usage and errors name the command as
    typed: `bsub`, or `lavalite submit`). Else the parser of every command, as subcommands."""
    import importlib

    if command is not None and module_of(command):
        setup, func, helptext = command_parts(command)
        return add_command(
            argparse.ArgumentParser(
                prog=f"lavalite {command}" if prog == "lavalite" else prog,
                description=helptext,
                allow_abbrev=False,
                formatter_class=_Formatter,
            ),
            setup,
            func,
        )
    ap = argparse.ArgumentParser(
        prog="lavalite",
        description="LavaLite batch scheduler.",
        allow_abbrev=False,
        formatter_class=_Formatter,
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for module in (importlib.import_module(f"roles.cli.{name}") for name in MODULES):
        for name, (setup, func, helptext) in module.COMMANDS.items():
            add_command(
                sub.add_parser(
                    name,
                    help=helptext,
                    description=helptext,
                    allow_abbrev=False,
                    formatter_class=_Formatter,
                ),
                setup,
                func,
            )
    return ap
