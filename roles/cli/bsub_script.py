"""bsub's job scripts and files: `bsub < script` (#BSUB lines, the text kept with the job),
`echo cmd | bsub`, the commands typed at the `bsub> ` prompt, a job_script parsed when the
site sets `parse_script`, LSF's command line (the words joined, through /bin/sh when they
need it), and the options about the job's files and environment (-i/-is, -o/-oo/-e/-eo,
-cwd, -outdir, -L, -env, the umask).

Nothing here runs for `bsub [options] prog args` beyond joining the words: the script paths
read stdin or a file only when there is no command, or when the site asked for it.
"""

import os
import re
import sys

from lavalite import jobscript, jobspec
from roles.cli.quick import Refused

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from lavalite.config import Config
    from roles.cli.quick import Args


def command(args: "Args", conf: "Callable[[], Config]") -> "tuple[Args, list[str], dict[str, Any]]":
    """(args with a script's #BSUB options merged in, the job's cmd, its script fields).
    `conf` loads the configuration (wanted only to ask whether job scripts are parsed).
    Raises Refused for what bsub refuses (exit 2)."""
    prog = getattr(args, "prog", "lavalite")
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    # bsub < script, echo cmd | bsub, or typed at bsub's prompt (a process started without
    # stdin has sys.stdin None)
    if not cmd and sys.stdin is not None:
        text = _typed() if sys.stdin.isatty() else sys.stdin.buffer.read()
        text = _bounded(text, "the job script")
        if jobscript.commands_of(text):
            return _with_script(args, text, prog), [jobscript.shown(text)], {"script": text}
    if prog != "lavalite" and args.cmd[:1] != ["--"]:
        script = _job_script(cmd, conf)
        if script is not None:
            return _with_script(args, script, prog), cmd, {"script": script}
        cmd = jobscript.command_line(cmd)
    if not cmd:  # none given, or blanks only
        raise Refused(f"{_name(prog)}: no command to run ({_name(prog)} [options] COMMAND [ARGS])")
    return args, cmd, {}


def _typed() -> bytes:
    """The job's commands typed at LSF's `bsub> ` prompt, a line each, up to Ctrl-D (EOF)
    on a new line: read as a script piped in is."""
    lines = []
    while True:
        try:
            lines.append(input("bsub> ") + "\n")
        except EOFError:
            print(flush=True)  # the prompt Ctrl-D answered ends its line
            return "".join(lines).encode(errors="replace")


def _name(prog: str) -> str:
    return "bsub" if prog != "lavalite" else "lavalite submit"


def _job_script(cmd: list[str], conf: "Callable[[], Config]") -> str | None:
    """The text of `bsub job_script` where the site parses job scripts (parse_script): one
    word naming a text file (a binary one, with NUL bytes, is a program to run)."""
    if len(cmd) != 1 or not os.path.isfile(cmd[0]) or not conf().cluster.parse_script:
        return None
    try:
        with open(cmd[0], "rb") as f:
            data = f.read(jobspec.MAX_SCRIPT + 1)
    except OSError as exc:
        raise Refused(
            f"bsub: the job script {cmd[0]}: {exc.strerror}. Job not submitted."
        ) from None
    return None if b"\0" in data else _bounded(data, f"the job script {cmd[0]}")


def _bounded(data: bytes, what: str) -> str:
    """A script's text, within the bound mbatchd keeps (lavalite.jobspec.MAX_SCRIPT)."""
    if len(data) > jobspec.MAX_SCRIPT:
        raise Refused(f"bsub: {what} takes more than {jobspec.MAX_SCRIPT} bytes")
    return data.decode(errors="replace")


def _with_script(args: "Args", text: str, prog: str) -> "Args":
    """args parsed again with the script's #BSUB options first, so that the command line's
    own (after them) win. Each line is checked as a command line is, and named if refused."""
    from roles.cli import quick_parser

    lsf_name = prog if prog != "lavalite" else None
    quick = quick_parser("submit")
    words: list[str] = []
    try:
        lines = jobscript.bsub_lines(text)
    except jobscript.ScriptError as exc:
        raise Refused(f"{_name(prog)}: {exc}") from None
    for number, line in lines:
        try:
            quick.check_words(line, _name(prog), lsf_name)
            _options_only(quick.options, line)
        except Refused as exc:
            raise Refused(f"{exc} (#BSUB line {number})") from None
        words += line
    if not words:
        return args
    argv = words + args.typed
    parsed: Args | None = quick.parse(argv)
    if parsed is None:  # what the quick parser leaves to argparse (which exits 2 on errors)
        from roles.cli.parser import build_parser

        parsed = build_parser("submit").parse_args(argv)
    parsed.prog, parsed.typed = prog, argv
    return parsed


def _options_only(options: "dict[str, tuple[str, bool, Any]]", line: list[str]) -> None:
    """A #BSUB line holds options and their values, never a command."""
    i = 0
    while i < len(line):
        word = line[i]
        if word not in options:
            raise Refused(f"bsub: {word!r}: a #BSUB line takes options only")
        i += 1 if options[word][1] else 2
        if i > len(line):
            raise Refused(f"bsub: {word} needs a value")


# --- the job's files and environment


def files(args: "Args") -> "dict[str, Any]":
    """The spec's fields for -o/-oo/-e/-eo, -i/-is, -cwd, -outdir, -L and the umask; the job
    report goes with -o/-oo under the LSF name only."""
    lsf = getattr(args, "prog", "lavalite") != "lavalite"
    spec: dict[str, Any] = {
        "out": args.out_over or args.out,
        "err": args.err_over or args.err,
        "out_append": bool(args.out and not args.out_over) or None,
        "err_append": bool(args.err and not args.err_over) or None,
        "report": bool(lsf and (args.out or args.out_over)) or None,
        "job_cwd": args.job_cwd,
        "outdir": args.outdir,
        "login_shell": args.login_shell,
        "umask": _umask(),
    }
    if args.login_shell and not args.login_shell.startswith("/"):
        raise Refused(f"bsub: -L {args.login_shell}: the login shell must be an absolute path")
    if args.stdin and args.stdin_spool:
        raise Refused("bsub: -i and -is cannot be used together")
    if args.stdin:
        where = os.path.join(args.job_cwd or "", args.stdin)  # relative: to the job's directory
        if "%" not in where:  # %J/%I are known on the execution host only
            _check_input(where)
        spec["stdin"] = args.stdin
    if args.stdin_spool:
        spec["stdin_spool"] = _spooled(args.stdin_spool)
    return spec


def _umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _check_input(path: str) -> None:
    if not os.path.isfile(path):
        reason = "No such file or directory" if not os.path.exists(path) else "Not a regular file"
        raise Refused(f"bsub: {path}: {reason}. Job not submitted.")


def _spooled(path: str) -> str:
    """-is: the input's bytes now (the job reads them even if the file changes), base64."""
    import base64

    _check_input(path)
    try:
        with open(path, "rb") as f:
            data = f.read(jobspec.MAX_SCRIPT + 1)
    except OSError as exc:
        raise Refused(f"bsub: {path}: {exc.strerror}. Job not submitted.") from None
    if len(data) > jobspec.MAX_SCRIPT:
        raise Refused(f"bsub: -is {path}: more than {jobspec.MAX_SCRIPT} bytes")
    return base64.b64encode(data).decode()


# compiled at the first -env (re caches it), not at every bsub's import
_ITEMS = r"(?:'[^']*'|[^,])+"  # -env's comma-separated items; a single-quoted value holds commas
_RESERVED = r"^(none|all)$|[,~=\"']"  # what a variable's name may not be or hold


def environment(text: str | None, current: "Mapping[str, str]") -> "dict[str, str]":
    """-env as LSF: "none"; "all[, ~VAR ...][, VAR=value ...]"; "VAR[=value][, ...]" (only
    those). A value may quote other variables ($NAME) and, in single quotes, hold commas."""
    if text is None:
        return dict(current)
    items = [item.strip() for item in re.findall(_ITEMS, text) if item.strip()]
    if items == ["none"]:
        return {}
    everything = items[:1] == ["all"]
    env = dict(current) if everything else {}
    for item in items[everything:]:
        name, eq, value = item.lstrip("~").partition("=")
        name = name.strip()
        if not name or re.search(_RESERVED, name):
            raise Refused(f"bsub: -env: bad variable name {name!r} in {text!r}")
        if item.startswith("~"):
            if not everything or eq:
                raise Refused(f'bsub: -env: ~{name} is for leaving a variable out of "all"')
            env.pop(name, None)
        elif eq:
            env[name] = os.path.expandvars(value.strip().strip("'"))
        elif name in current:
            env[name] = current[name]
    return env
