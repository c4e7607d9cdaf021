"""The architecture of the package, in one place: every module of every part, imports at the top of a module
and inside functions alike.

- Layers: errors <- model <- codec <- {budget, store, client} <- conversation <- {cli, web, testing}; a part
  imports only the parts ``ALLOWED`` names (a few small leaf modules sit beside the layers).
- No import cycle between parts.
- The store and the client do not know each other; the store's operations import one way.
- Front ends (``cli``, ``web``) use convstore's public API: ``import convstore`` and its public names.
- One size limit for every module.
- The generated ``_sync/`` modules are what ``scripts/unasync.py`` makes of their ``_async/`` twins.

Each exception is listed below with the work that removes it.
"""

from __future__ import annotations

import ast
import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "convstore"
MODULES = sorted(PACKAGE.rglob("*.py"))

# What each part may import from convstore (itself always). A part is a subpackage or a top-level module.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_ids": set(),
    "_version": set(),
    "_extras": set(),  # which pip install brings an optional module: any part may say so
    "_uris": set(),  # Files API uris in stored step texts: a leaf the store (its index) and requests use
    "_wire": set(),  # spliced input, the JSON array of stored texts: a leaf the store and clients import
    "_limits": {"errors"},  # the bounds on input and the guarded JSON reading, beside the errors
    "model": {"errors"},
    "codec": {"errors", "model", "_limits"},
    # The store writes each node's token count and chooses budget windows with budget's pure functions.
    "budget": {"errors", "model", "codec", "_extras"},
    "store": {"errors", "model", "codec", "_ids", "_extras", "budget", "_limits", "_wire", "_uris"},
    "client": {"errors", "model", "codec", "_limits", "_wire"},
    "_otel": {"_wire", "_version"},  # spans: handed what they show, by the conversation layer
    "conversation": {
        "errors",
        "model",
        "codec",
        "budget",
        "store",
        "client",
        "_ids",
        "_extras",
        "_limits",
        "_wire",
        "_uris",
        "_otel",
    },
    "testing": {"errors", "model", "codec", "client", "conversation", "_limits", "_wire", "_extras", "_ids"},
    # Front ends: the public API (``convstore``, its public modules ``errors``, ``client``, ``testing``), the
    # leaves ``_ids`` and ``_extras``, and of the conversation layer only the one module of shared front-end
    # logic (``conversation._frontend``: previews, exchange grouping, comparison; see FRONT_END_SHARED).
    # cli registers the web page's command (``web``): the one import between the front ends.
    "cli": {"__init__", "errors", "client", "testing", "_ids", "_extras", "conversation", "web"},
    "web": {"__init__", "errors", "_ids", "_extras", "conversation"},
    "__main__": {"cli"},
    # The pytest plugin (entry point ``pytest11``) gives apps' tests a store and the emulator: a front end.
    "pytest_plugin": {"__init__", "testing"},
}
# The package's __init__ is the public API: it may import every part (and no part but the front ends it).
ALLOWED["__init__"] = set(ALLOWED) - {"__init__", "__main__", "cli", "web", "testing", "pytest_plugin"}

# Imports the layers forbid that the code still makes, each with the work that removes it.
EXCEPTIONS: dict[tuple[str, str], str] = {}
# Front ends reaching past the public API today: being removed by the front-end work (the cliweb helper,
# issue 25 item 3); the lead empties this list at merge. Each entry: (front end, what it imports).
FRONT_END_VIOLATIONS: set[tuple[str, str]] = set()
# The one module of the conversation layer the front ends may import.
FRONT_END_SHARED = "convstore.conversation._frontend"

# One size limit for every module, in lines.
MAX_LINES = 600
# Today's modules beyond it, each with the work that splits it.
OVERSIZE: dict[str, str] = {}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported(path: Path) -> Iterator[tuple[str, int]]:
    """The convstore parts ``path`` imports, anywhere in it (functions and ``TYPE_CHECKING`` blocks too),
    with the line of each import; ``convstore`` itself is the part ``__init__``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from the module's own package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([module] if module else [])])
            if module == "convstore":
                for alias in node.names:
                    name = alias.name
                    child = PACKAGE / name
                    yield (
                        (name if child.is_dir() or child.with_suffix(".py").exists() else "__init__"),
                        node.lineno,
                    )
            elif module.startswith("convstore."):
                yield module.split(".")[1], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "convstore":
                    yield "__init__", node.lineno
                elif alias.name.startswith("convstore."):
                    yield alias.name.split(".")[1], node.lineno


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        part = _part(path)
        graph.setdefault(part, set()).update(name for name, _ in _imported(path) if name != part)
    return graph


def test_every_part_has_a_place_in_the_layers():
    assert set(_graph()) <= set(ALLOWED), sorted(set(_graph()) - set(ALLOWED))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downward(path):
    part = _part(path)
    wrong = sorted(
        f"{name} (line {line})"
        for name, line in _imported(path)
        if name != part
        and name not in ALLOWED[part]
        and (part, name) not in EXCEPTIONS
        and (part, name) not in FRONT_END_VIOLATIONS
    )
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {wrong}"


@pytest.mark.parametrize("front", ["cli", "web"])
def test_front_ends_import_only_the_shared_module_of_the_conversation_layer(front):
    wrong = []
    for path in sorted((PACKAGE / front).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("convstore.conversation") and module != FRONT_END_SHARED:
                wrong.append(f"{path.relative_to(PACKAGE)}: {module}")
    assert not wrong


def test_the_exceptions_are_still_needed():
    """An exception the code no longer needs is taken off the lists (so that they only shrink)."""
    graph = _graph()
    stale = sorted(edge for edge in [*EXCEPTIONS, *FRONT_END_VIOLATIONS] if edge[1] not in graph[edge[0]])
    assert not stale


def test_no_import_cycle_between_parts():
    graph = {
        part: {name for name in names if (part, name) not in set(EXCEPTIONS) | FRONT_END_VIOLATIONS}
        for part, names in _graph().items()
    }
    cycles = []

    def visit(part: str, trail: list[str]) -> None:
        for name in sorted(graph.get(part, ())):
            if name in trail:
                cycles.append([*trail[trail.index(name) :], name])
            elif name not in done:
                visit(name, [*trail, name])
        done.add(part)

    done: set[str] = set()
    for part in sorted(graph):
        visit(part, [part])
    assert not cycles


def test_the_store_and_the_client_do_not_know_each_other():
    graph = _graph()
    assert "client" not in graph["store"]
    assert "store" not in graph["client"]


def test_otel_reads_nothing_of_the_conversation_layer():
    """Spans are handed what they show (the conversation, the model, the reply read once)."""
    source = (PACKAGE / "_otel.py").read_text(encoding="utf-8")
    assert "conversation" not in {name for name, _ in _imported(PACKAGE / "_otel.py")}
    assert "._conversation" not in source
    assert "._body" not in source


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_fits_the_size_limit(path):
    name = path.relative_to(PACKAGE).as_posix()
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if name in OVERSIZE:
        assert lines > MAX_LINES, f"{name} fits now ({lines} lines): take it off OVERSIZE"
        return
    assert lines <= MAX_LINES, f"{name} has {lines} lines, past {MAX_LINES}: split it by concern"


def test_every_sync_module_is_generated_from_its_async_twin():
    unasync = runpy.run_path(str(PACKAGE.parent / "scripts" / "unasync.py"))
    assert unasync["main"](["--check"]) == 0, "a _sync module is stale, or a rule matches nothing"
    generated = {target.relative_to(PACKAGE).as_posix() for _, target in unasync["pairs"]()}
    assert generated == {
        "client/_sync/client.py",
        "client/_sync/genai.py",
        "conversation/_sync/conversation.py",
        "conversation/_sync/lifecycle.py",
        "conversation/_sync/turn_stream.py",
        "store/_sync/access.py",
        "store/_sync/conversation.py",
        "store/_sync/core.py",
        "store/_sync/maintenance.py",
        "store/_sync/store.py",
        "store/_sync/transfer.py",
    }
    for path in PACKAGE.rglob("_sync/*.py"):
        if path.name != "__init__.py":
            assert path.read_text(encoding="utf-8").startswith("# Generated from "), path


# The store's operations by concern (see ``store/_ops.py``), and which of them each may import: one way.
OPERATIONS = {
    "_rows": set(),
    "_reads": {"_rows"},
    "_windows": {"_rows", "_reads"},
    "_writes": {"_rows"},
    "_forks": {"_rows", "_writes"},
    "_purge": set(),
    "_keys": set(),
    "_conversations": {"_rows", "_keys"},
    "_ops": {"_rows", "_reads", "_windows", "_writes", "_forks", "_purge", "_keys", "_conversations"},
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


# The conversation layer extends the store layer's classes (its public Store and Conversation are them with
# the API calls) and uses them through their public members and ``store/_async/access.py``: never through an
# underscore member of theirs (issue 25). What it may name: the class its store opens conversations as.
STORE_HOOKS = {"_conversation_class"}
STORE_BASES = {"_AsyncStoreBase", "_AsyncConversationBase", "_StoreBase", "_ConversationBase"}


def _private_names_of_store_classes() -> set[str]:
    """Every underscore member (method, class attribute, ``self._x`` assignment) of the store's classes."""
    names = set()
    for path in sorted((PACKAGE / "store").rglob("_async/*.py")):
        for cls in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(cls, ast.ClassDef):
                continue
            for node in ast.walk(cls):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(node.name)
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    names.add(node.target.id)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    names.add(node.attr)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def _store_private_reads(path: Path, private: set[str]) -> list[str]:
    """Where ``path`` names a private member of the store's classes: on any object but ``self`` in a class
    of its own that extends none of them (a name of its own that only looks alike must be renamed)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, own_class: bool) -> None:
        if isinstance(node, ast.ClassDef):
            bases = {ast.unparse(base).split("[")[0] for base in node.bases}
            own_class = not bases & STORE_BASES
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in private - STORE_HOOKS
            and not (own_class and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
        for child in ast.iter_child_nodes(node):
            visit(child, own_class)

    visit(tree, False)
    return found


def test_the_conversation_layer_uses_no_private_member_of_the_store():
    private = _private_names_of_store_classes()
    assert {"_run", "_head", "_cipher", "_store", "_append"} <= private  # the scan sees the classes
    found = [
        where
        for path in sorted((PACKAGE / "conversation").rglob("*.py"))
        for where in _store_private_reads(path, private)
    ]
    assert not found, "use convstore.store._async.access (or a public member) instead:\n" + "\n".join(found)


def test_a_node_decodes_its_step_when_only_the_model_is_imported():
    """The model does not import the codec; the package's root wires the codec's decoder into it, and every
    import of a convstore module runs the root first."""
    code = (
        "from datetime import datetime, timezone\n"
        "from convstore.model import Node\n"
        "raw = '{\"type\": \"user_input\", \"content\": [{\"type\": \"text\", \"text\": \"hi\"}]}'\n"
        "node = Node(id='n', conversation_id='c', parent_id=None, depth=0, exchange_id='e',\n"
        "            type='user_input', token_count=1, total_tokens=1,\n"
        "            created_at=datetime.now(timezone.utc), raw_json=raw)\n"
        "print(type(node.step).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)},
    )
    assert done.stdout.split() == ["UserInputStep"], done.stderr
