"""Token budgets: the estimate each measured exchange is calibrated against, summaries, and an index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("convstore_exchanges") as batch:
        # What convstore estimated the sent input would cost; with input_tokens (measured) it gives the
        # calibration ratio of later budgets.
        batch.add_column(sa.Column("estimated_input_tokens", sa.Integer(), nullable=True))
    # The steps of one exchange (a pinned first exchange is read this way).
    op.create_index(
        "ix_convstore_nodes_conversation_id_exchange_id",
        "convstore_nodes",
        ["conversation_id", "exchange_id"],
    )
    op.create_table(
        "convstore_summaries",
        sa.Column("conversation_id", sa.Uuid(as_uuid=False), nullable=False),
        # The first node kept: the summary stands for every step before it. Every path through that node
        # has the same steps before it, so the summary serves every branch that windows there.
        sa.Column("node_id", sa.Uuid(as_uuid=False), nullable=False),
        # The replacement steps, a JSON array of wire steps, as the compaction hook returned them.
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id", "node_id"],
            ["convstore_nodes.conversation_id", "convstore_nodes.id"],
            name="fk_convstore_summaries_conversation_id_node_id_convstore_nodes",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "node_id", name="pk_convstore_summaries"),
    )


def downgrade() -> None:
    op.drop_table("convstore_summaries")
    op.drop_index("ix_convstore_nodes_conversation_id_exchange_id", table_name="convstore_nodes")
    with op.batch_alter_table("convstore_exchanges") as batch:
        batch.drop_column("estimated_input_tokens")
