"""Test fixtures: real clusters of real processes on loopback, started with `lavalite up`."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import apsw
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lavalite import config  # noqa: E402
from lavalite.client import Client, ClientError  # noqa: E402
from roles.sbatchd import cgroups  # noqa: E402

LAUNCHER = [sys.executable, os.path.join(ROOT, "lavalite.py")]
FINISHED = ("DONE", "FAILED", "KILLED")
SLICES = set()  # the cgroup slices of this session's clusters: the only ones it cleans
T = TypeVar("T")


def wait_until(
    cond: Callable[[], T],
    timeout: float = 30.0,
    what: str | Callable[[], str] = "the condition",
    interval: float = 0.05,
) -> T:
    """Call `cond` every `interval` seconds until it returns something truthy, and return that.
    After `timeout` seconds: AssertionError naming `what` (a callable, such as a cluster's
    logs, is called only then) and the last value cond returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            told = what() if callable(what) else what
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {told}; last value: {value!r}"
            )
        time.sleep(interval)


class Cluster:
    """A single-host cluster in its own state directory. `queues`, `sbatchd`, `lim`, `mbatchd`
    override sections of the generated configuration; `conf` adds sections of lavalite.conf.
    derived_slice: leave cgroup_slice at its default (derived from the cluster's name and
    state directory) instead of a random one."""

    def __init__(
        self,
        state,
        slots=4,
        queues=None,
        sbatchd=None,
        lim=None,
        mbatchd=None,
        program=None,
        conf=None,
        derived_slice=False,
    ):
        self.state = str(state)
        self.program = program or LAUNCHER
        self.conf_path = os.path.join(self.state, "lavalite.conf")
        self.env = dict(os.environ, LAVALITE_CONF=self.conf_path)
        # a slice of its own even where the default's derivation is not under test
        random_slice = (
            {} if derived_slice else {"cgroup_slice": f"lavalite-test-{uuid.uuid4().hex[:8]}"}
        )
        overrides = {
            "sbatchd.conf": {
                "sbatchd": {
                    "slots": str(slots),
                    "kill_grace": "2",
                    "reconnect_max": "1",
                    **random_slice,
                    **(sbatchd or {}),
                }
            },
            "lim.conf": {
                "lim": {
                    "poll_interval": "1",
                    "poll_jitter": "0.2",
                    "restart_backoff": "0.5",
                    **(lim or {}),
                }
            },
            "queues.conf": queues or {"serial": {"retry_backoff": "1"}},
        }
        os.makedirs(self.state, exist_ok=True)
        from roles.cli.local import free_port

        host = "testhost"
        self.env["LAVALITE_HOST"] = host
        overrides["lavalite.conf"] = {
            "cluster": {
                "master_candidates": host,
                "listen": "127.0.0.1",
                "key_file": os.path.join(self.state, "cluster.key"),
                "allow_root_jobs": "yes",
            },
            "hosts": {host: "127.0.0.1"},
            "paths": {
                "state_dir": self.state,
                "spool_dir": os.path.join(self.state, "spool"),
                "log_dir": os.path.join(self.state, "log"),
            },
            # shared: events() reads the live store beside mbatchd (local disk, so allowed)
            "mbatchd": {"port": str(free_port()), "store_lock": "shared", **(mbatchd or {})},
            "lim": {"port": str(free_port())},
        }
        for sec, values in (conf or {}).items():
            overrides["lavalite.conf"][sec] = {**overrides["lavalite.conf"].get(sec, {}), **values}
        config.write_state_conf(self.state, overrides)
        self.conf = config.load(self.conf_path)
        SLICES.add(self.conf.sbatchd.cgroup_slice)
        self.proc = None
        self._client = None

    def start(self):
        self.proc = subprocess.Popen(
            self.program + ["up", "--state-dir", self.state],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        first = self.proc.stdout.readline()
        assert first.startswith("export LAVALITE_CONF="), first + self.logs()
        ready = self.proc.stdout.readline()
        assert "LavaLite is up" in ready, ready + self.logs()
        return self

    def stop(self, kill_jobs=True):
        if self._client:
            self._client.close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if kill_jobs:
            kill_jobs_in(self.state)
            remove_cgroup_slice(self.conf.sbatchd.cgroup_slice)

    def logs(self):
        out = []
        logdir = os.path.join(self.state, "log")
        for name in sorted(os.listdir(logdir)) if os.path.isdir(logdir) else []:
            with open(os.path.join(logdir, name), errors="replace") as f:
                out.append(f"--- {name}\n{f.read()[-4000:]}")
        return "\n".join(out)

    def cli(self, *args, check=True, cwd=None):
        """Run a CLI command as a user would: a new process."""
        res = subprocess.run(
            self.program + list(args),
            env=self.env,
            capture_output=True,
            text=True,
            cwd=cwd or self.state,
            timeout=60,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"{args} exited {res.returncode}: {res.stdout}{res.stderr}")
        return res

    @property
    def client(self):
        if self._client is None:
            self._client = Client(conf=self.conf)
        return self._client

    def submit(self, cmd, **spec):
        spec.setdefault("cwd", self.state)
        spec.setdefault("env", {"PATH": os.environ["PATH"]})
        return self.client.submit(cmd, req=uuid.uuid4().hex, **spec)

    def jobs(self, ids):
        return {j["id"]: j for j in self.client.jobs(ids)}

    def wait(self, ids, states=FINISHED, timeout=120):
        """Poll until every job is in one of `states`; returns their views."""
        seen = {}  # the last views read, for the timeout's message

        def reached():
            try:
                jobs = self.jobs(ids)
            except ClientError:  # mbatchd restarting
                self.client.close()
                return None
            seen.clear()
            seen.update(jobs)
            ok = len(jobs) == len(ids) and all(j["state"] in states for j in jobs.values())
            return jobs if ok else None

        return wait_until(
            reached,
            timeout,
            lambda: f"{states}: {[(i, j['stat']) for i, j in seen.items()]}\n{self.logs()}",
            0.2,
        )

    def wait_started(self, ids, timeout=60):
        """Until every job has started on its host (RUN is set at dispatch, before)."""
        wait_until(
            lambda: all(j["start_time"] for j in self.jobs(ids).values()),
            timeout,
            lambda: f"jobs {ids} to start\n{self.logs()}",
        )

    def shepherds(self):
        """Pids of this cluster's shepherd processes (their last argument but one is its
        cgroup slice, unique per test cluster)."""
        return [
            p
            for p in os.listdir("/proc")
            if p.isdigit()
            and _cmdline(p)[-5:-4] == ["--shepherd"]
            and _cmdline(p)[-2] == self.conf.sbatchd.cgroup_slice
        ]

    def events(self, job_id=None):
        """Event rows straight from the store (read-only, beside the running mbatchd)."""
        db = apsw.Connection(self.conf.mbatchd.database, flags=apsw.SQLITE_OPEN_READONLY)
        try:
            sql = "SELECT job_id, time, old, new, reason, host, attempt FROM job_events"
            args = ()
            if job_id is not None:
                sql += " WHERE job_id=?"
                args = (job_id,)
            return db.execute(sql + " ORDER BY seq", args).fetchall()
        finally:
            db.close()

    def kill9_restarted(self, role):
        """SIGKILL a daemon and wait until its supervisor (lim for mbatchd, `up` for sbatchd)
        has started a new one."""
        self.restarted(role, signal.SIGKILL)

    def restarted(self, role, sig):
        """Send a daemon `sig` and wait until its supervisor has started a new one."""
        old = self.pid(role)
        os.kill(old, sig)

        def new_pid():
            try:
                return self.pid(role) != old
            except (OSError, ValueError):  # the pid file is being replaced
                return False

        wait_until(new_pid, 30, lambda: f"{role} to be restarted\n{self.logs()}", 0.1)

    def pid(self, name):
        path = {"mbatchd": os.path.join(self.state, "mbatchd.pid")}.get(
            name, os.path.join(self.state, "spool", f"{name}-testhost.pid")
        )
        with open(path) as f:
            return int(f.read())


def lsf(cluster, tmp_path, name, *args):
    """`name ARGS` as a user runs it: a link named so to the program (argv[0] picks the
    command)."""
    link = tmp_path / name
    if not link.exists():
        link.symlink_to(os.path.join(ROOT, "lavalite.py"))
    return subprocess.run(
        [sys.executable, str(link), *args],
        env=cluster.env,
        cwd=cluster.state,
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_sbatchd(cluster, state, host, slots, port=None):
    """One more sbatchd beside `cluster`'s, as host `host` on loopback, its state and log
    (HOST.log) in `state`, dialling mbatchd's port (or `port`: a recorder in between).
    (its process, its cgroup slice); the caller stops it and removes the slice."""
    slice_name = f"lavalite-test-{host}-{uuid.uuid4().hex[:8]}"
    conf_path = config.write_state_conf(
        state,
        {
            "lavalite.conf": {
                "cluster": {
                    "master_candidates": "testhost",
                    "key_file": cluster.conf.cluster.key_file,
                    "allow_root_jobs": "yes",
                },
                "hosts": {"testhost": "127.0.0.1", host: "127.0.0.1"},
                "mbatchd": {"port": str(port or cluster.conf.mbatchd.port)},
            },
            "sbatchd.conf": {
                "sbatchd": {"slots": str(slots), "reconnect_max": "1", "cgroup_slice": slice_name}
            },
        },
    )
    with open(os.path.join(state, f"{host}.log"), "wb") as log:
        proc = subprocess.Popen(
            LAUNCHER + ["--role", "sbatchd", "--conf", conf_path, "--host", host],
            stdout=log,
            stderr=log,
        )
    return proc, slice_name


def kill_jobs_in(directory):
    """Jobs left running (a `sleep` the test did not wait for) must not outlive the test:
    every process whose working directory is inside `directory`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(directory):
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def alive(pid):
    """Running, not a zombie (this machine's init reaps orphans late, if ever)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def remove_cgroup_slice(name):
    """sbatchd removes its slice when it stops with no job left in it; the jobs a test left
    running end after that, so the slice goes here (their shepherds remove their groups)."""
    v2, v1 = cgroups.mounts()
    deadline = time.monotonic() + 10  # for all the mounts together
    for mount in sorted(set(v1.values()) | ({v2} if v2 else set())):
        path = os.path.join(mount, name)
        # best effort: what is left goes at the session's end (_no_cgroup_slices_left)
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda path=path: _removed(path),
                max(0.0, deadline - time.monotonic()),
                f"{path} to be removed",
            )


def _removed(path: str) -> bool:
    """Remove the directory if it is empty; whether it is gone."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


@pytest.fixture
def make_cluster(tmp_path):
    clusters = []

    def make(start=True, **kw):
        """start=False: configured, for the test to prepare its state and call start()."""
        c = Cluster(tmp_path / f"lavalite-test-{uuid.uuid4().hex[:8]}", **kw)
        clusters.append(c)
        return c.start() if start else c

    yield make
    for c in clusters:
        c.stop()


@pytest.fixture
def cluster(make_cluster):
    return make_cluster()


@pytest.fixture(scope="session", autouse=True)
def _no_cgroup_slices_left():
    """A cluster killed with -9 (the crash tests) leaves its slice of cgroups behind, with the
    empty groups its shepherds kept for reuse: removed once the session ends (rmdir refuses
    a group that still has tasks). Only this session's slices: other test runs and clusters
    on the machine keep theirs."""
    yield
    v2, v1 = cgroups.mounts()
    for mount in {*v1.values(), *([v2] if v2 else [])}:
        for name in SLICES:
            slice_dir = os.path.join(mount, name)
            if not os.path.isdir(slice_dir):
                continue
            for group in [e.path for e in os.scandir(slice_dir) if e.is_dir()] + [slice_dir]:
                try:
                    os.rmdir(group)
                except OSError:
                    pass
