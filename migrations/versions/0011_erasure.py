"""Erasure that sticks: the ids of deleted conversations, so an old export cannot bring one back unasked.

Ids only: nothing of what the conversation held (no owner, no settings, no time but the delete's). An import
of a conversation whose id is here is refused unless the caller says so (``allow_erased=True``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "convstore_erased",
        # Why: the id an import is checked against; the key, and on Citus the distribution column, as in
        # every convstore table (the conversation's shard holds the record of its deletion).
        sa.Column("conversation_id", sa.Uuid(as_uuid=False), nullable=False),
        # Why: when it was deleted, to answer "since when is this gone" (and to prune old records, if an
        # application wants to); nothing else about the conversation is kept.
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name="pk_convstore_erased"),
    )


def downgrade() -> None:
    op.drop_table("convstore_erased")
