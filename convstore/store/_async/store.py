"""The store and its conversations. Written once, for asyncio, in ``store/_async/``; ``scripts/unasync.py``
generates the blocking twin in ``store/_sync/``: the two are one text, and every query, rule and mapping
lives in ``_ops``.

Thin: each method checks its arguments, runs one operation from ``_ops`` in one transaction, and keeps the
branch head the conversation last saw, which is what the next ``append`` compares and swaps against.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import sqlalchemy as sa
from typing_extensions import Self

from convstore import codec
from convstore._ids import new_id, shortest_endings
from convstore._limits import Limits, checked_limits
from convstore._wire import json_array
from convstore.budget import HeuristicCounter, TokenBudget, TokenCounter
from convstore.errors import (
    BudgetExceededError,
    ConversationNotFoundError,
    ConvstoreError,
    DatabaseError,
    DataKeyNotFoundError,
    DecryptionError,
    EncryptionError,
    InvalidAgeError,
    InvalidExchangeError,
    KeyNotFoundError,
    KeyringRequiredError,
    NodeNotFoundError,
    NotFoundError,
    PurgeIncompleteError,
    ShredPendingError,
    StoreBusyError,
    UnverifiedExportWarning,
)
from convstore.model import Branch, ConversationInfo, Exchange, Node, Page, SearchPage, Step, Tree
from convstore.store import (
    _check,
    _keys,
    _listing,
    _migrate,
    _ops,
    _purge,
    _reads,
    _search,
    _transfer,
    _windows,
    _writes,
)
from convstore.store._crypto import ENCRYPTION, DataCipher, Keyring, WrappedKey
from convstore.store._engine import (
    Op,
    adopt_async_engine,
    checkpoint_async,
    finish_pending_async,
    is_async_engine,
    make_async_engine,
    run_async,
)
from convstore.store._files import Lifecycle
from convstore.store._keys import KeyStore, ReplacingKeyStore
from convstore.store._listing import ConversationSummary
from convstore.store._prepare import (
    Redactor,
    call_async,
    check_branch_name,
    check_owner,
    conversation_row,
    decode_cursor,
    encode_cursor,
    prepare_exchange,
    prepare_wires,
    resolve_async,
    settings_tokens,
    utcnow,
    valid_id,
    window_json,
)
from convstore.store._rows import MEDIA_REF
from convstore.store._transfer import ConversationDump

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["_AsyncConversationBase", "_AsyncStoreBase"]

T = TypeVar("T")
C = TypeVar("C", bound="_AsyncConversationBase")
MEDIA_CHUNK = 4 * 1024 * 1024  # characters of base64 a media piece: 3 MiB of media
StepLike = Step | Mapping[str, Any]


class _AsyncStoreBase(Generic[C]):
    """The persistence half of ``convstore.AsyncStore`` (the public class, in ``convstore.conversation``,
    documents it): every method but the conversations' API calls. Private: no code outside convstore
    names it, and ``C`` is the class its conversations are opened as."""

    # The class conversations are opened as (``convstore.AsyncConversation``).
    _conversation_class: type[C]

    def __init__(
        self,
        url_or_engine: str | sa.URL | AsyncEngine,
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
        if is_async_engine(url_or_engine):
            self._engine = adopt_async_engine(
                url_or_engine, busy_timeout=busy_timeout, synchronous=sqlite_synchronous
            )
            self._owns_engine = False
        else:
            self._engine = make_async_engine(
                url_or_engine, busy_timeout=busy_timeout, synchronous=sqlite_synchronous
            )
            self._owns_engine = True
        self._schema_checked = not check_schema
        # unasync: self._ready()

    async def _ready(self) -> None:
        """Check the schema once, before the first operation (an empty database is built here)."""
        if self._schema_checked:
            return
        try:
            await _migrate.check_schema_async(self._engine)
            # A shred a full disk or a reader held up: the search index rewritten, then the WAL emptied.
            await finish_pending_async(self._engine, first=_search.ERASE_DELETED_SQL)
        except BaseException:
            await self.aclose()
            raise
        self._schema_checked = True

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine underneath."""
        return self._engine

    def __repr__(self) -> str:
        return f"AsyncStore({self._engine.url.render_as_string(hide_password=True)!r})"

    # Keys

    async def _cipher(
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
                wrapped = await self._run(_keys.get_op(conversation_id))
            else:
                wrapped = await call_async(self.key_store.get_key, conversation_id)
        if wrapped is None:
            raise DataKeyNotFoundError(conversation_id)
        return self.keyring.cipher(conversation_id, wrapped)

    @property
    def _inline_keys(self) -> bool:
        """Whether wrapped keys are read in the store's own transactions (the default key store)."""
        return self.keyring is not None and self.key_store is None

    async def rotate_keys(self) -> int:
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
        for conversation_id in await self._run(_ops.encrypted_conversations(self.owner)):
            if key_store is None:
                rotated += await self._run(_ops.rewrap(conversation_id, self.keyring), write=True)
                continue
            wrapped = await call_async(key_store.get_key, conversation_id)
            if wrapped is None:
                continue  # deleted meanwhile
            rewrapped = self.keyring.rewrap(conversation_id, wrapped)
            # A compare-and-swap: a key deleted (or re-wrapped) since it was read stays as it is.
            if rewrapped is not None and await call_async(
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
            >>> app_store = AsyncStore(engine)  # doctest: +SKIP
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

    async def aclose(self) -> None:
        """Release the store's connections (a user-supplied engine is left open)."""
        if self._owns_engine:
            await self._engine.dispose()

    async def __aenter__(self) -> Self:
        await self._ready()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self, op: Op[T], *, write: bool = False, single: bool = False) -> T:
        await self._ready()
        return await run_async(self._engine, op, write=write, single=single)

    # Schema

    async def upgrade(
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
        await _migrate.upgrade_async(self._engine, revision, distribute=distribute, progress=progress)

    async def schema_revision(self) -> str | None:
        """The database's schema revision (None when convstore's tables do not exist)."""
        return await _migrate.revision_async(self._engine)

    async def check(
        self, checks: Sequence[_check.Check] | None = None, *, repair: bool = False
    ) -> _check.CheckReport:
        """Verify every invariant of the stored trees, in one read transaction, by a few bulk queries.

        Parents exist in the same conversation, depths are consecutive, running token totals add up, branch
        heads exist, each exchange is one unbroken chain and its record has its steps, every media string a
        step names is stored and matches its hash. With a keyring, every sealed value of every encrypted
        conversation is decrypted too (settings, payloads, summaries, media; one read transaction per
        conversation); without one, ``report.unopened`` counts the conversations left unverified. The
        report names ids and the broken rule, never content.

        Args:
            checks: The checks to run (default: ``DEFAULT_CHECKS``); add your own beside them.
            repair: Finish the deletes that a key store outside the database got ahead of: every
                conversation reported ``missing_data_key`` (its data key deleted, its rows left, as when a
                process is killed between a ``SQLKeyStore``'s commit and the rows') is deleted, rows and
                all, and listed in ``report.repaired`` instead of ``problems``. No one could read it. Make
                sure the store is given its own key store first: pointed at another one, every encrypted
                conversation looks shredded. Needs the keyring (as finding them does).

        Returns:
            The report; ``report.ok`` when nothing is wrong.

        Raises:
            ValueError: the store is bound to an owner (the check reads every conversation).
            ShredPendingError: SQLite: repaired, but the WAL could not be emptied (see ``checkpoint``).
        """
        if self.owner is not None:
            raise ValueError("check() reads every conversation: use a store without an owner")
        report = await self._run(_check.run_checks(checks))
        if self.keyring is None:
            return attrs.evolve(report, unopened=report.encrypted)
        problems = list(report.problems)
        for conversation_id in await self._run(_ops.encrypted_conversations(None)):
            problems.extend(await self._sealed_problems(conversation_id))
        repaired: list[str] = []
        if repair:
            for problem in problems:
                if problem.kind == "missing_data_key":
                    with contextlib.suppress(ConversationNotFoundError):
                        await self._delete(problem.conversation_id)
                    repaired.append(problem.conversation_id)
            problems = [problem for problem in problems if problem.conversation_id not in repaired]
            await self._shred_wal(repaired, key_wal_busy=False)
        return attrs.evolve(report, problems=tuple(problems), repaired=tuple(repaired))

    async def _sealed_problems(self, conversation_id: str) -> list[_check.Problem]:
        """Decrypt everything of one encrypted conversation; what fails, as problems."""

        def problem(kind: str, detail: str = "") -> list[_check.Problem]:
            return [
                _check.Problem(
                    kind=kind,
                    conversation_id=conversation_id,
                    subject="conversation",
                    id=conversation_id,
                    detail=detail,
                )
            ]

        try:
            cipher = await self._cipher(conversation_id, ENCRYPTION)
        except DataKeyNotFoundError:
            return problem("missing_data_key")
        except KeyNotFoundError as error:
            return problem("unknown_key", f"key {error.key_id}")
        except DecryptionError:
            return problem("undecryptable", "data key")
        if cipher is None:  # not reached: the scheme passed is an encrypted one
            return []
        return await self._run(_check.sealed_problems(conversation_id, cipher))

    # Conversations

    async def create_conversation(
        self,
        *,
        model: str | None = None,
        system_instruction: str | None = None,
        generation_config: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        metadata: Mapping[str, Any] | None = None,
        branch: str = "main",
    ) -> C:
        """Create an empty conversation with one empty branch.

        The request settings are re-sent with every turn (the API keeps none of them between stateless
        requests); a turn can override each (``send(..., model=...)``). JSON as in the API reference.

        Args:
            model: The model every turn asks for (``gemini-3-flash-preview``, say).
            system_instruction: The system instruction every turn carries.
            generation_config: The API's ``generation_config`` object (temperature, thinking level, ...).
            tools: The API's ``tools`` array.
            metadata: Your own JSON object about the conversation (never sent).
            branch: Name of the first branch.

        Returns:
            The conversation, on ``branch``.

        Raises:
            CodecError: a setting has the wrong JSON type (the message names it).
            LimitExceededError: a setting nested deeper or longer than the store's ``limits`` allow.
        """
        check_branch_name(branch)
        now = utcnow()
        row = conversation_row(
            model=model,
            system_instruction=system_instruction,
            generation_config=generation_config,
            tools=tools,
            metadata=metadata,
            now=now,
            limits=self.limits,
        )
        row["owner"] = self.owner
        info = _ops.info_from_row(_AttrRow(row))
        if self.keyring is None:
            await self._run(_ops.create_conversation(row, branch, now), write=True)
            return self._conversation_class(self, info, branch, _ops.EMPTY_HEAD)
        cipher, wrapped = self.keyring.new_data_key(row["id"])
        sealed = _ops.seal_settings(row, cipher)
        if self.key_store is None:
            await self._run(_ops.create_conversation(sealed, branch, now, wrapped), write=True)
        else:
            await call_async(self.key_store.put_key, row["id"], wrapped)  # the key first, then the rows
            try:
                await self._run(_ops.create_conversation(sealed, branch, now), write=True)
            except BaseException:
                await call_async(self.key_store.delete_key, row["id"])
                raise
        return self._conversation_class(self, info, branch, _ops.EMPTY_HEAD, cipher)

    async def conversation(self, conversation_id: str, branch: str = "main") -> C:
        """Open a conversation on one of its branches.

        Raises:
            ConversationNotFoundError: no such conversation (or it is another owner's).
            BranchNotFoundError: the conversation has no branch of that name.
        """
        check_branch_name(branch)
        if not valid_id(conversation_id):
            raise ConversationNotFoundError(str(conversation_id))
        loaded = await self._run(
            _ops.load(conversation_id, branch, self.owner, inline_keys=self._inline_keys)
        )
        cipher = await self._cipher(conversation_id, loaded.row.encryption, loaded.wrapped)
        info = _ops.info_from_row(loaded.row, cipher)
        return self._conversation_class(self, info, branch, loaded.head, cipher)

    async def conversations(self, *, limit: int = 50, cursor: str | None = None) -> Page[ConversationInfo]:
        """One page of conversations, newest first.

        Every conversation is listed, readable or not. An encrypted one the store cannot read (no keyring,
        its data key shredded or wrapped by a key the keyring lacks, a wrong key, an altered row) comes
        with its settings withheld and ``ConversationInfo.unreadable`` saying why; opening it raises the
        matching ``EncryptionError``.

        Args:
            limit: Page size (1 to 1000).
            cursor: ``next_cursor`` of the previous page; None for the first page.
        """
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit: expected an integer, got {type(limit).__name__}")
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        rows, next_cursor = await self._run(_ops.list_conversations(limit, decode_cursor(cursor), self.owner))
        items = [row if isinstance(row, ConversationInfo) else await self._listed(row) for row in rows]
        return Page(items=items, next_cursor=encode_cursor(next_cursor))

    async def _listed(self, row: Any) -> ConversationInfo:
        """The record of a listed row: one broken key withholds its own conversation's settings only."""
        if row.encryption is None:
            return _ops.info_from_row(row)
        try:
            return _ops.info_from_row(row, await self._cipher(row.id, row.encryption))
        except EncryptionError as error:
            return _ops.withheld_info(row, _ops.unreadable(error))

    async def iter_conversations(self, *, page_size: int = 200) -> AsyncIterator[ConversationInfo]:
        """Every conversation, newest first, fetched a page at a time."""
        cursor: str | None = None
        while True:
            page = await self.conversations(limit=page_size, cursor=cursor)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # What front ends list: summaries, ids a person can type, what a purge would delete

    async def summaries(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        before: str | None = None,
        preview_chars: int = 200,
    ) -> Page[ConversationSummary]:
        """One page of conversation summaries, newest first: what a list of conversations shows.

        Each has the conversation's record, its shortest unique id ending (``resolve_id`` takes it back),
        its step and branch counts, its last activity and the start of its first user message (withheld,
        None, for an encrypted conversation this store cannot read). A few grouped queries a page, plus one
        read of the first message of each conversation listed.

        Args:
            limit: Page size (1 to 1000).
            cursor: ``next_cursor`` of the previous page; None for the first page.
            before: Instead of a cursor: start after this conversation (its id, or an ending of it that
                ``resolve_id`` accepts), listing older ones.
            preview_chars: At most this many characters of each first message.

        Raises:
            ConversationNotFoundError, AmbiguousIdError: ``before`` names no conversation, or several.
        """
        if before is not None:
            if cursor is not None:
                raise ValueError("pass cursor or before, not both")
            anchor = await self.resolve_id(before)
            created = await self._run(_listing.created_at(anchor))
            cursor = encode_cursor((created, anchor))
        page = await self.conversations(limit=limit, cursor=cursor)
        ids = [info.id for info in page.items]
        counted = await self._run(_listing.counts(ids))
        roots = await self._run(_listing.first_roots(ids))
        endings = await self.short_ids(ids)
        items = []
        for info in page.items:
            steps, branches, moved = counted[info.id]
            first: str | None = None
            if info.id in roots and not info.withheld:
                cipher = await self._cipher(info.id, ENCRYPTION) if info.encrypted else None
                node = await self._run(_ops.node(info.id, roots[info.id], cipher, media=False))
                first = _listing.message_text(node.data, preview_chars)
            items.append(
                _listing.ConversationSummary(
                    info=info,
                    short_id=endings[info.id],
                    steps=steps,
                    branches=branches,
                    last_activity=moved or info.created_at,
                    first_message=first,
                )
            )
        return Page(items=items, next_cursor=page.next_cursor)

    async def short_ids(self, ids: Iterable[str]) -> dict[str, str]:
        """Each conversation id's shortest ending (8 characters or more) that no other conversation's id
        this store sees ends in: what a person types, and ``resolve_id`` takes back."""
        wanted = list(ids)
        if not wanted:
            return {}
        return shortest_endings(wanted, await self._run(_listing.all_ids(self.owner)))

    async def resolve_id(self, text: str) -> str:
        """The id of the conversation whose id is ``text`` or ends in it (8 characters or more), among the
        conversations this store sees.

        Raises:
            ConversationNotFoundError: none is, or ends in it.
            AmbiguousIdError: several end in it.
        """
        if not isinstance(text, str):
            raise TypeError(f"text: expected a string, got {type(text).__name__}")
        return _listing.match_ending(text, await self._run(_listing.all_ids(self.owner)))

    async def branches(self, conversation_id: str) -> list[Branch]:
        """A conversation's branches, oldest first, without opening it (works for one this store cannot
        decrypt: names, heads and times are kept in clear).

        Raises:
            ConversationNotFoundError: no such conversation (or it is another owner's).
        """
        if not valid_id(conversation_id):
            raise ConversationNotFoundError(str(conversation_id))
        await self._run(_ops.visible(conversation_id, self.owner))
        return await self._run(_ops.list_branches(conversation_id))

    async def rename_branch(self, conversation_id: str, branch: str, new_name: str) -> None:
        """Give a branch of a conversation another name (its head and history stay as they are). A
        conversation opened on the old name no longer finds its branch.

        Raises:
            ConversationNotFoundError, BranchNotFoundError: no such conversation (of this store's owner) or
                branch.
            BranchExistsError: the conversation has a branch named ``new_name`` already.
            CodecError: ``new_name`` is not a valid branch name.
        """
        check_branch_name(branch)
        check_branch_name(new_name)
        if not valid_id(conversation_id):
            raise ConversationNotFoundError(str(conversation_id))
        await self._run(_ops.visible(conversation_id, self.owner))
        await self._run(_listing.rename_branch(conversation_id, branch, new_name, utcnow()), write=True)

    async def has_conversation(self, conversation_id: str) -> bool:
        """Whether this store holds a conversation of this id (of its owner, for a store bound to one)."""
        if not valid_id(conversation_id):
            return False
        try:
            await self._run(_ops.visible(conversation_id, self.owner))
        except ConversationNotFoundError:
            return False
        return True

    async def import_rows(
        self,
        conversation: _transfer.ConversationRows,
        *,
        skip_existing: bool = False,
        progress: Callable[[int], None] | None = None,
        allow_erased: bool = False,
    ) -> bool:
        """Write a plaintext conversation read lazily from an export file, in one transaction, a batch of
        rows at a time (memory bounded by a batch, whatever its size); ``import_conversation`` for a
        conversation held whole. A row that fails its check rolls the whole conversation back.

        Args:
            conversation: The conversation as ``read_conversations`` gives it.
            skip_existing: Leave a conversation whose id is here already as it is (return False).
            progress: Called with the number of rows written after each batch.
            allow_erased: Import it even though this store deleted a conversation of that id.

        Returns:
            True when written, False when skipped (``skip_existing`` and the id is here already).

        Raises:
            ConversationExistsError, TransferFormatError, LimitExceededError: as ``import_conversation``.
            ConversationErasedError: this store deleted it, and not ``allow_erased``.
            ValueError: the store is bound to an owner (an export names its own owners).
        """
        if self.owner is not None:
            raise ValueError("import_rows writes the owner the export names: use a store without an owner")
        op = _transfer.import_rows_ops(
            conversation,
            skip_existing=skip_existing,
            progress=progress,
            allow_erased=allow_erased,
            index=self._index,
        )
        return await self._run(op, write=True)

    async def refresh_statistics(self) -> None:
        """PostgreSQL: ``ANALYZE`` the tables, after a bulk import (before a table's first ANALYZE, the
        planner may read a long conversation's history with a hash join over all of it at every level).
        Elsewhere: nothing."""
        if self._engine.dialect.name == "postgresql":
            await self._run(_listing.analyze(), write=True)

    async def stale_conversations(self, *, older_than: timedelta | datetime) -> list[str]:
        """The ids of the conversations ``purge(older_than=...)`` would delete now, oldest first: created
        before the cutoff, with no branch moved since. Nothing is deleted.

        Raises:
            InvalidAgeError: as ``purge``.
        """
        return await self._run(_ops.stale_conversations(_cutoff(older_than), self.owner))

    # Search

    async def search(
        self,
        query: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        conversation_id: str | None = None,
        step_types: Sequence[str] | None = None,
    ) -> SearchPage:
        """Find the steps whose text holds every word of ``query``, across this store's owner's
        conversations, best first.

        What is searched: the text of user input and model output steps of plaintext conversations, as
        stored (after the redaction hook). Encrypted conversations are never indexed:
        ``SearchPage.encrypted_conversations`` counts those the search could not look into. The query is
        read as plain words (letters and digits), never as the engine's syntax: ``NEAR``, ``OR``, ``*`` or
        quotes are just text.

        Args:
            query: The words to find (at most 1,000 characters, 32 words; no control characters).
            limit: Hits a page (1 to 100).
            cursor: ``next_cursor`` of the previous page; None for the first page.
            model: Only conversations created for this model.
            since: Only steps written at or after this (aware) time.
            until: Only steps written before this (aware) time.
            conversation_id: Only this conversation.
            step_types: Only these step types (``["user_input"]``, say).

        Returns:
            A page of hits: each names its conversation, node, step type and the branches that lead through
            it, with a plain-text snippet and the offsets of the matched words in it.

        Raises:
            SearchQueryError: the query or a filter is not one a search can run (named in the error);
                nothing was read.
        """
        request = _search.search_request(
            query,
            limit=limit,
            cursor=cursor,
            model=model,
            since=since,
            until=until,
            conversation_id=conversation_id,
            step_types=step_types,
        )
        dialect = self._engine.dialect.name
        if self._routed is None:
            self._routed = dialect == "postgresql" and await self._run(_search.routed())
        op = _search.search(
            request, self.owner, dialect=dialect, language=self._search_language, routed=self._routed
        )
        return await self._run(op)

    # Export and import (the JSONL format: ``convstore export`` / ``convstore import``)

    async def export_conversation(self, conversation_id: str, *, plaintext: bool = False) -> ConversationDump:
        """Every row of one conversation, ids kept, for ``import_conversation`` into any store.

        An encrypted conversation is exported sealed: its ciphertexts as stored and its wrapped data key
        (which names the application key that wrapped it). Only a store whose keyring holds that key can
        read it; exporting it needs no keyring. With the keyring, its structure (ids, parents, order,
        branches, settings, usage) is also sealed (``dump.seal``, an HMAC with a key derived from its data
        key), so that an import refuses any change to it; without, it is exported unsealed, and its
        import warns that its structure is unverified.

        Args:
            plaintext: Decrypt an encrypted conversation and export its content in clear, as a plaintext
                conversation: whoever holds the export can then read it, and it imports unencrypted. Needs
                the keyring. Plaintext conversations are exported the same either way.

        Raises:
            ConversationNotFoundError: no such conversation (of this store's owner).
            DataKeyNotFoundError: the conversation is encrypted and its data key is gone (shredded).
            KeyringRequiredError, KeyNotFoundError, DecryptionError: ``plaintext`` and the key cannot be
                had.
        """
        if not valid_id(conversation_id):
            raise ConversationNotFoundError(str(conversation_id))
        encryption = await self._run(_ops.visible(conversation_id, self.owner))
        if encryption is not None and plaintext:
            cipher = await self._cipher(conversation_id, encryption)
            return await self._run(_transfer.export_ops(conversation_id, owner=self.owner, cipher=cipher))
        inline = encryption is not None and self.key_store is None
        dump = await self._run(_transfer.export_ops(conversation_id, owner=self.owner, inline_key=inline))
        if dump.sealed and self.key_store is not None:
            wrapped = await call_async(self.key_store.get_key, conversation_id)
            if wrapped is None:
                raise DataKeyNotFoundError(conversation_id)
            dump = attrs.evolve(dump, key=wrapped)
        if dump.sealed and self.keyring is not None and dump.key is not None:
            with contextlib.suppress(EncryptionError):  # a key the keyring lacks: exported unsealed
                cipher = await self._cipher(conversation_id, encryption, dump.key)
                if cipher is not None:
                    dump = attrs.evolve(dump, seal=cipher.structure_mac(_transfer.structure_bytes(dump)))
        return dump

    async def import_conversation(
        self,
        dump: ConversationDump,
        *,
        skip_existing: bool = False,
        progress: Callable[[int], None] | None = None,
        allow_erased: bool = False,
    ) -> bool:
        """Write an exported conversation with its ids, in one transaction, all or nothing.

        A sealed (encrypted) conversation needs, with a keyring, the application key that wrapped its data
        key: every sealed value is checked to open before anything is written, and its data key is
        re-wrapped by the active key when another one wrapped it, then kept in this store's key store. What
        opens is checked as a plaintext line is read (strict JSON within this store's ``limits``, payloads
        by the codec, token counts by its counter). A store without a keyring imports it as it is, unread
        (it could not open it either).

        Args:
            dump: From ``export_conversation``, or read from an export file.
            skip_existing: When the id is in this store already, write nothing and return False.
            progress: Called with the number of rows written after each batch.
            allow_erased: Import it even though this store deleted a conversation of that id. Without it,
                a conversation deleted here (``delete_conversation``, ``purge``) is refused: an export
                taken before the delete cannot bring it back unasked.

        Returns:
            True when written, False when skipped.

        Warns:
            UnverifiedExportWarning: a sealed conversation without its seal (exported without its keyring,
                or in format 2), or imported by a store without a keyring: its structure is unverified.

        Raises:
            ConversationExistsError: the id is in this store already (and not ``skip_existing``).
            ConversationErasedError: this store deleted it, and not ``allow_erased``.
            TransferFormatError: the dump breaks a rule of the tree.
            KeyNotFoundError, DecryptionError: the keyring cannot open the sealed conversation (nothing is
                written).
            TransferFormatError: also when a sealed conversation's seal does not match its rows (one was
                changed, added, removed or moved).
            ValueError: the conversation belongs to another owner than this store's.
        """
        if self.owner is not None and dump.conversation.get("owner") != self.owner:
            raise ValueError(f"conversation {dump.id!r} belongs to another owner than this store's")
        _transfer.check_dump(dump)
        wrapped = dump.key
        if dump.sealed and wrapped is not None and self.keyring is not None:
            cipher = self.keyring.cipher(dump.id, wrapped)
            _transfer.open_sealed(dump, cipher, limits=self.limits, counter=self.counter)
            sealed = _transfer.check_seal(dump, cipher)
            wrapped = self.keyring.rewrap(dump.id, wrapped) or wrapped
        else:
            sealed = not dump.sealed
        if not sealed:
            warnings.warn(
                UnverifiedExportWarning(
                    f"conversation {dump.id} is sealed, but its structure is not verified: "
                    + ("it has no seal" if self.keyring is not None else "this store has no keyring")
                ),
                stacklevel=2,
            )
        if not dump.sealed or wrapped is None or self.key_store is None:
            op = _transfer.import_ops(
                dump,
                skip_existing=skip_existing,
                progress=progress,
                key=wrapped,
                allow_erased=allow_erased,
                index=self._index,
            )
            return await self._run(op, write=True)
        # A key store of its own: the key first, then the rows (as create_conversation does); never over
        # the key of a conversation this store holds already.
        if await self._run(_transfer.conversation_exists(dump.id)):
            if skip_existing:
                return False
            raise _transfer.ConversationExistsError(dump.id)
        await call_async(self.key_store.put_key, dump.id, wrapped)
        try:
            op = _transfer.import_ops(dump, skip_existing=False, progress=progress, allow_erased=allow_erased)
            return await self._run(op, write=True)
        except BaseException:
            await call_async(self.key_store.delete_key, dump.id)
            raise

    async def purge(
        self, *, older_than: timedelta | datetime, on_deleted: Callable[[str], None] | None = None
    ) -> int:
        """Delete every conversation (of this store's owner) untouched for ``older_than``: created before
        the cutoff and with no branch moved since. Each is deleted as ``delete_conversation`` does, in a
        transaction that first locks it and tests again that it is still untouched: a conversation that
        receives a turn while the purge runs is kept, with the turn, and a turn that comes after its delete
        gets ``ConversationNotFoundError``. "Moved" is the time its writer stamped on the turn.

        Args:
            older_than: A positive age (``timedelta(days=30)``) or a UTC cutoff time in the past.
            on_deleted: Called with each conversation's id once its delete committed, as the purge goes
                (an interrupted purge has then told which ones it deleted).

        Returns:
            How many conversations were deleted.

        Raises:
            InvalidAgeError: ``older_than`` is zero or negative, a cutoff in the future, or a naive datetime
                (each would delete conversations being written now).
            ShredPendingError: SQLite: they were deleted, but another connection kept the WAL busy past the
                busy timeout (or the checkpoint failed: a full disk), so the ``-wal`` file still holds what
                was deleted (see ``checkpoint``).
            PurgeIncompleteError: a delete failed (a full disk, a lost connection) after others were done:
                ``error.deleted_ids`` names those, ``error.error`` the failure.
        """
        cutoff = _cutoff(older_than)
        stale = await self._run(_ops.stale_conversations(cutoff, self.owner))
        deleted: list[str] = []
        key_wal_busy = False
        # In batches, one transaction each (``_purge``); one by one when a key_store holds the keys.
        for batch in _purge.batches(stale, together=self.key_store is None):
            try:
                if self.key_store is None:
                    done = await self._run(_ops.delete_batch(batch, cutoff, self.owner), write=True)
                else:
                    outcome = await self._delete(batch[0], stale_before=cutoff)
                    done = [] if outcome == _ops.KEPT else batch
                    key_wal_busy = key_wal_busy or outcome == _ops.KEY_WAL_BUSY
            except ConversationNotFoundError:
                continue  # deleted meanwhile
            except ConvstoreError as error:
                if not deleted:
                    raise
                # Say what is gone; and still empty the WAL of it, as far as that goes.
                with contextlib.suppress(ConvstoreError):
                    await self._shred_wal(deleted, key_wal_busy=key_wal_busy)
                raise PurgeIncompleteError(deleted, error) from error
            deleted += done
            if on_deleted is not None:
                _purge.report(done, on_deleted)
        await self._shred_wal(deleted, key_wal_busy=key_wal_busy)
        return len(deleted)

    async def delete_conversation(self, conversation_id: str) -> None:
        """Delete a conversation with all its nodes and branches.

        One transaction locks the conversation, destroys an encrypted conversation's data key
        (crypto-shredding; a ``key_store``'s ``delete_key`` is called inside it), then deletes every row. An
        append that commits first is deleted with it; one that comes after gets
        ``ConversationNotFoundError``. On SQLite the WAL is then emptied into the database file and
        truncated (``checkpoint``), and ``secure_delete`` has overwritten the deleted rows there: once this
        returns, neither file holds them (nor, for a ``SQLKeyStore``, its files the key).

        Raises:
            ConversationNotFoundError: no such conversation (or it is another owner's).
            ShredPendingError: SQLite: it was deleted, but another connection kept a WAL busy past the busy
                timeout, or the checkpoint failed (a full disk: ``error.reason``), so the deleted pages are
                still in a ``-wal`` file (see ``checkpoint``); ``checkpoint()`` or the next open finishes it.
        """
        if not valid_id(conversation_id):
            raise ConversationNotFoundError(str(conversation_id))
        outcome = await self._delete(conversation_id)
        await self._shred_wal([conversation_id], key_wal_busy=outcome == _ops.KEY_WAL_BUSY)

    async def _delete(self, conversation_id: str, stale_before: datetime | None = None) -> str:
        return await self._run(
            _ops.delete_conversation(
                conversation_id,
                self.owner,
                inline_keys=self.key_store is None,
                stale_before=stale_before,
                delete_key=None if self.key_store is None else self.key_store.delete_key,
            ),
            write=True,
        )

    async def _shred_wal(self, deleted: list[str], *, key_wal_busy: bool) -> None:
        """After deletes: on SQLite, rewrite the search index without their words, then empty the WAL; or say
        that it still holds them (and why)."""
        if not deleted:
            return
        try:
            if self._engine.dialect.name == "sqlite":
                await self._run(_search.erase_deleted(), write=True)
            emptied = await checkpoint_async(self._engine)
        except DatabaseError as error:
            raise ShredPendingError(deleted, str(error)) from error
        if not emptied or key_wal_busy:
            raise ShredPendingError(deleted)

    async def checkpoint(self) -> None:
        """SQLite: copy every page of the WAL into the database file and truncate the WAL to zero bytes, as
        each delete does (a WAL that holds frames has the search index rewritten first, as a delete does:
        a shred left pending by ``ShredPendingError`` is finished whole); it waits up to the busy timeout
        for other connections' transactions to end.
        PostgreSQL: nothing (it keeps deleted rows until ``VACUUM``; see the README's Privacy section).

        Raises:
            StoreBusyError: another connection's transaction outlasted the busy timeout.
            DatabaseError: the checkpoint failed; ``error.cause`` says why (``disk_full``, say).
        """
        await self._ready()
        # A WAL left with frames may be a delete's shred left pending: its search index rewrite comes first.
        if not await checkpoint_async(self._engine, first=_search.ERASE_DELETED_SQL):
            raise StoreBusyError("another connection kept the SQLite WAL busy past the busy timeout")


def _cutoff(older_than: timedelta | datetime) -> datetime:
    """The purge cutoff of an age or a time: checked, in the past, aware."""
    if not isinstance(older_than, (datetime, timedelta)):
        raise TypeError(f"older_than: expected a timedelta or a datetime, got {type(older_than).__name__}")
    now = utcnow()
    if isinstance(older_than, datetime):
        if older_than.tzinfo is None:
            raise InvalidAgeError("older_than: pass an aware UTC datetime or a timedelta")
        if older_than > now:
            raise InvalidAgeError(
                "older_than: the cutoff is in the future; it would delete conversations being written now"
            )
        return older_than
    if older_than <= timedelta(0):
        raise InvalidAgeError(f"older_than must be a positive age, not {older_than}")
    try:
        return now - older_than
    except OverflowError:
        raise InvalidAgeError(
            f"older_than: {older_than.days} days reaches before the year 1; the oldest age is "
            f"{(now - datetime.min.replace(tzinfo=now.tzinfo)).days} days"
        ) from None


class _AttrRow:
    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        return self._values[name]


class _AsyncConversationBase:
    """The persistence half of ``convstore.AsyncConversation`` (the public class, in
    ``convstore.conversation``, documents it): one branch, its reads and appends, without the API calls."""

    def __init__(
        self,
        store: _AsyncStoreBase[Any],
        info: ConversationInfo,
        branch: str,
        head: _ops.Head,
        cipher: DataCipher | None = None,
    ) -> None:
        self._store = store
        self._info = info
        self._branch = branch
        self._head = head
        self._cipher = cipher  # the data key of an encrypted conversation; None for plaintext
        # The branch's step texts up to the head this object last read or wrote: the next history() reuses
        # them while the branch head has not moved (about the size of the history, held in memory).
        self._replay: _reads.Replay | None = None
        # Files API uris of the history this object sent lately: the pair sent in each one's place (None:
        # itself) and until when that lives; while all live beyond the margin, a turn needs no query.
        self._files: dict[str, tuple[bytes | None, datetime]] = {}

    def __repr__(self) -> str:
        return f"AsyncConversation(id={self.id!r}, branch={self._branch!r}, head={self._head.node_id!r})"

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def branch(self) -> str:
        return self._branch

    @property
    def encrypted(self) -> bool:
        """Whether the conversation is encrypted at rest."""
        return self._cipher is not None

    @property
    def head_id(self) -> str | None:
        """The head node this object last saw (None for an empty branch)."""
        return self._head.node_id

    @property
    def info(self) -> ConversationInfo:
        """The conversation's record: creation time and request settings."""
        return self._info

    @property
    def model(self) -> str | None:
        return self._info.model

    @property
    def system_instruction(self) -> str | None:
        return self._info.system_instruction

    @property
    def generation_config(self) -> Mapping[str, Any] | None:
        return self._info.generation_config

    @property
    def tools(self) -> Sequence[Mapping[str, Any]] | None:
        return self._info.tools

    @property
    def metadata(self) -> Mapping[str, Any] | None:
        return self._info.metadata

    async def refresh(self) -> None:
        """Re-read the branch head (after a ``ConflictError``, before retrying)."""
        self._head = (await self._store._run(_ops.load(self.id, self._branch, self._store.owner))).head

    async def append(self, steps: Iterable[StepLike], *, exchange_id: str | None = None) -> list[Node]:
        """Write one exchange (a user turn and the model's reply, say) at the end of the branch.

        All steps are written in one transaction with one exchange id, and the branch head moves to the last
        one by compare-and-swap, or nothing is written at all.

        Args:
            steps: Wire JSON dicts or model objects, in order. Dicts are stored exactly as given.
            exchange_id: The exchange's id (a UUID: ``str(uuid.uuid4())``), chosen before the write so
                that a retry is safe: when the conversation holds an exchange of that id already, nothing is
                written and its stored nodes are returned. Send the same exchange again with the same id
                after ``OutcomeUnknownError``. None: a new id.

        Returns:
            The new nodes, in order (or those stored before under ``exchange_id``).

        Raises:
            CodecError: a step is malformed (nothing written; the message names each field).
            InvalidExchangeError: ``steps`` is empty or a single step instead of a list, or ``exchange_id``
                is not a UUID.
            ConflictError: another writer moved the branch since this object last saw it (nothing written);
                ``refresh()`` and retry.
            ConversationNotFoundError, BranchNotFoundError: deleted meanwhile.
            OutcomeUnknownError: the connection failed during the commit: it may be written; send it again
                with the same ``exchange_id``.
        """
        store = self._store
        if exchange_id is not None and not valid_id(exchange_id):
            raise InvalidExchangeError("exchange_id: expected a UUID, such as str(uuid.uuid4())")
        prepared = prepare_exchange(steps, store.counter, store.redact, store.limits)
        return await self._append(prepared, None, exchange_id=exchange_id)

    async def _append(
        self,
        prepared: list[tuple[str, str, int]],
        exchange: Mapping[str, Any] | None,
        head: _ops.Head | None = None,
        *,
        exchange_id: str | None = None,
    ) -> list[Node]:
        """Write ``prepared`` after ``head`` (default: the head this object last saw), by compare-and-swap;
        an ``exchange_id`` stored already is returned instead (see ``append``)."""
        before = self._head if head is None else head
        append = functools.partial(
            _ops.append,
            self.id,
            self._branch,
            before,
            prepared,
            utcnow(),
            exchange,
            self._cipher,
            exchange_id=exchange_id,
            index=self._store._index,
        )
        try:
            appended = await self._store._run(append(), write=True)
        except _writes.SegmentTaken:  # another branch continued the same tip first: a segment of its own
            appended = await self._store._run(append(new_segment=True), write=True)
        self._head = appended.head
        replay = self._replay
        if replay is not None and replay.head.node_id == before.node_id == appended.nodes[0].parent_id:
            texts = [text for _, text, _ in prepared]
            self._replay = replay.extended(self._head, texts, [node.id for node in appended.nodes])
        return appended.nodes

    async def history(self, budget: TokenBudget | None = None) -> list[dict[str, Any]]:
        """The branch's steps, root first: exactly the ``input`` array of the next stateless request.

        Args:
            budget: Keep only what fits (with the system instruction and tools, which every request
                carries): whole exchanges from one that starts with a user's input, up to the head.

        Raises:
            BudgetExceededError: the newest exchange alone does not fit ``budget``.
        """
        if budget is not None:
            return json.loads(await self.history_json(budget))  # type: ignore[no-any-return]
        text = json_array(await self._history_texts())
        if codec.may_hold_surrogates(text):  # stored before lone surrogates were refused: shown as U+FFFD
            return codec.shown(json.loads(text))  # type: ignore[no-any-return]
        return json.loads(text)  # type: ignore[no-any-return]

    async def history_json(self, budget: TokenBudget | None = None) -> str:
        """``history()`` as JSON text, spliced from the stored step texts without decoding them."""
        if budget is not None:
            counter = budget.counter or self._store.counter
            fixed = settings_tokens(self._info, counter)
            return window_json(await self._window(budget, fixed_tokens=fixed, require_history=True))
        return json_array(await self._history_texts()).decode()

    async def _history_texts(self) -> list[bytes]:
        """The branch's stored step texts as UTF-8 bytes, root first (kept, with the head they end at, for
        the next read)."""
        replay = await self._store._run(_reads.history(self.id, self._branch, self._cipher, self._replay))
        self._replay, self._head = replay, replay.head
        return replay.payloads

    async def _window(
        self, budget: TokenBudget, *, fixed_tokens: int, require_history: bool
    ) -> _windows.Window:
        window = await self._store._run(
            _windows.window(self.id, self._branch, budget, fixed_tokens, require_history, self._cipher)
        )
        if window.needs_summary:
            window = await self._compact(budget, window)
        self._head = window.head
        return window

    async def _compact(self, budget: TokenBudget, window: _windows.Window) -> _windows.Window:
        """Summarise what the window drops with the budget's hook, once, and keep the summary."""
        start = window.rows[0]
        pinned = {row.id for row in window.pinned}
        dropped = [node.data for node in await self.path(start.parent_id) if node.id not in pinned]
        produced = await resolve_async(budget.compact(dropped))  # type: ignore[misc]
        prepared = prepare_wires(
            codec.normalize_steps(produced, prefix="summary"),
            budget.counter or self._store.counter,
            self._store.redact,
        )
        tokens = sum(count for _, _, count in prepared)
        if tokens > budget.summary_tokens:
            raise BudgetExceededError(
                max_input_tokens=budget.max_input_tokens,
                available_tokens=budget.summary_tokens,
                needed_tokens=tokens,
            )
        payload = "[" + ",".join(text for _, text, _ in prepared) + "]"
        await self._store._run(
            _ops.store_summary(self.id, start.id, payload, tokens, utcnow(), self._cipher), write=True
        )
        return attrs.evolve(
            window,
            summary=(payload, tokens),
            needs_summary=False,
            history_tokens=window.history_tokens + tokens,
        )

    async def nodes(self, *, media: bool = True) -> list[Node]:
        """The branch's nodes, root first.

        Args:
            media: Put back the large media strings kept apart (base64 ``data`` of 1 KiB and more). False
                reads none of them: each reads as ``"convstore-media:"`` and its hash, which
                ``media_chunks`` streams (for pages that show steps and serve their media on their own).
        """
        return await self._store._run(_reads.path(self.id, self._branch, None, self._cipher, media=media))

    async def path(self, node_id: str) -> list[Node]:
        """The nodes from the root to ``node_id``, inclusive: the history as it was at that node.

        Raises:
            NodeNotFoundError: no such node in this conversation.
        """
        if not valid_id(node_id):
            raise NodeNotFoundError(self.id, str(node_id))
        return await self._store._run(_reads.path(self.id, self._branch, node_id, self._cipher))

    async def fork(self, at: str | None = None, branch: str | None = None) -> Self:
        """Start a new branch at a node (default: this branch's head). O(1): one row; nothing is copied.

        Args:
            at: The node the new branch starts from; its history is ``path(at)``.
            branch: The new branch's name; a unique one is generated when None.

        Returns:
            The conversation on the new branch.

        Raises:
            NodeNotFoundError: ``at`` is not a node of this conversation.
            BranchExistsError: a branch of that name exists.
        """
        if at is None:
            at = self._head.node_id
        elif not valid_id(at):
            raise NodeNotFoundError(self.id, str(at))
        return await self._fork(at, branch)

    async def _fork(self, at: str | None, branch: str | None, *, before: bool = False) -> Self:
        """A new branch at node ``at`` (``before``: at its parent); None makes an empty branch."""
        name = check_branch_name(branch) if branch is not None else f"fork-{new_id()[-12:]}"
        store = self._store
        if store._routed is None and store._engine.dialect.name == "postgresql":  # Citus: two statements
            store._routed = await store._run(_search.routed())
        fork = _ops.fork(self.id, at, name, utcnow(), before=before, single=not store._routed)
        head = await store._run(fork, write=True, single=not store._routed)
        return type(self)(self._store, self._info, name, head, self._cipher)

    async def checkout(self, branch: str) -> Self:
        """The same conversation on another branch.

        Raises:
            BranchNotFoundError: the conversation has no branch of that name.
        """
        check_branch_name(branch)
        loaded = await self._store._run(_ops.load(self.id, branch, self._store.owner))
        info = _ops.info_from_row(loaded.row, self._cipher)
        return type(self)(self._store, info, branch, loaded.head, self._cipher)

    async def branches(self) -> list[Branch]:
        """Every branch of the conversation, oldest first."""
        return await self._store._run(_ops.list_branches(self.id))

    async def exchanges(self) -> list[Exchange]:
        """What the API reported for each recorded exchange along this branch (usage, interaction ids)."""
        return await self._store._run(_ops.exchanges_of_branch(self.id, self._branch))

    async def node(self, node_id: str, *, media: bool = True) -> Node:
        """One node of this conversation (``media`` as in ``nodes``).

        Raises:
            NodeNotFoundError: no such node in this conversation.
        """
        if not valid_id(node_id):
            raise NodeNotFoundError(self.id, str(node_id))
        return await self._store._run(_ops.node(self.id, node_id, self._cipher, media=media))

    async def tree(self, *, media: bool = True) -> Tree:
        """The whole tree: every node and branch of the conversation (``Tree.render()`` draws it).
        ``media`` as in ``nodes``."""
        return await self._store._run(_ops.tree(self.id, self._cipher, media=media))

    async def media_chunks(self, reference: str, *, chunk_chars: int = MEDIA_CHUNK) -> AsyncIterator[str]:
        """A media string kept apart, as pieces of its text (base64), read ``chunk_chars`` at a time: what
        a ``data`` string read with ``media=False`` stands for, without ever holding it whole. Pieces are
        multiples of 4 characters (each decodes on its own), except the last. An encrypted conversation's
        media string is stored sealed as a whole: it is read and opened whole, then given in pieces.

        Args:
            reference: The ``data`` string as read with ``media=False`` (``"convstore-media:"`` + hash).
            chunk_chars: Characters a piece (rounded down to a multiple of 4).

        Raises:
            ValueError: ``reference`` is not a media reference.
            NotFoundError: the conversation stores no such media string.
        """
        if not isinstance(reference, str) or not reference.startswith(MEDIA_REF):
            raise ValueError("reference: pass a data string read with media=False")
        digest = reference[len(MEDIA_REF) :]
        size = max(4, chunk_chars - chunk_chars % 4)
        try:
            if self._cipher is not None:
                sealed = await self._store._run(_listing.media_piece(self.id, digest, 0, None))
                text = self._cipher.open("media", digest, sealed)
                del sealed
                for start in range(0, len(text), size):
                    yield text[start : start + size]
                return
            blob = _listing.sqlite_media_pieces(self._store.engine, self.id, digest, size)
            if blob is not None:  # SQLite, synchronous: a blob handle reads the piece's pages only
                for piece in blob:
                    yield piece
                return
            start = 0
            while True:
                piece = await self._store._run(_listing.media_piece(self.id, digest, start, size))
                if piece:
                    yield piece
                if len(piece) < size:
                    return
                start += size
        except LookupError:
            raise NotFoundError(f"conversation {self.id} stores no media string {digest[:16]!r}") from None
