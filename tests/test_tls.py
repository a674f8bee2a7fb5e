"""TLS on every TCP connection ([cluster] tls_ca, tls_cert, tls_key): certificates made by
`lavalite admin tls-init` (the openssl command), real daemons, real handshakes.

What is checked: config-check and the daemons refuse unusable files with FILE:LINE; a TLS
cluster runs jobs through the commands; a plain-TCP client, a client whose certificate is from
another CA and a command trusting another CA get nothing from mbatchd; a daemon's hello needs a
host certificate; metrics stay plain HTTP; TLS across network-namespace hosts (heartbeats,
redirects, sbatchd registering with the master).
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.request

import pytest
from conftest import LAUNCHER
from rawpeer import RawPeer

# network: test_multihost's fixture (its namespaces), used here by name
from test_multihost import ADDR, CONTROL, MultiCluster, network, ns  # noqa: F401

from lavalite import auth, config
from lavalite import protocol as P
from roles.cli.local import free_port

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None,
    reason="TLS tests make their certificates with the openssl command, not installed here",
)
HOST = "testhost"  # the Cluster fixture's host name


def tls_init(directory, *hosts):
    res = subprocess.run(
        LAUNCHER + ["admin", "tls-init", str(directory), *hosts],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return str(directory)


def tls_keys(directory, host=HOST):
    return {
        "tls_ca": os.path.join(directory, "ca.pem"),
        "tls_cert": os.path.join(directory, f"{host}.pem"),
        "tls_key": os.path.join(directory, f"{host}.key"),
    }


@pytest.mark.parametrize(
    "args, says",
    [
        (["../up", "h1"], "HOST '../up': not a host name or address"),
        (["--days", "0", "h1"], "--days 0: expected an integer >= 1"),
    ],
)
def test_tls_init_refuses_bad_input_and_writes_nothing(tmp_path, args, says):
    res = subprocess.run(
        LAUNCHER + ["admin", "tls-init", str(tmp_path / "tls"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and res.stderr == f"lavalite admin tls-init: {says}\n"
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Two CAs: `good` with certificates for testhost and another host, `other` (a stranger's
    CA) with one for testhost."""
    base = tmp_path_factory.mktemp("certs")
    return {
        "good": tls_init(base / "good", HOST, "elsewhere"),
        "other": tls_init(base / "other", HOST),
    }


@pytest.fixture
def tls_cluster(make_cluster, certs):
    return make_cluster(
        conf={"cluster": tls_keys(certs["good"])}, mbatchd={"metrics_port": str(free_port())}
    )


def _frame_or_nothing(sock):
    """What the server answers a hello with: the reply frame, or None if it closes (TLS
    alerts and resets count as closing)."""
    sock.settimeout(20)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[:4], "big"):
                return P.loads(data[4 : 4 + int.from_bytes(data[:4], "big")])
    except (ssl.SSLError, ConnectionError):
        pass
    return None


def _login(sock, conf, role="user"):
    """Take mbatchd's challenge on `sock` and answer it with a signed hello: the reply to the
    hello, or None if the server says nothing (TLS alerts and resets count as nothing)."""
    peer = RawPeer(sock=sock)
    try:
        challenge = peer.read()
        if challenge is None:
            return None
        peer.nonce = challenge["nonce"]
        return peer.login(key_of_conf(conf), role=role, host=HOST)
    except (ssl.SSLError, ConnectionError):
        return None


def key_of_conf(conf):
    return auth.load_key(conf.cluster.key_file)


def _tls_client(ca, cert=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def test_a_tls_cluster_runs_jobs_through_the_commands(tls_cluster):
    c = tls_cluster
    out = c.cli("submit", "-o", "out.%J", "--", "echo", "over tls").stdout
    job = int(out.split("<")[1].split(">")[0])
    assert c.wait([job])[job]["stat"] == "DONE"
    assert str(job) in c.cli("jobs", "-a").stdout
    with open(os.path.join(c.state, f"out.{job}")) as f:
        assert f.read() == "over tls\n"
    # the daemons' connections are TLS: sbatchd registered (a dial with its certificate)
    assert c.cli("hosts").stdout.count(HOST) == 1


def test_plain_tcp_gets_nothing_from_mbatchd(tls_cluster):
    with socket.create_connection(("127.0.0.1", tls_cluster.conf.mbatchd.port)) as sock:
        # a TLS server sends no challenge to a peer that does not speak TLS, and answers no frame
        sock.sendall(P.encode({"v": P.VERSION, "op": "ping", "id": 1}))
        assert _frame_or_nothing(sock) is None


def _ask_over_tls(conf, cert):
    """A user hello over TLS, presenting `cert` (a tls_keys dict): the reply, or None."""
    ctx = _tls_client(conf.cluster.tls_ca, cert=(cert["tls_cert"], cert["tls_key"]))
    with socket.create_connection(("127.0.0.1", conf.mbatchd.port)) as raw:
        try:
            sock = ctx.wrap_socket(raw, server_hostname=HOST)
        except (ssl.SSLError, ConnectionError):
            return None  # refused in the handshake (TLS 1.2)
        return _login(sock, conf)  # TLS 1.3: refused once the server has checked it


def test_a_certificate_from_another_ca_is_refused(tls_cluster, certs):
    conf = tls_cluster.conf
    assert _ask_over_tls(conf, tls_keys(certs["good"]))["ok"]
    assert _ask_over_tls(conf, tls_keys(certs["other"])) is None


def test_a_daemon_hello_without_a_host_certificate_is_refused(tls_cluster):
    """The cluster key alone does not make an sbatchd where TLS is on."""
    conf = tls_cluster.conf
    ctx = _tls_client(conf.cluster.tls_ca)
    with ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", conf.mbatchd.port)), server_hostname=HOST
    ) as sock:
        reply = _login(sock, conf, "sbatchd")
    assert reply is not None and reply["error"]["code"] == P.AUTH, reply
    assert "host certificate" in reply["error"]["message"]


def test_a_command_trusting_another_ca_is_refused(tls_cluster, certs):
    c = tls_cluster
    with open(c.conf_path) as f:
        text = f.read()
    stranger = os.path.join(c.state, "stranger.conf")
    with open(stranger, "w") as f:
        f.write(text.replace(c.conf.cluster.tls_ca, os.path.join(certs["other"], "ca.pem")))
    res = subprocess.run(
        LAUNCHER + ["jobs", "--conf", stranger],
        capture_output=True,
        text=True,
        timeout=60,
        env=c.env,
    )
    assert res.returncode == 1, res.stderr
    assert "TLS certificate refused" in res.stderr and len(res.stderr.splitlines()) == 1


def test_metrics_stay_plain_http(tls_cluster):
    url = f"http://127.0.0.1:{tls_cluster.conf.mbatchd.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=20) as resp:
        assert resp.status == 200 and b"lavalite_" in resp.read()


def _config_check(conf_path):
    return subprocess.run(
        LAUNCHER + ["config-check", "--conf", conf_path],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LAVALITE_HOST": HOST},
    )


def _write_conf(tmp_path, **cluster):
    return config.write_state_conf(
        str(tmp_path / "state"),
        {"lavalite.conf": {"cluster": cluster, "paths": {"state_dir": str(tmp_path / "state")}}},
    )


@pytest.mark.parametrize(
    "case, key, says",
    [
        ("missing ca", "tls_ca", "No such file"),
        ("key of another host", "tls_key", "does not fit tls_cert"),
        ("cert from another ca", "tls_cert", "not accepted for host 'testhost'"),
        ("cert for another host", "tls_cert", "not accepted for host 'testhost'"),
    ],
)
def test_config_check_names_the_tls_file_that_cannot_work(tmp_path, certs, case, key, says):
    keys = tls_keys(certs["good"])
    bad = {
        "missing ca": {"tls_ca": str(tmp_path / "none.pem")},
        "key of another host": {"tls_key": os.path.join(certs["good"], "elsewhere.key")},
        "cert from another ca": {
            k: v for k, v in tls_keys(certs["other"]).items() if k != "tls_ca"
        },
        "cert for another host": tls_keys(certs["good"], "elsewhere"),
    }[case]
    path = _write_conf(tmp_path, **{**keys, **bad})
    res = _config_check(path)
    assert res.returncode == 2, res.stdout + res.stderr
    line = next(n for n, text in enumerate(open(path), 1) if text.startswith(f"{key} ="))
    assert f"{path}:{line}: [cluster] {key}: " in res.stderr and says in res.stderr, res.stderr
    # a daemon refuses to start on the same files, with the same line
    lim = subprocess.run(
        LAUNCHER + ["--role", "lim", "--conf", path, "--host", HOST],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lim.returncode == 2 and f"{path}:{line}: [cluster] {key}: " in lim.stderr, lim.stderr


def test_a_command_with_an_unusable_tls_ca_stops_at_once(tmp_path):
    """A configuration error (exit 2, the key's line), not a cluster to wait for."""
    path = _write_conf(tmp_path, tls_ca=str(tmp_path / "none.pem"))
    auth.create_key(config.load(path).cluster.key_file)
    res = subprocess.run(
        LAUNCHER + ["jobs", "--conf", path],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LAVALITE_COMMAND_WAIT": "30"},
    )
    line = next(n for n, text in enumerate(open(path), 1) if text.startswith("tls_ca ="))
    assert res.returncode == 2, res.stderr
    assert f"{path}:{line}: [cluster] tls_ca: " in res.stderr and "retrying" not in res.stderr


def test_config_check_accepts_good_files_and_a_commands_only_host(tmp_path, certs):
    assert _config_check(_write_conf(tmp_path, **tls_keys(certs["good"]))).returncode == 0
    ca_only = _write_conf(tmp_path / "commands", tls_ca=tls_keys(certs["good"])["tls_ca"])
    assert _config_check(ca_only).returncode == 0


@pytest.mark.parametrize(
    "given, key, says",
    [
        ({"tls_cert": "c.pem", "tls_ca": "ca.pem"}, "tls_cert", "needs tls_key too"),
        ({"tls_key": "k.pem", "tls_ca": "ca.pem"}, "tls_key", "needs tls_cert too"),
        ({"tls_cert": "c.pem", "tls_key": "k.pem"}, "tls_cert", "needs tls_ca"),
    ],
)
def test_tls_keys_that_do_not_go_together_are_a_config_error(tmp_path, given, key, says):
    path = tmp_path / "lavalite.conf"
    path.write_text("[cluster]\n" + "".join(f"{k} = {v}\n" for k, v in given.items()))
    with pytest.raises(config.ConfigError) as exc:
        config.load(str(path))
    line = 2 + list(given).index(key)
    assert exc.value.errors == [
        f"{path}:{line}: [cluster] {key}: {says}"
        + (
            ""
            if says != "needs tls_ca"
            else ", the CA that peers' certificates are checked against"
        )
    ]


def _plain_reply_in(host, addr, port):
    """What a plain-TCP client in `host`'s namespace reads from addr:port after a frame ('':
    the connection closed without a word; TLS alerts are not words)."""
    code = (
        "import socket, sys\n"
        "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)\n"
        "s.sendall(bytes.fromhex(sys.argv[3]))\n"
        "data = b''\n"
        "try:\n"
        " while chunk := s.recv(65536): data += chunk\n"
        "except ConnectionError: pass\n"
        "print('ok' if b'\"ok\"' in data else '')"
    )
    frame = P.encode({"v": P.VERSION, "op": "ping", "id": 1}).hex()
    res = subprocess.run(
        ["ip", "netns", "exec", ns(host), sys.executable, "-c", code, addr, str(port), frame],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_tls_across_network_namespace_hosts(network, tmp_path):  # noqa: F811
    """c1, c2 (master candidates) and workers w1, w2, each with its own certificate: LIM
    heartbeats (mutual TLS on the LIM port), sbatchd registering with mbatchd, commands, and
    the backup's redirect, all in TLS."""
    hosts = CONTROL + ("w1", "w2")
    certs = tls_init(tmp_path / "certs", *hosts)
    mc = MultiCluster(tmp_path / "cluster", cluster=lambda host: tls_keys(certs, host))
    try:
        for host in hosts:
            mc.start(host)
        mc.wait_until("w1, w2 ok", lambda: mc.hosts_ok(("w1", "w2")))
        jobs = [mc.submit("true") for _ in range(4)]
        assert {j["stat"] for j in mc.wait_jobs(jobs).values()} == {"DONE"}
        assert {j["exec_host"] for j in mc.jobs(jobs).values()} <= {"w1", "w2"}
        # c2 knows c1 is master only from c1's heartbeats: its redirect proves they pass
        with open(mc.conf("w1")) as f:
            text = f.read()
        backup_only = os.path.join(mc.base, "w1", "backup-only.conf")
        with open(backup_only, "w") as f:
            f.write(text.replace("master_candidates = c1 c2", "master_candidates = c2"))
        mc.wait_until(
            "c2 redirects to c1",
            lambda: mc.call("ping", conf=backup_only).get("host") == "c1",
            timeout=30,
        )
        assert "refused" not in mc.log("w1", "sbatchd")
        for port in (6879, 6881):  # LIM's and mbatchd's default ports, on c1
            assert _plain_reply_in("w1", ADDR["c1"], port) == "", port
    finally:
        mc.stop()
