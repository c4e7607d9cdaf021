"""Persistence: conversation trees in SQLite or PostgreSQL through SQLAlchemy, built by Alembic migrations.

The store's classes here (``_async._AsyncStoreBase``, ``_sync._StoreBase`` and their conversations) know
nothing of HTTP and are private: ``convstore.Store`` and ``convstore.AsyncStore`` are them with the calls that
talk to the API.
"""

from convstore.store._check import DEFAULT_CHECKS, Check, CheckReport, Problem, SqlCheck
from convstore.store._crypto import Keyring, WrappedKey
from convstore.store._keys import KeyStore, ReplacingKeyStore, SQLKeyStore

__all__ = [
    "DEFAULT_CHECKS",
    "Check",
    "CheckReport",
    "KeyStore",
    "Keyring",
    "Problem",
    "ReplacingKeyStore",
    "SQLKeyStore",
    "SqlCheck",
    "WrappedKey",
]
