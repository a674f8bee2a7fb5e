"""Fairshare: USER_SHARES and [usergroup] parsing and checking, and the scheduler's order in a
fairshare queue on hand-built snapshots (pure: no processes)."""

import os
from collections import deque

import pytest

from lavalite import config
from lavalite.fairshare import expand_groups, parse_shares
from lavalite.model import Job
from scheduler import QueueView, Snapshot, plan
from scheduler.fairshare import Factors, Fair, Policy, Usage, priority

_seq = iter(range(1, 10**6))


def pend(q, user, n, group=None):
    jobs = []
    for _ in range(n):
        spec = {"user_group": group} if group else {}
        j = Job(next(_seq), user, 1000, q.name, "j", spec)
        j.pend_seq = j.id
        q.pending.setdefault(user, deque()).append((j.pend_seq, j))
        jobs.append(j)
    return jobs


def fair_queue(shares, groups=None, factors=None):
    q = QueueView("fair")
    members = expand_groups(groups or {})
    q.fair = Fair(Policy.build(parse_shares(shares), members), factors or Factors())
    return q


def placed_users(q, slots, now=0.0):
    p = plan(Snapshot(now, [q], {"h1": slots}, slots, slots))
    return [j.user for j, _ in p.placements]


def test_parse_shares_and_refusals():
    assert parse_shares("USER_SHARES[[alice, 2] [bob,1] [default, 1]]") == [
        ("alice", 2),
        ("bob", 1),
        ("default", 1),
    ]
    for bad, why in (
        ("[[alice, 2]]", "USER_SHARES"),
        ("USER_SHARES[[alice, two]]", "integer >= 1"),
        ("USER_SHARES[[alice, 0]]", "integer >= 1"),
        ("USER_SHARES[[alice, 1] [alice, 2]]", "twice"),
        ("USER_SHARES[[alice 2]]", "entries"),
        ("USER_SHARES[]", "entries"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_shares(bad)


def test_groups_expand_and_loops_are_refused():
    assert expand_groups({"a": ["x", "b"], "b": ["y"]}) == {
        "a": frozenset({"x", "y"}),
        "b": frozenset({"y"}),
    }
    with pytest.raises(ValueError, match="a contains itself"):
        expand_groups({"a": ["b"], "b": ["a"]})


def test_priority_is_lsfs_formula():
    f = Factors(cpu_time=0.7, run_time=0.7, run_job=3.0, half_life=0)
    u = Usage(run=3600.0, cpu=7200.0, at=0.0)
    u.running = 2
    # 10 / (2 h * 0.7 + (1 h + 2 slots * 0.5 h) * 0.7 + (1 + 2 + 1 placed) * 3)
    assert priority(10, u, 1800.0, f, extra=1) == pytest.approx(10 / (1.4 + 1.4 + 12))


def test_usage_decays_by_half_life():
    u = Usage(run=100.0, cpu=10.0, at=0.0)
    assert u.at_time(5 * 3600.0, 5 * 3600.0) == pytest.approx((50.0, 5.0))


def test_order_follows_shares_and_each_users_jobs_stay_fifo():
    q = fair_queue("USER_SHARES[[alice, 2] [bob, 1]]")
    a = pend(q, "alice", 6)
    b = pend(q, "bob", 6)
    p = plan(Snapshot(0.0, [q], {"h1": 6}, 6, 6))
    jobs = [j for j, _ in p.placements]
    # priority 2/3 vs 1/3 first; each placement raises the placer's slots, so alice gets twice
    # bob's slots; within a user, first in first out
    assert [j.user for j in jobs] == ["alice", "alice", "bob", "alice", "alice", "bob"]
    assert [j for j in jobs if j.user == "alice"] == a[:4]
    assert [j for j in jobs if j.user == "bob"] == b[:2]


def test_fifo_queue_is_unchanged():
    q = QueueView("serial")
    pend(q, "alice", 3)
    pend(q, "bob", 3)
    assert placed_users(q, 4) == ["alice"] * 3 + ["bob"]


def test_past_usage_lowers_priority():
    q = fair_queue("USER_SHARES[[alice, 1] [bob, 1]]", factors=Factors(run_time=100.0))
    q.fair.usage["alice"] = Usage(run=3600.0, at=0.0)
    pend(q, "alice", 2)
    pend(q, "bob", 2)
    assert placed_users(q, 1) == ["bob"]


def test_running_slots_count():
    q = fair_queue("USER_SHARES[[alice, 1] [bob, 1]]")
    q.fair.usage["alice"] = Usage(at=0.0)
    q.fair.usage["alice"].running = 3
    pend(q, "alice", 5)
    pend(q, "bob", 5)
    assert placed_users(q, 4) == ["bob", "bob", "bob", "alice"]


def test_group_shares_charge_the_group_and_default():
    groups = {"lab": ["carol", "dave"]}
    q = fair_queue("USER_SHARES[[lab, 2] [default, 1]]", groups)
    assert q.fair.policy.account("carol") == ("lab/", 2)
    assert q.fair.policy.account("erin") == ("erin", 1)
    pend(q, "carol", 4)
    pend(q, "dave", 4)
    pend(q, "erin", 4)
    users = placed_users(q, 6)
    # the group's two members share its 2 shares: together twice erin's slots
    assert users.count("erin") == 2 and users.count("carol") + users.count("dave") == 4


def test_each_member_with_at_and_bsub_G_charges_the_group():
    groups = {"lab": ["carol", "dave"]}
    q = fair_queue("USER_SHARES[[lab@, 3] [others, 1]]", groups)
    assert q.fair.policy.account("carol") == ("carol", 3)
    assert q.fair.policy.account("erin") == q.fair.policy.account("frank") == ("others", 1)
    q = fair_queue("USER_SHARES[[lab, 1] [carol, 5]]", groups)
    assert q.fair.policy.account("carol") == ("carol", 5)
    assert q.fair.policy.account("carol", "lab") == ("lab/", 1)


def _conf(tmp_path, queues_text):
    (tmp_path / "queues.conf").write_text(queues_text)
    (tmp_path / "lavalite.conf").write_text(
        f"[paths]\nstate_dir = {tmp_path}\n[mbatchd]\ndefault_queue = fair\n"
    )
    return os.path.join(tmp_path, "lavalite.conf")


def test_config_reads_shares_and_groups(tmp_path):
    conf = config.load(
        _conf(
            tmp_path,
            "[fair]\nfairshare = USER_SHARES[[lab, 2] [default, 1]]\n"
            "[usergroup lab]\nmembers = carol inner\n[usergroup inner]\nmembers = dave\n",
        )
    )
    assert conf.queues["fair"].fairshare.startswith("USER_SHARES")
    assert list(conf.queues) == ["fair"]
    assert conf.group_users["lab"] == frozenset({"carol", "dave"})
    assert conf.mbatchd.fairshare_half_life == 5.0 and conf.mbatchd.run_job_factor == 3.0


def test_config_check_refuses_bad_policy_with_file_line_and_key(tmp_path):
    path = _conf(
        tmp_path,
        "[fair]\nfairshare = USER_SHARES[[alice, x]]\n"
        "[other]\nfairshare = USER_SHARES[[nobody@, 1]]\n"
        "[usergroup selfish]\nmembers = selfish bob\n"
        "[usergroup a]\nmembers = b\n[usergroup b]\nmembers = a\n",
    )
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    q = os.path.join(tmp_path, "queues.conf")
    assert err.value.errors == [
        f"{q}:6: [usergroup selfish] members: group selfish contains itself (selfish -> selfish)",
        f"{q}:8: [usergroup a] members: group a contains itself (a -> b -> a)",
        f"{q}:2: [fair] fairshare: [alice, x]: shares must be an integer >= 1",
        f"{q}:4: [other] fairshare: nobody@ names no [usergroup nobody]",
    ]
