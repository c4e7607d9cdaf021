"""Conversations, nodes (one step each, a tree by parent pointer) and branches (named head pointers).

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Written by hand, never importing today's table definitions: a migration must keep building the schema it
built when it was written.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "convstore_conversations",
        # Client-generated UUIDv7: time-ordered (good index locality), no round trip to learn the id.
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        # UTC; listing is newest first by (created_at, id).
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # The request settings every turn re-sends (the API keeps none of them with store=false).
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("system_instruction", sa.Text(), nullable=True),
        # JSON text, not jsonb: it may be encrypted later, and jsonb cannot hold \u0000.
        sa.Column("generation_config", sa.Text(), nullable=True),
        sa.Column("tools", sa.Text(), nullable=True),
        # The application's own JSON object about the conversation.
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_convstore_conversations"),
    )
    op.create_index(
        "ix_convstore_conversations_created_at_id", "convstore_conversations", ["created_at", "id"]
    )
    op.create_table(
        "convstore_nodes",
        # First in the key: every query names its conversation, and the table can be sharded by it.
        sa.Column("conversation_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        # The step before this one; NULL for a first step. Composite FK: same conversation only.
        sa.Column("parent_id", sa.Uuid(as_uuid=False), nullable=True),
        # parent.depth + 1; the position in the replayed input array.
        sa.Column("depth", sa.Integer(), nullable=False),
        # Shared by the steps one append wrote; truncation and fork-by-turn cut only between exchanges.
        sa.Column("exchange_id", sa.Uuid(as_uuid=False), nullable=False),
        # The step's wire type, in clear so the store can reason about steps without decoding payloads.
        sa.Column("type", sa.String(64), nullable=False),
        # This step's tokens, and the running total from the root: a budget window is a range on it.
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # The step's wire JSON text, replayed as is.
        sa.Column("payload", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["convstore_conversations.id"],
            name="fk_convstore_nodes_conversation_id_convstore_conversations",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id", "parent_id"],
            ["convstore_nodes.conversation_id", "convstore_nodes.id"],
            name="fk_convstore_nodes_conversation_id_parent_id_convstore_nodes",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "id", name="pk_convstore_nodes"),
    )
    # Children of a node: tree display, and the parent FK check when a conversation is deleted.
    op.create_index(
        "ix_convstore_nodes_conversation_id_parent_id", "convstore_nodes", ["conversation_id", "parent_id"]
    )
    op.create_table(
        "convstore_branches",
        sa.Column("conversation_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        # The branch's newest step; NULL while the branch is empty. Moved by compare-and-swap.
        sa.Column("head_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["convstore_conversations.id"],
            name="fk_convstore_branches_conversation_id_convstore_conversations",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id", "head_id"],
            ["convstore_nodes.conversation_id", "convstore_nodes.id"],
            name="fk_convstore_branches_conversation_id_head_id_convstore_nodes",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "name", name="pk_convstore_branches"),
    )


def downgrade() -> None:
    op.drop_table("convstore_branches")
    op.drop_index("ix_convstore_nodes_conversation_id_parent_id", table_name="convstore_nodes")
    op.drop_table("convstore_nodes")
    op.drop_index("ix_convstore_conversations_created_at_id", table_name="convstore_conversations")
    op.drop_table("convstore_conversations")
