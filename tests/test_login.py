"""The login and the session seal (lavalite.auth), without sockets: a hello answers one
challenge, once; a sealed frame cannot be altered, replayed, reordered or moved."""

import time

import pytest

from lavalite import auth
from lavalite.protocol import Decoder, ProtocolError, encode, reply

KEY = b"k" * 64


def _login(key=KEY, server_keys=KEY, role="user", to="mbatchd", seen=None, **extra):
    """(the client's hello, its Session, the server's identity, its Session)."""
    if role == "user":
        extra = {"uid": 1000, "user": "alice", **extra}
    sn = auth.challenge()["nonce"]
    msg = auth.hello(key, role, "h1", to, sn, **extra)
    ident, server, _ = auth.greet(server_keys, msg, sn, to, seen or auth.ReplayCache())
    return msg, auth.Session(auth.session_key(key, msg), dialler=True), ident, server


def test_hello_signature_age_and_roles():
    msg, _, ident, _ = _login()
    assert ident["user"] == "alice" and ident["uid"] == 1000
    sn, seen = msg["sn"], auth.ReplayCache()
    forged = dict(msg, uid=0, user="root")  # claim another user: signature breaks
    with pytest.raises(ProtocolError, match="bad signature"):
        auth.verify_hello(KEY, forged, sn, "mbatchd", seen)
    with pytest.raises(ProtocolError, match="bad signature"):
        auth.verify_hello(b"other" * 13, msg, sn, "mbatchd", seen)
    with pytest.raises(ProtocolError, match="bad signature"):  # the version is signed
        auth.verify_hello(KEY, dict(msg, v=1), sn, "mbatchd", seen)
    with pytest.raises(ProtocolError, match="expired"):
        auth.verify_hello(KEY, msg, sn, "mbatchd", seen, now=time.time() + auth.HELLO_TTL + 1)
    with pytest.raises(ProtocolError, match="first frame"):
        auth.verify_hello(KEY, {"v": 2, "op": "jobs", "id": 1}, sn, "mbatchd", seen)
    with pytest.raises(ProtocolError, match="unknown role"):
        _login(role="root")


def test_a_hello_answers_one_challenge_one_server_once():
    sn = auth.challenge()["nonce"]
    msg = auth.hello(KEY, "sbatchd", "h1", "mbatchd", sn)
    seen = auth.ReplayCache()
    auth.verify_hello(KEY, msg, sn, "mbatchd", seen)
    with pytest.raises(ProtocolError, match="used before") as exc:  # same connection, again
        auth.verify_hello(KEY, msg, sn, "mbatchd", seen)
    assert exc.value.code == "auth" and exc.value.fatal
    other = auth.challenge()["nonce"]  # another connection or daemon
    assert other != sn
    with pytest.raises(ProtocolError, match="another connection's challenge"):
        auth.verify_hello(KEY, msg, other, "mbatchd", auth.ReplayCache())
    with pytest.raises(ProtocolError, match="meant for 'mbatchd'"):  # another service
        auth.verify_hello(KEY, msg, sn, "lim", auth.ReplayCache())


def test_replay_cache_forgets_after_the_ttl_and_stays_bounded():
    seen = auth.ReplayCache(cap=3)
    assert seen.first("a", 0.0) and not seen.first("a", 1.0) and not seen.first(None, 1.0)
    assert seen.first("a", 2 * auth.HELLO_TTL + 1)  # past any hello's age: forgotten
    for n in range(10):
        assert seen.first(str(n), 2 * auth.HELLO_TTL + 2)
    assert len(seen.until) == 3


def test_both_sides_derive_the_same_session_and_each_frame_is_checked():
    _, client, _, server = _login()
    frames = [client.seal(b'{"n":%d}' % n) for n in range(3)]
    assert [server.open(f) for f in frames] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    answer = server.seal(b'{"ok":true}')
    assert client.open(answer) == b'{"ok":true}'
    with pytest.raises(ProtocolError, match="bad MAC"):  # replayed: its number is past
        server.open(frames[2])
    _, client, _, server = _login()
    first, _dropped, third = (client.seal(b"{}") for _ in range(3))
    assert server.open(first) == b"{}"
    with pytest.raises(ProtocolError, match="frame 1 has a bad MAC"):  # one went missing
        server.open(third)


def test_a_flipped_byte_a_swap_or_a_reflection_fails_the_mac():
    for tamper in ("flip", "swap", "reflect", "other session"):
        _, client, _, server = _login()
        one, two = client.seal(b'{"op":"kill"}'), client.seal(b'{"op":"ping"}')
        if tamper == "flip":
            one = bytes([one[0] ^ 1]) + one[1:]
        elif tamper == "swap":
            one, two = two, one
        elif tamper == "reflect":  # the client's own frame sent back
            with pytest.raises(ProtocolError, match="bad MAC"):
                client.open(one)
            continue
        else:
            _, _, _, server = _login()
        with pytest.raises(ProtocolError, match="bad MAC") as exc:
            server.open(one)
        assert exc.value.code == "auth" and exc.value.fatal, tamper


def test_the_decoder_checks_macs_before_decoding_and_stops_at_a_bad_one():
    _, client, _, server = _login()
    dec = Decoder()
    dec.session = server
    good = encode({"v": 2, "op": "ping", "id": 1}, client)
    forged = encode({"v": 2, "op": "kill", "id": 2})  # unsealed
    out = dec.feed(good + forged + encode({"v": 2, "op": "ping", "id": 3}, client))
    assert out[0]["id"] == 1 and out[1].code == "auth" and out[1].fatal and len(out) == 2


def test_only_a_refusal_of_the_hello_may_come_unsealed():
    _, client, _, _ = _login()
    refusal = encode(
        {"v": 2, "id": 0, "ok": False, "error": {"code": "auth", "message": "bad signature"}}
    )[4:]
    assert client.open(refusal) == refusal  # the server has no session yet
    _, client, _, _ = _login()
    for fake in (
        reply(0),
        {
            "v": 2,
            "id": 0,
            "ok": False,
            "error": {"code": "redirect", "message": "go"},
            "master": "evil",
        },
    ):
        with pytest.raises(ProtocolError, match="bad MAC"):
            client.open(encode(fake)[4:])


def test_rotation_overlap_both_keys_log_in_and_the_session_follows_the_signer():
    new, old = b"n" * 64, b"o" * 64
    for client_key in (new, old):  # a host not yet given the new file
        _, client, _, server = _login(key=client_key, server_keys=auth.Keyring((new, old)))
        assert client.open(server.seal(b"{}")) == b"{}"
    with pytest.raises(ProtocolError, match="bad signature"):  # after the window: refused
        _login(key=old, server_keys=auth.Keyring((new,)))
