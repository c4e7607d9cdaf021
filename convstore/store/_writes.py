"""Writes to a conversation's tree: appends (one exchange, a compare-and-swap of the branch head), forks and
compaction summaries (operations: see ``_ops``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy import exc

from convstore._ids import new_id
from convstore.errors import (
    BranchExistsError,
    ConflictError,
    ConversationNotFoundError,
    NodeNotFoundError,
)
from convstore.model import Node
from convstore.store import _statements as st
from convstore.store._crypto import DataCipher
from convstore.store._engine import Exec, Op
from convstore.store._media import files_json, plain_digest, refs_json, split_media
from convstore.store._rows import (
    EMPTY_HEAD,
    Head,
    Row,
    missing_branch_or_conversation,
    node_from_row,
    nodes_of,
)
from convstore.store._schema import branches as b
from convstore.store._schema import conversations as c
from convstore.store._schema import nodes as n
from convstore.store._search import index_rows

__all__ = [
    "FORK_AT",
    "FORK_BEFORE",
    "FORK_EMPTY",
    "Appended",
    "append",
    "build_node_rows",
    "fork",
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


class SegmentTaken(Exception):
    """Another writer continued the head's segment first: the append is written again, at once, starting a
    segment of its own (``append(..., new_segment=True)``)."""


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
    last = nodes[-1]
    return Appended(nodes, Head(last.id, last.depth, last.total_tokens, exchange_id, rows[-1].segment_id))


@attrs.frozen
class Appended:
    """What an append wrote: the new nodes, and the branch's new head (the last of them)."""

    nodes: list[Node]
    head: Head


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
    moved = yield Exec(
        st.MOVE_HEAD,
        {
            "in_conversation": conversation_id,
            "branch": branch,
            "expected_head": head.node_id,
            "new_head": rows[-1]["id"],
            "now": now,
        },
    )
    if moved.rowcount != 1:
        check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        if check.first() is None:
            raise (yield from missing_branch_or_conversation(conversation_id, branch))
        raise ConflictError(conversation_id, branch, head.node_id)
    last = rows[-1]
    return Appended(
        [node_from_row(conversation_id, Row(row), row["payload"]) for row in rows],
        Head(last["id"], last["depth"], last["total_tokens"], last["exchange_id"], last["segment_id"]),
    )


def _fork_statement(*, before: bool, empty: bool = False) -> Any:
    """``INSERT INTO branches ... SELECT`` of the conversation's row (locked FOR KEY SHARE first, as
    ``hold_conversation`` does, so that a fork and a delete lock in one order) and the node forked at: its
    own id (a fork at it) or its parent's (``before``: an edit, a fork just before it; NULL for a root,
    an empty branch). No row when the conversation or the node is missing: nothing inserted. It returns
    the new head's depth, running total, exchange and segment, read by primary key. Every table is
    filtered on the ``conversation_id`` parameter, so a distributed database can route it to one shard."""
    cid = sa.bindparam("conversation_id", type_=c.c.id.type)
    if empty:
        source = sa.select(
            c.c.id, sa.bindparam("branch"), sa.null(), sa.bindparam("now"), sa.bindparam("now")
        )
    else:
        node = n.c.parent_id if before else n.c.id
        source = sa.select(
            c.c.id, sa.bindparam("branch"), node, sa.bindparam("now"), sa.bindparam("now")
        ).select_from(
            c.join(n, sa.and_(n.c.conversation_id == cid, n.c.id == sa.bindparam("at", type_=n.c.id.type)))
        )
    source = source.where(c.c.id == cid).with_for_update(read=True, key_share=True, of=c)

    def at_head(column: str) -> Any:
        # Written out: SQLAlchemy neither correlates a RETURNING clause's subquery with the table inserted
        # into nor, on SQLite, qualifies its columns.
        sql = f"(SELECT head.{column} FROM {n.name} AS head WHERE head.conversation_id = "  # noqa: S608 -- the schema's names
        sql += f"{b.name}.conversation_id AND head.id = {b.name}.head_id)"
        return sa.literal_column(
            sql,
            n.c[column].type,
        ).label(column)

    return (
        sa.insert(b)
        .from_select(["conversation_id", "name", "head_id", "created_at", "updated_at"], source)
        .returning(
            b.c.head_id,
            at_head("depth"),
            at_head("total_tokens"),
            at_head("exchange_id"),
            at_head("segment_id"),
        )
    )


FORK_AT = _fork_statement(before=False)
FORK_BEFORE = _fork_statement(before=True)
FORK_EMPTY = _fork_statement(before=False, empty=True)


def fork(
    conversation_id: str,
    at: str | None,
    name: str,
    now: datetime,
    *,
    before: bool = False,
    single: bool = True,
) -> Op[Head]:
    """One new branch row at ``at`` (None: an empty branch), and the new branch's head. Nothing is copied.

    Args:
        before: Fork just before ``at`` (at its parent; an empty branch for a root): an edit of ``at``.
        single: One statement (``FORK_AT``, ``FORK_BEFORE``, ``FORK_EMPTY``), which the store runs on its
            own (autocommit on PostgreSQL: one round trip). Otherwise (Citus, which plans an INSERT ...
            SELECT across shards: it waited for a block_writes move of any shard in the cluster) two: the
            conversation's lock with the node read in the same statement, then a plain INSERT of the values
            read under the lock.

    Raises:
        ConversationNotFoundError: no such conversation.
        NodeNotFoundError: ``at`` is not a node of it.
        BranchExistsError: it has a branch of that name.
    """
    if not single:
        return (yield from _fork_in_two(conversation_id, at, name, now, before=before))
    params = {"conversation_id": conversation_id, "branch": name, "at": at, "now": now}
    statement = FORK_EMPTY if at is None else FORK_BEFORE if before else FORK_AT
    try:
        row = (yield Exec(statement, params)).first()
    except exc.IntegrityError:
        raise BranchExistsError(conversation_id, name) from None
    if row is None:
        found = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
        if found.first() is None or at is None:
            raise ConversationNotFoundError(conversation_id)
        raise NodeNotFoundError(conversation_id, at)
    if row.head_id is None:
        return EMPTY_HEAD
    return Head(row.head_id, row.depth, row.total_tokens, row.exchange_id, row.segment_id)


def _fork_in_two(conversation_id: str, at: str | None, name: str, now: datetime, *, before: bool) -> Op[Head]:
    """``fork`` in two statements (see ``single``)."""
    params = {"conversation_id": conversation_id, "branch": name, "at": at, "now": now}
    if at is not None and before:
        held = (yield Exec(HOLD_BEFORE, params)).first()
        if held is None:
            raise ConversationNotFoundError(conversation_id)
        if held.node_id is None:
            raise NodeNotFoundError(conversation_id, at)
        at = held.parent_id
        params["at"] = at
    if at is None:
        yield from hold_conversation(conversation_id)
    else:
        held = (yield Exec(st.HOLD_FOR_FORK, params)).first()
        if held is None:
            raise ConversationNotFoundError(conversation_id)
        if held.node_id is None:
            raise NodeNotFoundError(conversation_id, at)
    # A plain INSERT of the values read under the lock (not INSERT ... SELECT). The node stays: nodes are
    # never deleted but with their conversation, whose lock this transaction holds.
    row = {
        "conversation_id": conversation_id,
        "name": name,
        "head_id": at,
        "created_at": now,
        "updated_at": now,
    }
    try:
        yield Exec(st.INSERT_BRANCH, row)
    except exc.IntegrityError:
        raise BranchExistsError(conversation_id, name) from None
    if at is None:
        return EMPTY_HEAD
    return Head(at, held.depth, held.total_tokens, held.exchange_id, held.segment_id)


# An edit's first statement in two (``_fork_in_two``): the conversation's lock and the parent of the node
# edited (NULL node_id: no such node).
HOLD_BEFORE = (
    sa.select(c.c.id, n.c.id.label("node_id"), n.c.parent_id)
    .select_from(
        c.outerjoin(
            n, sa.and_(n.c.conversation_id == c.c.id, n.c.id == sa.bindparam("at", type_=n.c.id.type))
        )
    )
    .where(c.c.id == sa.bindparam("conversation_id"))
    .with_for_update(read=True, key_share=True, of=c)
)


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
