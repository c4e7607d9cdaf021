"""Inline media stored once per content hash: a table of media strings and each node's references to them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "convstore_media",
        sa.Column("conversation_id", sa.Uuid(as_uuid=False), nullable=False),
        # SHA-256 of the string (hex); in an encrypted conversation an HMAC keyed by its data key.
        sa.Column("hash", sa.String(64), nullable=False),
        # The JSON text of a step's inline ``data`` string, between its quotes; sealed when encrypted.
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["convstore_conversations.id"],
            name="fk_convstore_media_conversation_id_convstore_conversations",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "hash", name="pk_convstore_media"),
    )
    # ``[[offset, hash], ...]``: where the payload's media strings go back. NULL for every existing row,
    # whose payloads stay whole. A plain ALTER: nodes is referenced by foreign keys (see 0004).
    op.add_column("convstore_nodes", sa.Column("media", sa.Text(), nullable=True))


def downgrade() -> None:
    """Put every media string back into its payload, then drop the column and the table.

    An encrypted conversation's payloads cannot be rebuilt without its keys: the downgrade refuses when one
    has media kept apart (export what you need with a store that holds the keyring first).
    """
    bind = op.get_bind()
    nodes = sa.table(
        "convstore_nodes",
        sa.column("conversation_id", sa.Uuid(as_uuid=False)),
        sa.column("id", sa.Uuid(as_uuid=False)),
        sa.column("payload", sa.Text()),
        sa.column("media", sa.Text()),
    )
    media = sa.table(
        "convstore_media",
        sa.column("conversation_id", sa.Uuid(as_uuid=False)),
        sa.column("hash", sa.String(64)),
        sa.column("data", sa.Text()),
    )
    conversations = sa.table(
        "convstore_conversations", sa.column("id", sa.Uuid(as_uuid=False)), sa.column("encryption")
    )
    encrypted = bind.execute(
        sa.select(sa.func.count())
        .select_from(nodes.join(conversations, conversations.c.id == nodes.c.conversation_id))
        .where(nodes.c.media.is_not(None), conversations.c.encryption.is_not(None))
    ).scalar_one()
    if encrypted:
        raise RuntimeError(
            f"{encrypted} nodes of encrypted conversations keep their media apart and cannot be rebuilt "
            "without their keys: downgrade below 0007 refused"
        )
    found = bind.execute(
        sa.select(nodes.c.conversation_id, nodes.c.id, nodes.c.payload, nodes.c.media).where(
            nodes.c.media.is_not(None)
        )
    ).all()
    for row in found:
        parts, done = [], 0
        for offset, digest in json.loads(row.media):
            blob = bind.execute(
                sa.select(media.c.data).where(
                    media.c.conversation_id == row.conversation_id, media.c.hash == digest
                )
            ).scalar_one()
            parts += [row.payload[done:offset], blob]
            done = offset
        parts.append(row.payload[done:])
        bind.execute(
            nodes.update()
            .where(nodes.c.conversation_id == row.conversation_id, nodes.c.id == row.id)
            .values(payload="".join(parts), media=None)
        )
    op.drop_table("convstore_media")
    # SQLite 3.35+ drops a column in place; a batch rebuild would trip the foreign keys (see upgrade).
    op.execute("ALTER TABLE convstore_nodes DROP COLUMN media")
