"""The private CPython detail lavalite.cpython reads is still there and still means what the
code assumes: when an interpreter changes it, this fails (the code itself would silently fall
back to the slower public path)."""

import os

from lavalite import client, cpython


def test_environ_data_is_the_raw_environment_and_follows_its_changes(monkeypatch):
    raw = cpython.environ_data()
    assert isinstance(raw, dict), "os.environ._data is gone: lavalite.cpython needs a new look"
    assert {os.fsdecode(k): os.fsdecode(v) for k, v in raw.items()} == dict(os.environ)
    before = dict(raw)
    monkeypatch.setenv("LAVALITE_TEST_CPYTHON", "1")
    assert cpython.environ_data() != before, "a change to os.environ must change its raw data"
    monkeypatch.delenv("LAVALITE_TEST_CPYTHON")
    assert cpython.environ_data() == before


def test_client_environ_is_the_current_environment(monkeypatch):
    assert client.environ() == dict(os.environ)
    monkeypatch.setenv("LAVALITE_TEST_CPYTHON", "é")
    assert client.environ() == dict(os.environ)
    monkeypatch.delenv("LAVALITE_TEST_CPYTHON")
    assert client.environ() == dict(os.environ)
