"""Several hosts on one machine: one network namespace per host, veth pairs on a bridge that
lives in a namespace of its own. Two control hosts (c1, c2: master candidates sharing one state
directory, as over NFS) and workers w1..w4, each with its own spool. Every address is inside
these namespaces; they are removed after the module, also on failure.

What is checked: failover of the master (kill -9 of LIM and mbatchd), a worker cut off and
restored (node loss policy, stale copies killed, no attempt run twice), the master cut off from
the backup (fencing: never two mbatchd), a worker that joins late.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import apsw
import pytest
from conftest import LAUNCHER, ROOT, kill_jobs_in, wait_until

from lavalite import config, daemon

TAG = f"ll{os.getpid() % 100000}"
NET = "10.213.77"
CONTROL = ("c1", "c2")
WORKERS = ("w1", "w2", "w3", "w4")
HOSTS = CONTROL + WORKERS
ADDR = {h: f"{NET}.{i + 1}" for i, h in enumerate(HOSTS)}
T_FAIL = 1.5  # heartbeat_interval 0.5 x heartbeat_misses 3


def ns(host):
    return f"{TAG}-{host}"


def _ip(*args, netns=None):
    cmd = (["ip", "netns", "exec", netns] if netns else []) + ["ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def _remove_namespaces():
    for name in [ns(h) for h in HOSTS] + [ns("br")]:
        if os.path.exists(f"/run/netns/{name}"):
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture(scope="module")
def network():
    probe = f"{TAG}-probe"
    try:
        res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("multi-host tests need iproute2 (`ip netns`); not installed here")
    if res.returncode != 0:
        pytest.skip(
            f"multi-host tests need network namespaces: `ip netns add` failed: {res.stderr.strip()}"
        )
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    try:
        br = ns("br")
        _ip("netns", "add", br)
        _ip("link", "add", "br0", "type", "bridge", netns=br)
        _ip("link", "set", "br0", "up", netns=br)
        for i, host in enumerate(HOSTS):
            _ip("netns", "add", ns(host))
            _ip("link", "add", f"{TAG}h{i}", "type", "veth", "peer", "name", f"{TAG}b{i}")
            _ip("link", "set", f"{TAG}h{i}", "netns", ns(host), "name", "eth0")
            _ip("link", "set", f"{TAG}b{i}", "netns", br, "name", f"b{host}")
            _ip("link", "set", f"b{host}", "master", "br0", "up", netns=br)
            _ip("addr", "add", f"{ADDR[host]}/24", "dev", "eth0", netns=ns(host))
            _ip("link", "set", "eth0", "up", netns=ns(host))
            _ip("link", "set", "lo", "up", netns=ns(host))
        yield
    finally:
        _remove_namespaces()


def cut(host):
    """Unplug `host` from the bridge: its packets go nowhere, no connection is closed."""
    _ip("link", "set", f"b{host}", "down", netns=ns("br"))


def restore(host):
    _ip("link", "set", f"b{host}", "up", netns=ns("br"))


class MultiCluster:
    """`cluster(host)`: more [cluster] keys for that host's lavalite.conf."""

    def __init__(self, base, cluster=None):
        self.base = str(base)
        self.shared = os.path.join(self.base, "shared")  # the control hosts' NFS
        self.joblog = os.path.join(self.base, "jobs.log")
        self.procs = {}
        for host in HOSTS:
            state = self.shared if host in CONTROL else os.path.join(self.base, host, "state")
            os.makedirs(os.path.join(self.base, host, "tmp"))
            config.write_state_conf(
                os.path.join(self.base, host),
                {
                    "lavalite.conf": {
                        "cluster": {
                            "master_candidates": " ".join(CONTROL),
                            "listen": "0.0.0.0",
                            "key_file": os.path.join(self.shared, "cluster.key"),
                            "allow_root_jobs": "yes",  # the tests run as root
                            **(cluster(host) if cluster else {}),
                        },
                        "hosts": ADDR,
                        "paths": {
                            "state_dir": state,
                            "spool_dir": os.path.join(self.base, host, "spool"),
                            "run_dir": os.path.join(self.base, host, "run"),
                            "log_dir": os.path.join(self.base, host, "log"),
                        },
                        "mbatchd": {"node_lost_grace": "4"},
                    },
                    "lim.conf": {
                        "lim": {
                            "heartbeat_interval": "0.5",
                            "heartbeat_misses": "3",
                            "poll_interval": "1",
                            "poll_jitter": "0",
                            "restart_backoff": "0.5",
                        }
                    },
                    # TMPDIRs in the test's tree: stop() kills the shepherds' cleaners with the rest
                    "sbatchd.conf": {
                        "sbatchd": {
                            "slots": "2",
                            "reconnect_max": "1",
                            "kill_grace": "1",
                            "tmp_dir": os.path.join(self.base, host, "tmp"),
                        }
                    },
                    "queues.conf": {"serial": {}, "rerun": {"rerunnable": "yes"}},
                },
            )
        from lavalite import auth

        auth.create_key(os.path.join(self.shared, "cluster.key"))

    def conf(self, host):
        return os.path.join(self.base, host, "lavalite.conf")

    def start(self, host):
        roles = ("lim",) if host in CONTROL else ("lim", "sbatchd")
        os.makedirs(os.path.join(self.base, host, "log"), exist_ok=True)
        for role in roles:
            log = open(os.path.join(self.base, host, "log", f"{role}.log"), "ab")
            self.procs[host, role] = subprocess.Popen(
                ["ip", "netns", "exec", ns(host)]
                + LAUNCHER
                + ["--role", role, "--conf", self.conf(host), "--host", host],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for host in HOSTS:
            pids = subprocess.run(
                ["ip", "netns", "pids", ns(host)], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:  # a leftover mbatchd or job
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        kill_jobs_in(self.base)

    def call(self, op, via="w1", conf=None, **fields):
        """One request through the real client, run inside host `via`'s namespace."""
        code = (
            "import json, sys; sys.path.insert(0, sys.argv[1]);"
            "from lavalite.client import Client, ClientError\n"
            "try:\n print(json.dumps(Client(conf_path=sys.argv[2], timeout=10)"
            ".call(sys.argv[3], **json.loads(sys.argv[4]))))\n"
            "except ClientError as e:\n print(json.dumps({'error': e.code}))"
        )
        res = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns(via),
                sys.executable,
                "-c",
                code,
                ROOT,
                conf or self.conf(via),
                op,
                json.dumps(fields),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def submit(self, script, queue="serial"):
        cmd = f'echo "$LSB_JOBID $LAVALITE_ATTEMPT $LSB_HOSTS" >> {self.joblog}; {script}'
        reply = self.call(
            "submit",
            req=uuid.uuid4().hex,
            spec={
                "cmd": [cmd],
                "queue": queue,
                "cwd": self.base,
                "out": "/dev/null",
                "env": {"PATH": os.environ["PATH"]},
            },
        )
        assert "job" in reply, reply
        return reply["job"]

    def jobs(self, ids):
        reply = self.call("jobs", jobs=list(ids))
        return {j["id"]: j for j in reply.get("jobs", [])}

    def wait_until(self, what, check, timeout=60):
        return wait_until(check, timeout, lambda: f"{what}\n{self.logs()}", 0.5)

    def wait_jobs(self, ids, states=("DONE", "FAILED", "KILLED"), timeout=90):
        def done():
            jobs = self.jobs(ids)
            return (
                jobs
                if len(jobs) == len(ids) and all(j["state"] in states for j in jobs.values())
                else None
            )

        return self.wait_until(f"jobs {ids} in {states}", done, timeout)

    def hosts_ok(self, names):
        reply = self.call("hosts")
        ok = {h["name"] for h in reply.get("hosts", []) if h["status"] == "ok"}
        return set(names) <= ok

    def master_pids(self, host):
        with open(os.path.join(self.base, host, "spool", f"lim-{host}.pid")) as f:
            lim = int(f.read())
        with open(os.path.join(self.shared, "mbatchd.pid")) as f:
            return lim, int(f.read())

    def starts(self):
        """(job, attempt) -> hosts where it started, from the jobs' own log."""
        out = {}
        with open(self.joblog) as f:
            for line in f:
                job, attempt, host = line.split()
                out.setdefault((int(job), int(attempt)), []).append(host)
        return out

    def events(self):
        """The store's events, read once every daemon is stopped (mbatchd holds the lock)."""
        db = apsw.Connection(
            os.path.join(self.shared, "lavalite.db"), flags=apsw.SQLITE_OPEN_READONLY
        )
        try:
            return db.execute(
                "SELECT job_id, time, old, new, reason, host, attempt FROM job_events ORDER BY seq"
            ).fetchall()
        finally:
            db.close()

    def log(self, host, role):
        path = os.path.join(self.base, host, "log", f"{role}.log")
        with open(path, errors="replace") as f:
            return f.read()

    def logs(self):
        out = []
        for host in HOSTS:
            for role in ("lim", "sbatchd"):
                path = os.path.join(self.base, host, "log", f"{role}.log")
                if os.path.exists(path):
                    out.append(f"--- {host} {role}\n{self.log(host, role)[-3000:]}")
        return "\n".join(out)


@pytest.fixture
def mc(network, tmp_path):
    c = MultiCluster(tmp_path)
    for host in HOSTS[:-1]:  # w4 joins late, in its own test
        c.start(host)
    try:
        c.wait_until("three workers ok", lambda: c.hosts_ok(("w1", "w2", "w3")))
        yield c
    finally:
        c.stop()
        for host in HOSTS:  # the bridge may still have a host unplugged
            restore(host)


def test_failover_to_the_backup_keeps_every_job(mc):
    assert mc.call("ping")["host"] == "c1"
    running = [mc.submit("sleep 5") for _ in range(6)]  # fills the three workers
    mc.wait_jobs(running, states=("RUN",))
    queued = [mc.submit("sleep 1") for _ in range(4)]
    lim, mbatchd = mc.master_pids("c1")
    lost = time.time()
    os.kill(mbatchd, signal.SIGKILL)
    os.kill(lim, signal.SIGKILL)
    during = mc.call("jobs", jobs=running)  # the CLI waits out the election, no error
    assert [j["id"] for j in during["jobs"]] == running, during
    jobs = mc.wait_jobs(running + queued)
    assert mc.call("ping")["host"] == "c2"
    assert {i: j["stat"] for i, j in jobs.items()} == {i: "DONE" for i in running + queued}
    assert all(jobs[i]["attempt"] == 1 for i in running), "a running job was run again"
    assert all(len(hosts) == 1 for hosts in mc.starts().values())
    assert "epoch 2" in mc.log("c2", "lim")
    # c1 returns: it ranks first, so c2 stops its mbatchd, then c1 takes over (epoch 3).
    mc.start("c1")
    mc.wait_until("c1 master again", lambda: mc.call("ping").get("host") == "c1", timeout=30)
    again = mc.submit("true")
    assert mc.wait_jobs([again])[again]["stat"] == "DONE"
    assert "stepping down" in mc.log("c2", "lim") and "epoch 3" in mc.log("c1", "lim")
    mc.stop()
    first = min(t for _, t, _, new, *_ in mc.events() if new == "RUN" and t > lost)
    print(
        f"\nfailover: {first - lost:.2f} s from the loss of the master to the first "
        f"dispatch by the new one (T_fail {T_FAIL} s)"
    )


def test_worker_cut_off_and_restored(mc):
    # Copies on w3 outlive the cut, so its return must kill them as stale.
    script = 'case "$LSB_HOSTS" in w3) sleep 120;; *) sleep 3;; esac'
    ids = [mc.submit(script, queue) for queue in ("rerun", "serial") for _ in range(3)]
    jobs = mc.wait_jobs(ids, states=("RUN",))
    on_w3 = [i for i, j in jobs.items() if j["exec_host"] == "w3"]
    assert len(on_w3) == 2
    cut("w3")
    cut_at = time.time()
    mc.wait_until("w3 unavailable", lambda: not mc.hosts_ok(("w3",)), timeout=20)
    print(f"\nw3 unavailable {time.time() - cut_at:.1f} s after the cut")
    others = [i for i in ids if i not in on_w3]
    mc.wait_jobs(others)
    handled = mc.wait_jobs(on_w3)
    for _job_id, job in handled.items():
        if job["queue"] == "rerun":
            assert job["stat"] == "DONE" and job["attempt"] == 2 and job["exec_host"] != "w3"
        else:
            assert job["stat"] == "FAILED(node_lost)", job
    time.sleep(max(0.0, cut_at + 30 - time.time()))
    restore("w3")
    work = os.path.join(mc.base, "w3", "run", "jobs")
    mc.wait_until(
        "stale copies on w3 killed",  # their records gone: only the claim left
        lambda: os.listdir(work) == [daemon.CLAIM],
        timeout=30,
    )
    mc.wait_until("w3 back", lambda: mc.hosts_ok(("w3",)), timeout=20)
    starts = mc.starts()
    assert all(len(hosts) == 1 for hosts in starts.values()), starts
    after = mc.jobs(on_w3)  # the stale copies' ends changed nothing
    assert {i: after[i]["stat"] for i in on_w3} == {i: handled[i]["stat"] for i in on_w3}


def test_master_cut_off_from_backup_is_fenced(mc):
    _ip("route", "add", "blackhole", ADDR["c2"], netns=ns("c1"))
    _ip("route", "add", "blackhole", ADDR["c1"], netns=ns("c2"))
    mc.wait_until(
        "c2 sees c1 lost and finds the lock held",
        lambda: "held by another LIM" in mc.log("c2", "lim"),
        timeout=20,
    )
    job = mc.submit("true")
    assert mc.wait_jobs([job])[job]["stat"] == "DONE"
    assert mc.call("ping")["host"] == "c1"
    assert "started mbatchd" not in mc.log("c2", "lim")
    # Even started by hand on the backup, a second mbatchd cannot open the store.
    second = subprocess.run(
        ["ip", "netns", "exec", ns("c2")]
        + LAUNCHER
        + ["--role", "mbatchd", "--conf", mc.conf("c2"), "--host", "c2", "--epoch", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2 and "cannot open store" in second.stderr, second.stderr
    _ip("route", "del", "blackhole", ADDR["c2"], netns=ns("c1"))
    _ip("route", "del", "blackhole", ADDR["c1"], netns=ns("c2"))
    time.sleep(3 * T_FAIL)
    assert "started mbatchd" not in mc.log("c2", "lim")
    with open(os.path.join(mc.shared, "master.epoch")) as f:
        assert f.read().strip() == "1"


def test_a_backup_redirects_clients_to_the_master(mc):
    """A client that knows only the backup still reaches mbatchd: the backup's LIM answers
    on the mbatchd port with a redirect to the master."""
    with open(mc.conf("w1")) as f:
        text = f.read()
    backup_only = os.path.join(mc.base, "w1", "backup-only.conf")
    with open(backup_only, "w") as f:
        f.write(text.replace("master_candidates = c1 c2", "master_candidates = c2"))
    assert mc.call("ping", conf=backup_only)["host"] == "c1"


def test_a_worker_joining_late_is_used(mc):
    blockers = [mc.submit("sleep 8") for _ in range(6)]
    mc.wait_jobs(blockers, states=("RUN",))
    late = mc.submit("true")
    assert mc.jobs([late])[late]["state"] == "PEND"
    mc.start("w4")
    job = mc.wait_jobs([late])[late]
    assert job["stat"] == "DONE" and job["exec_host"] == "w4"
