# Generated from convstore/store/_async/store.py by scripts/unasync.py: do not edit.
"""The store and its conversations. Written once, for asyncio, in ``store/_async/``; ``scripts/unasync.py``
generates the blocking twin in ``store/_sync/``: the two are one text, and every query, rule and mapping
lives in ``_ops``.

The store is one class made of parts by concern: ``core`` (the engine, the keys, the schema),
``maintenance`` (checks, deletes, purges), ``transfer`` (export and import) and, here, its
conversations (created, opened, listed, searched); the conversations' own class is in
``conversation``. The conversation layer, which extends both, uses them through their public members and
``access``. The reference lists the methods part by part in that order (the classes' order in the MRO,
then each one's source order).

Thin: each method checks its arguments, runs one operation from ``_ops`` in one transaction, and keeps the
branch head the conversation last saw, which is what the next ``append`` compares and swaps against.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from convstore._ids import shortest_endings
from convstore.errors import ConversationNotFoundError, EncryptionError
from convstore.model import Branch, ConversationInfo, Page, SearchPage
from convstore.store import _listing, _ops, _search
from convstore.store._crypto import ENCRYPTION
from convstore.store._listing import ConversationSummary
from convstore.store._prepare import (
    call,
    check_branch_name,
    conversation_row,
    decode_cursor,
    encode_cursor,
    utcnow,
    valid_id,
)
from convstore.store._sync.conversation import _ConversationBase
from convstore.store._sync.maintenance import _Maintenance
from convstore.store._sync.transfer import _Transfer

__all__ = ["_ConversationBase", "_StoreBase"]

C = TypeVar("C", bound="_ConversationBase")
# How long after a branch is opened its first history() or turn builds on what the open read with it.
OPENED_FRESH_SECONDS = 1.0


class _StoreBase(_Transfer, _Maintenance, Generic[C]):
    """The persistence half of ``convstore.Store`` (the public class, in ``convstore.conversation``,
    documents it): every method but the conversations' API calls. Private: no code outside convstore
    names it, and ``C`` is the class its conversations are opened as."""

    # The class conversations are opened as (``convstore.Conversation``).
    _conversation_class: type[C]

    # Conversations

    def create_conversation(
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
            self._run(_ops.create_conversation(row, branch, now), write=True)
            return self._conversation_class(self, info, branch, _ops.EMPTY_HEAD)
        cipher, wrapped = self.keyring.new_data_key(row["id"])
        sealed = _ops.seal_settings(row, cipher)
        if self.key_store is None:
            self._run(_ops.create_conversation(sealed, branch, now, wrapped), write=True)
        else:
            call(self.key_store.put_key, row["id"], wrapped)  # the key first, then the rows
            try:
                self._run(_ops.create_conversation(sealed, branch, now), write=True)
            except BaseException:
                call(self.key_store.delete_key, row["id"])
                raise
        return self._conversation_class(self, info, branch, _ops.EMPTY_HEAD, cipher)

    def conversation(self, conversation_id: str, branch: str = "main") -> C:
        """Open a conversation on one of its branches.

        A short plaintext branch (fewer than 256 steps) is read whole with its record, in the same
        batch (one round trip on PostgreSQL): a ``history()`` or turn within a second of the open
        builds on the branch as it was opened, and if another writer moved it meanwhile, that turn's write
        is refused (``ConflictError``, nothing written) as when it moves during the call. Later, the branch
        is read afresh.

        Raises:
            ConversationNotFoundError: no such conversation (or it is another owner's).
            BranchNotFoundError: the conversation has no branch of that name.
        """
        check_branch_name(branch)
        if not valid_id(conversation_id):
            raise ConversationNotFoundError(str(conversation_id))
        opened = self._run(
            _ops.open_branch(conversation_id, branch, self.owner, inline_keys=self._inline_keys), single=True
        )
        loaded = opened.loaded
        cipher = self._cipher(conversation_id, loaded.row.encryption, loaded.wrapped)
        info = _ops.info_from_row(loaded.row, cipher)
        conversation = self._conversation_class(self, info, branch, loaded.head, cipher)
        if opened.replay is not None:  # built on by the next history() or turn, if it comes soon
            conversation._replay = opened.replay
            conversation._opened_until = time.monotonic() + OPENED_FRESH_SECONDS
        return conversation

    def conversations(self, *, limit: int = 50, cursor: str | None = None) -> Page[ConversationInfo]:
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
        rows, next_cursor = self._run(_ops.list_conversations(limit, decode_cursor(cursor), self.owner))
        items = [row if isinstance(row, ConversationInfo) else self._listed(row) for row in rows]
        return Page(items=items, next_cursor=encode_cursor(next_cursor))

    def _listed(self, row: Any) -> ConversationInfo:
        """The record of a listed row: one broken key withholds its own conversation's settings only."""
        if row.encryption is None:
            return _ops.info_from_row(row)
        try:
            return _ops.info_from_row(row, self._cipher(row.id, row.encryption))
        except EncryptionError as error:
            return _ops.withheld_info(row, _ops.unreadable(error))

    def iter_conversations(self, *, page_size: int = 200) -> Iterator[ConversationInfo]:
        """Every conversation, newest first, fetched a page at a time."""
        cursor: str | None = None
        while True:
            page = self.conversations(limit=page_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # What front ends list: summaries, ids a person can type, what a purge would delete

    def summaries(
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
            anchor = self.resolve_id(before)
            created = self._run(_listing.created_at(anchor))
            cursor = encode_cursor((created, anchor))
        page = self.conversations(limit=limit, cursor=cursor)
        ids = [info.id for info in page.items]
        counted = self._run(_listing.counts(ids))
        roots = self._run(_listing.first_roots(ids))
        endings = self.short_ids(ids)
        items = []
        for info in page.items:
            steps, branches, moved = counted[info.id]
            first: str | None = None
            if info.id in roots and not info.withheld:
                cipher = self._cipher(info.id, ENCRYPTION) if info.encrypted else None
                node = self._run(_ops.node(info.id, roots[info.id], cipher, media=False))
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

    def short_ids(self, ids: Iterable[str]) -> dict[str, str]:
        """Each conversation id's shortest ending (8 characters or more) that no other conversation's id
        this store sees ends in: what a person types, and ``resolve_id`` takes back."""
        wanted = list(ids)
        if not wanted:
            return {}
        return shortest_endings(wanted, self._run(_listing.all_ids(self.owner)))

    def resolve_id(self, text: str) -> str:
        """The id of the conversation whose id is ``text`` or ends in it (8 characters or more), among the
        conversations this store sees.

        Raises:
            ConversationNotFoundError: none is, or ends in it.
            AmbiguousIdError: several end in it.
        """
        if not isinstance(text, str):
            raise TypeError(f"text: expected a string, got {type(text).__name__}")
        return _listing.match_ending(text, self._run(_listing.all_ids(self.owner)))

    def branches(self, conversation_id: str) -> list[Branch]:
        """A conversation's branches, oldest first, without opening it (works for one this store cannot
        decrypt: names, heads and times are kept in clear).

        Raises:
            ConversationNotFoundError: no such conversation (or it is another owner's).
        """
        if not valid_id(conversation_id):
            raise ConversationNotFoundError(str(conversation_id))
        self._run(_ops.visible(conversation_id, self.owner))
        return self._run(_ops.list_branches(conversation_id))

    def rename_branch(self, conversation_id: str, branch: str, new_name: str) -> None:
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
        self._run(_ops.visible(conversation_id, self.owner))
        self._run(_listing.rename_branch(conversation_id, branch, new_name, utcnow()), write=True)

    def has_conversation(self, conversation_id: str) -> bool:
        """Whether this store holds a conversation of this id (of its owner, for a store bound to one)."""
        if not valid_id(conversation_id):
            return False
        try:
            self._run(_ops.visible(conversation_id, self.owner))
        except ConversationNotFoundError:
            return False
        return True

    # Search

    def search(
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
        candidates: int | None = None,
    ) -> SearchPage:
        """Find the steps whose text holds every word of ``query``, across this store's owner's
        conversations, best first among the newest ``candidates`` matches.

        What is searched: the text of user input and model output steps of plaintext conversations, as
        stored (after the redaction hook). Encrypted conversations are never indexed:
        ``SearchPage.encrypted_conversations`` counts those the search could not look into. The query is
        read as plain words (letters and digits), never as the engine's syntax: ``NEAR``, ``OR``, ``*`` or
        quotes are just text.

        The order: the newest ``candidates`` matching steps (1,000 by default; in the order they were
        indexed, which is the order they were written but for imports) within the filters, ranked by
        relevance, best first. A page's work is bounded by ``candidates`` whatever the query: a word in
        every step costs what a word in 1,000 steps does, and a hit older than the newest ``candidates``
        matches is not found (add a word or a filter, ``until`` say, or raise ``candidates``). Pages go at
        most ``candidates`` hits deep; the first page fixes the candidates (steps indexed after it are not
        among them), so that no hit shows twice and none is skipped across pages.

        Args:
            query: The words to find (at most 1,000 characters, 32 words; no control characters).
            limit: Hits a page (1 to 100).
            cursor: ``next_cursor`` of the previous page; None for the first page.
            model: Only conversations created for this model.
            since: Only steps written at or after this (aware) time.
            until: Only steps written before this (aware) time.
            conversation_id: Only this conversation.
            step_types: Only these step types (``["user_input"]``, say).
            candidates: How many of the newest matches are ranked (1 to 100,000; None: 1,000, or with a
                ``cursor``, the first page's).

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
            candidates=candidates,
        )
        dialect = self._engine.dialect.name
        routed = self._is_routed()
        language = self._search_language
        op = _search.search(request, self.owner, dialect=dialect, language=language, routed=routed)
        # Each statement may see its own snapshot (``_search.search`` says why): no BEGIN on SQLite.
        return self._run(op, single=True)


class _AttrRow:
    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        return self._values[name]
