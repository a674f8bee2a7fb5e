"""TLS for the TCP connections, from lavalite.conf's [cluster] tls_cert, tls_key and tls_ca.

TLS is on when tls_ca is set. Daemons present their host certificate (tls_cert, tls_key) and
verify every peer's against tls_ca: mutual TLS between daemons. User commands verify the
server's certificate only (users cannot read the host key); mbatchd's port therefore accepts a
connection without a client certificate, while a certificate that is presented must verify.
The cluster key still authenticates every peer inside the TLS session. Unix sockets (LIM's, on
the local host) carry no TLS.

Only imported where TLS is configured: `import ssl` costs a user command milliseconds.
"""

import ssl

from lavalite import config
from lavalite.protocol import AUTH, ProtocolError

# a user command imports this module: no asyncio, no typing at run time
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio

# seconds an accepted connection has to finish its handshake; the hello deadline only starts
# once it has (asyncio hands the connection over after the handshake)
HANDSHAKE_TIMEOUT = 5.0


class TLSConfigError(Exception):
    """A TLS file that cannot be used; the message names the key and its file:line."""


class DaemonTLS:
    """The TLS arguments of one daemon's listeners and dials: empty while TLS is off."""

    def __init__(self, conf: config.Config):
        on = bool(conf.cluster.tls_ca)
        self.daemons_only = server_context(conf, True) if on else None
        self.anyone = server_context(conf, False) if on else None
        self.dialling = daemon_client_context(conf) if on else None

    def listen(self, users: bool) -> dict:
        """create_server() arguments for a port that users' commands connect to (`users`) or
        only daemons do."""
        ctx = self.anyone if users else self.daemons_only
        return {} if ctx is None else {"ssl": ctx, "ssl_handshake_timeout": HANDSHAKE_TIMEOUT}

    def dial(self, host: str) -> dict:
        """create_connection() arguments for dialling the daemon on cluster host `host`."""
        if self.dialling is None:
            return {}
        return {
            "ssl": self.dialling,
            "server_hostname": host,
            "ssl_handshake_timeout": HANDSHAKE_TIMEOUT,
        }

    def check_hello(self, transport: "asyncio.BaseTransport", msg: dict) -> None:
        """On a port users share with daemons: a hello in a daemon's role must come over a
        connection that presented a host certificate (which TLS has verified), so that the
        cluster key alone does not make a daemon."""
        if (
            self.anyone is not None
            and msg.get("role") != "user"
            and not transport.get_extra_info("peercert")
        ):
            raise ProtocolError(
                AUTH,
                f"role {msg.get('role')!r} must present its host certificate (tls_cert)",
                fatal=True,
            )


def server_context(conf: config.Config, require_client_cert: bool) -> ssl.SSLContext:
    """For a daemon's listener. require_client_cert: only daemons connect (LIM's port);
    otherwise a client may present none (user commands on mbatchd's port)."""
    ctx = _context(ssl.PROTOCOL_TLS_SERVER, conf)
    _load_chain(ctx, conf)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def daemon_client_context(conf: config.Config) -> ssl.SSLContext:
    """For a daemon dialling another: presents the host certificate, checks the server's."""
    ctx = _context(ssl.PROTOCOL_TLS_CLIENT, conf)
    _load_chain(ctx, conf)
    return ctx


def user_client_context(conf: config.Config) -> ssl.SSLContext:
    """For a user command: checks mbatchd's certificate, presents none."""
    return _context(ssl.PROTOCOL_TLS_CLIENT, conf)


def _context(protocol: int, conf: config.Config) -> ssl.SSLContext:
    """TLS 1.2 or later (1.3 is what two LavaLite ends agree on) trusting tls_ca only. A client
    context checks that the server's certificate names the host it dials: the host's name in
    the cluster (master_candidates, --host), whatever address [hosts] gives for it."""
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=conf.cluster.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(_file_error(conf, "tls_ca", exc)) from None
    return ctx


def _load_chain(ctx: ssl.SSLContext, conf: config.Config) -> None:
    cert, key = conf.cluster.tls_cert, conf.cluster.tls_key
    if not cert or not key:
        raise TLSConfigError(
            f"{config.origin(conf, 'cluster', 'tls_ca')}: [cluster] tls_ca: "
            f"daemons need tls_cert and tls_key with it"
        )
    for name in ("tls_cert", "tls_key"):
        try:
            with open(getattr(conf.cluster, name), "rb"):
                pass
        except OSError as exc:
            raise TLSConfigError(_file_error(conf, name, exc)) from None
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise TLSConfigError(
            _file_error(
                conf, "tls_key", exc, f"does not fit tls_cert {cert}, or one of them is no PEM file"
            )
        ) from None


def _file_error(conf: config.Config, key: str, exc: Exception, what: str = "") -> str:
    path = getattr(conf.cluster, key)
    why = what or getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
    return f"{config.origin(conf, 'cluster', key)}: [cluster] {key}: {path}: {why}"


def check(conf: config.Config, host: str, daemon: bool) -> list[str]:
    """config-check's and a daemon's start-up look at the TLS files: each readable and valid,
    and where this host has a certificate (a daemon must), the key fitting it and a client
    trusting tls_ca accepting it for `host`. Errors as FILE:LINE: [cluster] key: message."""
    try:
        client = user_client_context(conf)
        if not (daemon or conf.cluster.tls_cert):
            return []  # a host that only runs commands
        server = server_context(conf, require_client_cert=False)
    except TLSConfigError as exc:
        return [str(exc)]
    why = _handshake(server, client, host)
    if why:
        return [
            f"{config.origin(conf, 'cluster', 'tls_cert')}: [cluster] tls_cert: "
            f"{conf.cluster.tls_cert}: {why}"
        ]
    return []


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str) -> str:
    """Why a client trusting tls_ca refuses this host's certificate when dialling `host`
    ('' if it accepts it): one handshake in memory, no socket."""
    pipes = [(ssl.MemoryBIO(), ssl.MemoryBIO()) for _ in range(2)]  # (in, out) per side
    client = client_ctx.wrap_bio(*pipes[0], server_hostname=host)
    server = server_ctx.wrap_bio(*pipes[1], server_side=True)
    for _ in range(10):  # a TLS 1.3 handshake takes two round trips
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as exc:
                return f"not accepted for host {host!r}: {exc.verify_message}"
            except ssl.SSLError:  # the server side, once the client gave up
                pass
        pipes[1][0].write(pipes[0][1].read())
        pipes[0][0].write(pipes[1][1].read())
        if done == 2:
            return ""
    return "no TLS handshake with it completes"
