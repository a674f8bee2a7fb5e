"""`lavalite admin rotate-key`: a new cluster key without restarting anything."""

import os
import shutil

from lavalite import config
from lavalite.client import Client, ClientError


def test_rotate_key_with_an_overlap_window(cluster, tmp_path):
    key_file = cluster.conf.cluster.key_file
    old_key = str(tmp_path / "old.key")
    shutil.copy(key_file, old_key)
    os.chmod(old_key, 0o600)
    running = cluster.submit(["sleep", "3"])
    cluster.wait([running], states=("RUN",))

    out = cluster.cli("admin", "rotate-key", "--conf", cluster.conf_path).stdout
    assert "new key written" in out
    with open(key_file) as f, open(old_key) as g:
        lines = f.read().split()
        assert len(lines) == 2 and lines[1] == g.read().strip() and lines[0] != lines[1]
    # Daemons took the new key without a restart; a host still on the old file is accepted.
    job = cluster.submit(["true"])
    assert cluster.wait([job])[job]["stat"] == "DONE"
    stale = config.load(cluster.conf_path)
    stale.cluster.key_file = old_key
    with Client(conf=stale) as c:
        assert c.call("ping")["pid"] == cluster.pid("mbatchd")

    cluster.cli("admin", "rotate-key", "--finish", "--conf", cluster.conf_path)
    with open(key_file) as f:
        assert f.read().split() == lines[:1]
    with Client(conf=stale) as c:
        try:
            c.call("ping")
            raise AssertionError("the dropped key was still accepted")
        except ClientError as exc:
            assert exc.code == "auth" and "cluster key" in exc.message
    assert cluster.wait([running])[running]["stat"] == "DONE"  # sbatchd's session survived
    assert "re-read" in cluster.logs()


def test_rotate_key_refuses_a_bad_key_file(cluster):
    os.chmod(cluster.conf.cluster.key_file, 0o644)
    res = cluster.cli("admin", "rotate-key", check=False)
    os.chmod(cluster.conf.cluster.key_file, 0o600)
    assert res.returncode == 1 and "chmod 600" in res.stderr
