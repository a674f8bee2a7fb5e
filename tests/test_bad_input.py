"""Bad input never crashes a daemon, never half-applies, and always gets a clear error:
malformed and oversized frames, unauthenticated peers, unknown ops, bad configs, unknown
jobs and queues, an unreachable cluster."""

import os
import struct
import subprocess

from rawpeer import RawPeer, key_of

from lavalite.protocol import MAX_FRAME, VERSION


def _conn(cluster):
    return RawPeer(cluster.conf.mbatchd.port)


def _still_serves(cluster):
    job = cluster.submit(["/bin/true"])
    assert cluster.wait([job])[job]["stat"] == "DONE"


def test_unauthenticated_peer_is_refused(cluster):
    with _conn(cluster) as p:
        p.send({"v": VERSION, "op": "submit", "id": 1, "spec": {"cmd": ["/bin/true"]}})
        reply = p.read()
        assert reply["ok"] is False and reply["error"]["code"] == "auth"
        assert p.read() is None, "the connection must be closed"
    with _conn(cluster) as p:  # a hello signed with the wrong key
        assert p.login(b"x" * 64)["error"]["code"] == "auth"
    assert cluster.client.jobs([], all=True) == [], "nothing was submitted"
    _still_serves(cluster)


def test_malformed_frames_get_error_replies(cluster):
    with _conn(cluster) as p:
        assert p.login(key_of(cluster))["ok"]
        body = p.session.seal(b"{not json")
        p.sock.sendall(struct.pack(">I", len(body)) + body)
        assert p.read()["error"]["code"] == "bad_frame"
        for msg, code in [
            ([1, 2], "bad_frame"),
            ({"v": VERSION, "op": "frobnicate", "id": 3}, "unknown_op"),
            ({"v": VERSION, "op": "submit", "id": 4}, "bad_request"),
            ({"v": VERSION, "op": "submit", "id": 5, "spec": {"cmd": "notalist"}}, "bad_request"),
            (
                {"v": VERSION, "op": "register", "id": 6, "slots": 4, "running": []},
                "permission_denied",
            ),
            ({"v": VERSION, "op": "kill", "id": 7, "jobs": "x"}, "bad_request"),
            (
                {
                    "v": VERSION,
                    "op": "submit",
                    "id": 9,
                    "spec": {"cmd": ["true"], "cwd": "rel/dir"},
                },
                "bad_request",
            ),
        ]:
            p.send(msg)
            reply = p.read()
            assert reply["ok"] is False and reply["error"]["code"] == code, (msg, reply)
        assert reply["error"]["message"] == "cwd must be an absolute path"
        p.send({"v": VERSION, "op": "ping", "id": 8})  # the connection still works
        assert p.read()["ok"]
        p.send({"v": 99, "op": "jobs", "id": 2})  # another version: refused, closed
        assert p.read()["error"]["code"] == "bad_version"
        assert p.read() is None
    _still_serves(cluster)


def test_only_an_sbatchd_may_register_or_report(cluster):
    """A peer that holds the key but says it is a lim or an mbatchd is no worker: mbatchd
    refuses its register and report (it would otherwise add a host or end jobs)."""
    register = {"v": VERSION, "op": "register", "id": 1, "slots": 4, "running": []}
    report = {"v": VERSION, "op": "report", "id": 2, "reports": []}
    for role in ("lim", "mbatchd"):
        with _conn(cluster) as p:
            assert p.login(key_of(cluster), role=role, host="ghost")["ok"]
            for msg in (register, report):
                p.send(msg)
                reply = p.read()
                assert (reply.get("error") or {}).get("code") == "permission_denied", (
                    role,
                    msg["op"],
                    reply,
                )
    assert "ghost" not in {h["name"] for h in cluster.client.call("hosts")["hosts"]}
    _still_serves(cluster)


def test_oversized_frame_closes_the_connection(cluster):
    with _conn(cluster) as p:
        assert p.login(key_of(cluster))["ok"]
        p.sock.sendall(struct.pack(">I", MAX_FRAME + 1) + b"x" * 1024)
        assert p.read()["error"]["code"] == "frame_too_big"
        assert p.read() is None
    _still_serves(cluster)


def test_garbage_bytes_and_abrupt_close(cluster):
    for junk in (b"\x00\x00", b"\xff" * 64, b"GET / HTTP/1.0\r\n\r\n"):
        with _conn(cluster) as p:
            p.sock.sendall(junk)
    _still_serves(cluster)


def test_cli_errors_are_clear_and_nonzero(cluster):
    res = cluster.cli("submit", "-q", "nosuch", "--", "/bin/true", check=False)
    assert res.returncode == 1 and "Queue <nosuch> does not exist" in res.stderr
    res = cluster.cli("jobs", "424242", check=False)
    assert res.returncode == 1 and "Job <424242> is not found" in res.stderr
    res = cluster.cli("kill", "424242", check=False)
    assert res.returncode == 1 and "No matching job found" in res.stderr
    res = cluster.cli("jobs", "abc", check=False)
    assert res.returncode == 2 and "not a job id" in res.stderr
    res = cluster.cli("submit", check=False)
    assert res.returncode == 2 and "no command" in res.stderr
    res = cluster.cli("submit", "-W", "x:y", "--", "true", check=False)
    assert res.returncode != 0 and "-W takes" in res.stderr
    assert cluster.client.jobs([], all=True) == [], "no bad submit made a job"


def test_unreachable_mbatchd(cluster):
    cluster.stop()
    cluster.env["LAVALITE_COMMAND_WAIT"] = "0"  # no retrying (test_command_wait's)
    res = cluster.cli("jobs", check=False)
    assert res.returncode == 3 and "cannot reach mbatchd" in res.stderr


def test_bad_config_refused_by_daemon_and_config_check(cluster, tmp_path):
    conf = tmp_path / "bad"
    conf.mkdir()
    (conf / "lavalite.conf").write_text("[cluster]\nname = x\n[mbatchd]\nport = 99999\nbogus\n")
    (conf / "queues.conf").write_text("[serial]\npriority = high\n")
    res = cluster.cli("config-check", "--conf", str(conf / "lavalite.conf"), check=False)
    assert res.returncode == 2
    assert f"{conf}/lavalite.conf:4: [mbatchd] port" in res.stderr
    assert f"{conf}/lavalite.conf:5:" in res.stderr
    assert f"{conf}/queues.conf:2: [serial] priority" in res.stderr
    for role in ("mbatchd", "sbatchd", "lim"):
        proc = subprocess.run(
            cluster.program + ["--role", role, "--conf", str(conf / "lavalite.conf")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2 and "refusing to start" in proc.stderr
        assert f"{conf}/queues.conf:2: [serial] priority" in proc.stderr
    assert cluster.cli("config-check").returncode == 0


def test_sbatchd_refuses_job_records_where_another_user_could_swap_them(cluster, tmp_path):
    """work_dir (or its parent, which may be in a shared /dev/shm) must be sbatchd's or root's
    and no symlink: the records there decide what is killed and reported."""
    conf = tmp_path / "conf"
    conf.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.symlink(target, tmp_path / "jobs")
    (conf / "lavalite.conf").write_text(
        f"[paths]\nstate_dir = {tmp_path}\n[cluster]\nkey_file = {cluster.conf.cluster.key_file}\n"
    )
    (conf / "sbatchd.conf").write_text(f"[sbatchd]\nwork_dir = {tmp_path / 'jobs'}\n")
    proc = subprocess.run(
        cluster.program + ["--role", "sbatchd", "--conf", str(conf / "lavalite.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert f"work_dir {tmp_path / 'jobs'}: {tmp_path / 'jobs'} is a symlink" in proc.stderr
