"""Commands that act on this machine: up, down, links, config-check, demo.

`up` is a real single-host cluster for one user, no root and no config needed: it writes a
working configuration into its state directory on first use and runs lim (which starts and
supervises mbatchd) and sbatchd as separate processes until Ctrl-C, SIGTERM or `down`.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from lavalite import auth, config
from lavalite.client import Client, ClientError
from lavalite.entry import self_command
from lavalite.hosts import local_host

LINKS = ("bsub", "bjobs", "bkill", "bwait", "bqueues", "bhosts", "llctrl")


def _state_dir(path):
    return os.path.abspath(os.path.expanduser(path or "~/.lavalite"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- up / down

def _setup_up(p):
    p.add_argument("--state-dir", help="where the cluster keeps its state (default ~/.lavalite)")
    p.add_argument("--slots", type=int, help="job slots of this host (default: its CPUs); "
                                             "used when the state directory is first created")


def _first_conf(state, slots):
    host = local_host()
    sbatchd = {"slots": str(slots)} if slots else {}
    return config.write_state_conf(state, {
        "lavalite.conf": {
            "cluster": {"master_candidates": host, "listen": "127.0.0.1",
                        "key_file": os.path.join(state, "cluster.key")},
            "hosts": {host: "127.0.0.1"},
            "paths": {"state_dir": state, "spool_dir": os.path.join(state, "spool"),
                      "log_dir": os.path.join(state, "log")},
            "mbatchd": {"port": str(_free_port())},
            "lim": {"port": str(_free_port())}},
        "sbatchd.conf": {"sbatchd": sbatchd}})


def _running_pid(path):
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def up(args):
    state = _state_dir(args.state_dir)
    conf_path = os.path.join(state, "lavalite.conf")
    if not os.path.exists(conf_path):
        _first_conf(state, args.slots)
    conf = config.load(conf_path)
    pidfile = os.path.join(state, "up.pid")
    pid = _running_pid(pidfile)
    if pid:
        print(f"lavalite up: already running in {state} (pid {pid}); `lavalite down` stops it",
              file=sys.stderr)
        return 1
    auth.create_key(conf.cluster.key_file)
    os.makedirs(conf.paths.log_dir, exist_ok=True)
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    procs = {}
    for role in ("lim", "sbatchd"):
        log = open(os.path.join(conf.paths.log_dir, f"{role}.log"), "ab")
        procs[role] = subprocess.Popen(self_command() + ["--role", role, "--conf", conf_path],
                                       stdout=log, stderr=log, start_new_session=True)
    print(f"export LAVALITE_CONF={conf_path}", flush=True)
    try:
        slots = _wait_ready(conf, procs, stopping)
        if slots is not None:
            print(f"LavaLite is up on {local_host()}: {slots} job slots, mbatchd on "
                  f"{conf.cluster.listen}:{conf.mbatchd.port}, logs in {conf.paths.log_dir}. "
                  "Ctrl-C or `lavalite down` stops it.", flush=True)
        while not stopping and all(p.poll() is None for p in procs.values()):
            time.sleep(0.2)
        dead = [r for r, p in procs.items() if p.poll() is not None]
        if dead and not stopping:
            print(f"lavalite up: {', '.join(dead)} exited; see {conf.paths.log_dir}; stopping",
                  file=sys.stderr)
    finally:
        for role in ("sbatchd", "lim"):        # lim stops mbatchd before it exits
            if procs[role].poll() is None:
                procs[role].terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        os.unlink(pidfile)
    print("LavaLite stopped.", flush=True)
    return 1 if dead and not stopping else 0


def _wait_ready(conf, procs, stopping, timeout=60.0):
    """Until mbatchd answers and this host's sbatchd has registered: its slot count."""
    deadline = time.time() + timeout
    with Client(conf=conf, timeout=5) as c:
        while time.time() < deadline and not stopping:
            if any(p.poll() is not None for p in procs.values()):
                return None
            try:
                hosts = c.call("hosts")["hosts"]
                ok = [h for h in hosts if h["status"] == "ok"]
                if ok:
                    return sum(h["slots"] for h in ok)
            except ClientError:
                c.close()
            time.sleep(0.2)
    return None


def _setup_down(p):
    p.add_argument("--state-dir", help="the state directory of the cluster to stop "
                                       "(default: from the configuration, else ~/.lavalite)")


def down(args):
    state = args.state_dir
    if state is None:
        try:
            state = config.load(config.find_conf(args.conf)).paths.state_dir
        except config.ConfigError:
            state = None
    state = _state_dir(state)
    pid = _running_pid(os.path.join(state, "up.pid"))
    if pid is None:
        print(f"lavalite down: no cluster is up in {state}", file=sys.stderr)
        return 1
    os.kill(pid, signal.SIGTERM)
    for _ in range(600):
        if _running_pid(os.path.join(state, "up.pid")) is None:
            print("LavaLite stopped.")
            return 0
        time.sleep(0.1)
    print(f"lavalite down: pid {pid} did not stop within 60 s", file=sys.stderr)
    return 1


# --- links, config-check

def _setup_links(p):
    p.add_argument("dir", help="directory for the symlinks (bsub, bjobs, bkill, bwait, "
                               "bqueues, bhosts, llctrl)")


def links(args):
    target = os.path.realpath(sys.argv[0])
    os.makedirs(args.dir, exist_ok=True)
    for name in LINKS:
        path = os.path.join(args.dir, name)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(target, path)
    print(f"linked {', '.join(LINKS)} in {args.dir} to {target}")


def _setup_none(p):
    pass


def config_check(args):
    path = config.find_conf(args.conf)
    conf = config.load(path)
    print(f"{path}: OK ({len(conf.queues)} queues: {', '.join(conf.queues)})")
    return 0


# --- demo

def demo(args):
    """Start a throw-away cluster, run a few jobs through the LSF commands, show them, stop."""
    state = tempfile.mkdtemp(prefix="lavalite-demo-")
    bindir = os.path.join(state, "bin")
    env = dict(os.environ, LAVALITE_CONF=os.path.join(state, "lavalite.conf"),
               PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    run = lambda *cmd: subprocess.run(list(cmd), env=env, cwd=state)   # noqa: E731
    run(*self_command(), "links", bindir)
    upper = subprocess.Popen(self_command() + ["up", "--state-dir", state, "--slots", "4"],
                             env=env, stdout=subprocess.PIPE, text=True)
    try:
        for line in upper.stdout:              # up prints its ready line once sbatchd is in
            print(line, end="", flush=True)
            if "LavaLite is up" in line:
                break
        else:
            print("lavalite demo: the cluster did not come up", file=sys.stderr)
            return 1
        steps = [["bsub", "-J", "hello", "-o", "hello.%J.out", "--", "echo", "hello from LavaLite"],
                 ["bsub", "-J", "sum", "-o", "sum.%J.out", "python3 -c 'print(sum(range(10**6)))'"],
                 ["bsub", "-J", "fails", "--retries", "1", "--", "sh", "-c", "exit 3"],
                 ["bsub", "-J", "sleeper", "--", "sleep", "600"],
                 ["bqueues"], ["bhosts"], ["bjobs"]]
        for step in steps:
            print("$", " ".join(step), flush=True)
            run(*step)
        time.sleep(3)
        for step in (["bkill", "4"], ["bjobs", "-a"], ["bjobs", "-l", "3"],
                     ["cat", "hello.1.out", "sum.2.out"]):
            time.sleep(1)
            print("$", " ".join(step), flush=True)
            run(*step)
    finally:
        upper.send_signal(signal.SIGTERM)
        print(upper.communicate(timeout=60)[0], end="")
    print(f"(the demo cluster's state and logs are in {state})")
    return 0


COMMANDS = {
    "up": (_setup_up, up, "run a single-host cluster in the foreground"),
    "down": (_setup_down, down, "stop the cluster `lavalite up` runs"),
    "links": (_setup_links, links, "create the bsub/bjobs/... symlinks to this program"),
    "config-check": (_setup_none, config_check, "check the configuration, report every error"),
    "demo": (_setup_none, demo, "start a throw-away cluster and run a few jobs on it"),
}
