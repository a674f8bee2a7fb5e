"""Cluster administration on this host: `lavalite admin rotate-key [--finish]`,
`lavalite admin tls-init DIR HOST...`."""

import argparse
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile

from lavalite import auth, config


def _setup_admin(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    rk = sub.add_parser(
        "rotate-key",
        help="roll the cluster key, with an overlap window",
        description="Write a new cluster key, keeping the current one as "
        "'previous': daemons re-read the file when it changes, sign with the "
        "new key and accept both. Copy the file to every host, then end the "
        "window with --finish (on every host).",
    )
    rk.add_argument("--conf", default=argparse.SUPPRESS, help="lavalite.conf")
    rk.add_argument(
        "--finish", action="store_true", help="end the overlap window: drop the previous key"
    )
    ti = sub.add_parser(
        "tls-init",
        help="make a CA and host certificates (openssl)",
        description="Make a small CA (DIR/ca.pem, DIR/ca.key: keep this one "
        "off the cluster) unless DIR has one, and for each HOST a key and a "
        "certificate issued by it for that name (DIR/HOST.pem, DIR/HOST.key), "
        "for [cluster] tls_ca, tls_cert, tls_key. Needs the openssl command.",
    )
    ti.add_argument("dir", help="directory for the files (created)")
    ti.add_argument(
        "hosts",
        nargs="+",
        metavar="HOST",
        help="host names as the cluster knows them (or IP addresses)",
    )
    ti.add_argument(
        "--days", type=int, default=825, help="validity of host certificates (default 825 days)"
    )


def admin(args: argparse.Namespace) -> int:
    if args.action == "tls-init":
        return tls_init(args.dir, args.hosts, args.days)
    conf = config.load(config.find_conf(args.conf))
    path = conf.cluster.key_file
    try:
        auth.rotate_key(path, finish=args.finish)
    except (auth.KeyFileError, OSError) as exc:
        print(f"lavalite admin rotate-key: {exc}", file=sys.stderr)
        return 1
    if args.finish:
        print(f"{path}: previous key dropped; only the current key is accepted now.")
    else:
        print(
            f"{path}: new key written; the previous one is accepted until "
            "`lavalite admin rotate-key --finish`. Copy this file (mode 0600) to every host."
        )
    return 0


# EC P-256 keys: small, quick handshakes, accepted by every TLS 1.2+ implementation
_NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def tls_init(directory: str, hosts: list[str], days: int) -> int:
    bad = next((h for h in hosts if not _host_name_ok(h)), None)
    if bad is not None or days < 1:
        why = (
            f"HOST {bad!r}: not a host name or address"
            if bad is not None
            else f"--days {days}: expected an integer >= 1"
        )
        print(f"lavalite admin tls-init: {why}", file=sys.stderr)
        return 2
    if shutil.which("openssl") is None:
        print(
            "lavalite admin tls-init: needs the openssl command, not found on PATH", file=sys.stderr
        )
        return 1
    ca, ca_key = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key")
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.path.exists(ca_key):
            _openssl(
                "req",
                "-x509",
                *_NEW_KEY,
                "-keyout",
                ca_key,
                "-out",
                ca,
                "-days",
                "3650",
                "-subj",
                "/CN=LavaLite cluster CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            )
        for host in hosts:
            _host_cert(directory, host, ca, ca_key, days)
    except subprocess.CalledProcessError as exc:
        last = exc.stderr.strip().splitlines()[-1:] or [f"exit status {exc.returncode}"]
        print(f"lavalite admin tls-init: openssl {exc.cmd[1]} failed: {last[0]}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"lavalite admin tls-init: {exc.filename or directory}: {exc.strerror}", file=sys.stderr
        )
        return 1
    print(
        f"{directory}: ca.pem (tls_ca, on every host), ca.key (keep it off the cluster), "
        f"HOST.pem and HOST.key (tls_cert, tls_key, on that host only, mode 0600) for "
        f"{', '.join(hosts)}"
    )
    return 0


def _host_name_ok(host: str) -> bool:
    """A name or address that makes a file name in DIR (no '/', no leading '.' or '-')."""
    return host[:1].isalnum() and host.isascii() and all(c.isalnum() or c in "-._:" for c in host)


def _host_cert(directory: str, host: str, ca: str, ca_key: str, days: int) -> None:
    """DIR/HOST.key and DIR/HOST.pem: a certificate naming `host` (its subjectAltName, which
    TLS checks), good for both ends of a connection (daemons dial and listen)."""
    key, cert = (os.path.join(directory, f"{host}.{ext}") for ext in ("key", "pem"))
    try:
        name = f"IP:{ipaddress.ip_address(host)}"
    except ValueError:
        name = f"DNS:{host}"
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = os.path.join(tmp, "csr"), os.path.join(tmp, "ext")
        with open(ext, "w") as f:
            f.write(
                f"subjectAltName={name}\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth,clientAuth\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
            )
        _openssl("req", *_NEW_KEY, "-keyout", key, "-out", csr, "-subj", f"/CN={host}")
        _openssl(
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-set_serial",
            str(int.from_bytes(os.urandom(16), "big") >> 1),
            "-days",
            str(days),
            "-extfile",
            ext,
            "-out",
            cert,
        )
    os.chmod(key, 0o600)


def _openssl(*args: str) -> None:
    subprocess.run(
        ["openssl", *args], check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


COMMANDS = {
    "admin": (_setup_admin, admin, "cluster administration: rotate-key, tls-init"),
}
