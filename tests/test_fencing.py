"""sbatchd refuses orders from a deposed master: a real sbatchd process, and this test in the
place of mbatchd, speaking the protocol over loopback."""

import os
import pwd
import socket
import subprocess

import pytest
from conftest import LAUNCHER
from rawpeer import RawPeer

from lavalite import auth, config
from lavalite import protocol as P
from roles.cli.local import free_port


class FakeMaster(RawPeer):
    """The mbatchd side of one sbatchd connection, frame by frame."""

    def __init__(self, listener, keys):
        sock, _ = listener.accept()
        super().__init__(sock=sock, timeout=20)
        self.serve_login(keys)
        self.register = self.read()

    def recv_op(self):
        """The next frame that is not a ping (pings are answered), or None at close."""
        while True:
            msg = self.read()
            if msg is None or msg.get("op") != "ping":
                return msg
            self.send(P.reply(msg["id"]))

    def dispatch(self, epoch, job, cwd):
        self.send(
            {
                "v": P.VERSION,
                "op": "dispatch",
                "id": None,
                "epoch": epoch,
                "envs": {},
                "jobs": [
                    {
                        "id": job,
                        "attempt": 1,
                        "cmd": ["touch", f"ran.{job}"],
                        "user": pwd.getpwuid(os.getuid()).pw_name,
                        "uid": os.getuid(),
                        "cwd": cwd,
                        "hosts": [["testhost", 1]],
                        "slots": 1,
                        "out": "/dev/null",
                    }
                ],
            }
        )


@pytest.fixture
def sbatchd(tmp_path):
    state = str(tmp_path)
    port = free_port()
    conf_path = config.write_state_conf(
        state,
        {
            "lavalite.conf": {
                "cluster": {
                    "master_candidates": "testhost",
                    "key_file": f"{state}/cluster.key",
                    "allow_root_jobs": "yes",
                },
                "hosts": {"testhost": "127.0.0.1"},
                "mbatchd": {"port": str(port)},
            }
        },
    )
    auth.create_key(f"{state}/cluster.key")
    listener = socket.create_server(("127.0.0.1", port))
    log = open(tmp_path / "sbatchd.log", "wb")
    proc = subprocess.Popen(
        LAUNCHER + ["--role", "sbatchd", "--conf", conf_path, "--host", "testhost"],
        stdout=log,
        stderr=log,
    )
    try:
        yield state, listener, auth.load_key(f"{state}/cluster.key")
    finally:
        proc.terminate()
        proc.wait(20)
        listener.close()


def test_sbatchd_refuses_an_older_epoch_and_remembers_the_newest(sbatchd):
    state, listener, keys = sbatchd
    master = FakeMaster(listener, keys)
    assert master.register["op"] == "register"
    master.dispatch(5, 1, state)
    start = master.recv_op()
    assert start["op"] == "report" and start["reports"][0]["kind"] == "start"
    master.dispatch(3, 2, state)  # a deposed master's order
    refusal = master.recv_op()
    while refusal is not None and refusal.get("op") == "report":  # job 1's exit report
        refusal = master.recv_op()
    assert refusal["error"]["code"] == P.STALE_EPOCH
    assert master.recv_op() is None, "sbatchd closes the connection of a deposed master"
    # It comes back (to whoever is master now), and job 2 never ran.
    again = FakeMaster(listener, keys)
    assert again.register["op"] == "register"
    assert os.path.exists(os.path.join(state, "ran.1"))
    assert not os.path.exists(os.path.join(state, "ran.2"))
    with open(os.path.join(state, "spool", "epoch-testhost")) as f:
        assert f.read().strip() == "5"
