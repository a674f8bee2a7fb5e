"""Job scripts, the LSF command line and the job's files: what bsub puts in a spec, what mbatchd
checks of it, and how sbatchd turns it into the job's argv. Stdlib only: the CLI imports it.

Spec fields (each absent unless given, so jobs without them cost nothing more):
    script        the job script's text (bsub < script, echo cmd | bsub, a parsed job_script)
    stdin         -i FILE, %J/%I substituted on the execution host
    stdin_spool   -is FILE's bytes, base64, read at submit
    umask         the submitter's umask
    out_append    -o (LSF appends); -oo leaves it out (overwrite). err_append: -e and -eo
    report        LSF's job report goes with the output (bsub -o/-oo)
    job_cwd       -cwd DIR (patterns %J %I %U substituted and the directory created)
    outdir        -outdir DIR (likewise): relative -o/-e land there
    login_shell   -L SHELL: the job runs under `SHELL -l`
    attempts      the job's most attempts, kept when output is appended (only the attempt that
                  ends the job is appended)
"""

import os
import re

from lavalite import jobspec

# Characters that make a command line need /bin/sh (quotes, expansions, operators, globs,
# comments, assignments). Without any, the words are exec'd directly: no shell to start.
SHELL_SYNTAX = frozenset("|&;<>()$`\\\"'*?[#~=%{}\n")
SCRIPT_NAME = "lavalite-job.sh"  # the script, spooled in the attempt's TMPDIR
STDIN_NAME = "lavalite-job.in"  # the spooled -is input, beside it
_TEXT_FIELDS = ("stdin", "job_cwd", "outdir", "login_shell")
_FLAGS = ("out_append", "err_append", "report")
_ONE_WORD = SHELL_SYNTAX | frozenset(" \t")  # in a one-string command, blanks are syntax too


def needs_shell(line: str) -> bool:
    """Whether a command line holds shell syntax (its blanks only separate words)."""
    return not SHELL_SYNTAX.isdisjoint(line)


def argv_of(cmd: list[str]) -> list[str]:
    """A job's cmd as exec takes it: one string with shell syntax (or blanks) runs through
    /bin/sh -c, as LSF runs a command line; a list of arguments is executed as it is."""
    if len(cmd) == 1 and not _ONE_WORD.isdisjoint(cmd[0]):
        return ["/bin/sh", "-c", cmd[0]]
    return list(cmd)


def command_line(words: list[str]) -> list[str]:
    """LSF's command line: the words joined with spaces, as one string for /bin/sh -c when it
    holds shell syntax (sbatchd runs a one-string command with syntax through the shell),
    else the words split again, exec'd directly."""
    line = " ".join(words)
    return [line] if needs_shell(line) else line.split()


def script_argv(text: str, path: str) -> list[str]:
    """How to run a script spooled at `path`: by its #! interpreter (with its one optional
    argument, as the kernel reads the line), else by /bin/sh."""
    first = text.partition("\n")[0]
    if first.startswith("#!"):
        interp, _, arg = first[2:].strip().partition(" ")
        if interp:
            return [interp, *([arg.strip()] if arg.strip() else []), path]
    return ["/bin/sh", path]


def login_argv(shell: str, argv: list[str]) -> list[str]:
    """The job run by `SHELL -l` (bsub -L): its profile read first, then the job exec'd."""
    import shlex

    return [shell, "-l", "-c", "exec " + shlex.join(argv)]


def substitute(path: str, job: str, index: str, user: str | None = None) -> str:
    """LSF's patterns in a path: %J the job (or array) id, %I the array index, and where the
    option has it (-cwd, -outdir) %U the user."""
    path = path.replace("%J", job).replace("%I", index)
    return path if user is None else path.replace("%U", user)


def output_file(path: str, kind: str, base: str, job: str, index: str) -> str:
    """An -o/-e path as the job's host opens it: patterns substituted, against `base`; one
    ending in '/' is a directory, the file in it JOB.out or JOB.err (kind), as LSF."""
    if path.endswith("/"):
        path += f"%J.{kind}"
    return os.path.join(base, substitute(path, job, index))


def output_base(spec: dict, job: str, index: str, user: str) -> str:
    """The directory relative -o/-e resolve against: -outdir, else -cwd, else the submit
    directory."""
    cwd = spec.get("cwd") or "/"
    for field in ("outdir", "job_cwd"):
        if field in spec:
            return os.path.join(cwd, substitute(spec[field], job, index, user))
    return cwd


def checked(spec: dict, attempts: int) -> dict:
    """The fields of this module a submitted spec holds, checked (SpecError names the field);
    with appended output, the job's most `attempts` too."""
    out: dict = {}
    for field in ("script", "stdin_spool"):
        if spec.get(field) is not None:
            value = jobspec.text(field, spec[field], jobspec.MAX_SCRIPT)
            if len(value.encode(errors="replace")) > jobspec.MAX_SCRIPT:
                raise jobspec.SpecError(f"{field} takes more than {jobspec.MAX_SCRIPT} bytes")
            out[field] = value
    for field in _TEXT_FIELDS:
        if spec.get(field):
            out[field] = jobspec.text(field, spec[field], jobspec.MAX_PATH)
    if "login_shell" in out and not out["login_shell"].startswith("/"):
        raise jobspec.SpecError("login_shell (-L) must be an absolute path")
    for field in _FLAGS:
        if spec.get(field) is not None:
            if not isinstance(spec[field], bool):
                raise jobspec.SpecError(f"{field} must be true or false")
            if spec[field]:
                out[field] = True
    if spec.get("umask") is not None:
        out["umask"] = jobspec.integer("umask", spec["umask"], 0, 0o777)
    if "out_append" in out or "err_append" in out:
        out["attempts"] = attempts
    return out


# --- #BSUB lines


class ScriptError(ValueError):
    """A #BSUB line bsub refuses; the message names the line."""


_BSUB = r"#BSUB(?:\s|$)"  # compiled at the first script (re caches it), not at import


def bsub_lines(text: str) -> list[tuple[int, list[str]]]:
    """The options of a script's #BSUB lines, as LSF reads them: every line that begins
    with #BSUB (blanks before it allowed), before the commands or among them. Each as
    (line number, its words split as a shell would)."""
    import shlex

    found = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if re.match(_BSUB, stripped):
            try:
                found.append((number, shlex.split(stripped[5:], comments=True)))
            except ValueError as exc:
                raise ScriptError(f"line {number}: {stripped}: {exc}") from None
    return found


SHOWN_MAX = 4094  # characters of a job's command in LSF (bsub's `command` argument)


def shown(text: str) -> str:
    """A script job's command as LSF shows it (bjobs -l, and the job's name without -J): the
    script's lines, blank ones left out, joined with ';', within LSF's length."""
    lines = (line.rstrip() for line in text.splitlines())
    return ";".join(line for line in lines if line)[:SHOWN_MAX]


def commands_of(text: str) -> str:
    """The script's command lines (not comments, not blank), joined as LSF shows a script's
    command: with '; '. Empty if the script runs nothing."""
    return "; ".join(
        s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")
    )
