"""What every daemon role shares: config loading that refuses a bad file, logging, pid files,
the event loop (uvloop, imported here lazily: the CLI path never pays for it), stopping
cleanly on SIGTERM/SIGINT, and re-reading the configuration on SIGHUP."""

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from lavalite import config as config_mod
from lavalite import log as log_mod
from lavalite import private
from lavalite.files import write_whole
from lavalite.hosts import local_host

log = logging.getLogger("lavalite")


def setup(role: str, argv_conf: str | None, argv_host: str | None) -> tuple[config_mod.Config, str]:
    """Load the config (exit 2 with every error on a bad one), make what the daemon writes
    private (and what an earlier run left loose), set up logging, return (conf, host)."""
    private.enter()
    try:
        conf = config_mod.load(config_mod.find_conf(argv_conf))
    except config_mod.ConfigError as exc:
        print(f"lavalite {role}: refusing to start, bad configuration:\n{exc}", file=sys.stderr)
        sys.exit(2)
    host = local_host(argv_host)
    _check_tls(role, conf, host)
    log_mod.setup(role, host, conf)
    private.tighten_state(conf, log)
    # a reload asked for while the daemon starts must not kill it (SIGHUP's default); run()
    # installs the real handler, and children started from the loop get SIGHUP's default back
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return conf, host


def _check_tls(role: str, conf: config_mod.Config, host: str) -> None:
    """With TLS on, files that cannot serve this host stop the start, as a bad configuration
    does (exit 2): a daemon that could not complete one handshake would only log failures."""
    if not conf.cluster.tls_ca:
        return
    from lavalite import tls

    errors = tls.check(conf, host, daemon=True)
    if errors:
        print(
            f"lavalite {role}: refusing to start, bad configuration:\n" + "\n".join(errors),
            file=sys.stderr,
        )
        sys.exit(2)


# Settings a running daemon cannot change: sockets are bound, files open. A reload that
# changes one says so; the rest of the new configuration applies.
RESTART_ONLY = (
    ("cluster", "listen"),
    ("cluster", "key_file"),
    ("cluster", "master_candidates"),
    ("cluster", "tls_ca"),
    ("cluster", "tls_cert"),
    ("cluster", "tls_key"),
    ("paths", "state_dir"),
    ("paths", "spool_dir"),
    ("paths", "run_dir"),
    ("mbatchd", "port"),
    ("mbatchd", "database"),
    ("mbatchd", "metrics_port"),
    ("lim", "port"),
    ("lim", "metrics_port"),
    ("lim", "supervise_mbatchd"),
    ("sbatchd", "metrics_port"),
    ("sbatchd", "work_dir"),
    ("sbatchd", "shepherds"),
    ("sbatchd", "cgroups"),
    ("sbatchd", "cgroup_slice"),
)


def reread(role: str, host: str, conf: config_mod.Config) -> config_mod.Config | None:
    """SIGHUP: the configuration re-read from conf.path, or None when it is bad: the error is
    logged exactly as config-check reports it, and the daemon keeps the one it runs."""
    try:
        new = config_mod.load(conf.path)
    except config_mod.ConfigError as exc:
        log.error("reload refused, keeping the running configuration; bad configuration:\n%s", exc)
        return None
    log_mod.setup(role, host, new)
    for sec, key in RESTART_ONLY:
        if getattr(getattr(conf, sec), key) != getattr(getattr(new, sec), key):
            log.warning("reload: [%s] %s changed; it takes effect at the next restart", sec, key)
            setattr(getattr(new, sec), key, getattr(getattr(conf, sec), key))
    log.info("reloaded %s", conf.path)
    return new


CLAIM = ".cluster"  # in a directory a cluster's daemons own: that cluster's state_dir


def claim(directory: str, key: str, state_dir: str) -> None:
    """Mark `directory` (named by config `key`) as the cluster's whose state is in state_dir,
    or refuse it (OSError, a start-up error) if another cluster marked it first: two
    clusters sharing a spool or a records directory would adopt, report and remove each
    other's jobs."""
    path = os.path.join(directory, CLAIM)
    try:
        with open(path) as f:
            owner = f.read().strip()
    except FileNotFoundError:
        owner = ""
    if owner and owner != state_dir:
        raise OSError(
            f"{key} {directory} belongs to the cluster whose state_dir is {owner} "
            f"(says {path}); give each cluster its own, or remove {path} if that "
            f"cluster is gone"
        )
    if not owner:
        write_whole(path, f"{state_dir}\n")


def unclaim(directory: str) -> None:
    os.unlink(os.path.join(directory, CLAIM))


def write_pid(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_whole(path, f"{os.getpid()}\n")


def run(
    main: Callable[[asyncio.Event], Coroutine[Any, Any, Any]],
    reload: Callable[[], None] | None = None,
) -> Any:
    """Run coroutine function main(stop_event) on uvloop until it returns; SIGTERM and SIGINT
    set stop_event so the role can finish its turn and close cleanly. SIGHUP calls reload()
    in the loop, between two turns, so a role never sees its configuration change mid-turn."""
    from lavalite import hmacsha, protocol

    protocol.use_orjson()
    hmacsha.use_openssl()

    async def wrapper() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if reload is not None:
            loop.add_signal_handler(signal.SIGHUP, reload)
        return await main(stop)

    try:
        import uvloop
    except ImportError:  # a plain asyncio loop works, only slower
        return asyncio.run(wrapper())
    return uvloop.run(wrapper())


async def sleep_or_stop(stop: asyncio.Event, seconds: float, *also: asyncio.Event) -> None:
    """Sleep, but wake at once when the daemon is asked to stop, or any event of `also` is set
    (a connection closed: waiting out the sleep would only delay noticing)."""
    waiters = [asyncio.ensure_future(e.wait()) for e in (stop, *also)]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def main(
    role: str,
    argv: list[str],
    factory: Callable[[config_mod.Config, str, argparse.Namespace], Any],
    startup_errors: type[Exception] | tuple[type[Exception], ...],
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """A daemon's whole life: arguments (`options(parser)` adds the role's own), configuration,
    logging, `factory(conf, host, args)` (an object with `serve(stop)` and `reload()`), then
    the loop. A startup_error (no key, no store...) is logged and exits 2, like a bad
    configuration."""
    ap = argparse.ArgumentParser(prog=f"lavalite --role {role}")
    ap.add_argument("--conf", help="lavalite.conf (default: the usual search)")
    ap.add_argument("--host", help="this node's name (default: $LAVALITE_HOST, the host name)")
    if options:
        options(ap)
    args = ap.parse_args(argv)
    conf, host = setup(role, args.conf, args.host)
    try:
        server = factory(conf, host, args)
    except startup_errors as exc:
        log.error("%s cannot start: %s", role, exc)
        return 2
    run(server.serve, server.reload)
    return 0
