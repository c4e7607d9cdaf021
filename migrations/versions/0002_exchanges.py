"""Exchanges: what the API said about each recorded turn (its interaction id, whether it keeps it, usage).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "convstore_exchanges",
        sa.Column("conversation_id", sa.Uuid(as_uuid=False), nullable=False),
        # The exchange_id its nodes carry. A row exists only for exchanges recorded from an API reply.
        sa.Column("exchange_id", sa.Uuid(as_uuid=False), nullable=False),
        # The API's interaction id (the last hop's, for a continued turn).
        sa.Column("interaction_id", sa.Text(), nullable=True),
        # True when the request had store=true: the API keeps the interaction, so the next turn may chain
        # with previous_interaction_id instead of replaying.
        sa.Column("stored", sa.Boolean(), nullable=False),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        # Usage as reported (summed over continuation hops). With store=false, input_tokens is the exact
        # cost of the input that was sent, which token budgets calibrate against.
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("thought_tokens", sa.Integer(), nullable=True),
        sa.Column("cached_tokens", sa.Integer(), nullable=True),
        sa.Column("tool_use_tokens", sa.Integer(), nullable=True),
        sa.Column("total_tokens", sa.Integer(), nullable=True),
        # The whole usage object as JSON text (by-modality lists and fields this version does not know).
        sa.Column("usage", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["convstore_conversations.id"],
            name="fk_convstore_exchanges_conversation_id_convstore_conversations",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "exchange_id", name="pk_convstore_exchanges"),
    )


def downgrade() -> None:
    op.drop_table("convstore_exchanges")
