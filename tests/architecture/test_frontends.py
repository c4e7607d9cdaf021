"""The front ends (``convstore.cli``, ``convstore.web``) stand on the public API.

No SQL and no private store module in the command line (the export file format's reader and writer aside,
until that format is public), the page never imports the command line (only ``cli`` imports the page, for
``serve``, and lazily), and what both show of exchanges (grouping, comparison, previews) is written once,
in ``convstore.conversation._frontend``. Lazy imports inside functions count: the whole tree is walked.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "convstore"
PRIVATE_STORE = {"_engine", "_reads", "_crypto", "_migrate", "_schema", "_ops", "_rows", "_statements"}


def _modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _defined(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}  # module level


def test_the_page_never_imports_the_command_line():
    for path in (PACKAGE / "web").rglob("*.py"):
        assert not any(name.startswith("convstore.cli") for name in _modules(path)), path


def test_the_command_line_uses_no_private_store_module_and_no_sql():
    for path in (PACKAGE / "cli").rglob("*.py"):
        modules = _modules(path)
        private = {
            name
            for name in modules
            if name.startswith("convstore.store.") and name.split(".")[2] in PRIVATE_STORE
        }
        assert not private, (path, private)
        text = path.read_text(encoding="utf-8")
        for sql in ("sa.select(", "exec_driver_sql", ".engine.connect", ".engine.begin", "_schema import"):
            assert sql not in text, (path, sql)


def test_exchange_grouping_and_comparison_are_written_once():
    shared = {"group_exchanges", "comparable", "compare", "preview", "input_exchanges", "_said"}
    for folder in ("cli", "web"):
        for path in (PACKAGE / folder).rglob("*.py"):
            assert not shared & _defined(path), (path, shared & _defined(path))
    assert shared <= _defined(PACKAGE / "conversation" / "_frontend.py")
