"""llctrl against a real sshd on loopback (key-only auth, its own host and user keys, its own
test user) through real pdsh.

systemd is not PID 1 on the test machines, so on the remote PATH of the test user `systemctl`
is a small stand-in that records each call and keeps each unit's state in a file, per server
address; `sudo` is a stand-in that records and runs the rest (the real sudoers rule is checked
in test_units.py). `lavalite config-check` on the hosts is the real program.
sshd listens on 127.0.0.1 and 127.0.0.3 (two "hosts"); nothing listens on 127.0.0.2.
"""

import os
import pwd
import shutil
import subprocess
import tempfile

import pytest
from conftest import LAUNCHER, ROOT, listening, wait_until
from syslogsink import SyslogSink

from lavalite import config
from roles.cli.local import free_port

H1, H2, H3 = "127.0.0.1", "127.0.0.2", "127.0.0.3"

SUDO = """#!/bin/sh
# stand-in for sudo: record, drop -n, run the rest
echo "sudo $*" >> {base}/calls.log
[ "$1" = "-n" ] && shift
exec "$@"
"""
SYSTEMCTL = """#!/bin/sh
# stand-in for systemctl (systemd is not PID 1 here): records each call and keeps each unit's
# state in a file per server address, so the two "hosts" can differ
ip=$(echo $SSH_CONNECTION | cut -d' ' -f3)
verb=$1 unit=$2
echo "systemctl $verb $unit @$ip" >> {base}/calls.log
state={base}/state/$ip-$unit
case $verb in
  is-active) if [ -f $state ]; then echo active; exit 0; else echo inactive; exit 3; fi ;;
  start|restart) touch $state ;;
  stop) rm -f $state ;;
  reload) [ -f $state ] || {{ echo "$unit is not active, cannot reload." >&2; exit 1; }} ;;
esac
"""
LAVALITE = """#!/bin/sh
# the real program, the built one file (the test user cannot read root's venv); each "host"
# has its own configuration directory
ip=$(echo $SSH_CONNECTION | cut -d' ' -f3)
LAVALITE_CONF={base}/conf-$ip/lavalite.conf SHIV_ROOT={base}/shiv exec {python} {zipapp} "$@"
"""
ZIPAPP = os.path.join(ROOT, "dist", "lavalite")


def _need(*tools):
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (.ci/run installs openssh-server and pdsh)")
    if os.geteuid() != 0:
        pytest.skip("needs root: sshd must switch to the test user")


def _script(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


@pytest.fixture(scope="module")
def sshd():
    _need("/usr/sbin/sshd", "pdsh", "ssh", "ssh-keygen", "useradd", "userdel")
    base = tempfile.mkdtemp(prefix="llctrl-sshd-")  # outside pytest's 0700 tmp: the test
    os.chmod(base, 0o755)  # user must read its keys file there
    user = f"llctrl-t{os.getpid()}"
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", base, "--shell", "/bin/sh", user], check=True
    )
    proc = None
    try:
        # "*": no password, but not a locked account, which sshd would refuse without PAM
        subprocess.run(["usermod", "-p", "*", user], check=True)
        for name in ("host_key", "id_admin"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(base, name)],
                check=True,
            )
        shutil.copy(os.path.join(base, "id_admin.pub"), os.path.join(base, "authorized_keys"))
        os.chmod(os.path.join(base, "authorized_keys"), 0o644)
        bindir = os.path.join(base, "bin")
        os.makedirs(bindir)
        os.makedirs(os.path.join(base, "state"))
        os.chmod(os.path.join(base, "state"), 0o777)
        open(os.path.join(base, "calls.log"), "w").close()
        os.chmod(os.path.join(base, "calls.log"), 0o666)
        _script(os.path.join(bindir, "sudo"), SUDO.format(base=base))
        _script(os.path.join(bindir, "systemctl"), SYSTEMCTL.format(base=base))
        if os.path.exists(ZIPAPP) and os.path.exists("/usr/bin/python3"):
            shutil.copy(ZIPAPP, os.path.join(base, "lavalite.pyz"))
            os.makedirs(os.path.join(base, "shiv"), mode=0o777)
            os.chmod(os.path.join(base, "shiv"), 0o777)
            _script(
                os.path.join(bindir, "lavalite"),
                LAVALITE.format(
                    base=base, python="/usr/bin/python3", zipapp=f"{base}/lavalite.pyz"
                ),
            )
        for ip, queues in ((H1, "[serial]\npriority = 30\n"), (H3, "[serial]\npriority = high\n")):
            d = os.path.join(base, f"conf-{ip}")
            config.write_state_conf(d, {})
            with open(os.path.join(d, "queues.conf"), "w") as f:
                f.write(queues)
            os.chmod(d, 0o755)
        port = free_port()
        cfg = os.path.join(base, "sshd_config")
        with open(cfg, "w") as f:
            f.write(f"""Port {port}
ListenAddress {H1}
ListenAddress {H3}
HostKey {base}/host_key
PidFile {base}/sshd.pid
AuthorizedKeysFile {base}/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowUsers {user}
SetEnv PATH={bindir}:/usr/bin:/bin
""")
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", cfg],
            stderr=open(os.path.join(base, "sshd.log"), "w"),
        )
        wait_until(
            lambda: listening(H3, port),
            10,
            lambda: "sshd to listen: " + open(os.path.join(base, "sshd.log")).read(),
        )
        sink = SyslogSink(os.path.join(base, "syslog.sock"))
        local = os.path.join(base, "local")
        config.write_state_conf(
            local, {"lavalite.conf": {"logging": {"syslog_address": sink.path}}}
        )
        env = dict(
            os.environ,
            LAVALITE_CONF=os.path.join(local, "lavalite.conf"),
            PDSH_SSH_ARGS_APPEND=f"-p {port} -i {base}/id_admin -o BatchMode=yes "
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        )
        yield {"base": base, "user": user, "env": env, "sink": sink, "port": port}
        sink.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        subprocess.run(["userdel", user])
        shutil.rmtree(base, ignore_errors=True)


def llctrl(sshd, *args, argv0=None):
    cmd = LAUNCHER + ["llctrl", "-l", sshd["user"], *args]
    if argv0:  # through an `llctrl` symlink, as `lavalite links` makes
        cmd = [LAUNCHER[0], argv0, "-l", sshd["user"], *args]
    return subprocess.run(cmd, env=sshd["env"], capture_output=True, text=True, timeout=120)


def calls(sshd):
    with open(os.path.join(sshd["base"], "calls.log")) as f:
        return f.read().splitlines()


def _reset(sshd):
    open(os.path.join(sshd["base"], "calls.log"), "w").close()
    state = os.path.join(sshd["base"], "state")
    for name in os.listdir(state):
        os.unlink(os.path.join(state, name))


def test_status_restart_and_folding(sshd):
    _reset(sshd)
    res = llctrl(sshd, "--hosts", f"{H1},{H3}", "sbatch", "status")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "----------------\n127.0.0.[1,3]\n----------------\ninactive\n" in res.stdout
    assert "failed on 2 of 2 hosts: 127.0.0.1 (exit 3), 127.0.0.3 (exit 3)" in res.stderr

    res = llctrl(sshd, "--hosts", f"{H1},{H3}", "sbatch", "restart")
    assert res.returncode == 0, res.stdout + res.stderr
    got = calls(sshd)
    for ip in (H1, H3):
        assert f"systemctl restart lavalite-sbatchd.service @{ip}" in got
    assert got.count("sudo -n systemctl restart lavalite-sbatchd.service") == 2

    res = llctrl(sshd, "--hosts", "127.0.0.[1,3]", "sbatch", "status")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == "----------------\n127.0.0.[1,3]\n----------------\nactive\n"


def test_different_answers_are_grouped_and_the_failed_host_named(sshd):
    _reset(sshd)
    assert llctrl(sshd, "--hosts", H1, "lim", "start").returncode == 0
    res = llctrl(sshd, "--hosts", f"{H1},{H3}", "lim", "reload")
    assert res.returncode == 1
    assert res.stdout == (
        "----------------\n127.0.0.1\n----------------\n(no output)\n"
        "----------------\n127.0.0.3\n----------------\n"
        "lavalite-lim.service is not active, cannot reload.\n"
    )
    assert res.stderr.strip() == "llctrl: lim reload failed on 1 of 2 hosts: 127.0.0.3 (exit 1)"


def test_unreachable_host_is_reported_and_the_others_still_answer(sshd):
    _reset(sshd)
    hosts = tempfile.NamedTemporaryFile("w", dir=sshd["base"], delete=False)
    hosts.write(f"# workers\n{H1}\n{H2}   # down\n")
    hosts.close()
    res = llctrl(sshd, "--file", hosts.name, "sbatch", "start", argv0=_symlink(sshd))
    assert res.returncode == 1
    assert "127.0.0.2 (unreachable)" in res.stderr
    assert "Connection refused" in res.stdout  # ssh's own words, in the host's block
    assert f"systemctl start lavalite-sbatchd.service @{H1}" in calls(sshd)


def _symlink(sshd):
    link = os.path.join(sshd["base"], "llctrl")
    if not os.path.lexists(link):
        os.symlink(LAUNCHER[1], link)
    return link


def test_config_check_runs_the_real_check_on_each_host(sshd):
    if not os.path.exists(os.path.join(sshd["base"], "lavalite.pyz")):
        pytest.skip(
            "dist/lavalite is not built (./build.sh) or /usr/bin/python3 is missing: "
            "the hosts' `lavalite config-check` runs the one file"
        )
    res = llctrl(sshd, "--hosts", f"{H1},{H3}", "lim", "config-check")
    assert res.returncode == 1
    assert "lavalite.conf: OK (1 queues: serial)" in res.stdout
    assert "queues.conf:2: [serial] priority: expected an integer, got 'high'" in res.stdout
    assert res.stderr.strip() == (
        "llctrl: lim config-check failed on 1 of 2 hosts: 127.0.0.3 (exit 2)"
    )


def test_every_action_is_in_syslog(sshd):
    sink = sshd["sink"]
    start = len(sink.lines)
    res = llctrl(sshd, "--hosts", f"{H1},{H2}", "mbatch", "stop")
    assert res.returncode == 1
    me = pwd.getpwuid(os.getuid()).pw_name
    facility, _, begin = sink.wait_for(r"llctrl\[\d+\]: .* begin$", start=start)
    assert facility == 3  # daemon
    assert (
        f"user={me} hosts=127.0.0.[1-2] command='sudo -n systemctl stop "
        f"lavalite-mbatchd.service' time="
    ) in begin
    _, _, end = sink.wait_for(r"failed on 127\.0\.0\.2 \(unreachable\)$", start=start)
    assert end.split(" failed on ")[0] == begin[: -len(" begin")]


def test_dry_run_prints_the_command_and_runs_nothing(sshd):
    _reset(sshd)
    res = llctrl(sshd, "--hosts", "n[01-03],x", "-f", "8", "--dry-run", "lim", "restart")
    assert res.returncode == 0
    assert res.stdout == (
        f"pdsh -R ssh -l {sshd['user']} -f 8 -w n01,n02,n03,x "
        "'sudo -n systemctl restart lavalite-lim.service 2>&1; "
        "echo llctrl-rc=$?'\n"
    )
    assert calls(sshd) == []


def test_hosts_default_to_the_configuration(tmp_path):
    config.write_state_conf(
        str(tmp_path),
        {
            "lavalite.conf": {
                "cluster": {"master_candidates": "m1 m2"},
                "hosts": {"node01": "10.0.0.1", "node02": "10.0.0.2", "m1": "10.0.0.9"},
            }
        },
    )
    conf = str(tmp_path / "lavalite.conf")
    for daemon, hosts in (("sbatch", "m1,m2,node01,node02"), ("mbatch", "m1,m2")):
        res = subprocess.run(
            LAUNCHER + ["llctrl", "--conf", conf, "--dry-run", daemon, "status"],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, res.stderr
        assert f" -w {hosts} " in res.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hosts", "n[1-x]", "lim", "status"], "bad host range"),
        (["--hosts", "a", "-f", "0", "lim", "status"], "--fanout must be at least 1"),
        (["--file", "/nonexistent/workers", "lim", "status"], "No such file"),
    ],
)
def test_bad_input(args, message, tmp_path):
    res = subprocess.run(
        LAUNCHER + ["llctrl", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, LAVALITE_CONF=str(tmp_path / "none.conf")),
    )
    assert res.returncode == 2
    assert message in res.stderr
