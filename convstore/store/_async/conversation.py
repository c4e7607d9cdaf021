"""A conversation of the store: one branch, its reads and appends, without the API calls. Written once,
for asyncio; ``scripts/unasync.py`` generates the blocking twin in ``store/_sync/``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
from typing_extensions import Self

from convstore import codec
from convstore._ids import new_id
from convstore._wire import json_array
from convstore.budget import TokenBudget
from convstore.errors import BudgetExceededError, InvalidExchangeError, NodeNotFoundError, NotFoundError
from convstore.model import Branch, ConversationInfo, Exchange, Node, Step, Tree
from convstore.store import _listing, _ops, _reads, _windows, _writes
from convstore.store._crypto import DataCipher
from convstore.store._prepare import (
    check_branch_name,
    prepare_exchange,
    prepare_wires,
    resolve_async,
    settings_tokens,
    utcnow,
    valid_id,
    window_json,
)
from convstore.store._rows import MEDIA_REF

if TYPE_CHECKING:
    from convstore.store._async.store import _AsyncStoreBase

__all__ = ["_AsyncConversationBase"]

MEDIA_CHUNK = 4 * 1024 * 1024  # characters of base64 a media piece: 3 MiB of media
StepLike = Step | Mapping[str, Any]


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
        # Until when (``time.monotonic()``) the replay read with the branch when it was opened is what the
        # next history() builds on without a query (0: never); the write's compare-and-swap refuses it if
        # the branch moved since. Bounded, so an object kept open a while reads the branch afresh.
        self._opened_until = 0.0
        # The heads along the last append this object wrote: the head it built on, then each node it wrote
        # (each the parent of the next). Nodes never change and live as long as their conversation, so a
        # fork at one of them, or an edit of one (a fork at its parent), needs no read of the node.
        self._chain: tuple[_ops.Head, ...] = ()
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
        self._opened_until = 0.0

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
        self._head, self._opened_until, self._chain = appended.head, 0.0, appended.chain
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
        if self._replay is not None and time.monotonic() < self._opened_until:
            self._opened_until = 0.0
            return self._replay.payloads
        replay = await self._store._run(
            _reads.history(self.id, self._branch, self._cipher, self._replay), single=True
        )
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
        elif at != self._head.node_id and not valid_id(at):  # its own head is an id (read from the store)
            raise NodeNotFoundError(self.id, str(at))
        return await self._fork(at, branch)

    async def _fork(self, at: str | None, branch: str | None, *, before: bool = False) -> Self:
        """A new branch at node ``at`` (``before``: at its parent); None makes an empty branch."""
        name = check_branch_name(branch) if branch is not None else f"fork-{new_id()[-12:]}"
        store = self._store
        single = not await store._is_routed()  # Citus: two statements (INSERT ... SELECT spans shards)
        known = _ops.known_head(self._head, self._chain, at, before=before)
        if known is not None:  # the node forked at is known: no read of it
            at, before = known.node_id, False
        fork = _ops.fork(self.id, at, name, utcnow(), before=before, single=single, known=known)
        head = await store._run(fork, write=True, single=single)
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
