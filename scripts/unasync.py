"""Generate the sync code from the async code, so every sync/async pair is one hand-written text.

Every module in an ``_async/`` package of convstore is written by hand; its twin of the same name in the
sibling ``_sync/`` package is generated from it (as httpcore does). ``python scripts/unasync.py`` rewrites the
generated files; ``--check`` exits 1 when one is out of date (a test runs the check, so CI fails on drift).

One table of whole-word substitutions, applied in order to every module, plus one directive: a line
``# unasync: CODE`` in the async source becomes ``CODE`` in the sync one (the sync store checks its schema in
``__init__``, which the async one cannot). A rule that matches nothing anywhere is an error: the table holds
only what the code needs. The async sources say nothing that stops being true once these rules run.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "convstore"

RULES: list[tuple[str, str]] = [
    # What the libraries call their blocking twins, where the async name does not just drop "Async".
    (r"from sqlalchemy\.ext\.asyncio import AsyncEngine", "from sqlalchemy.engine import Engine"),
    (r"\bhttpx\.AsyncByteStream\b", "httpx.SyncByteStream"),
    (r"\bAsyncGenerator\[(\w+), None\]", r"Generator[\1, None, None]"),
    # Names: AsyncStore -> Store, _AsyncBody -> _Body, httpx.AsyncClient -> httpx.Client, AsyncIterator ...
    (r"\b(_?)Async([A-Z]\w*)", r"\1\2"),
    # Modules and functions: convstore.store._async -> ._sync, run_async -> run, make_async_engine -> ...
    (r"\._async\b", "._sync"),
    (r"\b(\w+)_async\b", r"\1"),
    (r"\b(\w+)_async_(\w+)", r"\1_\2"),
    (r"\basynchronous=True\b", "asynchronous=False"),
    # Methods: aclose -> close, aread -> read, aiter_bytes -> iter_bytes, __aiter__ -> __iter__, ...
    (r"\ba(close|read|iter_bytes|iter_raw)\b", r"\1"),
    (r"\b__a(enter|exit|iter)__\b", r"__\1__"),
    # The keywords.
    (r"\basync (def|for|with) ", r"\1 "),
    (r"\bawait ", ""),
    (r"(?m)^(\s*)# unasync: (.*)$", r"\1\2"),
    # What reads well async, said the sync way (ruff would ask for it).
    (r"(?m)^(\s*)for (\w+) in ([\w.()]+):\n\1    yield \2$", r"\1yield from \3"),
]


def pairs() -> list[tuple[Path, Path]]:
    """Every hand-written async module and the sync module generated from it."""
    return [
        (source, source.parent.parent / "_sync" / source.name)
        for source in sorted(PACKAGE.rglob("_async/*.py"))
        if source.name != "__init__.py"
    ]


# A ``from`` import on one line, or in parentheses a name a line (as ruff formats one too long for a line).
_FROM = r"^from ([\w.]+) import ([\w, ]+|\(\n(?:    \w+,\n)+\))$"


def _sorted_import(match: re.Match[str]) -> str:
    """Names of a ``from`` import in isort's order (constants, classes, functions), deduplicated."""
    names = sorted(
        {n.strip() for n in match.group(2).strip("()\n").split(",") if n.strip()},
        key=lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n.lower(), n),
    )
    if match.group(2).startswith("("):
        return f"from {match.group(1)} import (\n" + "".join(f"    {name},\n" for name in names) + ")"
    return f"from {match.group(1)} import {', '.join(names)}"


def _sorted_block(match: re.Match[str]) -> str:
    """A run of ``from`` imports in isort's order, by module (renames can move one: ``_async`` is
    ``_sync``)."""
    statements = [m.group(0) for m in re.finditer(_FROM + "\n", match.group(0), flags=re.MULTILINE)]
    return "".join(sorted(statements, key=lambda statement: statement.split()[1].lower()))


def generate(source: Path, used: list[int] | None = None) -> str:
    """The sync text of ``source``; ``used`` counts, rule by rule, how many places each rewrote."""
    text = source.read_text(encoding="utf-8")
    for index, (pattern, replacement) in enumerate(RULES):
        text, count = re.subn(pattern, replacement, text)
        if used is not None:
            used[index] += count
    text = re.sub(_FROM, _sorted_import, text, flags=re.MULTILINE)
    text = re.sub(f"(?:{_FROM}\n)+", _sorted_block, text, flags=re.MULTILINE)
    header = f"# Generated from {source.relative_to(ROOT).as_posix()} by scripts/unasync.py: do not edit.\n"
    return header + text


def main(argv: list[str]) -> int:
    stale = []
    used = [0] * len(RULES)
    for source, target in pairs():
        expected = generate(source, used)
        if "--check" in argv:
            if not target.exists() or target.read_text(encoding="utf-8") != expected:
                stale.append(target.relative_to(ROOT).as_posix())
        else:
            target.write_text(expected, encoding="utf-8")
    unused = [pattern for (pattern, _), count in zip(RULES, used, strict=True) if count == 0]
    if unused:
        print(f"rules that match nothing (remove them): {', '.join(unused)}", file=sys.stderr)
        return 1
    if stale:
        print(f"out of date (run python scripts/unasync.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
