"""llctrl: the admin's remote control. Runs one systemctl verb (or `lavalite config-check`) on
many hosts at once through pdsh over ssh, prints the answers grouped by host with identical
answers folded (as `dshbak -c`), names the hosts that failed (exit 1) and writes every action
to syslog: who, on which hosts, what, when.

    llctrl [--hosts H1,H2 | --file FILE] {lim|mbatch|sbatch}
           {status|start|stop|restart|reload|config-check}

The remote side needs only sshd, sudo (units/sudoers.lavalite-admin lets the admin user run
exactly these systemctl verbs on the lavalite units) and the lavalite file on its PATH.
"""

import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import time

from lavalite import config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace

UNITS = {
    "lim": "lavalite-lim.service",
    "mbatch": "lavalite-mbatchd.service",
    "sbatch": "lavalite-sbatchd.service",
}
VERBS = ("status", "start", "stop", "restart", "reload", "config-check")
# `status` asks `is-active`: one word per host, so a hundred healthy hosts fold into one group
SYSTEMCTL_VERBS = {
    "status": "is-active",
    "start": "start",
    "stop": "stop",
    "restart": "restart",
    "reload": "reload",
}
RC = "llctrl-rc="  # the remote command's exit status, as the last line of its answer


def remote_command(daemon: str, verb: str, lavalite: str = "lavalite") -> list[str]:
    """The argv each host runs. Shared with units/sudoers.lavalite-admin's test: whatever llctrl
    runs under sudo, the sudoers sample must allow, and nothing more."""
    if verb == "config-check":
        return [lavalite, "config-check"]
    return ["sudo", "-n", "systemctl", SYSTEMCTL_VERBS[verb], UNITS[daemon]]


def _split(spec: str) -> list[str]:
    """Split on the commas outside brackets: 'n[1,3],x' -> ['n[1,3]', 'x']."""
    parts, cur, depth = [], "", 0
    for c in spec:
        if c == "," and not depth:
            parts.append(cur)
            cur = ""
            continue
        depth += (c == "[") - (c == "]")
        cur += c
    return [p.strip() for p in parts + [cur] if p.strip()]


def expand(spec: str) -> list[str]:
    """'node[1-3,7],gpu01' -> ['node1', 'node2', 'node3', 'node7', 'gpu01'] (pdsh's syntax;
    numbers keep their zero padding)."""
    hosts = []
    for part in _split(spec):
        m = re.fullmatch(r"([^\[\]]*)\[([^\]]+)\]([^\[\]]*)", part)
        if not m:
            if "[" in part or "]" in part:
                raise ValueError(f"bad host range {part!r}")
            hosts.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for r in ranges.split(","):
            lo, _, hi = r.strip().partition("-")
            if not (lo.isdigit() and (hi or lo).isdigit()):
                raise ValueError(f"bad host range [{ranges}] in {part!r}")
            hosts += [f"{prefix}{n:0{len(lo)}d}{suffix}" for n in range(int(lo), int(hi or lo) + 1)]
    return hosts


def fold(hosts: list[str]) -> str:
    """['n1', 'n2', 'n3', 'x'] -> 'n[1-3],x': the inverse of expand, for the group headers."""
    groups: dict[str, list[str]] = {}
    out: list[str] = []
    for h in hosts:
        m = re.fullmatch(r"(.*?)(\d+)", h)
        if m:
            groups.setdefault(m.group(1), []).append(m.group(2))
        else:
            out.append(h)
    for prefix, nums in groups.items():
        nums.sort(key=int)
        runs: list[list[str]] = []
        for n in nums:
            if runs and int(n) == int(runs[-1][1]) + 1 and len(n) == len(runs[-1][1]):
                runs[-1][1] = n
            else:
                runs.append([n, n])
        text = ",".join(a if a == b else f"{a}-{b}" for a, b in runs)
        out.append(f"{prefix}{nums[0]}" if len(nums) == 1 else f"{prefix}[{text}]")
    return ",".join(out)


def _hosts(args: "Namespace", conf: config.Config | None) -> list[str]:
    if args.hosts:
        return expand(args.hosts)
    if args.file:
        with open(args.file) as f:
            return [h for line in f for h in expand(line.split("#")[0].strip())]
    if conf is None:
        raise ValueError(
            "no hosts: give --hosts or --file (or a configuration whose "
            "master_candidates and [hosts] name them)"
        )
    hosts = list(conf.cluster.master_candidates)
    if args.daemon != "mbatch":
        hosts += [h for h in conf.hosts if h not in hosts]
    return hosts


def parse_pdsh(
    out: str, err: str, hosts: list[str]
) -> tuple[dict[str, list[str]], dict[str, int | None]]:
    """pdsh's `host: line` output -> ({host: [lines]}, {host: exit status or None when the host
    gave none, i.e. ssh failed}). ssh's own complaints land in the host's answer."""
    lines: dict[str, list[str]] = {h: [] for h in hosts}
    codes = dict.fromkeys(hosts)
    for text, is_out in ((out, True), (err, False)):
        for line in text.splitlines():
            if line.startswith("pdsh@"):  # pdsh@me: host: ssh exited with ...
                line = line.split(": ", 1)[1] if ": " in line else line
            host, sep, rest = line.partition(": ")
            if not sep or host not in lines:
                continue
            if is_out and rest.startswith(RC) and rest[len(RC) :].isdigit():
                codes[host] = int(rest[len(RC) :])
            else:
                lines[host].append(rest)
    return lines, codes


def report(lines: dict[str, list[str]], codes: dict[str, int | None]) -> dict[str, str]:
    """The dshbak -c view: hosts with identical answers share one block. Returns the failed
    hosts with why."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for host, said in lines.items():
        groups.setdefault(tuple(said), []).append(host)
    for answer, hosts in groups.items():
        bar = "-" * 16
        print(f"{bar}\n{fold(hosts)}\n{bar}")
        print("\n".join(answer) if answer else "(no output)")
    return {
        h: ("unreachable" if rc is None else f"exit {rc}") for h, rc in codes.items() if rc != 0
    }


def _who() -> str:
    """The admin behind the action: sudo's caller if any, else the uid's name."""
    try:
        me = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        me = str(os.getuid())
    return f"{os.environ['SUDO_USER']} (as {me})" if os.environ.get("SUDO_USER") else me


def audit(address: str, message: str) -> None:
    """One syslog line (facility daemon, tag llctrl). A missing syslog socket is said, not
    fatal: the admin's action must not depend on the logger."""
    import logging

    from lavalite import log

    logger = logging.getLogger("lavalite.llctrl")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        try:
            handler = log.syslog_handler(address)
        except OSError as exc:
            print(f"llctrl: warning: cannot write to syslog at {address}: {exc}", file=sys.stderr)
            return
        handler.setFormatter(logging.Formatter(f"llctrl[{os.getpid()}]: %(message)s"))
        logger.addHandler(handler)
    logger.info("%s", message)


def setup(p: "ArgumentParser") -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "-w",
        "--hosts",
        help="hosts, comma separated; ranges as node[01-10] "
        "(default: master_candidates and [hosts] of lavalite.conf)",
    )
    where.add_argument("--file", help="file with one host (or range) per line, # comments")
    p.add_argument(
        "-l",
        "--user",
        default="lavalite-admin",
        help="ssh user on the hosts (default lavalite-admin)",
    )
    p.add_argument(
        "-f", "--fanout", type=int, default=32, help="hosts contacted at once (pdsh -f, default 32)"
    )
    p.add_argument(
        "--lavalite",
        default="lavalite",
        help="the lavalite program on the hosts, for config-check (default: on PATH)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the pdsh command, run nothing")
    p.add_argument(
        "daemon",
        choices=list(UNITS),
        help="which unit: lavalite-lim, lavalite-mbatchd or lavalite-sbatchd",
    )
    p.add_argument(
        "verb",
        choices=VERBS,
        help="a systemctl verb (status asks is-active), or config-check: "
        "`lavalite config-check` on each host",
    )


def llctrl(args: "Namespace") -> int:
    if args.fanout < 1:
        print("llctrl: --fanout must be at least 1", file=sys.stderr)
        return 2
    try:
        conf = config.load(config.find_conf(args.conf))
    except config.ConfigError:
        if args.conf:  # asked for explicitly: its errors are the answer
            raise
        conf = None  # hosts come from the command line
    try:
        hosts = _hosts(args, conf)
    except (OSError, ValueError) as exc:
        print(f"llctrl: {exc}", file=sys.stderr)
        return 2
    if not hosts:
        print("llctrl: the host list is empty", file=sys.stderr)
        return 2
    command = shlex.join(remote_command(args.daemon, args.verb, args.lavalite))
    pdsh = [
        "pdsh",
        "-R",
        "ssh",
        "-l",
        args.user,
        "-f",
        str(args.fanout),
        "-w",
        ",".join(hosts),
        f"{command} 2>&1; echo {RC}$?",
    ]
    if args.dry_run:
        print(shlex.join(pdsh))
        return 0
    if shutil.which("pdsh") is None:
        print("llctrl: pdsh is not installed (Debian: apt-get install pdsh)", file=sys.stderr)
        return 2
    what = (
        f"user={_who()} hosts={fold(hosts)} command={command!r} "
        f"time={time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
    )
    syslog = conf.logging.syslog_address if conf else "/dev/log"
    audit(syslog, f"{what} begin")
    # pdsh passes its environment to ssh: PDSH_SSH_ARGS_APPEND carries a port, a key, ...
    res = subprocess.run(pdsh, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    failed = report(*parse_pdsh(res.stdout, res.stderr, hosts))
    if failed:
        why = ", ".join(f"{h} ({w})" for h, w in failed.items())
        audit(syslog, f"{what} failed on {why}")
        print(
            f"llctrl: {args.daemon} {args.verb} failed on {len(failed)} of {len(hosts)} "
            f"hosts: {why}",
            file=sys.stderr,
        )
        return 1
    audit(syslog, f"{what} ok")
    return 0


COMMANDS = {"llctrl": (setup, llctrl, "run a daemon action on many hosts (pdsh over ssh)")}
