"""Recorded sessions replayed: real daemons on loopback, real sessions recorded through a
relay, played again from a socket without the key (whole, in part, at once, later, to the
same daemon and to another with the same key): nothing is answered, nothing is acted on. A
frame altered, swapped or spliced into another session closes the connection; an old
protocol version is refused by name; a credential from LIM serves one connection only."""

import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import orjson
import pytest
from conftest import LAUNCHER, remove_cgroup_slice, start_sbatchd, wait_until
from rawpeer import RawPeer, key_of
from test_command_wait import _refused

from lavalite import auth, config
from lavalite.client import Client
from lavalite.protocol import VERSION, encode

_HDR = struct.Struct(">I")


class Recorder:
    """A loopback relay in front of (addr, port) that records the bytes of each connection it
    relays, both ways: sessions[i] = {"up": client to server, "down": server to client}."""

    def __init__(self, port, addr="127.0.0.1"):
        self.target = (addr, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sessions = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            server = socket.create_connection(self.target)
            record = {"up": bytearray(), "down": bytearray()}
            self.sessions.append(record)
            for src, dst, into in (
                (client, server, record["up"]),
                (server, client, record["down"]),
            ):
                threading.Thread(target=_pipe, args=(src, dst, into), daemon=True).start()

    def close(self):
        self.listener.close()


def _pipe(src, dst, into):
    try:
        while chunk := src.recv(1 << 16):
            into += chunk
            dst.sendall(chunk)
    except OSError:
        pass
    finally:  # shutdown, not just close: that wakes the other direction's blocked recv
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def frames(data):
    """The whole frames (header included) in recorded bytes."""
    out, pos = [], 0
    while len(data) - pos >= 4:
        end = pos + 4 + _HDR.unpack_from(data, pos)[0]
        out.append(bytes(data[pos:end]))
        pos = end
    return out


def _decode(frame):
    """A frame's JSON, sealed (its MAC trailer cut off) or not; None if neither."""
    for body in (frame[4:], frame[4 : -auth.TAG]):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return None


def replay(port, data, pause=0.0):
    """Connect without the key, send recorded bytes (after `pause` seconds), read until the
    daemon closes: the frames it sent, decoded ("open" last if it kept the connection open
    for 10 s: it took the replay)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        time.sleep(pause)
        s.sendall(data)
        got, closed = b"", True
        try:
            while chunk := s.recv(1 << 16):
                got += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            closed = False
    return [_decode(f) for f in frames(got)] + ([] if closed else ["open"])


def _answered(replies):
    """Any reply the daemon sent as served (ok), rather than a challenge or a refusal."""
    return [
        m
        for m in replies
        if not isinstance(m, dict) or m.get("ok") is not False and m.get("op") != "challenge"
    ]


def _stored_jobs(cluster):
    return sorted({row[0] for row in cluster.events()})


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


def _via(cluster, port):
    conf = config.load(cluster.conf_path)
    conf.mbatchd.port = port
    return conf


@pytest.fixture
def recorded_submit(cluster, tmp_path):
    """A real user session through a Recorder: a submit (no request id: nothing would
    deduplicate a second one) of a job that appends a line to a file. (recorder, its session,
    the file)."""
    marker = tmp_path / "ran"
    rec = Recorder(cluster.conf.mbatchd.port)
    with Client(conf=_via(cluster, rec.port)) as c:
        job = c.submit(["sh", "-c", f"echo ran >> {marker}"], cwd=str(tmp_path))
    assert cluster.wait([job])[job]["stat"] == "DONE"
    yield rec, rec.sessions[0], marker
    rec.close()


def test_a_recorded_user_session_replayed_is_refused_and_runs_nothing(
    cluster, make_cluster, recorded_submit
):
    _, session, marker = recorded_submit
    up = bytes(session["up"])
    hello, submit = frames(up)
    before = _stored_jobs(cluster)
    other = make_cluster(start=False)  # another cluster with the same key
    os.makedirs(os.path.dirname(other.conf.cluster.key_file), exist_ok=True)
    shutil.copy(cluster.conf.cluster.key_file, other.conf.cluster.key_file)
    other.start()
    for port, data, pause in (
        (cluster.conf.mbatchd.port, up, 0),  # whole, at once
        (cluster.conf.mbatchd.port, hello, 0),  # the hello alone
        (cluster.conf.mbatchd.port, up, 3),  # whole, later
        (cluster.conf.lim.port, up, 0),  # to another daemon
        (other.conf.mbatchd.port, up, 0),
    ):  # to another cluster
        replies = replay(port, data, pause)
        assert not _answered(replies), (port, pause, replies)
        refusal = replies[-1]
        assert refusal["error"]["code"] == "auth" and "challenge" in refusal["error"]["message"]
    assert _stored_jobs(cluster) == before and _stored_jobs(other) == []
    assert _lines(marker) == ["ran"], "the job ran once"
    assert "(a replay)" in cluster.logs()
    # the recorded frames cannot be spliced into a session of one's own either
    with RawPeer(cluster.conf.mbatchd.port) as p:
        assert p.login(key_of(cluster))["ok"]
        p.sock.sendall(submit)
        refusal = p.read()
        assert refusal["error"]["code"] == "auth" and "bad MAC" in refusal["error"]["message"]
        assert p.read() is None
    assert _stored_jobs(cluster) == before


def test_a_flipped_byte_or_two_swapped_frames_close_the_session_and_act_on_nothing(
    cluster, tmp_path
):
    submit = {
        "v": VERSION,
        "op": "submit",
        "id": 1,
        "spec": {"cmd": ["touch", str(tmp_path / "x")], "cwd": str(tmp_path)},
    }
    ping = {"v": VERSION, "op": "ping", "id": 2}
    for tamper in ("flip", "swap"):
        with RawPeer(cluster.conf.mbatchd.port) as p:
            assert p.login(key_of(cluster))["ok"]
            first, second = p.frame(submit), p.frame(ping)
            if tamper == "flip":  # one byte of the command: /tmp/... -> /tmq/...
                at = first.index(b"/tmp/") + 3
                first = first[:at] + b"q" + first[at + 1 :]
            else:
                first, second = second, first
            p.sock.sendall(first + second)
            refusal = p.read()
            assert refusal["error"]["code"] == "auth" and "bad MAC" in refusal["error"]["message"]
            assert p.read() is None, tamper
    assert _stored_jobs(cluster) == []
    assert cluster.client.call("ping")["ok"]
    assert cluster.logs().count("has a bad MAC") == 1, "one line, throttled"


def test_an_old_protocol_version_is_refused_by_name(cluster):
    with RawPeer(cluster.conf.mbatchd.port) as p:
        msg = auth.hello(
            key_of(cluster), "user", "testhost", "mbatchd", p.nonce, uid=0, user="root"
        )
        p.sock.sendall(encode(dict(msg, v=1)))
        refusal = p.read()
        assert refusal["error"]["code"] == "bad_version"
        assert "protocol version 1 is not supported; upgrade" in refusal["error"]["message"]
        assert p.read() is None


def _lim_credential(cluster, sn):
    """A credential the local LIM signs for us (the way of a user without the key)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(os.path.join(cluster.conf.paths.spool_dir, "lim.sock"))
        p = RawPeer(sock=s)
        s.sendall(encode({"v": VERSION, "op": "sign", "id": 1, "sn": sn, "to": "mbatchd"}))
        assert p.read()["op"] == "challenge"
        return p.read()


def test_a_credential_from_lim_serves_one_connection(cluster):
    with RawPeer(cluster.conf.mbatchd.port) as p:
        signed = _lim_credential(cluster, p.nonce)
        assert signed["hello"]["uid"] == 0 and signed["hello"]["to"] == "mbatchd"
        p.sock.sendall(encode(signed["hello"]))
        p.session = auth.Session(bytes.fromhex(signed["session"]), dialler=True)
        assert p.read()["ok"], "its own connection: in, and the answer proves mbatchd"
        p.send({"v": VERSION, "op": "jobs", "id": 1, "all": True})
        assert p.read()["ok"]
    with RawPeer(cluster.conf.mbatchd.port) as again:  # the same credential once more
        again.sock.sendall(encode(signed["hello"]))
        refusal = again.read()
        assert refusal["error"]["code"] == "auth" and "(a replay)" in refusal["error"]["message"]
        assert again.read() is None


@pytest.fixture
def second_sbatchd(cluster, tmp_path):
    """One more sbatchd (host h2) whose connection to mbatchd goes through a Recorder.
    (its process, the recorder)."""
    rec = Recorder(cluster.conf.mbatchd.port)
    proc, slice_name = start_sbatchd(cluster, str(tmp_path / "h2"), "h2", 1, port=rec.port)
    yield proc, rec
    if proc.poll() is None:
        proc.terminate()
        proc.wait(20)
    rec.close()
    remove_cgroup_slice(slice_name)


def _h2(cluster):
    return next(
        (h["status"] for h in cluster.client.call("hosts")["hosts"] if h["name"] == "h2"), None
    )


def test_a_recorded_sbatchd_session_replayed_registers_nothing(cluster, second_sbatchd):
    proc, rec = second_sbatchd
    wait_until(lambda: _h2(cluster) == "ok", 30, "h2 registered")
    wait_until(lambda: len(frames(rec.sessions[0]["down"])) >= 4, 30, "a ping answered")
    proc.terminate()
    proc.wait(20)
    wait_until(lambda: _h2(cluster) != "ok", 30, "h2 gone")
    up = bytes(rec.sessions[0]["up"])
    for data, pause in ((up, 0), (frames(up)[0], 0), (up, 3)):
        replies = replay(cluster.conf.mbatchd.port, data, pause)
        assert not _answered(replies), replies
        assert _h2(cluster) != "ok", "the replayed register was not applied"


def _lim_conf(tmp_path, name, port, key_file):
    """A LIM of its own on loopback: candidate 'a' (which supervises no mbatchd), reached at
    127.0.0.1:`port` (for 'b': the Recorder in front of 'a')."""
    state = str(tmp_path / name)
    return config.write_state_conf(
        state,
        {
            "lavalite.conf": {
                "cluster": {"master_candidates": "a", "listen": "127.0.0.1", "key_file": key_file},
                "hosts": {"a": "127.0.0.1", "b": "127.0.0.1"},
                "lim": {"port": str(port)},
            },
            "lim.conf": {
                "lim": {
                    "heartbeat_interval": "0.5",
                    "heartbeat_misses": "3",
                    "supervise_mbatchd": "no",
                }
            },
        },
    )


@pytest.fixture
def two_lims(tmp_path):
    """LIM a (a candidate) and LIM b, whose heartbeats to a go through a Recorder.
    (a's conf, b's process, the recorder)."""
    from roles.cli.local import free_port

    key_file = str(tmp_path / "cluster.key")
    auth.create_key(key_file)
    port = free_port()
    a = _lim_conf(tmp_path, "a", port, key_file)
    procs = {}

    def start(name, conf):
        log = open(tmp_path / f"lim-{name}.log", "wb")
        procs[name] = subprocess.Popen(
            LAUNCHER + ["--role", "lim", "--conf", conf, "--host", name], stdout=log, stderr=log
        )

    start("a", a)
    wait_until(lambda: not _refused(port), 30, "LIM a listening")
    rec = Recorder(port)
    start("b", _lim_conf(tmp_path, "b", rec.port, key_file))
    yield config.load(a), procs["b"], rec
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
    rec.close()


def _b_alive(conf_a):
    """Whether LIM a counts LIM b alive (a's view, asked over its Unix socket)."""
    with RawPeer(path=os.path.join(conf_a.paths.spool_dir, "lim.sock")) as p:
        assert p.login(auth.load_key(conf_a.cluster.key_file), role="mbatchd", to="lim")["ok"]
        p.send({"v": VERSION, "op": "load", "id": 1})
        return bool(p.read()["hosts"].get("b", {}).get("alive"))


def test_a_recorded_lim_session_replayed_revives_nothing(two_lims):
    conf_a, lim_b, rec = two_lims
    wait_until(lambda: _b_alive(conf_a), 30, "LIM a hears b")
    wait_until(lambda: len(frames(rec.sessions[0]["down"])) >= 4, 30, "heartbeats answered")
    lim_b.terminate()
    lim_b.wait(20)
    wait_until(lambda: not _b_alive(conf_a), 30, "LIM a counts b dead")
    up = bytes(rec.sessions[0]["up"])
    for data, pause in ((up, 0), (frames(up)[0], 0), (up, 3)):
        replies = replay(conf_a.lim.port, data, pause)
        assert not _answered(replies), replies
        assert not _b_alive(conf_a), "a replayed heartbeat was taken"
