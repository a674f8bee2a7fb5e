#!/usr/bin/env bash
# ./build.sh        .venv for development (editable install + test tools) and dist/lavalite,
#                   the one shiv zipapp file to copy to every node (it needs only python3 there)
# ./build.sh test   the same, then ruff, mypy and the whole test suite (what .ci/run runs)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' shiv

# --compile-pyc: a user command must not recompile the package on every start.
mkdir -p dist
rm -rf build
.venv/bin/shiv --compile-pyc -e lavalite.entry:main -p "/usr/bin/env python3" \
    -o dist/lavalite . --disable-pip-version-check --no-cache-dir >/dev/null
rm -rf build
# Our __main__.py in place of shiv's: it skips shiv's bootstrap once the file is extracted
# (lavalite/zipmain.py says why). The shebang line stays; zipfile writes after it.
# Compiled too: python3 compiles a zip's __main__.py from source on every start (a tenth of a
# command's start-up). Unchecked-hash: the file is built once, never edited in place; a python3
# whose magic number differs skips the .pyc for the .py.
.venv/bin/python - dist/lavalite lavalite/zipmain.py <<'EOF'
import os, py_compile, sys, zipfile
path, main = sys.argv[1:]
pyc = py_compile.compile(main, cfile=path + ".pyc", dfile="__main__.py", doraise=True,
                         invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
with open(path, "rb") as f:
    shebang = f.readline()
with zipfile.ZipFile(path) as src, open(path + ".tmp", "wb") as out:
    out.write(shebang)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != "__main__.py":
                dst.writestr(info, src.read(info))
        dst.write(main, "__main__.py")
        dst.write(pyc, "__main__.pyc")
os.remove(pyc)
os.chmod(path + ".tmp", 0o755)
os.replace(path + ".tmp", path)
EOF
echo "built dist/lavalite ($(du -h dist/lavalite | cut -f1))"

if [ "${1:-}" = "test" ]; then
    shift
    # the checks configured in pyproject.toml, then the suite
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    .venv/bin/mypy
    exec .venv/bin/python -m pytest -q "$@"
fi
