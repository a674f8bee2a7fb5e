"""Slot reservation and backfill on a real cluster: a 2-slot job behind another user's stream of
1-slot jobs holds the slots that free and starts once the running ones end, a short -W job of a
backfill queue uses a held slot meanwhile, and bjobs -l / bhosts show the reservation."""

import re
import subprocess

import orjson
import pytest
from conftest import LAUNCHER, lsf, wait_until
from test_users import _users_cluster, as_user, own_accounts, readable  # noqa: F401  (readable: a fixture)

USER = "llbfa"  # an account of this module's own: other modules may run at once


@pytest.fixture(scope="module")
def accounts():
    yield from own_accounts(USER)


def _submit_as(c, pw, seconds):
    res = as_user(c, pw, "submit", "--", "sleep", str(seconds))
    assert res.returncode == 0, res.stdout + res.stderr
    return int(res.stdout.split("<")[1].split(">")[0])


def test_wide_job_reserves_behind_a_stream_and_a_short_job_backfills(
    accounts,
    readable,  # noqa: F811
    tmp_path,
):
    with _users_cluster(
        readable,
        slots=2,
        queues={
            # the stream's jobs get a run limit, from which the reservation's start is estimated
            "wide": {"slot_reserve": "MAX_RESERVE_TIME[10m]", "default_walltime": "2m"},
            "short": {"backfill": "yes", "priority": "20"},
        },
        mbatchd={"default_queue": "wide"},
        allow_root_jobs="yes",  # the wide and the short job are root's
    ) as c:
        _reserve_and_backfill(c, accounts[USER], tmp_path)


def _reserve_and_backfill(c, pw, tmp_path):
    first, running = _submit_as(c, pw, 2), _submit_as(c, pw, 12)
    c.wait_started([first, running])
    wide = c.submit(["sleep", "1"], slots=2)
    stream = [_submit_as(c, pw, 3) for _ in range(3)]
    # the first job's end frees a slot: the wide job holds it, the stream does not get it
    shown = wait_until(lambda: _reserved(c, tmp_path, wide), 60, "the wide job reserves")
    assert "Reserved <1> job slots on host(s) <1*testhost>;" in shown
    assert "Estimated job start time:" in shown
    assert _rsv(c, tmp_path) == "1"
    assert c.jobs(stream)[stream[0]]["state"] == "PEND"
    # a job whose run limit ends before the estimated start takes the held slot
    short = c.submit(["sleep", "1"], queue="short", walltime=20)
    c.wait([short], timeout=60)
    assert c.jobs([running])[running]["state"] == "RUN"
    views = c.wait([first, running, wide, *stream], timeout=120)
    assert views[wide]["state"] == "DONE"
    # not starved: it started once the running job ended, before any of the stream
    assert views[wide]["start_time"] >= views[running]["end_time"] - 1
    assert all(views[wide]["start_time"] < views[j]["start_time"] for j in stream)
    assert c.jobs([short])[short]["start_time"] < views[running]["end_time"]


def _reserved(c, tmp_path, job_id):
    res = lsf(c, tmp_path, "bjobs", "-l", str(job_id))
    return res.stdout if "Reserved <" in res.stdout else None


def _rsv(c, tmp_path):
    """bhosts' RSV column of testhost."""
    res = lsf(c, tmp_path, "bhosts")
    header, row = res.stdout.splitlines()[:2]
    return dict(zip(header.split(), re.split(r"\s+", row.strip())))["RSV"]


def test_simulate_reserve_prints_the_wide_jobs_wait_against_its_reservation():
    """`lavalite simulate --reserve`: a real mbatchd, simulated hosts, three runs."""
    argv = ["simulate", "--json", "--reserve", "20", "--hosts", "2", "--slots", "2"]
    argv += ["--wide", "3", "--jobs", "24", "--users", "2", "--duration", "1-4", "--speed", "4"]
    out = subprocess.run(LAUNCHER + argv, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    fig = orjson.loads(out.stdout)
    assert fig["reserve_s"] == 20 and fig["wide_slots"] == 3
    for run in ("reserve+backfill", "reserve", "neither"):
        assert 0 < fig[run]["utilisation"] <= 1
    # held slots: the wide job starts within its reservation time, as soon as slots free
    assert fig["reserve+backfill"]["wide_wait_s"] <= fig["reserve_s"]
    assert fig["reserve"]["wide_wait_s"] <= fig["reserve_s"]
