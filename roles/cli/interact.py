"""bsub's -K, -I, -Ip and -Is options: declared here, light, for every bsub; what they do
is in roles/cli/follow.py, loaded only when one of them is given."""

import sys

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from lavalite.client import Client
    from roles.cli.follow import Follow
    from roles.cli.quick import Args, Parser

MODES = {"I": "-I", "Ip": "-Ip", "Is": "-Is", "K": "-K"}  # dest -> option


def setup(p: "Parser") -> None:
    p.add_argument(
        "-K", dest="K", action="store_true", help="wait for the job to end; exit with its exit code"
    )
    p.add_argument(
        "-I",
        dest="I",
        action="store_true",
        help="interactive: the job's stdin, stdout and stderr on this terminal",
    )
    p.add_argument("-Ip", dest="Ip", action="store_true", help="interactive, on a pseudo-terminal")
    p.add_argument(
        "-Is",
        dest="Is",
        action="store_true",
        help="interactive, on a pseudo-terminal in shell mode (Ctrl-C and Ctrl-Z are keys "
        "for the job)",
    )


# bjobs -l's words for an interactive job (LSF's)
_LONG_MODES = {
    "-I": "Interactive mode",
    "-Ip": "Interactive pseudo-terminal mode",
    "-Is": "Interactive pseudo-terminal shell mode",
}


def long_mode(view: "dict[str, Any]") -> str:
    """What bjobs -l says of an interactive job before its command, as LSF; "" otherwise."""
    option = view.get("interactive")
    return f"{_LONG_MODES[option]}, " if option in _LONG_MODES else ""


def usage(message: str) -> "Any":
    print(f"bsub: {message}", file=sys.stderr)
    raise SystemExit(2)


def prepare(args: "Args", spec: "dict[str, Any]", client: "Client") -> "Follow | None":
    """For -K or -I*: what follows the job once submitted (an -I* listener already open and
    named in `spec`); None without them. Conflicting options end bsub with exit 2."""
    chosen = [option for dest, option in MODES.items() if getattr(args, dest)]
    if not chosen:
        return None
    if len(chosen) > 1:
        usage(f"{chosen[0]} and {chosen[1]} cannot be used together")
    from roles.cli.follow import Follow, Interactive

    if chosen == ["-K"]:
        return Follow(args, client)
    if "[" in (args.name or "") or args.each_line:
        usage(f"{chosen[0]}: an interactive job cannot be a job array")
    return Interactive(args, client, spec, pty=chosen != ["-I"], shell=chosen == ["-Is"])
