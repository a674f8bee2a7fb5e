"""lavalite.hmacsha (HMAC-SHA256 without OpenSSL) against the standard library's hmac."""

import hmac
import os
import subprocess
import sys

from conftest import ROOT

from lavalite import auth, hmacsha


def test_same_digest_as_hmac_for_every_key_length():
    # keys around SHA-256's 64-byte block (padded, exact, hashed first), messages of any size
    for key_len in (0, 1, 32, 63, 64, 65, 128, 300):
        for msg_len in (0, 1, 55, 56, 64, 1000):
            key, msg = os.urandom(key_len), os.urandom(msg_len)
            assert hmacsha.hexdigest(key, msg) == hmac.new(key, msg, "sha256").hexdigest(), (
                key_len,
                msg_len,
            )


def test_rfc4231_case_2():
    assert hmacsha.hexdigest(b"Jefe", b"what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_compare_digest():
    assert hmacsha.compare_digest("ab12", "ab12")
    assert not hmacsha.compare_digest("ab12", "ab13")
    assert not hmacsha.compare_digest("ab12", "ab1")


def test_keyed_digest_as_hmac_would():
    for key_len in (0, 32, 64, 65):
        key = os.urandom(key_len)
        keyed = hmacsha.Keyed(key)
        for msg_len in (0, 1, 64, 1000):
            msg = os.urandom(msg_len)
            assert keyed.digest(msg) == hmac.digest(key, msg, "sha256"), (key_len, msg_len)


def test_keyed_on_openssl_digests_the_same(monkeypatch):
    monkeypatch.setattr(hmacsha, "sha256", hmacsha.sha256)  # put back after the test
    key, msg = os.urandom(32), os.urandom(5000)
    builtin = hmacsha.Keyed(key).digest(msg[:10], msg[10:])
    hmacsha.use_openssl()
    assert hmacsha.sha256.__module__ == "_hashlib"
    assert hmacsha.Keyed(key).digest(msg) == builtin == hmac.digest(key, msg, "sha256")


def test_hello_and_session_signed_as_hmac_would():
    key = b"k" * 64
    msg = auth.hello(key, "user", "h1", "mbatchd", "sn", uid=1000, user="alice")
    canonical = auth.canonical(msg)
    assert msg["sig"] == hmac.new(key, canonical, "sha256").hexdigest()
    material = f"session|sn|{msg['cn']}|{msg['sig']}".encode()
    assert auth.session_key(key, msg) == hmac.digest(key, material, "sha256")


def test_the_interpreter_still_has_its_builtin_sha256():
    """hmacsha leans on CPython's private modules: an interpreter without them must fail
    here, loudly, rather than have every user command quietly load OpenSSL again."""
    assert hmacsha.sha256.__module__ in ("_sha256", "_sha2"), hmacsha.sha256.__module__
    assert hmacsha.compare_digest.__module__ == "_operator"


def test_signing_loads_no_openssl():
    code = (
        "import sys; from lavalite import auth; auth.hello(b'k' * 64, 'user', 'h', 'mbatchd', "
        "'sn', uid=1, user='u'); print(sorted(m for m in ('_hashlib', 'hashlib', 'hmac', "
        "'secrets', 'logging') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
