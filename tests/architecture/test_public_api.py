"""The public surface: what ``convstore`` exports, named as convstore's, each public class defined once, every
type a public signature names reachable from ``convstore``, and a misspelt keyword refused by mypy."""

from __future__ import annotations

import ast
import builtins
import collections
import importlib
import inspect
import pkgutil
import textwrap
from pathlib import Path

import pytest

import convstore


def _modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(convstore.__path__, "convstore.")
        if not info.name.endswith("__main__")
    )


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's order of ``__all__`` (RUF022): constants, classes, then functions and dunders."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def test_all_is_sorted_unique_and_complete():
    names = convstore.__all__
    assert len(names) == len(set(names))
    assert names == sorted(names, key=_isort_key)
    for name in names:
        assert hasattr(convstore, name), name
    public = {name for name in dir(convstore) if not name.startswith("_")}
    modules = {name for name in public if inspect.ismodule(getattr(convstore, name))}
    assert public - modules <= set(names), sorted(public - modules - set(names))


def test_exports_are_named_as_convstores():
    for name in convstore.__all__:
        value = getattr(convstore, name)
        if isinstance(value, type) or inspect.isfunction(value):
            assert value.__module__ == "convstore", name


def test_no_public_class_is_defined_twice():
    """``convstore.Store`` and ``convstore.store.Store`` were two classes of one name; now each public
    class name in every module of the package is one class."""
    defined: dict[str, set[str]] = collections.defaultdict(set)
    for module_name in _modules():
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if name.startswith("_") or not isinstance(value, type):
                continue
            if value.__module__.startswith("convstore"):
                defined[name].add(f"{value.__module__}.{value.__qualname__}@{id(value)}")
    twice = {name: sorted(where) for name, where in defined.items() if len(where) > 1}
    assert not twice


# Names a public signature may use besides convstore's exports: the standard library's typing names and
# the libraries convstore stands on (a SQLAlchemy engine or URL, a datetime).
OUTSIDE = {
    "Any",
    "AsyncEngine",
    "AsyncIterator",
    "Callable",
    "Engine",
    "IO",
    "Iterable",
    "Iterator",
    "Mapping",
    "Self",
    "Sequence",
    "TracebackType",
    "Unpack",
    "datetime",
    "httpx",
    "sa",
    "timedelta",
    "genai",
}


def _names(annotation: str) -> set[str]:
    """The names an annotation's text uses (``sa.URL`` counts as ``sa``; string literals are not names)."""
    found = set()
    for node in ast.walk(ast.parse(annotation, mode="eval")):
        if isinstance(node, ast.Name):
            found.add(node.id)
    return found


def _public_callables():
    for name in convstore.__all__:
        value = getattr(convstore, name)
        if inspect.isfunction(value):
            yield name, value
        elif isinstance(value, type):
            for attribute, member in vars(value).items():
                if attribute.startswith("_") and attribute != "__init__":
                    continue
                function = member.fget if isinstance(member, property) else member
                function = getattr(function, "__func__", function)
                if inspect.isfunction(function):
                    yield f"{name}.{attribute}", function


# Public classes' methods that only convstore calls (a body or a stream is built by a conversation or a
# client; a keyring's ciphers are the store's; an import file's conversations are made by
# ``read_conversations``): their parameters are convstore's plumbing.
PLUMBING = {
    "ConversationRows.__init__",
    "RequestBody.__init__",
    "Stream.__init__",
    "AsyncStream.__init__",
    "TurnStream.__init__",
    "AsyncTurnStream.__init__",
    "Keyring.cipher",
    "Keyring.new_data_key",
}


def test_every_type_in_a_public_signature_is_exported():
    """A class named in a public signature (a parameter's or a result's type) is one of ``convstore``'s
    exports; aliases (``JSONObject``) and type variables are not classes and need not be."""
    exported = set(convstore.__all__)
    missing = {}
    for where, function in _public_callables():
        if where in PLUMBING:
            continue
        for annotation in inspect.get_annotations(function).values():
            text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
            for name in _names(text) - exported - OUTSIDE - set(dir(builtins)) if text else ():
                value = function.__globals__.get(name)
                if value is None or isinstance(value, type):
                    missing.setdefault(where, []).append(name)
    assert not missing


def _mypy(tmp_path: Path, code: str) -> tuple[str, int]:
    api = pytest.importorskip("mypy.api")
    path = tmp_path / "uses_convstore.py"
    path.write_text(textwrap.dedent(code))
    cache = Path(__file__).resolve().parents[2] / ".mypy_cache"
    out, err, status = api.run(["--strict", "--cache-dir", str(cache), "--no-error-summary", str(path)])
    return out + err, status


def test_mypy_refuses_a_misspelt_keyword(tmp_path):
    out, status = _mypy(
        tmp_path,
        """
        import convstore

        store = convstore.Store("sqlite://")
        conv = store.create_conversation(modle="x", sytem_instruction="y")
        client = convstore.InteractionsClient("key")
        conv.send("hi", client=client, temprature=0.2)
        """,
    )
    assert status == 1
    assert 'Unexpected keyword argument "modle"' in out, out
    assert 'Unexpected keyword argument "sytem_instruction"' in out, out
    assert '"temprature"' in out, out


def test_mypy_accepts_the_documented_calls(tmp_path):
    out, status = _mypy(
        tmp_path,
        """
        import convstore

        store = convstore.Store("sqlite://")
        conv: convstore.Conversation = store.create_conversation(
            model="gemini-3-flash-preview", system_instruction="Be brief.", tools=[{"type": "x"}]
        )
        client = convstore.InteractionsClient("key")
        reply: convstore.Interaction = conv.send("hi", client=client, generation_config={"temperature": 0.2})
        """,
    )
    assert status == 0, out
