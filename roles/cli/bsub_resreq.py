"""bsub's -R, -m, -x and -n MIN[,MAX]: parsed and checked before anything is sent (a bad string
is refused with exit 2 and creates nothing); mbatchd checks them again."""

from lavalite import jobspec

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from roles.cli.quick import Args, Parser


def setup(p: "Parser") -> None:
    p.add_argument(
        "-R",
        dest="resreq",
        type=_resreq,
        metavar="RES_REQ",
        help='resource requirement, as LSF: "select[mem>4000 && gpu] rusage[mem=2000] '
        'span[ptile=8] order[-r15s]" (docs/bsub.md)',
    )
    p.add_argument(
        "-m",
        dest="asked_hosts",
        type=_hosts,
        metavar='"HOST[+LEVEL] ..."',
        help="run only on these hosts; +LEVEL: preferred, higher first",
    )
    p.add_argument(
        "-x", dest="exclusive", action="store_true", help="exclusive: alone on its hosts"
    )


def _bad_value(message: str) -> Exception:
    import argparse

    return argparse.ArgumentTypeError(message)


def _resreq(text: str) -> str:
    return _checked(text, "parse")


def _hosts(text: str) -> str:
    return _checked(text, "parse_hosts")


def _checked(text: str, parser: str) -> str:
    """`text` if lavalite.resreq's `parser` takes it; its message for argparse otherwise."""
    from lavalite import resreq  # only a bsub with -R or -m pays its import

    try:
        getattr(resreq, parser)(text)
    except resreq.ResReqError as exc:
        raise _bad_value(str(exc)) from None
    return text


def slots_range(text: str) -> tuple[int, int]:
    """-n N or -n MIN,MAX (LSF: the job starts with as many slots as are free in MIN..MAX)."""
    low, comma, high = text.partition(",")
    try:
        first = jobspec.integer("the job slots", int(low), 1, jobspec.MAX_SLOTS)
        last = jobspec.integer(
            "-n MIN,MAX: MAX", int(high) if comma else first, first, jobspec.MAX_SLOTS
        )
    except jobspec.SpecError as exc:
        raise _bad_value(str(exc)) from None
    except ValueError:
        raise _bad_value(f"{text!r} is not an integer (-n N or MIN,MAX)") from None
    return first, last


def fields(args: "Args") -> dict:
    """The spec's resreq, asked_hosts, exclusive, slots and slots_max."""
    low, high = args.slots
    return {
        "resreq": args.resreq,
        "asked_hosts": args.asked_hosts,
        "exclusive": args.exclusive or None,
        "slots": low,
        "slots_max": high if high != low else None,
    }


def submitted_details(j: dict) -> str:
    """bjobs -l's words, after CWD, for -m, -x and -R (as LSF prints them)."""
    words = ""
    if j.get("asked_hosts"):
        words += ", Specified Hosts " + ", ".join(f"<{h}>" for h in j["asked_hosts"])
    if j.get("exclusive"):
        words += ", Exclusive Execution"
    if j.get("resreq"):
        words += f", Requested Resources <{j['resreq']}>"
    return words


def _counted(j: dict) -> list[str]:
    """LSF's "N*host" for each host of a job (a host with one slot: "host")."""
    return [f"{n}*{h}" if n > 1 else h for h, n in j.get("exec_hosts") or ()]


def started_on(j: dict) -> str:
    return " ".join(f"<{h}>" for h in _counted(j))


def host_lines(row: list, j: dict, column: int) -> list[list]:
    """bjobs' row of a job, as LSF prints one with several slots: N*HOST in the EXEC_HOST
    column, and each further host on a line of its own below."""
    hosts = _counted(j)
    if not hosts:
        return [row]
    row[column] = hosts[0]
    blank = [""] * len(row)
    return [row] + [blank[:column] + [h] + blank[column + 1 :] for h in hosts[1:]]
