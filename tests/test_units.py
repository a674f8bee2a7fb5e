"""units/ and `lavalite install`: the files land where systemd and sudo look for them, the
units pass `systemd-analyze verify`, and the sudoers sample allows exactly what llctrl runs."""

import os
import re
import shutil
import subprocess
import zipfile

import pytest
from conftest import LAUNCHER, ROOT

from roles.cli.llctrl import UNITS, VERBS, remote_command

UNITS_DIR = os.path.join(ROOT, "units")
ZIPAPP = os.path.join(ROOT, "dist", "lavalite")


@pytest.fixture
def installed(tmp_path):
    if not os.path.exists(ZIPAPP):
        pytest.skip("dist/lavalite is not built: run ./build.sh (./build.sh test builds it)")
    prefix = tmp_path / "root"
    res = subprocess.run(
        LAUNCHER + ["install", "--prefix", str(prefix), "--file", ZIPAPP],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert f"skipped creating the user 'lavalite' (--prefix {prefix} is not /)" in res.stdout
    return prefix


def test_install_puts_everything_in_place_and_keeps_edited_configs(installed):
    bindir = installed / "usr/local/bin"
    with open(bindir / "lavalite", "rb") as a, open(ZIPAPP, "rb") as b:
        assert a.read() == b.read()
    assert os.access(bindir / "lavalite", os.X_OK)
    for name in ("bsub", "bjobs", "bkill", "bqueues", "bhosts", "llctrl"):
        assert os.readlink(bindir / name) == "lavalite"
    for name in ("lavalite-lim.service", "lavalite-mbatchd.service", "lavalite-sbatchd.service"):
        assert (installed / "etc/systemd/system" / name).read_text() == open(
            os.path.join(UNITS_DIR, name)
        ).read()
    assert (installed / "etc/tmpfiles.d/lavalite.conf").exists()
    assert (installed / "usr/local/share/lavalite/sudoers.lavalite-admin").exists()
    for d, mode in (
        ("var/lib/lavalite", 0o750),
        ("var/spool/lavalite", 0o751),
        ("var/log/lavalite", 0o750),
    ):
        assert (os.stat(installed / d).st_mode & 0o777) == mode
    conf = installed / "etc/lavalite/lavalite.conf"
    conf.write_text(conf.read_text().replace("name = lavalite", "name = edited"))
    res = subprocess.run(
        LAUNCHER + ["install", "--prefix", str(installed), "--file", ZIPAPP],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "name = edited" in conf.read_text()  # a second install keeps configs


def test_install_by_a_system_python_pins_it_with_dash_s(tmp_path):
    """Installed by a python outside any venv, the program's #! names that python with -S (no
    site module at every start) and still runs: a zip's offsets survive a new prefix."""
    python = "/usr/bin/python3"
    if not os.path.exists(ZIPAPP):
        pytest.skip("dist/lavalite is not built: run ./build.sh (./build.sh test builds it)")
    version = (
        subprocess.run(
            [python, "-c", "import sys; print(sys.version_info >= (3, 11))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if os.path.exists(python)
        else None
    )
    if version != "True":
        pytest.skip(f"{python} is missing or older than 3.11")
    prefix = tmp_path / "root"
    res = subprocess.run(
        [python, ZIPAPP, "install", "--prefix", str(prefix), "--no-user"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    program = prefix / "usr/local/bin/lavalite"
    assert program.read_bytes().partition(b"\n")[0] == f"#!{python} -S".encode()
    with zipfile.ZipFile(program) as new, zipfile.ZipFile(ZIPAPP) as old:
        assert [(i.filename, i.CRC) for i in new.infolist()] == [
            (i.filename, i.CRC) for i in old.infolist()
        ]
    out = subprocess.run([str(program), "jobs", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr


def test_units_pass_systemd_analyze_verify(installed, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists on this machine: point the units at the
    # installed file (--root=PREFIX needs a whole systemd tree there: sysinit.target, ...)
    program = str(installed / "usr/local/bin/lavalite")
    check = tmp_path / "verify"
    check.mkdir()
    for name in os.listdir(installed / "etc/systemd/system"):
        text = (installed / "etc/systemd/system" / name).read_text()
        (check / name).write_text(text.replace("/usr/local/bin/lavalite", program))
    res = subprocess.run(
        ["systemd-analyze", "verify", *sorted(map(str, check.iterdir()))],
        capture_output=True,
        text=True,
    )
    if "Failed to initialize" in res.stderr or "Failed to setup" in res.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {res.stderr.strip()}")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    (check / "broken.service").write_text(f"[Service]\nExecStart={program}\nKillMode=nonsense\n")
    res = subprocess.run(
        ["systemd-analyze", "verify", str(check / "broken.service")], capture_output=True, text=True
    )
    assert "Failed to parse kill mode" in res.stderr  # the check does look at the files


def test_sbatchd_restart_leaves_jobs_running():
    text = open(os.path.join(UNITS_DIR, "lavalite-sbatchd.service")).read()
    assert re.search(r"^KillMode=process$", text, re.M)


def _sudoers_commands():
    text = open(os.path.join(UNITS_DIR, "sudoers.lavalite-admin")).read()
    body = re.search(r"Cmnd_Alias LAVALITE_UNITS = (.*?)\n\n", text, re.S).group(1)
    return {c.strip() for c in body.replace("\\\n", " ").split(",")}


def test_sudoers_allows_exactly_what_llctrl_runs():
    wanted = set()
    for daemon in UNITS:
        for verb in VERBS:
            argv = remote_command(daemon, verb)
            if argv[0] == "sudo":
                assert argv[1:3] == ["-n", "systemctl"]
                wanted.add(" ".join(["/usr/bin/systemctl"] + argv[3:]))
    assert _sudoers_commands() == wanted


def test_sudoers_sample_parses():
    visudo = shutil.which("visudo") or (
        "/usr/sbin/visudo" if os.path.exists("/usr/sbin/visudo") else None
    )
    if visudo is None:
        pytest.skip("visudo is not installed (the sudo package; .ci/run installs it)")
    res = subprocess.run(
        [visudo, "-c", "-f", os.path.join(UNITS_DIR, "sudoers.lavalite-admin")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_install_refuses_what_is_not_the_one_file(tmp_path):
    res = subprocess.run(
        LAUNCHER + ["install", "--prefix", str(tmp_path)], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "is not the one file (a zipapp)" in res.stderr
    assert not (tmp_path / "usr").exists()


def test_install_at_the_root_creates_the_lavalite_user_and_owns_its_directories(tmp_path):
    """`install` as an admin runs it: --prefix /. The files go to tmpfs mounts in a private
    mount namespace (the machine's /usr/local and /etc stay untouched); the user is real and
    removed after."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("useradd"):
        pytest.skip("needs root, unshare and useradd to install at / in a private namespace")
    if not os.path.exists(ZIPAPP):
        pytest.skip("dist/lavalite is not built: run ./build.sh (./build.sh test builds it)")
    import pwd

    try:
        pwd.getpwnam("lavalite")
        pytest.skip("a lavalite user exists on this machine already: not ours to remove")
    except KeyError:
        pass
    targets = [
        "/usr/local",
        "/etc/systemd/system",
        "/etc/tmpfiles.d",
        "/etc/lavalite",
        "/var/lib/lavalite",
        "/var/spool/lavalite",
        "/var/log/lavalite",
    ]
    absent = [t for t in targets if not os.path.exists(t)]  # mount points made here
    script = (
        " && ".join(f"mkdir -p {t} && mount -t tmpfs lavalite-test {t}" for t in targets)
        + f" && {' '.join(LAUNCHER)} install --file {ZIPAPP}"
        + " && stat -c '%U %a %n' /var/lib/lavalite /var/spool/lavalite /var/log/lavalite"
        + " && ls /usr/local/bin /etc/systemd/system"
    )
    try:
        res = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if res.returncode != 0 and "mount" in res.stderr and "permission" in res.stderr.lower():
            pytest.skip(f"cannot mount in a private namespace here: {res.stderr.strip()}")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "created system user 'lavalite'" in res.stdout
        pw = pwd.getpwnam("lavalite")
        assert pw.pw_shell == "/usr/sbin/nologin" and pw.pw_uid < 1000, "a system account"
        assert "lavalite 750 /var/lib/lavalite" in res.stdout
        assert "lavalite 751 /var/spool/lavalite" in res.stdout  # traversed to lim.sock
        assert "lavalite 750 /var/log/lavalite" in res.stdout
        assert "lavalite-sbatchd.service" in res.stdout and "bsub" in res.stdout
    finally:
        subprocess.run(["userdel", "lavalite"], capture_output=True)
        for t in absent:
            os.rmdir(t)
    for t in targets:  # nothing leaked out of the namespace
        assert not os.path.exists(os.path.join(t, "lavalite-sbatchd.service"))
    assert not os.path.exists("/usr/local/bin/bsub")
