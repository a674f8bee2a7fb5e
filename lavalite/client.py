"""The blocking client of mbatchd: what the CLI and `import lavalite` scripts use.

One TCP connection, opened on first use and kept. mbatchd opens it with a challenge; the hello
answering it goes together with the first request, and every frame after the hello is sealed
with the session's MAC (lavalite.auth). A one-shot command costs the challenge and one round
trip.
"""

import os
import pwd
import socket
import struct
import sys
import time

from lavalite import auth, config, cpython
from lavalite import protocol as P
from lavalite.hosts import local_host, mbatchd_endpoints

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterable, Iterator
    from typing import Any

    from lavalite import messages

_HDR = struct.Struct(">I")


class ClientError(Exception):
    """A request mbatchd refused, or a cluster that cannot be reached. `code` is the
    protocol's error code ('unreachable' for the latter); `sent`: the connection was lost
    after the request may have reached mbatchd."""

    def __init__(self, code: str, message: str, sent: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.sent = sent


class Client:
    """`command_wait`: how long a request keeps retrying while mbatchd cannot be reached
    (restarting, failing over: ClientError 'unreachable'); None = $LAVALITE_COMMAND_WAIT, else the
    configured [cluster] command_wait. A refusal is never retried."""

    def __init__(
        self,
        conf_path: str | None = None,
        conf: config.Config | None = None,
        timeout: float = 60.0,
        command_wait: float | None = None,
    ):
        self.conf = conf or config.load(config.find_conf(conf_path))
        self.timeout = timeout
        self.command_wait = (
            command_wait
            if command_wait is not None
            else config.from_env("LAVALITE_COMMAND_WAIT", "dur>=0", self.conf.cluster.command_wait)
        )
        self.sock: socket.socket | None = None
        self.session: auth.Session | None = None  # the connection's seal, from its login
        self.inbuf = bytearray()  # bytes read past the last reply (none, in practice)
        self.next_id = 1
        self.waited = False  # said once on stderr that it waits for mbatchd
        # the ssl context, made at the first connection with TLS
        self.tls: ssl.SSLContext | None = None

    def _credential(self, sn: str) -> "tuple[messages.Hello, auth.Session]":
        """(signed hello answering challenge `sn`, its Session). Who can read the cluster key
        signs for itself; any other user gets a hello the local LIM signs for the uid the
        kernel reports, with the key of that hello's session."""
        path = self.conf.cluster.key_file
        if os.path.exists(path) and not os.access(path, os.R_OK):
            hello, key = self._node_credential(sn)
            return hello, auth.Session(key, dialler=True)
        try:
            ring = auth.load_key(path)
        except auth.KeyFileError as exc:
            raise ClientError(P.AUTH, str(exc)) from None
        uid = os.getuid()
        hello = auth.hello(
            ring, "user", local_host(), "mbatchd", sn, uid=uid, user=pwd.getpwuid(uid).pw_name
        )
        return hello, auth.Session(auth.session_key(ring, hello), dialler=True)

    def _node_credential(self, sn: str) -> "tuple[messages.Hello, bytes]":
        path = os.path.join(self.conf.paths.spool_dir, "lim.sock")
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(min(10.0, self.timeout))
                sock.connect(path)
                sock.sendall(
                    P.encode({"v": P.VERSION, "op": "sign", "id": 1, "sn": sn, "to": "mbatchd"})
                )
                buf = bytearray()
                _read_frame(sock, buf)  # LIM's challenge: a `sign` needs none
                reply = _read_frame(sock, buf)
        except OSError as exc:
            raise ClientError(
                "unreachable",
                f"cannot get a credential from the local LIM at {path}: {exc.strerror or exc}",
            ) from None
        if not reply.get("ok"):
            raise ClientError(
                P.AUTH,
                "the local LIM refused a credential: "
                + (reply.get("error") or {}).get("message", "?"),
            )
        return reply["hello"], bytes.fromhex(reply["session"])

    def _connect(self, master: str | None = None) -> socket.socket:
        self._tls_context()
        errors = []
        for host, addr, port in mbatchd_endpoints(self.conf, first=master):
            # getaddrinfo() encodes a str name with the idna codec, whose import (stringprep,
            # unicodedata) costs a command about 1 ms; an ASCII name needs no encoding.
            # (typeshed allows only str; the socket module takes bytes too)
            host_arg = addr.encode() if addr.isascii() else addr
            try:
                sock = self._secure(
                    socket.create_connection((host_arg, port), timeout=min(5.0, self.timeout)),  # type: ignore[arg-type]
                    host,
                )
            except OSError as exc:
                errors.append(f"{host} ({addr}:{port}): {exc.strerror or exc}")
                continue
            sock.settimeout(self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise ClientError("unreachable", "cannot reach mbatchd: " + "; ".join(errors))

    def _tls_context(self) -> "ssl.SSLContext | None":
        """Where [cluster] tls_ca is set, the ssl context to dial mbatchd with (made once);
        a tls_ca that cannot be used is a configuration error, found before any dial."""
        if self.tls is None and self.conf.cluster.tls_ca:
            from lavalite import tls  # only here: ssl's import costs a command milliseconds

            try:
                self.tls = tls.user_client_context(self.conf)
            except tls.TLSConfigError as exc:
                raise config.ConfigError([str(exc)]) from None
        return self.tls

    def _secure(self, sock: socket.socket, host: str) -> socket.socket:
        """sock in TLS, checking that mbatchd's certificate names `host`, where TLS is on;
        else sock. A certificate refused is a refusal, not worth a retry."""
        if self.tls is None:
            return sock
        import ssl  # loaded with the context already

        try:
            return self.tls.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            raise ClientError(
                P.AUTH, f"mbatchd on {host}: TLS certificate refused: {exc.verify_message}"
            ) from None

    def call(self, op: str, **fields: "Any") -> "dict[str, Any]":
        """Send one request, return the reply's fields; raise ClientError on an error reply.
        While mbatchd cannot be reached, the same request (same id, same `req`: a submit
        retried makes no second job) is sent again until `wait` has passed; a submit without
        `req` is not, once it may have reached mbatchd."""
        msg = self._message(op, fields)
        deadline, delay = None, 0.2
        while True:
            try:
                reply = self._exchange(msg)
                break
            except ClientError as exc:
                if exc.code != "unreachable" or (exc.sent and not _resendable(msg)):
                    raise
                deadline = deadline or time.monotonic() + self.command_wait
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                self._say_waiting(exc)
                delay = _pause(delay, left)
        return _checked(reply)

    def _message(self, op: str, fields: "dict[str, Any]") -> "dict[str, Any]":
        msg = {"v": P.VERSION, "op": op, "id": self.next_id, **fields}
        self.next_id += 1
        return msg

    def _say_waiting(self, exc: ClientError) -> None:
        if not self.waited:
            self.waited = True
            print(
                f"lavalite: {exc.message}; retrying for up to {self.command_wait:g} s "
                "(Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )

    def _exchange(self, msg: dict) -> dict:
        """One attempt: the reply to msg (on a new connection: hello first, then msg)."""
        try:
            if self.sock is None:
                greeting = self._find_master(msg)
                if not greeting.get("ok"):  # sealed, or a refusal of the hello
                    raise ClientError(greeting["error"]["code"], greeting["error"]["message"])
            else:
                self.sock.sendall(P.encode(msg, self.session))
            return self._read()
        except TimeoutError:
            self.close()
            raise ClientError(
                "timeout", f"no reply from mbatchd within {self.timeout:g} s"
            ) from None
        except OSError as exc:
            self.close()
            raise ClientError(
                "unreachable", f"lost the connection to mbatchd: {exc}", sent=True
            ) from None
        except ClientError:
            self.close()
            raise

    def _find_master(self, msg: dict) -> dict:
        """Connect and send hello + msg, following a backup candidate's redirect to the master
        it names; 'unreachable' while none is known (an election under way)."""
        master = None
        while True:
            greeting = self._greet(msg, master)
            err = greeting.get("error") or {}
            if err.get("code") != P.REDIRECT:
                return greeting
            self.close()
            if not greeting.get("master") or greeting["master"] == master:
                raise ClientError("unreachable", err.get("message") or "no master elected")
            master = greeting["master"]

    def _greet(self, msg: "dict[str, Any]", master: str | None = None) -> "dict[str, Any]":
        """Connect, take the challenge, send the hello answering it and msg (sealed) in one
        write; the answer to the hello (sealed: mbatchd's proof that it holds the key)."""
        self.sock = self._connect(master)
        challenge = self._read()
        if challenge.get("op") != "challenge" or not isinstance(challenge.get("nonce"), str):
            raise ClientError(P.AUTH, "mbatchd did not open with a challenge")
        hello, session = self._credential(challenge["nonce"])
        self.sock.sendall(P.encode(hello) + P.encode(msg, session))
        self.session = session
        return self._read()

    def _read(self) -> "dict[str, Any]":
        assert self.sock is not None  # _greet connects before it reads
        try:
            return _read_frame(self.sock, self.inbuf, self.session)
        except P.ProtocolError as exc:
            raise ClientError(exc.code, exc.message) from None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self.session = None
            self.inbuf.clear()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the requests, for scripts

    def submit(self, cmd: "Iterable[str]", req: str | None = None, **spec: "Any") -> int:
        """Submit one job; returns its id. `spec` takes queue, name, out, err, walltime,
        retries, slots, cwd, env (defaults: the caller's cwd and environment)."""
        spec.setdefault("cwd", os.getcwd())
        spec.setdefault("env", environ())
        spec.setdefault("from_host", local_host())
        return self.call("submit", spec={"cmd": list(cmd), **spec}, req=req)["job"]

    def pages(self, op: str, **fields: "Any") -> "Iterator[dict[str, Any]]":
        """The replies to a paged request (`jobs`), one by one: the request is sent again
        with `after` set to the last reply's `next` until that is None. The next page is asked
        for before this one is handed over, so mbatchd makes it while the caller prints this
        one. Each page is a request of its own: a failover between two pages goes on from the
        cursor on the new master."""
        reply = self.call(op, after=None, **fields)
        while reply.get("next") is not None:
            ahead = self._message(op, {**fields, "after": reply["next"]})
            sent = self._send_ahead(ahead)
            try:
                yield reply
            except GeneratorExit:  # the caller stopped: that reply must not answer its next call
                self.close()
                raise
            # lost with the connection: asked again, as any request is
            got = self._reply_ahead() if sent else None
            reply = got or self.call(op, **{**fields, "after": ahead["after"]})
        yield reply

    def _send_ahead(self, msg: "dict[str, Any]") -> bool:
        """Send msg on the open connection, its reply read later (_reply_ahead); False when
        there is no connection or it failed."""
        if self.sock is None:
            return False
        try:
            self.sock.sendall(P.encode(msg, self.session))
        except OSError:
            self.close()
            return False
        return True

    def _reply_ahead(self) -> "dict[str, Any] | None":
        """The reply to a request sent ahead; None when the connection was lost first."""
        try:
            reply = self._read()
        except (OSError, ClientError):
            self.close()
            return None
        return _checked(reply)

    def jobs(
        self, ids: "Iterable[int | str]" = (), users: list[str] | None = None, all: bool = False
    ) -> "list[dict[str, Any]]":
        return [
            view
            for reply in self.pages(
                "jobs", jobs=list(ids), users=users, all=all, limit=P.MAX_JOBS_PAGE
            )
            for view in reply["jobs"]
        ]

    def kill(self, ids: "Iterable[int | str]") -> "list[dict[str, Any]]":
        return self.call("kill", jobs=list(ids))["results"]

    def submit_many(
        self,
        jobs: "Iterable[Iterable[str] | dict[str, Any]]",
        req: str | None = None,
        **defaults: "Any",
    ) -> list[int]:
        """Submit many jobs in ONE request; returns their ids in order. `jobs`: command lists
        or spec dicts ({"cmd": [...], "queue": ..., "name": "x[1-100]", ...}); `defaults`
        apply to every job (the caller's cwd and environment unless given). mbatchd checks
        them all first: one bad spec refuses the request and creates none."""
        defaults.setdefault("cwd", os.getcwd())
        defaults.setdefault("env", environ())
        defaults.setdefault("from_host", local_host())
        specs = [j if isinstance(j, dict) else {"cmd": list(j)} for j in jobs]
        return self.call("submit_many", defaults=defaults, specs=specs, req=req)["jobs"]

    def wait(self, job_id: int | str, cond: str = "ended") -> "dict[str, Any]":
        """Block until job (or array) `job_id` has ended, or is done ("done": raises
        ClientError if it ended otherwise). One request; mbatchd answers when it holds."""
        return self.call("wait", cond=cond, job=job_id)


# os.environ's raw data when last copied, and that copy decoded (empty ones until then, which
# hold for an empty environment)
_env: list[dict] = [{}, {}]


def environ() -> dict[str, str]:
    """A copy of the caller's environment, as a submission carries it. Reading os.environ
    decodes every name and value (25 us of a submission's client CPU with 40 variables): the
    decoded copy is kept and made again only when the raw data changed (lavalite.cpython)."""
    raw = cpython.environ_data()
    if raw is None:
        return dict(os.environ)
    if raw != _env[0]:
        _env[:] = [dict(raw), dict(os.environ)]
    return dict(_env[1])


def _checked(reply: "dict[str, Any]") -> "dict[str, Any]":
    """The reply of a request mbatchd answered; ClientError if it refused it."""
    if not reply.get("ok"):
        err = reply.get("error") or {}
        raise ClientError(err.get("code", P.INTERNAL), err.get("message", "request failed"))
    return reply


def _resendable(msg: dict) -> bool:
    """Whether a request that may have reached mbatchd can be sent again: all but a submit
    without a request id, which could make its jobs twice."""
    return msg["op"] not in ("submit", "submit_many") or msg.get("req") is not None


def _pause(delay: float, left: float) -> float:
    """Sleep about `delay` (jittered, so many waiting commands do not retry in step; never past
    `left`); the next delay, doubled up to 2 s."""
    import random  # only here: a command's start-up skips it

    time.sleep(min(delay * random.uniform(0.5, 1.5), left))
    return min(delay * 2, 2.0)


def _read_frame(
    sock: socket.socket, buf: bytearray, session: auth.Session | None = None
) -> "dict[str, Any]":
    """The next frame (its MAC checked under `session`, if given; ProtocolError if bad); bytes
    past it stay in buf. A reply usually takes one recv (its header and body together), not
    one for each."""
    _fill(sock, buf, 4)
    (size,) = _HDR.unpack_from(buf)
    if size > P.MAX_FRAME:
        raise ClientError(P.TOO_BIG, f"reply frame of {size} bytes is over the limit")
    _fill(sock, buf, 4 + size)
    frame = bytes(buf[4 : 4 + size])
    del buf[: 4 + size]
    return P.loads(frame if session is None else session.open(frame))


def _fill(sock: socket.socket, buf: bytearray, n: int) -> None:
    """Read until buf holds n bytes (at least 64 KiB a read, at most 1 MiB)."""
    while len(buf) < n:
        chunk = sock.recv(min(max(1 << 16, n - len(buf)), 1 << 20))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
