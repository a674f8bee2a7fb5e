"""The import rules the tests can hold the code to without running it."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _imported(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, at any depth (a lazy import counts too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_launchers_import_the_entry_point():
    """lavalite.entry imports the roles; a role importing it back would make a circle."""
    launchers = {ROOT / "lavalite.py", ROOT / "lavalite" / "zipmain.py"}
    sources = [
        p for top in ("lavalite", "roles", "scheduler", "store") for p in (ROOT / top).rglob("*.py")
    ]
    assert len(sources) > 20, "the source tree was not found"
    importers = [
        str(p.relative_to(ROOT))
        for p in sources
        if p not in launchers and "lavalite.entry" in _imported(p)
    ]
    assert importers == []
