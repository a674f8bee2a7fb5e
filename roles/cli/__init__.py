"""User and admin commands: `lavalite submit|jobs|kill|queues|hosts|...` and the LSF names.

Each command is a fresh process, so this path stays light: the user commands' arguments
parsed without argparse where roles.cli.quick can, argparse otherwise (not click, whose
import alone costs several times Python's start-up here), the blocking client, no asyncio.
Exit codes: 0 success, 1 refused or not found, 2 usage or configuration, 3 cluster unreachable.
"""

import sys

from lavalite import config
from lavalite.client import Client, ClientError
from roles.cli.quick import Quick, Refused, ShowVersion

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import ArgumentParser
    from collections.abc import Callable
    from typing import TypeVar

    from roles.cli.quick import Args, Command, Parser

    P = TypeVar("P", ArgumentParser, Quick)

# LSF names -> subcommands; also what `lavalite links` creates.
ALIASES = {
    "bsub": "submit",
    "bjobs": "jobs",
    "bkill": "kill",
    "bresume": "resume",
    "btop": "top",
    "bbot": "bottom",
    "brequeue": "requeue",
    "bswitch": "switch",
    "bstop": "stop",
    "bmod": "modify",
    "bqueues": "queues",
    "bhosts": "hosts",
    "bpeek": "peek",
    "bwait": "wait",
    "blaunch": "launch",
    "bhist": "history",
    "bacct": "acct",
    "llctrl": "llctrl",
    "badmin": "badmin",
    "busers": "users",
    "lsload": "load",
    "lshosts": "hostinfo",
    "bquota": "quota",  # LavaLite's own: LSF has no quota command
    "blimits": "limits",
}


def _conf_arg(p: "Parser") -> None:
    p.add_argument(
        "--conf",
        help="lavalite.conf (default: $LAVALITE_CONF, "
        "/etc/lavalite/lavalite.conf, ~/.lavalite/lavalite.conf)",
    )


# Which module holds each command: a command imports its own module only (local's subprocess
# and tempfile are no business of bjobs). tests/test_cli_fast.py checks it against COMMANDS.
MODULES = {
    "commands": ("submit", "jobs", "kill", "resume", "wait"),
    "views": ("queues", "hosts", "users", "load", "hostinfo"),
    "badmin": ("badmin",),
    "local": ("up", "down", "links", "config-check", "demo"),
    "peek": ("peek",),
    "llctrl": ("llctrl",),
    "install": ("install",),
    "admin": ("admin",),
    "simulate": ("simulate",),
    "blaunch": ("launch",),
    "history": ("history", "acct"),
    "jobctl": ("top", "bottom", "requeue", "switch", "stop"),
    "quota": ("quota",),
    "bmod": ("modify",),
    "blimits": ("limits",),
}
# What users run all day, parsed by roles.cli.quick first.
QUICK = (
    "submit",
    "jobs",
    "kill",
    "resume",
    "top",
    "bottom",
    "requeue",
    "switch",
    "stop",
    "modify",
    "queues",
    "hosts",
    "wait",
    "peek",
    "launch",
    "history",
    "acct",
    "users",
    "load",
    "hostinfo",
    "limits",
)


def module_of(command: str | None) -> str | None:
    """The name of the module under roles.cli that holds `command`, or None."""
    return next((m for m, cmds in MODULES.items() if command in cmds), None)


def command_parts(command: str) -> "tuple[Callable[[Parser], None], Command, str]":
    """(setup, func, help) of a known command."""
    import importlib

    return importlib.import_module(f"roles.cli.{module_of(command)}").COMMANDS[command]


def add_command(parser: "P", setup: "Callable[[P], None]", func: "Command") -> "P":
    """A command's arguments on `parser` (argparse's, or a Quick)."""
    _conf_arg(parser)
    setup(parser)
    parser.set_defaults(func=func)
    return parser


def quick_parser(command: str) -> Quick:
    """A Quick holding the arguments of `command`, one of QUICK."""
    return add_command(Quick(), *command_parts(command)[:2])


def quick_args(command: str, argv: list[str]) -> "Args | None":
    """The user commands' arguments without argparse where roles.cli.quick can parse them."""
    if command not in QUICK:
        return None
    return quick_parser(command).parse(argv)


def _quick(command: str | None, argv: list[str], prog: str) -> "Args | None":
    """A QUICK command's arguments parsed without argparse where roles.cli.quick can, None
    otherwise; its words are checked first, whoever parses them (raises Refused)."""
    if command not in QUICK:
        return None
    quick = quick_parser(command)
    lsf_name = prog if prog != "lavalite" else None
    quick.check_words(argv, lsf_name or f"lavalite {command}", lsf_name)
    return quick.parse(argv)


def main(argv: list[str], prog: str = "lavalite") -> int:
    if prog != "lavalite":  # invoked as bsub, bjobs, ...
        argv = [ALIASES[prog]] + list(argv)
    command = argv[0] if argv else None
    if prog != "lavalite" and argv[1:2] == ["-V"]:  # badmin -V: its words are subcommands
        return _version()
    try:
        args: Args | None = _quick(command, argv[1:], prog)
    except ShowVersion:
        return _version()
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 2
    if args is None:
        from roles.cli.parser import build_parser

        ap = build_parser(command, prog)
        args = ap.parse_args(argv[1:] if module_of(command) else argv)
        if not getattr(args, "func", None):
            ap.print_help()
            return 2
    # the name and words it was called with: bsub reads them again after a script's #BSUB lines
    args.prog, args.typed = prog, argv[1:]
    try:
        code = args.func(args) or 0
        sys.stdout.flush()  # buffered output meets a closed pipe here, not at exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except config.ConfigError as exc:
        print(f"{prog}: bad configuration:\n{exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return 3 if exc.code == "unreachable" else 1
    except KeyboardInterrupt:
        return 130


def _version() -> int:
    """-V under an LSF name: the release on stderr, as LSF prints it."""
    from lavalite import __version__

    print(f"LavaLite {__version__}, compatible with IBM Spectrum LSF 10.1", file=sys.stderr)
    return 0


def _reader_gone() -> int:
    """stdout's reader went away (`bjobs | head -1`): end quietly with the status a shell
    shows for coreutils killed by SIGPIPE, 128 + 13. stdout goes to /dev/null first, so that
    Python's last flush at exit meets no closed pipe ("Exception ignored ...")."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def client(args: "Args") -> Client:
    return Client(conf_path=args.conf)
