"""The shepherd: a small process beside sbatchd (sbatchd.conf `shepherds` of them) that starts
the jobs sbatchd orders, waits for them, delivers their output and writes how each ended.

Why not a fork of sbatchd per job: a fork of a 50 MB Python process costs
milliseconds on a VM (page tables), which capped a host at about 200 jobs/s, all of it in
sbatchd's event loop. A shepherd is a fresh interpreter of about 12 MB serving many attempts
from one `select` loop, beside sbatchd, on another core.

It lives in its own session and outlives sbatchd: when sbatchd dies or stops, the shepherd
keeps its jobs, finishes them and exits; the next sbatchd starts new shepherds for new jobs
and adopts the old ones' attempts from their records (roles/sbatchd/record.py): each order
comes with its record's descriptor, locked, which the shepherd holds until it has appended
the status; before that it appends the job's pid (= its process group) and where peek finds
the output ([descriptor in the shepherd, st_dev, st_ino] per output file).

The loop runs in a thread of its own; the process's first thread only waits for it. v1 moves
single threads, and memory is charged to the group of the first thread (the owner of the
process's memory), so the loop thread can step into a job's groups, spawn the job there and
step out (roles/sbatchd/spawn.py) while every page the shepherd touches stays charged where it
was. It steps out before the job's pid is written: sbatchd signals a group only once it knows
the pid, so it never finds the shepherd among a job's tasks.
A job is a posix_spawn (no copy of the shepherd), from the loop thread holding the job's user's
ids when it is another user's (roles/sbatchd/ids.py: per-thread ids, the other thread keeps
root's). Where that cannot be (a cgroup2 group, `--pids 1`, no per-thread ids) a job of another
user is a fork (`_fork`) whose child joins its cgroup, drops to the user (groups, gid, uid),
makes its TMPDIR and execs. Output files are created and renamed with the user's effective ids
(the calling thread's only; else, glibc's way, the whole process's), so the user owns them and
root never writes where the user could not. Removals go to the cleaner (`_start_cleaner`),
another process.

The link to sbatchd is a Unix stream socket of protocol frames: orders `start` (a list of
attempts, one lock descriptor each) and `clean`; answers `ended` (the status, and the name of
the attempt's cgroup if the shepherd kept it for a later order), sent once per loop turn.
Nothing here blocks on sbatchd.
"""

import array
import contextlib
import errno
import json
import logging
import os
import pwd
import selectors
import shutil
import signal
import socket
import stat
import threading
import time
from collections import deque
from typing import Any, cast

from lavalite import log as log_setup
from lavalite import protocol as P
from roles.sbatchd import cgroups, ids, jobfiles, record, scratch
from roles.sbatchd.spawn import RESET, command_path, enter_cwd, spawn

log = logging.getLogger("lavalite.shepherd")
REMOVE_FOR = 5.0  # seconds a group whose last tasks are still exiting is retried
# seconds between two `ended` frames while they stream: a frame costs sbatchd little (its own
# reports to mbatchd are gathered P.GATHER), and each ms an answer waits is a ms its slot idles
ANSWER_GATHER = 0.001


class Account:
    """Whom the job runs as. switch=False: sbatchd is not root and runs jobs as itself."""

    __slots__ = ("name", "uid", "gid", "switch")

    def __init__(self, name: str, uid: int, gid: int, switch: bool) -> None:
        self.name, self.uid, self.gid, self.switch = name, uid, gid, switch


NSS_FOR = 60.0  # seconds an account or group list is kept (as nscd would)
_nss: dict = {}  # (function, args) -> (until, its answer)


def _nss_cached(function, *args):
    """NSS (/etc/passwd, /etc/group, LDAP...) asked once a minute per user, not per job. An
    unknown user is asked again each time (an account added now works at once)."""
    now = time.monotonic()
    until, answer = _nss.get((function, args), (0.0, None))
    if now >= until:
        answer = function(*args)
        _nss[function, args] = (now + NSS_FOR, answer)
    return answer


def user_groups(account: Account) -> list[int]:
    return _nss_cached(os.getgrouplist, account.name, account.gid)


@contextlib.contextmanager
def _as_process(account):
    """Where per-thread ids are unavailable: the whole process's effective ids, glibc's way
    (every thread changes; the other one only waits)."""
    groups = os.getgroups()
    os.setgroups(user_groups(account))
    os.setegid(account.gid)
    os.seteuid(account.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def _temp(final, run):
    """The file the attempt writes while it runs, beside the final one so that the rename at
    the end is atomic; None where the target is no regular file (/dev/null, a fifo, a tty).
    Looked at as the user, by the shepherd: sbatchd's loop never waits on a user's disk."""
    if final is None:
        return None
    try:
        if not stat.S_ISREG(os.stat(final).st_mode):
            return None
    except OSError:  # not there yet (the usual case), or not ours to see
        pass
    head, tail = os.path.split(final)
    return os.path.join(head, f".{tail}.lavalite-{run.job}.{run.attempt}")


def _deliver(temp: str, final: str) -> str | None:
    """Move an attempt's output to its name, as the user; else say where it is. The hidden
    file never stays where the user would not look, unless nothing else can be done: empty,
    it is removed (nothing is lost); else it goes beside the target under its visible name
    NAME.lavalite-J.A (a link, so that nothing there is overwritten), and only a directory
    that refuses even that keeps it hidden."""
    try:
        os.replace(temp, final)
        return None
    except OSError as exc:
        why = f"cannot move output to {final}: {exc.strerror}"
    try:
        if os.stat(temp).st_size == 0:
            os.unlink(temp)
            return f"{why}; it was empty"
        head, tail = os.path.split(temp)
        visible = os.path.join(head, tail[1:])
        os.link(temp, visible)
        os.unlink(temp)
        return f"{why}; it is in {visible}"
    except OSError:
        return f"{why}; it is in {temp}"


def _write_out(temp: str, final: str, appended: bool, head: bytes, tail: bytes) -> str | None:
    """An attempt's output to its file, with the report's head and tail around it: appended
    (-o, -e), else renamed over it (_deliver). None, or a note on where it went."""
    if not (appended or head or tail):
        return _deliver(temp, final)
    target = final if appended else f"{temp}.report"
    try:
        fd = os.open(
            target,
            os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if appended else os.O_TRUNC),
            0o644,
        )
    except OSError as exc:
        return f"cannot write {target}: {exc.strerror}; the output is in {temp}"
    try:
        os.write(fd, head)
        with open(temp, "rb") as src:  # not sendfile: it refuses an O_APPEND target
            while chunk := src.read(1 << 20):
                os.write(fd, chunk)
        os.write(fd, tail)
    except OSError as exc:
        return f"cannot write {target}: {exc.strerror}; the output is in {temp}"
    finally:
        os.close(fd)
    os.unlink(temp)
    return None if appended else _deliver(target, final)


def _open_outputs(order, run):
    """Opened as the user, after the directories the order names (-cwd, -outdir): run.opened
    [(fd, (1, 2))], run.renames [(temp, final, appended)], and run.outfds, where peek finds a
    file being written: [fd, st_dev, st_ino], or None."""
    for path in order.get("mkdirs", ()):
        try:
            os.makedirs(path, 0o700, exist_ok=True)
        except OSError as exc:
            run.notes.append(f"cannot create {path}: {exc.strerror}")
    # stdout (with stderr when they share a file), then stderr: the first flag or both
    for (fds, final), appended in zip(order["outputs"], order.get("append") or (False, False)):
        temp = _temp(final, run)
        target = temp or final or os.devnull
        try:
            fd = os.open(
                target, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if temp else os.O_APPEND), 0o644
            )
        except OSError as exc:
            run.notes.append(f"cannot write {target}: {exc.strerror}; output discarded")
            fd, temp = os.open(os.devnull, os.O_WRONLY), None
        if temp:  # peek reads it through /proc/<shepherd>/fd/N, never by
            st = os.fstat(fd)  # path (the user's); the identity refuses a reused number
            run.renames.append((temp, final, appended))
            run.outfds.append([fd, st.st_dev, st.st_ino])
        else:
            run.outfds.append(None)
        run.opened.append((fd, fds))


def _exec_job(exe, argv, env, cwd, opened, account, group, order):
    """In the job's process: group, identity, TMPDIR (made here, as the user, so it is theirs
    from the start and the shepherd never waits on the disk for it) and what is spooled there,
    directory, files, umask, exec. Raises OSError."""
    os.setpgid(0, 0)  # its own process group: pgid = pid
    for sig in RESET:  # what the shepherd ignores must not stay ignored
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if group is not None:
        group.join()
    if account.switch:
        os.setgroups(user_groups(account))
        os.setgid(account.gid)
        os.setuid(account.uid)
    scratch.mkdir(env["TMPDIR"])
    stdin = jobfiles.spool(order)
    enter_cwd(cwd, env)
    for fd, fds in opened:
        for n in fds:
            os.dup2(fd, n)
    os.dup2(os.open(os.devnull, os.O_RDONLY) if stdin is None else stdin, 0)
    if "umask" in order:
        os.umask(order["umask"])
    if exe is None:
        raise FileNotFoundError(errno.ENOENT, "command not found")
    try:
        os.execve(exe, argv, env)  # every other descriptor is close-on-exec
    except OSError as exc:
        if exc.errno != errno.ENOEXEC:
            raise
        os.execve("/bin/sh", ["/bin/sh", exe, *argv[1:]], env)  # a script without #!


def _unrunnable(exe):
    """(errno, reason) if exec would refuse exe: said before the spawn, since the prelude's
    shell could only exit 127 or 126 like the job itself."""
    if exe is None:
        return errno.ENOENT, "command not found"
    if not os.path.exists(exe):
        return errno.ENOENT, os.strerror(errno.ENOENT)
    if os.path.isdir(exe) or not os.access(exe, os.X_OK):
        return errno.EACCES, os.strerror(errno.EACCES)
    return None


def _fork(exe, argv, env, cwd, opened, account, group, order):
    """Fork the job: (pid, the read end of a close-on-exec pipe). The pipe says how the exec
    went: EOF means it succeeded, else "errno:reason". Read when it is ready, so the shepherd
    never waits for a child's exec."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            _exec_job(exe, argv, env, cwd, opened, account, group, order)
        except OSError as exc:
            os.write(wfd, f"{exc.errno or 0}:{exc.strerror or exc}".encode(errors="replace"))
        except ValueError as exc:  # a NUL byte, say: exec takes none
            os.write(wfd, f"{errno.EINVAL}:{exc}".encode(errors="replace"))
        finally:
            os._exit(127)
    os.close(wfd)
    return pid, rfd


class Run:
    """One attempt in the shepherd's care."""

    __slots__ = (
        "job",
        "attempt",
        "record",
        "account",
        "group",
        "opened",
        "renames",
        "appending",
        "outfds",
        "notes",
        "status",
        "argv0",
        "tmpdir",
        "pid",
        "pidfd",
        "ooms",
        "pre_marker",
    )

    def __init__(self, order: dict, record: int) -> None:
        self.job, self.attempt = order["job"], order["attempt"]
        self.record = record  # the descriptor of its record, locked
        self.account = Account(*order["account"])
        self.group: cgroups.Group | None = None
        self.opened: list[tuple[int, list[int]]] = []  # (fd, which of the job's 1 and 2 it is)
        self.renames: list[tuple[str, str, bool]] = []  # (temp, final, appended)
        # appended output: (the record's path, the job's most attempts, the report's facts,
        # what of the spec its ending's reason depends on)
        self.appending = (
            (
                order["record"],
                order.get("attempts"),
                order.get("report"),
                {k: order[k] for k in ("cpu_limit",) if k in order},
            )
            if "append" in order
            else None
        )
        self.outfds: list[list[int] | None] = []  # peek's [fd, st_dev, st_ino] per output
        self.notes: list[str] = []
        self.status: dict[str, Any] = {"start": time.time()}
        self.argv0 = self.tmpdir = self.pid = self.pidfd = None
        self.ooms = 0  # OOM kills its group had counted before it
        self.pre_marker: str | None = order.get("pre_marker")  # bsub -E (roles/sbatchd/prepost.py)


class Shepherd:
    # cg: a cgroups backend; its flags (threads, pooled) say which of V1's methods it has
    def __init__(self, sock: socket.socket, cg: Any, cleaner: int) -> None:
        self.sock = sock
        self.cg = cg
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, selectors.EVENT_READ, self._read)
        self.decoder = P.Decoder()
        self.inbuf = bytearray(1 << 20)
        self.locks: deque[int] = deque()  # descriptors received, in order: one per start order
        self.out = bytearray()  # ended frames not yet taken by the socket
        self.written = 0.0  # monotonic time of the last _write
        self.linked = True
        self.runs = 0  # attempts in our care
        self.cleaner = cleaner  # the write end of the cleaner's pipe (non-blocking)
        self.trash = bytearray()  # what the cleaner has yet to be told
        # name -> an ended attempt's cgroup, kept for the next (v1)
        self.kept_groups: dict[str, cgroups.Group] = {}
        # name -> the memory limit sbatchd wrote to a job's group since it started (bmod -M)
        self.retuned: dict[str, int | None] = {}
        self.scratch = scratch.Scratch()  # TMPDIRs kept for their users' next jobs
        self.pid = os.getpid()
        self.ids = ids.thread_ids()  # None: glibc's calls, a fork per other user's job
        self.home: cgroups.Group | None = None  # the loop thread's own groups (v1), set by serve
        self.away = False  # the loop thread is in a job's groups (see _settle)
        self.placed: list[Run] = []  # runs started from inside their groups, pids not written

    def serve(self) -> None:
        """Until sbatchd is gone and every job has ended. Answers go out before the turn's
        start orders are read (mbatchd refills those slots while the shepherd starts jobs),
        at most one frame per ANSWER_GATHER while they stream."""
        if self.cg.threads:
            try:
                self.home = self.cg.home(threading.get_native_id())
            except OSError as exc:  # the prelude still confines the jobs, an exec dearer
                log.warning(
                    "cannot find the shepherd's own cgroups (%s): jobs join theirs through /bin/sh",
                    exc,
                )
        wait = None
        while self.linked or self.runs:
            orders = None
            for key, events in self.sel.select(wait):
                if key.fileobj is self.sock:
                    orders = events
                else:
                    key.data(events)
            wait = self._answer()
            if orders is not None:
                self._read(orders)
                wait = self._answer()
            if self.trash:
                self._feed_cleaner()
            if self.scratch.kept:
                for path in self.scratch.expired(time.monotonic()):
                    self._trash("path", path)
                wait = 1.0 if wait is None else min(wait, 1.0)
        for group in self.kept_groups.values():
            group.close()
            self._trash("cgroup", group.name)
        for path in self.scratch.drain():
            self._trash("path", path)
        os.set_blocking(self.cleaner, True)
        os.write(self.cleaner, self.trash)
        os.close(self.cleaner)

    # --- the link

    def _read(self, events):
        if events & selectors.EVENT_WRITE:
            self._write()
        if not events & selectors.EVENT_READ:
            return
        try:  # into one buffer: a fresh 1 MiB bytes per read cost an mmap
            size, anc, _, _ = self.sock.recvmsg_into(
                [self.inbuf], socket.CMSG_SPACE(256 * 4), socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return
        except OSError:
            size, anc = 0, []
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self.locks.extend(fds)
        if not size:  # sbatchd is gone: finish what runs, take no more
            self.linked = False
            self.sel.unregister(self.sock)
            self.out.clear()  # the status files say it to the next sbatchd
            return
        for msg in self.decoder.feed(self.inbuf[:size]):
            if isinstance(msg, P.ProtocolError):
                log.error("shepherd: bad frame from sbatchd: %s", msg)
            elif msg["op"] == "start":
                for order in msg["orders"]:
                    self.start(order, self.locks.popleft())
                self._settle()
            elif msg["op"] == "clean":
                for path in msg["records"]:
                    self._trash("file", path)
            elif msg["op"] == "limits":  # bmod -M: what sbatchd wrote to a job's group
                self.retuned[msg["cgroup"]] = msg["memory"]

    def _send(self, msg):
        if self.linked:
            self.out += P.encode(msg)

    def _answer(self):
        """Send the answers gathered unless a frame left less than ANSWER_GATHER ago; how long
        the next select may wait (None: until something happens)."""
        if not (self.out and self.linked):
            return None
        wait = self.written + ANSWER_GATHER - time.monotonic()
        if wait > 0:
            return wait
        self._write()
        return None

    def _write(self):
        self.written = time.monotonic()
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            sent = 0
        except OSError:  # sbatchd is gone; the read side notices
            sent = len(self.out)
        del self.out[:sent]
        self.sel.modify(
            self.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0), self._read
        )

    # --- attempts

    def start(self, order: dict, lock: int) -> None:
        """One attempt. What its order holds can fail that attempt, never the shepherd: mbatchd
        refuses such specs at submit, and what gets past it (a value no check foresaw) ends
        this job FAILED(exec_failed) with the reason while the loop serves the others."""
        run = Run(order, lock)
        self.runs += 1
        try:
            self._launch(run, order)
        except Exception as exc:
            self._settle()  # out of the job's groups, if it was on its way in
            if run.pid is not None:  # it runs: a failure of ours after the spawn
                raise
            log.error("job %s.%s cannot start: %r", run.job, run.attempt, exc)
            self._exec_failed(run, errno.EINVAL, f"cannot start the job: {exc}")

    def _launch(self, run: Run, order: dict) -> None:
        if order.get("cgroup"):
            try:
                run.group = self._group(order["cgroup"], cgroups.Limits(*order["limits"]))
                ooms = run.group.ooms  # a reused group's, read as its last job ended
                run.ooms = run.group.oom_count() if ooms is None else ooms
            except OSError as exc:  # the job must not run unconfined when cgroups are in use
                log.error("job %s.%s: cannot create its cgroup: %s", run.job, run.attempt, exc)
                self._trash("cgroup", order["cgroup"])
                run.status.update(
                    exit_code=126, reason="exec_failed", message=f"cannot create cgroup: {exc}"
                )
                self._finish(run)
                return
        argv, env, cwd = order["argv"], order["env"], order["cwd"]
        run.argv0, run.tmpdir = argv[0], env["TMPDIR"]
        account, group = run.account, run.group
        # spawned from inside its group by this thread (v1; not with --pids 1, where the thread
        # would be the group's one task, nor another user's job without per-thread ids: a fork)
        inside = (
            group is not None
            and self.home is not None
            and group.limits.pids != 1
            and (self.ids is not None or not account.switch)
        )
        direct = group is None or inside
        try:
            with self._as(account):
                _open_outputs(order, run)
        except OSError as exc:  # the user's ids refused (their groups, say)
            self._exec_failed(run, exc.errno, f"cannot act as {account.name}: {exc.strerror}")
            return
        if not inside:  # a fork, a prelude, no group: from our own groups
            self._settle()
        if not direct or (account.switch and not self.ids):
            exe = command_path(argv[0], env)
            if account.switch:
                # a Python child joins the group as root, then drops: cgroup2, --pids 1, or
                # no per-thread ids
                run.pid, pipe = _fork(exe, argv, env, cwd, run.opened, account, group, order)
                self.sel.register(pipe, selectors.EVENT_READ, lambda _: self._execed(run, pipe))
                return
            failure = _unrunnable(exe)  # the prelude's shell could only exit 127 or 126
            if failure:
                self._exec_failed(run, *failure)
                return
        try:
            if inside:  # from the last job's groups straight into this one's
                self.away = True
                assert group is not None  # inside implies a group
                group.enter()
            pid = self._start_job(
                account, argv, env, cwd, run.opened, None if direct else group, order
            )
        except OSError as exc:
            self._settle()  # after a half move too: some hierarchies took it
            self._exec_failed(run, exc.errno, exc.strerror or str(exc))
            return
        run.pid = pid
        if inside:
            self.placed.append(run)
        else:
            self._running(run)

    def _settle(self):
        """Back in the shepherd's own groups, then the pids of the jobs started from inside
        theirs are written: sbatchd signals a job's group only once it knows the pid, so it
        never finds the shepherd there. Once per start frame, and before anything that must
        not happen inside a job's group (a fork, a prelude, a status)."""
        if self.away:
            assert self.home is not None  # away only from inside, which needs a home
            try:
                self.home.enter()
            except OSError as exc:  # a thread left there would be frozen and killed with
                log.critical("cannot move the shepherd's loop back to its groups: %s", exc)
                os._exit(70)  # the job; sbatchd sees the link close: attempts lost
            self.away = False
        placed, self.placed = self.placed, []
        for run in placed:
            self._running(run)

    def _start_job(self, account, argv, env, cwd, opened, prelude, order):
        """The job's TMPDIR and what is spooled there, then the job, as its user (this
        thread's real and effective ids: the spawned child inherits them)."""
        if not account.switch:
            self._make_tmp(account, env["TMPDIR"], order, opened)
            return spawn(argv, env, cwd, opened, prelude, order.get("umask"))
        assert self.ids is not None  # without them _launch forks another user's job
        with self.ids.user(account.uid, account.gid, user_groups(account), real=True):
            self._make_tmp(account, env["TMPDIR"], order, opened)
            return spawn(argv, env, cwd, opened, umask=order.get("umask"))

    def _make_tmp(self, account, path, order, opened):
        """The TMPDIR, its spooled script and input; the input joins `opened` as stdin."""
        for lost in self.scratch.make(path, account.uid, time.monotonic()):
            self._trash("path", lost)
        stdin = jobfiles.spool(order)
        if stdin is not None:
            opened.append((stdin, [0]))

    def _as(self, account):
        """File operations with the user's identity (effective ids only, restored after)."""
        if not account.switch:
            return contextlib.nullcontext()
        if self.ids:
            return self.ids.user(account.uid, account.gid, user_groups(account))
        return _as_process(account)

    def _execed(self, run, pipe):
        self.sel.unregister(pipe)
        failure = os.read(pipe, 4096)
        os.close(pipe)
        if failure:
            os.waitpid(run.pid, 0)
            code, _, text = failure.decode(errors="replace").partition(":")
            self._exec_failed(run, int(code), text)
        else:
            self._running(run)

    def _exec_failed(self, run, code, text):
        if code == errno.ENOENT and "/" not in run.argv0:
            text = "command not found"  # not in the job's PATH
        message = f"{run.argv0}: {text}"
        run.status.update(
            exit_code=127 if code == errno.ENOENT else 126, reason="exec_failed", message=message
        )
        for fd, fds in run.opened:  # in the job's error file, as a shell says it
            if 2 in fds:
                try:
                    os.write(fd, f"lavalite: {message}\n".encode(errors="replace"))
                except OSError:
                    pass
        self._finish(run)

    def _running(self, run):
        record.append(run.record, pid=run.pid, outfds=run.outfds)
        run.pidfd = os.pidfd_open(run.pid)  # a zombie until reaped: the pid cannot be reused
        self.sel.register(run.pidfd, selectors.EVENT_READ, lambda _: self._reaped(run))

    def _reaped(self, run):
        self.sel.unregister(run.pidfd)
        os.close(run.pidfd)
        _, wstatus, usage = os.wait4(run.pid, 0)
        code = os.waitstatus_to_exitcode(wstatus)
        run.status.update(
            exit_code=code if code >= 0 else None,
            exit_signal=-code if code < 0 else None,
            utime=usage.ru_utime,
            stime=usage.ru_stime,
            maxrss_kb=usage.ru_maxrss,
        )
        if run.pre_marker and self._pre_exec_failed(run):
            run.status.update(
                reason="pre_exec", message=f"the pre-execution command (-E) exited {code}"
            )
        try:  # what the job left behind dies with it
            os.killpg(run.pid, signal.SIGKILL)
        except OSError:
            pass
        self._finish(run)

    def _pre_exec_failed(self, run: Run) -> bool:
        """Whether the wrapper left its mark (removed here, as the user: the TMPDIR may serve
        the user's next job)."""
        try:
            with self._as(run.account):
                os.unlink(cast(str, run.pre_marker))
            return True
        except OSError:
            return False

    def _finish(self, run):
        status = run.status
        vacant = kept = False  # vacant: nothing of the job is left to write in its TMPDIR
        if run.group is not None:
            if run.group.oom_count() > run.ooms:
                status.update(
                    reason="oom",
                    message="killed by the out-of-memory killer: the "
                    "job exceeded its memory limit (-M)",
                )
            _measure(run.status, run.group)
            vacant = self.cg.empty(run.group)
            kept = self._retire(run.group, vacant)
        else:
            _measure(run.status, None)
        if run.renames:
            try:
                with self._as(run.account):
                    self._deliver_all(run)
            except OSError as exc:  # the user's ids refused
                run.notes.append(
                    f"cannot act as {run.account.name} to move the output: "
                    f"{exc.strerror}; it is in "
                    f"{', '.join(temp for temp, _, _ in run.renames)}"
                )
        for fd, _ in run.opened:
            os.close(fd)
        if run.tmpdir and not (
            vacant and self.scratch.keep(run.tmpdir, run.account.uid, time.monotonic())
        ):
            self._trash("path", run.tmpdir)
        status["end"] = time.time()
        if run.notes:
            status["message"] = "; ".join(
                run.notes + ([status["message"]] if "message" in status else [])
            )
        record.append(run.record, status=status)
        answer = {
            "v": P.VERSION,
            "op": "ended",
            "job": run.job,
            "attempt": run.attempt,
            "status": status,
        }
        if kept:  # sbatchd may name it in a later order
            answer["kept"] = run.group.name
        self._send(answer)
        os.close(run.record)  # last: the status is written before the lock says "ended"
        self.runs -= 1

    def _deliver_all(self, run):
        """Each output to its file: renamed over it, or with -o/-e appended to it, by the
        attempt that ends the job only (a retried one's is dropped: one complete attempt,
        never a mix), with LSF's job report around the output when the job asked for it."""
        head = tail = b""
        ends = True
        if run.appending is not None:
            path, attempts, facts, spec = run.appending
            ends = jobfiles.ends_job(run.status, run.attempt, attempts, path, spec)
            if facts is not None:
                head, tail = jobfiles.report(facts, {**run.status, "end": time.time()})
        for i, (temp, final, appended) in enumerate(run.renames):
            if appended and not ends:
                os.unlink(temp)
                continue
            report = (head, tail) if i == 0 else (b"", b"")
            note = _write_out(temp, final, appended, *report)
            if note is not None:
                run.notes.append(note)

    def _group(self, name, limits):
        """The attempt's cgroup: the one kept under that name (v1), else a new one."""
        kept = self.kept_groups.pop(name, None)
        if self.retuned and name in self.retuned:  # its limit is no longer what we wrote
            memory = self.retuned.pop(name)
            if kept is not None:
                kept.limits.memory = memory
        if kept is not None:
            try:
                return self.cg.reuse(kept, limits)
            except OSError as exc:  # a limit its charges refuse: a fresh group instead
                log.warning("cgroup %s not reused: %s", name, exc)
                kept.close()
                if not kept.remove():  # empty: gone at once
                    raise
        return self.cg.create(name, limits).keep()

    def _retire(self, group, vacant):
        """Keep an ended attempt's group for a later one if the backend can (v1) and it is
        clean (vacant: it has no task left); else the cleaner removes it. Whether it is kept."""
        if vacant and self.cg.pooled and self.cg.reusable(group):
            self.kept_groups[group.name] = group
            return True
        group.close()
        self._trash("cgroup", group.name)
        return False

    def _trash(self, kind, what):
        """For the cleaner, told once per turn (`serve`). Never waits for it: a backlog waits
        here (a slow disk must not slow the starts)."""
        self.trash += f"{kind} {what}\n".encode()

    def _feed_cleaner(self, _events=None):
        try:
            del self.trash[: os.write(self.cleaner, self.trash)]
        except BlockingIOError:
            pass
        waiting = self.cleaner in self.sel.get_map()
        if self.trash and not waiting:
            self.sel.register(self.cleaner, selectors.EVENT_WRITE, self._feed_cleaner)
        elif waiting and not self.trash:
            self.sel.unregister(self.cleaner)


def _start_cleaner(cg, link):
    """Fork the cleaner: a process that removes what it is told, off the shepherd's loop (on a
    slow disk, or with a cgroup's last tasks exiting, a removal takes milliseconds). Not a
    thread: the shepherd takes the user's identity for file operations, and a thread would
    share it. Returns (pid, the write end of its pipe); it exits at the pipe's end."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(rfd)
        os.set_blocking(wfd, False)
        return pid, wfd
    try:
        link.close()  # sbatchd must see the link end when the shepherd does
        os.close(wfd)
        with os.fdopen(rfd) as f:
            for line in f:
                kind, _, what = line.rstrip("\n").partition(" ")
                try:
                    if kind == "path":
                        _remove(what)
                    elif kind == "file":
                        record.remove(what)
                    elif not cg.group(what).remove(wait=REMOVE_FOR):
                        log.warning(
                            "cgroup %s still busy after %g s; the next sbatchd removes it",
                            what,
                            REMOVE_FOR,
                        )
                except OSError as exc:  # one that cannot go must not stop the others
                    log.warning("cannot remove %s %s: %s", kind, what, exc)
    finally:
        os._exit(0)


def _measure(status: dict[str, Any], group: "cgroups.Group | None") -> None:
    """The attempt's `cpu_time` (seconds) and `max_mem` (bytes) into its end status: its
    cgroup's counters, which count every process of it, else the rusage wait4 gave of the
    job's first process and the children it waited for."""
    cpu, peak = group.usage() if group is not None else (None, None)
    if cpu is None and "utime" in status:
        cpu = status["utime"] + status["stime"]
    if peak is None and "maxrss_kb" in status:
        peak = status["maxrss_kb"] * 1024
    if cpu is not None:
        status["cpu_time"] = round(cpu, 6)
    if peak is not None:
        status["max_mem"] = peak


def _remove(path):
    """Most TMPDIRs are left empty: rmdir (never follows a symlink) costs a third of rmtree's
    safe walk, which takes the rest (it never follows a symlink either)."""
    try:
        os.rmdir(path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def _unmoved(sig, frame):
    pass


def main(argv: list[str]) -> int:
    """`lavalite --role sbatchd --shepherd FD CGROUPS SLICE LOG`: started by sbatchd only; FD is
    its end of the link, CGROUPS the backend sbatchd chose (v1, v2, none), LOG where sbatchd
    logs (JSON, lavalite.log.helper_spec: its file, syslog or stderr; warnings and errors)."""
    fd, kind, slice_name = int(argv[0]), argv[1], argv[2]
    log_setup.setup_helper("shepherd", json.loads(argv[3]) if len(argv) > 3 else {})
    P.use_orjson()  # a daemon: it decodes orders and encodes answers all day
    os.chdir("/")  # it outlives sbatchd: pin no directory (see spawn)
    os.set_inheritable(fd, False)  # sbatchd passed it inheritable; no job may hold it
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    for sig in (signal.SIGINT, signal.SIGHUP):  # sbatchd's terminal or reload: not ours
        signal.signal(sig, _unmoved)  # a handler, not SIG_IGN, which jobs would inherit
    cg = cgroups.NoCgroups() if kind == "none" else cgroups.choose(kind, slice_name)
    cleaner, trash = _start_cleaner(cg, sock)
    failed = []

    def loop():
        try:
            Shepherd(sock, cg, trash).serve()
        except BaseException as exc:
            failed.append(exc)
            with contextlib.suppress(OSError):
                os.close(trash)  # the cleaner ends, so this process does: sbatchd sees
            raise  # the link close and checks its attempts by their locks

    thread = threading.Thread(target=loop, name="shepherd")
    thread.start()
    thread.join()  # this first thread, the memory's owner, never moves
    os.waitpid(cleaner, 0)
    return 70 if failed else 0


def account_for(spec: dict, allow_root: bool) -> tuple[Account, pwd.struct_passwd]:
    """Whom to run the job as: the submitting user, by name, checked against the uid the
    submission was signed for. ValueError says why the job cannot run here."""
    user, uid = spec.get("user"), spec.get("uid")
    try:
        pw = _nss_cached(pwd.getpwnam, user)
    except (KeyError, TypeError):
        raise ValueError(f"user {user!r} does not exist on this host") from None
    user = cast(str, user)  # getpwnam took it
    if pw.pw_uid != uid:
        raise ValueError(f"user {user} has uid {pw.pw_uid} on this host but submitted as uid {uid}")
    if os.geteuid() != 0:
        if uid != os.geteuid():
            raise ValueError(
                f"sbatchd runs as uid {os.geteuid()}, not root: it cannot run jobs of {user}"
            )
        return Account(user, uid, pw.pw_gid, False), pw
    if uid == 0 and not allow_root:
        raise ValueError("root jobs are not allowed (allow_root_jobs = no in lavalite.conf)")
    return Account(user, uid, pw.pw_gid, uid != 0), pw
