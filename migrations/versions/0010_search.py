"""Full-text search: an index of the text of the steps people wrote and read, and its backfill.

One row per indexed step (``user_input`` and ``model_output`` text; see ``convstore/store/_search.py`` for
what is indexed and why) of a plaintext conversation; encrypted conversations are never indexed.

- SQLite: ``convstore_search`` holds the rows (its ``id`` is the stable rowid FTS5 needs: an implicit rowid
  may change on VACUUM) and ``convstore_search_fts``, an FTS5 external-content table over it, is kept in
  step by triggers, so an insert or delete of index rows is one statement that maintains both.
- PostgreSQL: ``convstore_search`` holds the rows and a stored ``tsvector`` generated from each row's text
  search configuration and text, under a GIN index built after the backfill (one build, not a million
  insertions). On Citus the table is then distributed by conversation id beside the others (``_citus``).

The backfill reads the plaintext conversations' ids (ids only held), then a batch of conversations at a
time: their indexed steps, whose text is taken here with this revision's own rules, written by executemany.
Existing tables are only read: on PostgreSQL no reader or writer waits for it (the new table is invisible
until the upgrade commits; a turn an older process writes meanwhile is not indexed); on SQLite writers wait
for the upgrade, as for every migration there. Progress is reported through the ``convstore_progress``
callback of the Alembic config's attributes when there is one (``convstore db upgrade`` draws it).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SEARCH = "convstore_search"
FTS = "convstore_search_fts"
DOCUMENT_INDEX = "ix_convstore_search_document"
_CONVERSATIONS_A_BATCH = 200
_ROWS_A_WRITE = 1000
_MAX_CHARS = 100_000
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_INDEXED = ("user_input", "model_output")

_SQLITE = [
    f"""CREATE TABLE {SEARCH} (
    -- The FTS5 rowid of the row: an alias of SQLite's rowid, which VACUUM keeps only when it is named.
    id INTEGER NOT NULL PRIMARY KEY,
    -- The indexed step's conversation and node: what a hit names; deletes go by conversation.
    conversation_id CHAR(32) NOT NULL,
    node_id CHAR(32) NOT NULL,
    -- The step's wire type, for the step-type filter.
    type VARCHAR(64) NOT NULL,
    -- When the step was written, for the time filters.
    created_at DATETIME NOT NULL,
    -- The store's text search configuration (PostgreSQL's; kept for the same rows on both backends).
    language VARCHAR(63) NOT NULL,
    -- The step's text, after the redaction hook: FTS5's external content, and the snippets' source.
    text TEXT NOT NULL,
    CONSTRAINT uq_{SEARCH}_conversation_id_node_id UNIQUE (conversation_id, node_id),
    CONSTRAINT fk_{SEARCH}_conversation_id_node_id_convstore_nodes FOREIGN KEY (conversation_id, node_id)
        REFERENCES convstore_nodes (conversation_id, id)
)""",
    # Words are runs of letters, digits and marks; case and diacritics folded.
    f"CREATE VIRTUAL TABLE {FTS} USING fts5(text, content='{SEARCH}', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')",
    """CREATE TRIGGER convstore_search_inserted AFTER INSERT ON convstore_search BEGIN
    INSERT INTO convstore_search_fts(rowid, text) VALUES (new.id, new.text);
END""",
    """CREATE TRIGGER convstore_search_deleted AFTER DELETE ON convstore_search BEGIN
    INSERT INTO convstore_search_fts(convstore_search_fts, rowid, text) VALUES ('delete', old.id, old.text);
END""",
    """CREATE TRIGGER convstore_search_updated AFTER UPDATE ON convstore_search BEGIN
    INSERT INTO convstore_search_fts(convstore_search_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO convstore_search_fts(rowid, text) VALUES (new.id, new.text);
END""",
]

_POSTGRESQL = [
    f"""CREATE TABLE {SEARCH} (
    conversation_id UUID NOT NULL,
    node_id UUID NOT NULL,
    type VARCHAR(64) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    language REGCONFIG NOT NULL,
    text TEXT NOT NULL,
    document TSVECTOR GENERATED ALWAYS AS (to_tsvector(language, text)) STORED,
    CONSTRAINT pk_{SEARCH} PRIMARY KEY (conversation_id, node_id),
    CONSTRAINT fk_{SEARCH}_conversation_id_node_id_convstore_nodes FOREIGN KEY (conversation_id, node_id)
        REFERENCES convstore_nodes (conversation_id, id)
)""",
    f"COMMENT ON COLUMN {SEARCH}.language IS 'the text search configuration the row was indexed with'",
    f"COMMENT ON COLUMN {SEARCH}.text IS 'the step text after the redaction hook: snippets come from it'",
    f"COMMENT ON COLUMN {SEARCH}.document IS 'the words of text, what the GIN index and @@ search'",
]


def _text(payload: str) -> str:
    """A step's text parts, one a line, storable and bounded (the rule of ``_search.step_text`` at 0010)."""
    try:
        content = json.loads(payload).get("content")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(content, list):
        return ""
    parts = [
        part["text"]
        for part in content
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    ]
    return _UNSTORABLE.sub(" ", "\n".join(parts))[:_MAX_CHARS]


def _progress() -> Callable[[str, int, int], None] | None:
    found = context.config.attributes.get("convstore_progress")
    return found if callable(found) else None


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    for statement in _SQLITE if sqlite else _POSTGRESQL:
        op.execute(statement)
    backfill(bind, language="simple")
    if not sqlite:
        op.execute(f"CREATE INDEX {DOCUMENT_INDEX} ON {SEARCH} USING gin (document)")


def backfill(bind: Any, *, language: str) -> int:
    """Index the existing plaintext steps, a batch of conversations at a time; returns the rows written."""
    uuid = sa.Uuid(as_uuid=False)
    conversations = sa.table("convstore_conversations", sa.column("id", uuid), sa.column("encryption"))
    nodes = sa.table(
        "convstore_nodes",
        sa.column("conversation_id", uuid),
        sa.column("id", uuid),
        sa.column("type", sa.String()),
        sa.column("created_at", sa.DateTime()),
        sa.column("payload", sa.Text()),
    )
    search = sa.table(
        SEARCH,
        sa.column("conversation_id", uuid),
        sa.column("node_id", uuid),
        sa.column("type", sa.String()),
        sa.column("created_at", sa.DateTime()),
        sa.column("language", sa.String()),
        sa.column("text", sa.Text()),
    )
    insert: Any = sa.insert(search)
    if bind.dialect.name == "postgresql":  # the configuration's name cast to the column's regconfig
        insert = sa.text(
            "INSERT INTO convstore_search (conversation_id, node_id, type, created_at, language, text) "
            "VALUES (:conversation_id, :node_id, :type, :created_at, CAST(:language AS regconfig), :text)"
        )
    read = (
        sa.select(nodes.c.conversation_id, nodes.c.id, nodes.c.type, nodes.c.created_at, nodes.c.payload)
        .where(
            nodes.c.conversation_id.in_(sa.bindparam("ids", expanding=True)),
            nodes.c.type.in_(_INDEXED),
        )
        .order_by(nodes.c.conversation_id, nodes.c.id)
    )
    ids = [
        row.id
        for row in bind.execute(
            sa.select(conversations.c.id)
            .where(conversations.c.encryption.is_(None))
            .order_by(conversations.c.id)
        )
    ]
    progress = _progress()
    written = 0
    for start in range(0, len(ids), _CONVERSATIONS_A_BATCH):
        batch = ids[start : start + _CONVERSATIONS_A_BATCH]
        rows = []
        for row in bind.execute(read, {"ids": batch}):
            text = _text(row.payload)
            if text.strip():
                rows.append(
                    {
                        "conversation_id": row.conversation_id,
                        "node_id": row.id,
                        "type": row.type,
                        "created_at": row.created_at,
                        "language": language,
                        "text": text,
                    }
                )
        for first in range(0, len(rows), _ROWS_A_WRITE):
            bind.execute(insert, rows[first : first + _ROWS_A_WRITE])
        written += len(rows)
        if progress is not None:
            progress("indexing conversations for search", start + len(batch), len(ids))
    return written


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("inserted", "deleted", "updated"):
            op.execute(f"DROP TRIGGER {SEARCH}_{trigger}")
        op.execute(f"DROP TABLE {FTS}")
    op.execute(f"DROP TABLE {SEARCH}")
