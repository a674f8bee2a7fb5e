"""A queue's load thresholds on a real cluster, by LIM's real numbers: a machine's load cannot
be made exact, so the thresholds move instead. The available memory (mem) is the index: no
host here has a petabyte free, every host has a megabyte."""

import os
import signal

from conftest import wait_until
from test_lsf_options import _run

QUEUES = "[serial]\nretry_backoff = 1\n"
STOP = QUEUES + "load_sched = mem=2000T\nload_stop = mem=1000T\n"
MEM_PENDING = "The available memory (mem) is below threshold"


def _reload(c, text):
    with open(os.path.join(c.state, "queues.conf"), "w") as f:
        f.write(text)
    os.kill(c.pid("mbatchd"), signal.SIGHUP)


def _lsf_out(c, tmp_path, *argv):
    return _run(c, tmp_path, list(argv)).stdout


def test_a_host_past_load_sched_keeps_the_queues_job_pending(make_cluster, tmp_path):
    c = make_cluster(queues={"serial": {"retry_backoff": "1"}, "calm": {"load_sched": "mem=1000T"}})
    held = c.submit(["true"], queue="calm")
    other = c.submit(["true"])  # the host takes another queue's jobs
    assert c.wait([other])[other]["stat"] == "DONE"
    wait_until(
        lambda: MEM_PENDING in _lsf_out(c, tmp_path, "bjobs", "-p", str(held)),
        30,
        lambda: _lsf_out(c, tmp_path, "bjobs", "-p", str(held)),
    )
    assert c.jobs([held])[held]["state"] == "PEND"
    _reload(c, QUEUES + "\n[calm]\nload_sched = mem=1M\n")  # a threshold every host is within
    assert c.wait([held])[held]["stat"] == "DONE"


def test_past_load_stop_a_job_is_suspended_and_resumes_within_load_sched(make_cluster, tmp_path):
    c = make_cluster()
    job = c.submit(["sleep", "300"])
    c.wait([job], states=("RUN",))
    _reload(c, STOP)
    c.wait([job], states=("SSUSP",), timeout=60)
    assert f"{job} " in _lsf_out(c, tmp_path, "bjobs", "-s")
    assert MEM_PENDING in _lsf_out(c, tmp_path, "bjobs", "-s", str(job))
    assert f" SUSPENDING REASONS:\n {MEM_PENDING};" in _lsf_out(
        c, tmp_path, "bjobs", "-l", str(job)
    )
    lines = _lsf_out(c, tmp_path, "bqueues", "-l", "serial").splitlines()
    params = lines[lines.index("SCHEDULING PARAMETERS") + 1 :][:3]
    assert params[0].split() == "r15s r1m r15m ut pg ls it mem swp tmp".split(), lines
    assert params[1].split() == ["loadSched", *["-"] * 7, "2000T", "-", "-"], lines
    assert params[2].split() == ["loadStop", *["-"] * 7, "1000T", "-", "-"], lines
    res = _run(c, tmp_path, ["bresume", str(job)])
    assert res.returncode == 1 and "suspended by the system" in res.stderr, res

    _reload(c, STOP.replace("load_stop = mem=1000T", "load_stop = mem=lots"))
    check = c.cli("config-check", check=False)
    assert check.returncode == 2, check
    assert "queues.conf:4: [serial] load_stop: mem=lots: expected a size" in check.stderr
    wait_until(lambda: "reload refused" in c.logs(), 30, c.logs)
    assert c.jobs([job])[job]["state"] == "SSUSP", "the old thresholds stay"

    _reload(c, QUEUES + "load_sched = mem=1M\nload_stop = mem=512K\n")
    c.wait([job], states=("RUN",), timeout=60)
    moves = [(old, new) for _, _, old, new, *_ in c.events(job)]
    assert moves[-2:] == [("RUN", "SSUSP"), ("SSUSP", "RUN")], moves
    c.client.kill([job])
    c.wait([job])
