"""Commands that act on this machine: up, down, links, config-check, demo.

`up` is a real single-host cluster for one user, no root and no config needed: it writes a
working configuration into its state directory on first use and runs lim (which starts and
supervises mbatchd) and sbatchd as separate processes until Ctrl-C, SIGTERM or `down`.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from lavalite import auth, config, private
from lavalite.client import Client, ClientError
from lavalite.files import write_whole
from lavalite.hosts import local_host
from lavalite.program import self_command
from roles.cli.commands import no_options

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace

LINKS = (
    "bsub",
    "bjobs",
    "bkill",
    "bresume",
    "btop",
    "bbot",
    "brequeue",
    "bswitch",
    "bstop",
    "bmod",
    "bwait",
    "bqueues",
    "bhosts",
    "bpeek",
    "blaunch",
    "bhist",
    "bacct",
    "badmin",
    "busers",
    "lsload",
    "lshosts",
    "llctrl",
    "bquota",
    "blimits",
)


def _state_dir(path: str | None) -> str:
    return os.path.abspath(os.path.expanduser(path or "~/.lavalite"))


_handed: set[int] = set()  # ports free_port gave already: the kernel may offer one again


def free_port() -> int:
    """A TCP port free on loopback now, and not one this process handed out before (`up`
    asks for five in a row; once the kernel gave the same one twice, and mbatchd could not
    listen)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed:
            _handed.add(port)
            return port


# --- up / down


def _setup_up(p: "ArgumentParser") -> None:
    p.add_argument("--state-dir", help="where the cluster keeps its state (default ~/.lavalite)")
    p.add_argument(
        "--slots",
        type=int,
        help="job slots of this host (default: its CPUs); "
        "used when the state directory is first created",
    )


def _first_conf(state: str, slots: int | None) -> str:
    host = local_host()
    sbatchd = {"slots": str(slots)} if slots else {}
    return config.write_state_conf(
        state,
        {
            "lavalite.conf": {
                "cluster": {
                    "master_candidates": host,
                    "listen": "127.0.0.1",
                    # the cluster of whoever runs `up`: root's own, if root runs it
                    "allow_root_jobs": "yes" if os.getuid() == 0 else "no",
                    "key_file": os.path.join(state, "cluster.key"),
                },
                "hosts": {host: "127.0.0.1"},
                "paths": {
                    "state_dir": state,
                    "spool_dir": os.path.join(state, "spool"),
                    "log_dir": os.path.join(state, "log"),
                },
                "mbatchd": {"port": str(free_port()), "metrics_port": str(free_port())},
                "lim": {"port": str(free_port()), "metrics_port": str(free_port())},
                "sbatchd": {"metrics_port": str(free_port())},
            },
            "sbatchd.conf": {"sbatchd": sbatchd},
        },
    )


def metrics_urls(conf: config.Config) -> list[tuple[str, str]]:
    """(role, URL) of each daemon's metrics endpoint that is on."""
    host = local_host() if conf.cluster.listen in ("0.0.0.0", "::") else conf.cluster.listen
    return [
        (role, f"http://{host}:{port}/metrics")
        for role, port in (
            ("lim", conf.lim.metrics_port),
            ("mbatchd", conf.mbatchd.metrics_port),
            ("sbatchd", conf.sbatchd.metrics_port),
        )
        if port
    ]


def _running_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def up(args: "Namespace") -> int:
    private.enter()
    state = _state_dir(args.state_dir)
    conf_path = os.path.join(state, "lavalite.conf")
    pidfile = os.path.join(state, "up.pid")
    try:
        if not os.path.exists(conf_path):
            _first_conf(state, args.slots)
        conf = config.load(conf_path)
        pid = _running_pid(pidfile)
        if pid:
            print(
                f"lavalite up: already running in {state} (pid {pid}); `lavalite down` stops it",
                file=sys.stderr,
            )
            return 1
        auth.create_key(conf.cluster.key_file)
        os.makedirs(conf.paths.log_dir, exist_ok=True)
        write_whole(pidfile, f"{os.getpid()}\n")
    except OSError as exc:  # a full disk, say: one line, and no partial file left
        print(f"lavalite up: cannot write {exc.filename or state}: {exc.strerror}", file=sys.stderr)
        return 1
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    procs = {role: _start_role(conf, role) for role in ("lim", "sbatchd")}
    print(f"export LAVALITE_CONF={conf_path}", flush=True)
    try:
        slots = _wait_ready(conf, procs, stopping)
        if slots is None and not stopping and all(p.poll() is None for p in procs.values()):
            print(
                f"lavalite up: no sbatchd registered with mbatchd within 60 s; see "
                f"{conf.paths.log_dir}; stopping",
                file=sys.stderr,
            )
            return 1
        if slots is not None:
            print(
                f"LavaLite is up on {local_host()}: {slots} job slots, mbatchd on "
                f"{conf.cluster.listen}:{conf.mbatchd.port}, logs in {conf.paths.log_dir}. "
                "Ctrl-C or `lavalite down` stops it.",
                flush=True,
            )
            urls = metrics_urls(conf)
            with open(os.path.join(state, "metrics.urls"), "w") as f:
                f.writelines(f"{role} {url}\n" for role, url in urls)
            for role, url in urls:
                print(f"{role} metrics: {url}", flush=True)
        _supervise_sbatchd(conf, procs, stopping)
        dead = [r for r, p in procs.items() if p.poll() is not None]
        if dead and not stopping:
            print(
                f"lavalite up: {', '.join(dead)} exited; see {conf.paths.log_dir}; stopping",
                file=sys.stderr,
            )
    finally:
        for role in ("sbatchd", "lim"):  # lim stops mbatchd before it exits
            if procs[role].poll() is None:
                procs[role].terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        os.unlink(pidfile)
        # sbatchd removed the records' directory if no job is left; the run dir goes with it
        # (rmdir: jobs left running keep theirs, and the per-user parent stays, other
        # clusters' run dirs may be in it)
        with contextlib.suppress(OSError):
            os.rmdir(conf.paths.run_dir)
    print("LavaLite stopped.", flush=True)
    return 1 if dead and not stopping else 0


def _start_role(conf: config.Config, role: str) -> subprocess.Popen[bytes]:
    """The daemon, started with up's own umask, not up's private one: it keeps that for its
    jobs (lavalite/private.py)."""
    with open(os.path.join(conf.paths.log_dir, f"{role}.log"), "ab") as log:
        return subprocess.Popen(
            self_command() + ["--role", role, "--conf", conf.path],
            stdout=log,
            stderr=log,
            start_new_session=True,
            umask=private.inherited(),
        )


def _supervise_sbatchd(
    conf: config.Config, procs: dict[str, subprocess.Popen[bytes]], stopping: list[bool]
) -> None:
    """Until asked to stop or lim dies: an sbatchd that dies is started again, as systemd's
    Restart= would (its jobs run on under their shepherds and are adopted); the delay doubles
    after each death within a minute of its start."""
    delay, started = 1.0, time.monotonic()
    while not stopping and procs["lim"].poll() is None:
        code = procs["sbatchd"].poll()
        if code == 2:  # it refused to start (configuration): do not insist
            return
        if code is not None:
            delay = 1.0 if time.monotonic() - started > 60 else delay
            print(
                f"lavalite up: sbatchd exited with status {code}; restarting in {delay:g} s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
            started = time.monotonic()
            procs["sbatchd"] = _start_role(conf, "sbatchd")
        time.sleep(0.2)


def _wait_ready(
    conf: config.Config,
    procs: dict[str, subprocess.Popen[bytes]],
    stopping: list[bool],
    timeout: float = 60.0,
) -> int | None:
    """Until mbatchd answers and this host's sbatchd has registered: its slot count."""
    deadline = time.time() + timeout
    with Client(conf=conf, timeout=5, command_wait=0) as c:  # it retries itself, watching procs
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


def _setup_down(p: "ArgumentParser") -> None:
    p.add_argument(
        "--state-dir",
        help="the state directory of the cluster to stop "
        "(default: from the configuration, else ~/.lavalite)",
    )


def down(args: "Namespace") -> int:
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


def _setup_links(p: "ArgumentParser") -> None:
    p.add_argument("dir", help=f"directory for the symlinks ({', '.join(LINKS)})")


def links(args: "Namespace") -> None:
    target = os.path.realpath(sys.argv[0])
    os.makedirs(args.dir, exist_ok=True)
    for name in LINKS:
        path = os.path.join(args.dir, name)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(target, path)
    print(f"linked {', '.join(LINKS)} in {args.dir} to {target}")


def config_check(args: "Namespace") -> int:
    path = config.find_conf(args.conf)
    conf = config.load(path)
    if conf.cluster.tls_ca:
        from lavalite import tls

        errors = tls.check(conf, local_host(), daemon=False)
        if errors:
            raise config.ConfigError(errors)
    extra = "".join(
        f"; {len(named)} {what}: {', '.join(named)}"
        for what, named in (("quotas", conf.quotas), ("limits", conf.limits))
        if named
    )
    print(f"{path}: OK ({len(conf.queues)} queues: {', '.join(conf.queues)}{extra})")
    return 0


# --- demo


def demo(args: "Namespace") -> int:
    """Start a throw-away cluster, run a few jobs through the LSF commands, show them, stop."""
    state = tempfile.mkdtemp(prefix="lavalite-demo-")
    bindir = os.path.join(state, "bin")
    env = dict(
        os.environ,
        LAVALITE_CONF=os.path.join(state, "lavalite.conf"),
        PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
    )
    run = lambda *cmd: subprocess.run(list(cmd), env=env, cwd=state)  # noqa: E731
    run(*self_command(), "links", bindir)
    upper = subprocess.Popen(
        self_command() + ["up", "--state-dir", state, "--slots", "4"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert upper.stdout is not None  # stdout=PIPE
    try:
        for line in upper.stdout:  # up prints its ready line once sbatchd is in
            print(line, end="", flush=True)
            if "LavaLite is up" in line:
                break
        else:
            print("lavalite demo: the cluster did not come up", file=sys.stderr)
            return 1
        steps = [
            ["bsub", "-J", "hello", "-o", "hello.%J.out", "--", "echo", "hello from LavaLite"],
            ["bsub", "-J", "sum", "-o", "sum.%J.out", "python3 -c 'print(sum(range(10**6)))'"],
            ["bsub", "-J", "fails", "--retries", "1", "--", "sh", "-c", "exit 3"],
            ["bsub", "-J", "sleeper", "--", "sleep", "600"],
            ["bqueues"],
            ["bhosts"],
            ["bjobs"],
        ]
        for step in steps:
            print("$", " ".join(step), flush=True)
            run(*step)
        time.sleep(3)
        for step in (
            ["bkill", "4"],
            ["bjobs", "-a"],
            ["bjobs", "-l", "3"],
            ["cat", "hello.1.out", "sum.2.out"],
        ):
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
    "config-check": (no_options, config_check, "check the configuration, report every error"),
    "demo": (no_options, demo, "start a throw-away cluster and run a few jobs on it"),
}
