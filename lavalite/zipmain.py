"""The zipapp's __main__.py (build.sh puts it in place of shiv's): where the file extracts its
site-packages, and a fast path past shiv.

Where: one directory per host, HOST_DIR (or $LAVALITE_CACHE_DIR), which root fills: the daemons
and `lavalite install` run as root, so the first of them extracts the file there, and every user
of the host shares that copy. A command uses it only when it is owned by root and writable by no
one else (a look-alike someone else made could hold any code). Otherwise a private directory of
the user's own, /tmp/lavalite-<uid> (mode 0700, checked to be theirs: a /tmp name anyone can
take first), and only then ~/.shiv: a home may be missing, read-only or shared over NFS.

Fast: shiv's bootstrap imports compileall, subprocess, shutil, zipfile, pathlib... on every
start, about 40 ms before our first line: more than a user command's own work. Once the
site-packages are extracted, this imports the entry point from them directly (shiv's naming:
<root>/<file name>_<build id>/site-packages). Anything unusual (a SHIV_* variable set, .pth
files to process, another entry point) goes through shiv's own bootstrap, unchanged.
"""

import json
import os
import stat
import sys
import zipimport
from collections.abc import Iterator

HOST_DIR = "/var/cache/lavalite"


def _environment() -> dict | None:
    """The archive's shiv environment, or None when shiv's own bootstrap must run."""
    if any(k.startswith("SHIV_") for k in os.environ):
        return None
    env = json.loads(zipimport.zipimporter(sys.argv[0]).get_data("environment.json"))
    if (
        env.get("root")
        or env.get("preamble")
        or env.get("no_modify")
        or env.get("script")
        or env.get("entry_point") != "lavalite.entry:main"
    ):
        return None
    return env


def _unsafe(path: str, uid: int) -> str | None:
    """Why `path` may not hold our code for this user (None: it may): it must be a real
    directory (no symlink), owned by `uid`, writable by no one else."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != uid:
        return f"owned by uid {st.st_uid}, not {uid}"
    if st.st_mode & 0o022:
        return f"writable by others (mode {st.st_mode & 0o777:04o})"
    return None


def _roots(errors: list) -> Iterator[tuple[str, bool]]:
    """(directory, may extract there) in order of preference, each one checked first; why
    one is passed over goes to `errors`."""
    uid = os.geteuid()
    host = os.environ.get("LAVALITE_CACHE_DIR") or HOST_DIR
    if uid == 0:
        _mkdir(host, 0o755)
    if _usable(host, 0, errors):
        yield host, uid == 0
    private = f"/tmp/lavalite-{uid}"
    _mkdir(private, 0o700)
    if _usable(private, uid, errors):
        yield private, True
    home = os.path.expanduser("~")
    if os.path.isdir(home):
        yield os.path.join(home, ".shiv"), True
    else:
        errors.append(f"{home}: no home directory")


def _usable(path: str, uid: int, errors: list) -> bool:
    """Whether `path` is safe for this user; one line on stderr when a look-alike is there."""
    why = _unsafe(path, uid)
    if why is not None:
        errors.append(f"{path}: {why}")
        if os.path.lexists(path):
            print(f"lavalite: not using {path}: {why}", file=sys.stderr)
    return why is None


def _mkdir(path: str, mode: int) -> None:
    try:
        os.mkdir(path, mode)
    except OSError:
        return  # exists (checked next), or cannot be made: the next
    os.chmod(path, mode)  # whatever the umask: the host's copy serves every user


def _extract(root: str, leaf: str, env: dict) -> None:
    """Extract the site-packages as shiv would (its lock, its atomic rename); readable by all,
    whatever the umask: a per-host copy serves every user."""
    from pathlib import Path

    import _bootstrap

    old = os.umask(0o022)
    try:
        with _bootstrap.current_zipfile() as archive:
            _bootstrap.extract_site_packages(
                archive, Path(root, leaf), env.get("compile_pyc"), env.get("compile_workers", 0)
            )
    finally:
        os.umask(old)


def _site_packages(env: dict, errors: list) -> tuple[str, str, bool] | None:
    """(root, its site-packages, whether they hold .pth files) of the first usable root."""
    leaf = f"{os.path.basename(os.path.realpath(sys.argv[0]))}_{env['build_id']}"
    for root, may_extract in _roots(errors):
        site = os.path.join(root, leaf, "site-packages")
        if not os.path.isdir(site):
            if not may_extract:
                errors.append(f"{root}: not extracted for this build (root's first run does)")
                continue
            try:
                _extract(root, leaf, env)
            except OSError as exc:
                errors.append(f"{root}: {exc.strerror or exc}")
                continue
        try:
            return root, site, any(f.endswith(".pth") for f in os.listdir(site))
        except OSError as exc:
            errors.append(f"{site}: {exc.strerror or exc}")
    return None


def _bootstrap_in(root: str | None = None) -> None:
    if root is not None:
        os.environ["SHIV_ROOT"] = root
    import _bootstrap

    _bootstrap.bootstrap()


def main() -> None:
    env = _environment()
    if env is None:
        return _bootstrap_in()
    errors: list[str] = []
    found = _site_packages(env, errors)
    if found is None:
        print(
            "lavalite: no directory to extract the program to: " + "; ".join(errors),
            file=sys.stderr,
        )
        sys.exit(2)
    root, site, pth = found
    if pth:
        return _bootstrap_in(root)
    sys.path.insert(0, site)
    from lavalite.entry import main as entry

    sys.exit(entry())


if __name__ == "__main__":
    main()
