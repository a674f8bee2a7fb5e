"""The stdio relay of interactive jobs (bsub -I, -Ip, -Is): one TCP connection between the
submitter (bsub, which listens) and the job's side (the relay sbatchd starts as the job,
roles/sbatchd/relay_job.py, which connects back). Job data never goes through mbatchd.

The connection opens with a mutual proof of the job's token, a random secret bsub puts in the
job's spec: each side sends a nonce and the other answers HMAC-SHA256(token, role + nonce), so
the token itself never crosses the network and neither side talks to an impostor.

Then frames both ways: a 5-byte header (channel, 4-byte big-endian length) and the bytes.
Channels 0, 1, 2 carry stdin, stdout and stderr (an empty frame is that stream's end); WINCH
carries a terminal's new size (rows, columns), SIGNAL a signal number for the job, HOST the
job's host (the job's side's first frame), EXIT how the command ended (its last frame: the exit
code, or minus the signal). `Relay` pumps both ends with one `selectors` loop and bounded
buffers, so neither side ever blocks the other. Stdlib only: bsub imports it."""

import hashlib
import hmac
import os
import selectors
import socket
import struct

from lavalite import jobspec

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

STDIN, STDOUT, STDERR, WINCH, SIGNAL, HOST, EXIT = 0, 1, 2, 3, 4, 5, 6
_HEADER = struct.Struct(">BI")
_SIZE = struct.Struct(">HH")
_STATUS = struct.Struct(">i")
_MAGIC = b"LLR1"
_NONCE = 32
HIGH = 1 << 20  # bytes buffered towards one destination before its source is read no more
CHUNK = 4096  # bytes per write to a local descriptor: a pipe takes PIPE_BUF without blocking
HANDSHAKE_TIMEOUT = 30.0
MAX_FRAME = 1 << 20  # bytes of one frame's payload (a sender's are at most 64 KiB): past it,
# the peer is broken and the connection is dropped rather than buffered without end


def checked(params: object) -> dict:
    """A submitted spec's `interactive` as mbatchd keeps it (jobspec.SpecError names what is
    wrong): where bsub listens, its token, and the terminal's size when it wants a pty."""
    if not isinstance(params, dict):
        raise jobspec.SpecError("interactive must be an object")
    token = jobspec.text("interactive.token", params.get("token"), 128)
    try:
        bytes.fromhex(token)
    except ValueError:
        raise jobspec.SpecError("interactive.token must be hexadecimal") from None
    out = {
        "host": jobspec.text("interactive.host", params.get("host"), jobspec.MAX_NAME),
        "port": jobspec.integer("interactive.port", params.get("port"), 1, 65535),
        "token": token,
        "pty": bool(params.get("pty")),
    }
    if params.get("shell"):  # -Is: kept for bjobs -l to say so
        out["shell"] = True
    for field in ("rows", "cols"):
        if params.get(field) is not None:
            out[field] = jobspec.integer(f"interactive.{field}", params[field], 0, 65535)
    return out


class RelayError(Exception):
    """The other side failed the handshake or broke the protocol."""


def new_token() -> str:
    return os.urandom(32).hex()


def _proof(token: str, role: bytes, nonce: bytes) -> bytes:
    return hmac.new(bytes.fromhex(token), role + nonce, hashlib.sha256).digest()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise RelayError("connection closed during the handshake")
        data += part
    return bytes(data)


def accept(sock: socket.socket, token: str) -> None:
    """The listener's half of the handshake on an accepted connection: RelayError if the
    peer does not prove the token."""
    sock.settimeout(HANDSHAKE_TIMEOUT)
    nonce = os.urandom(_NONCE)
    sock.sendall(_MAGIC + nonce)
    answer = _recv_exact(sock, 32 + _NONCE)
    if not hmac.compare_digest(answer[:32], _proof(token, b"job", nonce)):
        raise RelayError("the peer does not know the job's token")
    sock.sendall(_proof(token, b"submitter", answer[32:]))


def connect(address: tuple[str, int], token: str) -> socket.socket:
    """The job's side: connect to the submitter and run the handshake (OSError, RelayError)."""
    sock = socket.create_connection(address, timeout=HANDSHAKE_TIMEOUT)
    try:
        hello = _recv_exact(sock, len(_MAGIC) + _NONCE)
        if hello[: len(_MAGIC)] != _MAGIC:
            raise RelayError("the submitter does not speak the relay protocol")
        nonce = os.urandom(_NONCE)
        sock.sendall(_proof(token, b"job", hello[len(_MAGIC) :]) + nonce)
        if not hmac.compare_digest(_recv_exact(sock, 32), _proof(token, b"submitter", nonce)):
            raise RelayError("the submitter does not know the job's token")
    except BaseException:
        sock.close()
        raise
    return sock


def _pollable(fd: int) -> bool:
    """Whether epoll takes fd: a pipe, a socket, a terminal do; a regular file and
    /dev/null (always ready) do not."""
    probe = selectors.DefaultSelector()
    try:
        probe.register(fd, selectors.EVENT_READ)
        return True
    except PermissionError:
        return False
    finally:
        probe.close()


def listen(host: str) -> socket.socket:
    """A listening socket on an ephemeral port of `host` (an address of this host); OSError."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.bind((host, 0))
        sock.listen(8)
    except OSError:
        sock.close()
        raise
    return sock


def frame(channel: int, data: bytes = b"") -> bytes:
    return _HEADER.pack(channel, len(data)) + data


def winch_frame(rows: int, cols: int) -> bytes:
    return frame(WINCH, _SIZE.pack(rows, cols))


def window_size(payload: bytes) -> tuple[int, int]:
    return _SIZE.unpack(payload)


def exit_frame(status: int) -> bytes:
    return frame(EXIT, _STATUS.pack(status))


def exit_status(payload: bytes) -> int:
    """An EXIT frame's status as a shell shows it: the code, or 128 + the signal."""
    (status,) = _STATUS.unpack(payload)
    return status if status >= 0 else 128 - status


class Relay:
    """Pumps local descriptors over the connection: `sources` {fd: channel} are read and
    sent, `sinks` {channel: fd} receive what arrives on their channel (each closed at its
    stream's end when `close_sinks`, else sent `end_with`: a pty's EOF key);
    `control(channel, payload)` gets the other channels.
    `watch(fd, callback)` adds a local event (a child's pidfd, a signal's wakeup). run()
    returns when the other side has closed and what it sent is delivered (`closed` true), or
    when `finished()` holds and what this side read has been sent."""

    def __init__(
        self,
        sock: socket.socket,
        sources: dict[int, int],
        sinks: dict[int, int],
        control: "Callable[[int, bytes], None]",
        close_sinks: bool = True,
        end_with: bytes = b"",
    ) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sources = dict(sources)
        self.sinks = dict(sinks)
        self.control = control
        self.close_sinks = close_sinks
        self.end_with = end_with
        self.pending: dict[int, bytearray] = {ch: bytearray() for ch in sinks}
        self.ending: set[int] = set()  # sinks whose stream ended: closed once flushed
        self.out = bytearray()  # frames for the socket
        self.inbuf = bytearray()
        self.closed = False  # the other side closed the connection
        self.finished: Callable[[], bool] = lambda: False
        self.sel.register(sock, selectors.EVENT_READ, self._socket)
        # regular files and /dev/null, which epoll refuses: always ready, served every turn
        self.files = {fd for fd in [*self.sources, *self.sinks.values()] if not _pollable(fd)}

    def watch(self, fd: int, callback: "Callable[[], None]") -> None:
        self.sel.register(fd, selectors.EVENT_READ, lambda _fd, _ev: callback())

    def send(self, data: bytes) -> None:
        """Frames of this side's own (a control, a message for stderr)."""
        self.out += data

    def run(self) -> None:
        while not self._done():
            self._arm()
            for key, events in self.sel.select(0 if self._files_ready() else None):
                key.data(key.fd, events)
            for fd in self.files & set(self.sources):
                if len(self.out) < HIGH:
                    self._source(fd, selectors.EVENT_READ)
            for ch, fd in list(self.sinks.items()):
                if fd in self.files and self.pending[ch]:
                    self._sink(fd, selectors.EVENT_WRITE)

    def _files_ready(self) -> bool:
        """A file has bytes to give (and room for them) or to take."""
        if len(self.out) < HIGH and self.files & self.sources.keys():
            return True
        return any(self.pending[ch] for ch, fd in self.sinks.items() if fd in self.files)

    def _done(self) -> bool:
        if self.closed:
            return not any(self.pending.values())
        return self.finished() and not self.sources and not self.out

    def _arm(self) -> None:
        """Interest in each descriptor as the buffers stand: a full buffer stops its
        source (the other side's writer waits on its own socket, not on us)."""
        self._want(
            self.sock,
            selectors.EVENT_READ * (not self.closed and self._room())
            | selectors.EVENT_WRITE * bool(self.out),
            self._socket,
        )
        for fd in self.sources.keys() - self.files:
            self._want(fd, selectors.EVENT_READ * (len(self.out) < HIGH), self._source)
        for ch, fd in self.sinks.items():
            if fd not in self.files:
                self._want(fd, selectors.EVENT_WRITE * bool(self.pending[ch]), self._sink)

    def _room(self) -> bool:
        return all(len(buf) < HIGH for buf in self.pending.values())

    def _want(self, fileobj: "socket.socket | int", events: int, callback: object) -> None:
        try:
            key = self.sel.get_key(fileobj)
        except KeyError:
            if events:
                self.sel.register(fileobj, events, callback)
            return
        if not events:
            self.sel.unregister(fileobj)
        elif key.events != events:
            self.sel.modify(fileobj, events, callback)

    def _source(self, fd: int, _events: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: a pty whose other end is closed
            data = b""
        self.out += frame(self.sources[fd], data)
        if not data:
            self._unwatch(fd)
            del self.sources[fd]

    def _sink(self, fd: int, _events: int) -> None:
        ch = next(c for c, f in self.sinks.items() if f == fd)
        buf = self.pending[ch]
        try:
            del buf[: os.write(fd, buf[:CHUNK])]
        except BlockingIOError:
            return
        except OSError:  # the reader went away: what it would have read is dropped
            buf.clear()
            self.ending.add(ch)
        if not buf and ch in self.ending:
            self._end_sink(ch)

    def _end_sink(self, ch: int) -> None:
        fd = self.sinks.pop(ch)
        del self.pending[ch]
        self._unwatch(fd)
        if self.close_sinks:
            os.close(fd)

    def _socket(self, _fd: int, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            try:
                del self.out[: self.sock.send(self.out)]
            except BlockingIOError:
                pass
            except OSError:
                self._lost()
                return
        if events & selectors.EVENT_READ:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            self.inbuf += data
            self._frames()

    def _lost(self) -> None:
        self.closed = True
        self.out.clear()
        self._unwatch(self.sock)

    def _unwatch(self, fileobj: "socket.socket | int") -> None:
        if fileobj in self.sel.get_map():
            self.sel.unregister(fileobj)

    def _frames(self) -> None:
        buf, at = self.inbuf, 0
        while len(buf) - at >= _HEADER.size:
            ch, size = _HEADER.unpack_from(buf, at)
            if size > MAX_FRAME:
                self._lost()
                buf.clear()
                return
            if len(buf) - at - _HEADER.size < size:
                break
            payload = bytes(buf[at + _HEADER.size : at + _HEADER.size + size])
            at += _HEADER.size + size
            self._deliver(ch, payload)
        del buf[:at]

    def _deliver(self, ch: int, payload: bytes) -> None:
        if ch not in (STDIN, STDOUT, STDERR):
            self.control(ch, payload)
        elif ch in self.pending:
            if payload:
                self.pending[ch] += payload
            elif self.end_with:
                self.pending[ch] += self.end_with
            else:
                self.ending.add(ch)
                if not self.pending[ch]:
                    self._end_sink(ch)
