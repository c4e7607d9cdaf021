"""Segments: each node names the chain it belongs to, so a branch is read by a few flat range scans.

A segment is a chain of nodes, each (but its first) the child of the one before it, one level down. Its id is
the id of its first node. A branch's path from the root is then a short list of (segment, top depth) pairs,
each read by one indexed range scan in depth order, instead of a recursive walk of parent pointers (one
primary-key lookup a step, then a sort of the whole path by depth).

Existing nodes get their segments here, deterministically: a root starts a segment, and a node continues its
parent's segment when it is the parent's first child by (created_at, id); any other child starts a segment
of its own. The backfill reads one conversation at a time (its nodes' ids, parents and depths only) and
writes in batches, each update naming its conversation (a distributed database routes it to one shard).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

NODES = "convstore_nodes"
INDEX = "ix_convstore_nodes_segment_id_conversation_id_depth"
_BATCH = 1000  # rows an executemany update carries
_NIL = sa.text("'00000000000000000000000000000000'")  # SQLite's placeholder default (see upgrade)


def segments_of(rows: list[Any]) -> dict[str, str]:
    """``{node id: segment id}`` for one conversation's ``(id, parent_id)`` rows, read parents first and
    siblings by (created_at, id): a node continues its parent's segment iff it is the first child read."""
    segment: dict[str, str] = {}
    continued: set[str] = set()
    for row in rows:
        parent = row.parent_id
        if parent is not None and parent in segment and parent not in continued:
            continued.add(parent)
            segment[row.id] = segment[parent]
        else:
            segment[row.id] = row.id
    return segment


def upgrade() -> None:
    # The id of the first node of the segment this node belongs to (a node that starts a segment names
    # itself). A plain ALTER on both backends (a batch rebuild would trip the foreign keys, see 0004).
    # PostgreSQL: NULL until the backfill below, then NOT NULL. SQLite can add a NOT NULL column only with a
    # default and cannot add the constraint later without that rebuild: its default is the nil UUID, which
    # no node has, so a row written without a segment (by a tool that predates this revision) is refused
    # by nothing but reported by ``check()`` as a missing segment, as a NULL would be.
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        column = sa.Column("segment_id", sa.Uuid(as_uuid=False), nullable=False, server_default=_NIL)
    else:
        column = sa.Column("segment_id", sa.Uuid(as_uuid=False), nullable=True)
    op.add_column(NODES, column)
    conversations = sa.table("convstore_conversations", sa.column("id", sa.Uuid(as_uuid=False)))
    nodes = sa.table(
        NODES,
        sa.column("conversation_id", sa.Uuid(as_uuid=False)),
        sa.column("id", sa.Uuid(as_uuid=False)),
        sa.column("parent_id", sa.Uuid(as_uuid=False)),
        sa.column("depth", sa.Integer()),
        sa.column("created_at", sa.DateTime()),
        sa.column("segment_id", sa.Uuid(as_uuid=False)),
    )
    read = (
        sa.select(nodes.c.id, nodes.c.parent_id)
        .where(nodes.c.conversation_id == sa.bindparam("conversation_id"))
        .order_by(nodes.c.depth, nodes.c.created_at, nodes.c.id)
    )
    write = (
        nodes.update()
        .where(nodes.c.conversation_id == sa.bindparam("in_conversation"), nodes.c.id == sa.bindparam("node"))
        .values(segment_id=sa.bindparam("segment"))
    )
    ids = [row.id for row in bind.execute(sa.select(conversations.c.id).order_by(conversations.c.id))]
    for conversation_id in ids:  # the ids only are held; one conversation's nodes at a time
        rows = bind.execute(read, {"conversation_id": conversation_id}).all()
        params = [
            {"in_conversation": conversation_id, "node": node_id, "segment": segment_id}
            for node_id, segment_id in segments_of(rows).items()
        ]
        for start in range(0, len(params), _BATCH):
            bind.execute(write, params[start : start + _BATCH])
    if bind.dialect.name == "postgresql":
        op.alter_column(NODES, "segment_id", existing_type=sa.Uuid(as_uuid=False), nullable=False)
    # One node per depth in a segment, and the index a branch's flat reads scan: (segment, depths up to a
    # top) in depth order, no sort. Led by segment_id, not conversation_id, so that PostgreSQL can never pick
    # it for the foreign-key checks on (conversation_id, id) (see 0005); segment ids are unique node ids.
    op.create_index(INDEX, NODES, ["segment_id", "conversation_id", "depth"], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name=NODES)
    # SQLite 3.35+ drops a column in place; a batch rebuild would trip the foreign keys (see 0004).
    op.execute(f"ALTER TABLE {NODES} DROP COLUMN segment_id")
