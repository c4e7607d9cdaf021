"""What the store's writes (``_ops``) and reads (``_reads``) share: the head a writer builds on, node rows
mapped to model objects, and payloads put back together (opened, media strings restored).

Plain functions and small operations with no policy of their own; ``_ops`` and ``_reads`` both import this
module and never each other's internals (``_ops`` may call ``_reads``, never the reverse).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from convstore._ids import canonical_id
from convstore._uris import FilePosition, file_uris
from convstore.errors import BranchNotFoundError, ConversationNotFoundError, CorruptionError
from convstore.model import Node
from convstore.store import _statements as st
from convstore.store._crypto import DataCipher
from convstore.store._engine import Exec, Op
from convstore.store._media import join_media, join_media_utf8, stored_hashes

__all__ = [
    "EMPTY_HEAD",
    "MEDIA_REF",
    "Head",
    "Replay",
    "Row",
    "json_or_none",
    "missing_branch_or_conversation",
    "node_from_row",
    "nodes_of",
    "payload_texts",
    "put_back_media",
]


@attrs.frozen
class Head:
    """Where a writer believes a branch head is: the CAS's expected value, and what new rows build on.

    ``segment_id`` is the head node's segment (see ``_reads``): an append after the head continues it when
    the head is still its segment's last node. None for an empty branch (and, for a head built without it,
    the next append simply starts a segment of its own).
    """

    node_id: str | None
    depth: int  # -1 for an empty branch, so the first step gets depth 0
    total_tokens: int
    exchange_id: str | None = None
    segment_id: str | None = None


EMPTY_HEAD = Head(None, -1, 0)


class Row:
    """Attribute access over a row dict, so one mapper serves rows read and rows written."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    @property
    def _mapping(self) -> Mapping[str, Any]:  # as a SQLAlchemy Row has it
        return self._values

    def __getattr__(self, name: str) -> Any:
        return self._values[name]


def node_from_row(conversation_id: str, row: Any, text: str) -> Node:
    """The node of a row; ``text``: its payload as written (opened, media put back)."""
    return Node(
        id=row.id,
        conversation_id=conversation_id,
        parent_id=row.parent_id,
        depth=row.depth,
        exchange_id=row.exchange_id,
        type=row.type,
        token_count=row.token_count,
        total_tokens=row.total_tokens,
        created_at=row.created_at,
        raw_json=text,
    )


MEDIA_REF = "convstore-media:"  # what a media string kept apart reads as without its media: this + its hash


def payload_texts(
    conversation_id: str, rows: Sequence[Any], cipher: DataCipher | None, *, media: bool = True
) -> Op[list[str]]:
    """The payloads of node rows read, as written: opened when sealed, media put back (without ``media``,
    each media string kept apart reads as ``MEDIA_REF`` and its hash, and none is read)."""
    if cipher is None:
        texts = [row.payload for row in rows]
    else:
        texts = [cipher.open("node", row.id, row.payload) for row in rows]
    if not media:
        for index, row in enumerate(rows):
            if row.media is not None:
                texts[index] = join_media(texts[index], row.media, MEDIA_REF.__add__)
        return texts
    yield from put_back_media(conversation_id, texts, [row.media for row in rows], rows, cipher)
    return texts


def nodes_of(
    conversation_id: str, rows: Sequence[Any], cipher: DataCipher | None, *, media: bool = True
) -> Op[list[Node]]:
    """The nodes of rows read with every node column."""
    texts = yield from payload_texts(conversation_id, rows, cipher, media=media)
    return [node_from_row(conversation_id, row, text) for row, text in zip(rows, texts, strict=True)]


_MEDIA_BATCH = 500  # hashes per lookup, well inside every driver's parameter limit


def put_back_media(
    conversation_id: str,
    texts: list[str] | list[bytes],
    refs: Sequence[str | None],
    rows: Sequence[Any],
    cipher: DataCipher | None,
) -> Op[None]:
    """Put the media strings back into the payload ``texts`` of ``rows`` (in place), ``refs`` being their
    ``media`` columns: one lookup for all. ``texts`` may be the payloads' UTF-8 bytes (a replay)."""
    if not any(refs):
        return
    pending = [(index, ref) for index, ref in enumerate(refs) if ref is not None]
    hashes = list(dict.fromkeys(digest for _, ref in pending for digest in stored_hashes(ref)))
    found: dict[str, str] = {}
    for start in range(0, len(hashes), _MEDIA_BATCH):
        params = {"conversation_id": conversation_id, "hashes": hashes[start : start + _MEDIA_BATCH]}
        for row in (yield Exec(st.MEDIA, params)):
            found[row.hash] = row.data if cipher is None else cipher.open("media", row.hash, row.data)
    for index, ref in pending:
        try:
            text = texts[index]
            if isinstance(text, bytes):
                texts[index] = join_media_utf8(text, ref, found.__getitem__)  # type: ignore[call-overload]
            else:
                texts[index] = join_media(text, ref, found.__getitem__)  # type: ignore[call-overload]
        except KeyError:
            raise CorruptionError(
                f"node {canonical_id(rows[index].id)} names a media string that is not stored",
                conversation_id,
            ) from None


def missing_branch_or_conversation(conversation_id: str, branch: str) -> Op[Exception]:
    """After a statement matched nothing: which of the two is gone."""
    result = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
    if result.first() is None:
        return ConversationNotFoundError(conversation_id)
    return BranchNotFoundError(conversation_id, branch)


def json_or_none(text: str | None, conversation_id: str = "", field: str = "") -> Any:
    """A stored setting's JSON text; text that is not JSON (ciphertext of a row whose ``encryption`` was
    cleared, say) is a ``CorruptionError`` naming the field, never the text."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise CorruptionError(
            f"the stored {field} setting is not JSON text (sealed, with the row's encryption cleared?)",
            conversation_id,
        ) from None


@attrs.frozen
class Replay:
    """The step texts of a branch from its root to ``head``, as a conversation last read or wrote them: the
    UTF-8 bytes of each step's JSON, what a request sends.

    Nodes are immutable, so while the branch head is still ``head`` these are exactly its history: a
    conversation keeps them and the next ``history`` checks only the head (one primary-key lookup)
    instead of reading the whole branch again.
    """

    head: Head
    payloads: list[bytes]
    # ``(index, node id, uris)`` of each payload that names a Files API uri (the nodes' ``files`` column,
    # with them): a replay adapts these and only these (``convstore._uris``).
    files: tuple[FilePosition, ...] = ()
    # The earliest recorded expiry of the conversation's files when it was read (None: none, or not read).
    files_fresh: datetime | None = None

    def extended(self, head: Head, texts: Sequence[str], node_ids: Sequence[str] = ()) -> Replay:
        start = len(self.payloads)
        ids: Sequence[str | None] = node_ids or [None] * len(texts)
        added = tuple(
            (start + i, node, tuple(uris))
            for i, (text, node) in enumerate(zip(texts, ids, strict=True))
            if (uris := file_uris(text))
        )
        fresh = self.files_fresh if not added else None  # new uris: not covered by the bound read
        return Replay(head, [*self.payloads, *(text.encode() for text in texts)], self.files + added, fresh)
