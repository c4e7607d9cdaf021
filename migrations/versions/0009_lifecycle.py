"""Lifecycles: uploaded files convstore keeps the bytes of, which nodes name a Files API uri, and which
stored interactions were deleted on the server.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "convstore_files",
        sa.Column("conversation_id", sa.Uuid(as_uuid=False), nullable=False),
        # The Files API uri as the history names it (what the stored steps keep, unchanged forever).
        sa.Column("uri", sa.String(512), nullable=False),
        # The hash of the file's bytes in convstore_media (their base64 text, sealed when encrypted);
        # NULL: convstore never had the bytes (the app uploaded the file itself).
        sa.Column("hash", sa.String(64), nullable=True),
        # Sent with the file when it is uploaded again or inlined.
        sa.Column("mime_type", sa.String(255), nullable=False),
        # When the service forgets ``uri`` (its ``expiration_time``); NULL: unknown, treated as expired.
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        # The uri of the newest upload of the same bytes, sent in place of ``uri`` while it lives: one
        # re-upload serves every later turn and fork. NULL until the first re-upload.
        sa.Column("live_uri", sa.String(512), nullable=True),
        # When ``live_uri`` expires.
        sa.Column("live_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["convstore_conversations.id"],
            name="fk_convstore_files_conversation_id_convstore_conversations",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "uri", name="pk_convstore_files"),
    )
    # The Files API uris a node's payload names (a JSON list), NULL for the rest: written with the node, so
    # a replay knows which of its steps may need a fresh uri without reading their text. NULL for every
    # existing row: convstore kept no bytes of the files they name (uploads begin with this revision), so
    # there is nothing it could send in their place.
    # A plain ALTER: nodes is referenced by foreign keys (see 0004).
    op.add_column("convstore_nodes", sa.Column("files", sa.Text(), nullable=True))
    # When ``delete_remote`` deleted the server's copy of this exchange's stored interaction (or found it
    # gone); NULL: the copy may still exist. A deleted interaction is never chained on again.
    op.add_column(
        "convstore_exchanges", sa.Column("remote_deleted_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.execute("ALTER TABLE convstore_exchanges DROP COLUMN remote_deleted_at")
    op.execute("ALTER TABLE convstore_nodes DROP COLUMN files")
    op.drop_table("convstore_files")
