"""The zygote: a small process forked when sbatchd starts, before its heap grows, that forks
the per-job shepherds on sbatchd's behalf.

Forking sbatchd itself costs its whole page table and copy-on-write faults on every later
write (about 2 ms a job here for a 50 MB daemon, spent on the event loop); the zygote's fork
is about 4 times cheaper and happens in another process, on another core. Requests and replies
are JSON datagrams on a SOCK_SEQPACKET pair: {"key": ..., "kwargs": {...}} in, {"key": ...,
"pid": N} or {"key": ..., "error": "..."} out. The zygote ignores SIGCHLD, so the kernel reaps
the shepherds it forks; sbatchd follows each shepherd through a pidfd.
"""
import json
import os
import signal
import socket

MAX_REQUEST = 1 << 20


def start(launch):
    """Fork the zygote; return sbatchd's end of the socket pair. `launch(**kwargs)` forks one
    shepherd and returns its pid."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (ours, theirs):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    pid = os.fork()
    if pid:
        theirs.close()
        return ours
    ours.close()
    try:
        _serve(theirs, launch)
    finally:
        os._exit(0)


def _serve(sock, launch):
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)     # it ends when sbatchd's end of the pair closes
    while True:
        data = sock.recv(MAX_REQUEST)
        if not data:
            return
        req = json.loads(data)
        try:
            reply = {"key": req["key"], "pid": launch(**req["kwargs"])}
        except OSError as exc:
            reply = {"key": req["key"], "error": f"fork failed: {exc.strerror}"}
        sock.send(json.dumps(reply).encode())
