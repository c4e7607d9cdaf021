"""Tenant isolation: the owner a conversation belongs to; system instructions stored as JSON text.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _convert_system_instructions(convert: Callable[[str], str]) -> None:
    conn = op.get_bind()
    table = sa.table(
        "convstore_conversations",
        sa.column("id", sa.Uuid(as_uuid=False)),
        sa.column("system_instruction", sa.Text()),
    )
    rows = conn.execute(
        sa.select(table.c.id, table.c.system_instruction).where(table.c.system_instruction.is_not(None))
    )
    for conversation_id, text in rows.all():
        conn.execute(
            table.update().where(table.c.id == conversation_id).values(system_instruction=convert(text))
        )


def upgrade() -> None:
    # system_instruction becomes JSON text, like the other settings, so it can hold any character
    # (PostgreSQL text cannot hold NUL; a JSON string escapes it). Convert what is there.
    _convert_system_instructions(lambda text: json.dumps(text, ensure_ascii=False))
    # Who the conversation belongs to (a user or tenant id of the application); NULL for a store used
    # without owners. A store bound to an owner sees only that owner's conversations. A plain ALTER on
    # both backends: a batch rebuild of this table would trip SQLite's foreign keys from nodes and branches.
    op.add_column("convstore_conversations", sa.Column("owner", sa.String(255), nullable=True))
    # An owner's conversations, newest first.
    op.create_index(
        "ix_convstore_conversations_owner_created_at_id",
        "convstore_conversations",
        ["owner", "created_at", "id"],
    )


def downgrade() -> None:
    _convert_system_instructions(json.loads)
    op.drop_index("ix_convstore_conversations_owner_created_at_id", table_name="convstore_conversations")
    # SQLite 3.35+ drops a column in place; a batch rebuild would trip the foreign keys (see upgrade).
    op.execute("ALTER TABLE convstore_conversations DROP COLUMN owner")
