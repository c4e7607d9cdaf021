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
import runpy
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
EXCEPTIONS: dict[tuple[str, str], str] = {
    # Node.step decodes its step lazily through the codec (model <- codec the other way): issue 25.
    ("model", "codec"): "issue 25: Node.step to take its decoded step from the store",
}
# Front ends reaching past the public API today: being removed by the front-end work (the cliweb helper,
# issue 25 item 3); the lead empties this list at merge. Each entry: (front end, what it imports).
FRONT_END_VIOLATIONS: set[tuple[str, str]] = set()
# The one module of the conversation layer the front ends may import.
FRONT_END_SHARED = "convstore.conversation._frontend"

# One size limit for every module, in lines.
MAX_LINES = 600
# Today's modules beyond it, each with the work that splits it.
OVERSIZE = {
    "store/_async/store.py": "issue 25 item 4: the store's keys, transfer and deletion methods by concern",
    "store/_sync/store.py": "generated from store/_async/store.py: split with it",
}


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
        "store/_sync/store.py",
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
