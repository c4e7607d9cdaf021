"""Persistence: conversation trees in SQLite or PostgreSQL through SQLAlchemy, built by Alembic migrations.

``Store`` and ``AsyncStore`` here know nothing of HTTP; ``convstore.Store`` and ``convstore.AsyncStore`` add
the calls that talk to the API.
"""

from convstore.store._async import AsyncConversation, AsyncStore
from convstore.store._check import DEFAULT_CHECKS, Check, CheckReport, Problem, SqlCheck
from convstore.store._crypto import Keyring, WrappedKey
from convstore.store._keys import KeyStore, ReplacingKeyStore, SQLKeyStore
from convstore.store._sync import Conversation, Store

__all__ = [
    "DEFAULT_CHECKS",
    "AsyncConversation",
    "AsyncStore",
    "Check",
    "CheckReport",
    "Conversation",
    "KeyStore",
    "Keyring",
    "Problem",
    "ReplacingKeyStore",
    "SQLKeyStore",
    "SqlCheck",
    "Store",
    "WrappedKey",
]
