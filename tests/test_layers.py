"""Imports point one way.

errors <- model <- codec <- budget <- store, codec <- client; {store, client} <- conversation <- cli.
"""

from __future__ import annotations

import ast
import runpy
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "convstore"

# What each part may import from convstore (itself is always allowed).
ALLOWED = {
    "errors": set(),
    "_ids": set(),
    "_extras": set(),  # which pip install brings an optional module: any part may say so
    "_limits": {"errors"},  # the bounds on input and the guarded JSON reading, beside the errors
    "_wire": set(),  # spliced input, the JSON array of stored texts: a leaf the store and clients import
    "_uris": set(),  # Files API uris in stored step texts: a leaf the store (its index) and requests use
    "model": {"errors", "codec"},  # model's Node.step decodes lazily through the codec
    "codec": {"errors", "model", "_limits"},
    # The store writes each node's token count and chooses budget windows with budget's pure functions.
    "store": {"errors", "model", "codec", "_ids", "_extras", "budget", "_limits", "_wire", "_uris"},
    "client": {"errors", "model", "codec", "_limits", "_wire"},
    "budget": {"errors", "model", "codec", "_extras"},
}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("convstore."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "convstore":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("convstore."))
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downward(path):
    part = _part(path)
    if part not in ALLOWED:
        return
    wrong = _imports(path) - ALLOWED[part] - {part}
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"


def test_the_store_and_the_client_do_not_know_each_other():
    for path in (PACKAGE / "store").rglob("*.py"):
        assert "client" not in _imports(path)
    for path in (PACKAGE / "client").rglob("*.py"):
        assert "store" not in _imports(path)


@pytest.mark.parametrize("pair", ["client", "store", "conversation", "genai"])
def test_every_sync_module_is_generated_from_its_async_twin(pair):
    unasync = runpy.run_path(str(PACKAGE.parent / "scripts" / "unasync.py"))
    _, target, _ = unasync["PAIRS"][pair]
    actual = (PACKAGE.parent / target).read_text(encoding="utf-8")
    assert actual == unasync["generate"](pair), f"{target} is stale: run python scripts/unasync.py"


# The store's operations by concern (see ``store/_ops.py``), and which of them each may import: one way.
OPERATIONS = {
    "_rows": set(),
    "_reads": {"_rows"},
    "_windows": {"_rows", "_reads"},
    "_writes": {"_rows"},
    "_keys": set(),
    "_conversations": {"_rows", "_keys"},
    "_ops": {"_rows", "_reads", "_windows", "_writes", "_keys", "_conversations"},
}


def _store_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("convstore.store._"):
                found.add(node.module.split(".")[2])
            elif node.module == "convstore.store":
                found.update(alias.name for alias in node.names)
    return found & set(OPERATIONS)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_the_store_operations_import_one_way_and_read_in_one_sitting(name):
    path = PACKAGE / "store" / f"{name}.py"
    assert _store_imports(path) <= OPERATIONS[name], f"{name} imports {sorted(_store_imports(path))}"
    assert len(path.read_text().splitlines()) <= 400, f"{name}.py has grown past 400 lines: split it"
