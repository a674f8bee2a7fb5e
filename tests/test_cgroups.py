"""The cgroup file logic of both hierarchies over a fake cgroupfs directory (plain files stand in
for the kernel's): what each limit writes, how OOM is read, which groups are stale. The real
hierarchies are exercised by tests/test_worker.py."""

import os
import signal
import subprocess

import pytest
from conftest import wait_until

from roles.sbatchd import cgroups, server
from roles.sbatchd.cgroups import Limits


def _put(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _get(path):
    with open(path) as f:
        return f.read()


@pytest.fixture
def v2(tmp_path):
    _put(str(tmp_path / "cgroup.controllers"), "cpuset cpu io memory pids")
    _put(str(tmp_path / "cgroup.subtree_control"), "")
    backend = cgroups.V2(str(tmp_path), "lavalite")
    _put(os.path.join(backend.base, "cgroup.controllers"), "cpu memory pids")
    assert backend.setup() == []
    return backend


def test_v2_limits_written_in_the_kernels_units(v2, tmp_path):
    _put(os.path.join(v2.base, "7.2", "memory.swap.max"), "max")
    g = v2.create("7.2", Limits(memory=512 << 20, pids=64, cpus=2))
    d = tmp_path / "lavalite" / "7.2"
    assert _get(d / "memory.max") == str(512 << 20)
    assert _get(d / "memory.swap.max") == "0"
    assert _get(d / "pids.max") == "64"
    assert _get(d / "cpu.max") == "200000 100000"
    assert g.dirs == {"": str(d)}
    # the slice's controllers were enabled from the root down
    assert _get(tmp_path / "cgroup.subtree_control") == "+cpu"  # a file keeps the last write


def test_v2_without_a_controller_skips_its_limit(tmp_path):
    _put(str(tmp_path / "cgroup.controllers"), "")
    backend = cgroups.V2(str(tmp_path), "lavalite")
    assert backend.setup() == ["memory", "pids", "cpu"]
    backend.create("1.1", Limits(memory=1 << 30, pids=10, cpus=1))
    assert sorted(os.listdir(tmp_path / "lavalite" / "1.1")) == []


def test_v2_kill_oom_and_remove(v2, tmp_path):
    g = v2.create("3.1", Limits())
    d = tmp_path / "lavalite" / "3.1"
    _put(str(d / "cgroup.kill"), "")
    _put(str(d / "memory.events"), "low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n")
    assert g.oom_count() == 0
    _put(str(d / "memory.events"), "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    assert g.oom_count() == 1
    _put(str(d / "cgroup.events"), "populated 1\nfrozen 0\n")
    assert not v2.empty(g)
    _put(str(d / "cgroup.events"), "populated 0\nfrozen 0\n")
    assert v2.empty(g)
    g.kill()
    assert _get(d / "cgroup.kill") == "1"
    for name in os.listdir(d):  # the kernel's files vanish with the directory
        os.unlink(d / name)
    assert g.remove()
    assert not d.exists()


def test_v2_kill_without_cgroup_kill_signals_every_task(v2, tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    g = v2.create("4.1", Limits())
    _put(os.path.join(g.dirs[""], "cgroup.procs"), f"{sleeper.pid}\n")
    g.kill()
    assert sleeper.wait(10) == -signal.SIGKILL


@pytest.fixture
def v1(tmp_path):
    mounts = {c: str(tmp_path / c) for c in ("memory", "pids", "cpu", "freezer")}
    for _ctrl, mount in mounts.items():
        os.makedirs(mount)
    backend = cgroups.V1(mounts, "lavalite")
    assert backend.setup() == []
    return backend


def test_v1_limits_memsw_only_where_present(v1, tmp_path):
    mem = tmp_path / "memory" / "lavalite" / "5.1"
    _put(str(mem / "memory.memsw.limit_in_bytes"), "9223372036854771712")
    _put(str(tmp_path / "cpu" / "lavalite" / "5.1" / "cpu.cfs_period_us"), "50000")
    v1.create("5.1", Limits(memory=256 << 20, pids=32, cpus=3))
    assert _get(mem / "memory.limit_in_bytes") == str(256 << 20)
    assert _get(mem / "memory.memsw.limit_in_bytes") == str(256 << 20)
    assert _get(tmp_path / "pids" / "lavalite" / "5.1" / "pids.max") == "32"
    assert _get(tmp_path / "cpu" / "lavalite" / "5.1" / "cpu.cfs_quota_us") == "150000"
    v1.create("6.1", Limits(memory=1 << 30))
    assert not (tmp_path / "memory" / "lavalite" / "6.1" / "memory.memsw.limit_in_bytes").exists()


def test_v1_kept_group_reused_with_only_the_changed_limits_written(v1, tmp_path, monkeypatch):
    mem = tmp_path / "memory" / "lavalite" / "shepherd-7.1"
    _put(str(mem / "memory.memsw.limit_in_bytes"), "-1")
    _put(str(mem / "memory.usage_in_bytes"), str(1 << 20))
    g = v1.create("shepherd-7.1", Limits(memory=256 << 20, pids=32, cpus=1))
    assert v1.empty(g) and v1.reusable(g)
    # the pids limit stays the same: not written again (the marker survives)
    _put(str(tmp_path / "pids" / "lavalite" / "shepherd-7.1" / "pids.max"), "kept")
    writes, real_write = [], cgroups._write

    def spy(path, value, create=True):  # the real write, and which file it was
        writes.append(os.path.basename(path))
        real_write(path, value, create)

    monkeypatch.setattr(cgroups, "_write", spy)
    assert v1.reuse(g, Limits(memory=512 << 20, pids=32, cpus=None)) is g
    # raising the limit: memsw first, so it is never below the memory limit; then the peak
    # memory counter reset, so that it counts the new attempt alone
    assert writes == [
        "memory.memsw.limit_in_bytes",
        "memory.limit_in_bytes",
        "cpu.cfs_quota_us",
        "memory.max_usage_in_bytes",
    ]
    assert _get(mem / "memory.limit_in_bytes") == str(512 << 20)
    assert _get(tmp_path / "cpu" / "lavalite" / "shepherd-7.1" / "cpu.cfs_quota_us") == "-1"
    assert _get(tmp_path / "pids" / "lavalite" / "shepherd-7.1" / "pids.max") == "kept"
    writes.clear()
    v1.reuse(g, Limits(memory=64 << 20, pids=32))
    assert writes[:2] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]  # lowering
    assert sorted(os.listdir(tmp_path / "memory" / "lavalite")) == ["shepherd-7.1"]


def test_v1_group_with_tasks_or_memory_left_is_not_reusable(v1, tmp_path):
    g = v1.create("5.1", Limits())
    mem = tmp_path / "memory" / "lavalite" / "5.1"
    _put(str(mem / "cgroup.procs"), "4242\n")
    assert not v1.empty(g)
    _put(str(mem / "cgroup.procs"), "")
    assert v1.empty(g)
    _put(str(mem / "memory.usage_in_bytes"), str(64 << 20))  # e.g. files left in a tmpfs
    assert not v1.reusable(g)
    _put(str(mem / "memory.usage_in_bytes"), str(1 << 20))
    assert v1.reusable(g)
    # where the pids controller counts the tasks, its counter says (cgroup.procs is not read)
    pids = tmp_path / "pids" / "lavalite" / "5.1" / "pids.current"
    _put(str(pids), "1\n")
    assert not v1.empty(g)
    _put(str(pids), "0\n")
    _put(str(mem / "cgroup.procs"), "4242\n")
    assert v1.empty(g)


def test_v1_oom_from_oom_control_else_failcnt(v1, tmp_path):
    g = v1.create("8.1", Limits(memory=1 << 20))
    mem = tmp_path / "memory" / "lavalite" / "8.1"
    _put(str(mem / "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    _put(str(mem / "memory.failcnt"), "12")
    assert g.oom_count() == 0  # hit the limit, reclaimed, nobody killed
    _put(str(mem / "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert g.oom_count() == 1
    _put(str(mem / "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\n")  # old kernel
    assert g.oom_count() == 12


def test_v1_kill_freezes_signals_thaws(v1, tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    g = v1.create("9.1", Limits())
    state = tmp_path / "freezer" / "lavalite" / "9.1" / "freezer.state"
    _put(str(state), "THAWED")
    _put(str(tmp_path / "memory" / "lavalite" / "9.1" / "cgroup.procs"), f"{sleeper.pid}\n")
    g.kill()
    assert sleeper.wait(10) == -signal.SIGKILL
    assert _get(state) == "THAWED"


def test_stale_names_span_every_controller(v1, tmp_path):
    os.makedirs(tmp_path / "memory" / "lavalite" / "10.1")
    os.makedirs(tmp_path / "pids" / "lavalite" / "11.2")
    assert v1.names() == ["10.1", "11.2"]


def test_choose_reads_the_mount_table(tmp_path):
    table = tmp_path / "mounts"
    table.write_text(
        "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"
    )
    assert cgroups.mounts(str(table)) == (
        "/sys/fs/cgroup/unified",
        {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "memory": "/sys/fs/cgroup/memory"},
    )
    assert cgroups.choose("off", "x", str(table)).name == "none"
    assert cgroups.choose("auto", "x", str(table), root=False).name == "none"
    with pytest.raises(cgroups.CgroupError, match="does not run as root"):
        cgroups.choose("on", "x", str(table), root=False)
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(cgroups.CgroupError, match="no cgroup v2 mount"):
        cgroups.choose("v2", "x", str(empty), root=True)


def test_adopted_group_found_under_the_slice_its_record_names(tmp_path):
    """A record names its group's slice; one written before slices were derived per cluster
    names none, and its group is under the old shared default `lavalite` if not under ours:
    an upgrade while jobs run keeps their groups."""
    mounts = {c: str(tmp_path / c) for c in ("memory", "pids")}
    ours = cgroups.V1(mounts, "lavalite-c-0000abcd")
    ours.setup()
    legacy = cgroups.V1(mounts, server.LEGACY_SLICE)
    legacy.create("shepherd-5.1", Limits())
    ours.create("shepherd-6.1", Limits())

    def dirs(spec, name="9.1"):
        return server.adopted_group(ours, spec, name).dirs

    assert dirs({"cgroup": "shepherd-5.1"}) == legacy.dirs("shepherd-5.1")
    assert dirs({"cgroup": "shepherd-6.1"}) == ours.dirs("shepherd-6.1")
    assert dirs({}) == legacy.dirs("9.1")  # a group named after its attempt, gone
    assert dirs({"cgroup": "shepherd-7.1", "slice": "elsewhere"}) == {
        c: os.path.join(m, "elsewhere", "shepherd-7.1") for c, m in mounts.items()
    }
    assert server.adopted_group(cgroups.NoCgroups(), {"cgroup": None}, "9.1") is None


UNIFIED = "/sys/fs/cgroup/unified"  # this machine's cgroup2 (hybrid: no controllers of v1's)


@pytest.mark.skipif(
    not os.access(os.path.join(UNIFIED, "cgroup.procs"), os.W_OK), reason="no writable cgroup2"
)
def test_v2_freeze_stops_and_thaws_a_real_task():
    """bstop on cgroup2: cgroup.freeze of the kernel's own hierarchy (a slice of this test's)."""
    backend = cgroups.V2(UNIFIED, f"lavalite-test-{os.getpid()}")
    backend.setup()
    sleeper = subprocess.Popen(["sleep", "60"])
    g = backend.create("5.1", Limits())
    try:
        _put(os.path.join(g.dirs[""], "cgroup.procs"), str(sleeper.pid))
        assert g.freeze(True)
        events = os.path.join(g.dirs[""], "cgroup.events")
        wait_until(lambda: "frozen 1" in _get(events), 10, "frozen")
        assert g.freeze(False)
        wait_until(lambda: "frozen 0" in _get(events), 10, "thawed")
        g.freeze(True)  # a frozen task still dies of the group's kill
        g.kill()
        assert sleeper.wait(10) == -signal.SIGKILL
        assert g.remove(wait=5)
    finally:
        sleeper.kill()
        sleeper.wait()
        g.remove(wait=5)
        backend.remove_slice()
