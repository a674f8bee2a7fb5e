"""What an attempt's order holds about its script, input, directories and output modes, and
LSF's job report: sbatchd prepares them (`prepare`), the shepherd writes the files as the user
(`spool`) and composes the report when the attempt ends (`report`, `ends_job`).

Only jobs that use these options pay for them: `prepare` adds nothing to an order otherwise.
"""

import base64
import os
import time
from typing import Any

from lavalite import endings, jobscript
from lavalite.model import PRE_EXEC
from roles.sbatchd import record


def places(spec: dict[str, Any], user: str) -> tuple[str, str, list[str]]:
    """(the job's directory, the one relative -o/-e resolve against, the directories to
    create as the user). -cwd and -outdir resolve against the submit directory; -cwd is made
    when it holds a pattern (LSF), -outdir always, and the directory an -o/-e ending in '/'
    names (LSF: the file is JOB.out or JOB.err there, `output_path`)."""
    cwd = spec.get("cwd") or "/"
    in_dirs = [k for k in ("out", "err") if (spec.get(k) or "").endswith("/")]
    if not in_dirs and "job_cwd" not in spec and "outdir" not in spec:
        return cwd, cwd, []  # most jobs
    job, index = job_index(spec)
    made = []
    job_cwd = base = cwd
    if "job_cwd" in spec:
        job_cwd = base = os.path.join(cwd, jobscript.substitute(spec["job_cwd"], job, index, user))
        if "%" in spec["job_cwd"]:
            made.append(job_cwd)
    if "outdir" in spec:
        base = os.path.join(cwd, jobscript.substitute(spec["outdir"], job, index, user))
        made.append(base)
    made += [os.path.join(base, jobscript.substitute(spec[k], job, index)) for k in in_dirs]
    return job_cwd, base, made


def output_path(spec: dict[str, Any], path: str | None, kind: str, base: str) -> str | None:
    """An -o/-e path on this host: %J and %I substituted, against `base`; one ending in '/'
    is a directory, the file in it JOB.out or JOB.err (kind), as LSF."""
    return jobscript.output_file(path, kind, base, *job_index(spec)) if path else None


def job_index(spec: dict[str, Any]) -> tuple[str, str]:
    """(LSB_JOBID, LSB_JOBINDEX): an array element's array id and index, else the job's and 0."""
    return str(spec.get("array", spec["id"])), str(spec.get("index", 0))


def prepare(
    spec: dict[str, Any], argv: list[str], tmpdir: str, cwd: str
) -> tuple[list[str], dict[str, Any]]:
    """(the job's argv, what its order adds): a script spooled in TMPDIR and run by its #!
    interpreter or /bin/sh, -L's login shell around the job, its input, its umask."""
    extra: dict[str, Any] = {}
    if "script" in spec:
        path = os.path.join(tmpdir, jobscript.SCRIPT_NAME)
        argv = jobscript.script_argv(spec["script"], path)
        text = spec["script"].encode(errors="replace")
        extra["spool"] = [[path, base64.b64encode(text).decode()]]
    if "login_shell" in spec:
        argv = jobscript.login_argv(spec["login_shell"], argv)
    if "stdin_spool" in spec:
        path = os.path.join(tmpdir, jobscript.STDIN_NAME)
        extra.setdefault("spool", []).append([path, spec["stdin_spool"]])
        extra["stdin"] = path
    elif "stdin" in spec:
        extra["stdin"] = os.path.join(cwd, jobscript.substitute(spec["stdin"], *job_index(spec)))
    if "umask" in spec:
        extra["umask"] = spec["umask"]
    return argv, extra


def job_variables(
    env: dict[str, str], spec: dict[str, Any], outputs: list, tmpdir: str, outbase: str
) -> None:
    """LSF's variables about the job's files: its output and error files as resolved, the
    spooled script, the output directory, the submit directory."""
    env["LSB_SUBCWD"] = spec.get("cwd") or ""
    if spec.get("out") or spec.get("err"):
        env["LSB_OUTPUTFILE"] = outputs[0][1] or ""
        env["LSB_ERRORFILE"] = outputs[-1][1] or ""
    if "script" in spec:
        env["LSB_JOBFILENAME"] = os.path.join(tmpdir, jobscript.SCRIPT_NAME)
    if "outdir" in spec:
        env["LSB_OUTDIR"] = outbase


def spool(order: dict[str, Any]) -> int | None:
    """In the job's TMPDIR (made): its script and spooled input (base64 in the order), the
    user's, mode 0600; then
    its input opened (a descriptor, or None for /dev/null). Called with the user's ids.
    Raises OSError naming the file."""
    for path, data in order.get("spool", ()):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, base64.b64decode(data))
        finally:
            os.close(fd)
    if "stdin" not in order:
        return None
    try:
        return os.open(order["stdin"], os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, f"{order['stdin']}: {exc.strerror}") from None


def ends_job(
    status: dict[str, Any], attempt: int, attempts: int | None, path: str, spec: dict[str, Any]
) -> bool:
    """Whether mbatchd will end the job with this attempt, by its own rule (lavalite.endings):
    no retry follows, or a kill (the record says) stops it. A failed pre-execution command
    (-E) never ends it here: the job did not run, and mbatchd requeues it while it may."""
    why = endings.reason(
        spec, status.get("reason") or "", status.get("exit_code"), status.get("exit_signal")
    )
    if why == PRE_EXEC:
        return False
    if attempts is None or not endings.retried(why, attempt, attempts):
        return True
    return "kill" in record.read(path)


# --- LSF's job report


def report_facts(spec: dict[str, Any], host: str, cluster: str, home: str, cwd: str) -> dict:
    """What the report says that is known at dispatch."""
    job, index = job_index(spec)
    return {
        "label": job if "array" not in spec else f"{job}[{index}]",
        "name": spec.get("name") or "",
        "user": spec.get("user") or "",
        "from": spec.get("from_host") or "",
        "submitted": spec.get("submit_time"),
        "host": host,
        "cluster": cluster,
        "queue": spec.get("queue") or "",
        "home": home,
        "cwd": cwd,
        "input": spec.get("script") or " ".join(spec.get("cmd") or []),
        "err": spec.get("err") if spec.get("err") not in (None, spec.get("out")) else None,
    }


_RULE = "-" * 60


def _megabytes(size: int | None) -> str:
    """A peak as LSF prints it (whole MB, rounded up), '-' where it was not counted."""
    return "-" if size is None else f"{-(-size // (1 << 20))} MB"


def report(facts: dict[str, Any], status: dict[str, Any]) -> tuple[bytes, bytes]:
    """(the report before the output, the note after it), in LSF's words and order."""
    code, sig = status.get("exit_code"), status.get("exit_signal")
    done = code == 0 and not status.get("reason")
    start, end = status.get("start") or time.time(), status.get("end") or time.time()
    cpu = status.get("cpu_time") or 0.0
    ending = (
        "Successfully completed."
        if done
        else f"Exited with signal termination: {sig}."
        if sig is not None
        else f"Exited with exit code {code}."
    )
    f = facts
    head = "\n".join(
        [
            f"Sender: LSF System <lavalite@{f['host']}>",
            f"Subject: Job {f['label']}: <{f['name']}> in cluster <{f['cluster']}> "
            + ("Done" if done else "Exited"),
            "",
            f"Job <{f['name']}> was submitted from host <{f['from']}> by user <{f['user']}> "
            f"in cluster <{f['cluster']}> at {time.ctime(f['submitted'] or start)}",
            f"Job was executed on host(s) <{f['host']}>, in queue <{f['queue']}>, as user "
            f"<{f['user']}> in cluster <{f['cluster']}> at {time.ctime(start)}",
            f"<{f['home']}> was used as the home directory.",
            f"<{f['cwd']}> was used as the working directory.",
            f"Started at {time.ctime(start)}",
            f"Terminated at {time.ctime(end)}",
            f"Results reported at {time.ctime(end)}",
            "",
            "Your job looked like:",
            "",
            _RULE,
            "# LSBATCH: User input",
            f["input"].rstrip("\n"),
            _RULE,
            "",
            ending,
            "",
            "Resource usage summary:",
            "",
            f"    CPU time :{cpu:>40.2f} sec.",
            f"    Max Memory :{_megabytes(status.get('max_mem')):>38}",
            f"    Run time :{round(end - start):>40} sec.",
            "",
            "The output (if any) follows:",
            "",
            "",
        ]
    )
    tail = f"\n\nPS:\n\nRead file <{f['err']}> for stderr output of this job.\n\n"
    return head.encode(errors="replace"), tail.encode(errors="replace") if f["err"] else b""
