"""bmod as LSF 10.1 documents it: `bmod [bsub options] [reset options] JOBID`, where JOBID
may be a job array (all its elements not finished), `"ID[INDEX]"` or `"ID[1-3,7]"`.

The options bsub takes are read by bsub's own parsers (roles.cli.commands, bsub_options,
bsub_resreq), so a value bsub refuses is refused here, exit 2, before anything is sent; each
reset option (`-Wn`, `-Mn`, `-wn`, ...) names the spec fields it sets back to their defaults.
mbatchd (roles/mbatchd/modify.py) checks the whole new spec as it checks a submitted one and
changes the job only if all of it holds.
"""

import sys
import time

from lavalite import jobscript
from lavalite.job_array import ArrayError, parse_ranges
from roles.cli import bsub_options, bsub_resreq, commands

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from roles.cli.quick import Args, Parser

# reset option -> (dest, the spec fields it sets back to their defaults, help)
RESETS = (
    ("-qn", "reset_queue", ("queue",), "back to the default queue"),
    ("-Jn", "reset_name", ("name",), "no job name (the command is its name)"),
    ("-Wn", "reset_walltime", ("walltime",), "the queue's default run limit"),
    ("-Mn", "reset_memory", ("memory",), "the queue's default memory limit"),
    ("-nn", "reset_slots", ("slots", "slots_max"), "one slot"),
    ("-Rn", "reset_resreq", ("resreq",), "no resource requirement"),
    ("-mn", "reset_hosts", ("asked_hosts",), "any host"),
    ("-xn", "reset_exclusive", ("exclusive",), "not exclusive"),
    ("-wn", "reset_depend", ("depend",), "no dependency condition"),
    ("-bn", "reset_begin", ("begin",), "no begin time"),
    ("-tn", "reset_term_time", ("term_time",), "no termination time"),
    ("-En", "reset_pre_exec", ("pre_exec",), "no pre-execution command"),
    ("-Epn", "reset_post_exec", ("post_exec",), "no post-execution command"),
    ("-Pn", "reset_project", ("project",), "no project"),
    ("-Gn", "reset_user_group", ("user_group",), "no user group"),
    ("-Jdn", "reset_description", ("description",), "no job description"),
    ("-spn", "reset_priority", ("priority",), "the default priority"),
    ("-cn", "reset_cpu_limit", ("cpu_limit",), "no CPU limit"),
    ("-un", "reset_mail_user", ("mail_user",), "no mail address"),
    ("-Bn", "reset_notify_begin", ("notify_begin",), "no notice at the start"),
    ("-Nn", "reset_notify_end", ("notify_end",), "no notice at the end"),
    ("-on", "reset_out", ("out", "out_append", "report"), "no output file"),
    ("-en", "reset_err", ("err", "err_append"), "no error file"),
    ("-cwdn", "reset_job_cwd", ("job_cwd",), "the submission directory"),
    ("-outdirn", "reset_outdir", ("outdir",), "no output directory"),
    ("-Ln", "reset_login_shell", ("login_shell",), "no login shell"),
)
# bsub's options bmod takes besides bsub_options' and bsub_resreq's: option, dest, spec field
_VALUES = (
    ("-q", "queue", "queue"),
    ("-J", "name", "name"),
    ("-W", "walltime", "walltime"),
    ("-M", "memory", "memory"),
    ("-w", "depend", "depend"),
    ("-cwd", "job_cwd", "job_cwd"),
    ("-outdir", "outdir", "outdir"),
    ("-L", "login_shell", "login_shell"),
)


def setup(p: "Parser") -> None:
    p.add_argument("-q", dest="queue", help="move the pending job to this queue")
    p.add_argument("-J", dest="name", help="job name")
    p.add_argument("-W", dest="walltime", type=commands._w_limit, metavar="[HOURS:]MINUTES")
    p.add_argument(
        "--time", dest="seconds", type=commands.seconds, metavar="SECS", help="run limit in seconds"
    )
    p.add_argument("-M", dest="memory", type=commands._size, metavar="MEM", help="memory limit")
    p.add_argument("-n", dest="slots", type=bsub_resreq.slots_range, metavar="MIN[,MAX]")
    p.add_argument("-w", dest="depend", metavar="'DEPENDENCY'", help="dependency condition")
    for option, dest in (("-o", "out"), ("-oo", "out_over"), ("-e", "err"), ("-eo", "err_over")):
        p.add_argument(option, dest=dest, help="as bsub " + option)
    p.add_argument("-Z", dest="command", metavar='"COMMAND [ARGS]"', help="a new command")
    p.add_argument("-cwd", dest="job_cwd", help="the job's working directory")
    p.add_argument("-outdir", help="output directory")
    p.add_argument("-L", dest="login_shell", help="login shell (absolute path)")
    bsub_resreq.setup(p)
    bsub_options.setup(p)
    for option, dest, _, text in RESETS:
        p.add_argument(option, dest=dest, action="store_true", help=text)
    p.add_argument("job", type=job_target, metavar='JOBID | "JOBID[INDEX_LIST]"')


def job_target(text: str) -> "tuple[int, str | None]":
    """ID, ID[INDEX] or an array's index list ID[1-3,7] -> (the id on the wire, the index
    list or None)."""
    head, bracket, rest = text.strip().partition("[")
    if not bracket or not any(c in rest for c in ",-:"):
        return commands._job_id(text), None
    try:
        if not rest.endswith("]"):
            raise ArrayError(f"{text!r} is not a job id (ID, ID[INDEX] or ID[1-3,7])")
        parse_ranges(rest[:-1])
    except ArrayError as exc:
        raise commands._bad_value(str(exc)) from None
    return commands._job_id(head), rest[:-1]


def modify(args: "Args") -> int:
    from lavalite.client import ClientError
    from roles.cli import client, depend_commands

    prog = args.prog if args.prog != "lavalite" else "lavalite modify"
    try:
        spec = changes(args, time.time())
    except bsub_options.OptionError as exc:
        print(f"{prog}: {exc}. Job not modified.", file=sys.stderr)
        return 2
    if args.depend is not None and not depend_commands.check(args.depend, prog):
        return 2
    resets = [f for _, dest, fields, _ in RESETS if getattr(args, dest) for f in fields]
    both = [f for f in resets if f in spec]
    if both:
        print(f"{prog}: {both[0]}: an option and its reset form together", file=sys.stderr)
        return 2
    if not spec and not resets:
        print(f"{prog}: no option to change given", file=sys.stderr)
        return 2
    try:
        job_id, indices = args.job
        fields = {} if indices is None else {"indices": indices}
        reply = client(args).call("modify", job=job_id, spec=spec, reset=resets, **fields)
    except ClientError as exc:
        if exc.code == "unreachable":
            raise
        print(exc.message, file=sys.stderr)  # LSF's "Job <ID>: ..." line, as bkill's
        return 1
    print(reply["message"])
    return 0


def changes(args: "Args", now: float) -> "dict[str, Any]":
    """The spec fields of the options given, as bsub makes them (OptionError names a bad
    one)."""
    spec: dict[str, Any] = {
        field: getattr(args, dest) for _, dest, field in _VALUES if getattr(args, dest) is not None
    }
    if args.command is not None:
        if not args.command.strip():
            raise bsub_options.OptionError("-Z: the command is empty")
        spec["cmd"] = jobscript.command_line([args.command])  # as bsub's words under LSF
    if args.seconds is not None:
        spec["walltime"] = args.seconds
    spec.update(bsub_options.fields(args, now))
    if args.slots is not None:
        low, high = args.slots
        spec["slots"] = low
        if high != low:
            spec["slots_max"] = high
    for field in ("resreq", "asked_hosts"):  # checked by bsub_resreq's parsers
        if getattr(args, field) is not None:
            spec[field] = getattr(args, field)
    if args.exclusive:
        spec["exclusive"] = True
    lsf = args.prog != "lavalite"
    for stream, over in (("out", args.out_over), ("err", args.err_over)):
        path = over or getattr(args, stream)
        if path is not None:
            spec[stream] = path
            spec[f"{stream}_append"] = not over
    if lsf and "out" in spec:
        spec["report"] = True  # LSF's job report goes with -o/-oo under the LSF name
    return spec


COMMANDS = {
    "modify": (setup, modify, "change a submitted job's options (bmod)"),
}
