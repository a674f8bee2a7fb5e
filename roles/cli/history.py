"""bhist and bacct (`lavalite history`, `lavalite acct`): a job's life and what it used, as
LSF 10.1 shows them, from mbatchd's store (the `history` op; docs/accounting.md)."""

import os
import pwd
import sys
import time
from typing import Any

from lavalite import accounting
from lavalite.model import DONE, FINISHED, KILLED, PEND, RUN, SUSPENDED, label
from roles.cli.commands import _bad_value, _client, _job_id, _long_time, _short_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from roles.cli.quick import Args, Parser

RULE = "-" * 78
MB = 1 << 20


def _users(text: str) -> list[str]:
    """-u: one user, several (LSF: "u1 u2" in quotes; a comma also separates), or all."""
    return [u for u in text.replace(",", " ").split() if u]


def _common(p: "Parser") -> None:
    p.add_argument("-l", dest="long", action="store_true", help="long format: each job's events")
    p.add_argument("-u", dest="users", type=_users, metavar="USER|all", help="jobs of USER")
    p.add_argument(
        "-C",
        dest="ended",
        metavar="TIME0,TIME1",
        help="jobs that ended in this interval ([[[year/]month/]day/]hour:minute, '.' = now)",
    )
    p.add_argument("jobs", nargs="*", type=_job_id, metavar="JOBID")


def _setup_history(p: "Parser") -> None:
    _common(p)
    p.add_argument("-a", dest="every", action="store_true", help="finished jobs too")
    p.add_argument("-d", dest="done", action="store_true", help="finished jobs only")
    p.add_argument(
        "-n",
        dest="logs",
        type=_count,
        metavar="N",
        help="accepted for LSF's scripts: the store holds the whole history (history_days)",
    )
    p.add_argument("-t", dest="chrono", action="store_true", help="every event, in time order")


def _setup_acct(p: "Parser") -> None:
    _common(p)
    p.add_argument("-q", dest="queue", metavar="QUEUE", help="jobs of QUEUE")
    p.add_argument("-P", dest="project", metavar="PROJECT", help="jobs of PROJECT (bsub -P)")


def _request(args: "Args", prog: str, **fields: Any) -> dict[str, Any] | None:
    """The reply to a `history` request with the filters both commands share, or None after
    saying which option is wrong."""
    if args.ended:
        try:
            fields["ended"] = list(accounting.parse_interval(args.ended, time.time()))
        except ValueError as exc:
            print(f"{prog}: -C: {exc}", file=sys.stderr)
            return None
    return _client(args).call("history", ids=args.jobs or None, users=args.users, **fields)


def _count(text: str) -> int:
    """bhist -n: a number >= 0."""
    if not text.isdigit():
        raise _bad_value(f"-n: '{text}' is not a number >= 0")
    return int(text)


def _name(text: str, width: int) -> str:
    """LSF's truncation of a long name: '*' and its end."""
    return text if len(text) <= width else "*" + text[-(width - 1) :]


# --- bhist


def history(args: "Args") -> int:
    prog = _prog(args, "history")
    reply = _request(args, prog, finished=_finished_wanted(args), events=True)
    if reply is None:
        return 2
    jobs = reply["jobs"]
    if not jobs:
        print("No matching job found", file=sys.stderr)
        return 1
    now = time.time()
    if args.chrono:
        _print_chrono(jobs)
    elif args.long:
        for job in jobs:
            _print_history_long(job, now)
    else:
        _print_history_summary(jobs, now)
    _more(reply, prog)
    return 0


def _finished_wanted(args: "Args") -> bool | None:
    """Which jobs bhist asks for: finished ones only (-d, -C), all (-a, or job ids given),
    else (LSF's default) the unfinished only."""
    if args.done or args.ended:
        return True
    return None if args.every or args.jobs else False


def _print_history_summary(jobs: list[dict[str, Any]], now: float) -> None:
    print("Summary of time in seconds spent in various states:")
    _print_summary_row(["JOBID", "USER", "JOB_NAME", *accounting.STATE_COLUMNS, "TOTAL"])
    for job in jobs:
        spent = accounting.time_in_states(job["events"], now)
        cells = [label(job["id"]), _name(job["user"], 7), _name(job["name"], 9)]
        _print_summary_row(
            cells + [str(round(spent[c])) for c in (*accounting.STATE_COLUMNS, "TOTAL")]
        )


def _print_summary_row(cells: list[str]) -> None:
    """LSF's columns: 8 wide, JOB_NAME 10."""
    print("".join(c.ljust(10 if i == 2 else 8) for i, c in enumerate(cells)).rstrip())


def _print_history_long(job: dict[str, Any], now: float) -> None:
    print(
        f"Job <{label(job['id'])}>, Job Name <{job['name']}>, User <{job['user']}>, "
        f"Project <{job['project'] or 'default'}>, Command <{' '.join(job['cmd'])}>"
    )
    for event in job["events"]:
        print(f"{_long_time(event[0])}: {_event_text(job, event)};")
    if job["max_mem"] is not None:
        print(f"\nMEMORY USAGE:\nMAX MEM: {_mbytes(job['max_mem'])} Mbytes")
    spent = accounting.time_in_states(job["events"], now)
    until = job["end_time"] or now
    print(f"\nSummary of time in seconds spent in various states by  {_long_time(until)}")
    columns = (*accounting.STATE_COLUMNS, "TOTAL")
    print("  " + "".join(c.ljust(9) for c in columns).rstrip())
    print("  " + "".join(str(round(spent[c])).ljust(9) for c in columns).rstrip())
    print(RULE)


def _print_chrono(jobs: list[dict[str, Any]]) -> None:
    """-t: every event of the jobs, the earliest first."""
    events = sorted((e[0], job["id"], e) for job in jobs for e in job["events"])
    by_id = {job["id"]: job for job in jobs}
    for t, job_id, event in events:
        print(f"{_long_time(t)}: Job <{label(job_id)}> {_event_text(by_id[job_id], event)}")


def _event_text(job: dict[str, Any], event: tuple) -> str:
    """One event as bhist -l words it. The CPU time and exit code are the job's last
    attempt's: the store keeps them once, for the job's end."""
    _, old, new, reason, host, _attempt = event
    if old is None:
        return (
            f"Submitted from host <{job['from_host']}>, to Queue <{job['queue']}>, "
            f"CWD <{job['cwd']}>"
        )
    if old == new:  # no change of state: bmod's "Parameters of Job are changed: ..."
        return reason
    if new in SUSPENDED:
        return f"Suspended: {reason}" if reason else "Suspended"
    if new == RUN and old in SUSPENDED:
        return "Running"
    if new == RUN:
        return f"Dispatched {job['slots']} Task(s) on Host(s) <{host}>"
    if new == PEND:
        return f"Pending: {reason}" if reason else "Pending"
    cpu = f"The CPU time used is {job['cpu_time'] or 0.0:.1f} seconds"
    if new == DONE:
        return f"Done successfully. {cpu}"
    if new == KILLED:
        return f"Exited; job has been killed. {cpu}"
    if new in FINISHED:
        return f"Exited with {_exit_words(job, reason)}. {cpu}"
    return f"{new}: {reason}" if reason else new


def _exit_words(job: dict[str, Any], reason: str) -> str:
    if job["exit_signal"] is not None:
        return f"signal termination: {job['exit_signal']}"
    if job["exit_code"] is not None:
        return f"exit code {job['exit_code']}"
    return reason or "no exit code"


# --- bacct


def acct(args: "Args") -> int:
    prog = _prog(args, "acct")
    reply = _request(
        args,
        prog,
        queue=args.queue,
        project=args.project,
        finished=True,
        summary=True,
        limit=None if args.long else 0,  # the summary alone
    )
    if reply is None:
        return 2
    summary = accounting.summary(reply["summary"])
    if args.jobs and not summary["jobs"]:
        print("No matching job found", file=sys.stderr)
        return 1
    _print_selection(args)
    if args.long:
        for job in reply["jobs"]:
            _print_acct_long(job)
        _more(reply, prog)
    _print_summary(summary)
    return 0


def _print_selection(args: "Args") -> None:
    users = (
        "all users"
        if args.users and "all" in args.users
        else "users " + ", ".join(args.users or [pwd.getpwuid(os.getuid()).pw_name])
    )
    print("Accounting information about jobs that are: ")
    print(f"  - submitted by {users},")
    print(f"  - accounted on {'project ' + args.project if args.project else 'all projects'}.")
    ended = f" between {args.ended}" if args.ended else ""
    print(f"  - completed normally or exited{ended}")
    print("  - executed on all hosts.")
    print(f"  - submitted to {'queue ' + args.queue if args.queue else 'all queues'}.")
    print("  - accounted on all service classes.")
    print(RULE)


def _print_acct_long(job: dict[str, Any]) -> None:
    status = accounting.lsf_status(job["state"])
    print(
        f"\nJob <{label(job['id'])}>, User <{job['user']}>, Project <{job['project'] or 'default'}>"
        f", Status <{status}>, Queue <{job['queue']}>, Command <{' '.join(job['cmd'])}>"
    )
    print(
        f"{_long_time(job['submit_time'])}: Submitted from host <{job['from_host']}>, "
        f"CWD <{job['cwd']}>;"
    )
    if job["start_time"] is not None:
        print(f"{_long_time(job['start_time'])}: Dispatched to <{job['host']}>;")
    why = "" if job["state"] == DONE else f"; {job['reason']}" if job["reason"] else ""
    print(f"{_long_time(job['end_time'])}: Completed <{status.lower()}>{why}.")
    cpu = job["cpu_time"] or 0.0
    wait = (job["start_time"] or job["end_time"]) - job["submit_time"]
    turnaround = job["end_time"] - job["submit_time"]
    run = job["end_time"] - job["start_time"] if job["start_time"] is not None else 0.0
    mem = f"{_mbytes(job['max_mem'])}M" if job["max_mem"] is not None else "-"
    print("\nAccounting information about this job:")
    print(
        f"{'CPU_T':>10} {'WAIT':>8} {'TURNAROUND':>14} {'STATUS':>8} {'HOG_FACTOR':>14}"
        f" {'MEM':>6} {'SWAP':>7} {'RUN_TIME':>10}"
    )
    print(
        f"{cpu:>10.2f} {round(wait):>8} {round(turnaround):>14} {status.lower():>8}"
        f" {cpu / max(turnaround, 1e-9):>14.4f} {mem:>6} {'-':>7} {round(run):>10}"
    )
    print(RULE)


def _print_summary(s: dict[str, Any]) -> None:
    print("\nSUMMARY:      ( time unit: second ) ")
    for line in _summary_lines(s):
        print(line)


# bacct's SUMMARY, line by line: (label, figure, digits) on the left, then on the right
# another such figure or the words after the left one
_SUMMARY_ROWS: list[tuple[tuple[str, str, int], tuple[str, str, int] | str | None]] = [
    (("Total number of done jobs", "done", 0), ("Total number of exited jobs", "exited", 0)),
    (("Total CPU time consumed", "cpu_total", 1), ("Average CPU time consumed", "cpu_avg", 1)),
    (("Maximum CPU time of a job", "cpu_max", 1), ("Minimum CPU time of a job", "cpu_min", 1)),
    (("Total wait time in queues", "wait_total", 1), None),
    (("Average wait time in queue", "wait_avg", 1), None),
    (("Maximum wait time in queue", "wait_max", 1), ("Minimum wait time in queue", "wait_min", 1)),
    (("Average turnaround time", "turnaround_avg", 0), " (seconds/job)"),
    (
        ("Maximum turnaround time", "turnaround_max", 0),
        ("Minimum turnaround time", "turnaround_min", 0),
    ),
    (("Average hog factor of a job", "hog_avg", 2), " ( cpu time / turnaround time )"),
    (("Maximum hog factor of a job", "hog_max", 2), ("Minimum hog factor of a job", "hog_min", 2)),
    (("Total throughput", "throughput", 2), " (jobs/hour)  during {hours:>7.2f} hours"),
]


def _summary_lines(s: dict[str, Any]) -> list[str]:
    """bacct's SUMMARY block: a figure, or two side by side, per line."""

    def cell(label: str, key: str, digits: int) -> str:
        return f"{label + ':':<27}{_fig(s[key], digits):>8}"

    lines = []
    for left, right in _SUMMARY_ROWS:
        line = " " + cell(*left)
        if isinstance(right, tuple):
            line += "      " + cell(*right)
        elif right:
            line += right.format(**s)
        lines.append(line)
    begin, end = _short_time(s["begin"]), _short_time(s["end"])
    lines.append(f" {'Beginning time:':<20}{begin:>15}      {'Ending time:':<20}{end:>15}")
    return lines


def _fig(value: float | None, digits: int = 1) -> str:
    """A figure as bacct prints it; '-' for one no job had (no CPU time measured, say)."""
    return "-" if value is None else f"{value:.{digits}f}"


# --- shared


def _mbytes(nbytes: int) -> int:
    return round(nbytes / MB)


def _prog(args: "Args", command: str) -> str:
    """The command's name as typed: bhist, or lavalite history."""
    return args.prog if args.prog != "lavalite" else f"lavalite {command}"


def _more(reply: dict[str, Any], prog: str) -> None:
    if reply.get("more"):
        print(
            f"{prog}: more jobs matched than one answer holds; narrow the request "
            "(job ids, -u, -C)",
            file=sys.stderr,
        )


COMMANDS = {
    "history": (_setup_history, history, "a job's history (LSF's bhist)"),
    "acct": (_setup_acct, acct, "accounting of finished jobs (LSF's bacct)"),
}
