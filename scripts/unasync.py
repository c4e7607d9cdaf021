"""Generate each sync module from its async twin, so every sync/async pair is one hand-written text.

``python scripts/unasync.py`` rewrites the generated files; ``--check`` exits 1 when one is out of date (a
test runs the check, so CI fails on drift). In the manner of httpcore's ``scripts/unasync.py``: whole-word
substitutions applied in order, plus one directive: a line ``# unasync: CODE`` in the async source becomes
``CODE`` in the sync one (the sync store checks its schema in ``__init__``, which the async one cannot).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMON: list[tuple[str, str]] = [
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAsyncGenerator\[(\w+), None\]", r"Generator[\1, None, None]"),
    (r"\bAsyncGenerator\b", "Generator"),
    (r"\basync def\b ?", "def "),
    (r"\basync for\b ?", "for "),
    (r"\basync with\b ?", "with "),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\baclose\b", "close"),
    (r"(?m)^(\s*)# unasync: (.*)$", r"\1\2"),
]
# Rules that keep the generated text clean under ruff: what reads well async, said the sync way.
TIDY: list[tuple[str, str]] = [
    (r"(?m)^(\s*)for (\w+) in ([\w.]+):\n\1    yield \2$", r"\1yield from \3"),
]

PAIRS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "client": (
        "convstore/client/_async.py",
        "convstore/client/_sync.py",
        [
            (r"\bThe async client\b", "The sync client"),
            (r"\bAsyncGenerator\[StreamEvent, None\]", "Generator[StreamEvent, None, None]"),
            (r"\bAsyncInteractionsClient\b", "InteractionsClient"),
            (r"\bAsyncStream\b", "Stream"),
            (r"\bAsyncSleep\b", "SyncSleep"),
            (r"\bdefault_asleep\b", "default_sleep"),
            (r"\bhttpx\.AsyncClient\b", "httpx.Client"),
            (r"\bAwaitable sleep\b", "Blocking sleep"),
            (r"\baiter_bytes\b", "iter_bytes"),
            (r"\baread\b", "read"),
        ],
    ),
    "store": (
        "convstore/store/_async.py",
        "convstore/store/_sync.py",
        [
            (r"from sqlalchemy\.ext\.asyncio import AsyncEngine", "from sqlalchemy.engine import Engine"),
            (r"\bAsyncStore\b", "Store"),
            (r"\bAsyncConversation\b", "Conversation"),
            (r"\b_AsyncStoreBase\b", "_StoreBase"),
            (r"\b_AsyncConversationBase\b", "_ConversationBase"),
            (r"\bAsyncEngine\b", "Engine"),
            (r"\b(adopt|make|is)_async_engine\b", r"\1_engine"),
            (r"\b(run|check_schema|upgrade|revision|resolve|call|checkpoint)_async\b", r"\1"),
        ],
    ),
}


PAIRS["conversation"] = (
    "convstore/conversation/_async.py",
    "convstore/conversation/_sync.py",
    [
        (r"\bAsyncStore\b", "Store"),
        (r"\bAsyncConversation\b", "Conversation"),
        (r"\bAsyncTurnStream\b", "TurnStream"),
        (r"\bAsyncCreateClient\b", "CreateClient"),
        (r"\b_AsyncStoreBase\b", "_StoreBase"),
        (r"\b_AsyncConversationBase\b", "_ConversationBase"),
        (r"import _async as store_async", "import _sync as store_sync"),
        (r"import _lifecycle_async as _lifecycle", "import _lifecycle_sync as _lifecycle"),
        (r"\bstore_async\b", "store_sync"),
        (r"\bAsyncInteractionsClient\b", "InteractionsClient"),
    ],
)
PAIRS["lifecycle"] = (
    "convstore/conversation/_lifecycle_async.py",
    "convstore/conversation/_lifecycle_sync.py",
    [
        (r"\bAsyncStore\b", "Store"),
        (r"\bAsyncConversation\b", "Conversation"),
        (r"from convstore\.conversation\._async import", "from convstore.conversation._sync import"),
    ],
)
# The google-genai adapter: the same executor with the SDK sending.
PAIRS["genai"] = (
    "convstore/client/_genai_async.py",
    "convstore/client/_genai_sync.py",
    [
        (r"\bAsyncGenAIClient\b", "GenAIClient"),
        (r"\bAsyncInteractionsClient\b", "InteractionsClient"),
        (r"\bAsyncStream\b", "Stream"),
        (r"\b_AsyncBody\b", "_SyncBody"),
        (r"\bhttpx\.AsyncByteStream\b", "httpx.SyncByteStream"),
        (r"from convstore\.client\._async import", "from convstore.client._sync import"),
        (
            r"async for chunk in self\._response\.aiter_bytes\(\):\n\s+yield chunk",
            "yield from self._response.iter_bytes()",
        ),
        (r"genai\.Client \| genai\.client\.AsyncClient", "genai.Client"),
        (
            r"A ``genai\.Client`` \(its ``\.aio`` is used\) or ``genai\.Client\(\)\.aio``",
            "A ``genai.Client``",
        ),
        (r"\basynchronous=True\b", "asynchronous=False"),
        (r"\baiter_bytes\b", "iter_bytes"),
    ],
)
SKIP: set[str] = set()


def _sorted_import(match: re.Match[str]) -> str:
    """Names of a one-line import in isort's order (constants, classes, functions), deduplicated."""
    names = sorted(
        {n.strip() for n in match.group(2).split(",")},
        key=lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n),
    )
    return f"from {match.group(1)} import {', '.join(names)}"


def _sorted_block(match: re.Match[str]) -> str:
    """A run of one-line ``from`` imports in isort's order (renames can move a line)."""
    lines = match.group(0).splitlines(keepends=True)
    return "".join(sorted(lines, key=lambda line: [part.lower() for part in line.split()[1::2]]))


def generate(name: str) -> str:
    source, _, subs = PAIRS[name]
    text = (ROOT / source).read_text(encoding="utf-8")
    for pattern, replacement in [*subs, *COMMON, *TIDY]:
        text = re.sub(pattern, replacement, text)
    text = re.sub(r"(?m)^from ([\w.]+) import ([\w, ]+)$", _sorted_import, text)
    text = re.sub(r"(?m)(?:^from [\w.]+ import [\w, ]+$\n)+", _sorted_block, text)
    header = f"# Generated from {source} by scripts/unasync.py: do not edit.\n"
    return header + text


def main(argv: list[str]) -> int:
    stale = []
    for name, (source, target, _) in PAIRS.items():
        if name in SKIP or not (ROOT / source).exists():
            continue
        expected = generate(name)
        path = ROOT / target
        if "--check" in argv:
            if not path.exists() or path.read_text(encoding="utf-8") != expected:
                stale.append(target)
        else:
            path.write_text(expected, encoding="utf-8")
    if stale:
        print(f"out of date (run python scripts/unasync.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
