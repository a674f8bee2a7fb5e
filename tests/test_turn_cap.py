"""A turn applies a bounded number of reports (roles/mbatchd/inbox.py, budget.py). A burst
larger than the largest budget, in one frame, must still be applied exactly once and in order,
over several turns, and each report acknowledged only once the turn that applied it has
committed: a real mbatchd process, and this test in the place of one sbatchd (and of a user),
over loopback."""

import os
import subprocess

import apsw
import pytest
from conftest import LAUNCHER, listening, wait_until
from rawpeer import RawPeer

from lavalite import auth, config
from lavalite import protocol as P
from lavalite.model import element_id
from roles.cli.local import free_port
from roles.mbatchd.budget import PLACE_MAX, PLACE_MIN, REPORTS_PER_PLACE, SAMPLE, TARGET, TurnBudget

MAX_REPORTS = PLACE_MAX * REPORTS_PER_PLACE  # per turn, at the most
JOBS = MAX_REPORTS * 3 // 2  # a start and an exit each: 3 turns' worth at least


class Conn(RawPeer):
    """One authenticated connection to mbatchd, frame by frame."""

    def __init__(self, port, key, role, host, **extra):
        super().__init__(port, timeout=30)
        assert self.login(key, role=role, host=host, **extra)["ok"]

    def send(self, msg):
        super().send({"v": P.VERSION, "id": None, **msg})

    def recv(self):
        msg = self.read()
        assert msg is not None, "mbatchd closed the connection"
        return msg


@pytest.fixture
def mbatchd(tmp_path):
    state = str(tmp_path)
    port = free_port()
    conf_path = config.write_state_conf(
        state,
        {
            "lavalite.conf": {
                "cluster": {
                    "master_candidates": "testhost",
                    "listen": "127.0.0.1",
                    "key_file": f"{state}/cluster.key",
                    "allow_root_jobs": "yes",
                },
                "hosts": {"testhost": "127.0.0.1"},
                "mbatchd": {"port": str(port)},
            }
        },
    )
    auth.create_key(f"{state}/cluster.key")
    log = open(tmp_path / "mbatchd.log", "wb")
    proc = subprocess.Popen(
        LAUNCHER + ["--role", "mbatchd", "--conf", conf_path, "--host", "testhost"],
        stdout=log,
        stderr=log,
    )

    def up():
        assert proc.poll() is None, (tmp_path / "mbatchd.log").read_text()
        return listening("127.0.0.1", port)

    wait_until(up, 30, lambda: "mbatchd to listen\n" + (tmp_path / "mbatchd.log").read_text(), 0.1)
    try:
        yield proc, port, auth.load_key(f"{state}/cluster.key"), config.load(conf_path)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(20)
        log.close()


def test_a_burst_beyond_the_cap_is_applied_once_in_order_and_acked_after_commit(mbatchd):
    proc, port, key, conf = mbatchd
    host = Conn(port, key, "sbatchd", "bursthost")
    host.send({"op": "register", "slots": JOBS, "running": [], "reports": []})
    assert host.recv() == {"v": P.VERSION, "id": None, "epoch": 0, "op": "ack", "rids": []}
    user = Conn(port, key, "user", "testhost", uid=os.getuid(), user="tester")
    user.send({"op": "submit", "id": 1, "spec": {"cmd": ["true"], "name": f"b[1-{JOBS}]"}})
    array = user.recv()["job"]
    running = set()
    while len(running) < JOBS:
        msg = host.recv()
        assert msg["op"] == "dispatch", msg
        running |= {(spec["id"], spec["attempt"]) for spec in msg["jobs"]}
    expected = {(element_id(array, i), 1) for i in range(1, JOBS + 1)}
    assert running == expected
    # One frame: every start, then every exit, so most exits are applied turns after their
    # start. Report ids are this host's sequence numbers, as sbatchd's journal numbers them.
    jobs = sorted(running)
    reports = [
        {"kind": "start", "job": j, "attempt": a, "time": 1000.0 + n}
        for n, (j, a) in enumerate(jobs)
    ]
    reports += [
        {"kind": "exit", "job": j, "attempt": a, "exit_code": 0, "exit_signal": None, "reason": ""}
        for j, a in jobs
    ]
    for rid, rep in enumerate(reports):
        rep["rid"] = rid
    host.send({"op": "report", "reports": reports})
    acked, frames = [], 0
    while len(acked) < len(reports):
        msg = host.recv()
        assert msg["op"] == "ack", msg
        assert len(msg["rids"]) <= MAX_REPORTS
        acked += msg["rids"]
        frames += 1
    assert acked == list(range(len(reports))), "each report acknowledged once, in order"
    assert frames >= 3, "the burst was applied over several turns"
    # Killed without a chance to commit anything more: what it acknowledged must be stored.
    proc.kill()
    proc.wait(20)
    db = apsw.Connection(conf.mbatchd.database, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = {
            job_id: (state, start)
            for job_id, state, start in db.execute(
                "SELECT id, state, start_time FROM jobs WHERE id >= ? AND id < ?",
                (array << 32, (array + 1) << 32),
            )
        }
        ends = dict(
            db.execute("SELECT job_id, count(*) FROM job_events WHERE new = 'DONE' GROUP BY job_id")
        )
    finally:
        db.close()
    assert rows == {j: ("DONE", 1000.0 + n) for n, (j, _) in enumerate(jobs)}, (
        "every start applied before its exit"
    )
    assert ends == {j: 1 for j, _ in jobs}, "every exit applied exactly once"


def test_the_budget_is_the_target_over_the_measured_cost_of_a_unit_of_work():
    budget = TurnBudget(unit=TARGET / 3000)  # 3,000 units fit: 1,000 slots, 2,000 reports
    assert (budget.places, budget.reports) == (1000, 2000)
    budget.turn(TARGET * 10, SAMPLE - 1)  # too little work to tell: no change
    assert budget.places == 1000
    budget.turn(TARGET * 4, 3000)  # four times too slow: a quarter of the way
    assert budget.places == int(1000 / 1.75)
    for _ in range(50):
        budget.turn(TARGET / 10, 3000)  # fast turns: up to the ceiling
    assert budget.places == PLACE_MAX
    for _ in range(50):
        budget.turn(10.0, 3000)  # a stalled machine: down to the floor
    assert budget.places == PLACE_MIN
