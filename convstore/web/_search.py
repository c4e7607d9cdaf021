"""``/search``: full-text search across conversations (``store.search``), hits linking to their branch at the
node. Kept apart from ``_app``'s routes: it needs nothing of them but the store, the templates and the
error pages."""

from __future__ import annotations

import contextlib
from typing import Any

import convstore

__all__ = ["STEPS_BEFORE", "hit_rows", "split_snippet"]

STEPS_BEFORE = 2  # steps of context shown above a hit when its branch opens at it


def split_snippet(hit: convstore.SearchHit) -> list[tuple[str, bool]]:
    """The snippet as ``(text, matched)`` pieces: the template marks the matched ones (escaping all)."""
    pieces: list[tuple[str, bool]] = []
    at = 0
    for start, end in hit.matches:
        if start > at:
            pieces.append((hit.snippet[at:start], False))
        pieces.append((hit.snippet[start:end], True))
        at = end
    if at < len(hit.snippet):
        pieces.append((hit.snippet[at:], False))
    return pieces


def hit_rows(store: convstore.Store, page: convstore.SearchPage) -> list[dict[str, Any]]:
    """What the page shows of each hit, with the step of each branch's page to open at (its depth)."""
    rows = []
    for hit in page:
        depth = None
        if hit.branches:
            with contextlib.suppress(convstore.ConvstoreError):
                depth = store.conversation(hit.conversation_id, hit.branches[0]).node(hit.node_id).depth
        rows.append(
            {
                "hit": hit,
                "pieces": split_snippet(hit),
                "start": max(0, depth - STEPS_BEFORE) if depth is not None else None,
            }
        )
    return rows
