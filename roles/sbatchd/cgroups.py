"""Job confinement in cgroups: memory, pids and CPU limits, a kill nothing escapes, OOM detection.

One backend is chosen when sbatchd starts (sbatchd.conf `cgroups`):
- V2: `<mount>/<slice>/<name>/` (sbatchd names groups after shepherds) with memory.max
  (+ memory.swap.max = 0), pids.max, cpu.max; kill through cgroup.kill; OOM from
  memory.events (oom_kill).
- V1: one directory per controller (memory, pids, cpu, freezer), same names below `<slice>`;
  memory.limit_in_bytes (+ memory.memsw.limit_in_bytes where present), pids.max,
  cpu.cfs_quota_us; kill = freeze, SIGKILL every task, thaw (a frozen task cannot fork, so a
  fork bomb cannot outrun it); OOM from memory.oom_control (oom_kill) or memory.failcnt.
- None: no confinement; jobs are killed by process group only.

Every path is relative to a root given to the constructor, so the tests drive the file logic
over a fake cgroupfs directory. The job starts inside its group, so nothing it runs is ever
outside it: it joins itself between fork and exec (`Group.join`), or, in v1, which moves
single threads, it is forked by a shepherd thread that has entered the group for that
moment (`Group.enter`, `V1.home`); the shepherd's main thread stays outside.
"""

import errno
import logging
import os
import signal
import time

log = logging.getLogger("lavalite.sbatchd")

V1_CONTROLLERS = ("memory", "pids", "cpu", "freezer")
V2_CONTROLLERS = ("memory", "pids", "cpu")
_MOUNTS = "/proc/self/mounts"


def _write(path, value, create=True):
    """A knob, through os.open (a buffered open() costs four more system calls). create=False:
    only a file that exists (a kernel's, as cgroup.kill, whose absence means an older kernel)."""
    fd = os.open(
        path, os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT | os.O_TRUNC if create else 0), 0o644
    )
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _read(path):
    """The file's text, or "" if it cannot be read (a group gone meanwhile, say)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    except OSError:
        return ""
    finally:
        os.close(fd)


class CgroupError(Exception):
    """cgroups are required (cgroups = on|v1|v2) but cannot be used; the message says why."""


class Limits:
    """What a job may use: memory in bytes, tasks, CPUs (= its slots). None = unlimited."""

    __slots__ = ("memory", "pids", "cpus")

    def __init__(
        self, memory: int | None = None, pids: int | None = None, cpus: int | None = None
    ) -> None:
        self.memory, self.pids, self.cpus = memory, pids, cpus


def _keyed(text):
    """'name value' lines (memory.events, memory.oom_control) -> {name: int}."""
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def _rmdir(path):
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


class Group:
    """One job attempt's cgroup: the directories it spans (one per v1 controller, one in v2)."""

    def __init__(
        self, backend: "_Hierarchy", name: str, dirs: dict[str, str] | None = None
    ) -> None:
        self.backend = backend
        self.name = name
        self.dirs = dirs or backend.dirs(name)
        self.limits = Limits()  # as written by create/reuse
        # {(dir key, file): descriptor} once `keep` is called
        self.fds: dict[tuple[str, str], int] | None = None
        self.ooms: int | None = None  # its OOM kill count when last read (None: not yet)

    def keep(self) -> "Group":
        """Hold the files used per job open from now on (the shepherd's pooled v1 groups and
        its spawner's home): a descriptor outlives a rename, and a write to it skips the path
        walk and the open (a thread's way in and out of four hierarchies: 0.18 -> 0.06 ms)."""
        if self.fds is None:
            self.fds = {}
        return self

    def close(self) -> None:
        for fd in (self.fds or {}).values():
            os.close(fd)
        self.fds = None

    def _fd(self, fds: dict[tuple[str, str], int], key: str, name: str, flags: int) -> int:
        """The kept descriptor of a file (`fds`: self.fds once kept), opened on first use."""
        fd = fds.get((key, name))
        if fd is None:
            fd = fds[key, name] = os.open(os.path.join(self.dirs[key], name), flags | os.O_CLOEXEC)
        return fd

    def knob(self, key: str, name: str) -> str:
        """A counter file's text ("" if it cannot be read), through the kept descriptor if any.
        Not for cgroup.procs or tasks: v1 keeps their list per open file for a second."""
        fds = self.fds
        if fds is None:
            return _read(os.path.join(self.dirs[key], name))
        try:
            return os.pread(self._fd(fds, key, name, os.O_RDONLY), 65536, 0).decode()
        except OSError:
            return ""

    def join(self) -> None:
        """Move the calling process in: run by the job's process before it execs."""
        for d in self.dirs.values():
            _write(os.path.join(d, "cgroup.procs"), os.getpid())

    def enter(self) -> None:
        """Move the calling thread in (v1 only: cgroup2 moves whole processes). "0" names the
        writer, and moving oneself takes no lock on the whole thread group."""
        fds = self.fds
        for key, d in self.dirs.items():
            if fds is None:
                _write(os.path.join(d, "tasks"), 0, create=False)
            else:
                os.write(self._fd(fds, key, "tasks", os.O_WRONLY), b"0")

    def pids(self) -> list[int]:
        """Tasks in the group: the union over its directories (the same tasks in each, except
        in a group half made or half removed by a crash)."""
        return sorted(
            {
                int(p)
                for d in self.dirs.values()
                for p in _read(os.path.join(d, "cgroup.procs")).split()
            }
        )

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self.dirs.values())

    def signal(self, sig: int) -> int:
        """Send sig to every task; returns how many received it."""
        sent = 0
        for pid in self.pids():
            try:
                os.kill(pid, sig)
                sent += 1
            except ProcessLookupError:
                pass
        return sent

    def kill(self) -> None:
        self.backend.kill(self)

    def freeze(self, frozen: bool) -> bool:
        """Freeze (bstop) or thaw (bresume) every task of the group; False where the group
        has no freezer (the caller stops its processes by signal instead)."""
        return self.backend.freeze(self, frozen)

    def oom_count(self) -> int:
        """OOM kills in the group so far (a reused group: compare with the count at reuse)."""
        self.ooms = self.backend.oom_count(self)
        return self.ooms

    def usage(self) -> tuple[float | None, int | None]:
        """(CPU seconds, peak memory bytes) its tasks used, each None where the kernel keeps
        no such counter."""
        return self.backend.usage(self)

    def remove(self, wait: float = 0.0) -> bool:
        """Kill what is left and remove the directories; a group whose tasks are still exiting
        is retried for up to `wait` seconds. Returns whether it is gone."""
        deadline = time.monotonic() + wait
        while True:
            if self.pids():  # the usual end: empty already, nothing to freeze
                self.kill()
            try:
                for d in self.dirs.values():
                    _rmdir(d)
                return True
            except OSError as exc:
                if time.monotonic() >= deadline:
                    log.debug("cgroup %s not removed yet: %s", self.name, exc)
                    return False
                time.sleep(0.01)


class _Hierarchy:
    name: str  # "v1" or "v2"

    def group(self, name: str, slice_name: str | None = None) -> Group:
        """The group of an attempt that may exist already (adoption, stale clean-up), under
        this backend's slice or the one an attempt's record names."""
        return Group(self, name, self.dirs(name, slice_name))

    def dirs(self, name: str, slice_name: str | None = None) -> dict[str, str]:
        """The group's directory per controller (each backend has its own layout)."""
        raise NotImplementedError

    def kill(self, group: Group) -> None:
        """Kill every task of the group (each backend has its own way)."""
        raise NotImplementedError

    def oom_count(self, group: Group) -> int:
        """OOM kills in the group so far (each backend counts its own way)."""
        raise NotImplementedError

    def freeze(self, group: Group, frozen: bool) -> bool:
        """Group.freeze: each backend has its own file."""
        raise NotImplementedError

    def usage(self, group: Group) -> tuple[float | None, int | None]:
        """(CPU seconds, peak memory bytes) of the group (each backend counts its own way)."""
        raise NotImplementedError

    def set_memory(self, group: Group, memory: int | None) -> None:
        """A running job's new memory limit (bmod -M; None: unlimited)."""
        raise NotImplementedError


def _number(text: str) -> int | None:
    """A counter file's integer, None if the file was missing or unreadable."""
    text = text.strip()
    return int(text) if text.isdigit() else None


class V2(_Hierarchy):
    name = "v2"
    pooled = False  # one hierarchy: its mkdir and rmdir cost little
    threads = False  # a domain cgroup2 group takes whole processes only

    def __init__(self, mount: str, slice_name: str) -> None:
        self.mount = mount
        self.base = os.path.join(mount, slice_name)
        self.controllers: set[str] = set()

    def setup(self) -> list[str]:
        """Create the slice and enable what the kernel offers for its children."""
        os.makedirs(self.base, exist_ok=True)
        rel = os.path.relpath(self.base, self.mount).split(os.sep)
        for depth in range(len(rel)):  # enable +ctrl at every level above the jobs
            parent = os.path.join(self.mount, *rel[:depth])
            offered = set(_read(os.path.join(parent, "cgroup.controllers")).split())
            for ctrl in (c for c in V2_CONTROLLERS if c in offered):
                try:
                    _write(os.path.join(parent, "cgroup.subtree_control"), f"+{ctrl}")
                except OSError as exc:
                    log.warning("cgroup v2: cannot enable %s in %s: %s", ctrl, parent, exc)
        self.controllers = set(_read(os.path.join(self.base, "cgroup.controllers")).split())
        return [c for c in V2_CONTROLLERS if c not in self.controllers]

    def dirs(self, name: str, slice_name: str | None = None) -> dict[str, str]:
        return {
            "": os.path.join(self.mount, slice_name, name)
            if slice_name
            else os.path.join(self.base, name)
        }

    def create(self, name: str, limits: Limits) -> Group:
        group = Group(self, name)
        d = group.dirs[""]
        os.makedirs(d, exist_ok=True)
        if limits.memory and "memory" in self.controllers:
            _write(os.path.join(d, "memory.max"), limits.memory)
            if os.path.exists(os.path.join(d, "memory.swap.max")):
                _write(os.path.join(d, "memory.swap.max"), 0)
        if limits.pids and "pids" in self.controllers:
            _write(os.path.join(d, "pids.max"), limits.pids)
        if limits.cpus and "cpu" in self.controllers:
            _write(os.path.join(d, "cpu.max"), f"{limits.cpus * 100000} 100000")
        return group

    def set_memory(self, group: Group, memory: int | None) -> None:
        if "memory" in self.controllers:
            _write(os.path.join(group.dirs[""], "memory.max"), memory or "max")
        group.limits.memory = memory

    def kill(self, group: Group) -> None:
        d = group.dirs[""]
        try:
            _write(os.path.join(d, "cgroup.kill"), 1, create=False)
        except FileNotFoundError:
            if os.path.isdir(d):  # a kernel before 5.14: no cgroup.kill
                group.signal(signal.SIGKILL)

    def oom_count(self, group: Group) -> int:
        return _keyed(group.knob("", "memory.events")).get("oom_kill", 0)

    def freeze(self, group: Group, frozen: bool) -> bool:
        """cgroup.freeze (kernel 5.2 on): a frozen task still dies of cgroup.kill and SIGKILL."""
        return _set_freezer(os.path.join(group.dirs[""], "cgroup.freeze"), "1" if frozen else "0")

    def empty(self, group: Group) -> bool:
        return _keyed(group.knob("", "cgroup.events")).get("populated") == 0

    def usage(self, group: Group) -> tuple[float | None, int | None]:
        usec = _keyed(group.knob("", "cpu.stat")).get("usage_usec")
        peak = _number(group.knob("", "memory.peak"))  # kernel >= 5.19
        return (usec / 1e6 if usec is not None else None), peak

    def names(self) -> list[str]:
        return _subdirs(self.base)

    def remove_slice(self) -> None:
        _try_rmdir(self.base)


# v1's counter of what an attempt used at its peak: memory bytes (CPU: V1.counters)
_PEAK = ("memory", "memory.max_usage_in_bytes")


class V1(_Hierarchy):
    """An ended attempt's group, empty and holding little memory, is kept by its shepherd for
    its next attempt (`reuse`), saving the mkdir and rmdir in four hierarchies that cost about
    1 ms per job here. Group names are the shepherd's, not the job's (sbatchd's ShepherdLink
    names them): renames to the job's name, eight per job, were 13% of a shepherd's CPU."""

    name = "v1"
    pooled = True
    threads = True
    KEEP_BELOW = 8 << 20  # memory still charged to a group that may be reused (bytes)

    def __init__(self, mounts: dict[str, str], slice_name: str) -> None:
        """mounts: {controller: its mount point}."""
        self.mounts = mounts
        self.controllers = set(mounts)
        self.slices = {c: os.path.join(m, slice_name) for c, m in mounts.items()}
        # CPU nanoseconds: cpuacct.usage, in the cpu groups where cpuacct is mounted with cpu
        # (cpu,cpuacct, as systemd mounts them); a cpuacct hierarchy of its own is not one the
        # groups span, so CPU comes from rusage there
        cpu = next(
            (
                c
                for c in ("cpuacct", "cpu")
                if c in mounts and os.path.exists(os.path.join(mounts[c], "cpuacct.usage"))
            ),
            None,
        )
        self.counters = ([(cpu, "cpuacct.usage")] if cpu else []) + [_PEAK]

    def setup(self) -> list[str]:
        for d in self.slices.values():
            os.makedirs(d, exist_ok=True)
        return [c for c in V1_CONTROLLERS if c not in self.mounts]

    def dirs(self, name: str, slice_name: str | None = None) -> dict[str, str]:
        if slice_name:
            return {c: os.path.join(m, slice_name, name) for c, m in self.mounts.items()}
        return {c: f"{d}/{name}" for c, d in self.slices.items()}

    def home(self, tid: int, proc: str = "/proc") -> Group:
        """The groups thread `tid` of this process is in now, as a Group to `enter` again."""
        dirs = {}
        for line in _read(os.path.join(proc, "self", "task", str(tid), "cgroup")).splitlines():
            _, ctrls, path = line.split(":", 2)
            for ctrl in ctrls.split(","):
                if ctrl in self.mounts:
                    dirs[ctrl] = os.path.join(self.mounts[ctrl], path.lstrip("/"))
        missing = set(self.mounts) - set(dirs)
        if missing:
            raise OSError(errno.ENOENT, f"thread {tid} is in no {', '.join(sorted(missing))} group")
        return Group(self, "", dirs).keep()

    def create(self, name: str, limits: Limits) -> Group:
        group = Group(self, name)
        for d in group.dirs.values():
            os.makedirs(d, exist_ok=True)
        self._limit(group, limits)
        return group

    def empty(self, group: Group) -> bool:
        """No task left: its count read from pids.current through the kept descriptor where
        it can (cgroup.procs cannot be: see `knob`)."""
        count = group.knob("pids", "pids.current").strip() if "pids" in group.dirs else ""
        return (
            count == "0"
            if count
            else not _read(os.path.join(next(iter(group.dirs.values())), "cgroup.procs")).strip()
        )  # spans all or none

    def reusable(self, group: Group) -> bool:
        """An empty group not holding memory a next job would find charged to it (files its
        job left in a tmpfs, say)."""
        return (
            "memory" not in group.dirs
            or int(group.knob("memory", "memory.usage_in_bytes") or 0) < self.KEEP_BELOW
        )

    def reuse(self, group: Group, limits: Limits) -> Group:
        """A kept group for its shepherd's next attempt: only the limits that differ written,
        and its CPU and peak memory counters reset, so that they count this attempt alone."""
        self._limit(group, limits)
        for key, name in self.counters:
            if key in group.dirs:
                _write(os.path.join(group.dirs[key], name), 0)
        return group

    def usage(self, group: Group) -> tuple[float | None, int | None]:
        found = {
            name: _number(group.knob(key, name)) if key in group.dirs else None
            for key, name in self.counters
        }
        cpu = found.get("cpuacct.usage")
        return (cpu / 1e9 if cpu is not None else None), found[_PEAK[1]]

    def set_memory(self, group: Group, memory: int | None) -> None:
        """Written as `_limit` writes it, from the limit the group has now (this process may
        not be the one that wrote it)."""
        mem = group.dirs.get("memory")
        if mem is None:
            return
        old = group.limits
        now = _number(_read(os.path.join(mem, "memory.limit_in_bytes")))
        group.limits = Limits(now, old.pids, old.cpus)
        self._limit(group, Limits(memory, old.pids, old.cpus))

    def _limit(self, group, new):
        """Write the limits that differ from the group's present ones (None = unlimited)."""
        old = group.limits
        mem, cpu, pids = (group.dirs.get(c) for c in ("memory", "cpu", "pids"))
        if mem and new.memory != old.memory:
            files = [os.path.join(mem, "memory.limit_in_bytes")]
            if os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes")):
                files.append(os.path.join(mem, "memory.memsw.limit_in_bytes"))
            # memsw may never be below the limit: raise it first, lower it last
            if new.memory is None or (old.memory is not None and new.memory > old.memory):
                files.reverse()
            for f in files:
                _write(f, new.memory or -1)
        if pids and new.pids != old.pids:
            _write(os.path.join(pids, "pids.max"), new.pids or "max")
        if cpu and new.cpus != old.cpus:
            period = int(_read(os.path.join(cpu, "cpu.cfs_period_us")) or 100000)
            _write(os.path.join(cpu, "cpu.cfs_quota_us"), new.cpus * period if new.cpus else -1)
        group.limits = new

    def kill(self, group: Group) -> None:
        """Freeze, SIGKILL every task, thaw: the tasks die as they wake. A second round catches
        a task that joined between the read and the freeze."""
        freezer = group.dirs.get("freezer")
        state = (
            os.path.join(freezer, "freezer.state") if freezer and os.path.isdir(freezer) else None
        )
        for _ in range(2):
            if not group.exists():
                return
            if state:
                try:
                    _write(state, "FROZEN")
                    for _ in range(100):  # freezing is asynchronous; usually at once
                        if _read(state).strip() != "FREEZING":
                            break
                        time.sleep(0.001)
                except OSError:
                    state = None
            sent = group.signal(signal.SIGKILL)
            if state:
                _write(state, "THAWED")
            if not sent:
                return

    def freeze(self, group: Group, frozen: bool) -> bool:
        """The freezer controller, where mounted: a frozen task dies of SIGKILL only once
        thawed, which `kill` does."""
        freezer = group.dirs.get("freezer")
        if freezer is None:
            return False
        return _set_freezer(os.path.join(freezer, "freezer.state"), _V1_FREEZER[frozen])

    def oom_count(self, group: Group) -> int:
        if "memory" not in group.dirs:
            return 0
        control = _keyed(group.knob("memory", "memory.oom_control"))
        if "oom_kill" in control:  # kernel >= 4.13 counts the kills
            return control["oom_kill"]
        return int(group.knob("memory", "memory.failcnt") or 0)

    def names(self) -> list[str]:
        names = set()
        for d in self.slices.values():
            names.update(_subdirs(d))
        return sorted(names)

    def remove_slice(self) -> None:
        for d in self.slices.values():
            _try_rmdir(d)


_V1_FREEZER = {True: "FROZEN", False: "THAWED"}


def _set_freezer(path: str, value: str) -> bool:
    """Write a freezer file; False if the group (or this kernel) has none."""
    try:
        _write(path, value, create=False)
    except FileNotFoundError:
        return False
    return True


class NoCgroups:
    """Jobs are confined by their process group only."""

    name = "none"
    pooled = False
    threads = False
    controllers: set[str] = set()

    def create(self, name: str, limits: Limits) -> None:
        return None

    def group(self, name: str, slice_name: str | None = None) -> None:
        return None

    def set_memory(self, group: None, memory: int | None) -> None:
        pass

    def names(self) -> list[str]:
        return []

    def remove_slice(self) -> None:
        pass


Backend = V1 | V2 | NoCgroups  # what `choose` gives sbatchd and its shepherds


def _subdirs(path):
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir())
    except OSError:
        return []


def _try_rmdir(path):
    try:
        os.rmdir(path)
    except OSError:
        pass


def mounts(table: str = _MOUNTS) -> tuple[str | None, dict[str, str]]:
    """(v2 mount point or None, {v1 controller: mount point}) from the mount table."""
    v2: str | None = None
    v1: dict[str, str] = {}
    with open(table) as f:
        for line in f:
            fields = line.split()
            if len(fields) < 4:
                continue
            if fields[2] == "cgroup2" and v2 is None:
                v2 = fields[1]
            elif fields[2] == "cgroup":
                for opt in fields[3].split(","):
                    if opt in V1_CONTROLLERS:
                        v1.setdefault(opt, fields[1])
    return v2, v1


def choose(mode: str, slice_name: str, table: str = _MOUNTS, root: bool | None = None) -> Backend:
    """The backend for sbatchd.conf's `cgroups` mode: auto (what works, else none), on (v2 or
    v1, or CgroupError), v1, v2 (that one or CgroupError), off. Logs the choice once."""
    root = os.geteuid() == 0 if root is None else root
    if mode == "off":
        log.info(
            "cgroups = off: jobs are confined by process group only; memory, pids and "
            "CPU limits are not enforced"
        )
        return NoCgroups()
    if not root:
        why = "sbatchd does not run as root"
        return _fallback(mode, why)
    v2_mount, v1 = mounts(table)
    v2_rich = v2_mount and "memory" in _read(os.path.join(v2_mount, "cgroup.controllers")).split()
    order = {"v1": ["v1"], "v2": ["v2"]}.get(mode) or (
        ["v2", "v1"] if v2_rich or not v1.get("memory") else ["v1", "v2"]
    )
    errors = []
    backend: V1 | V2
    for kind in order:
        if kind == "v2" and v2_mount:
            backend = V2(v2_mount, slice_name)
        elif kind == "v1" and v1:
            backend = V1(v1, slice_name)
        else:
            errors.append(f"no cgroup {kind} mount")
            continue
        try:
            missing = backend.setup()
        except OSError as exc:
            errors.append(f"cgroup {kind}: {exc}")
            continue
        log.info(
            "cgroups: %s below %s%s",
            kind,
            backend.base
            if isinstance(backend, V2)
            else ", ".join(f"{c}={m}" for c, m in sorted(v1.items())),
            f"; missing controllers, not enforced: {', '.join(missing)}" if missing else "",
        )
        return backend
    return _fallback(mode, "; ".join(errors))


def _fallback(mode: str, why: str) -> NoCgroups:
    if mode != "auto":
        raise CgroupError(f"cgroups = {mode} but cgroups are not usable: {why}")
    log.warning(
        "no usable cgroups (%s): jobs are confined by process group only; memory, "
        "pids and CPU limits are not enforced",
        why,
    )
    return NoCgroups()
