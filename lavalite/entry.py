"""The entry point of the one file: `lavalite --role lim|mbatchd|sbatchd|cli ...`, the CLI
subcommands directly, or an LSF name (bsub, bjobs, ...) as argv[0], busybox style.
Roles are imported only once chosen, so a user command never loads a daemon's modules."""

import os
import sys

ROLES = ("lim", "mbatchd", "sbatchd", "cli")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    prog = os.path.basename(argv[0]) if argv else "lavalite"
    args = argv[1:]
    role = "cli"
    if args and args[0].startswith("--role"):
        if args[0] == "--role" and len(args) > 1:
            role, args = args[1], args[2:]
        elif args[0].startswith("--role="):
            role, args = args[0].split("=", 1)[1], args[1:]
        if role not in ROLES:
            print(
                f"lavalite: unknown role {role!r} (choose from {', '.join(ROLES)})", file=sys.stderr
            )
            return 2
    if role == "lim":
        from roles.lim import main as run
    elif role == "mbatchd":
        from roles.mbatchd import main as run
    elif role == "sbatchd":
        from roles.sbatchd import main as run
    else:
        from roles.cli import ALIASES
        from roles.cli import main as cli_main

        return cli_main(args, prog if prog in ALIASES else "lavalite")
    return run(args)
