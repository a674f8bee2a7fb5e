"""How a shepherd starts a job: vfork+exec through the standard library (no copy of the
shepherd's memory), inside the job's cgroup from its first instruction, with the ids of the
calling thread (roles/sbatchd/ids.py: a thread can hold another user's).

Getting into the group without the job running a line of ours first:
- v1 moves single threads (`tasks`), and a child starts in its parent thread's groups (and
  with its ids: a job of another user is forked while the thread holds that user's ids): a
  `Spawner` thread enters the attempt's groups and vforks the job. Its process's main
  thread, which owns the memory, never moves, and the spawner has left the group before the
  job's pid is written, so sbatchd, which signals a group only once it knows the pid, never
  counts the shepherd among a job's tasks.
- cgroup2 moves whole processes (and Python has no clone3 for CLONE_INTO_CGROUP): /bin/sh
  runs `PRELUDE` first, builtins only, joining the group, then execs the job. An exec more
  (about 0.6 ms of CPU here), which is why v1 does not take this way (but for --pids 1:
  the spawner thread would count as the group's one task and the job's fork be refused).
  Root's prelude can join; a job of another user in such a group is the shepherd's fork.
"""
import errno
import logging
import os
import queue
import shutil
import subprocess
import threading
from collections import deque

log = logging.getLogger("lavalite.shepherd")

# The job's first moments under cgroup2: it joins the group (writing 0 moves the writer), enters
# its directory (else TMPDIR, as the fork path) and becomes the job. Failing to join ends it
# with 126 and a line on the job's stderr, as a shell reports what it cannot run.
PRELUDE = """cwd=$1; shift
while [ "$1" != -- ]; do echo 0 > "$1" || { echo "lavalite: cannot join cgroup $1" >&2; exit 126; }; shift; done
shift
cd "$cwd" 2>/dev/null || cd "$TMPDIR" || exit 126
exec "$@"
"""


IDLE = 2.0                 # seconds without orders before the spawner thread ends


class Spawner:
    """A thread that forks jobs from inside their v1 groups, beside the shepherd's loop (a
    cgroup move can wait for the kernel's RCU; the loop must not). Under a burst it moves from
    one job's group straight into the next one's, and home when it runs out of orders. A
    result is handed over (`results`, the loop watches `wakeup`) only once the thread has left
    that job's groups. It holds `quiet` while it works: without per-thread ids the loop takes
    it before it switches the process's effective ids for a user's files (glibc's setuid
    calls apply to every thread). The thread exists only while there is work (started by
    `submit`, gone after IDLE seconds): each glibc setuid call signals every other thread."""

    def __init__(self, cg):
        self.home = cg.home(threading.get_native_id())   # where every new thread starts
        self.orders, self.done = queue.SimpleQueue(), deque()
        self.wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.quiet = threading.Lock()
        self.guard = threading.Lock()  # a thread ending vs an order arriving
        self.running = False

    def submit(self, tag, group, start):
        """start() inside group; (tag, True, its value) or (tag, False, its exception) comes
        back from `results`."""
        with self.guard:
            self.orders.put((tag, group, start))
            if not self.running:
                self.running = True
                threading.Thread(target=self._serve, name="spawner", daemon=True).start()

    def results(self):
        try:
            os.eventfd_read(self.wakeup)
        except BlockingIOError:
            pass
        while self.done:
            yield self.done.popleft()

    def _serve(self):
        pending = []                   # results whose group the thread may still be in
        while True:
            try:
                tag, group, start = (self.orders.get_nowait() if pending
                                     else self.orders.get(timeout=IDLE))
            except queue.Empty:
                if pending:
                    with self.quiet:
                        self._go()
                    self._hand(pending)
                    continue
                with self.guard:
                    if self.orders.empty():
                        self.running = False
                        return
                continue
            with self.quiet:
                try:
                    group.enter()
                except OSError as exc:
                    self._go()      # a half move: some hierarchies may have taken it
                    pending.append((tag, False, exc))
                    self._hand(pending)
                    continue
                self._hand(pending)
                try:
                    pending.append((tag, True, start()))
                except Exception as exc:   # whatever it is, the loop must hear it
                    pending.append((tag, False, exc))

    def _hand(self, pending):
        if pending:
            self.done.extend(pending)
            pending.clear()
            os.eventfd_write(self.wakeup, 1)

    def _go(self):
        """Home, or the shepherd must end: a thread left in a job's group would be frozen and
        killed with it (sbatchd sees the link close and reports the attempts lost)."""
        try:
            self.home.enter()
        except OSError as exc:
            log.critical("cannot move the spawner thread back to its groups: %s", exc)
            os._exit(70)


_null = []                 # /dev/null, opened once: every job's stdin


def spawn(argv, env, cwd, opened, prelude=None):
    """The job's Popen, with the calling thread's ids. prelude: a group to join through
    PRELUDE (cgroup2, or v1 --pids 1)."""
    out = {n: fd for fd, fds in opened for n in fds}
    if not _null:
        _null.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))

    def popen(args, cwd):
        return subprocess.Popen(args, env=env, cwd=cwd, stdin=_null[0], stdout=out[1],
                                stderr=out[2], process_group=0, restore_signals=True)
    if prelude is not None:
        procs = [os.path.join(d, "cgroup.procs") for d in prelude.dirs.values()]
        return popen(["/bin/sh", "-c", PRELUDE, "lavalite-job", cwd, *procs, "--", *argv], "/")
    try:
        return popen(argv, cwd)
    except OSError as exc:
        if exc.filename == cwd != env["TMPDIR"]:   # gone here: LSF runs it in a temp dir
            return spawn(argv, env, env["TMPDIR"], opened)
        if exc.errno == errno.ENOEXEC:     # a script without #!: sh runs it, as execvp does
            return popen(["/bin/sh", _script_path(argv[0], env), *argv[1:]], cwd)
        raise


def _script_path(name, env):
    return name if "/" in name else shutil.which(name, path=env.get("PATH", os.defpath)) or name
