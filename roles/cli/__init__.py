"""User and admin commands: `lavalite submit|jobs|kill|queues|hosts|...` and the LSF names.

Each command is a fresh process, so this path stays light: argparse (not click, whose import
alone costs several times Python's start-up here), the blocking client, no asyncio.
Exit codes: 0 success, 1 refused or not found, 2 usage or configuration, 3 cluster unreachable.
"""
import argparse
import sys

from lavalite import config
from lavalite.client import Client, ClientError

# LSF names -> subcommands; also what `lavalite links` creates.
ALIASES = {"bsub": "submit", "bjobs": "jobs", "bkill": "kill", "bqueues": "queues",
           "bhosts": "hosts", "bwait": "wait"}


def _conf_arg(p):
    p.add_argument("--conf", help="lavalite.conf (default: $LAVALITE_CONF, "
                                  "/etc/lavalite/lavalite.conf, ~/.lavalite/lavalite.conf)")


def build_parser():
    from roles.cli import commands, local, simulate
    ap = argparse.ArgumentParser(prog="lavalite", description="LavaLite batch scheduler.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for module in (commands, local, simulate):
        for name, (setup, func, helptext) in module.COMMANDS.items():
            p = sub.add_parser(name, help=helptext, description=helptext)
            _conf_arg(p)
            setup(p)
            p.set_defaults(func=func)
    return ap


def main(argv, prog="lavalite"):
    ap = build_parser()
    if prog != "lavalite":                     # invoked as bsub, bjobs, ...
        argv = [ALIASES[prog]] + list(argv)
    args = ap.parse_args(argv)
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
