"""bjobs as LSF 10.1 shows jobs: its options (-p -r -d -s -J -P -G -m, which mbatchd applies:
roles/mbatchd/listing.py), STAT EXIT, array elements as JOBID 12 / JOB_NAME arr[1], `-o
"field[:[-]width] ... delimiter='c'"`, -json, -noheader and -sum. What mbatchd sends is
lavalite.model.job_view; everything here is a reading of it, done by the command."""

import re
import time

from lavalite.job_array import ArrayError, parse_label, parse_ranges
from lavalite.model import FAILED, KILLED, RUN, element_id, split_id

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

    from roles.cli.quick import Args, Parser

    View = dict[str, Any]

SUSPENDED = frozenset(("PSUSP", "USUSP", "SSUSP"))
_ENDED = ("DONE", FAILED, KILLED)
_BY_FLAG: "dict[str, Iterable[str]]" = {
    "pending": ("PEND", "PSUSP"),
    "running": (RUN,),
    "suspended": SUSPENDED,
}
DEFAULT_FORMAT = "jobid user stat queue from_host exec_host job_name submit_time"
_DELIMITER = re.compile(r"""\bdelimiter=(['"])(.)\1""")
_FIELD = re.compile(r"^([a-z_]+)(?::(-?)(\d*))?(?::([KMGT])B?)?$", re.IGNORECASE)
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class FormatError(ValueError):
    """A bad -o string; the message names the word (exit 2)."""


def setup(p: "Parser") -> None:
    """bjobs' LSF options (the native ones are in roles.cli.commands)."""
    for flag, dest, text in (
        ("-p", "pending", "pending jobs only, with their pending reasons"),
        ("-r", "running", "running jobs only"),
        ("-d", "done", "finished jobs only (those finished recently)"),
        ("-s", "suspended", "suspended jobs only"),
        ("-w", "wide", "wide format: fields are never truncated"),
        ("-noheader", "noheader", "no header line"),
        ("-sum", "summary", "summary of unfinished jobs' slots by state"),
        ("-json", "lsf_json", 'LSF\'s JSON: {"COMMAND":"bjobs","JOBS":N,"RECORDS":[...]}'),
    ):
        p.add_argument(flag, dest=dest, action="store_true", help=text)
    p.add_argument("-J", dest="job_name", help="jobs of this name (* matches any characters)")
    p.add_argument("-P", dest="project", help="jobs of this project (bsub -P)")
    p.add_argument("-G", dest="user_group", help="jobs of this user group (bsub -G)")
    p.add_argument("-m", dest="host", help="jobs running or run on this host")
    p.add_argument(
        "-o",
        dest="format",
        type=_format,
        metavar="FORMAT",
        help="\"field[:[-]width][:unit] ... [delimiter='c']\": LSF's field names",
    )


def job_ids(text: str) -> list[int]:
    """ID, ID[INDEX] or ID[RANGES] (LSF's "12[1-3,7]") -> the ids on the wire."""
    head, bracket, ranges = text.strip().partition("[")
    try:
        if not bracket or not any(c in ranges for c in ",-:"):
            return [parse_label(text)]
        array_id = parse_label(head)
        if not ranges.endswith("]"):
            raise ArrayError(f"{text!r} is not a job id (ID, ID[INDEX] or ID[1-3,7])")
        return [
            element_id(array_id, i)
            for first, last, step in parse_ranges(ranges[:-1])
            for i in range(first, last + 1, step)
        ]
    except ArrayError as exc:
        raise usage_error(str(exc)) from None


def usage_error(message: str) -> Exception:
    """What a type function raises for argparse to print `message` as a usage error (the quick
    parser leaves a bad value to argparse, so argparse is imported only then)."""
    import argparse

    return argparse.ArgumentTypeError(message)


# --- the -o string


class Column:
    __slots__ = ("field", "width", "right", "unit")

    def __init__(self, field: str, width: int | None, right: bool, unit: int) -> None:
        self.field, self.width, self.right, self.unit = field, width, right, unit


def parse_format(text: str) -> "tuple[list[Column], str]":
    """-o's string -> (its columns, the delimiter); FormatError names what is wrong."""
    delimiter = " "
    m = _DELIMITER.search(text)
    if m:
        delimiter, text = m.group(2), text[: m.start()] + text[m.end() :]
    elif "delimiter=" in text:
        raise FormatError("-o: delimiter= takes one character in quotes: delimiter=','")
    words = text.split()
    if not words:
        raise FormatError("-o: no field given")
    return [_column(f"{field}{spec}") for w in words for field, spec in _expand(w)], delimiter


def _expand(word: str) -> list[tuple[str, str]]:
    """(field, its ':width:unit') of a word; `all` is every field, its width applying to each."""
    name, colon, spec = word.partition(":")
    fields = list(FIELDS) if name.lower() == "all" else [name]
    return [(field, colon + spec) for field in fields]


def _column(word: str) -> Column:
    m = _FIELD.match(word)
    name = m and FIELDS.get(ALIASES.get(m.group(1).lower(), m.group(1).lower()))
    if m is None or name is None:
        raise FormatError(
            f"-o: {word.split(':')[0]!r} is not a bjobs field (one of: {', '.join(FIELDS)})"
        )
    field = ALIASES.get(m.group(1).lower(), m.group(1).lower())
    width = int(m.group(3)) if m.group(3) else (_RECOMMENDED if ":" in word else None)
    if width == 0:
        raise FormatError(f"-o: {word!r}: a width is at least 1")
    if m.group(4) and field not in _MEMORY:
        raise FormatError(f"-o: {word!r}: a unit applies to {', '.join(_MEMORY)} only")
    return Column(field, width, m.group(2) == "-", _UNITS[m.group(4).upper()] if m.group(4) else 0)


def _format(text: str) -> "tuple[list[Column], str]":
    """-o's type: argparse prints a FormatError as a usage error."""
    try:
        return parse_format(text)
    except FormatError as exc:
        raise usage_error(str(exc)) from None


# --- the fields


def stat(j: "View", lsf: bool) -> str:
    """STAT: under the LSF names EXIT for a job that failed or was killed (the reason is in
    -l); `lavalite jobs` shows FAILED(reason) and KILLED."""
    return "EXIT" if lsf and j["state"] in (FAILED, KILLED) else j["stat"]


def lsf_ids(j: "View", element_ids: bool) -> tuple[str, str]:
    """(JOBID, JOB_NAME): an element is JOBID 12 and JOB_NAME arr[1] as LSF, or 12[1] and arr
    with the site's bjobs_element_ids."""
    if j.get("array") and not element_ids:
        return str(j["array"]), f"{j['name']}[{split_id(j['id'])[1]}]"
    return j["label"], j["name"]


def _time(t: float | None) -> str:
    return time.strftime("%b %e %H:%M", time.localtime(t)) if t else "-"


def _exec_host(j: "View") -> str:
    return ":".join(f"{n}*{h}" if n > 1 else h for h, n in j.get("exec_hosts") or ()) or "-"


def _mem(j: "View", key: str, unit: int) -> str:
    value = j.get(key)
    if value is None:
        return "-"
    if not unit:  # LSF's default unit
        return f"{value / _UNITS['M']:.0f} Mbytes"
    return f"{value / unit:.0f} {next(k for k, v in _UNITS.items() if v == unit)}B"


def _cpu(j: "View") -> str:
    value = j.get("cpu_time")
    return "-" if value is None else f"{value:.1f} second(s)"


def _run_time(j: "View") -> str:
    if not j["start_time"]:
        return "-"
    return f"{int((j['end_time'] or time.time()) - j['start_time'])} second(s)"


def _dash(value: "Any") -> str:
    return "-" if value is None or value == "" else str(value)


# field -> (header, value of a view); the view's "_jobid"/"_name"/"_stat" are set by rows()
FIELDS: "dict[str, tuple[str, Callable[[View], str]]]" = {
    "jobid": ("JOBID", lambda j: j["_jobid"]),
    "jobindex": ("JOBINDEX", lambda j: str(split_id(j["id"])[1] if j["array"] else 0)),
    "stat": ("STAT", lambda j: j["_stat"]),
    "user": ("USER", lambda j: j["user"]),
    "user_group": ("UGROUP", lambda j: _dash(j.get("user_group"))),
    "queue": ("QUEUE", lambda j: j["queue"]),
    "job_name": ("JOB_NAME", lambda j: j["_name"]),
    "job_description": ("JOB_DESCRIPTION", lambda j: _dash(j.get("description"))),
    "proj_name": ("PROJ_NAME", lambda j: _dash(j.get("project") or "default")),
    "from_host": ("FROM_HOST", lambda j: _dash(j["from_host"])),
    "exec_host": ("EXEC_HOST", _exec_host),
    "nexec_host": ("NEXEC_HOST", lambda j: str(len(j.get("exec_hosts") or ()))),
    "slots": ("SLOTS", lambda j: str(j["slots"])),
    "nalloc_slot": (
        "NALLOC_SLOT",
        lambda j: str(sum(n for _, n in j.get("exec_hosts") or ())),
    ),
    "submit_time": ("SUBMIT_TIME", lambda j: _time(j["submit_time"])),
    "start_time": ("START_TIME", lambda j: _time(j["start_time"])),
    "finish_time": ("FINISH_TIME", lambda j: _time(j["end_time"])),
    "run_time": ("RUN_TIME", _run_time),
    "exit_code": ("EXIT_CODE", lambda j: _dash(j["exit_code"])),
    "exit_reason": (
        "EXIT_REASON",
        lambda j: _dash(j["reason"] if j["state"] in (FAILED, KILLED) else None),
    ),
    "pend_reason": ("PEND_REASON", lambda j: _dash(j["pend_reason"])),
    "cpu_used": ("CPU_USED", _cpu),
    "mem": ("MEM", lambda j: _mem(j, "mem", 0)),
    "max_mem": ("MAX_MEM", lambda j: _mem(j, "max_mem", 0)),
    "swap": ("SWAP", lambda j: _mem(j, "swap", 0)),
    "memlimit": ("MEMLIMIT", lambda j: _mem(j, "memory", 0)),
    "runtimelimit": (
        "RUNTIMELIMIT",
        lambda j: _dash(j["walltime"] and f"{j['walltime'] / 60:.1f}"),
    ),
    "command": ("COMMAND", lambda j: " ".join(j["cmd"] or []) or "-"),
    "sub_cwd": ("SUB_CWD", lambda j: _dash(j["cwd"])),
    "output_file": ("OUTPUT_FILE", lambda j: _dash(j["out"])),
    "error_file": ("ERROR_FILE", lambda j: _dash(j["err"])),
    "dependency": ("DEPENDENCY", lambda j: _dash(j.get("depend"))),
    "priority": ("PRIORITY", lambda j: _dash(j.get("priority"))),
}
# memory fields: the view's key (bytes); -o's unit prefix applies to them
_MEMORY = {"mem": "mem", "max_mem": "max_mem", "swap": "swap", "memlimit": "memory"}
ALIASES = {
    "id": "jobid",
    "ugroup": "user_group",
    "name": "job_name",
    "description": "job_description",
    "proj": "proj_name",
    "project": "proj_name",
    "cmd": "command",
    "cpu": "cpu_used",
    "nreq_slot": "slots",
    "nalloc_slots": "nalloc_slot",
    "runlimit": "runtimelimit",
}
_RECOMMENDED = 15  # a width given as "field:" without a number


def _value(j: "View", c: Column) -> str:
    if c.unit:
        return _mem(j, _MEMORY[c.field], c.unit)
    return FIELDS[c.field][1](j)


def _cell(text: str, c: Column, job_name: bool) -> str:
    """A value at its column's width: longer ones cut (a job name keeps its end, marked '*',
    as LSF), shorter ones padded to the column's side."""
    if c.width is None:
        return text
    if len(text) > c.width:
        text = "*" + text[len(text) - c.width + 1 :] if job_name else text[: c.width]
    return text.rjust(c.width) if c.right else text.ljust(c.width)


# --- selecting and printing


def states(args: "Args") -> "list[str] | None":
    """The states -p, -r and -s select (any of them), and -d (finished: with another of
    them, both must hold); None: any state. mbatchd sends only jobs in these states, and of
    -J, -P, -G and -m (roles/mbatchd/listing.py, Select)."""
    groups = [group for flag, group in _BY_FLAG.items() if getattr(args, flag)]
    chosen = {s for group in groups for s in group} if groups else None
    if args.done:
        chosen = set(_ENDED) if chosen is None else chosen & set(_ENDED)
    return None if chosen is None else sorted(chosen)


def annotate(views: "Iterable[View]", lsf: bool, element_ids: bool) -> "Iterator[View]":
    """Each view with the JOBID, JOB_NAME and STAT this command shows (as they come)."""
    for j in views:
        jobid, name = lsf_ids(j, element_ids or not lsf)
        yield {**j, "_jobid": jobid, "_name": name, "_stat": stat(j, lsf)}


def print_format(
    views: "Iterable[View]", columns: list[Column], delimiter: str, header: bool
) -> None:
    if header:
        print(delimiter.join(_cell(FIELDS[c.field][0], c, False) for c in columns).rstrip())
    for j in views:
        print(
            delimiter.join(_cell(_value(j, c), c, c.field == "job_name") for c in columns).rstrip()
        )


def print_json(views: "Iterable[View]", columns: list[Column]) -> None:
    """LSF's -json, each record printed as it comes: "JOBS" (the count) follows "RECORDS"."""
    import json

    print('{\n  "COMMAND": "bjobs",\n  "RECORDS": [', end="")
    count = 0
    for j in views:
        record = json.dumps({FIELDS[c.field][0]: _value(j, c) for c in columns}, indent=2)
        print("," * bool(count) + "\n    " + record.replace("\n", "\n    "), end="")
        count += 1
    print(f'\n  ],\n  "JOBS": {count}\n}}' if count else '],\n  "JOBS": 0\n}')


def print_summary(views: "Iterable[View]") -> None:
    """-sum: the slots of unfinished jobs by state, LSF's columns."""
    from roles.cli.commands import table

    heads = ["RUN", "SSUSP", "USUSP", "UNKNOWN", "PEND", "FWD_PEND", "PSUSP"]
    counts = dict.fromkeys(heads, 0)
    for j in views:
        if j["state"] in counts:
            counts[j["state"]] += j["slots"]
    table([[counts[h] for h in heads]], heads)


def default_columns() -> "tuple[list[Column], str]":
    return parse_format(DEFAULT_FORMAT)


def long_lines(j: "View") -> list[str]:
    """bjobs -l's resource usage in LSF's words, when the job view has it: a running job's
    last sample, a finished job's end figures."""
    if j.get("usage_time"):
        lines = running_lines(j)
    elif j.get("cpu_time") is not None:
        lines = [f"  The CPU time used is {j['cpu_time']:.1f} seconds."]
    else:
        lines = []
    if j.get("max_mem") is not None:
        lines += [" MEMORY USAGE:", f" MAX MEM: {_mem(j, 'max_mem', 0)};"]
    return lines


def running_lines(j: "View") -> list[str]:
    """A running (or suspended) job's figures as LSF's bjobs -l shows them, under the time
    of its worker's last sample."""
    pad = " " * 21  # under the text after the time stamp
    cpu = j.get("cpu_time")
    return [
        f"{time.strftime('%a %b %e %H:%M:%S', time.localtime(j['usage_time']))}: "
        "Resource usage collected.",
        f"{pad}The CPU time used is {'-' if cpu is None else f'{cpu:.0f}'} seconds.",
        f"{pad}MEM: {_mem(j, 'mem', 0)};  SWAP: {_mem(j, 'swap', 0)};  "
        f"NTHREAD: {_dash(j.get('nthreads'))}",
        f"{pad}PGID: {j.get('pgid')};  PIDs: {' '.join(map(str, j.get('run_pids') or ()))}",
    ]
