# Generated from convstore/store/_async/core.py by scripts/unasync.py: do not edit.
"""What every part of the store stands on: the engine and its schema, the store's settings, the keys of
encrypted conversations, and running one operation from ``_ops`` in one transaction. Written once, for
asyncio; ``scripts/unasync.py`` generates the blocking twin in ``store/_sync/``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa
from typing_extensions import Self

from convstore._limits import Limits, checked_limits
from convstore.budget import HeuristicCounter, TokenCounter
from convstore.errors import DataKeyNotFoundError, EncryptionError, KeyringRequiredError
from convstore.store import _keys, _migrate, _ops, _search
from convstore.store._crypto import ENCRYPTION, DataCipher, Keyring, WrappedKey
from convstore.store._engine import (
    Op,
    adopt_engine,
    finish_pending,
    is_engine,
    make_engine,
    run,
)
from convstore.store._files import Lifecycle
from convstore.store._keys import KeyStore, ReplacingKeyStore
from convstore.store._prepare import Redactor, call, check_owner

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["_StoreCore"]

T = TypeVar("T")


class _StoreCore:
    """The core of ``_StoreBase`` (``store.py``), which its parts by concern extend: opening and
    closing, the engine, the keys, the schema, and ``_run``."""

    def __init__(
        self,
        url_or_engine: str | sa.URL | Engine,
        *,
        check_schema: bool = True,
        busy_timeout: float = 30.0,
        sqlite_synchronous: str = "FULL",
        counter: TokenCounter | None = None,
        owner: str | None = None,
        redact: Redactor | None = None,
        keyring: Keyring | None = None,
        key_store: KeyStore | None = None,
        limits: Limits | None = None,
        search_index: bool = True,
        search_language: str = "simple",
        lifecycle: Lifecycle | None = None,
    ) -> None:
        if keyring is not None and not isinstance(keyring, Keyring):
            raise TypeError("keyring: pass a convstore.Keyring")
        if key_store is not None and not isinstance(key_store, KeyStore):
            raise TypeError("key_store: pass a KeyStore (get_key, put_key, delete_key)")
        self.keyring = keyring
        self.key_store = key_store
        self.counter: TokenCounter = counter or HeuristicCounter()
        self.owner = check_owner(owner)
        self.redact = redact
        self.limits = checked_limits(limits)
        # The text search configuration steps are indexed with; None: this store indexes nothing.
        self._index = _search.check_language(search_language) if search_index else None
        self._search_language = _search.check_language(search_language)
        self._routed: bool | None = None  # Citus: read each hit conversation's branches apart (``_search``)
        self.lifecycle = lifecycle if lifecycle is not None else Lifecycle()
        if is_engine(url_or_engine):
            self._engine = adopt_engine(
                url_or_engine, busy_timeout=busy_timeout, synchronous=sqlite_synchronous
            )
            self._owns_engine = False
        else:
            self._engine = make_engine(
                url_or_engine, busy_timeout=busy_timeout, synchronous=sqlite_synchronous
            )
            self._owns_engine = True
        self._schema_checked = not check_schema
        self._ready()

    def _ready(self) -> None:
        """Check the schema once, before the first operation (an empty database is built here)."""
        if self._schema_checked:
            return
        try:
            _migrate.check_schema(self._engine)
            # A shred a full disk or a reader held up: the search index rewritten, then the WAL emptied.
            finish_pending(self._engine, first=_search.ERASE_DELETED_SQL)
        except BaseException:
            self.close()
            raise
        self._schema_checked = True

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine underneath."""
        return self._engine

    def __repr__(self) -> str:
        return f"Store({self._engine.url.render_as_string(hide_password=True)!r})"

    # Keys

    def _cipher(
        self, conversation_id: str, encryption: str | None, wrapped: WrappedKey | None = None
    ) -> DataCipher | None:
        """The cipher of a conversation (None for plaintext): its data key, fetched and unwrapped."""
        if encryption is None:
            return None
        if encryption != ENCRYPTION:
            raise EncryptionError(
                f"conversation {conversation_id!r} uses encryption {encryption!r}, which this convstore "
                "does not know",
                conversation_id,
            )
        if self.keyring is None:
            raise KeyringRequiredError(conversation_id)
        if wrapped is None:
            if self.key_store is None:
                wrapped = self._run(_keys.get_op(conversation_id))
            else:
                wrapped = call(self.key_store.get_key, conversation_id)
        if wrapped is None:
            raise DataKeyNotFoundError(conversation_id)
        return self.keyring.cipher(conversation_id, wrapped)

    @property
    def _inline_keys(self) -> bool:
        """Whether wrapped keys are read in the store's own transactions (the default key store)."""
        return self.keyring is not None and self.key_store is None

    def rotate_keys(self) -> int:
        """Re-wrap every data key (of this store's owner's conversations) that another application key
        wrapped, with the keyring's active key. Payloads are not re-encrypted: one small write a
        conversation. Afterwards, only the active key is needed to read them.

        A key deleted while the rotation runs stays deleted: each key is replaced only if it is still the
        one that was read (in the key store's own transaction for a ``key_store``).

        Returns:
            How many data keys were re-wrapped.

        Raises:
            ValueError: the store has no keyring.
            TypeError: the ``key_store`` has no ``replace_key`` (see ``ReplacingKeyStore``).
            KeyNotFoundError: a data key was wrapped by a key the keyring does not hold (it stays as it was;
                the ones before it are re-wrapped).
        """
        if self.keyring is None:
            raise ValueError("rotate_keys needs a store opened with keyring=")
        key_store = self.key_store
        if key_store is not None and not isinstance(key_store, ReplacingKeyStore):
            raise TypeError(
                "rotate_keys needs a key store with replace_key(conversation_id, old, new), which replaces a "
                "key only while it is still the old one (so that a rotation never writes back a deleted key)"
            )
        rotated = 0
        for conversation_id in self._run(_ops.encrypted_conversations(self.owner)):
            if key_store is None:
                rotated += self._run(_ops.rewrap(conversation_id, self.keyring), write=True)
                continue
            wrapped = call(key_store.get_key, conversation_id)
            if wrapped is None:
                continue  # deleted meanwhile
            rewrapped = self.keyring.rewrap(conversation_id, wrapped)
            # A compare-and-swap: a key deleted (or re-wrapped) since it was read stays as it is.
            if rewrapped is not None and call(
                key_store.replace_key, conversation_id, wrapped, rewrapped
            ):
                rotated += 1
        return rotated

    def for_owner(self, owner: str) -> Self:
        """The same store bound to one owner: for one request of a multi-user app.

        It shares everything but the owner with this store: the engine and its connection pool, the
        keyring, the key store, the counter, the redaction hook and the checked schema, so making one costs
        nothing (no connection, no query). Closing it releases nothing; close this store at shutdown.

        Args:
            owner: The user or tenant id (see ``owner`` in the class docstring).

        Returns:
            A store of the same class that sees only ``owner``'s conversations.

        Raises:
            ValueError: ``owner`` is not a valid owner, or this store is bound to another owner.

        Example:
            >>> app_store = Store(engine)  # doctest: +SKIP
            >>> store = app_store.for_owner(user_id)  # per request  # doctest: +SKIP
        """
        if owner is None:
            raise ValueError("for_owner needs an owner (a store without one sees every conversation)")
        checked = check_owner(owner)
        if self.owner is not None and self.owner != checked:
            raise ValueError("this store is bound to another owner: derive per-owner stores from one without")
        scoped = copy.copy(self)
        scoped.owner = checked
        scoped._owns_engine = False
        return scoped

    def close(self) -> None:
        """Release the store's connections (a user-supplied engine is left open)."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Self:
        self._ready()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _is_routed(self) -> bool:
        """Whether the database is Citus's (statements that span conversations are planned apart)."""
        if self._routed is None:
            self._routed = self._engine.dialect.name == "postgresql" and self._run(_search.routed())
        return self._routed

    def _run(self, op: Op[T], *, write: bool = False, single: bool = False) -> T:
        self._ready()
        return run(self._engine, op, write=write, single=single)

    # Schema

    def upgrade(
        self,
        revision: str = "head",
        *,
        distribute: bool | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        """Upgrade the database schema to ``revision``, keeping all data. Safe to run when up to date.

        On PostgreSQL with the Citus extension, the tables are then distributed by conversation id and
        colocated. ``distribute=None`` (default) distributes a new database and keeps an existing one as it
        is (tables a migration adds follow the conversations table); ``True`` distributes every convstore
        table that is not yet, data included; ``False`` never distributes. Elsewhere it does nothing.

        ``progress`` is called with ``(what, done, total)`` as a long step goes: the search index's backfill
        (revision 0010) reports the conversations indexed of all. It runs in the upgrade's transaction,
        which on SQLite makes writers wait for it (readers go on); on PostgreSQL it only reads the
        existing tables.
        """
        _migrate.upgrade(self._engine, revision, distribute=distribute, progress=progress)

    def schema_revision(self) -> str | None:
        """The database's schema revision (None when convstore's tables do not exist)."""
        return _migrate.revision(self._engine)
