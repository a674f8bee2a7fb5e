"""How a shepherd starts a job: vfork+exec through the standard library (no copy of the
shepherd's memory), inside the job's cgroup from its first instruction, with the ids of the
calling thread (roles/sbatchd/ids.py: a thread can hold another user's).

Getting into the group without the job running a line of ours first:
- v1 moves single threads (`tasks`), and a child starts in its parent thread's groups (and
  with its ids): the shepherd's loop thread steps into the attempt's groups, calls `spawn`
  and steps out (roles/sbatchd/shepherd.py). The process's first thread, which owns its
  memory, never moves.
- cgroup2 moves whole processes (and Python has no clone3 for CLONE_INTO_CGROUP): /bin/sh
  runs `PRELUDE` first, builtins only, joining the group, then execs the job. An exec more
  (about 0.6 ms of CPU here), which is why v1 does not take this way (but for --pids 1:
  the loop thread would count as the group's one task and the job's vfork be refused).
  Root's prelude can join; a job of another user in such a group is the shepherd's fork.
"""
import errno
import os
import shutil
import subprocess

# The job's first moments under cgroup2: it joins the group (writing 0 moves the writer), enters
# its directory (else TMPDIR, as the fork path) and becomes the job. Failing to join ends it
# with 126 and a line on the job's stderr, as a shell reports what it cannot run.
PRELUDE = """cwd=$1; shift
while [ "$1" != -- ]; do echo 0 > "$1" || { echo "lavalite: cannot join cgroup $1" >&2; exit 126; }; shift; done
shift
cd "$cwd" 2>/dev/null || cd "$TMPDIR" || exit 126
exec "$@"
"""


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
