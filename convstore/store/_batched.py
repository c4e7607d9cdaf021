"""An append in one batch (``_writes.append``'s usual case): its statements, sent together, and its outcome
read from the compare-and-swap; ``SegmentTaken`` when a guess was wrong and it must be written again."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from convstore.errors import ConflictError
from convstore.model import Node
from convstore.store import _statements as st
from convstore.store._crypto import DataCipher
from convstore.store._engine import Exec, Op
from convstore.store._rows import Head, Row, missing_branch_or_conversation, node_from_row
from convstore.store._search import index_rows

__all__ = ["Appended", "SegmentTaken", "batch_of", "guard_of", "move_head", "moved_to"]


class SegmentTaken(Exception):
    """Another writer continued the head's segment first, or a batched append's guesses were wrong (the
    head is not its segment's last node, the exchange is stored already) or one of its statements failed:
    nothing is written, and the append is written again at once, statement by statement, starting a
    segment of its own (``append(..., new_segment=True)``), which finds out why."""


@attrs.frozen
class Appended:
    """What an append wrote: the new nodes, and ``chain``, the heads along it, each the parent of the next:
    the head the append built on (when known), then each new node's. The last is the branch's new head."""

    nodes: list[Node]
    chain: tuple[Head, ...]

    @property
    def head(self) -> Head:
        return self.chain[-1]


def move_head(
    conversation_id: str, branch: str, head: Head, rows: Sequence[dict[str, Any]], now: datetime
) -> Exec:
    """The compare-and-swap of the branch head, from ``head`` to the last of ``rows``."""
    params = {
        "in_conversation": conversation_id,
        "branch": branch,
        "expected_head": head.node_id,
        "new_head": rows[-1]["id"],
        "now": now,
    }
    return Exec(st.MOVE_HEAD, params)


def batch_of(  # noqa: PLR0917 -- the append's own parts, passed on
    conversation_id: str,
    branch: str,
    head: Head,
    rows: Sequence[dict[str, Any]],
    stored: Sequence[dict[str, Any]],
    now: datetime,
    exchange: Mapping[str, Any] | None,
    exchange_id: str | None,
    index: str | None,
    cipher: DataCipher | None,
) -> tuple[Exec, ...]:
    """An append's statements in order: the lock and the checks (``_at_tip``'s statement), the nodes, their
    search index rows, the exchange record, the compare-and-swap."""
    params: dict[str, Any] = {
        "conversation_id": conversation_id,
        "segment_id": head.segment_id,
        "depth": head.depth,
    }
    if exchange_id is None:
        statements = [Exec(st.HOLD_AT_TIP, params)]
    else:
        statements = [Exec(st.HOLD_AT_TIP_FOR_EXCHANGE, {**params, "exchange_id": exchange_id})]
    statements.append(Exec(st.INSERT_NODES, list(stored)))
    if index is not None and cipher is None:
        entries = index_rows(conversation_id, list(rows), index)
        if entries:
            statements.append(Exec(st.INSERT_SEARCH, entries))
    if exchange is not None:
        record = {**exchange, "conversation_id": conversation_id, "exchange_id": rows[0]["exchange_id"]}
        statements.append(Exec(st.INSERT_EXCHANGE, {**record, "created_at": now}))
    statements.append(move_head(conversation_id, branch, head, rows, now))
    return tuple(statements)


def guard_of(
    conversation_id: str, branch: str, rows: Sequence[dict[str, Any]], exchange_id: str | None
) -> Exec:
    """The batch's guard (``Batch.guard``): what ``append`` checks after the batch, checked before the
    commit where the batch is sent with it."""
    params = {"in_conversation": conversation_id, "branch": branch, "new_head": rows[-1]["id"]}
    if exchange_id is None:
        return Exec(st.APPEND_GUARD, params)
    return Exec(st.APPEND_GUARD_FOR_EXCHANGE, {**params, "exchange_id": exchange_id, "steps": len(rows)})


def moved_to(
    conversation_id: str, branch: str, head: Head, rows: Sequence[dict[str, Any]], moved: Any
) -> Op[Appended]:
    """The append's outcome from its compare-and-swap's result: the new nodes, or why the head did not
    move."""
    if moved.rowcount != 1:
        check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        if check.first() is None:
            raise (yield from missing_branch_or_conversation(conversation_id, branch))
        raise ConflictError(conversation_id, branch, head.node_id)
    chain = (head, *(_head_of(row) for row in rows))
    nodes = [node_from_row(conversation_id, Row(row), row["payload"]) for row in rows]
    return Appended(nodes, chain)


def _head_of(row: Mapping[str, Any]) -> Head:
    """A new node's row as a head (what a fork at it starts from)."""
    return Head(row["id"], row["depth"], row["total_tokens"], row["exchange_id"], row["segment_id"])
