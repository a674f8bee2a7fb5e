"""The zipapp's __main__.py (build.sh puts it in place of shiv's): a fast path past shiv.

shiv's bootstrap imports compileall, subprocess, shutil, zipfile, pathlib... on every start,
about 40 ms before our first line: more than a user command's own work. Once shiv has
extracted the site-packages (the first run does, through shiv), this finds that directory the
way shiv names it (<root>/<file name>_<build id>/site-packages) and imports the entry point
from it directly. Anything unusual (a SHIV_* variable set, .pth files to process, nothing
extracted yet) goes through shiv's own bootstrap, unchanged.
"""
import json
import os
import sys
import zipimport


def _site_packages():
    if any(k.startswith("SHIV_") for k in os.environ):
        return None
    archive = sys.argv[0]
    env = json.loads(zipimport.zipimporter(archive).get_data("environment.json"))
    if (env.get("root") or env.get("preamble") or env.get("no_modify") or env.get("script")
            or env.get("entry_point") != "lavalite.entry:main"):
        return None
    name = os.path.basename(os.path.realpath(archive))
    site = os.path.join(os.path.expanduser("~/.shiv"), f"{name}_{env['build_id']}",
                        "site-packages")
    try:
        if any(f.endswith(".pth") for f in os.listdir(site)):
            return None
    except OSError:
        return None
    return site


def main():
    site = _site_packages()
    if site is None:
        import _bootstrap
        _bootstrap.bootstrap()
        return
    sys.path.insert(0, site)
    from lavalite.entry import main as entry
    sys.exit(entry())


if __name__ == "__main__":
    main()
