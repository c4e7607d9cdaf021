"""Budget windows: the newest steps of a branch that fit a ``TokenBudget``, read from the head up its parent
pointers in one statement, so that their cost grows with the window, not the conversation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import attrs
import sqlalchemy as sa

from convstore._ids import canonical_id
from convstore.budget._window import (
    Calibration,
    TokenBudget,
    available_tokens,
    choose_window,
    fetch_threshold,
)
from convstore.errors import ConversationNotFoundError, CorruptionError
from convstore.store import _paths as paths
from convstore.store import _statements as st
from convstore.store._crypto import DataCipher
from convstore.store._engine import Exec, Op, compile_once
from convstore.store._reads import segments
from convstore.store._rows import (
    EMPTY_HEAD,
    Head,
    Row,
    missing_branch_or_conversation,
    payload_texts,
)
from convstore.store._schema import branches as b
from convstore.store._schema import exchanges as x
from convstore.store._schema import nodes as n

__all__ = ["WalkRow", "Window", "walk", "walk_on", "window"]


# A budget window in one statement: the path walked from the branch head up its parent pointers while the
# next node's running total is at least ``head total - available`` (every node such a window can keep), one
# primary-key probe a step, so the cost follows the window and never the conversation. Each probe is a join on
# the whole primary key (conversation_id, id): no other index can serve it (secondary indexes are led by
# parent_id / exchange_id), so the plan is a nested loop of index probes. With each row, its exchange's
# measured and estimated input tokens (NULL unless both were recorded): what the calibration is chosen from.
# Every table is filtered on the ``conversation_id`` parameter (one shard on Citus). Read as the driver's
# tuples (``WalkRow``), ids as the driver gives them: a window reads hundreds of rows and uses the ids of a
# few (converted by ``_canonical``).
_CID = sa.bindparam("conversation_id", type_=n.c.conversation_id.type)
_COLUMNS = (
    "id",
    "parent_id",
    "depth",
    "exchange_id",
    "type",
    "token_count",
    "total_tokens",
    "payload",
    "media",
)


class WalkRow(NamedTuple):
    """A row of a window walk (``WINDOW_FROM_BRANCH``), in its columns' order."""

    id: Any
    parent_id: Any
    depth: int
    exchange_id: Any
    type: str
    token_count: int
    total_tokens: int
    payload: str
    media: str | None
    segment_id: Any  # the head's only
    measured: int | None  # its exchange's measured input tokens << 32 | the estimate (both recorded)


def _walk(anchor: Any) -> sa.Select[tuple[object, ...]]:
    found = anchor.cte("window_walk", recursive=True)
    parent = n.alias("up")
    found = found.union_all(
        sa.select(
            *(parent.c[name] for name in _COLUMNS),
            sa.cast(sa.null(), n.c.segment_id.type).label("segment_id"),
            found.c.threshold,
        )
        .select_from(
            parent.join(found, sa.and_(parent.c.conversation_id == _CID, parent.c.id == found.c.parent_id))
        )
        .where(found.c.total_tokens - found.c.token_count >= found.c.threshold)
    )
    # A correlated subquery, not a join: one probe of the exchange's primary key a row, whatever the
    # planner's statistics (PostgreSQL hashed every exchange of the conversation for a join).
    measured = (
        sa.select(
            sa.cast(x.c.input_tokens, sa.BigInteger()) * sa.literal(_SHIFT, sa.BigInteger())
            + x.c.estimated_input_tokens
        )
        .where(
            x.c.conversation_id == _CID,
            x.c.exchange_id == found.c.exchange_id,
            x.c.input_tokens.is_not(None),
            x.c.estimated_input_tokens.is_not(None),
        )
        .scalar_subquery()
    )
    return (
        sa.select(
            *(found.c[name] for name in _COLUMNS),
            found.c.segment_id,
            sa.type_coerce(measured, sa.BigInteger()).label("measured"),
        )
        .select_from(found)
        .order_by(found.c.depth)
    )


_SHIFT = 1 << 32  # measured input tokens and the estimate, packed into one value


def _calibration(rows: Sequence[WalkRow]) -> Calibration:
    """The calibration of a window: the newest (deepest) measured exchange among its newest 200 (``rows``
    oldest first), 1.0 when none is."""
    seen: set[Any] = set()
    for row in reversed(rows):
        if row.exchange_id not in seen:
            if len(seen) == 200:
                break
            seen.add(row.exchange_id)
        if row.measured is not None:
            measured, estimated = divmod(row.measured, _SHIFT)
            return Calibration.from_measurements(measured, estimated)
    return Calibration()


# From the branch's head (no row: the branch is empty or missing), down to ``head total - available``.
WINDOW_FROM_BRANCH = _walk(
    sa.select(
        *(n.c[name] for name in _COLUMNS),
        n.c.segment_id,
        (n.c.total_tokens - sa.bindparam("available", type_=sa.Integer())).label("threshold"),
    )
    .select_from(b.join(n, sa.and_(n.c.conversation_id == _CID, n.c.id == b.c.head_id)))
    .where(b.c.conversation_id == _CID, b.c.name == sa.bindparam("branch"))
)
# Further up from a node, down to ``threshold`` (a calibrated budget keeps more than the first walk read).
WINDOW_FROM_NODE = _walk(
    sa.select(
        *(n.c[name] for name in _COLUMNS),
        n.c.segment_id,
        sa.bindparam("threshold", type_=sa.Integer()).label("threshold"),
    ).where(n.c.conversation_id == _CID, n.c.id == sa.bindparam("node_id", type_=n.c.id.type))
)


def walk(conversation_id: str, branch: str, available: int) -> Op[list[Any]]:
    """The branch's path from its head up to ``fetch_threshold(head total, available)``, oldest first: the
    head and every node whose running total is at least that (empty: the branch is empty or missing)."""
    params = {"conversation_id": conversation_id, "branch": branch, "available": max(available, 0)}
    rows = [WalkRow(*row) for row in (yield Exec(WINDOW_FROM_BRANCH, params, rows=True))]
    if rows:
        yield from _walked(conversation_id, rows, fetch_threshold(rows[-1].total_tokens, available))
    return rows


def walk_on(conversation_id: str, rows: list[Any], threshold: int) -> Op[list[Any]]:
    """``rows`` (a walk) with the path above them down to a lower ``threshold``: one more statement when
    the walk stopped above it."""
    oldest = rows[0]
    if oldest.parent_id is None or oldest.total_tokens - oldest.token_count < threshold:
        return rows
    params = {"conversation_id": conversation_id, "node_id": oldest.parent_id, "threshold": threshold}
    above = [WalkRow(*row) for row in (yield Exec(WINDOW_FROM_NODE, params, rows=True))]
    if not above:
        raise (yield from _broken(conversation_id, oldest.id))
    yield from _walked(conversation_id, above, threshold)
    return above + rows


def _walked(conversation_id: str, rows: Sequence[WalkRow], threshold: int) -> Op[None]:
    """Check that a walk reached every node it should have: a parent missing from the chain means that the
    conversation was deleted meanwhile, or is broken."""
    last = rows[0]
    if last.parent_id is None or last.total_tokens - last.token_count < threshold:
        return
    raise (yield from _broken(conversation_id, last.id))


def _broken(conversation_id: str, node_id: str) -> Op[Exception]:
    """The error for a node whose parent is not there: its conversation deleted meanwhile, or broken."""
    check = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
    if check.first() is None:
        return ConversationNotFoundError(conversation_id)
    return CorruptionError(
        f"the parent of node {canonical_id(node_id)} is missing (see Store.check())", conversation_id
    )


@attrs.frozen(kw_only=True)
class Window:
    """What a budget keeps of a branch.

    Attributes:
        pinned: The first exchange's rows when pinned and not already in ``rows``.
        rows: The kept rows, oldest first (from the window's start to the head).
        summary: ``(steps JSON text, tokens)`` stored for the window's start, when compaction applies.
        needs_summary: Compaction applies but no summary is stored yet for the window's start.
        history_tokens: Estimated tokens of pinned rows, rows and summary.
        calibration: The factor the estimates were scaled by.
        head: The head the window ends at.
    """

    pinned: list[Any]
    rows: list[Any]
    summary: tuple[str, int] | None
    needs_summary: bool
    history_tokens: int
    calibration: Calibration
    head: Head

    @property
    def start_id(self) -> str | None:
        return self.rows[0].id if self.rows else None


def _first_exchange(conversation_id: str, branch: str) -> Op[list[Any]]:
    """The rows of the first exchange of the branch's path (its root: the id of its first segment)."""
    found = yield from segments(conversation_id, branch)
    if not found:
        return []
    params = {"conversation_id": conversation_id, "root_id": found[0].segment_id}
    return list((yield Exec(paths.FIRST_EXCHANGE_NODES, params)).all())


def _empty(
    conversation_id: str, branch: str, budget: TokenBudget, available: int, require_history: bool
) -> Op[Window]:
    """The window of a branch the walk found no head for: empty, or it is missing."""
    check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
    if check.first() is None:
        raise (yield from missing_branch_or_conversation(conversation_id, branch))
    choose_window([], budget=budget, available=available, require_history=require_history)
    return Window(
        pinned=[],
        rows=[],
        summary=None,
        needs_summary=False,
        history_tokens=0,
        calibration=Calibration(),
        head=EMPTY_HEAD,
    )


def window(  # noqa: PLR0917 -- an internal operation; every caller passes all of it
    conversation_id: str,
    branch: str,
    budget: TokenBudget,
    fixed_tokens: int,
    require_history: bool,
    cipher: DataCipher | None = None,
) -> Op[Window]:
    """Fetch and choose the window of a branch that fits ``budget`` (see ``convstore.budget``); ``cipher``
    opens the kept payloads of an encrypted conversation.

    One statement in the usual case (``WINDOW_FROM_BRANCH``: the rows, the calibration and the head); one
    more when the calibration keeps more than the estimate read, for the first exchange when it is pinned,
    and for a stored summary when the budget compacts.
    """
    plain = available_tokens(budget, Calibration(), fixed_tokens=fixed_tokens)
    # The threshold depends on the head's running total, which the statement reads: it is given the tokens
    # available and subtracts them there (``fetch_threshold``).
    rows: list[Any] = yield from walk(conversation_id, branch, plain)
    if not rows:
        return (yield from _empty(conversation_id, branch, budget, plain, require_history))
    last = rows[-1]
    head = _head(last, canonical_id(last.segment_id))
    calibration = _calibration(rows)
    available = available_tokens(budget, calibration, fixed_tokens=fixed_tokens)
    rows = yield from walk_on(conversation_id, rows, fetch_threshold(head.total_tokens, available))
    choice = choose_window(rows, budget=budget, available=available, require_history=require_history)
    kept = rows[choice.start :] if choice.start is not None else []
    pinned: list[Any] = []
    if budget.pin_first_exchange and not (kept and kept[0].parent_id is None):
        first = yield from _first_exchange(conversation_id, branch)
        pinned_tokens = sum(row.token_count for row in first)
        first_ids = {row.id for row in first}
        after = [row for row in rows if row.id not in first_ids]
        available = available_tokens(
            budget, calibration, fixed_tokens=fixed_tokens, pinned_tokens=pinned_tokens
        )
        choice = choose_window(after, budget=budget, available=available, require_history=require_history)
        kept = after[choice.start :] if choice.start is not None else []
        pinned = first
    # The ids used from here on, in canonical form: the window's start (its summary is stored by it, and
    # compaction reads the path above it) and the pinned rows; the other rows' ids are never read.
    pinned = [_canonical(row) for row in pinned]
    if kept:
        kept[0] = _canonical(kept[0])
    history_tokens = sum(row.token_count for row in pinned) + choice.history_tokens
    summary = None
    needs_summary = False
    dropped_something = (
        kept and kept[0].parent_id is not None and kept[0].parent_id not in {r.id for r in pinned}
    )
    if budget.compact is not None and dropped_something:
        found_summary = (
            yield Exec(st.SUMMARY, {"conversation_id": conversation_id, "node_id": kept[0].id})
        ).first()
        if found_summary is None:
            needs_summary = True
        else:
            text = (
                found_summary.payload
                if cipher is None
                else cipher.open("summary", kept[0].id, found_summary.payload)
            )
            summary = (text, found_summary.token_count)
            history_tokens += found_summary.token_count
    if cipher is not None or any(row.media is not None for row in (*pinned, *kept)):
        pinned = yield from _opened(conversation_id, pinned, cipher)
        kept = yield from _opened(conversation_id, kept, cipher)
    return Window(
        pinned=pinned,
        rows=kept,
        summary=summary,
        needs_summary=needs_summary,
        history_tokens=history_tokens,
        calibration=calibration,
        head=head,
    )


def _opened(conversation_id: str, rows: Sequence[Any], cipher: DataCipher | None) -> Op[list[Any]]:
    """Window rows with their payloads as written: opened, media put back."""
    rows = [_canonical(row) for row in rows]  # a sealed payload is bound to its node's id
    texts = yield from payload_texts(conversation_id, rows, cipher)
    return [Row({**row._values, "payload": text}) for row, text in zip(rows, texts, strict=True)]


def _head(row: Any, segment_id: str) -> Head:
    return Head(canonical_id(row.id), row.depth, row.total_tokens, canonical_id(row.exchange_id), segment_id)


def _canonical(row: Any) -> Row:
    """A window row with its ids in canonical form (the statements read them raw)."""
    # A walk's tuple, or a SQLAlchemy row (the pinned first exchange's).
    values = row._asdict() if isinstance(row, WalkRow) else dict(row._mapping)
    values["id"] = canonical_id(values["id"])
    values["exchange_id"] = canonical_id(values["exchange_id"])
    if values["parent_id"] is not None:
        values["parent_id"] = canonical_id(values["parent_id"])
    return Row(values)


compile_once(globals())  # every statement above goes to the driver directly (see _engine._fastpath)
