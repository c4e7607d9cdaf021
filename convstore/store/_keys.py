"""Key stores: where the wrapped data keys of encrypted conversations are kept, apart from the data.

``KeyStore`` is the protocol (get, put, delete a wrapped key by conversation id): the adapter point for an
external KMS or secrets service. Two built-ins keep the keys in a database's ``convstore_keys`` table:

- the default: the store's own database. The key operations then run inside the store's own
  transactions (``get_op``/``put_op``/``delete_op`` below), so creating a conversation writes its key
  atomically with it and deleting one destroys the key first in the same transaction. A backup of that
  database holds the keys too.
- ``SQLKeyStore(url)``: a database of its own, so a backup of the data holds no key: once a conversation's
  key is deleted there, no copy of its rows can be read.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typing_extensions import Self

from convstore.store import _migrate
from convstore.store._crypto import WrappedKey
from convstore.store._engine import Exec, Op, is_engine, make_engine, run
from convstore.store._prepare import utcnow
from convstore.store._schema import keys as k

__all__ = ["KeyStore", "SQLKeyStore", "delete_op", "get_op", "put_op"]


@runtime_checkable
class KeyStore(Protocol):
    """Where wrapped data keys live. Implement it to keep them in a KMS or a secrets service.

    Methods are called from any thread (an ``AsyncStore`` calls them in a worker thread). ``put_key`` is
    called before a new conversation's rows are written and again by ``rotate_keys``; ``delete_key`` before
    a conversation's rows are deleted, and must destroy the key for good (that is what shreds the data).
    """

    def get_key(self, conversation_id: str) -> WrappedKey | None:
        """The conversation's wrapped data key, or None when there is none (never made, or deleted)."""

    def put_key(self, conversation_id: str, wrapped: WrappedKey) -> None:
        """Keep ``wrapped`` for the conversation, replacing the one there (rotation)."""

    def delete_key(self, conversation_id: str) -> None:
        """Destroy the conversation's wrapped data key; nothing when there is none."""


_GET = sa.select(k.c.key_id, k.c.wrapped).where(k.c.conversation_id == sa.bindparam("conversation_id"))
_INSERT = sa.insert(k)
_UPDATE = (
    sa.update(k)
    .where(k.c.conversation_id == sa.bindparam("in_conversation"))
    .values(key_id=sa.bindparam("key_id"), wrapped=sa.bindparam("wrapped"), created_at=sa.bindparam("now"))
)
_DELETE = sa.delete(k).where(k.c.conversation_id == sa.bindparam("conversation_id"))


def get_op(conversation_id: str) -> Op[WrappedKey | None]:
    row = (yield Exec(_GET, {"conversation_id": conversation_id})).first()
    return None if row is None else WrappedKey(key_id=row.key_id, wrapped=bytes(row.wrapped))


def put_op(conversation_id: str, wrapped: WrappedKey) -> Op[None]:
    """Insert or replace (an update first: a rotation replaces; a new conversation inserts)."""
    now = utcnow()
    params = {"in_conversation": conversation_id, "key_id": wrapped.key_id, "wrapped": wrapped.wrapped}
    updated = yield Exec(_UPDATE, {**params, "now": now})
    if updated.rowcount == 0:
        yield Exec(
            _INSERT,
            {
                "conversation_id": conversation_id,
                "key_id": wrapped.key_id,
                "wrapped": wrapped.wrapped,
                "created_at": now,
            },
        )


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

    def delete_key(self, conversation_id: str) -> None:
        run(self._engine, delete_op(conversation_id), write=True)

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
