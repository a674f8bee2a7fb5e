"""What every daemon role shares: config loading that refuses a bad file, logging, pid files,
the event loop (uvloop, imported here lazily: the CLI path never pays for it), and stopping
cleanly on SIGTERM/SIGINT."""
import asyncio
import logging
import os
import signal
import sys

from lavalite import config as config_mod
from lavalite.hosts import local_host

log = logging.getLogger("lavalite")


def setup(role, argv_conf, argv_host):
    """Load the config (exit 2 with every error on a bad one), set up logging, return
    (conf, host)."""
    try:
        conf = config_mod.load(config_mod.find_conf(argv_conf))
    except config_mod.ConfigError as exc:
        print(f"lavalite {role}: refusing to start, bad configuration:\n{exc}", file=sys.stderr)
        sys.exit(2)
    host = local_host(argv_host)
    logging.basicConfig(
        level=getattr(logging, conf.logging.level.upper()),
        format=f"%(asctime)s {role}@{host}[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr)
    return conf, host


def write_pid(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def run(main):
    """Run coroutine function main(stop_event) on uvloop until it returns; SIGTERM and SIGINT
    set stop_event so the role can finish its turn and close cleanly."""
    from lavalite import protocol
    protocol.use_orjson()

    async def wrapper():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    try:
        import uvloop
    except ImportError:        # a plain asyncio loop works, only slower
        return asyncio.run(wrapper())
    return uvloop.run(wrapper())


async def sleep_or_stop(stop, seconds):
    """Sleep, but wake at once when the daemon is asked to stop."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
