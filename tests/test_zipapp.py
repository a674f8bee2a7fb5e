"""The one file as an admin ships it: dist/lavalite, built by build.sh, run by a python3 that
has none of our dependencies, dispatching on argv[0] through `lavalite links`."""

import importlib.util
import marshal
import os
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT

ZIPAPP = os.path.join(ROOT, "dist", "lavalite")
BARE_PYTHON = "/usr/bin/python3"  # Debian's: no apsw, uvloop, psutil, orjson installed


def _bare_python():
    if not os.path.exists(BARE_PYTHON):
        pytest.skip(f"{BARE_PYTHON} missing: cannot show the file runs on a bare python3")
    probe = subprocess.run([BARE_PYTHON, "-c", "import apsw"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{BARE_PYTHON} has apsw installed: not a bare python3")
    return BARE_PYTHON


@pytest.fixture
def zipapp():
    if not os.path.exists(ZIPAPP):
        pytest.skip("dist/lavalite is not built: run ./build.sh (./build.sh test builds it)")
    return ZIPAPP


def test_zipapp_cluster_on_bare_python_with_lsf_names(make_cluster, zipapp, tmp_path):
    c = make_cluster(program=[_bare_python(), zipapp], slots=2)
    bindir = tmp_path / "bin"
    c.cli("links", str(bindir))
    assert sorted(os.listdir(bindir)) == [
        "bacct",
        "badmin",
        "bbot",
        "bhist",
        "bhosts",
        "bjobs",
        "bkill",
        "blaunch",
        "blimits",
        "bmod",
        "bpeek",
        "bqueues",
        "bquota",
        "brequeue",
        "bresume",
        "bstop",
        "bsub",
        "bswitch",
        "btop",
        "busers",
        "bwait",
        "llctrl",
        "lshosts",
        "lsload",
    ]
    # the symlinks run through the shebang's `env python3`: the bare one, first on PATH
    env = dict(c.env, PATH=f"{bindir}:/usr/bin:/bin")

    def run(*cmd):
        return subprocess.run(
            list(cmd), env=env, capture_output=True, text=True, cwd=c.state, timeout=60
        )

    sub = run("bsub", "-o", "z.%J", "--", "echo", "from the zipapp")
    assert sub.returncode == 0 and "is submitted to default queue <serial>" in sub.stdout, (
        sub.stderr
    )
    job_id = int(sub.stdout.split("<")[1].split(">")[0])
    c.wait([job_id])
    with open(os.path.join(c.state, f"z.{job_id}")) as f:
        out = f.read()  # bsub -o: LSF's job report, then the output
    assert "Successfully completed." in out and out.endswith("follows:\n\nfrom the zipapp\n")
    listing = run("bjobs", "-a")
    assert listing.returncode == 0 and "DONE" in listing.stdout
    assert "serial" in run("bqueues").stdout and "ok" in run("bhosts").stdout
    assert "already finished" in run("bkill", str(job_id)).stderr
    assert "Done successfully" in run("bhist", "-l", str(job_id)).stdout
    assert "Total number of done jobs:" in run("bacct").stdout
    # an interactive job's relay and a blaunch task run from the file too
    task = run("bsub", "-I", "--", "blaunch", "-n", "testhost", "echo task; exit 4")
    assert task.returncode == 4 and task.stdout.splitlines()[1:] == ["task"], task.stderr


def test_cli_path_stays_light():
    """DESIGN.md: a user command imports no apsw, uvloop, psutil, prometheus_client (nor
    asyncio): its start-up time is the user's latency."""
    code = (
        "import sys; from lavalite.entry import main; "
        "from roles.cli.parser import build_parser; build_parser(); import lavalite.client; "
        "print(sorted(m for m in ('apsw','uvloop','psutil','prometheus_client','asyncio',"
        "'click') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_role_dispatch_errors():
    res = subprocess.run(
        [sys.executable, os.path.join(ROOT, "lavalite.py"), "--role", "nope"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "unknown role" in res.stderr


def test_zipapp_main_is_precompiled_for_the_bare_python(zipapp):
    """build.sh ships __main__.pyc beside __main__.py (compiling it cost a tenth of each
    command's start-up): the current lavalite/zipmain.py, with the bare python3's magic number."""
    magic = subprocess.run(
        [
            _bare_python(),
            "-c",
            "import importlib.util, sys; sys.stdout.write(importlib.util.MAGIC_NUMBER.hex())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    with zipfile.ZipFile(zipapp) as z:
        pyc = z.read("__main__.pyc")
    with open(os.path.join(ROOT, "lavalite", "zipmain.py"), "rb") as f:
        source = f.read()
    assert pyc[:4].hex() == magic == importlib.util.MAGIC_NUMBER.hex()
    assert marshal.loads(pyc[16:]) == compile(source, "__main__.py", "exec", dont_inherit=True)
