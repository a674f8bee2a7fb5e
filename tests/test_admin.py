"""badmin, busers, bqueues/bhosts as LSF, lsload and lshosts on a real cluster: LSF's columns
and messages, admins only, and closed hosts and queues across a restart of mbatchd."""

import os

import pytest
from conftest import lsf, wait_until

HOST = "testhost"  # the Cluster fixture's host


def header(res):
    return res.stdout.splitlines()[0].split()


def host_row(cluster, tmp_path, *args):
    res = lsf(cluster, tmp_path, "bhosts", *args)
    assert res.returncode == 0, res.stderr
    return next(line.split() for line in res.stdout.splitlines() if line.startswith(HOST))


def queue_row(cluster, tmp_path, queue="serial"):
    res = lsf(cluster, tmp_path, "bqueues", queue)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()[1].split()


def test_hclose_keeps_new_jobs_off_the_host_and_survives_an_mbatchd_restart(make_cluster, tmp_path):
    cluster = make_cluster(conf={"logging": {"target": "file"}})  # to read mbatchd's record
    res = lsf(cluster, tmp_path, "badmin", "hclose", "-C", "disk swap", HOST)
    assert (res.returncode, res.stdout) == (0, f"Close <{HOST}> ...... done\n"), res.stderr
    assert host_row(cluster, tmp_path)[1] == "closed"
    assert host_row(cluster, tmp_path, "-w")[1] == "closed_Adm"
    long = lsf(cluster, tmp_path, "bhosts", "-l", HOST).stdout
    assert "closed_Adm" in long and 'ADMIN ACTION COMMENT: "disk swap"' in long
    job = cluster.submit(["true"])
    cluster.kill9_restarted("mbatchd")
    wait_until(lambda: lsf(cluster, tmp_path, "bhosts", "-w").returncode == 0, 30, "mbatchd back")
    assert host_row(cluster, tmp_path, "-w")[1] == "closed_Adm"
    assert 'ADMIN ACTION COMMENT: "disk swap"' in lsf(cluster, tmp_path, "bhosts", "-l").stdout
    assert cluster.jobs([job])[job]["state"] == "PEND"  # the closed host took nothing
    res = lsf(cluster, tmp_path, "badmin", "hopen")  # no host: this one
    assert (res.returncode, res.stdout) == (0, f"Open <{HOST}> ...... done\n"), res.stderr
    cluster.wait([job])
    assert cluster.jobs([job])[job]["state"] == "DONE"
    with open(os.path.join(cluster.state, "log", f"mbatchd-{HOST}.log")) as f:
        assert "badmin hclose testhost by root: disk swap" in f.read()


def test_queue_states_answer_submits_and_dispatch_and_survive_a_restart(cluster, tmp_path):
    res = lsf(cluster, tmp_path, "badmin", "qclose", "-C", "maintenance", "serial")
    assert (res.returncode, res.stdout) == (0, "Queue <serial> is closed\n"), res.stderr
    assert queue_row(cluster, tmp_path)[2] == "Closed:Active"
    refused = lsf(cluster, tmp_path, "bsub", "true")
    assert refused.returncode == 1 and "Queue <serial> is closed" in refused.stderr
    res = lsf(cluster, tmp_path, "badmin", "qinact", "all")
    assert (res.returncode, res.stdout) == (0, "Queue <serial> is inactivated\n"), res.stderr
    cluster.kill9_restarted("mbatchd")
    wait_until(lambda: lsf(cluster, tmp_path, "bqueues").returncode == 0, 30, "mbatchd back")
    assert queue_row(cluster, tmp_path)[2] == "Closed:Inact"
    assert (
        'ADMIN ACTION COMMENT: "maintenance"' not in lsf(cluster, tmp_path, "bqueues", "-l").stdout
    )  # the last action's comment: qinact gave none
    assert lsf(cluster, tmp_path, "badmin", "qopen").stdout == "Queue <serial> is opened\n"
    job = cluster.submit(["true"])
    assert cluster.jobs([job])[job]["state"] == "PEND"  # inactive: nothing dispatched
    assert lsf(cluster, tmp_path, "badmin", "qact", "serial").returncode == 0
    assert queue_row(cluster, tmp_path)[2] == "Open:Active"
    cluster.wait([job])


def test_unknown_hosts_and_queues_fail_alone(cluster, tmp_path):
    res = lsf(cluster, tmp_path, "badmin", "hclose", "nosuch", HOST)
    assert res.returncode == 1
    assert res.stderr == "Close <nosuch> ...... Bad host name\n"
    assert res.stdout == f"Close <{HOST}> ...... done\n"
    res = lsf(cluster, tmp_path, "badmin", "qclose", "nosuch")
    assert (res.returncode, res.stderr) == (1, "nosuch: No such queue\n")
    assert queue_row(cluster, tmp_path)[2] == "Open:Active"
    res = lsf(cluster, tmp_path, "bqueues", "nosuch")
    assert (res.returncode, res.stderr) == (1, "nosuch: No such queue\n")
    res = lsf(cluster, tmp_path, "bhosts", "nosuch")
    assert (res.returncode, res.stderr) == (1, "nosuch: Bad host name\n")


def test_a_non_admin_is_refused_by_name_and_nothing_changes(make_cluster, tmp_path):
    c = make_cluster(conf={"cluster": {"admins": "llt-nobody-admin"}})  # root is no admin
    for args in (
        ("hclose", HOST),
        ("qclose", "serial"),
        ("qinact", "all"),
        ("reconfig",),
        ("mbdrestart",),
        ("showstatus",),
    ):
        res = lsf(c, tmp_path, "badmin", *args)
        assert res.returncode == 1, (args, res)
        assert (
            f"badmin {args[0]}: User <root> is not a cluster administrator "
            "(admins: llt-nobody-admin)" in res.stderr
        ), res.stderr
    assert host_row(c, tmp_path, "-w")[1] == "ok"
    assert queue_row(c, tmp_path)[2] == "Open:Active"


def test_reconfig_mbdrestart_and_showstatus(cluster, tmp_path):
    job = cluster.submit(["sleep", "60"])
    cluster.wait_started([job])
    res = lsf(cluster, tmp_path, "badmin", "showstatus")
    assert res.returncode == 0, res.stderr
    status = res.stdout
    assert status.startswith("LSF runtime mbatchd information\n")
    assert "        Running:              1\n" in status
    assert f"Active mbatchd PID:       {cluster.pid('mbatchd')} on {HOST}" in status
    res = lsf(cluster, tmp_path, "badmin", "reconfig")
    assert res.returncode == 0, res.stderr
    assert "No errors found." in res.stdout and "Reconfiguration initiated" in res.stdout
    assert "Latest mbatchd reconfig:" in lsf(cluster, tmp_path, "badmin", "showstatus").stdout
    old = cluster.pid("mbatchd")
    res = lsf(cluster, tmp_path, "badmin", "mbdrestart")
    assert (res.returncode, res.stdout.splitlines()[-1]) == (0, "MBD restart initiated")

    def restarted():
        try:
            return cluster.pid("mbatchd") != old and lsf(cluster, tmp_path, "bjobs").returncode == 0
        except (OSError, ValueError):
            return False

    wait_until(restarted, 30, "a new mbatchd")
    assert cluster.jobs([job])[job]["state"] == "RUN"  # jobs go on across the restart


def test_a_bad_configuration_stops_reconfig_and_mbdrestart(cluster, tmp_path):
    client = cluster.client  # its configuration read before the file breaks
    with open(os.path.join(cluster.state, "queues.conf"), "a") as f:
        f.write("\n[broken]\npriority = high\n")
    old = cluster.pid("mbatchd")
    for action in ("reconfig", "mbdrestart"):
        res = lsf(cluster, tmp_path, "badmin", action)  # the command reads the same files
        assert res.returncode == 2, res
        assert "[broken] priority: expected an integer" in res.stderr
        # mbatchd checks them too, for a command whose files were fine
        assert "[broken] priority" in client.call("badmin", action=action)["error"]
    assert cluster.pid("mbatchd") == old
    assert "broken" not in lsf(cluster, tmp_path, "bqueues").stdout


def test_lsf_column_headers(cluster, tmp_path):
    cluster.wait([cluster.submit(["true"])])
    expect = {
        "bqueues": "QUEUE_NAME PRIO STATUS MAX JL/U JL/P JL/H NJOBS PEND RUN SUSP",
        "bhosts": "HOST_NAME STATUS JL/U MAX NJOBS RUN SSUSP USUSP RSV",
        "busers": "USER/GROUP JL/P MAX NJOBS PEND RUN SSUSP USUSP RSV",
        "lsload": "HOST_NAME status r15s r1m r15m ut pg ls it tmp swp mem",
        "lshosts": "HOST_NAME type model cpuf ncpus maxmem maxswp server RESOURCES",
    }
    for name, columns in expect.items():
        res = lsf(cluster, tmp_path, name)
        assert res.returncode == 0, (name, res.stderr)
        assert header(res) == columns.split(), (name, res.stdout)


def test_busers_counts_pending_and_running_slots(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    running = c.submit(["sleep", "60"])
    c.wait_started([running])
    c.submit(["true"])
    c.submit(["true"])
    for args in ((), ("root",), ("-w", "all")):
        res = lsf(c, tmp_path, "busers", *args)
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[1].split() == [
            "root",
            "-",
            "-",
            "3",
            "2",
            "1",
            "0",
            "0",
            "0",
        ]
    res = lsf(c, tmp_path, "busers", "nobody")
    assert res.stdout.splitlines()[1].split() == ["nobody", "-", "-", "0", "0", "0", "0", "0", "0"]


def test_lsload_and_lshosts_show_lims_figures(cluster, tmp_path):
    import psutil

    def row(name, *args):
        res = lsf(cluster, tmp_path, name, *args)
        assert res.returncode == 0, res.stderr
        return dict(zip(header(res), res.stdout.splitlines()[1].split()))

    load = wait_until(lambda: row("lsload", HOST).get("ut", "-") != "-" and row("lsload", HOST))
    assert load["status"] == "ok" and load["mem"].endswith(("M", "G"))
    assert load["ut"].endswith("%") and float(load["r1m"]) >= 0
    info = row("lshosts", "-w", HOST)
    assert info["ncpus"] == str(os.cpu_count())
    total_mb = psutil.virtual_memory().total / (1 << 20)
    shown = float(info["maxmem"][:-1]) * (1024 if info["maxmem"].endswith("G") else 1)
    assert abs(shown - total_mb) <= max(1.0, total_mb * 0.01)
    assert info["server"] == "Yes"
    assert row("lsload", "-l")["HOST_NAME"] == HOST
    res = lsf(cluster, tmp_path, "lsload", "nosuch")
    assert (res.returncode, res.stderr) == (1, "nosuch: Bad host name\n")


def test_bqueues_and_bhosts_long_forms(make_cluster, tmp_path):
    cluster = make_cluster(
        queues={"serial": {"default_walltime": "10m", "max_walltime": "1h", "max_memory": "2G"}}
    )
    long = lsf(cluster, tmp_path, "bqueues", "-l", "serial").stdout
    assert long.startswith("QUEUE: serial\n")
    assert "PARAMETERS/STATISTICS" in long and "Open:Active" in long
    assert "DEFAULT LIMITS:\n RUNLIMIT\n 10.0 min\n" in long
    assert "MAXIMUM LIMITS:\n RUNLIMIT\n 60.0 min\n\n MEMLIMIT\n 2G\n" in long, long
    long = lsf(cluster, tmp_path, "bhosts", "-l").stdout.splitlines()
    assert long[0] == f"HOST  {HOST}"
    assert long[1].split()[:3] == ["STATUS", "CPUF", "JL/U"]
    assert " CURRENT LOAD USED FOR SCHEDULING:" in long


# --- the core's part, driven directly (no processes)

ROOT_USER = {"role": "user", "user": "root", "uid": 0, "host": "h0"}


def _core(tmp_path, state=None):
    from lavalite import config
    from roles.mbatchd.core import Core
    from store import Store

    conf = config.defaults(str(tmp_path))
    loaded = Store(str(tmp_path / "db")).load(0)
    loaded["badmin"] = state
    return conf, Core(conf, loaded, now=100.0)


def test_queue_state_set_by_an_admin_outlives_reloads_and_restarts(tmp_path):
    from roles.mbatchd import admin_ops

    conf, core = _core(tmp_path)
    q = conf.mbatchd.default_queue
    results = core.badmin_control(ROOT_USER, {"action": "qinact", "names": ["all"]}, 100.0)
    assert results == {"results": [{"ok": True, "message": f"Queue <{q}> is inactivated"}]}
    assert core.queues[q].active is False
    core.reconfigure(conf)  # queues.conf says active: the admin's word stays
    assert core.queues[q].active is False
    admin_ops.save_state(str(tmp_path), core.admin_state)
    _, again = _core(tmp_path, admin_ops.load_state(str(tmp_path)))
    assert again.queues[q].active is False and again.queue_flag(q, "open") is True
    assert admin_ops.load_state(str(tmp_path / "none")) == admin_ops.empty_state()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / admin_ops.STATE_FILE).write_text("{not json")
    assert admin_ops.load_state(str(tmp_path / "bad")) == admin_ops.empty_state()


def test_the_core_refuses_a_non_admin_and_changes_nothing(tmp_path):
    from lavalite.protocol import ProtocolError

    conf, core = _core(tmp_path)
    alice = {**ROOT_USER, "user": "alice", "uid": 1000}
    with pytest.raises(ProtocolError, match="User <alice> is not a cluster administrator"):
        core.badmin_control(alice, {"action": "qclose", "names": ["all"]}, 100.0)
    assert core.queue_flag(conf.mbatchd.default_queue, "open") is True
    assert core.admin_state == {"queues": {}, "comments": {}}


def test_an_action_that_cannot_be_kept_says_so(cluster, tmp_path):
    os.mkdir(os.path.join(cluster.state, "badmin.json"))  # the whole-file write cannot land
    res = lsf(cluster, tmp_path, "badmin", "qclose", "serial")
    assert res.returncode == 1
    assert "badmin.json" in res.stderr and "done, but only until mbatchd restarts" in res.stderr
