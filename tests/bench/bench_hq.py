#!/usr/bin/env python3
"""HyperQueue on the drain workload, for bench_drain.py --hq: N /bin/true tasks, one local
worker with SLOTS cores (hyperqueue's LocalCluster embeds the server and the worker).

Runs under a separate bench venv that has the `hyperqueue` package (never the product's):
    python3 -m venv /tmp/hqvenv && /tmp/hqvenv/bin/pip install hyperqueue
    /tmp/hqvenv/bin/python tests/bench/bench_hq.py 1000 16
Prints one JSON line: submit_s, drain_s (submit start to the last task's exit), finished,
polled_s (submit start to wait_for_jobs' return).

The drain ends when the last task exits, as the kernel saw it: wait_for_jobs looks once a
second, so its return rounds a drain up to whole seconds (1.1 s reads as 2.0). The worker
runs in this process, so the tasks are our children: their exits come from the kernel's
process events (the proc connector, root only), read once the job has ended.
"""

import json
import os
import socket
import struct
import sys
import tempfile
import time

from hyperqueue import Job, LocalCluster
from hyperqueue.cluster import WorkerConfig

NETLINK_CONNECTOR, CN_IDX_PROC, CN_VAL_PROC = 11, 1, 1
PROC_CN_MCAST_LISTEN, PROC_EVENT_EXIT, NLMSG_DONE = 1, 0x80000000, 3
SO_RCVBUFFORCE = 33
NLMSG = struct.Struct("=IHHII")  # length, type, flags, seq, pid
CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp_ns (CLOCK_MONOTONIC)
EXIT = struct.Struct("=iiIIii")  # pid, tgid, exit code, signal, parent pid, tgid


class ChildExits:
    """The exit times of this process's children, from the kernel's process events. The
    events wait in the socket (a buffer large enough for the run) until `times` reads them,
    so nothing here takes CPU while the tasks run."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 256 << 20)
        self.sock.bind((os.getpid(), CN_IDX_PROC))
        op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
        msg = CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
        self.sock.send(NLMSG.pack(NLMSG.size + len(msg), NLMSG_DONE, 0, 0, os.getpid()) + msg)

    def times(self):
        """Monotonic seconds of each child's exit since the start (an overflow raises
        ENOBUFS rather than leave exits out)."""
        me, out = os.getpid(), []
        self.sock.setblocking(False)
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return out
            at = 0
            while at + NLMSG.size <= len(data):
                length = NLMSG.unpack_from(data, at)[0]
                event = at + NLMSG.size + CN_MSG.size
                what, _, ns = EVENT.unpack_from(data, event)
                if what == PROC_EVENT_EXIT:
                    pid, tgid, _, _, _, parent = EXIT.unpack_from(data, event + EVENT.size)
                    if parent == me and pid == tgid:
                        out.append(ns / 1e9)
                at += (length + 3) & ~3


def main():
    n, slots = int(sys.argv[1]), int(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="hq-bench-") as d:
        os.environ["TMPDIR"] = d  # its sockets (hq-lc-*), else left behind in /tmp
        with LocalCluster(server_dir=d, worker_config=WorkerConfig(cores=slots)) as cluster:
            client = cluster.client()
            job = Job()
            for _ in range(n):
                job.program(["/bin/true"], stdout=None, stderr=None)
            exits = ChildExits()
            t0 = time.monotonic()
            submitted = client.submit(job)
            t_submit = time.monotonic() - t0
            ok = client.wait_for_jobs([submitted])
            polled = time.monotonic() - t0
            ends = exits.times()
    if len(ends) != n:
        sys.exit(f"saw {len(ends)} task exits, not {n} (the kernel's process events need root)")
    print(
        json.dumps(
            {
                "submit_s": t_submit,
                "drain_s": max(ends) - t0,
                "polled_s": polled,
                "finished": n if ok else "failed",
            }
        )
    )


if __name__ == "__main__":
    main()
