"""The CLI's start-up path: each command imports its own module only, and a user command
imports neither orjson (the daemons' codec) nor what only local commands need."""

import importlib
import subprocess
import sys

from conftest import LAUNCHER, ROOT

from roles.cli import MODULES


def test_modules_table_matches_commands():
    for name, cmds in MODULES.items():
        assert sorted(importlib.import_module(f"roles.cli.{name}").COMMANDS) == sorted(cmds)


def test_user_commands_import_little():
    heavy = (
        "orjson",
        "subprocess",
        "tempfile",
        "asyncio",
        "uuid",
        "roles.cli.local",
        "roles.cli.simulator",
        "typing",  # the CLI's annotations name typing's types only for mypy (TYPE_CHECKING)
    )
    for command in ("submit", "jobs", "kill", "wait"):
        code = (
            f"import sys; from roles.cli.parser import build_parser; "
            f"build_parser({command!r}); import lavalite.client; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        assert out.stdout.strip() == "[]", (command, out.stdout + out.stderr)


def test_both_codecs_speak_the_same_frames():
    code = (
        "from lavalite import protocol as P\n"
        "m = {'v': P.VERSION, 'op': 'x', 'id': 1, 'f': 1.5, 's': 'é', 'l': [1, None, True]}\n"
        "a = P.encode(m); P.use_orjson(); b = P.encode(m)\n"
        "assert P.Decoder().feed(a) == P.Decoder().feed(b) == [m]\n"
        "print(a == b)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "True", out.stderr


def test_import_lavalite_is_light():
    code = (
        "import sys, lavalite; light = 'lavalite.client' not in sys.modules; "
        "from lavalite import Client; print(light, Client.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["True", "lavalite.client"], out.stderr


def test_real_commands_load_no_heavy_module(cluster):
    """What bsub and bjobs load end to end, talking to a real mbatchd: none of what their
    start-up shed (argparse with gettext and locale, OpenSSL's _hashlib for the hello's HMAC,
    logging, shutil, random, the idna codec for dialling, the daemons' modules; ssl, where
    TLS is not configured)."""
    heavy = {
        "argparse",
        "gettext",
        "locale",
        "_hashlib",
        "hashlib",
        "hmac",
        "secrets",
        "logging",
        "shutil",
        "random",
        "encodings.idna",
        "asyncio",
        "orjson",
        "subprocess",
        "tempfile",
        "uuid",
        "ssl",
        "lavalite.tls",
        "typing",
    }
    for args in (["submit", "-o", "/dev/null", "--", "true"], ["jobs", "-a"], ["queues"]):
        res = subprocess.run(
            LAUNCHER[:1] + ["-X", "importtime"] + LAUNCHER[1:] + args,
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        loaded = {
            line.split("|")[-1].strip()
            for line in res.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "lavalite.client" in loaded and not loaded & heavy, (args, loaded & heavy)
