"""`lavalite install [--prefix /]`: put this node's LavaLite in place, as a package would.

Copies the one file to <prefix>/usr/local/bin/lavalite (its `#!` line pinned to the python
running the install, with -S) with its LSF-name links beside it, the systemd units to
<prefix>/etc/systemd/system, the tmpfiles.d rule, the sudoers sample (to
<prefix>/usr/local/share/lavalite: granting sudo is the admin's decision), the sample
configuration to <prefix>/etc/lavalite (existing files kept), creates the system user
`lavalite` and the state, spool and log directories. Running it again updates the program and
the units and changes nothing else.
"""

import os
import shutil
import subprocess
import sys
import zipfile

from lavalite import config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace

USER = "lavalite"
UNIT_FILES = ("lavalite-lim.service", "lavalite-mbatchd.service", "lavalite-sbatchd.service")
# directory -> mode; owned by the lavalite user (sbatchd, running as root, writes the spool too);
# the daemons' private modes under the lavalite group (lavalite/private.py): every user may
# only traverse the spool, to LIM's lim.sock
DIRS = {"var/lib/lavalite": 0o750, "var/spool/lavalite": 0o751, "var/log/lavalite": 0o750}


def _setup(p: "ArgumentParser") -> None:
    p.add_argument(
        "--prefix",
        default="/",
        help="install below this directory (default /); the lavalite user is "
        "created only when it is /",
    )
    p.add_argument("--file", help="the program to install (default: this one file)")
    p.add_argument("--no-user", action="store_true", help="do not create the lavalite system user")


def _copy(src: str | os.PathLike[str], dst: str, mode: int, first_line: str | None = None) -> None:
    """first_line: a zipapp's new `#!` line (the archive is written again after it, as zipapp
    does: shiv's offsets count its own first line, so a longer or shorter one breaks them)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f"{dst}.lavalite-new"
    if first_line is None:
        shutil.copyfile(src, tmp)
    else:
        with zipfile.ZipFile(src) as old, open(tmp, "wb") as f:
            f.write(first_line.encode() + b"\n")
            with zipfile.ZipFile(f, "w") as new:
                for info in old.infolist():
                    new.writestr(info, old.read(info))
    os.chmod(tmp, mode)
    os.replace(tmp, dst)  # a running daemon keeps the old file's inode
    print(f"installed {dst}")


def _shebang() -> str | None:
    """`#!<this python> -S` as pip pins its scripts' interpreter: every command starts without
    the site module (about 4 ms of a 45 ms bsub; the program carries its own packages). None
    (keep `#!/usr/bin/env python3`) when this python is a virtual environment's."""
    if sys.prefix != sys.base_prefix or " " in sys.executable or not sys.executable:
        return None
    return f"#!{sys.executable} -S"


def _user(prefix: str, no_user: bool) -> tuple[int, int] | None:
    """The uid/gid of the lavalite user, created if missing; None when not ours to create."""
    import pwd

    if no_user or prefix != "/":
        print(
            f"skipped creating the user {USER!r}"
            + ("" if no_user else f" (--prefix {prefix} is not /)")
        )
        return None
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                "/var/lib/lavalite",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "LavaLite daemons",
                USER,
            ],
            check=True,
        )
        print(f"created system user {USER!r}")
        pw = pwd.getpwnam(USER)
    return pw.pw_uid, pw.pw_gid


def install(args: "Namespace") -> int:
    from importlib import resources

    program = os.path.realpath(args.file or sys.argv[0])
    if not os.path.isfile(program):
        print(f"lavalite install: {program} is not a file", file=sys.stderr)
        return 2
    if not zipfile.is_zipfile(program):
        # e.g. the source tree's lavalite.py launcher: that file alone is not the program
        print(
            f"lavalite install: {program} is not the one file (a zipapp): run "
            f"dist/lavalite install, or give --file dist/lavalite",
            file=sys.stderr,
        )
        return 2
    prefix = os.path.abspath(args.prefix)
    root = lambda path: os.path.join(prefix, path)  # noqa: E731
    owner = _user(prefix, args.no_user)
    bindir = root("usr/local/bin")
    _copy(program, os.path.join(bindir, "lavalite"), 0o755, _shebang())
    from roles.cli.local import LINKS

    for name in LINKS:
        link = os.path.join(bindir, name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink("lavalite", link)
    print(f"linked {', '.join(LINKS)} in {bindir}")
    units = resources.files("units")
    for name in UNIT_FILES:
        with resources.as_file(units / name) as src:
            _copy(src, root(f"etc/systemd/system/{name}"), 0o644)
    with resources.as_file(units / "lavalite.tmpfiles") as src:
        _copy(src, root("etc/tmpfiles.d/lavalite.conf"), 0o644)
    with resources.as_file(units / "sudoers.lavalite-admin") as src:
        _copy(src, root("usr/local/share/lavalite/sudoers.lavalite-admin"), 0o644)
    etc = root("etc/lavalite")
    os.makedirs(etc, exist_ok=True)
    for name in config.FILES:
        if not os.path.exists(os.path.join(etc, name)):
            with open(os.path.join(etc, name), "w", encoding="utf-8") as f:
                f.write(config.render(name))
            print(f"installed {os.path.join(etc, name)} (sample: edit it)")
    for path, mode in DIRS.items():
        os.makedirs(root(path), exist_ok=True)
        os.chmod(root(path), mode)
        if owner:
            os.chown(root(path), *owner)
    print(f"directories: {', '.join(root(p) for p in DIRS)}")
    print(
        "next: copy one cluster key (lavalite.conf key_file, mode 0600, owner lavalite) to "
        "every host, then `systemctl daemon-reload; systemctl enable --now "
        "lavalite-lim lavalite-sbatchd`"
    )
    return 0


COMMANDS = {
    "install": (
        _setup,
        install,
        "install the program, units, links, user and directories on this host",
    )
}
