"""Strangers (connections that have not proved they hold the cluster key) and peers that do
not read cannot exhaust a daemon: a small frame limit until the hello is verified, a hello
deadline, a cap on waiting connections (the oldest dropped), a bound on what a peer may leave
unread, one throttled line per bad peer instead of tracebacks. Real daemons, raw sockets."""

import os
import resource
import socket
import struct

import orjson
import pytest
from conftest import wait_until
from rawpeer import RawPeer, key_of

from lavalite import auth
from lavalite.peer import HELLO_DEADLINE, MAX_STRANGERS, WRITE_BOUND, stranger_cap
from lavalite.protocol import STRANGER_FRAME, VERSION
from roles.cli.local import free_port


def _conn(cluster, role="mbatchd"):
    """A raw connection that says nothing."""
    s = socket.socket()
    s.settimeout(10)
    s.connect(("127.0.0.1", getattr(cluster.conf, role).port))
    return s


def _peer(cluster, rcvbuf=None):
    return RawPeer(cluster.conf.mbatchd.port, rcvbuf=rcvbuf)


def _closed(sock):
    """Whether the daemon has closed `sock` (EOF or reset); False while it is still open.
    What it sent before (its challenge) is read and passed over."""
    sock.setblocking(False)
    try:
        while sock.recv(1 << 16):
            pass
        return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _log(cluster):
    """What the daemons logged (to stderr, collected under the state directory's log/)."""
    logdir = os.path.join(cluster.state, "log")
    out = []
    for name in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, name), errors="replace") as f:
            out.append(f.read())
    return "".join(out)


def _fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _enough_fds(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def test_unauthenticated_big_frame_is_refused_before_its_body(cluster):
    with _peer(cluster) as p:
        p.sock.sendall(struct.pack(">I", 1 << 20) + b"x" * 1000)  # the rest never comes
        reply = p.read()
        assert reply["error"]["code"] == "frame_too_big", reply
        assert str(STRANGER_FRAME) in reply["error"]["message"]
        assert p.read() is None, "the connection must be closed"
    assert cluster.client.jobs([], all=True) == []


def test_a_stranger_gets_one_frame_to_say_hello(cluster):
    body = b"{not json"
    with _peer(cluster) as p:
        p.sock.sendall(struct.pack(">I", len(body)) + body + p.hello(key_of(cluster)))
        p.session = None  # its answer is unsealed: the hello went unread
        assert p.read()["error"]["code"] == "bad_frame"
        assert p.read() is None, "closed, the hello behind the bad frame unread"


def test_hello_and_a_big_request_in_one_write_are_served(cluster):
    """The frame right behind a verified hello has the full limit, even in the same write."""
    big = {"v": VERSION, "op": "ping", "id": 1, "pad": "x" * (2 * STRANGER_FRAME)}
    with _peer(cluster) as p:
        p.sock.sendall(p.hello(key_of(cluster)) + p.frame(big))
        assert p.read()["ok"]
        reply = p.read()
        assert reply["ok"] and reply["id"] == 1, reply


@pytest.mark.parametrize("role", ["mbatchd", "lim"])
def test_silent_connections_are_closed_after_the_hello_deadline(cluster, role):
    pid = cluster.pid(role)
    before = _fds(pid)
    socks = [_conn(cluster, role=role) for _ in range(300)]
    try:
        wait_until(
            lambda: all(_closed(s) for s in socks),
            HELLO_DEADLINE + 30,
            "the silent connections to be closed after the hello deadline",
        )
        wait_until(lambda: _fds(pid) <= before + 5, 10, "mbatchd to let their descriptors go")
    finally:
        for s in socks:
            s.close()
    assert "Traceback" not in _log(cluster)
    assert cluster.cli("jobs", "-a").returncode == 0


def test_the_cap_leaves_half_the_descriptors_to_peers_with_the_key():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (600, hard))
        assert stranger_cap() == 300
        if hard >= 2 * MAX_STRANGERS:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            assert stranger_cap() == MAX_STRANGERS
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_past_the_cap_the_oldest_stranger_is_dropped(cluster):
    soft, _ = resource.prlimit(cluster.pid("mbatchd"), resource.RLIMIT_NOFILE)
    cap = min(MAX_STRANGERS, soft // 2)  # what mbatchd allows itself
    _enough_fds(cap + 200)
    socks = [_conn(cluster) for _ in range(cap)]
    try:
        newest = _peer(cluster)
        socks.append(newest.sock)
        wait_until(
            lambda: _closed(socks[0]), HELLO_DEADLINE + 30, "the oldest stranger to be closed"
        )
        assert newest.login(key_of(cluster))["ok"], "a new peer gets in past the cap"
        wait_until(lambda: "the oldest dropped" in _log(cluster), 10, "a log line for the drop")
        assert cluster.cli("jobs", "-a").returncode == 0
    finally:
        for s in socks:
            s.close()


def test_a_peer_that_never_reads_is_dropped(cluster):
    sent, dropped = 0, False
    with _peer(cluster, rcvbuf=4096) as p:
        p.sock.sendall(p.hello(key_of(cluster)))  # and never read again
        # a ping's reply is longer than the ping: four times the bound in requests is ample
        while sent < 4 * WRITE_BOUND:
            pings = b"".join(p.frame({"v": VERSION, "op": "ping", "id": i}) for i in range(2000))
            try:
                p.sock.sendall(pings)
            except (ConnectionResetError, BrokenPipeError):
                dropped = True
                break
            sent += len(pings)
    assert dropped, "the daemon kept buffering replies for a peer that does not read"
    wait_until(lambda: "has not read the last" in _log(cluster), 10, "a log line for the drop")
    assert _log(cluster).count("has not read the last") == 1
    assert cluster.cli("jobs", "-a").returncode == 0


def test_a_deeply_nested_hello_gets_an_error_and_one_short_log_line(cluster):
    with _peer(cluster) as p:
        msg = auth.hello(
            key_of(cluster), "user", "testhost", "mbatchd", p.nonce, uid=0, user="root"
        )
        body = orjson.dumps(msg)[:-1] + b',"deep":' + b"[" * 1000 + b"]" * 1000 + b"}"
        p.sock.sendall(struct.pack(">I", len(body)) + body)
        reply = p.read()
        assert reply["ok"] is False and reply["error"]["code"] == "bad_frame", reply
        assert p.read() is None
    wait_until(lambda: "nested too deep" in _log(cluster), 10, "a log line for the bad hello")
    lines = [line for line in _log(cluster).splitlines() if "nested too deep" in line]
    assert len(lines) == 1 and len(lines[0]) < 300, lines
    assert "Traceback" not in _log(cluster)


def test_an_oversized_metrics_request_is_refused_without_a_traceback(make_cluster):
    port = free_port()
    cluster = make_cluster(mbatchd={"metrics_port": str(port)})
    for request in (
        b"GET /" + b"x" * (70 << 10) + b" HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n" + b"X-Flood: 1\r\n" * 1000 + b"\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            try:
                s.sendall(request)
                answer = s.recv(100)
            except ConnectionResetError:  # closed while the rest was unread: refused too
                answer = b""
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer
    wait_until(lambda: "metrics: request from" in _log(cluster), 10, "a log line for the request")
    assert _log(cluster).count("metrics: request from") == 1, "the second line is throttled"
    assert "Traceback" not in _log(cluster)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /status HTTP/1.1\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
