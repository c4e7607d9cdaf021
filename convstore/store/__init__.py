"""Persistence: conversation trees in SQLite or PostgreSQL through SQLAlchemy, built by Alembic migrations.

The store's classes here (``_async.store._AsyncStoreBase``, ``_sync.store._StoreBase``, their
conversations) know nothing of HTTP and are private: ``convstore.Store`` and ``convstore.AsyncStore`` are
them with the calls that talk to the API, and use them through their public members and ``_async.access``.
"""

from convstore.store._check import DEFAULT_CHECKS, Check, CheckReport, Problem, SqlCheck
from convstore.store._crypto import Keyring, WrappedKey
from convstore.store._keys import KeyStore, ReplacingKeyStore, SQLKeyStore
from convstore.store._listing import ConversationSummary, SchemaStatus, schema_status
from convstore.store._rows import MEDIA_REF

__all__ = [
    "DEFAULT_CHECKS",
    "MEDIA_REF",
    "Check",
    "CheckReport",
    "ConversationSummary",
    "KeyStore",
    "Keyring",
    "Problem",
    "ReplacingKeyStore",
    "SQLKeyStore",
    "SchemaStatus",
    "SqlCheck",
    "WrappedKey",
    "schema_status",
]
