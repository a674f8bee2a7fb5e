"""The commands that talk to mbatchd about jobs: submit (bsub), jobs (bjobs), kill (bkill),
wait (bwait); roles.cli.views shows queues, hosts and users. Output follows LSF's wording
and columns, which users' scripts read."""

import itertools
import os
import sys
import time

from lavalite import jobspec
from lavalite.hosts import local_host
from lavalite.job_array import ArrayError, parse_label
from lavalite.limits import format_size, parse_size
from lavalite.model import PSUSP, STARTED, USUSP
from roles.cli import (
    array_commands,
    bjobs_lsf,
    bjobs_pages,
    bkill,
    bsub_options,
    bsub_resreq,
    depend_commands,
    interact,
)
from roles.cli.quick import REMAINDER, Refused

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from lavalite import config
    from lavalite.client import Client
    from roles.cli.quick import Args, Parser


def _client(args: "Args") -> "Client":
    from roles.cli import client

    return client(args)


# --- bsub


def _setup_submit(p: "Parser") -> None:
    p.add_argument("-q", dest="queue", help="queue (default: the cluster's default queue)")
    p.add_argument(
        "-J",
        dest="name",
        help='job name; "NAME[1-100:2,200]%%LIMIT" submits a job '
        "array (LSB_JOBINDEX, %%I in -o/-e), at most LIMIT elements running",
    )
    p.add_argument(
        "-o",
        dest="out",
        help="stdout file, appended to (with LSF's job report under bsub); %%J is the job id, "
        "%%I the array index (stderr too unless -e)",
    )
    p.add_argument("-oo", dest="out_over", help="as -o, but the file is overwritten")
    p.add_argument("-e", dest="err", help="stderr file, appended to; %%J is the job id")
    p.add_argument("-eo", dest="err_over", help="as -e, but the file is overwritten")
    p.add_argument("-i", dest="stdin", help="the job's standard input (%%J, %%I substituted)")
    p.add_argument("-is", dest="stdin_spool", help="as -i, the file read now (spooled)")
    p.add_argument("-cwd", dest="job_cwd", help="the job's working directory (%%J %%I %%U)")
    p.add_argument("-outdir", help="output directory, created; relative -o/-e go there")
    p.add_argument("-L", dest="login_shell", help="run the job under this login shell (SHELL -l)")
    p.add_argument(
        "-env",
        dest="env_spec",
        metavar="ENV",
        help='the environment the job gets: "all" (default), "none", "all, ~VAR, VAR=value" '
        'or "VAR1, VAR2=value"',
    )
    p.add_argument(
        "-W",
        dest="walltime_w",
        type=_w_limit,
        metavar="[HOURS:]MINUTES",
        help="wall-clock limit, as LSF's -W",
    )
    p.add_argument(
        "--time", dest="walltime", type=seconds, metavar="SECS", help="wall-clock limit in seconds"
    )
    p.add_argument(
        "-n",
        dest="slots",
        type=bsub_resreq.slots_range,
        default=(1, 1),
        metavar="MIN[,MAX]",
        help="job slots (default 1); MIN,MAX: as many as are free, at least MIN",
    )
    bsub_resreq.setup(p)
    p.add_argument(
        "--retries", type=_retries, metavar="N", help="run again up to N times on failure"
    )
    p.add_argument(
        "-M",
        dest="memory",
        type=_size,
        metavar="MEM",
        help="memory limit: MB as LSF, or with a unit (512M, 2G); above it the "
        "job ends FAILED(oom)",
    )
    p.add_argument(
        "--pids", type=_pids, metavar="N", help="limit on the job's processes and threads"
    )
    p.add_argument(
        "--each-line",
        metavar="FILE",
        help="an array of one element per line of "
        "FILE (- for stdin); the element's line is in $LSB_JOBLINE",
    )
    p.add_argument(
        "-w",
        dest="depend",
        metavar="'DEPENDENCY'",
        help="start only once the condition holds: done(ID), ended(ID), exit(ID[,[OP] CODE]), "
        'started(ID), ID or "NAME" (done), ID[INDICES]; && || ! ( ) (LSF\'s -w)',
    )
    p.add_argument(
        "-H", dest="hold", action="store_true", help="hold the job (PSUSP) until bresume"
    )
    bsub_options.setup(p)
    interact.setup(p)
    p.add_argument("cmd", nargs=REMAINDER, metavar="[--] COMMAND [ARGS]")


def _bad_value(message: str) -> Exception:
    """What a type function raises for argparse to print `message` (roles.cli.quick leaves
    any bad value to argparse, so argparse is loaded only then)."""
    import argparse

    return argparse.ArgumentTypeError(message)


def _size(text: str) -> int:
    try:
        value = parse_size(text)
    except ValueError as exc:
        raise _bad_value(str(exc)) from None
    return _int_option(value, "the memory limit in bytes", 1, jobspec.MAX_MEMORY)


def _int_option(text: str | int, field: str, low: int, high: int) -> int:
    """An integer option within lavalite.jobspec's bound (the one mbatchd applies)."""
    try:
        return jobspec.integer(field, int(text), low, high)
    except jobspec.SpecError as exc:
        raise _bad_value(str(exc)) from None
    except ValueError:
        raise _bad_value(f"{text!r} is not an integer") from None


def _pids(text: str) -> int:
    return _int_option(text, "the process limit", 1, jobspec.MAX_PIDS)


def _retries(text: str) -> int:
    return _int_option(text, "the retries", 0, jobspec.MAX_RETRIES)


def seconds(text: str | int, field: str = "the wall-clock limit", unit: int = 1) -> float:
    """A time option given in `unit` seconds (1 or 60), as seconds within lavalite.jobspec's
    bound; refused in the option's own unit."""
    try:
        value = float(text) * unit
    except ValueError:
        raise _bad_value(f"{text!r} is not a number") from None
    if not 0 < value <= jobspec.MAX_SECONDS:  # NaN compares false: refused too
        raise _bad_value(
            f"{field} must be above 0 and at most a year "
            f"({jobspec.MAX_SECONDS // unit} {'minutes' if unit == 60 else 's'})"
        )
    return value


def _w_limit(text: str) -> float:
    """-W [HOURS:]MINUTES, in seconds."""
    hours, _, minutes = text.rpartition(":")
    try:
        value = int(hours or 0) * 60 + int(minutes)
    except ValueError:
        raise _bad_value(f"-W takes [HOURS:]MINUTES, not {text!r}") from None
    return seconds(value, unit=60)


def submit(args: "Args") -> int:
    from roles.cli import bsub_script  # submit's own: no other command loads it

    client: Client | None = None  # made early only if a job script asks the configuration

    def conf() -> "config.Config":
        nonlocal client
        client = client or _client(args)
        return client.conf

    try:
        args, cmd, extra = bsub_script.command(args, conf)
        extra.update(bsub_script.files(args))
        env = bsub_script.environment(args.env_spec, os.environ)
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 2
    spec = {
        "cmd": cmd,
        "queue": args.queue,
        "name": args.name,
        "walltime": args.walltime if args.walltime_w is None else args.walltime_w,
        "retries": args.retries,
        "memory": args.memory,
        "pids": args.pids,
        "cwd": os.getcwd(),
        "env": env,
        "from_host": local_host(),
        **extra,  # the script, -o/-oo/-e/-eo, -i/-is, -cwd, -outdir, -L, the umask
        **bsub_resreq.fields(args),  # -n, -R, -m, -x
        "depend": args.depend,
        "hold": args.hold or None,
    }
    if args.depend is not None and not depend_commands.check(args.depend):
        return 2
    if args.each_line:
        spec["lines"] = array_commands.read_lines(args.each_line)
    try:
        spec.update(bsub_options.fields(args, time.time()))
    except bsub_options.OptionError as exc:
        print(f"bsub: {exc}. Job not submitted.", file=sys.stderr)
        return 2
    client = client or _client(args)
    follow = interact.prepare(args, spec, client)
    reply = client.call(
        "submit", spec={k: v for k, v in spec.items() if v is not None}, req=os.urandom(16).hex()
    )
    where = "queue" if args.queue else "default queue"
    print(f"Job <{reply['job']}> is submitted to {where} <{reply['queue']}>.", flush=True)
    return follow.follow(reply["job"]) if follow else 0


# --- bjobs


def _setup_jobs(p: "Parser") -> None:
    p.add_argument("-a", dest="all", action="store_true", help="also jobs that finished recently")
    p.add_argument("-u", dest="user", help="jobs of USER, or all")
    p.add_argument("-q", dest="queue", help="only jobs of this queue")
    p.add_argument("-l", dest="long", action="store_true", help="long format")
    p.add_argument(
        "-A",
        dest="arrays",
        action="store_true",
        help="job arrays: one line per array with its element counts",
    )
    p.add_argument("--json", action="store_true", help="JSON, one object per job")
    bjobs_lsf.setup(p)
    p.add_argument("jobs", nargs="*", type=bjobs_lsf.job_ids, metavar="JOBID")


def _job_id(text: str) -> int:
    """ID or ID[INDEX] (an array element)."""
    try:
        return parse_label(text)
    except ArrayError as exc:
        raise _bad_value(str(exc)) from None


def _short_time(t: float | None) -> str:
    return time.strftime("%b %e %H:%M", time.localtime(t)) if t else "-"


def _long_time(t: float) -> str:
    return time.strftime("%a %b %e %H:%M:%S", time.localtime(t))


def table(
    rows: "Iterable[list[Any] | str]",
    header: list[str],
    show_header: bool = True,
    sample: int | None = None,
) -> None:
    """Columns as wide as their widest cell, LSF style (left aligned, two spaces apart). A row
    that is a string is a line of its own (bjobs -p's pending reasons), outside the columns.
    `sample`: the widths are those of the first `sample` rows, and the rest is printed as it
    comes (bjobs' pages); a wider cell after them widens its own line only."""
    rows = iter(rows)
    first = list(rows if sample is None else itertools.islice(rows, sample))
    cells = [header] + [r for r in first if not isinstance(r, str)]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    for r in itertools.chain([header] * show_header, first, rows):
        if isinstance(r, str):
            print(r)
        else:
            print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def jobs(args: "Args") -> int:
    import json

    users = [args.user] if args.user else None
    if args.arrays:
        return array_commands.print_arrays(
            _client(args).call("jobs", users=users, all=args.all, queue=args.queue, arrays=True)[
                "arrays"
            ],
            args,
        )
    client = _client(args)
    missing: list[int] = []
    found = bjobs_pages.views(client, args, missing)
    lsf = args.prog != "lavalite"
    shown = bjobs_lsf.annotate(found, lsf, client.conf.cluster.bjobs_element_ids)
    if args.json:
        for j in found:
            print(json.dumps(array_commands.public(j)))
    elif args.summary:
        bjobs_lsf.print_summary(found)
    elif args.lsf_json:
        bjobs_lsf.print_json(shown, (args.format or bjobs_lsf.default_columns())[0])
    else:
        first = next(shown, None)
        if first is None:
            if not missing:
                print(_nothing(args), file=sys.stderr)
            return 1 if missing else 0
        shown = itertools.chain([first], shown)
        if args.format:
            columns, delimiter = args.format
            bjobs_lsf.print_format(shown, columns, delimiter, header=not args.noheader)
        elif args.long:
            for j in shown:
                _print_long(j)
        else:
            _print_table(shown, args)
    return 1 if missing else 0


def _print_table(shown: "Iterable[dict[str, Any]]", args: "Args") -> None:
    """bjobs' default columns; with -p each pending job's reason on a line below it (LSF)."""
    rows = (
        row
        for j in shown
        for row in bsub_resreq.host_lines(
            [
                j["_jobid"],
                j["user"],
                j["_stat"],
                j["queue"],
                j["from_host"] or "-",
                j["exec_host"] or "-",
                j["_name"],
                _short_time(j["submit_time"]),
            ],
            j,
            5,
        )
        + _reason_line(args, j)
    )
    table(
        rows,
        bjobs_lsf.DEFAULT_FORMAT.upper().split(),
        not args.noheader,
        sample=bjobs_pages.page_size(),
    )


def _reason_line(args: "Args", j: "dict[str, Any]") -> list[str]:
    """-p: the pending reason under a job's row; -s: the suspending reason (a held job's is
    its pending reason, as LSF words it)."""
    if args.pending:
        reason = j["pend_reason"]
    elif args.suspended:
        reason = j.get("susp_reason") or j["pend_reason"]
    else:
        return []
    return [f" {reason};"] if reason else []


def _nothing(args: "Args") -> str:
    """LSF's words when no job is selected."""
    for flag, words in (
        ("pending", "No pending job found"),
        ("running", "No running job found"),
        ("suspended", "No suspended job found"),
        ("done", "No done job found"),
    ):
        if getattr(args, flag):
            return words
    return "No unfinished job found" if not args.all else "No job found"


def _print_long(j: "dict[str, Any]") -> None:
    if "indices" in j:  # an array index not started yet: nothing more to say
        print(
            f"Job <{j['label']}>, Job Name <{j['_name']}>, User <{j['user']}>, "
            f"Queue <{j['queue']}>, Status <{j['_stat']}>"
        )
        if j["state"] == "PEND":
            print(f" PENDING REASONS:\n {j['pend_reason']};")
        print()
        return
    cmd = " ".join(j["cmd"] or [])
    depend = f"Dependency Condition <{j['depend']}>, " if j.get("depend") else ""
    print(
        f"Job <{j['label']}>, Job Name <{j['_name']}>, User <{j['user']}>, Queue <{j['queue']}>, "
        f"Status <{j['_stat']}>, Attempt <{j['attempt']} of {j['max_attempts']}>, "
        f"{depend}{interact.long_mode(j)}Command <{cmd}>"
    )
    files = "".join(
        f", {label} <{j[k]}>"
        for label, k in (("Output File", "out"), ("Error File", "err"))
        if j[k]
    )
    print(
        f"{_long_time(j['submit_time'])}: Submitted from host <{j['from_host']}>, "
        f"CWD <{j['cwd']}>{files}{bsub_resreq.submitted_details(j)};"
    )
    for line in bsub_options.long_lines(j):
        print(line)
    if j["walltime"]:
        print(f"  RUNLIMIT: {j['walltime'] / 60:.1f} min ({j['walltime']:g} s)")
    if j.get("memory") or j.get("pids"):
        print(
            "  "
            + ", ".join(
                f"{label}: {value}"
                for label, value in (
                    ("MEMLIMIT", j.get("memory") and format_size(j["memory"])),
                    ("PIDSLIMIT", j.get("pids")),
                )
                if value
            )
        )
    if j["start_time"]:
        print(
            f"{_long_time(j['start_time'])}: Started {j['slots']} Task(s) on Host(s) "
            f"{bsub_resreq.started_on(j)};"
        )
    elif j["state"] == "RUN":
        print(f"  Dispatched to <{j['exec_host']}>, waiting for it to start;")
    if j["end_time"]:
        print(f"{_long_time(j['end_time'])}: {_ending(j)}")
    for line in bjobs_lsf.long_lines(j):
        print(line)
    if j["state"] == "PEND" and j["reason"] and j["attempt"]:  # not -H's, bresume's
        print(f"  Last attempt: {j['reason']}")
    if j.get("message"):  # the worker's words on the (last) attempt's end
        print(f"  {j['message']}")
    if j.get("reserved"):  # a pending job's slot reservation (docs/policy.md)
        print(_reserved_line(j, _long_time(j["reserved_since"])))
    if j.get("est_start"):
        print(f" Estimated job start time: {_long_time(j['est_start'])};")
    if j["pend_reason"]:
        print(" PENDING REASONS:")
        print(f" {j['pend_reason']};")
    elif j.get("susp_reason"):
        print(" SUSPENDING REASONS:")
        print(f" {j['susp_reason']};")
    if j["kill_requested"] and j["state"] in STARTED:
        print("  Kill requested; waiting for the job to end;")
    print()


def _reserved_line(j: "dict[str, Any]", since: str) -> str:
    """LSF's line for the slots a pending job holds: Reserved <N> job slots on host(s) <2*h>."""
    n = sum(slots for _, slots in j["reserved"])
    where = " ".join(f"{slots}*{host}" for host, slots in j["reserved"])
    return f"{since}: Reserved <{n}> job slots on host(s) <{where}>;"


def _ending(j: "dict[str, Any]") -> str:
    if j["state"] == "DONE":
        return "Done successfully."
    if j["state"] == "KILLED":
        return "Killed by user request."
    detail = {
        "timeout": "Exceeded its wall-clock limit (TERM_RUNLIMIT)",
        "oom": "Exceeded its memory limit (TERM_MEMLIMIT)",
        "node_lost": "Its host was lost",
        "exec_failed": f"Could not start (exit code {j['exit_code']})",
        **bsub_options.ENDINGS,
    }
    if j["exit_signal"] is not None and j["reason"] == "signal":
        return f"Exited by signal {j['exit_signal']}."
    if j["reason"] in detail:
        return detail[j["reason"]] + "."
    return f"Exited with exit code {j['exit_code']}."


# --- bkill


def resume(args: "Args") -> int:
    """bresume: the jobs named, or those in PSUSP or USUSP that 0 and the filters select."""
    picked = bkill.selected(args, "resume", (PSUSP, USUSP).__contains__, "No suspended job found")
    if isinstance(picked, int):
        return picked
    cli, ids = picked
    return bkill.print_results(cli.call("resume", jobs=ids)["results"])


def no_options(p: "Parser") -> None:
    pass


COMMANDS = {
    "submit": (_setup_submit, submit, "submit a job (bsub)"),
    "jobs": (_setup_jobs, jobs, "show jobs (bjobs)"),
    "kill": (bkill.setup, bkill.kill, "kill or signal jobs (bkill)"),
    "resume": (bkill.setup_selection, resume, "resume stopped or held jobs (bresume)"),
    "wait": (
        array_commands.setup_wait,
        array_commands.wait,
        "wait for a job or array to end (bwait)",
    ),
}
