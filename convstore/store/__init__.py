"""Persistence: conversation trees in SQLite or PostgreSQL through SQLAlchemy, built by Alembic migrations.

``Store`` and ``AsyncStore`` here know nothing of HTTP; ``convstore.Store`` and ``convstore.AsyncStore`` add
the calls that talk to the API.
"""

from convstore.store._async import AsyncConversation, AsyncStore
from convstore.store._check import DEFAULT_CHECKS, Check, CheckReport, Problem, SqlCheck
from convstore.store._crypto import Keyring, WrappedKey
from convstore.store._keys import KeyStore, ReplacingKeyStore, SQLKeyStore
from convstore.store._listing import ConversationSummary, SchemaStatus, schema_status
from convstore.store._rows import MEDIA_REF
from convstore.store._sync import Conversation, Store

__all__ = [
    "DEFAULT_CHECKS",
    "MEDIA_REF",
    "AsyncConversation",
    "AsyncStore",
    "Check",
    "CheckReport",
    "Conversation",
    "ConversationSummary",
    "KeyStore",
    "Keyring",
    "Problem",
    "ReplacingKeyStore",
    "SQLKeyStore",
    "SchemaStatus",
    "SqlCheck",
    "Store",
    "WrappedKey",
    "schema_status",
]
