"""Frames and authentication, without sockets (but for the client's reader, on a socketpair)."""

import logging
import socket
import struct
import threading
import time

import pytest

from lavalite import auth, protocol
from lavalite.client import ClientError, _read_frame
from lavalite.log import Throttled
from lavalite.protocol import MAX_FRAME, VERSION, Decoder, ProtocolError, encode


def test_frames_split_anywhere_reassemble():
    msgs = [{"v": VERSION, "op": "ping", "id": i, "pad": "x" * i} for i in range(50)]
    data = b"".join(encode(m) for m in msgs)
    dec, out = Decoder(), []
    for i in range(0, len(data), 7):
        out += dec.feed(data[i : i + 7])
    assert out == msgs


def test_client_reads_frames_split_anywhere_back_to_back_and_large():
    """The blocking client's reader: a header split from its body, two replies in one read,
    a frame of several MiB (many reads); what follows a frame waits in the buffer."""
    msgs = [{"id": 1}, {"id": 2, "pad": "y" * 100}, {"id": 3, "pad": "z" * (3 << 20)}, {"id": 4}]
    data = b"".join(encode(m) for m in msgs)
    ours, theirs = socket.socketpair()

    def write():
        theirs.sendall(data[:2])  # half a header
        time.sleep(0.05)
        theirs.sendall(data[2:])

    writer = threading.Thread(target=write)
    writer.start()
    buf = bytearray()
    try:
        assert [_read_frame(ours, buf) for _ in msgs] == msgs and not buf
        theirs.sendall(struct.pack(">I", MAX_FRAME + 1))
        with pytest.raises(ClientError, match="over the limit"):
            _read_frame(ours, buf)
        theirs.close()
        with pytest.raises(ConnectionError):
            _read_frame(ours, bytearray())
    finally:
        writer.join()
        ours.close()
        theirs.close()


def test_bad_frames_become_errors_and_decoding_goes_on():
    dec = Decoder(max_frame=1000)
    bad = b"{nope"
    out = dec.feed(
        struct.pack(">I", len(bad))
        + bad
        + encode([1])
        + encode({"v": VERSION})
        + encode({"v": VERSION, "op": "ok", "id": 1})
        + encode({"v": 1, "op": "x"})
        + encode({"v": VERSION, "op": "x"})
    )
    assert [getattr(m, "code", None) for m in out] == [
        "bad_frame",
        "bad_frame",
        "bad_frame",
        None,
        "bad_version",
    ]
    assert out[-1].fatal and "protocol version 1 is not supported; upgrade" in out[-1].message
    big = dec.feed(struct.pack(">I", 5000))
    assert big[0].code == "frame_too_big" and big[0].fatal


def test_decoder_hands_out_at_most_what_it_is_asked_and_keeps_the_rest():
    dec = Decoder(max_frame=100)
    data = encode({"v": VERSION, "op": "hello", "id": 0}) + encode(
        {"v": VERSION, "op": "ping", "id": 1, "pad": "x" * 200}
    )
    assert dec.feed(data, most=1) == [{"v": VERSION, "op": "hello", "id": 0}]
    dec.max_frame = MAX_FRAME  # what a verified hello does
    assert dec.feed(b"")[0]["id"] == 1


def test_deep_nesting_is_a_bad_frame_with_either_codec(monkeypatch):
    import json

    import orjson

    body = b"[" * 100_000 + b"]" * 100_000
    for codec in (json.loads, orjson.loads):
        monkeypatch.setattr(protocol, "loads", codec)
        (err,) = Decoder().feed(struct.pack(">I", len(body)) + body)
        assert err.code == "bad_frame" and not err.fatal, codec
    key = b"k" * 64
    deep = dict(
        auth.hello(key, "user", "h1", "mbatchd", "sn", uid=1, user="a"),
        deep=orjson.loads(b"[" * 1000 + b"]" * 1000),
    )
    with pytest.raises(ProtocolError, match="nested too deep") as exc:
        auth.greet(key, deep, "sn", "mbatchd", auth.ReplayCache())
    assert exc.value.code == "bad_frame" and exc.value.fatal


def test_throttled_warnings_count_what_they_held_back(caplog):
    warn = Throttled(logging.getLogger("lavalite.test"), every=3600)
    for n in range(4):
        warn.warning("peer %d refused", n)
    warn.next_at = 0  # as if the hour had passed
    warn.warning("peer %d refused", 4)
    assert [r.getMessage() for r in caplog.records] == [
        "peer 0 refused",
        "peer 4 refused (and 3 more since the last such line)",
    ]


def test_key_file_must_be_private(tmp_path):
    path = str(tmp_path / "key")
    auth.create_key(path)
    assert [len(k) for k in auth.load_key(path)] == [64]
    import os

    os.chmod(path, 0o644)
    with pytest.raises(auth.KeyFileError, match="chmod 600"):
        auth.load_key(path)
    with pytest.raises(auth.KeyFileError, match="cannot read"):
        auth.load_key(str(tmp_path / "missing"))
