"""Private state: what the daemons and `lavalite up` write (the job store with every job's
command and environment, attempt records, journals, logs, keys, pid files) is readable by
their own user only: files 0600, directories 0700, whatever umask they were started with.
A daemon running with the `lavalite` group (the installed units) shares with that group:
0640 and 0750. Users read their jobs through the commands, never through these files.

Two directories stay traversable (x, never r) by everyone: spool_dir, where every local user
asks LIM for a credential on lim.sock, and state_dir, where `lavalite up` keeps the
configuration that every user's commands read.

The jobs are not the daemons' files: they, and their output files, run with the umask the
daemon was started with (`inherited`), never with its private one.
"""

import functools
import grp
import logging
import os
import stat
from collections.abc import Iterable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lavalite.config import Config

GROUP = "lavalite"
SHOWN = 5  # paths a tightening line names; the rest are counted
_inherited: list[int] = []  # the umask this process was started with, once enter() ran


@functools.cache
def umask() -> int:
    """0o027 under the lavalite group (its members, the admins, read the logs), else 0o077."""
    try:
        shared = os.getegid() == grp.getgrnam(GROUP).gr_gid
    except KeyError:
        shared = False
    return 0o027 if shared else 0o077


def enter() -> None:
    """From now on this process creates its files private; the umask it had is kept for the
    jobs (`inherited`). A second call changes nothing."""
    if not _inherited:
        _inherited.append(os.umask(umask()))


def inherited() -> int:
    """The umask the process was started with, for subprocess.Popen(umask=...) of what must
    run with it (the jobs' shepherds, the daemons `up` starts); -1 (Popen: unchanged) before
    enter()."""
    return _inherited[0] if _inherited else -1


def file_mode() -> int:
    """The mode of a new private file, for the few opened with an explicit one."""
    return 0o666 & ~umask()


def make_dir(path: str, traversable: bool = False) -> None:
    """os.makedirs; a `traversable` directory this call creates gets x for everyone (never r):
    users reach a path inside it that they know, and cannot list it."""
    if traversable and not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, (0o777 & ~umask()) | 0o111)
    else:
        os.makedirs(path, exist_ok=True)


def _tightened(mode: int, directory: bool, traversable: bool) -> int:
    """`mode` without the bits the private umask takes (a traversable directory keeps its x)."""
    takes = umask() & ~0o111 if directory and traversable else umask()
    return mode & ~takes


def tighten(targets: Iterable[tuple[str, bool]]) -> list[str]:
    """chmod each (path, traversable) that exists, is this user's (another's is left to its
    daemon) and is looser than private; the paths changed."""
    changed = []
    uid = os.geteuid()
    for path, traversable in targets:
        try:
            st = os.lstat(path)
            if st.st_uid != uid or stat.S_ISLNK(st.st_mode):
                continue
            mode = stat.S_IMODE(st.st_mode)
            new = _tightened(mode, stat.S_ISDIR(st.st_mode), traversable)
            if new != mode:
                os.chmod(path, new)
                changed.append(path)
        except OSError:  # gone meanwhile (a record cleaned): nothing to protect
            continue
    return changed


def _entries(directory: str, keep: Iterable[str] = ()) -> list[tuple[str, bool]]:
    """What is in `directory` (one level), but the names in `keep`."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [(os.path.join(directory, n), False) for n in names if n not in keep]


def state_targets(conf: "Config") -> list[tuple[str, bool]]:
    """What a daemon's start looks at: the directories of conf.paths and sbatchd's work_dir,
    everything in the spool, log and records directories (they are LavaLite's alone), and in
    state_dir the files LavaLite writes there (the configuration stays readable: users need
    it; jobs may write their output there under `up`)."""
    paths, db = conf.paths, conf.mbatchd.database
    state = [
        os.path.join(paths.state_dir, n)
        for n in ("up.pid", "mbatchd.pid", "master.epoch", "metrics.urls")
    ]
    return (
        [
            (paths.state_dir, True),
            (paths.spool_dir, True),
            (paths.log_dir, False),
            (paths.run_dir, False),
            (conf.sbatchd.work_dir, False),
        ]
        + [(p, False) for p in (db, f"{db}-wal", f"{db}-shm", *state)]
        + _entries(paths.spool_dir, keep=("lim.sock",))
        + _entries(paths.log_dir)
        + _entries(conf.sbatchd.work_dir)
    )


def tighten_state(conf: "Config", log: logging.Logger) -> None:
    """Tighten what an earlier run, another umask or a hand left looser than private, and say
    so in one line."""
    changed = tighten(state_targets(conf))
    if changed:
        more = f" and {len(changed) - SHOWN} more" if len(changed) > SHOWN else ""
        log.warning(
            "made %d files and directories private (other users could read them): %s%s",
            len(changed),
            ", ".join(changed[:SHOWN]),
            more,
        )
