"""The per-job shepherd: a fork of sbatchd (no exec, so it costs a fork, not a Python start-up)
that starts the job, waits for it, delivers its output and writes how it ended.

The shepherd lives in its own session, so it outlives sbatchd: sbatchd can be restarted or
killed while jobs run, and the next sbatchd reads the ending from the attempt directory:
    pid      the job's pid (= its process group), written once it runs
    status   JSON: exit_code, exit_signal, start, end, reason/message when it could not start
"""
import gc
import json
import os
import shutil
import signal
import time

_RESET = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
          signal.SIGHUP, signal.SIGCHLD)


def write_json(path, data):
    """Atomic: a reader sees the whole file or none."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def launch(adir, argv, env, cwd, outputs):
    """Fork the shepherd for one attempt; return its pid. `outputs` is [(fds, final, temp)]:
    fds a tuple of 1 and/or 2; final the user's path (None: discard); temp the file written
    during the run and renamed onto final at the end (None: write final directly)."""
    pid = os.fork()
    if pid:
        return pid
    try:
        gc.disable()                       # nothing of sbatchd's heap is ours to collect
        signal.set_wakeup_fd(-1)
        for sig in _RESET:
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        _shepherd(adir, argv, env, cwd, outputs)
    finally:
        os._exit(0)


def _open_outputs(outputs):
    actions, renames, notes = [], [], []
    for fds, final, temp in outputs:
        target = temp or final or os.devnull
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if temp else os.O_APPEND),
                         0o644)
        except OSError as exc:
            notes.append(f"cannot write {target}: {exc.strerror}; output discarded")
            fd = os.open(os.devnull, os.O_WRONLY)
        else:
            if temp:
                renames.append((temp, final))
        actions += [(os.POSIX_SPAWN_DUP2, fd, n) for n in fds]
    actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
    return actions, renames, notes


def _shepherd(adir, argv, env, cwd, outputs):
    actions, renames, notes = _open_outputs(outputs)
    status = {"start": time.time()}
    exe = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH", os.defpath))
    try:
        os.chdir(cwd if os.path.isdir(cwd) else adir)
        if exe is None:
            raise FileNotFoundError(2, "command not found")
        pid = os.posix_spawn(exe, argv, env, file_actions=actions, setpgroup=0,
                             setsigdef=_RESET, setsigmask=())
    except OSError as exc:
        status.update(exit_code=127 if isinstance(exc, FileNotFoundError) else 126,
                      reason="exec_failed", message=f"{argv[0]}: {exc.strerror}")
    else:
        with open(os.path.join(adir, "pid"), "w") as f:
            f.write(str(pid))
        _, wstatus, usage = os.wait4(pid, 0)
        try:                               # what the job left behind in its group dies with it
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        code = os.waitstatus_to_exitcode(wstatus)
        status.update(exit_code=code if code >= 0 else None,
                      exit_signal=-code if code < 0 else None,
                      utime=usage.ru_utime, stime=usage.ru_stime, maxrss_kb=usage.ru_maxrss)
    for temp, final in renames:
        try:
            os.replace(temp, final)
        except OSError as exc:
            notes.append(f"cannot move output to {final}: {exc.strerror}")
    status["end"] = time.time()
    if notes:
        status["message"] = "; ".join(notes + ([status["message"]] if "message" in status else []))
    write_json(os.path.join(adir, "status"), status)
