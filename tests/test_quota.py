"""Quota admission ([quota NAME] in queues.conf, docs/policy.md): the arithmetic and the
rolling of periods without processes; then real clusters: a refused submit names the quota
and its figures, usage counts what ran and survives an mbatchd kill -9, a reload changes the
limit, config-check refuses bad quotas with file, line and key."""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, lsf, wait_until

from lavalite import config
from lavalite.config import QuotaConf
from lavalite.job_array import Array, parse_ranges
from lavalite.model import DONE, KILLED, PEND, RUN, Job, element_id, transition
from lavalite.protocol import ProtocolError
from roles.cli.quota import HEADER, members, percent, period
from roles.mbatchd.core import Core
from roles.mbatchd.quotas import HOUR, QuotaBook, QuotaRefused, estimate, window
from store import Store

DAY = 86400.0
T0 = 1000 * 30 * DAY  # the start of a 30-day window from the epoch


def _quota(name="lab30", core_hours=3000.0, admit_below=0.9, period=30 * DAY, **members):
    return QuotaConf(
        name=name,
        users=members.get("users", ["alice"]),
        groups=members.get("groups", []),
        projects=members.get("projects", []),
        core_hours=core_hours,
        period=period,
        admit_below=admit_below,
    )


def _book(*quotas, used=None, gids=None):
    return QuotaBook(
        {q.name: q for q in quotas}, dict(used or {}), lambda user: (gids or {}).get(user, set())
    )


def _job(job_id, hours, slots=1, user="alice", project=None):
    spec = {"walltime": hours * HOUR if hours else None}
    if project:
        spec["project"] = project
    return Job(job_id, user, 1000, "serial", "j", spec, slots=slots)


def _move(book, job, new, now):
    """A state change as Core._move makes it: the transition, then the book."""
    old, start = job.state, job.start_time
    transition(job, new, now)
    if new == RUN:
        job.start_time = now  # the START report
    return book.moved(job, old, new, start, now)


def test_windows_are_fixed_from_the_epoch_and_estimates_are_slots_times_the_run_limit():
    assert window(T0, 30 * DAY) == T0
    assert window(T0 + 30 * DAY - 1, 30 * DAY) == T0
    assert window(T0 + 30 * DAY, 30 * DAY) == T0 + 30 * DAY
    assert window(T0 + 5 * 3600 + 7, 3600) == T0 + 5 * 3600
    assert estimate(4, 2 * HOUR, 30 * DAY) == 8 * HOUR
    assert estimate(2, None, 7 * DAY) == 2 * 7 * DAY  # no run limit: the whole period


def test_a_submit_that_would_reach_admit_below_is_refused_with_the_figures():
    q = _quota()
    book = _book(q, used={("lab30", T0): 2000 * HOUR})
    running, pending = _job(1, 500), _job(2, 100, slots=2)
    for job in (running, pending):
        book.add(job, 0, 1, +1)
    _move(book, running, RUN, T0 + 10)
    assert book.sums["lab30"] == [200 * HOUR, 500 * HOUR]
    # 2000 + 500 + 200 = 2700 held: 250 more passes 90% of 3000
    with pytest.raises(QuotaRefused) as refused:
        book.admit([("alice", None, 1, 250 * HOUR, 1)], T0 + 20)
    assert str(refused.value) == "quota lab30: 2700.0 + 250.0 core-hours would pass 90% of 3000"
    # reaching the threshold exactly is refused too; a hair below is admitted
    lower = _book(q, used={("lab30", T0): 2600 * HOUR})
    with pytest.raises(QuotaRefused):
        lower.admit([("alice", None, 1, 100 * HOUR, 1)], T0)
    lower.admit([("alice", None, 1, 99.9 * HOUR, 1)], T0)
    # not a member: no quota applies
    book.admit([("bob", None, 1, 10_000 * HOUR, 1)], T0 + 20)


def test_jobs_of_one_request_and_array_elements_count_together():
    book = _book(_quota(core_hours=100.0, admit_below=1.0))
    book.admit([("alice", None, 2, 20 * HOUR, 1), ("alice", None, 1, 50 * HOUR, 1)], T0)
    with pytest.raises(QuotaRefused, match=r"quota lab30: 40\.0 \+ 60\.0 core-hours"):
        book.admit([("alice", None, 2, 20 * HOUR, 1), ("alice", None, 1, 60 * HOUR, 1)], T0)
    with pytest.raises(QuotaRefused, match=r"0\.0 \+ 100\.0 core-hours would pass 100% of 100"):
        book.admit([("alice", None, 1, 10 * HOUR, 10)], T0)  # an array of 10
    arr = Array(7, "alice", 1000, "serial", "a", {"walltime": 10 * HOUR}, parse_ranges("1-9"))
    book.add(arr, 0, arr.remaining, +1)
    assert book.sums["lab30"] == [90 * HOUR, 0.0]


def test_a_job_without_a_run_limit_counts_the_whole_period_and_says_so():
    book = _book(_quota(core_hours=1000.0, period=7 * DAY))
    with pytest.raises(QuotaRefused) as refused:
        book.admit([("alice", None, 6, None, 1)], T0)
    assert str(refused.value) == (
        "quota lab30: 0.0 + 1008.0 core-hours would pass 90% of 1000 "
        "(no run limit: counted for the whole 168 h period; give -W)"
    )


def test_sums_follow_start_end_kill_and_requeue_and_usage_counts_what_ran():
    book = _book(_quota())
    a, b = _job(1, 10, slots=4), _job(2, 5)
    for job in (a, b):
        book.add(job, 0, 1, +1)
    assert book.sums["lab30"] == [45 * HOUR, 0.0]
    assert _move(book, a, RUN, T0 + 100) == []
    assert book.sums["lab30"] == [5 * HOUR, 40 * HOUR]
    rows = _move(book, a, PEND, T0 + 100 + 1800)  # requeued after half an hour on 4 slots
    assert rows == [("lab30", T0, 4 * 1800.0)]
    assert book.sums["lab30"] == [45 * HOUR, 0.0]
    _move(book, a, RUN, T0 + 2000)
    _move(book, a, DONE, T0 + 2000 + 900)
    _move(book, b, KILLED, T0 + 3000)  # killed while pending: ran nothing
    assert book.sums["lab30"] == [0.0, 0.0]
    assert book.used == {("lab30", T0): 4 * 1800.0 + 4 * 900.0}
    view = book.view(T0 + 3000)[0]
    assert (view["used"], view["running"], view["pending"]) == (3.0, 0.0, 0.0)
    assert view["period_end"] == T0 + 30 * DAY


def test_a_new_period_starts_from_zero_and_counts_only_what_ran_in_it():
    q = _quota(period=DAY)
    book = _book(q, used={("lab30", T0): 20 * HOUR})
    assert book.used_now(q, T0 + 5) == 20 * HOUR
    assert book.used_now(q, T0 + DAY) == 0.0  # the next day's window
    job = _job(1, 48, slots=2)
    book.add(job, 0, 1, +1)
    _move(book, job, RUN, T0 + DAY - 3600)  # an hour before the window ends
    rows = _move(book, job, DONE, T0 + DAY + 1800)
    assert rows == [("lab30", T0 + DAY, 2 * 1800.0)]  # the half hour in the new window
    assert book.used_now(q, T0 + DAY + 1800) == 2 * 1800.0
    assert book.used[("lab30", T0)] == 20 * HOUR  # the old window is left as it was


def test_members_are_users_unix_groups_and_projects():
    lab = _quota("lab", users=["alice"], groups=["root"], projects=["genome"])
    other = _quota("other", users=["carol"])
    book = _book(lab, other, gids={"bob": {0}})  # bob is in group root (gid 0)
    assert book.of("alice", None) == (lab,)
    assert book.of("bob", None) == (lab,)
    assert book.of("dave", "genome") == (lab,)
    assert book.of("dave", None) == ()
    assert book.of("carol", "genome") == (lab, other)
    row = book.view(T0)[0]
    assert members(row) == "alice,group:root,project:genome"
    assert percent({"used": 1.0, "running": 2.0, "pending": 3.0, "core_hours": 12.0}) == 50.0
    assert [period(s) for s in (30 * DAY, 24 * HOUR, 5400, 45)] == ["30d", "1d", "90m", "45s"]


def _config_check(conf):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "lavalite.py"), "config-check", "--conf", conf],
        capture_output=True,
        text=True,
        timeout=60,
    )


ALICE = {"role": "user", "user": "alice", "uid": 1000, "host": "h0"}


def _core_submit(core, store, now, **spec):
    msg = {"spec": {"cmd": ["true"], "walltime": 3600, **spec}}
    return core.submit(ALICE, msg, now, store.env_id)["job"]


def _report(core, job_id, rid, now, **rep):
    core.reports("h1", [{"rid": rid, "job": job_id, "attempt": 1, "time": now, **rep}], now)


def _commit(store, core):
    rows = core.out.rows()
    if rows is not None:
        store.commit(**rows)
    core.new_turn()


def _as_recounted(core):
    """The sums kept as jobs moved equal a count from scratch of the jobs in memory."""
    kept = core.quota
    core._build_quotas(kept.used)
    assert core.quota.sums == kept.sums


def test_mbatchd_keeps_the_sums_through_every_move_and_reloads_the_usage(tmp_path):
    """Core driven directly (no processes): retries, an element killed alone, an array killed,
    an array's termination time, a refused commit; the usage comes back from the store."""
    conf = config.defaults(str(tmp_path))
    conf.quotas = {"lab": _quota("lab", core_hours=1000.0)}
    store = Store(str(tmp_path / "db"))
    core = Core(conf, store.load(0), now=T0)
    core.host_register("h1", {"slots": 2, "running": []}, T0)
    # -n 1,2: placed on 2 slots, counted as 1 while pending or running, 2 in what it ran
    retried = _core_submit(core, store, T0, retries=1, slots=1, slots_max=2)
    core.schedule(T0)
    assert core.jobs[retried].slots == 2 and core.quota.sums["lab"] == [0.0, HOUR]
    _report(core, retried, 1, T0, kind="start")
    _report(core, retried, 2, T0 + 360, kind="exit", exit_code=1)  # back to PEND: a retry
    assert core.quota.used == {("lab", T0): 2 * 360.0}
    _as_recounted(core)
    arr = _core_submit(core, store, T0 + 400, name="b[1-5]")
    core.kill(ALICE, {"jobs": [element_id(arr, 3)]}, T0 + 400)  # an index killed alone
    _as_recounted(core)
    core.kill(ALICE, {"jobs": [arr]}, T0 + 401)
    _as_recounted(core)
    timed = _core_submit(core, store, T0 + 402, name="c[1-4]", term_time=T0 + 500)
    core.tick(T0 + 501)  # its indices never started end
    assert core.arrays[timed].remaining == 0
    _as_recounted(core)
    _commit(store, core)
    _core_submit(core, store, T0 + 502)
    core.refuse_created(ProtocolError("unavailable", "disk full"))
    _as_recounted(core)
    assert core.quota.sums["lab"] == [HOUR, 0.0]  # the retried job alone, pending
    _commit(store, core)
    again = Core(conf, store.load(0), now=T0 + 503)
    assert again.quota.used == {("lab", T0): 720.0}
    assert again.quota.sums == core.quota.sums


def test_a_bulk_submit_sent_again_is_not_counted_twice(tmp_path):
    conf = config.defaults(str(tmp_path))
    conf.quotas = {"lab": _quota("lab", core_hours=3.0, admit_below=1.0)}
    store = Store(str(tmp_path / "db"))
    core = Core(conf, store.load(0), now=T0)
    msg = {"req": "r1", "specs": [{"cmd": ["true"], "walltime": 3600}] * 2}
    first = core.submit_many(ALICE, msg, T0, store.env_id)
    assert core.submit_many(ALICE, msg, T0 + 1, store.env_id) == first  # 2 + 2 would pass 3
    with pytest.raises(ProtocolError, match=r"quota lab: 2\.0 \+ 1\.0 core-hours would pass 100%"):
        core.submit_many(ALICE, {**msg, "req": "r2"}, T0 + 2, store.env_id)


@pytest.mark.parametrize(
    "lines, error",
    [
        ("core_hours = 10", "queues.conf:2: [quota q]: no members: give users, groups or projects"),
        (
            "users = a\ncore_hours = 0",
            "queues.conf:4: [quota q] core_hours: '0' out of range: expected a number of "
            "core-hours > 0",
        ),
        (
            "users = a\ncore_hours = lots",
            "queues.conf:4: [quota q] core_hours: expected a number, got 'lots'",
        ),
        ("users = a", "queues.conf:2: [quota q] core_hours: missing: expected a number of"),
        (
            "users = a\ncore_hours = 10\nperiod = monthly",
            "queues.conf:5: [quota q] period: expected a duration such as 90, 1.5, 90s, 10m, "
            "2h, 1d, got 'monthly'",
        ),
        (
            "users = a\ncore_hours = 10\nadmit_below = 0%",
            "queues.conf:5: [quota q] admit_below: '0%' out of range: expected a percentage "
            "in (0, 100%]",
        ),
        (
            "users = a\ncore_hours = 10\nadmit_below = 101",
            "queues.conf:5: [quota q] admit_below: '101' out of range",
        ),
        ("users = a\ncore_hours = 10\nlimit = 3", "queues.conf:5: [quota q] limit: unknown key"),
    ],
)
def test_config_check_refuses_a_bad_quota_naming_file_line_and_key(tmp_path, lines, error):
    conf = config.write_state_conf(
        str(tmp_path), {"queues.conf": {"serial": {}}, "lavalite.conf": {}}
    )
    (tmp_path / "queues.conf").write_text(f"[serial]\n[quota q]\n{lines}\n")
    res = _config_check(conf)
    assert res.returncode == 2, res.stdout
    assert f"{tmp_path}/{error}" in res.stderr


def test_a_quota_is_read_with_its_defaults(tmp_path):
    conf = config.write_state_conf(str(tmp_path), {})
    (tmp_path / "queues.conf").write_text(
        "[serial]\n[quota lab]\ngroups = staff, lab\nprojects = p1\ncore_hours = 2.5e3\n"
    )
    check = _config_check(conf)
    assert check.stdout == f"{conf}: OK (1 queues: serial; 1 quotas: lab)\n", check.stderr
    q = config.load(conf).quotas["lab"]
    assert vars(q) == {
        "name": "lab",
        "users": [],
        "groups": ["staff", "lab"],
        "projects": ["p1"],
        "core_hours": 2500.0,
        "period": 30 * DAY,
        "admit_below": 0.9,
    }
    assert list(config.load(conf).queues) == ["serial"]


# --- real clusters


def _quotas(c):
    """bquota -json's records by name."""
    return {r["name"]: r for r in json.loads(c.cli("quota", "--json").stdout)["RECORDS"]}


def _lab(core_hours="10"):
    return {
        "serial": {"retry_backoff": "1"},
        "quota lab": {"users": "root", "core_hours": core_hours, "period": "30d"},
    }


def test_a_submit_that_would_pass_the_quota_is_refused_and_one_below_admitted(
    make_cluster, tmp_path
):
    c = make_cluster(queues=_lab(), slots=4)
    first = lsf(c, tmp_path, "bsub", "-W", "60", "-n", "4", "sleep 60")
    assert first.returncode == 0, first.stderr
    # an array of 4 one-core jobs of an hour: 4 + 4 = 8 < 9 (90% of 10)
    array = lsf(c, tmp_path, "bsub", "-W", "60", "-J", "a[1-4]", "sleep 60")
    assert array.returncode == 0, array.stderr
    refused = lsf(c, tmp_path, "bsub", "-W", "60", "sleep 60")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "bsub: quota lab: 8.0 + 1.0 core-hours would pass 90% of 10"
    ), refused.stderr
    assert refused.stdout == ""
    lab = _quotas(c)["lab"]
    assert lab["running"] + lab["pending"] == 8.0 and lab["percent"] == 80.0
    assert c.cli("quota").stdout.split("\n")[1].split()[:3] == ["lab", "root", "30d"]
    unknown = lsf(c, tmp_path, "bquota", "lab", "nope")
    assert unknown.returncode == 1 and unknown.stderr == "nope: No such quota\n"
    assert unknown.stdout.split("\n")[0].split() == HEADER
    # killing them gives their estimates back; what they ran stays used
    assert lsf(c, tmp_path, "bkill", "0").returncode == 0
    wait_until(lambda: _quotas(c)["lab"]["running"] + _quotas(c)["lab"]["pending"] == 0)
    again = lsf(c, tmp_path, "bsub", "-W", "60", "-n", "4", "true")
    assert again.returncode == 0, again.stderr


def test_usage_counts_what_ran_and_survives_an_mbatchd_kill_9(make_cluster):
    c = make_cluster(queues=_lab(), slots=2)
    job = c.submit(["sleep", "1"], walltime=600, slots=2)
    assert c.wait([job])[job]["stat"] == "DONE"
    view = c.jobs([job])[job]
    lab = wait_until(lambda: (q := _quotas(c)["lab"])["running"] == 0 and q)
    assert lab["pending"] == 0
    ran = 2 * (view["end_time"] - view["start_time"]) / 3600  # slots x seconds, in hours
    assert lab["used"] == pytest.approx(ran, abs=0.5 / 3600)
    assert lab["used"] >= 2 * 1 / 3600 * 0.9
    c.kill9_restarted("mbatchd")
    assert wait_until(lambda: _quotas(c)["lab"]["used"] == lab["used"], 30)


def test_a_reload_changes_core_hours_and_a_bad_one_keeps_the_old(make_cluster, tmp_path):
    c = make_cluster(queues=_lab(core_hours="1"))
    assert lsf(c, tmp_path, "bsub", "-W", "60", "true").returncode == 1  # 1 >= 0.9
    queues = c.state + "/queues.conf"
    with open(queues, "w") as f:
        f.write(config.render("queues.conf", _lab(core_hours="100")))
    os.kill(c.pid("mbatchd"), signal.SIGHUP)
    wait_until(lambda: _quotas(c)["lab"]["core_hours"] == 100)
    admitted = lsf(c, tmp_path, "bsub", "-W", "60", "true")
    assert admitted.returncode == 0, admitted.stderr
    with open(queues, "w") as f:
        f.write("[serial]\n[quota lab]\ncore_hours = 5\n")  # no members
    os.kill(c.pid("mbatchd"), signal.SIGHUP)
    wait_until(lambda: "reload refused" in c.logs(), what=c.logs)
    assert "[quota lab]: no members" in c.logs()
    # commands read queues.conf too: ask through the client, which holds the good one
    assert [q["core_hours"] for q in c.client.call("quotas")["quotas"]] == [100]


def test_bmod_counts_the_new_estimate_and_refuses_one_past_the_quota(tmp_path):
    """A pending job's -W bmod is admitted as a submit is (its old estimate not counted twice);
    a running job's new run limit is counted as it runs."""
    conf = config.defaults(str(tmp_path))
    conf.quotas = {"lab": _quota("lab", core_hours=4.0, admit_below=1.0)}
    store = Store(str(tmp_path / "db"))
    core = Core(conf, store.load(0), now=T0)
    pending = _core_submit(core, store, T0)  # 1 core-hour
    core.modify(ALICE, {"job": pending, "spec": {"walltime": 3 * 3600}, "reset": []}, T0)
    assert core.quota.sums["lab"] == [3 * HOUR, 0.0]
    _as_recounted(core)
    with pytest.raises(ProtocolError, match=r"quota lab: 0\.0 \+ 4\.0 core-hours would pass"):
        core.modify(ALICE, {"job": pending, "spec": {"walltime": 4 * 3600}, "reset": []}, T0)
    assert core.jobs[pending].spec["walltime"] == 3 * 3600
    assert core.quota.sums["lab"] == [3 * HOUR, 0.0]
    core.host_register("h1", {"slots": 1, "running": []}, T0)
    core.schedule(T0)
    core.modify(ALICE, {"job": pending, "spec": {"walltime": 3600}, "reset": []}, T0 + 1)
    assert core.quota.sums["lab"] == [0.0, HOUR]
    _as_recounted(core)
