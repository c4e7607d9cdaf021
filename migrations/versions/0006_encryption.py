"""Encryption at rest: the scheme an encrypted conversation uses, and a table of wrapped data keys.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # How the conversation's user text is encrypted ("aes-256-gcm/1": a data key of its own, wrapped in
    # the key store), or NULL for plaintext. Recorded on the row so that a conversation with nothing in it
    # yet is still known to be encrypted, and a store without a keyring refuses it instead of writing
    # plaintext into it. Existing rows stay NULL: plaintext. A plain ALTER on both backends: a batch rebuild
    # of this table would trip SQLite's foreign keys from nodes and branches (see 0004).
    op.add_column("convstore_conversations", sa.Column("encryption", sa.String(32), nullable=True))
    op.create_table(
        "convstore_keys",
        # The conversation the data key belongs to. No foreign key: the same table serves a key store kept
        # in a database apart from the data (SQLKeyStore), and a key is deleted before its conversation.
        sa.Column("conversation_id", sa.Uuid(as_uuid=False), nullable=False),
        # Which application key wrapped the data key, so keys can rotate: the keyring picks the key by it,
        # and rotation re-wraps only the data keys whose key_id is not the active one.
        sa.Column("key_id", sa.String(255), nullable=False),
        # Nonce + AES-256-GCM ciphertext + tag of the 32-byte data key: unreadable without the application
        # key. Deleting the row destroys the conversation's data in every copy (crypto-shredding).
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        # When the data key was created or last re-wrapped.
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name="pk_convstore_keys"),
    )


def downgrade() -> None:
    op.drop_table("convstore_keys")
    # SQLite 3.35+ drops a column in place; a batch rebuild would trip the foreign keys (see upgrade).
    op.execute("ALTER TABLE convstore_conversations DROP COLUMN encryption")
