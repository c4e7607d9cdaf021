"""Structure checks: the client and the emulator import only what they may, and stay small."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] == "convstore"}


def test_client_imports_only_errors_the_interaction_model_and_itself() -> None:
    # convstore._wire: the spliced input of a body conv.send built (a leaf: it imports nothing of convstore).
    allowed = {"convstore.errors", "convstore._limits", "convstore._wire", "convstore.model._interaction"}
    for path in sorted((ROOT / "convstore/client").glob("*.py")):
        for name in imported_modules(path):
            assert name in allowed or name.startswith("convstore.client"), f"{path.name} imports {name}"


def test_the_wire_body_module_is_a_leaf() -> None:
    assert imported_modules(ROOT / "convstore/_wire.py") == set()


def test_testing_never_imports_the_store() -> None:
    for path in sorted((ROOT / "convstore/testing").glob("*.py")):
        for name in imported_modules(path):
            assert name.startswith("convstore.testing"), f"{path.name} imports {name}"


def test_interaction_model_imports_only_errors() -> None:
    assert imported_modules(ROOT / "convstore/model/_interaction.py") == {"convstore.errors"}


def test_modules_stay_small() -> None:
    for folder in ("convstore/client", "convstore/testing"):
        for path in (ROOT / folder).glob("*.py"):
            assert len(path.read_text(encoding="utf-8").splitlines()) <= 500, path
