"""The tables a conversation's rows come from and go to, and the statements that read and write them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from convstore.store import _schema
from convstore.store._conversations import SETTINGS

# -- tables and statements ---------------------------------------------------------------------------------

_SUMMARIES: sa.Table | None = getattr(_schema, "summaries", None)  # arrives with token budgets (0003)

# Kind -> table, in the order a conversation's lines are written and its rows inserted (parents first).
# ``media`` lines: a sealed conversation's media strings (its nodes' and its files'), and a plaintext one's
# uploaded files' bytes (its inline media travel in its payloads); ``file`` lines: its Files API uris.
TABLES: dict[str, sa.Table] = {
    "conversation": _schema.conversations,
    "node": _schema.nodes,
    "media": _schema.media,
    "file": _schema.files,
    **({"summary": _SUMMARIES} if _SUMMARIES is not None else {}),
    "branch": _schema.branches,
    "exchange": _schema.exchanges,
}
# Columns of how a store keeps rows, not of what they hold: a dump carries each payload whole (its media
# strings put back, see ``_media``), and an import keeps them apart again as the target store does.
_INTERNAL = {("node", "media"), ("node", "segment_id")}
# How a store lays out its tree for reading (``_reads``): never in a dump, sealed or not; an import gives
# the rows segments of its own (``Segments``).
_LAYOUT = {("node", "segment_id")}


# A sealed conversation's rows travel as stored: its nodes keep their media column.
_SEALED_TABLES: dict[str, sa.Table] = TABLES
# Columns that hold sealed text in a sealed conversation.
_SEALED = {("conversation", field) for field in SETTINGS} | {
    ("node", "payload"),
    ("summary", "payload"),
    ("media", "data"),
}


def columns(kind: str, sealed: bool = False) -> list[sa.Column[Any]]:
    """The columns of a kind's rows in a dump (of a sealed conversation: every column, as stored)."""
    if sealed:
        return [column for column in _SEALED_TABLES[kind].columns if (kind, column.name) not in _LAYOUT]
    return [column for column in TABLES[kind].columns if (kind, column.name) not in _INTERNAL]


_PLURAL = {
    "node": "nodes",
    "media": "media",
    "file": "files",
    "summary": "summaries",
    "branch": "branches",
    "exchange": "exchanges",
}

# Text columns that hold JSON, and the JSON type each must be.
_JSON_COLUMNS: dict[tuple[str, str], type] = {
    ("conversation", "system_instruction"): str,  # the user's text as a JSON string (it may hold NUL)
    ("conversation", "generation_config"): dict,
    ("conversation", "tools"): list,
    ("conversation", "metadata"): dict,
    ("node", "payload"): dict,
    ("summary", "payload"): list,
    ("exchange", "usage"): dict,
    ("node", "media"): list,  # a sealed node's media references
}
_NON_NEGATIVE = {"depth", "token_count", "total_tokens"}


def _owner(table: sa.Table) -> sa.ColumnElement[bool]:
    column = table.c.id if table is _schema.conversations else table.c.conversation_id
    return column == sa.bindparam("conversation_id")


SELECT = {kind: sa.select(table).where(_owner(table)) for kind, table in _SEALED_TABLES.items()}
INSERT = {kind: sa.insert(table) for kind, table in _SEALED_TABLES.items()}
INSERT_KEY = sa.insert(_schema.keys)
CONVERSATION_EXISTS = sa.select(_schema.conversations.c.id).where(_owner(_schema.conversations))


class Segments:
    """Segment ids for node rows imported parents first (see ``_reads``), by the rule migration 0008 applies
    to existing rows: a root starts a segment; a node continues its parent's segment when it is the first of
    the parent's children to come, and starts one of its own otherwise. Kept across the batches of one
    conversation (one id and one flag a node, like the checks of its tree)."""

    def __init__(self) -> None:
        self._segment: dict[str, str] = {}
        self._continued: set[str] = set()

    def assign(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` with their ``segment_id``."""
        out = []
        for row in rows:
            parent = row["parent_id"]
            if parent is not None and parent in self._segment and parent not in self._continued:
                self._continued.add(parent)
                segment = self._segment[parent]
            else:
                segment = row["id"]
            self._segment[row["id"]] = segment
            out.append({**row, "segment_id": segment})
        return out
