#!/usr/bin/env python3
"""Strangers benchmark: a 16-slot cluster drains N trivial jobs while 1,000 connections that
never say hello are held open against mbatchd (each one the daemon closes is opened again) and
an authenticated peer asks for the whole job list over and over without reading the answers
(dropped by mbatchd, it connects again); beside the same drain without them, in the same run.

    .venv/bin/python tests/bench/bench_strangers.py [--jobs 1000] [--slots 16] [--silent 1000]
        [--program "python lavalite.py" | --program dist/lavalite] [--markdown docs/performance.md]

It prints figures and ratios and asserts nothing about time. A user's `bjobs` is a new
connection, a hello and a `jobs` query (lavalite.Client), one every 20 ms during the drain.
The attack runs in a process of its own and starts HELLO_DEADLINE + 1 s before the drain.
"""

import argparse
import multiprocessing
import os
import resource
import selectors
import shlex
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_drain import ROOT, Cluster, fmt, pct, submit_client  # noqa: E402
from benchlib import drain_arguments, report  # noqa: E402

from lavalite import Client, auth  # noqa: E402
from lavalite import config as config_mod  # noqa: E402
from lavalite.client import _read_frame  # noqa: E402
from lavalite.peer import HELLO_DEADLINE  # noqa: E402
from lavalite.protocol import VERSION, encode  # noqa: E402
from roles.cli.simulator import peak_rss_mb  # noqa: E402


class Attacker(threading.Thread):
    """A thread against mbatchd's `address` until `stop` is set."""

    def __init__(self, address):
        super().__init__(daemon=True)
        self.address = address
        self.stop = threading.Event()


class Silent(Attacker):
    """Holds `n` connections to mbatchd that never send a byte; reopens each one it closes."""

    def __init__(self, address, n):
        super().__init__(address)
        self.n = n
        self.reopened = 0

    def open(self, sel):
        s = socket.create_connection(self.address)
        sel.register(s, selectors.EVENT_READ)

    def run(self):
        with selectors.DefaultSelector() as sel:
            for _ in range(self.n):
                self.open(sel)
            while not self.stop.is_set():
                for key, _ in sel.select(0.2):
                    if not _closed(key.fileobj):  # the daemon's challenge: read, unanswered
                        continue
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                    self.open(sel)
                    self.reopened += 1
            for key in list(sel.get_map().values()):
                key.fileobj.close()


def _closed(sock) -> bool:
    """Whether a readable socket is at its end (EOF or reset) rather than holding data."""
    try:
        return not sock.recv(1 << 16)
    except ConnectionResetError:
        return True


class NonReader(Attacker):
    """An authenticated peer that sends `jobs` queries (the whole list) and never reads."""

    def __init__(self, address, key):
        super().__init__(address)
        self.key = key
        self.dropped = 0

    def run(self):
        query = {"v": VERSION, "op": "jobs", "id": 1, "jobs": [], "all": True}
        while not self.stop.is_set():
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(self.address)
            challenge = _read_frame(s, bytearray())
            hello = auth.hello(
                self.key, "user", "bench", "mbatchd", challenge["nonce"], uid=0, user="root"
            )
            session = auth.Session(auth.session_key(self.key, hello), dialler=True)
            s.sendall(encode(hello))
            try:
                while not self.stop.wait(0.02):
                    s.sendall(encode(query, session))
            except (ConnectionResetError, BrokenPipeError):
                self.dropped += 1
            finally:
                s.close()


def attack(address, key, n, stop, counts):
    """In a process of its own (so the attackers' threads do not slow the bench's own
    client): the silent connections and the non-reader until `stop`; their counts to `counts`."""
    silent, reader = Silent(address, n), NonReader(address, key)
    for t in (silent, reader):
        t.start()
    stop.wait()
    for t in (silent, reader):
        t.stop.set()
        t.join()
    counts.put((silent.reopened, reader.dropped))


def bjobs_loop(conf, stop, lat):
    """A user's bjobs every 20 ms: connect, hello, one query; the latency of each."""
    while not stop.wait(0.02):
        t0 = time.perf_counter()
        with Client(conf_path=conf) as c:
            c.jobs()
        lat.append(time.perf_counter() - t0)


def drain(args, attacked):
    """The drain's figures; attacked, once the attack has run HELLO_DEADLINE + 1 s, so that
    mbatchd is already closing silent connections (and they are opened again) as it drains."""
    mp = multiprocessing.get_context("fork")
    stop, counts = mp.Event(), mp.Queue()
    with Cluster(args.program, args.slots) as cl:
        conf = config_mod.load(cl.conf)
        if attacked:
            mp.Process(
                target=attack,
                args=(
                    ("127.0.0.1", conf.mbatchd.port),
                    auth.load_key(conf.cluster.key_file),
                    args.silent,
                    stop,
                    counts,
                ),
            ).start()
            time.sleep(HELLO_DEADLINE + 1)
        done, lat = threading.Event(), []
        user = threading.Thread(target=bjobs_loop, args=(cl.conf, done, lat))
        user.start()
        t0 = time.time()
        ids, _ = submit_client(cl, args.jobs, args.cwd)
        cl.drain(ids, args.timeout)
        elapsed = time.time() - t0
        done.set()
        user.join()
        stop.set()
        reopened, dropped = counts.get() if attacked else ("-", "-")
        return {
            "drain time (s)": elapsed,
            "jobs/s": args.jobs / elapsed,
            "bjobs p50 / p99 (ms)": (pct(lat, 50) * 1e3, pct(lat, 99) * 1e3),
            "bjobs run": len(lat),
            "mbatchd peak RSS (MB)": peak_rss_mb(cl.mbatchd),
            "silent connections closed by mbatchd": reopened,
            "non-reader dropped": dropped,
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    drain_arguments(ap, timeout=300)
    ap.add_argument("--silent", type=int, default=1000, help="silent connections held open")
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 sockets and more
    args.cwd = tempfile.mkdtemp(prefix="lavalite-bench-cwd-")
    quiet = drain(args, attacked=False)
    attacked = drain(args, attacked=True)
    os.rmdir(args.cwd)
    attacked["jobs/s ÷ quiet"] = attacked["jobs/s"] / quiet["jobs/s"]
    attacked["bjobs p99 ÷ quiet"] = (
        attacked["bjobs p50 / p99 (ms)"][1] / quiet["bjobs p50 / p99 (ms)"][1]
    )
    quiet["jobs/s ÷ quiet"] = quiet["bjobs p99 ÷ quiet"] = 1.0
    table = [["", "quiet", "attacked"]] + [[k, fmt(quiet[k]), fmt(attacked[k])] for k in attacked]
    head = (
        f"{args.jobs} jobs of /bin/true, {args.slots} slots, submitted by one client; "
        f"attacked: {args.silent} silent connections and one peer that never reads; "
        f"program `{shlex.join(args.program)}`"
    )
    report(table, "Strangers (tests/bench/bench_strangers.py)", head, args.markdown)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
