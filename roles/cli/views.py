"""The cluster as LSF 10.1 shows it: bqueues [-l] [-w], bhosts [-l] [-w], busers [-w], lsload
[-l] [-w] and lshosts [-w] (native: queues, hosts, users, load, hostinfo).

The load and the host facts are LIM's (psutil on each host, sampled by its LIM). The master
LIM hears every host; mbatchd reads its view every poll (it schedules on it) and hands it on,
so lsload and lshosts show every host LIM hears, sbatchd or not, in one request that this
path only formats: it imports no psutil.
"""

import sys

from lavalite.loadthreshold import INDICES
from roles.cli.commands import table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from roles.cli.quick import Args, Parser

MB = 1 << 20


def _call(args: "Args", op: str, **fields: "Any") -> "dict[str, Any]":
    from roles.cli import client

    return client(args).call(op, **fields)


def _wide(p: "Parser", what: str) -> None:
    p.add_argument("-w", dest="wide", action="store_true", help=f"wide format: {what} in full")


def _long(p: "Parser") -> None:
    p.add_argument("-l", dest="long", action="store_true", help="long format")


def _pick(
    rows: "list[dict[str, Any]]", names: list[str], kind: str
) -> "tuple[list[dict[str, Any]], int]":
    """The rows named (all when none is), in the order asked, and the exit status: an
    unknown name is said on stderr in LSF's words and makes it 1."""
    if not names:
        return rows, 0
    by_name = {r["name"]: r for r in rows}
    missing = [n for n in names if n not in by_name]
    for n in missing:
        print(f"{n}: {kind}", file=sys.stderr)
    return [by_name[n] for n in names if n in by_name], 1 if missing else 0


def _cut(text: "Any", width: int, wide: bool) -> str:
    """LSF's narrow columns: a longer value keeps its end behind a '*' (unless -w)."""
    text = str(text)
    return text if wide or len(text) <= width else "*" + text[-(width - 1) :]


def _dash(n: "int | None") -> "int | str":
    return n if n else "-"


def _size(n: "float | None") -> str:
    """LSF's memory figures: megabytes as 4231M, from 10 GB on as 12.3G."""
    if n is None:
        return "-"
    mb = n / MB
    return f"{mb / 1024:.1f}G" if mb >= 10240 else f"{mb:.0f}M"


# --- bqueues


def _setup_queues(p: "Parser") -> None:
    _wide(p, "queue names and status")
    _long(p)
    p.add_argument("names", nargs="*", metavar="QUEUE")


QUEUE_FIGURES = ["PRIO", "STATUS", "MAX", "JL/U", "JL/P", "JL/H", "NJOBS", "PEND", "RUN"]


def _queue_figures(q: "dict[str, Any]") -> list:
    """QUEUE_FIGURES of a queue: no per-processor or per-host limits (JL/P, JL/H). Its
    pending slots count the held ones (PSUSP), its running ones the suspended ones apart."""
    susp = q["susp"]
    pend = q["pend"] + susp.get("PSUSP", 0)
    run = q["run"] - _suspended(susp)
    return [q["priority"], q["status"], _dash(q["max"]), _dash(q["max_user"]), "-", "-"] + [
        pend + q["run"],
        pend,
        run,
    ]


def _suspended(susp: "dict[str, int]") -> int:
    """The slots of suspended running jobs (USUSP, SSUSP) in a reply's `susp`."""
    return susp.get("USUSP", 0) + susp.get("SSUSP", 0)


def _show(
    args: "Args",
    rows: "list[dict[str, Any]]",
    long_form: "Callable[[dict[str, Any]], None]",
    row: "Callable[[dict[str, Any]], list]",
    header: list[str],
) -> None:
    """-l: each one's long form; else a table of one row each (none when nothing is found)."""
    if args.long:
        for r in rows:
            long_form(r)
    elif rows:
        table([row(r) for r in rows], header)


def queues(args: "Args") -> int:
    rows, code = _pick(_call(args, "queues")["queues"], args.names, "No such queue")
    _show(
        args,
        rows,
        _queue_long,
        lambda q: [_cut(q["name"], 10, args.wide), *_queue_figures(q), _suspended(q["susp"])],
        ["QUEUE_NAME", *QUEUE_FIGURES, "SUSP"],
    )
    return code


def _queue_long(q: "dict[str, Any]") -> None:
    print(f"QUEUE: {q['name']}\n  -- {q['description'] or '(no description)'}\n")
    print("PARAMETERS/STATISTICS")
    susp = q["susp"]
    table(
        [[*_queue_figures(q), susp["SSUSP"], susp["USUSP"], 0]],
        [*QUEUE_FIGURES, "SSUSP", "USUSP", "RSV"],
    )
    _queue_limits(q.get("limits") or {})
    _placing(q.get("placing") or {})
    _share_info(q["name"], q.get("fairshare"), q.get("share_info"))
    _preemption(*q.get("preemption") or ("", ""))
    _admin_comment(q.get("admin"))
    print()


def _placing(p: "dict[str, str]") -> None:
    """A queue's placement, res_req (LSF's RES_REQ) and its load thresholds as LSF's
    SCHEDULING PARAMETERS table (loadSched and loadStop by index, as configured)."""
    if p.get("res_req"):
        print(f"\nRES_REQ:  {p['res_req']}")
    if p.get("placement", "first") != "first":
        print(f"\nPLACEMENT:  {p['placement']}")
    rows: list[list[Any] | str] = [
        [name, *(given.get(index, "-") for index in INDICES)]
        for name, key in (("loadSched", "load_sched"), ("loadStop", "load_stop"))
        for given in [dict(w.split("=", 1) for w in p.get(key, "").replace(",", " ").split())]
    ]
    if p.get("load_sched") or p.get("load_stop"):
        print("\nSCHEDULING PARAMETERS")
        table(rows, ["", *INDICES])


def _share_info(name: str, shares: "str | None", accounts: "list[dict[str, Any]] | None") -> None:
    """A fairshare queue's policy and SHARE_INFO_FOR block, as LSF: each share account's
    shares, dynamic priority, slots started and reserved, decayed CPU and run seconds,
    adjustment."""
    if accounts is None or not shares:
        return
    entries = shares[shares.index("[") + 1 : shares.rindex("]")].strip()
    print(f"\nSCHEDULING POLICIES:  FAIRSHARE\nUSER_SHARES:  {entries}")
    print(f"\nSHARE_INFO_FOR: {name}/")
    rows: list[list[Any] | str] = [
        [
            a["account"],
            a["shares"],
            f"{a['priority']:.3f}",
            a["started"],
            a["reserved"],
            f"{a['cpu_time']:.1f}",
            round(a["run_time"]),
            f"{a['adjust']:.3f}",
        ]
        for a in accounts
    ]
    header = ["USER/GROUP", "SHARES", "PRIORITY", "STARTED", "RESERVED", "CPU_TIME", "RUN_TIME"]
    table(rows, [*header, "ADJUST"])


def _preemption(policy: str, action: str) -> None:
    """The queue's PREEMPTION as LSF's bqueues -l prints it, and what preemption does to its
    jobs when that is not suspending them."""
    if policy:
        print(f"\nPREEMPTION = {policy}")
    if action and action != "suspend":
        print(f"PREEMPT_ACTION = {action}")


def _queue_limits(limits: "dict[str, Any]") -> None:
    """bqueues -l's DEFAULT LIMITS and MAXIMUM LIMITS blocks, of the limits the queue sets."""
    from lavalite.limits import format_size

    for title, run, mem in (
        ("DEFAULT LIMITS", limits.get("default_walltime"), None),
        ("MAXIMUM LIMITS", limits.get("max_walltime"), limits.get("max_memory")),
    ):
        lines = [f" RUNLIMIT\n {run / 60:.1f} min"] if run else []
        lines += [f" MEMLIMIT\n {format_size(mem)}"] if mem else []
        if lines:
            print(f"\n{title}:\n" + "\n\n".join(lines))


def _admin_comment(note: "dict[str, Any] | None") -> None:
    """bhosts -l and bqueues -l: the last admin action's comment (badmin -C)."""
    if note and note.get("comment"):
        print(f' ADMIN ACTION COMMENT: "{note["comment"]}" ({note["user"]}, {note["action"]})')


# --- bhosts


def _setup_hosts(p: "Parser") -> None:
    _wide(p, "host names and the closed_* reasons")
    _long(p)
    p.add_argument("names", nargs="*", metavar="HOST")


def host_status(h: "dict[str, Any]") -> str:
    """closed_Full for a host whose every slot is taken, as LSF says."""
    if h["status"] == "ok" and h["slots"] and not h["free"]:
        return "closed_Full"
    return str(h["status"])


def _short(status: str) -> str:
    """bhosts' narrow STATUS: each closed_* reason is `closed` (-w and -l name it)."""
    return "closed" if status.startswith("closed_") else status


HOST_FIGURES = ["JL/U", "MAX", "NJOBS", "RUN", "SSUSP", "USUSP", "RSV"]


def _host_figures(h: "dict[str, Any]") -> list:
    """HOST_FIGURES of a host, in slots: no per-user limit (JL/U); RSV = held by pending jobs'
    reservations."""
    susp = h["susp"]
    run = h["used"] - _suspended(susp)
    return ["-", h["slots"], h["used"], run, susp["SSUSP"], susp["USUSP"], h.get("reserved", 0)]


def hosts(args: "Args") -> int:
    rows, code = _pick(_call(args, "hosts")["hosts"], args.names, "Bad host name")
    _show(
        args,
        rows,
        _host_long,
        lambda h: [
            _cut(h["name"], 18, args.wide),
            host_status(h) if args.wide else _short(host_status(h)),
            *_host_figures(h),
        ],
        ["HOST_NAME", "STATUS", *HOST_FIGURES],
    )
    return code


LOAD_INDICES = ["r15s", "r1m", "r15m", "ut", "pg", "ls", "it", "tmp", "swp", "mem"]


def _figure(value: "float | None", form: str) -> str:
    return "-" if value is None else format(value, form)


def load_values(load: "dict[str, Any]") -> list[str]:
    """LSF's load indices from LIM's sample (lavalite/loadindex.py): r15s the run queue
    averaged over 15 s, r1m and r15m the kernel's 1- and 15-minute load averages, pg pages
    swapped per second, ls login users, it idle minutes; '-' for what a LIM did not send."""
    avg = load.get("loadavg") or [None, None, None]
    cpu = load.get("cpu")
    return [
        _figure(load.get("r15s"), ".1f"),
        _figure(avg[0], ".1f"),
        _figure(avg[2], ".1f"),
        "-" if cpu is None else f"{cpu * 100:.0f}%",
        _figure(load.get("pg"), ".1f"),
        _figure(load.get("ls"), "d"),
        _figure(load.get("it"), ".0f"),
        _size(load.get("tmp_free")),
        _size(load.get("swap_free")),
        _size(load.get("mem_avail")),
    ]


def _cpuf(load: "dict[str, Any]", form: str) -> str:
    """The host's CPU factor ([lim] cpu_factor of its LIM; 1 where its LIM sent none)."""
    return format(load.get("cpuf") or 1.0, form)


def _host_long(h: "dict[str, Any]") -> None:
    print(f"HOST  {h['name']}")
    table(
        [[host_status(h), _cpuf(h.get("load") or {}, ".2f"), *_host_figures(h), "-"]],
        ["STATUS", "CPUF", *HOST_FIGURES, "DISPATCH_WINDOW"],
    )
    print(" CURRENT LOAD USED FOR SCHEDULING:")
    table([["Total", *load_values(h.get("load") or {}), h["free"]]], ["", *LOAD_INDICES, "slots"])
    _admin_comment(h.get("admin"))
    print()


# --- busers


def _setup_users(p: "Parser") -> None:
    _wide(p, "user names")
    p.add_argument("names", nargs="*", metavar="USER", help="users, or all (default: you)")


def users(args: "Args") -> int:
    import getpass

    names = args.names or [getpass.getuser()]
    rows = _call(args, "users", users=names)["users"]
    table(
        [
            [
                _cut(u["user"], 15, args.wide),
                "-",
                "-",
                u["pend"] + u["psusp"] + u["run"] + u["ssusp"] + u["ususp"],
                u["pend"] + u["psusp"],
                u["run"],
                u["ssusp"],
                u["ususp"],
                0,
            ]
            for u in rows
        ],
        ["USER/GROUP", "JL/P", "MAX", "NJOBS", "PEND", "RUN", "SSUSP", "USUSP", "RSV"],
    )
    return 0


# --- lsload, lshosts


def _setup_load(p: "Parser") -> None:
    _wide(p, "host names")
    p.add_argument(
        "-l",
        dest="long",
        action="store_true",
        help="long format: nothing truncated (LIM has no io or external indices to add)",
    )
    p.add_argument("names", nargs="*", metavar="HOST")


def _lim_view(args: "Args") -> "tuple[list[dict[str, Any]], int]":
    """(the hosts LIM hears, named ones only if any, each {"name", "load"}; exit status)."""
    view = _call(args, "load")["hosts"]
    rows = [{"name": n, "load": view[n]} for n in sorted(view)]
    return _pick(rows, args.names, "Bad host name")


def load(args: "Args") -> int:
    rows, code = _lim_view(args)
    if rows:
        wide = args.wide or args.long
        table(
            [
                [
                    _cut(h["name"], 15, wide),
                    "ok" if h["load"].get("alive") else "unavail",
                    *load_values(h["load"]),
                ]
                for h in rows
            ],
            ["HOST_NAME", "status", *LOAD_INDICES],
        )
    return code


def _setup_hostinfo(p: "Parser") -> None:
    _wide(p, "host names, types and models")
    p.add_argument("names", nargs="*", metavar="HOST")


def hostinfo(args: "Args") -> int:
    rows, code = _lim_view(args)
    if rows:
        table(
            [
                [
                    _cut(h["name"], 15, args.wide),
                    _cut(load.get("type", "-"), 7, args.wide),
                    _cut(load.get("model", "-"), 8, args.wide),
                    _cpuf(load, ".1f"),
                    load.get("ncpu") or "-",
                    _size(load.get("mem_total")),
                    _size(load.get("swap_total")),
                    "Yes",
                    f"({' '.join(load.get('labels') or [])})",
                ]
                for h in rows
                for load in [h["load"]]
            ],
            ["HOST_NAME", "type", "model", "cpuf", "ncpus", "maxmem", "maxswp", "server"]
            + ["RESOURCES"],
        )
    return code


COMMANDS = {
    "queues": (_setup_queues, queues, "show queues (bqueues)"),
    "hosts": (_setup_hosts, hosts, "show hosts (bhosts)"),
    "users": (_setup_users, users, "show users' job counts (busers)"),
    "load": (_setup_load, load, "show the hosts' load from LIM (lsload)"),
    "hostinfo": (_setup_hostinfo, hostinfo, "show the hosts' facts from LIM (lshosts)"),
}
