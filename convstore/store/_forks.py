"""Forks and edits: a new branch row at a node, or at its parent (operations: see ``_ops``). Nothing is
copied: a branch is a name and a head."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from convstore._ids import canonical_id
from convstore.errors import BranchExistsError, ConversationNotFoundError, NodeNotFoundError
from convstore.store import _statements as st
from convstore.store._engine import Exec, Op, compile_once
from convstore.store._rows import EMPTY_HEAD, Head
from convstore.store._schema import branches as b
from convstore.store._schema import conversations as c
from convstore.store._schema import nodes as n
from convstore.store._writes import hold_conversation

__all__ = ["FORK_AT", "FORK_BEFORE", "FORK_KNOWN", "HOLD_BEFORE", "fork", "known_head"]


def _locked_conversation(*columns: Any) -> Any:
    """``SELECT columns FROM conversations WHERE id = :conversation_id`` (with whatever it joins), its row
    locked FOR KEY SHARE, as ``hold_conversation`` locks it, so that a fork and a delete lock in one order."""
    return sa.select(c.c.id, sa.bindparam("branch"), *columns, sa.bindparam("now"), sa.bindparam("now"))


def _fork_statement(*, before: bool) -> Any:
    """``INSERT INTO branches ... SELECT`` of the conversation's row (locked, ``_locked_conversation``) and
    the node forked at: its own id (a fork at it) or its parent's (``before``: an edit, a fork just before
    it; NULL for a root, an empty branch). No row when the conversation or the node is missing: nothing
    inserted. It returns the new head in one text (``_HEAD_FIELDS``, NULL for an empty branch), read by
    primary key in one subquery: one lookup of the node, where a column each took four. Every table is
    filtered on the ``conversation_id`` parameter, so a distributed database can route it to one shard."""
    cid = sa.bindparam("conversation_id", type_=c.c.id.type)
    node = n.c.parent_id if before else n.c.id
    source = (
        _locked_conversation(node)
        .select_from(
            c.join(n, sa.and_(n.c.conversation_id == cid, n.c.id == sa.bindparam("at", type_=n.c.id.type)))
        )
        .where(c.c.id == cid)
        .with_for_update(read=True, key_share=True, of=c)
    )
    # Written out: SQLAlchemy neither correlates a RETURNING clause's subquery with the table inserted into
    # nor, on SQLite, qualifies its columns. segment_id is NULL on SQLite for rows older than its migration.
    texts = [f"CAST(head.{name} AS VARCHAR)" for name in _HEAD_FIELDS]
    texts[-1] = f"COALESCE({texts[-1]}, '')"  # segment_id
    fields = " || ',' || ".join(texts)
    sql = f"(SELECT {fields} FROM {n.name} AS head WHERE head.conversation_id = "  # noqa: S608 -- the schema's names
    sql += f"{b.name}.conversation_id AND head.id = {b.name}.head_id)"
    return (
        sa.insert(b)
        .from_select(["conversation_id", "name", "head_id", "created_at", "updated_at"], source)
        .returning(sa.literal_column(sql, sa.String()).label("head"))
    )


# The new head's columns, in the order ``FORK_AT`` and ``FORK_BEFORE`` return them (comma-separated text).
_HEAD_FIELDS = ("id", "depth", "total_tokens", "exchange_id", "segment_id")


def _head_from_text(text: str | None) -> Head:
    """The head a fork statement returned (``_HEAD_FIELDS`` joined by commas; None: an empty branch)."""
    if text is None:
        return EMPTY_HEAD
    node_id, depth, total, exchange_id, segment_id = text.split(",")
    return Head(
        canonical_id(node_id),
        int(depth),
        int(total),
        canonical_id(exchange_id),
        canonical_id(segment_id) if segment_id else None,
    )


FORK_AT = _fork_statement(before=False)
FORK_BEFORE = _fork_statement(before=True)
# A fork at a head the caller knows (its own branch's: a node of the conversation, whose depth, total,
# exchange and segment never change) or an empty branch (``at`` NULL): the conversation's row locked and the
# branch row inserted, nothing read back (the row count says whether the conversation was there). The
# foreign key of (conversation_id, head_id) still checks the node.
FORK_KNOWN = (
    sa.insert(b)
    .from_select(
        ["conversation_id", "name", "head_id", "created_at", "updated_at"],
        _locked_conversation(sa.bindparam("at", type_=b.c.head_id.type))
        .where(c.c.id == sa.bindparam("conversation_id", type_=c.c.id.type))
        .with_for_update(read=True, key_share=True, of=c),
    )
    # SQLAlchemy keeps an INSERT's row count only when asked (the driver's path reads it anyway).
    .execution_options(preserve_rowcount=True)
)


def known_head(head: Head, chain: Sequence[Head], at: str | None, *, before: bool) -> Head | None:
    """The head a fork at ``at`` (``before``: at its parent) starts from, when a conversation object knows
    it without reading the node: its own branch's ``head``, or a node along its last append (``chain``,
    each the parent of the next); then the fork is one insert (``FORK_KNOWN``). None: the node is read."""
    if at is None:
        return None
    if not before:
        if at == head.node_id:
            return head
        return next((known for known in chain if known.node_id == at), None)
    return next((parent for parent, known in itertools.pairwise(chain) if known.node_id == at), None)


def fork(
    conversation_id: str,
    at: str | None,
    name: str,
    now: datetime,
    *,
    before: bool = False,
    single: bool = True,
    known: Head | None = None,
) -> Op[Head]:
    """One new branch row at ``at`` (None: an empty branch), and the new branch's head. Nothing is copied.

    Args:
        before: Fork just before ``at`` (at its parent; an empty branch for a root): an edit of ``at``.
        single: One statement (``FORK_AT``, ``FORK_BEFORE``, ``FORK_KNOWN``), which the store runs on its
            own (autocommit on PostgreSQL: one round trip). Otherwise (Citus, which plans an INSERT ...
            SELECT across shards: it waited for a block_writes move of any shard in the cluster) two: the
            conversation's lock with the node read in the same statement, then a plain INSERT of the values
            read under the lock.
        known: ``at``'s head as the caller read it from this conversation (a fork at its own branch's head,
            not ``before``): the node is not read again (``FORK_KNOWN``), since a node's depth, total,
            exchange and segment never change and it lives as long as its conversation.

    Raises:
        ConversationNotFoundError: no such conversation.
        NodeNotFoundError: ``at`` is not a node of it.
        BranchExistsError: it has a branch of that name.
    """
    if not single:
        return (yield from _fork_in_two(conversation_id, at, name, now, before=before))
    params = {"conversation_id": conversation_id, "branch": name, "at": at, "now": now}
    if at is None:
        return (yield from _fork_known(params, EMPTY_HEAD))
    if known is not None and known.node_id == at and not before:
        return (yield from _fork_known(params, known))
    try:
        rows = yield Exec(FORK_BEFORE if before else FORK_AT, params, rows=True)  # the driver's tuples
    except exc.IntegrityError:
        raise BranchExistsError(conversation_id, name) from None
    if not rows:
        found = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
        if found.first() is None:
            raise ConversationNotFoundError(conversation_id)
        raise NodeNotFoundError(conversation_id, at)
    return _head_from_text(rows[0][0])


def _fork_known(params: dict[str, Any], head: Head) -> Op[Head]:
    """``fork`` at a head known without reading it (``FORK_KNOWN``): ``head`` once the row is in."""
    try:
        inserted = yield Exec(FORK_KNOWN, params)
    except exc.IntegrityError:
        raise BranchExistsError(params["conversation_id"], params["branch"]) from None
    if inserted.rowcount != 1:
        raise ConversationNotFoundError(params["conversation_id"])
    return head


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


compile_once(globals())  # every statement above goes to the driver directly (see _engine._fastpath)
