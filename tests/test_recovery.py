"""Jobs flow again soon after mbatchd crashes: LIM restarts it after restart_backoff unless it
keeps failing to start; sbatchd notices the lost connection at once and, for the first minute,
retries about twice a second. tests/bench/bench_recovery.py measures the time it takes."""

import asyncio
import os
import signal
from types import SimpleNamespace

from lavalite.daemon import sleep_or_stop
from roles.lim import HEALTHY, restart_delay
from roles.sbatchd.server import RECONNECT_FAST, reconnect_delay

LIM = SimpleNamespace(restart_backoff=0.5, restart_backoff_max=10.0)


def test_restart_delay_doubles_only_while_mbatchd_fails_to_start():
    delays, last = [], None
    for _ in range(7):  # each one dying a second after its start
        last = restart_delay(last, 1.0, LIM)
        delays.append(last)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert restart_delay(last, HEALTHY + 1, LIM) == 0.5, "a crash after a run is no loop"


def test_reconnect_delay_stays_short_for_the_first_window():
    window, fast = RECONNECT_FAST
    delays, last = [], 0.2
    for _ in range(6):
        last = reconnect_delay(last, window / 2, 30.0)
        delays.append(last)
    assert delays == [0.4, fast, fast, fast, fast, fast]
    assert reconnect_delay(fast, window + 1, 30.0) == 2 * fast  # then it backs off
    assert reconnect_delay(20.0, window + 1, 30.0) == 30.0


def test_sleep_or_stop_wakes_when_another_event_is_set():
    async def run():
        stop, closed = asyncio.Event(), asyncio.Event()
        asyncio.get_running_loop().call_soon(closed.set)
        await asyncio.wait_for(sleep_or_stop(stop, 3600, closed), 30)
        return stop.is_set()

    assert asyncio.run(run()) is False


def test_sbatchd_registers_again_as_soon_as_mbatchd_is_back(make_cluster):
    """Pings an hour apart: sbatchd waiting out its sleep between two pings would leave the
    host unregistered (no job dispatched) for that hour."""
    c = make_cluster(lim={"heartbeat_interval": "3600"})
    os.kill(c.pid("mbatchd"), signal.SIGKILL)
    job = c.submit(["true"])  # the client waits for LIM's restart
    assert c.wait([job], timeout=60)[job]["stat"] == "DONE"
    with open(os.path.join(c.state, "log", "sbatchd.log")) as f:
        assert "lost mbatchd" in f.read()
