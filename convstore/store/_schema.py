"""The tables, as SQLAlchemy Core, in one ``MetaData`` with a naming convention.

These definitions describe the schema that the migrations in ``migrations/`` build; they are never used to
create it (``metadata.create_all`` is not called anywhere). A test compares the two on both backends.

Every table is keyed by conversation first, so every query names its conversation and the schema can be
sharded by conversation id (Citus and the like): nodes have the primary key ``(conversation_id, id)`` and
their parent and branch-head foreign keys are composite, which also makes the database itself refuse a
parent or a head from another conversation.

Payloads and JSON settings are stored as text, not ``JSON``/``jsonb``: the stored step text is what a request
replays (``jsonb`` would reorder keys and change spacing), ``jsonb`` cannot hold ``\\u0000``, and encryption
at rest will replace the text with ciphertext.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
    "PREFIX",
    "SEARCH_FTS",
    "UTCDateTime",
    "branches",
    "conversations",
    "erased",
    "exchanges",
    "files",
    "keys",
    "media",
    "metadata",
    "nodes",
    "search",
    "search_metadata",
    "summaries",
]

PREFIX = "convstore_"

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the backend stores."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: convstore stores UTC timestamps only")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)  # type: ignore[no-any-return]
        return value.astimezone(timezone.utc)  # type: ignore[no-any-return]


Id = sa.Uuid(as_uuid=False)

conversations = sa.Table(
    f"{PREFIX}conversations",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("model", sa.Text(), nullable=True),
    sa.Column("system_instruction", sa.Text(), nullable=True),
    sa.Column("generation_config", sa.Text(), nullable=True),
    sa.Column("tools", sa.Text(), nullable=True),
    sa.Column("metadata", sa.Text(), nullable=True),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("encryption", sa.String(32), nullable=True),
    sa.Index(None, "created_at", "id"),
    sa.Index(None, "owner", "created_at", "id"),
)

nodes = sa.Table(
    f"{PREFIX}nodes",
    metadata,
    sa.Column("conversation_id", Id, sa.ForeignKey(conversations.c.id), primary_key=True),
    sa.Column("id", Id, primary_key=True),
    sa.Column("parent_id", Id, nullable=True),
    sa.Column("depth", sa.Integer(), nullable=False),
    sa.Column("exchange_id", Id, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("token_count", sa.Integer(), nullable=False),
    sa.Column("total_tokens", sa.BigInteger(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    # Where the payload's large inline media strings go back (``_media``), or NULL: the payload is whole.
    sa.Column("media", sa.Text(), nullable=True),
    # The Files API uris the payload names (a JSON list; ``_lifecycle``), NULL for the rest (migration 0009).
    sa.Column("files", sa.Text(), nullable=True),
    # The id of the first node of this node's segment (a chain in which each node is the child of the one
    # before it, one level down): a branch is read as a few range scans, one per segment (migration 0008).
    # NOT NULL on PostgreSQL; on SQLite the migration cannot add the constraint, and check() reports NULLs.
    sa.Column("segment_id", Id, nullable=False),
    sa.ForeignKeyConstraint(
        ["conversation_id", "parent_id"], [f"{PREFIX}nodes.conversation_id", f"{PREFIX}nodes.id"]
    ),
    # Led by parent_id / exchange_id, never by conversation_id: PostgreSQL may plan its foreign-key checks
    # (conversation_id = $1 AND id = $2) on an empty table, and must not pick one of these (migration 0005).
    sa.Index(None, "parent_id", "conversation_id"),
    sa.Index(None, "exchange_id", "conversation_id"),
    # One node per depth in a segment, and the ordered range scans of the flat reads (led by segment_id for
    # the same reason as the two above).
    sa.Index(None, "segment_id", "conversation_id", "depth", unique=True),
)

branches = sa.Table(
    f"{PREFIX}branches",
    metadata,
    sa.Column("conversation_id", Id, sa.ForeignKey(conversations.c.id), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("head_id", Id, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(["conversation_id", "head_id"], [nodes.c.conversation_id, nodes.c.id]),
)

exchanges = sa.Table(
    f"{PREFIX}exchanges",
    metadata,
    sa.Column("conversation_id", Id, sa.ForeignKey(conversations.c.id), primary_key=True),
    sa.Column("exchange_id", Id, primary_key=True),
    sa.Column("interaction_id", sa.Text(), nullable=True),
    sa.Column("stored", sa.Boolean(), nullable=False),
    sa.Column("model", sa.Text(), nullable=True),
    sa.Column("status", sa.Text(), nullable=True),
    sa.Column("input_tokens", sa.Integer(), nullable=True),
    sa.Column("output_tokens", sa.Integer(), nullable=True),
    sa.Column("thought_tokens", sa.Integer(), nullable=True),
    sa.Column("cached_tokens", sa.Integer(), nullable=True),
    sa.Column("tool_use_tokens", sa.Integer(), nullable=True),
    sa.Column("total_tokens", sa.Integer(), nullable=True),
    sa.Column("usage", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("estimated_input_tokens", sa.Integer(), nullable=True),
    # When delete_remote deleted the server's copy of its stored interaction (migration 0009).
    sa.Column("remote_deleted_at", UTCDateTime(), nullable=True),
)

summaries = sa.Table(
    f"{PREFIX}summaries",
    metadata,
    sa.Column("conversation_id", Id, primary_key=True),
    sa.Column("node_id", Id, primary_key=True),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("token_count", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(["conversation_id", "node_id"], [nodes.c.conversation_id, nodes.c.id]),
)

# Inline media strings of a conversation's steps, once per content hash (see ``_media``): the JSON text of a
# ``data`` string, sealed like the payloads in an encrypted conversation.
media = sa.Table(
    f"{PREFIX}media",
    metadata,
    sa.Column("conversation_id", Id, sa.ForeignKey(conversations.c.id), primary_key=True),
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("data", sa.Text(), nullable=False),
)

# Files API uris of a conversation's history and the bytes convstore keeps for them (migration 0009).
files = sa.Table(
    f"{PREFIX}files",
    metadata,
    sa.Column("conversation_id", Id, sa.ForeignKey(conversations.c.id), primary_key=True),
    sa.Column("uri", sa.String(512), primary_key=True),
    sa.Column("hash", sa.String(64), nullable=True),
    sa.Column("mime_type", sa.String(255), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("live_uri", sa.String(512), nullable=True),
    sa.Column("live_expires_at", UTCDateTime(), nullable=True),
)

# Wrapped data keys (encryption at rest), for the key store kept in a database: the store's own by default,
# or one of its own (``SQLKeyStore``). No foreign key to conversations: the key store may be a database apart.
keys = sa.Table(
    f"{PREFIX}keys",
    metadata,
    sa.Column("conversation_id", Id, primary_key=True),
    sa.Column("key_id", sa.String(255), nullable=False),
    sa.Column("wrapped", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# The ids of deleted conversations (migration 0011), and nothing else of them: an import refuses to bring one
# back unless asked to (``allow_erased=True``).
erased = sa.Table(
    f"{PREFIX}erased",
    metadata,
    sa.Column("conversation_id", Id, primary_key=True),
    sa.Column("erased_at", UTCDateTime(), nullable=False),
)

# The full-text index of the steps people wrote and read (migration 0010, ``_search``): one row per indexed
# step of a plaintext conversation, never of an encrypted one. Kept in a MetaData of its own because its shape
# differs by backend beyond these columns, which both have and which every statement uses:
# - SQLite: an ``id INTEGER PRIMARY KEY`` (the stable rowid an FTS5 external-content table needs), a unique
#   (conversation_id, node_id), and the FTS5 table ``SEARCH_FTS`` kept in step by triggers;
# - PostgreSQL: the primary key (conversation_id, node_id) (Citus distributes it by conversation, colocated)
#   and ``document``, a stored ``tsvector`` generated from (language, text), under a GIN index.


class _Language(TypeDecorator[str]):
    """A text search configuration's name: ``regconfig`` on PostgreSQL (so a bound name is cast to it; a
    string is not assignable to it), text on SQLite."""

    impl = sa.String(63)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import REGCONFIG  # noqa: PLC0415 -- PostgreSQL only

            return dialect.type_descriptor(REGCONFIG())
        return dialect.type_descriptor(sa.String(63))


search_metadata = sa.MetaData()
search = sa.Table(
    f"{PREFIX}search",
    search_metadata,
    sa.Column("conversation_id", Id, primary_key=True),
    sa.Column("node_id", Id, primary_key=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("language", _Language(), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
)
SEARCH_FTS = f"{PREFIX}search_fts"
