"""-R, -m, -x and multi-host jobs on real daemons: a cluster (host testhost, with its LIM, so
its facts are real) and a second sbatchd on loopback (host h2), both with 2 slots."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, kill_jobs_in, remove_cgroup_slice, start_sbatchd, wait_until

from lavalite.client import ClientError


@pytest.fixture
def two_hosts(make_cluster, tmp_path):
    """The cluster, with testhost labelled `bigmem` and h2 registered beside it (its process
    is the cluster's `h2`). A host gone 2 s is lost."""
    cluster = make_cluster(start=False, slots=2, mbatchd={"node_lost_grace": "2"})
    lim_conf = os.path.join(cluster.state, "lim.conf")
    with open(lim_conf) as f:
        text = f.read()
    with open(lim_conf, "w") as f:
        f.write(text.replace("[labels]\n", "[labels]\ntesthost = bigmem\n", 1))
    cluster.start()
    state = str(tmp_path / "h2")
    proc, slice_name = start_sbatchd(cluster, state, "h2", 2)
    wait_until(lambda: _status(cluster, "h2") == "ok", 30, "h2 registered")
    cluster.h2 = proc
    yield cluster
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)
    kill_jobs_in(state)
    remove_cgroup_slice(slice_name)


def _status(cluster, name):
    hosts = cluster.client.call("hosts")["hosts"]
    return next((h["status"] for h in hosts if h["name"] == name), None)


def _used(cluster):
    return {h["name"]: h["used"] for h in cluster.client.call("hosts")["hosts"]}


def _bsub(cluster, tmp_path, *args, check=True):
    """bsub as LSF users run it: a link named bsub to the program."""
    link = tmp_path / "bsub"
    if not link.exists():
        link.symlink_to(os.path.join(ROOT, "lavalite.py"))
    res = subprocess.run(
        [sys.executable, str(link), *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        cwd=cluster.state,
        timeout=60,
    )
    if check:
        assert res.returncode == 0, res.stderr
        return int(res.stdout.split("<")[1].split(">")[0])
    return res


def _pending_reason(cluster, job_id):
    view = cluster.jobs([job_id])[job_id]
    return view["state"] == "PEND" and view["pend_reason"]


def test_a_wide_job_runs_on_two_hosts_with_lsf_s_variables(two_hosts, tmp_path):
    cluster = two_hosts
    out, go = tmp_path / "vars", tmp_path / "go"
    script = (
        f'echo "$LSB_HOSTS|$LSB_MCPU_HOSTS|$LSB_DJOB_NUMPROC|$LSB_MAX_NUM_PROCESSORS|'
        f'$(tr "\\n" " " < $LSB_DJOB_HOSTFILE)|$LSB_DJOB_HOSTFILE" > {out}; '
        f"while [ ! -e {go} ]; do sleep 0.1; done"
    )
    job = _bsub(cluster, tmp_path, "-n", "4", "-R", "span[ptile=2]", script)
    wait_until(lambda: out.exists() and out.read_text().count("|") == 5, 60, "the job's variables")
    assert _used(cluster) == {"testhost": 2, "h2": 2}, "both hosts hold its slots"
    hosts, mcpu, numproc, max_procs, listed, path = out.read_text().strip().split("|")
    first = cluster.jobs([job])[job]["exec_host"]
    other = "h2" if first == "testhost" else "testhost"
    assert hosts == f"{first} {first} {other} {other}"
    assert mcpu == f"{first} 2 {other} 2"
    assert (numproc, max_procs) == ("4", "4")
    assert listed.split() == hosts.split(), "the host file: one line per slot"
    long = cluster.cli("jobs", "-l", str(job)).stdout
    assert f"Started 4 Task(s) on Host(s) <2*{first}> <2*{other}>" in long
    assert "Requested Resources <span[ptile=2]>" in long
    short = cluster.cli("jobs", str(job)).stdout.splitlines()
    assert f" 2*{first} " in short[1] and short[2].split() == [f"2*{other}"], short
    go.touch()
    assert cluster.wait([job])[job]["stat"] == "DONE"
    assert _used(cluster) == {"testhost": 0, "h2": 0}, "every host's slots given back"
    assert not os.path.exists(path), "the host file goes with the job"


def test_select_m_and_x_on_real_hosts(two_hosts, tmp_path):
    cluster = two_hosts
    # testhost's LIM reports its memory and its label; h2 has no LIM here, so no facts
    fits = _bsub(cluster, tmp_path, "-R", "select[mem>1 && bigmem] rusage[mem=10]", "true")
    assert cluster.wait([fits])[fits]["exec_host"] == "testhost"
    never = _bsub(cluster, tmp_path, "-R", "select[maxmem>100000000]", "true")
    wait_until(
        lambda: _pending_reason(cluster, never) == "Job's resource requirements not satisfied",
        30,
        "the select reason",
    )
    pinned = _bsub(cluster, tmp_path, "-m", "h2", "true")
    assert cluster.wait([pinned])[pinned]["exec_host"] == "h2"
    go = tmp_path / "go"
    busy = _bsub(cluster, tmp_path, "-m", "testhost", f"until [ -e {go} ]; do sleep 0.1; done")
    cluster.wait_started([busy])
    done = tmp_path / "done"
    alone = _bsub(
        cluster,
        tmp_path,
        "-x",
        "-m",
        "testhost",
        f"until [ -e {done} ]; do sleep 0.1; done",
    )
    wait_until(
        lambda: (
            _pending_reason(cluster, alone)
            == "Job's requirement for exclusive execution not satisfied"
        ),
        30,
        "the exclusive reason",
    )
    go.touch()
    assert cluster.wait([busy])[busy]["stat"] == "DONE"
    cluster.wait_started([alone])
    assert _status(cluster, "testhost") == "closed_Excl"
    beside = _bsub(cluster, tmp_path, "-m", "testhost", "true")
    wait_until(lambda: _pending_reason(cluster, beside), 30, "a job kept off the exclusive host")
    assert "Exclusive Execution" in cluster.cli("jobs", "-l", str(alone)).stdout
    done.touch()
    assert cluster.wait([alone, beside])[beside]["stat"] == "DONE"
    assert _status(cluster, "testhost") == "ok"
    cluster.client.call("kill", jobs=[never])


@pytest.mark.parametrize(
    "args, words",
    [
        (["-R", "select[mem>"], "Bad resource requirement syntax: missing ] in 'select[mem>'"),
        (["-R", "select[mem>1] cu[type=rack]"], "the cu[] section of -R is not supported"),
        (["-R", "mem>1", "-R", "gpu"], "-R given more than once"),
        (["-m", "h1+x"], "-m: bad host specification 'h1+x'"),
        (["-n", "4,2"], "-n MIN,MAX: MAX must be an integer from 4"),
    ],
)
def test_bad_input_exits_2_and_creates_nothing(cluster, tmp_path, args, words):
    res = _bsub(cluster, tmp_path, *args, "true", check=False)
    assert res.returncode == 2 and words in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert cluster.client.jobs(all=True) == []


def test_mbatchd_refuses_what_the_cli_would_have(cluster, tmp_path):
    """The CLI is not trusted: a spec sent straight to mbatchd is checked again."""
    for spec, words in (
        ({"resreq": "select[(mem>1]"}, "-R: Bad resource requirement syntax"),
        ({"asked_hosts": "nohost"}, "nohost: Bad host name, host group name or cluster name"),
    ):
        with pytest.raises(ClientError) as exc:
            cluster.submit(["true"], **spec)
        assert exc.value.code == "bad_request" and words in exc.value.message
    res = _bsub(cluster, tmp_path, "-m", "nohost", "true", check=False)
    assert res.returncode == 1 and "nohost: Bad host name" in res.stderr
    assert cluster.client.jobs(all=True) == []


def test_losing_the_other_host_ends_the_job_where_it_runs(two_hosts, tmp_path):
    """A wide job started on testhost; h2, its other host, goes away: after node_lost_grace
    the job ends FAILED(node_lost) and its processes on testhost are killed."""
    cluster = two_hosts
    pid_file = tmp_path / "pid"
    job = _bsub(
        cluster,
        tmp_path,
        "-n",
        "4",
        "-m",
        "testhost+1 h2",
        f"echo $$ > {pid_file}; exec sleep 300",
    )
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 60, "the job's pid")
    assert cluster.jobs([job])[job]["exec_hosts"] == [["testhost", 2], ["h2", 2]]
    pid = int(pid_file.read_text())
    cluster.h2.terminate()
    cluster.h2.wait(30)
    assert cluster.wait([job], timeout=60)[job]["stat"] == "FAILED(node_lost)"
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 30, "the job killed on testhost")
    wait_until(lambda: _used(cluster)["testhost"] == 0, 30, "testhost's slots given back")


def test_n_min_max_starts_with_the_free_slots(two_hosts, tmp_path):
    cluster = two_hosts
    out = tmp_path / "procs"
    job = _bsub(
        cluster,
        tmp_path,
        "-n",
        "1,8",
        f'echo "$LSB_DJOB_NUMPROC $LSB_MAX_NUM_PROCESSORS $LSB_MCPU_HOSTS" > {out}',
    )
    view = cluster.wait([job])[job]
    assert view["stat"] == "DONE" and view["slots"] == 4
    numproc, max_procs, *mcpu = out.read_text().split()
    assert (numproc, max_procs) == ("4", "4"), "all 4 free slots; MAX bounded by the hosts'"
    assert sorted(mcpu[0::2]) == ["h2", "testhost"] and mcpu[1::2] == ["2", "2"]
