"""Each daemon's /metrics (scraped over HTTP, parsed with prometheus_client's own parser) and
/status after a burst of jobs, checked against the store."""

import collections
import json
import os
import subprocess
import sys
import urllib.request

import apsw
from prometheus_client.parser import text_string_to_metric_families

from roles.cli.local import free_port

SLOTS = 2


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.headers["Content-Type"], r.read().decode()


def scrape(port):
    """{(sample name, frozenset(labels)): value}"""
    ctype, text = _get(f"http://127.0.0.1:{port}/metrics")
    assert ctype.startswith("text/plain; version=")  # the Prometheus text format
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def status(port):
    ctype, text = _get(f"http://127.0.0.1:{port}/status")
    assert ctype == "application/json"
    return json.loads(text)


def _store(c, sql):
    db = apsw.Connection(c.conf.mbatchd.database, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_metrics_and_status_match_the_store_after_a_burst(make_cluster):
    ports = {role: free_port() for role in ("mbatchd", "lim", "sbatchd")}
    c = make_cluster(
        slots=SLOTS,
        queues={"serial": {"retry_backoff": "1"}, "other": {"priority": "10"}},
        conf={role: {"metrics_port": str(p)} for role, p in ports.items()},
    )
    # `up` announces the endpoints after its ready line, and writes them to the state dir
    announced = [c.proc.stdout.readline().strip() for _ in range(3)]
    urls = {role: f"http://127.0.0.1:{p}/metrics" for role, p in ports.items()}
    assert announced == [f"{role} metrics: {urls[role]}" for role in ("lim", "mbatchd", "sbatchd")]
    with open(os.path.join(c.state, "metrics.urls")) as f:
        assert f.read() == "".join(f"{r} {urls[r]}\n" for r in ("lim", "mbatchd", "sbatchd"))

    burst = [c.submit(["true"]) for _ in range(30)]
    burst += [c.submit(["true"], queue="other") for _ in range(5)]
    burst += [c.submit(["sh", "-c", "exit 3"]) for _ in range(4)]
    burst += [c.submit(["sh", "-c", "exit 3"], retries=1) for _ in range(2)]
    c.wait(burst)
    sleepers = [c.submit(["sleep", "60"]) for _ in range(SLOTS + 3)]
    c.wait(sleepers[:SLOTS], states=("RUN",))

    m = scrape(ports["mbatchd"])
    store_started = collections.Counter(
        (q, u)
        for q, u in _store(
            c,
            "SELECT j.queue, j.user FROM job_events e JOIN jobs j "
            "ON j.id = e.job_id WHERE e.new = 'RUN'",
        )
    )
    got_started = {
        dict(labels)["queue"]: v
        for (name, labels), v in m.items()
        if name == "lavalite_jobs_started_total"
    }
    assert got_started == {q: n for (q, _), n in store_started.items()}
    assert got_started == {"serial": 30 + 4 + 2 * 2 + SLOTS, "other": 5}
    failed = dict(
        _store(c, "SELECT reason, count(*) FROM jobs WHERE state = 'FAILED' GROUP BY reason")
    )
    assert failed == {"exit": 6}
    assert m["lavalite_jobs_failed_total", frozenset({("reason", "exit")})] == 6
    assert m["lavalite_attempts_retried_total", frozenset({("queue", "serial")})] == 2
    assert (
        m["lavalite_jobs_submitted_total", frozenset()]
        == _store(c, "SELECT count(*) FROM jobs")[0][0]
    )
    pend = dict(_store(c, "SELECT queue, count(*) FROM jobs WHERE state = 'PEND' GROUP BY queue"))
    assert m["lavalite_queue_depth", frozenset({("queue", "serial")})] == pend["serial"] == 3
    assert m["lavalite_queue_depth", frozenset({("queue", "other")})] == 0
    assert m["lavalite_host_free_slots", frozenset({("host", "testhost")})] == 0
    assert m["lavalite_dispatch_latency_ms_count", frozenset()] == sum(store_started.values())
    assert m["lavalite_dispatch_latency_ms_bucket", frozenset({("le", "+Inf")})] == sum(
        store_started.values()
    )
    assert m["lavalite_host_up", frozenset({("host", "testhost")})] == 1

    assert status(ports["mbatchd"])["mbatchd"] == "running"
    assert {k: status(ports["mbatchd"])[k] for k in ("pending", "running")} == {
        "pending": 3,
        "running": SLOTS,
    }
    lim = status(ports["lim"])
    assert (lim["lim"], lim["mbatchd"], lim["mbatchd_pid"]) == (
        "master",
        "running",
        c.pid("mbatchd"),
    )
    assert scrape(ports["lim"])["lavalite_mbatchd_starts_total", frozenset()] == 1
    sb = status(ports["sbatchd"])
    assert (sb["sbatchd"], sb["jobs"]) == ("connected", SLOTS)
    sm = scrape(ports["sbatchd"])
    assert sm["lavalite_sbatchd_jobs", frozenset()] == SLOTS
    assert sm["lavalite_sbatchd_attempts_started_total", frozenset()] == sum(store_started.values())

    for port in ports.values():  # anything else is a clear 404
        try:
            _get(f"http://127.0.0.1:{port}/nope")
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404


def test_metrics_off_never_imports_prometheus_client():
    """metrics_port = 0 (the default): no daemon loads prometheus_client (50 ms and 5 MB of
    its start-up), and a histogram's observe does nothing."""
    code = (
        "import sys\n"
        "from roles.lim import Lim\n"
        "from roles.sbatchd.server import Sbatchd\n"
        "from roles.mbatchd.server import Mbatchd\n"
        "from roles.mbatchd.observe import Observer\n"
        "observer = Observer(None, 'h0', 0)\n"
        "observer.latency.observe(1.0)\n"
        "print(sorted(m for m in sys.modules if m.startswith('prometheus')))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
