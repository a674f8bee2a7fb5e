"""User and admin commands: `lavalite submit|jobs|kill|queues|hosts|...` and the LSF names.

Each command is a fresh process, so this path stays light: argparse (not click, whose import
alone costs several times Python's start-up here), the blocking client, no asyncio.
Exit codes: 0 success, 1 refused or not found, 2 usage or configuration, 3 cluster unreachable.
"""
import argparse
import os
import sys

from lavalite import config
from lavalite.client import Client, ClientError

# LSF names -> subcommands; also what `lavalite links` creates.
ALIASES = {"bsub": "submit", "bjobs": "jobs", "bkill": "kill", "bqueues": "queues",
           "bhosts": "hosts", "bpeek": "peek", "bwait": "wait", "llctrl": "llctrl"}


def _conf_arg(p):
    p.add_argument("--conf", help="lavalite.conf (default: $LAVALITE_CONF, "
                                  "/etc/lavalite/lavalite.conf, ~/.lavalite/lavalite.conf)")


# Which module holds each command: a command imports its own module only (local's subprocess
# and tempfile are no business of bjobs). tests/test_cli_fast.py checks it against COMMANDS.
MODULES = {"commands": ("submit", "jobs", "kill", "queues", "hosts", "wait"),
           "local": ("up", "down", "links", "config-check", "demo"),
           "peek": ("peek",), "llctrl": ("llctrl",), "install": ("install",),
           "admin": ("admin",), "simulate": ("simulate",)}


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter at the terminal's width, as shutil.get_terminal_size() gives it
    ($COLUMNS, then stdout's terminal, else 80), without importing shutil: that import (bz2,
    lzma, fnmatch) was a tenth of a command's start-up, and argparse makes a formatter for
    every add_argument."""

    def __init__(self, prog):
        super().__init__(prog, width=_columns() - 2)


def _columns():
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


def _module_of(command):
    return next((m for m, cmds in MODULES.items() if command in cmds), None)


def _command(parser, setup, func):
    _conf_arg(parser)
    setup(parser)
    parser.set_defaults(func=func)
    return parser


def build_parser(command=None):
    """The parser of `command` alone when it is known: the fast path, one parser to build (it
    parses the arguments after the command, and prints what `lavalite COMMAND` would). Else
    the parser of every command, as subcommands."""
    import importlib
    module = _module_of(command)
    if module:
        setup, func, helptext = importlib.import_module(f"roles.cli.{module}").COMMANDS[command]
        return _command(argparse.ArgumentParser(prog=f"lavalite {command}", description=helptext,
                                                formatter_class=_Formatter), setup, func)
    ap = argparse.ArgumentParser(prog="lavalite", description="LavaLite batch scheduler.",
                                 formatter_class=_Formatter)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for module in (importlib.import_module(f"roles.cli.{name}") for name in MODULES):
        for name, (setup, func, helptext) in module.COMMANDS.items():
            _command(sub.add_parser(name, help=helptext, description=helptext,
                                    formatter_class=_Formatter), setup, func)
    return ap


def main(argv, prog="lavalite"):
    if prog != "lavalite":                     # invoked as bsub, bjobs, ...
        argv = [ALIASES[prog]] + list(argv)
    command = argv[0] if argv else None
    ap = build_parser(command)
    args = ap.parse_args(argv[1:] if _module_of(command) else argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    try:
        return args.func(args) or 0
    except config.ConfigError as exc:
        print(f"lavalite: bad configuration:\n{exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"lavalite: {exc.message}", file=sys.stderr)
        return 3 if exc.code == "unreachable" else 1
    except KeyboardInterrupt:
        return 130


def client(args):
    return Client(conf_path=args.conf)
