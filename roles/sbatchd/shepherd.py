"""The per-job shepherd: a fork of sbatchd (no exec, so it costs a fork, not a Python start-up)
that starts the job, waits for it, delivers its output and writes how it ended.

The shepherd lives in its own session, so it outlives sbatchd: sbatchd can be restarted or
killed while jobs run, and the next sbatchd reads the ending from the attempt directory:
    pid      the job's pid (= its process group), written once it runs
    status   JSON: exit_code, exit_signal, start, end, reason/message when it could not start

The job itself is a second fork that, before it execs, joins the attempt's cgroup, drops to the
submitting user (initgroups, setgid, setuid) and takes its output files; the shepherd stays
outside the cgroup, so a cgroup kill or pids.max never touches it. Output files are created and
renamed with the user's identity (seteuid), so the user owns them and root never writes where
the user could not.
"""
import contextlib
import errno
import fcntl
import gc
import json
import os
import pwd
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


class Account:
    """Whom the job runs as. switch=False: sbatchd is not root and runs jobs as itself."""
    __slots__ = ("name", "uid", "gid", "switch")

    def __init__(self, name, uid, gid, switch):
        self.name, self.uid, self.gid, self.switch = name, uid, gid, switch


def launch(adir, argv, env, cwd, outputs, account, group):
    """Fork the shepherd for one attempt; return its pid. The shepherd holds a lock on
    `<adir>/shepherd` (taken before the fork, so there is no moment when it runs unlocked)
    for as long as it lives and writes its pid there: the lock, not the pid, says it is alive
    (see `holder`). `outputs` is [(fds, final, temp)]:
    fds a tuple of 1 and/or 2; final the user's path (None: discard); temp the file written
    during the run and renamed onto final at the end (None: write final directly).
    `group` is the attempt's cgroup (None without cgroups)."""
    lock = os.open(os.path.join(adir, "shepherd"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    pid = os.fork()
    if pid:
        os.close(lock)
        return pid
    try:
        os.write(lock, str(os.getpid()).encode())
        # sbatchd's sockets, journal and event loop are not ours: holding its connection to
        # mbatchd open would hide sbatchd's death from mbatchd
        os.closerange(3, lock)
        os.closerange(lock + 1, os.sysconf("SC_OPEN_MAX"))
        gc.disable()                       # nothing of sbatchd's heap is ours to collect
        signal.set_wakeup_fd(-1)
        for sig in _RESET:
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        _shepherd(adir, argv, env, cwd, outputs, account, group)
    finally:
        os._exit(0)


@contextlib.contextmanager
def as_user(account):
    """File operations with the user's identity (effective ids only, restored after)."""
    if not account.switch:
        yield
        return
    groups = os.getgroups()
    os.setgroups(os.getgrouplist(account.name, account.gid))
    os.setegid(account.gid)
    os.seteuid(account.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def _open_outputs(outputs, notes):
    """[(fd, (1, 2))], [(temp, final)]; opened as the user."""
    opened, renames = [], []
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
        opened.append((fd, fds))
    return opened, renames


def _exec_job(exe, argv, env, cwd, opened, account, group):
    """In the job's process: group, identity, directory, files, exec. Raises OSError."""
    os.setpgid(0, 0)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if group is not None:
        group.join()
    if account.switch:
        os.initgroups(account.name, account.gid)
        os.setgid(account.gid)
        os.setuid(account.uid)
    try:
        os.chdir(cwd)
    except OSError:                        # gone or not ours on this host: LSF uses a temp dir
        os.chdir(env.get("TMPDIR") or "/tmp")
    for fd, fds in opened:
        for n in fds:
            os.dup2(fd, n)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    if exe is None:
        raise FileNotFoundError(errno.ENOENT, "command not found")
    os.execve(exe, argv, env)


def _spawn(exe, argv, env, cwd, opened, account, group):
    """Fork the job; its pid, or OSError with the reason it could not start (reported back
    through a close-on-exec pipe: EOF means the exec succeeded)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            _exec_job(exe, argv, env, cwd, opened, account, group)
        except OSError as exc:
            os.write(wfd, f"{exc.errno or 0}:{exc.strerror or exc}".encode())
        finally:
            os._exit(127)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        failure = f.read()
    if failure:
        os.waitpid(pid, 0)
        code, _, text = failure.decode(errors="replace").partition(":")
        raise OSError(int(code), text)
    return pid


def _shepherd(adir, argv, env, cwd, outputs, account, group):
    notes = []
    with as_user(account):
        opened, renames = _open_outputs(outputs, notes)
    # peek reads the files through /proc/<shepherd>/fd/N, never by path (the user controls the
    # path), so the descriptors stay open until the end and their numbers are written down
    write_json(os.path.join(adir, "outfds"),
               [fd if temp else None for (fd, _), (_, _, temp) in zip(opened, outputs)])
    status = {"start": time.time()}
    exe = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH", os.defpath))
    pid = None
    try:
        pid = _spawn(exe, argv, env, cwd, opened, account, group)
    except OSError as exc:
        status.update(exit_code=127 if exc.errno == errno.ENOENT else 126,
                      reason="exec_failed", message=f"{argv[0]}: {exc.strerror}")
    if pid is not None:
        with open(os.path.join(adir, "pid"), "w") as f:
            f.write(str(pid))
        _, wstatus, usage = os.wait4(pid, 0)
        code = os.waitstatus_to_exitcode(wstatus)
        status.update(exit_code=code if code >= 0 else None,
                      exit_signal=-code if code < 0 else None,
                      utime=usage.ru_utime, stime=usage.ru_stime, maxrss_kb=usage.ru_maxrss)
        try:                               # what the job left behind dies with it
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    if group is not None:
        if group.oom():
            status.update(reason="oom", message="killed by the out-of-memory killer: the job "
                                                "exceeded its memory limit (-M)")
        group.remove(wait=5.0)
    with as_user(account):
        for temp, final in renames:
            try:
                os.replace(temp, final)
            except OSError as exc:
                notes.append(f"cannot move output to {final}: {exc.strerror}")
    status["end"] = time.time()
    if notes:
        status["message"] = "; ".join(notes + ([status["message"]] if "message" in status else []))
    write_json(os.path.join(adir, "status"), status)


def holder(adir):
    """The pid of the attempt's shepherd if it is alive (it holds the lock), else None. Immune
    to pid reuse: a dead shepherd's lock is released with its last descriptor."""
    path = os.path.join(adir, "shepherd")
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        for _ in range(500):           # locked: the pid follows within a moment of the fork
            pid = os.pread(fd, 32, 0)
            if pid:
                return int(pid)
            time.sleep(0.002)
        return None
    finally:
        os.close(fd)


def account_for(spec, allow_root):
    """Whom to run the job as: the submitting user, by name, checked against the uid the
    submission was signed for. ValueError says why the job cannot run here."""
    user, uid = spec.get("user"), spec.get("uid")
    try:
        pw = pwd.getpwnam(user)
    except (KeyError, TypeError):
        raise ValueError(f"user {user!r} does not exist on this host") from None
    if pw.pw_uid != uid:
        raise ValueError(f"user {user} has uid {pw.pw_uid} on this host but submitted as "
                         f"uid {uid}")
    if os.geteuid() != 0:
        if uid != os.geteuid():
            raise ValueError(f"sbatchd runs as uid {os.geteuid()}, not root: it cannot run "
                             f"jobs of {user}")
        return Account(user, uid, pw.pw_gid, False), pw
    if uid == 0 and not allow_root:
        raise ValueError("root jobs are not allowed (allow_root_jobs = no in lavalite.conf)")
    return Account(user, uid, pw.pw_gid, uid != 0), pw
