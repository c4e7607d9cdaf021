"""Persistence: conversation trees in SQLite or PostgreSQL through SQLAlchemy, built by Alembic migrations."""

from convstore.store._sync import Conversation, Store

__all__ = ["Conversation", "Store"]
