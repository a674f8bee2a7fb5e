"""bsub's timing, pre/post-execution and bookkeeping options, as LSF 10.1 documents them:
-b and -t ([[year:][month:]day:]hour:minute), -E and -Ep, -r and -rn, -P, -G, -Jd, -sp,
-c ([hour:]minute), -u, -N and -B.

`setup` adds them to the submit parser; `fields` turns the parsed values into the job spec's
fields (begin, term_time, pre_exec, post_exec, rerunnable, project, user_group, description,
priority, cpu_limit, notify, mail_user). The CLI checks the syntax (exit 2); mbatchd checks
what depends on the cluster (MAX_USER_PRIORITY, the user's groups) and refuses with exit 1.
"""

import time

from lavalite import jobspec

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from roles.cli.quick import Args, Parser

# LSF's field order, read from the right: minute, hour, day, month, year, with their ranges
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("year", 1970, 9999),
)


class OptionError(ValueError):
    """A value LSF would refuse; the message names the option."""


_TIME = "[[year:][month:]day:]hour:minute"
_FLAG = None  # an option that takes no value
# option, dest, metavar (_FLAG: none), help
_OPTIONS = (
    ("-b", "begin", _TIME, "dispatch the job on or after this time"),
    ("-t", "term_time", _TIME, "kill the job at this time (TERM_DEADLINE)"),
    ("-E", "pre_exec", "COMMAND", "pre-execution command; if it fails the job goes back to PEND"),
    ("-Ep", "post_exec", "COMMAND", "post-execution command, run after the job"),
    ("-r", "rerun", _FLAG, "rerunnable: requeued if its host is lost"),
    ("-rn", "never_rerun", _FLAG, "never rerun, even in a rerunnable queue"),
    ("-P", "project", "PROJECT", "project name, for accounting"),
    ("-G", "user_group", "USER_GROUP", "user group (one of yours), for accounting"),
    ("-Jd", "description", "DESCRIPTION", "job description"),
    (
        "-sp",
        "priority",
        "PRIORITY",
        "job priority among your jobs in the queue, 1..MAX_USER_PRIORITY",
    ),
    (
        "-c",
        "cpu_limit",
        "[hour:]minute",
        "CPU time limit of each of the job's processes (TERM_CPULIMIT)",
    ),
    ("-u", "mail_user", "ADDRESS", "address the site's notify command is given"),
    ("-N", "notify_end", _FLAG, "notify when the job ends (the site's notify command)"),
    ("-B", "notify_begin", _FLAG, "notify when the job begins (the site's notify command)"),
)


def setup(p: "Parser") -> None:
    for option, dest, metavar, text in _OPTIONS:
        if metavar is _FLAG:
            p.add_argument(option, dest=dest, action="store_true", help=text)
        else:
            p.add_argument(option, dest=dest, metavar=metavar, help=text)


def fields(args: "Args", now: float) -> "dict[str, Any]":
    """The spec fields of the options given (none for an option not given); OptionError
    names the option of a bad value."""
    out: dict[str, Any] = {}
    if args.begin is not None:
        out["begin"] = lsf_time(args.begin, now, "-b")
    if args.term_time is not None:
        out["term_time"] = lsf_time(args.term_time, now, "-t", past_refused=True)
        if out["term_time"] <= out.get("begin", now):
            raise OptionError(
                f"-t {args.term_time}: the termination time must be later than "
                f"the {'begin time (-b)' if 'begin' in out else 'current time'}"
            )
    if args.rerun and args.never_rerun:
        raise OptionError("-r and -rn: a job is either rerunnable or not")
    if args.rerun or args.never_rerun:
        out["rerunnable"] = bool(args.rerun)
    for name, option, field in (
        ("pre_exec", "-E", None),
        ("post_exec", "-Ep", None),
        ("project", "-P", jobspec.MAX_NAME),
        ("user_group", "-G", jobspec.MAX_NAME),
        ("description", "-Jd", jobspec.MAX_PATH),
        ("mail_user", "-u", jobspec.MAX_NAME),
    ):
        value = getattr(args, name)
        if value is not None:
            out[name] = _text(value, option, field or jobspec.MAX_ARG)
    if args.priority is not None:
        out["priority"] = user_priority(args.priority)
    if args.cpu_limit is not None:
        out["cpu_limit"] = cpu_minutes(args.cpu_limit) * 60.0
    events = [event for event, on in (("begin", args.notify_begin), ("end", args.notify_end)) if on]
    if events:
        out["notify"] = events
    return out


def _text(value: str, option: str, limit: int) -> str:
    if not value.strip():
        raise OptionError(f"{option}: the value is empty")
    try:
        return jobspec.text(option, value, limit)
    except jobspec.SpecError as exc:
        raise OptionError(str(exc)) from None


def user_priority(text: str) -> int:
    """-sp: an integer from 1 (mbatchd bounds it by MAX_USER_PRIORITY)."""
    try:
        value = int(text)
    except ValueError:
        raise OptionError(f"-sp {text}: the job priority must be an integer") from None
    if not 1 <= value <= jobspec.MAX_PRIORITY:
        raise OptionError(f"-sp {text}: Bad user-assigned job priority (1 to MAX_USER_PRIORITY)")
    return value


def cpu_minutes(text: str) -> int:
    """-c [hour:]minute, in minutes (the minutes may pass 59, as LSF allows)."""
    if "/" in text:
        raise OptionError(f"-c {text}: a host name or model after the limit is not supported")
    hours, _, minutes = text.rpartition(":")
    if not minutes.isdigit() or not (hours.isdigit() or not hours):
        raise OptionError(f"-c {text}: Bad CPU limit specification; -c takes [hour:]minute")
    total = int(hours or 0) * 60 + int(minutes)
    if not 0 < total <= jobspec.MAX_SECONDS // 60:
        raise OptionError(f"-c {text}: the CPU limit must be above 0 and at most a year")
    return total


def lsf_time(text: str, now: float, option: str, past_refused: bool = False) -> float:
    """[[year:][month:]day:]hour:minute as LSF reads it, in seconds since the epoch (local
    time). Without a year, the first such time after `now`; with one, a time in the past is
    `now` for -b (LSF: the condition is reached) and refused for -t (`past_refused`)."""
    words = text.split(":")
    if not 2 <= len(words) <= 5 or not all(w.isdigit() for w in words):
        raise OptionError(
            f"{option} {text}: Bad time specification; "
            f"{option} takes [[year:][month:]day:]hour:minute"
        )
    given: dict[str, int] = {}
    for word, (name, low, high) in zip(reversed(words), _FIELDS):
        if not low <= int(word) <= high:
            raise OptionError(
                f"{option} {text}: Bad time specification; the {name} must be {low} to {high}"
            )
        given[name] = int(word)
    found = _next_time(given, now)
    if found is None:
        raise OptionError(f"{option} {text}: Bad time specification; no such date")
    if found <= now and "year" in given:
        if past_refused:
            raise OptionError(f"{option} {text}: the time is in the past")
        return now
    return found


def _next_time(given: "dict[str, int]", now: float) -> float | None:
    """The first local time after `now` with the given fields, the missing larger ones run on
    from now (tomorrow, next month, next year); with a year, that very time. None if no such
    date exists (Feb 30, or a time a DST change skips)."""
    today = time.localtime(now)
    year, month = given.get("year", today.tm_year), given.get("month", today.tm_mon)
    day = given.get("day", today.tm_mday)
    # (field that runs on, how far): a 31st comes within a year, a Feb 29 within 8 years
    runs, tries = (
        ("day", 2)
        if "day" not in given
        else ("month", 13)
        if "month" not in given
        else ("year", 9)
        if "year" not in given
        else (None, 1)
    )
    for step in range(tries):
        parts = [
            year + (step if runs == "year" else 0),
            month + (step if runs == "month" else 0),
            day + (step if runs == "day" else 0),
            given["hour"],
            given["minute"],
        ]
        parts[0], parts[1] = parts[0] + (parts[1] - 1) // 12, (parts[1] - 1) % 12 + 1
        y, mo, d, h, mi = parts
        stamp = time.mktime((y, mo, d, h, mi, 0, 0, 0, -1))
        made = time.localtime(stamp)
        fields = [made.tm_year, made.tm_mon, made.tm_mday, made.tm_hour, made.tm_min]
        if (fields == parts or runs == "day") and fields[3:] == parts[3:]:
            if stamp > now or runs is None:
                return stamp
    return None


# how bjobs -l words the endings these options bring
ENDINGS = {
    "deadline": "Killed after its termination time (TERM_DEADLINE)",
    "cpulimit": "Exceeded its CPU time limit (TERM_CPULIMIT)",
    "pre_exec": "Its pre-execution command failed",
}


def long_lines(j: "dict[str, Any]") -> list[str]:
    """bjobs -l's lines for these options, in LSF's words (only for the options given)."""

    def when(t: float) -> str:
        return time.strftime("%a %b %e %H:%M", time.localtime(t))

    words = [
        f"{name} <{shown(j[field])}>"
        for name, field, shown in (
            ("Project", "project", str),
            ("User Group", "user_group", str),
            ("Job Priority", "priority", str),
            ("Job Description", "description", str),
            ("Specified Start Time", "begin", when),
            ("Specified Termination Time", "term_time", when),
            ("Pre-execution Command", "pre_exec", str),
            ("Post-execution Command", "post_exec", str),
            ("Mail", "mail_user", str),
        )
        if j.get(field) is not None
    ]
    if j.get("rerunnable") is not None:
        words.append("Re-runnable" if j["rerunnable"] else "Not re-runnable")
    if j.get("notify"):
        words.append(f"Notify <{','.join(j['notify'])}>")
    lines = [f"  {', '.join(words)};"] if words else []
    if j.get("cpu_limit"):
        lines.append(f"  CPULIMIT: {j['cpu_limit'] / 60:.1f} min of each process")
    return lines
