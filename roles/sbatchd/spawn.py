"""How a shepherd starts a job: posix_spawn (no copy of the shepherd's memory), inside the
job's cgroup from its first instruction, with the ids of the calling thread
(roles/sbatchd/ids.py: a thread can hold another user's).

Getting into the group without the job running a line of ours first:
- v1 moves single threads (`tasks`), and a child starts in its parent thread's groups (and
  with its ids): the shepherd's loop thread steps into the attempt's groups, calls `spawn`
  and steps out (roles/sbatchd/shepherd.py). The process's first thread, which owns its
  memory, never moves.
- cgroup2 moves whole processes (and Python has no clone3 for CLONE_INTO_CGROUP): /bin/sh
  runs `PRELUDE` first, builtins only, joining the group, then execs the job. An exec more
  (about 0.6 ms of CPU here), which is why v1 does not take this way (but for --pids 1:
  the loop thread would count as the group's one task and the job's spawn be refused).
  Root's prelude can join; a job of another user in such a group is the shepherd's fork.
"""

import errno
import os
import shutil
import signal

from roles.sbatchd.cgroups import Group

# The job's first moments under cgroup2: it joins the group (writing 0 moves the writer), enters
# its directory (else TMPDIR, as the fork path) and becomes the job. Failing to join ends it
# with 126 and a line on the job's stderr, as a shell reports what it cannot run.
PRELUDE = """cwd=$1; shift
while [ "$1" != -- ]; do
  echo 0 > "$1" || { echo "lavalite: cannot join cgroup $1" >&2; exit 126; }; shift
done
shift
cd "$cwd" 2>/dev/null || cd "$TMPDIR" || exit 126
exec "$@"
"""


# What the shepherd ignores or handles must not stay so in a job (Python ignores SIGPIPE and
# SIGXFSZ; an ignored signal stays ignored across exec).
RESET = (
    signal.SIGPIPE,
    signal.SIGXFSZ,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGCHLD,
)
_null: list[int] = []  # /dev/null, opened once: the stdin of every job without -i
_UMASK = os.umask(0o022)  # the shepherd's own, read once (reading it means setting it)
os.umask(_UMASK)


def spawn(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    opened: list[tuple[int, list[int]]],
    prelude: Group | None = None,
    umask: int | None = None,
) -> int:
    """Start the job with the calling thread's ids; its pid. posix_spawn (glibc: a clone that
    shares the shepherd's memory until the exec, as vfork) costs half of subprocess.Popen's
    Python here (0.10 against 0.22 ms with a 50-variable environment). It cannot change the
    child's directory, so the shepherd's changes for the moment of the spawn (nothing else in
    it uses a relative path); a directory the user cannot enter or that is gone here: the
    job's TMPDIR, as LSF.
    prelude: a group to join through PRELUDE (cgroup2, or v1 --pids 1).
    opened: the job's descriptors 1 and 2, and 0 if it reads a file (else /dev/null).
    umask: the submitter's, the process's own for the moment of the spawn (posix_spawn has
    none of its own); the shepherd's other thread creates no file meanwhile."""
    if umask is not None and umask != _UMASK:
        os.umask(umask)
        try:
            return spawn(argv, env, cwd, opened, prelude)
        finally:
            os.umask(_UMASK)
    out = {n: fd for fd, fds in opened for n in fds}
    if not _null:
        _null.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    actions = [
        (os.POSIX_SPAWN_DUP2, out.get(0, _null[0]), 0),
        (os.POSIX_SPAWN_DUP2, out[1], 1),
        (os.POSIX_SPAWN_DUP2, out[2], 2),
    ]  # every other descriptor is close-on-exec
    if prelude is not None:
        os.chdir("/")
        procs = [os.path.join(d, "cgroup.procs") for d in prelude.dirs.values()]
        return _spawn(
            ["/bin/sh", "-c", PRELUDE, "lavalite-job", cwd, *procs, "--", *argv], env, actions
        )
    enter_cwd(cwd, env)
    try:
        path = command_path(argv[0], env)
        if path is None:
            raise FileNotFoundError(errno.ENOENT, "command not found", argv[0])
        try:
            return _spawn(argv, env, actions, path)
        except OSError as exc:
            if exc.errno != errno.ENOEXEC:
                raise
            return _spawn(["/bin/sh", path, *argv[1:]], env, actions)  # no #!: sh, as execvp
    finally:  # out again: a shepherd working there would pin the user's
        os.chdir("/")  # directory (an unmount, an NFS home's automount expiry)


def enter_cwd(cwd: str, env: dict[str, str]) -> None:
    """The job's directory, else its TMPDIR: gone or not the user's on this host (LSF's way)."""
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir(env["TMPDIR"])


def command_path(name: str, env: dict[str, str]) -> str | None:
    """Where exec finds `name`: as given if it has a slash, else in the job's PATH (None)."""
    return name if "/" in name else shutil.which(name, path=env.get("PATH", os.defpath))


def _spawn(argv, env, actions, path=None):
    return os.posix_spawn(
        path or argv[0],
        argv,
        env,
        file_actions=actions,
        setpgroup=0,
        setsigdef=RESET,
        setsigmask=(),
    )
