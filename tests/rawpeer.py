"""A protocol peer driven by hand over a blocking socket, for tests that speak the wire protocol
frame by frame: it takes the challenge, logs in, and seals what it sends (and checks what it
reads) once logged in, as lavalite.peer.Peer does."""

import socket
import struct

import orjson

from lavalite import auth
from lavalite.protocol import encode

_HDR = struct.Struct(">I")


class RawPeer:
    """A dialled connection (to TCP `port` on loopback, or to Unix socket `path`) that has
    read its challenge, or with `sock` the accepted end of one, which sends its own
    (serve_login)."""

    def __init__(self, port=None, sock=None, rcvbuf=None, timeout=10.0, path=None):
        if path is not None:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(timeout)
            sock.connect(path)
        elif sock is None:
            sock = socket.socket()
            if rcvbuf:  # before connect, so the window is small from the start
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            sock.connect(("127.0.0.1", port))
        self.sock = sock
        self.sock.settimeout(timeout)
        self.session = None
        self.nonce = None
        if port is not None or path is not None:
            challenge = self.read()
            assert challenge and challenge["op"] == "challenge", challenge
            self.nonce = challenge["nonce"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def read_frame(self):
        """The next frame's bytes as sent (its MAC trailer included), or None once closed."""
        try:
            head = self._exact(4)
            return head and self._exact(_HDR.unpack(head)[0])
        except ConnectionResetError:
            return None

    def _exact(self, size):
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def read(self):
        """The next frame decoded (its MAC checked once logged in), or None once closed."""
        frame = self.read_frame()
        if frame is None:
            return None
        return orjson.loads(frame if self.session is None else self.session.open(frame))

    def hello(self, key, role="user", host="testhost", to="mbatchd", **extra):
        """The encoded hello answering our challenge; from now on frames are sealed."""
        if role == "user":
            extra = {"uid": 0, "user": "root", **extra}
        msg = auth.hello(key, role, host, to, self.nonce, **extra)
        self.session = auth.Session(auth.session_key(key, msg), dialler=True)
        return encode(msg)

    def frame(self, msg):
        return encode(msg, self.session)

    def send(self, *msgs):
        self.sock.sendall(b"".join(self.frame(m) for m in msgs))

    def login(self, key, **kw):
        """Send our hello; the (checked) answer."""
        self.sock.sendall(self.hello(key, **kw))
        return self.read()

    def serve_login(self, keys, to="mbatchd"):
        """The accepting side: challenge, check the hello, answer. The peer's identity."""
        challenge = auth.challenge()
        self.send(challenge)
        ident, session, answer = auth.greet(
            keys, self.read(), challenge["nonce"], to, auth.ReplayCache()
        )
        self.session = session
        self.send(answer)
        return ident


def key_of(cluster):
    return auth.load_key(cluster.conf.cluster.key_file)
