"""Key stores: where the wrapped data keys of encrypted conversations are kept, apart from the data.

``KeyStore`` is the protocol (get, put, delete a wrapped key by conversation id): the adapter point for an
external KMS or secrets service. Two built-ins keep the keys in a database's ``convstore_keys`` table:

- the default: the store's own database. The key operations then run inside the store's own
  transactions (``get_op``/``put_op``/``replace_op``/``delete_op`` below), so creating a conversation writes
  its key atomically with it and deleting one destroys the key in the same transaction. A backup of that
  database holds the keys too.
- ``SQLKeyStore(url)``: a database of its own, so a backup of the data holds no key: once a conversation's
  key is deleted there, a copy of its rows taken before cannot be read (unless a copy of the key store from
  before the delete is kept as well).

A key, once deleted, never comes back: a new conversation's key is inserted (never written over another), and
rotation replaces a key only if it is still the one it read (a compare-and-swap), so a rotation racing a
delete finds nothing to replace instead of writing the key back. On SQLite, ``SQLKeyStore.delete_key`` also
empties the key database's WAL, so no file of it holds the deleted key when it returns.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typing_extensions import Self

from convstore.errors import DatabaseError, ShredPendingError
from convstore.store import _migrate
from convstore.store import _statements as st
from convstore.store._crypto import Keyring, WrappedKey
from convstore.store._engine import Exec, Op, checkpoint, is_engine, make_engine, run
from convstore.store._prepare import utcnow
from convstore.store._schema import keys as k

__all__ = [
    "KeyStore",
    "ReplacingKeyStore",
    "SQLKeyStore",
    "delete_op",
    "encrypted_conversations",
    "get_op",
    "put_op",
    "replace_op",
    "rewrap",
]


@runtime_checkable
class KeyStore(Protocol):
    """Where wrapped data keys live. Implement it to keep them in a KMS or a secrets service.

    Methods are called from any thread (an ``AsyncStore`` calls them in a worker thread). ``put_key`` is
    called once, before a new conversation's rows are written; ``replace_key`` by ``rotate_keys``;
    ``delete_key`` while the store's transaction that deletes the conversation's rows holds the
    conversation (so no turn is written to it meanwhile), and must destroy the key for good: that is what
    shreds the data. A key store without ``replace_key`` works for everything but ``rotate_keys``.
    """

    def get_key(self, conversation_id: str) -> WrappedKey | None:
        """The conversation's wrapped data key, or None when there is none (never made, or deleted)."""

    def put_key(self, conversation_id: str, wrapped: WrappedKey) -> None:
        """Keep the key of a new conversation (there is none yet)."""

    def delete_key(self, conversation_id: str) -> None:
        """Destroy the conversation's wrapped data key; nothing when there is none."""


@runtime_checkable
class ReplacingKeyStore(KeyStore, Protocol):
    """A ``KeyStore`` that ``rotate_keys`` can use: it replaces a key only while it is still the old one."""

    def replace_key(self, conversation_id: str, old: WrappedKey, new: WrappedKey) -> bool:
        """Replace the conversation's key by ``new`` if it is still ``old``, atomically; False (nothing
        written) when it is gone or changed. Never creates a key: a deleted key must stay deleted."""


_GET = sa.select(k.c.key_id, k.c.wrapped).where(k.c.conversation_id == sa.bindparam("conversation_id"))
_INSERT = sa.insert(k)
# Rotation's compare-and-swap: the key is replaced only if it is still the one read; a deleted key matches
# nothing and stays deleted (never an upsert).
_REPLACE = (
    sa.update(k)
    .where(
        k.c.conversation_id == sa.bindparam("in_conversation"),
        k.c.key_id == sa.bindparam("old_key_id"),
        k.c.wrapped == sa.bindparam("old_wrapped", type_=k.c.wrapped.type),
    )
    .values(key_id=sa.bindparam("key_id"), wrapped=sa.bindparam("wrapped"), created_at=sa.bindparam("now"))
)
_DELETE = sa.delete(k).where(k.c.conversation_id == sa.bindparam("conversation_id"))


def get_op(conversation_id: str) -> Op[WrappedKey | None]:
    row = (yield Exec(_GET, {"conversation_id": conversation_id})).first()
    return None if row is None else WrappedKey(key_id=row.key_id, wrapped=bytes(row.wrapped))


def put_op(conversation_id: str, wrapped: WrappedKey) -> Op[None]:
    """Insert a new conversation's key (never over another: a conversation id is new when its key is)."""
    yield Exec(
        _INSERT,
        {
            "conversation_id": conversation_id,
            "key_id": wrapped.key_id,
            "wrapped": wrapped.wrapped,
            "created_at": utcnow(),
        },
    )


def replace_op(conversation_id: str, old: WrappedKey, new: WrappedKey) -> Op[bool]:
    """Replace the key by ``new`` if it is still ``old``; False when it was deleted or replaced meanwhile."""
    params = {
        "in_conversation": conversation_id,
        "old_key_id": old.key_id,
        "old_wrapped": old.wrapped,
        "key_id": new.key_id,
        "wrapped": new.wrapped,
        "now": utcnow(),
    }
    return (yield Exec(_REPLACE, params)).rowcount == 1  # type: ignore[no-any-return]


def delete_op(conversation_id: str) -> Op[None]:
    yield Exec(_DELETE, {"conversation_id": conversation_id})


class SQLKeyStore:
    """A key store in a database of its own (SQLite or PostgreSQL), apart from the conversations.

    The database is built by convstore's migrations like any store's (only its ``convstore_keys`` table is
    used); it may be shared by several stores.

    Args:
        url_or_engine: A database URL, or an ``Engine`` you own (not disposed of by ``close``).
        busy_timeout: SQLite: seconds a writer waits for the lock.

    Example:
        >>> keys = SQLKeyStore("sqlite:///keys.db")  # doctest: +SKIP
        >>> store = Store("sqlite:///chat.db", keyring=keyring, key_store=keys)  # doctest: +SKIP
    """

    def __init__(self, url_or_engine: str | sa.URL | Engine, *, busy_timeout: float = 30.0) -> None:
        if is_engine(url_or_engine):
            self._engine = url_or_engine
            self._owns_engine = False
        else:
            self._engine = make_engine(url_or_engine, busy_timeout=busy_timeout)
            self._owns_engine = True
        try:
            _migrate.check_schema(self._engine)
        except BaseException:
            self.close()
            raise

    @property
    def engine(self) -> Engine:
        return self._engine

    def __repr__(self) -> str:
        return f"SQLKeyStore({self._engine.url.render_as_string(hide_password=True)!r})"

    def get_key(self, conversation_id: str) -> WrappedKey | None:
        return run(self._engine, get_op(conversation_id), write=False)

    def put_key(self, conversation_id: str, wrapped: WrappedKey) -> None:
        run(self._engine, put_op(conversation_id, wrapped), write=True)

    def replace_key(self, conversation_id: str, old: WrappedKey, new: WrappedKey) -> bool:
        return run(self._engine, replace_op(conversation_id, old, new), write=True)

    def delete_key(self, conversation_id: str) -> None:
        """Delete the key; on SQLite, then empty the WAL so that no file holds it.

        Raises:
            ShredPendingError: the key is deleted, but another connection kept the key database's WAL busy
                past the busy timeout, so its old pages are still in the ``-wal`` file.
        """
        run(self._engine, delete_op(conversation_id), write=True)
        try:
            emptied = checkpoint(self._engine)
        except DatabaseError as error:  # a full disk, say
            raise ShredPendingError([conversation_id], str(error)) from error
        if not emptied:
            raise ShredPendingError([conversation_id])

    def checkpoint(self) -> bool:
        """SQLite: empty the key database's WAL into its file (see ``Store.checkpoint``). True when done."""
        return checkpoint(self._engine)

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def encrypted_conversations(owner: str | None) -> Op[list[str]]:
    """The ids of the encrypted conversations ``owner`` (None: anyone) may see, oldest first."""
    result = yield Exec(st.ENCRYPTED_CONVERSATIONS, {"owner": owner})
    return [row.id for row in result]


def rewrap(conversation_id: str, keyring: Keyring) -> Op[bool]:
    """Re-wrap a conversation's data key (default key store) with the keyring's active key, if another key
    wrapped it. Payloads are untouched. Returns whether it was re-wrapped: not when the key was deleted (or
    re-wrapped) by another transaction meanwhile: the compare-and-swap finds it and leaves it as it is."""
    wrapped = yield from get_op(conversation_id)
    if wrapped is None:
        return False
    rewrapped = keyring.rewrap(conversation_id, wrapped)
    if rewrapped is None:
        return False
    return (yield from replace_op(conversation_id, wrapped, rewrapped))
