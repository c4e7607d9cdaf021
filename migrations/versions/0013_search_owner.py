"""Search, SQLite: the owner in the full-text index, so that a search for one owner intersects in FTS5.

A store bound to an owner searched FTS5 for the words in every owner's steps, newest first, and kept those of
the owner's conversations until it had ``candidates`` of them: for a word in half the steps and an owner of
1% of the conversations, about 100,000 matches walked for 1,000 (90 to 190 ms a page). Now each FTS5 row
has a second column, ``owner``, holding one token for its conversation's owner, and an owner's search asks
FTS5 for ``owner : <token> AND text : (<words>)``: FTS5 intersects the two lists of documents itself and
stops at the 1,000th match (the words' own column is named, so that a word never matches an owner token).

**The token** is ``o`` and a number: the owner's key in ``convstore_search_owners`` (one row per owner that
has conversations; an ``INTEGER PRIMARY KEY``, so VACUUM keeps it). Not the owner id itself, nor anything
the id can be read back from, so that the index's vocabulary never spells an owner; and exact (no hash to
collide). A conversation without an owner has no token (the column is empty): only stores bound to an
owner ask for one. An owner's key row goes when the owner's last conversation does (a trigger), so that no
owner id stays behind in the table once the owner's conversations are deleted.

**Kept in step by triggers**, as revision 0010's index is, so every path that writes or deletes search rows
(appends, imports, ``delete_conversation``, ``purge``) keeps it without a change: inserting a search row adds
its owner's key row if missing and indexes the row with its token (read from the conversation, which exists
first: the row's nodes refer to it; an owner never changes); deleting one removes it with the same token
(search rows are always deleted before their conversation). FTS5's external content is the view
``convstore_search_content`` (the row's text and its token), so that ``rebuild`` and ``integrity-check``
read what the triggers wrote.

The index is rebuilt here in batches of rows (the progress callback told each), replacing the 0010 one;
writers wait for it, as for every migration on SQLite (a million rows: about half a minute on a small
server). PostgreSQL is unchanged: its owner's search lists the owner's conversations (``_search_sql``).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import context, op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_ROWS_A_BATCH = 20_000

_DROP_0010 = [
    "DROP TRIGGER convstore_search_inserted",
    "DROP TRIGGER convstore_search_deleted",
    "DROP TRIGGER convstore_search_updated",
    "DROP TABLE convstore_search_fts",
]

# The token of a conversation's owner is 'o' || k.id, k its key row (none: no owner, no token). Written in
# the view and in the triggers, which must give a row the same token when it is deleted as when inserted.
_CREATE = [
    """CREATE TABLE convstore_search_owners (
    -- The owner's key: its search token is 'o' and this number. Named, so that VACUUM keeps it.
    id INTEGER NOT NULL PRIMARY KEY,
    -- The owner (convstore_conversations.owner) the key stands for: looked up by each owner's search.
    owner VARCHAR(255) NOT NULL,
    CONSTRAINT uq_convstore_search_owners_owner UNIQUE (owner)
)""",
    """CREATE VIEW convstore_search_content AS
SELECT s.id, s.text, 'o' || k.id AS owner
FROM convstore_search s
JOIN convstore_conversations c ON c.id = s.conversation_id
LEFT JOIN convstore_search_owners k ON k.owner = c.owner""",
    "CREATE VIRTUAL TABLE convstore_search_fts USING fts5(text, owner, content='convstore_search_content', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    """CREATE TRIGGER convstore_search_inserted AFTER INSERT ON convstore_search BEGIN
    INSERT OR IGNORE INTO convstore_search_owners (owner)
        SELECT owner FROM convstore_conversations WHERE id = new.conversation_id AND owner IS NOT NULL;
    INSERT INTO convstore_search_fts (rowid, text, owner) VALUES (new.id, new.text, (
        SELECT 'o' || k.id FROM convstore_conversations c JOIN convstore_search_owners k ON k.owner = c.owner
        WHERE c.id = new.conversation_id));
END""",
    """CREATE TRIGGER convstore_search_deleted AFTER DELETE ON convstore_search BEGIN
    INSERT INTO convstore_search_fts (convstore_search_fts, rowid, text, owner)
    VALUES ('delete', old.id, old.text, (
        SELECT 'o' || k.id FROM convstore_conversations c JOIN convstore_search_owners k ON k.owner = c.owner
        WHERE c.id = old.conversation_id));
END""",
    """CREATE TRIGGER convstore_search_updated AFTER UPDATE ON convstore_search BEGIN
    INSERT INTO convstore_search_fts (convstore_search_fts, rowid, text, owner)
    VALUES ('delete', old.id, old.text, (
        SELECT 'o' || k.id FROM convstore_conversations c JOIN convstore_search_owners k ON k.owner = c.owner
        WHERE c.id = old.conversation_id));
    INSERT OR IGNORE INTO convstore_search_owners (owner)
        SELECT owner FROM convstore_conversations WHERE id = new.conversation_id AND owner IS NOT NULL;
    INSERT INTO convstore_search_fts (rowid, text, owner) VALUES (new.id, new.text, (
        SELECT 'o' || k.id FROM convstore_conversations c JOIN convstore_search_owners k ON k.owner = c.owner
        WHERE c.id = new.conversation_id));
END""",
    # The owner's key row goes with the owner's last conversation (its search rows are gone by then).
    """CREATE TRIGGER convstore_search_owners_released AFTER DELETE ON convstore_conversations
WHEN old.owner IS NOT NULL BEGIN
    DELETE FROM convstore_search_owners WHERE owner = old.owner
        AND NOT EXISTS (SELECT 1 FROM convstore_conversations WHERE owner = old.owner);
END""",
    "INSERT INTO convstore_search_owners (owner) "
    "SELECT DISTINCT owner FROM convstore_conversations WHERE owner IS NOT NULL ORDER BY owner",
]

# Revision 0010's index, for a downgrade.
_CREATE_0010 = [
    "CREATE VIRTUAL TABLE convstore_search_fts USING fts5(text, content='convstore_search', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
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
    "INSERT INTO convstore_search_fts(convstore_search_fts) VALUES ('rebuild')",
]
_DROP = [
    "DROP TRIGGER convstore_search_owners_released",
    *_DROP_0010,
    "DROP VIEW convstore_search_content",
    "DROP TABLE convstore_search_owners",
]
# The rows of a batch: the first ``rows`` after ``after`` (by id), their last id and count; then indexed.
_BATCH_END = sa.text(
    "SELECT max(id), count(*) FROM "
    "(SELECT id FROM convstore_search WHERE id > :after ORDER BY id LIMIT :rows)"
)
_INDEX_BATCH = sa.text(
    "INSERT INTO convstore_search_fts (rowid, text, owner) "
    "SELECT id, text, owner FROM convstore_search_content WHERE id > :after AND id <= :upto"
)
_COUNT = sa.text("SELECT count(*) FROM convstore_search")


def _progress() -> Callable[[str, int, int], None] | None:
    found = context.config.attributes.get("convstore_progress")
    return found if callable(found) else None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for statement in [*_DROP_0010, *_CREATE]:
        op.execute(statement)
    reindex(bind)


def reindex(bind: sa.Connection) -> int:
    """Index every search row with its owner's token, a batch of rows (by id) at a time; returns the rows."""
    total = bind.execute(_COUNT).scalar_one()
    progress = _progress()
    done, after = 0, -1
    while True:
        last, rows = bind.execute(_BATCH_END, {"after": after, "rows": _ROWS_A_BATCH}).one()
        if last is None:
            return done
        bind.execute(_INDEX_BATCH, {"after": after, "upto": last})
        done, after = done + rows, last
        if progress is not None:
            progress("indexing search rows by owner", done, total)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for statement in [*_DROP, *_CREATE_0010]:
        op.execute(statement)
