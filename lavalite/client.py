"""The blocking client of mbatchd: what the CLI and `import lavalite` scripts use.

One TCP connection, opened on first use and kept; the hello is sent together with the first
request, so a one-shot command costs a single round trip.
"""
import os
import pwd
import socket
import struct

from lavalite import auth, config
from lavalite import protocol as P
from lavalite.hosts import local_host, mbatchd_endpoints

_HDR = struct.Struct(">I")


class ClientError(Exception):
    """A request mbatchd refused, or a cluster that cannot be reached. `code` is the
    protocol's error code ('unreachable' for the latter)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Client:
    def __init__(self, conf_path=None, conf=None, timeout=60.0):
        self.conf = conf or config.load(config.find_conf(conf_path))
        self.timeout = timeout
        self.sock = None
        self.next_id = 1

    def _credential(self):
        try:
            key = auth.load_key(self.conf.cluster.key_file)
        except auth.KeyFileError as exc:
            raise ClientError(P.AUTH, str(exc)) from None
        uid = os.getuid()
        return key, auth.hello(key, "user", local_host(), uid=uid, user=pwd.getpwuid(uid).pw_name)

    def _connect(self):
        key, hello = self._credential()
        errors = []
        for host, addr, port in mbatchd_endpoints(self.conf):
            try:
                sock = socket.create_connection((addr, port), timeout=min(5.0, self.timeout))
            except OSError as exc:
                errors.append(f"{host} ({addr}:{port}): {exc.strerror or exc}")
                continue
            sock.settimeout(self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock, key, hello
        raise ClientError("unreachable", "cannot reach mbatchd: " + "; ".join(errors))

    def call(self, op, **fields):
        """Send one request, return the reply's fields; raise ClientError on an error reply."""
        msg = {"v": P.VERSION, "op": op, "id": self.next_id, **fields}
        self.next_id += 1
        first = self.sock is None
        try:
            if first:
                self.sock, key, hello = self._connect()
                self.sock.sendall(P.encode(hello) + P.encode(msg))
                greeting = self._read()
                if not greeting.get("ok"):
                    raise ClientError(greeting["error"]["code"], greeting["error"]["message"])
                if not auth.check_server_proof(key, hello["nonce"], greeting.get("proof")):
                    raise ClientError(P.AUTH, "mbatchd did not prove it holds the cluster key")
            else:
                self.sock.sendall(P.encode(msg))
            reply = self._read()
        except TimeoutError:
            self.close()
            raise ClientError("timeout", f"no reply from mbatchd within {self.timeout:g} s") from None
        except OSError as exc:
            self.close()
            raise ClientError("unreachable", f"lost the connection to mbatchd: {exc}") from None
        except ClientError:
            self.close()
            raise
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise ClientError(err.get("code", P.INTERNAL), err.get("message", "request failed"))
        return reply

    def _read(self):
        head = self._exactly(4)
        (size,) = _HDR.unpack(head)
        if size > P.MAX_FRAME:
            raise ClientError(P.TOO_BIG, f"reply frame of {size} bytes is over the limit")
        return P.loads(self._exactly(size))

    def _exactly(self, n):
        chunks = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise ConnectionError("mbatchd closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- the requests, for scripts

    def submit(self, cmd, req=None, **spec):
        """Submit one job; returns its id. `spec` takes queue, name, out, err, walltime,
        retries, slots, cwd, env (defaults: the caller's cwd and environment)."""
        spec.setdefault("cwd", os.getcwd())
        spec.setdefault("env", dict(os.environ))
        spec.setdefault("from_host", local_host())
        return self.call("submit", spec={"cmd": list(cmd), **spec}, req=req)["job"]

    def jobs(self, ids=(), users=None, all=False):
        return self.call("jobs", jobs=list(ids), users=users, all=all)["jobs"]

    def kill(self, ids):
        return self.call("kill", jobs=list(ids))["results"]

    def submit_many(self, jobs, req=None, **defaults):
        """Submit many jobs in ONE request; returns their ids in order. `jobs`: command lists
        or spec dicts ({"cmd": [...], "queue": ..., "name": "x[1-100]", ...}); `defaults`
        apply to every job (the caller's cwd and environment unless given). mbatchd checks
        them all first: one bad spec refuses the request and creates none."""
        defaults.setdefault("cwd", os.getcwd())
        defaults.setdefault("env", dict(os.environ))
        defaults.setdefault("from_host", local_host())
        specs = [j if isinstance(j, dict) else {"cmd": list(j)} for j in jobs]
        return self.call("submit_many", defaults=defaults, specs=specs, req=req)["jobs"]

    def wait(self, job_id, cond="ended"):
        """Block until job (or array) `job_id` has ended, or is done ("done": raises
        ClientError if it ended otherwise). One request; mbatchd answers when it holds."""
        return self.call("wait", cond=cond, job=job_id)
