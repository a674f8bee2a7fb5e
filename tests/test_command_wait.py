"""Commands across a restarting mbatchd: a command that cannot reach mbatchd waits and retries
([cluster] command_wait, $LAVALITE_COMMAND_WAIT) with one line on stderr; a refusal is never
retried; a submit whose first send reached an mbatchd that died before answering is sent again
with the same request id and makes exactly one job, and one without a request id is not sent
again."""

import copy
import os
import signal
import socket
import struct
import threading
import uuid

import orjson
import pytest
from conftest import Cluster, wait_until

from lavalite import auth
from lavalite.client import Client, ClientError

WAITING = "retrying for up to"


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


def _kill9_mbatchd(c):
    """SIGKILL mbatchd and return once its port refuses connections (LIM restarts it after
    restart_backoff)."""
    os.kill(c.pid("mbatchd"), signal.SIGKILL)
    wait_until(
        lambda: _refused(c.conf.mbatchd.port),
        30,
        lambda: "mbatchd to stop answering after SIGKILL\n" + c.logs(),
        0.02,
    )


def test_a_command_waits_while_lim_restarts_mbatchd(make_cluster):
    c = make_cluster(lim={"restart_backoff": "6"})
    _kill9_mbatchd(c)
    res = c.cli("submit", "-o", "/dev/null", "--", "true", check=False)
    assert res.returncode == 0, res.stdout + res.stderr + c.logs()
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and WAITING in lines[0] and "cannot reach mbatchd" in lines[0], lines
    job = int(res.stdout.split("<")[1].split(">")[0])
    assert c.wait([job])[job]["stat"] == "DONE"
    refused = c.cli("kill", "999999", check=False)
    assert refused.returncode == 1 and WAITING not in refused.stderr, refused.stderr


def test_unreachable_after_the_wait_exits_3(cluster):
    cluster.stop()
    cluster.env["LAVALITE_COMMAND_WAIT"] = "0.5"
    res = cluster.cli("jobs", check=False)
    assert res.returncode == 3 and "cannot reach mbatchd" in res.stderr, res.stderr
    assert res.stderr.count(WAITING) == 1, res.stderr


def test_a_bad_command_wait_variable_is_a_usage_error(tmp_path):
    c = Cluster(tmp_path / "c")  # configured, never started
    c.env["LAVALITE_COMMAND_WAIT"] = "soon"
    res = c.cli("jobs", check=False)
    assert res.returncode == 2 and "$LAVALITE_COMMAND_WAIT: expected a duration" in res.stderr


class DyingMaster:
    """A loopback relay in front of mbatchd. The first connection's request reaches mbatchd,
    which commits and answers; then mbatchd is SIGKILLed and the client's connection closed
    before that answer is passed on: for the client, mbatchd died mid-request. Later
    connections are relayed as they are."""

    def __init__(self, cluster):
        self.cluster, self.answered = cluster, None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        first = True
        while True:
            client, _ = self.listener.accept()
            try:
                server = socket.create_connection(("127.0.0.1", self.cluster.conf.mbatchd.port))
            except OSError:
                client.close()  # mbatchd down: refused, as it would be
                continue
            if first:
                first = False
                self._die_after_answering(client, server)
            else:
                for a, b in ((client, server), (server, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def _die_after_answering(self, client, server):
        (challenge,) = _frames(server, 1)
        client.sendall(struct.pack(">I", len(challenge)) + challenge)
        server.sendall(client.recv(1 << 20))  # hello + submit, sent together
        frames = _frames(server, 2)  # the greeting, then the submit's answer
        self.answered = orjson.loads(frames[1][: -auth.TAG])  # its MAC trailer off
        os.kill(self.cluster.pid("mbatchd"), signal.SIGKILL)
        server.close()
        client.close()


def _frames(sock, n):
    buf, out = b"", []
    while len(out) < n:
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
            chunk = sock.recv(1 << 16)
            assert chunk, "mbatchd closed the connection"
            buf += chunk
        size = struct.unpack(">I", buf[:4])[0]
        out.append(buf[4 : 4 + size])
        buf = buf[4 + size :]
    return out


def _pipe(src, dst):
    try:
        while chunk := src.recv(1 << 16):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        src.close()
        dst.close()


def _relayed_client(c):
    """A Client of cluster c that reaches mbatchd through a DyingMaster."""
    relay = DyingMaster(c)
    conf = copy.deepcopy(c.conf)
    conf.mbatchd.port = relay.port
    return relay, Client(conf=conf)


def test_a_submit_retried_across_an_mbatchd_crash_makes_one_job(make_cluster, capsys):
    c = make_cluster(lim={"restart_backoff": "2"})
    relay, client = _relayed_client(c)
    with client:
        job = client.submit(
            ["true"],
            req=uuid.uuid4().hex,
            cwd=c.state,
            out="/dev/null",
            env={"PATH": os.environ["PATH"]},
        )
    assert relay.answered["ok"] and relay.answered["job"] == job, relay.answered
    assert capsys.readouterr().err.count(WAITING) == 1
    assert [j["id"] for j in c.client.jobs([], all=True)] == [job], "one job, not two"
    assert c.wait([job])[job]["stat"] == "DONE"


def test_a_submit_without_request_id_is_not_sent_twice(make_cluster):
    """Nothing would tell its second sending from a new job: it fails (exit 3), and the one
    job its first sending made is there."""
    c = make_cluster(lim={"restart_backoff": "2"})
    relay, client = _relayed_client(c)
    with client, pytest.raises(ClientError) as failed:
        client.submit(["true"], cwd=c.state, out="/dev/null", env={"PATH": os.environ["PATH"]})
    assert failed.value.code == "unreachable" and failed.value.sent
    assert [j["id"] for j in c.client.jobs([], all=True)] == [relay.answered["job"]]
