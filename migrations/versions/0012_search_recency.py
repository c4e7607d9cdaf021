"""Search: an index on the search rows' time, so that a search walks the newest matches first.

A search ranks only the newest matches (``_search``: the newest ``candidates`` of them, 1,000 by default), so
that a page's work is bounded whatever the query. For a word in many steps PostgreSQL finds them by walking
this index backwards from the newest row, testing each row's document, and stops at the ``candidates``-th
match (rare words still come from the GIN index, whichever the planner prices lower). SQLite needs nothing:
FTS5 walks its doclists in rowid order, which is the order rows were indexed.

``CREATE INDEX`` holds writes to the search table (not reads) while it builds: a few seconds for a million
rows on a small server.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

INDEX = "ix_convstore_search_created_at"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Why: the newest matches first (``created_at DESC``), the walk a common word's search takes.
        op.execute(f"CREATE INDEX {INDEX} ON convstore_search (created_at)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX {INDEX}")
