"""Writes to a conversation's tree: appends (one exchange, a compare-and-swap of the branch head) and
compaction summaries (forks: ``_forks``) (operations: see ``_ops``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exc

from convstore._ids import new_id
from convstore.errors import (
    ConversationNotFoundError,
)
from convstore.store import _statements as st
from convstore.store._batched import Appended, SegmentTaken, batch_of, guard_of, move_head, moved_to
from convstore.store._crypto import DataCipher
from convstore.store._engine import Batch, Exec, Op, Refused
from convstore.store._media import files_json, plain_digest, refs_json, split_media
from convstore.store._rows import (
    Head,
    nodes_of,
)
from convstore.store._search import index_rows

__all__ = [
    "Appended",
    "SegmentTaken",
    "append",
    "build_node_rows",
    "hold_conversation",
    "store_summary",
    "stored_rows",
    "write_media",
]


def stored_rows(
    rows: Sequence[dict[str, Any]], cipher: DataCipher | None
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Node rows as they are written, and the media strings they name by hash (see ``_media``): each
    payload with its large media strings cut out, then sealed when ``cipher`` is given."""
    stored = []
    blobs: dict[str, str] = {}
    digest = plain_digest if cipher is None else cipher.media_digest
    for row in rows:
        text, found = split_media(row["payload"])
        if not found and cipher is None:
            stored.append(row)
            continue
        refs = None
        if found:
            hashes = [digest(content) for _, content in found]
            blobs.update(zip(hashes, (content for _, content in found), strict=True))
            refs = refs_json([offset for offset, _ in found], hashes)
        payload = text if cipher is None else cipher.seal("node", row["id"], text)
        stored.append({**row, "payload": payload, "media": refs})
    return stored, blobs


def write_media(conversation_id: str, blobs: Mapping[str, str], cipher: DataCipher | None) -> Op[None]:
    """Store the media strings the conversation does not hold yet (one concurrent writer's copy wins)."""
    if not blobs:
        return
    params = {"conversation_id": conversation_id, "hashes": list(blobs)}
    held = {row.hash for row in (yield Exec(st.MEDIA_STORED, params))}
    missing = [
        {
            "conversation_id": conversation_id,
            "hash": digest,
            "data": content if cipher is None else cipher.seal("media", digest, content),
        }
        for digest, content in blobs.items()
        if digest not in held
    ]
    if missing:
        yield Exec(st.INSERT_MEDIA, missing)


def build_node_rows(
    conversation_id: str,
    head: Head,
    steps: Sequence[tuple[str, str, int]],
    now: datetime,
    *,
    continues: bool = False,
    exchange_id: str | None = None,
) -> list[dict[str, Any]]:
    """Rows for one exchange appended after ``head``: a chain of parent pointers, depths, running totals and
    one segment (see ``_reads``).

    Args:
        steps: ``(type, payload JSON text, token count)`` for each step, in order.
        continues: The head is its segment's last node (no node follows it there): the first row continues
            ``head.segment_id``. Otherwise (an empty branch, a head something follows already: a fork or
            edit point) the first row starts a segment of its own. The exchange's later rows continue it.
        exchange_id: The exchange's id, chosen by the caller (a new one when None).
    """
    exchange_id = exchange_id or new_id()
    rows = []
    parent, depth, total = head.node_id, head.depth, head.total_tokens
    segment = head.segment_id if continues and head.node_id is not None else None
    for step_type, payload, count in steps:
        node_id = new_id()
        depth += 1
        total += count
        segment = segment or node_id
        rows.append(
            {
                "conversation_id": conversation_id,
                "id": node_id,
                "parent_id": parent,
                "depth": depth,
                "exchange_id": exchange_id,
                "type": step_type,
                "token_count": count,
                "total_tokens": total,
                "created_at": now,
                "payload": payload,
                "media": None,
                "files": files_json(payload),
                "segment_id": segment,
            }
        )
        parent = node_id
    return rows


def hold_conversation(conversation_id: str) -> Op[None]:
    """A write's first statement: a KEY SHARE lock on the conversation row (PostgreSQL), which a delete's
    FOR UPDATE waits for and which waits for a delete. Taken first, before any row the write touches (a
    parent node, a branch), so a write and a delete lock in the same order and never deadlock; the foreign
    key checks take the same lock again later, but in an order PostgreSQL does not promise.

    Raises:
        ConversationNotFoundError: it was deleted.
    """
    found = yield Exec(st.HOLD_CONVERSATION, {"conversation_id": conversation_id})
    if found.first() is None:
        raise ConversationNotFoundError(conversation_id)


def _at_tip(conversation_id: str, head: Head, exchange_id: str | None = None) -> Op[tuple[bool, bool]]:
    """Take the write's first lock (``hold_conversation``'s) and say whether ``head`` is its segment's last
    node, so that an exchange appended after it continues the segment.

    SQLite serialises writers (BEGIN IMMEDIATE), so the answer is final. On PostgreSQL two transactions
    appending after one tip on two branches may both see no successor; the unique index (segment_id,
    conversation_id, depth) lets one of them continue the segment, and the other's insert fails (once the
    first commits): ``append`` raises ``SegmentTaken`` and the store writes that exchange again in a new
    segment. Optimistic, so an append costs no statement more than before segments in the usual case.

    With ``exchange_id``, the same statement also says whether that exchange is stored already.

    Returns:
        (whether the head is its segment's tip, whether the exchange is stored already).

    Raises:
        ConversationNotFoundError: it was deleted.
    """
    params = {
        "conversation_id": conversation_id,
        "segment_id": head.segment_id,
        "depth": head.depth,
    }
    if exchange_id is None:
        found = yield Exec(st.HOLD_AT_TIP, params)
    else:
        found = yield Exec(st.HOLD_AT_TIP_FOR_EXCHANGE, {**params, "exchange_id": exchange_id})
    row = found.first()
    if row is None:
        raise ConversationNotFoundError(conversation_id)
    tip = head.node_id is not None and head.segment_id is not None and not row.continued
    return tip, exchange_id is not None and bool(row.done)


def _stored_exchange(conversation_id: str, exchange_id: str, cipher: DataCipher | None) -> Op[Appended]:
    """An exchange stored already, as its append returned it (the retry of an append whose outcome was
    unknown)."""
    result = yield Exec(st.EXCHANGE_NODES, {"conversation_id": conversation_id, "exchange_id": exchange_id})
    rows = result.all()
    nodes = yield from nodes_of(conversation_id, rows, cipher)
    chain = tuple(
        Head(node.id, node.depth, node.total_tokens, exchange_id, row.segment_id)
        for node, row in zip(nodes, rows, strict=True)
    )  # the head it was appended after is not read: not in the chain
    return Appended(nodes, chain)


def append(  # noqa: PLR0917 -- an internal operation; every caller passes all six
    conversation_id: str,
    branch: str,
    head: Head,
    steps: Sequence[tuple[str, str, int]],
    now: datetime,
    exchange: Mapping[str, Any] | None = None,
    cipher: DataCipher | None = None,
    *,
    new_segment: bool = False,
    exchange_id: str | None = None,
    index: str | None = None,
) -> Op[Appended]:
    """Write one exchange after ``head`` and move the branch to its last step, all or nothing.

    Statements: ``HOLD_AT_TIP``, the media strings not stored yet (two, when there are any), the nodes (one
    executemany), their search index rows (one executemany, when indexed), the exchange record (when given)
    and the compare-and-swap of the branch head.

    Args:
        exchange: The exchange's row (interaction id, usage...) without its keys; None writes no row.
        cipher: Seals the payloads of an encrypted conversation (each bound to its node id).
        new_segment: Start a segment even after a tip (the retry after ``SegmentTaken``).
        exchange_id: The exchange's id, chosen before the write: when the conversation holds that exchange
            already (an append sent again after an unknown outcome), nothing is written and the stored
            exchange is returned, wherever its branch is now.
        index: The text search configuration to index the steps' text with (see ``_search``); None writes
            no index rows. Never used with ``cipher``: an encrypted conversation is not indexed.

    Raises:
        SegmentTaken: another writer continued the head's segment first (PostgreSQL); nothing written.
    """
    if not new_segment:
        # The usual case in one batch (one round trip on PostgreSQL, then the commit): the head is its
        # segment's last node, the exchange is new, no media to store. The first statement still takes the
        # lock and checks both, and the batch is undone when a guess was wrong (``SegmentTaken``).
        guess = head.node_id is not None and head.segment_id is not None
        rows = build_node_rows(conversation_id, head, steps, now, continues=guess, exchange_id=exchange_id)
        stored, blobs = stored_rows(rows, cipher)
        if not blobs:
            batch = batch_of(
                conversation_id, branch, head, rows, stored, now, exchange, exchange_id, index, cipher
            )
            try:
                results = yield Batch(batch, guard_of(conversation_id, branch, rows, exchange_id))
            except (exc.IntegrityError, Refused):
                raise SegmentTaken from None
            found = results[0].first()
            if found is None or (exchange_id is not None and found.done) or (guess and found.continued):
                raise SegmentTaken
            return (yield from moved_to(conversation_id, branch, head, rows, results[-1]))
    tip, done = yield from _at_tip(conversation_id, head, exchange_id)
    if done:
        assert exchange_id is not None  # noqa: S101 -- done is only found for a named exchange
        return (yield from _stored_exchange(conversation_id, exchange_id, cipher))
    continues = tip and not new_segment
    rows = build_node_rows(conversation_id, head, steps, now, continues=continues, exchange_id=exchange_id)
    stored, blobs = stored_rows(rows, cipher)
    try:
        yield from write_media(conversation_id, blobs, cipher)
        yield Exec(st.INSERT_NODES, stored)
        if index is not None and cipher is None:
            entries = index_rows(conversation_id, rows, index)
            if entries:
                yield Exec(st.INSERT_SEARCH, entries)
        if exchange is not None:
            yield Exec(
                st.INSERT_EXCHANGE,
                {
                    **exchange,
                    "conversation_id": conversation_id,
                    "exchange_id": rows[0]["exchange_id"],
                    "created_at": now,
                },
            )
    except exc.IntegrityError as error:
        if continues and "segment_id" in str(error.orig):
            raise SegmentTaken from None  # another writer continued the segment after the same tip
        # The conversation (and so the head node) was deleted under us.
        raise ConversationNotFoundError(conversation_id) from None
    moved = yield move_head(conversation_id, branch, head, rows, now)
    return (yield from moved_to(conversation_id, branch, head, rows, moved))


def store_summary(  # noqa: PLR0917 -- an internal operation; every caller passes all of it
    conversation_id: str,
    node_id: str,
    payload: str,
    token_count: int,
    now: datetime,
    cipher: DataCipher | None = None,
) -> Op[None]:
    """Keep a compaction summary for a window start; a concurrent writer's identical key wins quietly."""
    row = {
        "conversation_id": conversation_id,
        "node_id": node_id,
        "payload": payload if cipher is None else cipher.seal("summary", node_id, payload),
        "token_count": token_count,
        "created_at": now,
    }
    yield from hold_conversation(conversation_id)
    try:
        yield Exec(st.INSERT_SUMMARY, row)
    except exc.IntegrityError:
        return
