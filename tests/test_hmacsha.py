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
            assert hmacsha.hexdigest(key, msg) == hmac.new(key, msg, "sha256").hexdigest(), \
                (key_len, msg_len)


def test_rfc4231_case_2():
    assert hmacsha.hexdigest(b"Jefe", b"what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_compare_digest():
    assert hmacsha.compare_digest("ab12", "ab12")
    assert not hmacsha.compare_digest("ab12", "ab13")
    assert not hmacsha.compare_digest("ab12", "ab1")


def test_hello_signed_as_hmac_would():
    key = b"k" * 64
    msg = auth.hello(key, "user", "h1", uid=1000, user="alice")
    canonical = auth.canonical(msg)
    assert msg["sig"] == hmac.new(key, canonical, "sha256").hexdigest()
    assert auth.server_proof(key, "n1") == hmac.new(key, b"server:n1", "sha256").hexdigest()


def test_signing_loads_no_openssl():
    code = ("import sys; from lavalite import auth; auth.hello(b'k' * 64, 'user', 'h', uid=1, "
            "user='u'); print(sorted(m for m in ('_hashlib', 'hashlib', 'hmac', 'secrets', "
            "'logging') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
