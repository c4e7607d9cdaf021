"""Node indexes led by the parent and the exchange id, so no foreign-key check can pick them.

PostgreSQL plans each connection's foreign-key checks once, often while ``convstore_nodes`` is still empty.
With every secondary index led by ``conversation_id``, that plan could choose the ``(conversation_id,
exchange_id)`` index for the check ``conversation_id = $1 AND id = $2`` and filter on ``id``: a scan of the
whole conversation at every inserted step and every branch move, so appends grew with the conversation
(8x over 10,000 steps) until an ANALYZE made the connection re-plan. Led by ``parent_id`` / ``exchange_id``,
these indexes cannot serve that check; only the primary key can. They serve their own lookups (children of a
node, the steps of an exchange, always with the conversation id) as well as before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NODES = "convstore_nodes"


def upgrade() -> None:
    op.drop_index("ix_convstore_nodes_conversation_id_parent_id", table_name=NODES)
    op.drop_index("ix_convstore_nodes_conversation_id_exchange_id", table_name=NODES)
    # The children of a node (the tree, and the foreign key's check when a node is deleted).
    op.create_index("ix_convstore_nodes_parent_id_conversation_id", NODES, ["parent_id", "conversation_id"])
    # The steps of one exchange (a pinned first exchange is read this way).
    op.create_index(
        "ix_convstore_nodes_exchange_id_conversation_id", NODES, ["exchange_id", "conversation_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_convstore_nodes_exchange_id_conversation_id", table_name=NODES)
    op.drop_index("ix_convstore_nodes_parent_id_conversation_id", table_name=NODES)
    op.create_index(
        "ix_convstore_nodes_conversation_id_exchange_id", NODES, ["conversation_id", "exchange_id"]
    )
    op.create_index("ix_convstore_nodes_conversation_id_parent_id", NODES, ["conversation_id", "parent_id"])
