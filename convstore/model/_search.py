"""What ``store.search`` hands back: hits with plain-text snippets, and a page of them with what was not
searched."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import attrs

__all__ = ["SearchHit", "SearchPage"]


@attrs.frozen(kw_only=True)
class SearchHit:
    """One step whose text matched every word of a search.

    Attributes:
        conversation_id: The conversation it belongs to (``convstore show CONVERSATION``).
        node_id: The step's node (``store.conversation(cid, branch).path(node_id)``, ``convstore show
            CONVERSATION --node NODE``).
        type: The step's wire ``type`` (``user_input`` or ``model_output``: what is indexed).
        created_at: When the step was written (UTC).
        branches: The branches whose history contains the node, oldest first; empty when no branch leads
            through it any more.
        snippet: A short plain-text excerpt of the step's text around the first match (never markup: put
            it in HTML escaped, like any text). ``…`` marks where it was cut.
        matches: ``(start, end)`` character offsets in ``snippet`` of each matched word, in order.
        rank: The engine's relevance, higher is better (SQLite: the negated BM25 score; PostgreSQL:
            ``ts_rank``); comparable within one search only.
    """

    conversation_id: str
    node_id: str
    type: str
    created_at: datetime
    branches: tuple[str, ...]
    snippet: str = attrs.field(repr=False)
    matches: tuple[tuple[int, int], ...] = attrs.field(repr=False)
    rank: float


@attrs.frozen(kw_only=True)
class SearchPage:
    """One page of search hits, best first among the newest ``candidates`` matches (``store.search``).

    Attributes:
        hits: The hits of this page.
        next_cursor: Pass it back as ``cursor`` for the next page; None when this was the last one. It
            carries the first page's candidates, so later pages rank the same steps.
        encrypted_conversations: How many conversations the search could not look into because they are
            encrypted at rest (their text is never indexed); of this store's owner, and within the
            ``model`` and ``conversation_id`` filters.
    """

    hits: list[SearchHit]
    next_cursor: str | None
    encrypted_conversations: int

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)
