"""Branch reads by flat range scans: history, paths and budget windows.

Every node names its segment (migration 0008): a chain in which each node is the child of the one before it,
one level down, whose id is the id of its first node. A path from the root is then a short list of
(segment, top depth) pairs, one per fork point on the way up, read by one small recursive statement
(``SEGMENTS_FROM_*``); each segment is then one indexed range scan in depth order, root segment first, that
the unique index ``(segment_id, conversation_id, depth)`` serves without a sort. Nothing walks parent
pointers a step at a time, and nothing sorts the whole path.

The statements of one read may see different snapshots (PostgreSQL, READ COMMITTED). Nodes are immutable
and only whole conversations are deleted, so the only change a read can meet is its conversation's delete:
a segment that returns fewer rows than its depth range holds is that (``ConversationNotFoundError``), or,
while the conversation is still there, a broken segment (``CorruptionError``: see ``Store.check()``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import attrs

from convstore._ids import canonical_id
from convstore.budget._window import (
    Calibration,
    TokenBudget,
    available_tokens,
    choose_window,
    fetch_threshold,
)
from convstore.errors import ConversationNotFoundError, CorruptionError, NodeNotFoundError
from convstore.model import Node
from convstore.store import _statements as st
from convstore.store._crypto import DataCipher
from convstore.store._engine import Exec, Op
from convstore.store._rows import (
    EMPTY_HEAD,
    Head,
    Row,
    missing_branch_or_conversation,
    nodes_of,
    payload_texts,
    put_back_media,
)

__all__ = ["Replay", "Segment", "Window", "history", "path", "path_exchange_ids", "segments", "window"]


class Segment(NamedTuple):
    """One segment of a path: its id, the depth where the path leaves it, and the running total there."""

    segment_id: str
    top: int
    total: int


def segments(
    conversation_id: str, branch: str | None = None, node_id: str | None = None
) -> Op[list[Segment]]:
    """The segments of the path to ``node_id`` (or to ``branch``'s head), root first; empty when there is no
    such node (or the branch is empty or missing)."""
    if node_id is None:
        result = yield Exec(st.SEGMENTS_FROM_BRANCH, {"conversation_id": conversation_id, "branch": branch})
    else:
        result = yield Exec(st.SEGMENTS_FROM_NODE, {"conversation_id": conversation_id, "node_id": node_id})
    return [Segment(*row) for row in result]


def _starts(found: Sequence[Segment]) -> list[int]:
    """The depth of each segment's first node on the path (the one after the previous segment's top)."""
    return [0, *(segment.top + 1 for segment in found[:-1])][: len(found)]


def _gone(conversation_id: str, segment_id: str) -> Op[Exception]:
    """A segment returned fewer rows than its depth range holds: deleted meanwhile, or broken."""
    check = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
    if check.first() is None:
        return ConversationNotFoundError(conversation_id)
    return CorruptionError(
        f"segment {segment_id} of the path does not hold every depth it should (see Store.check())",
        conversation_id,
    )


def _scan(conversation_id: str, found: Sequence[Segment], statement: Any) -> Op[list[Any]]:
    """The path's rows, root first: one range scan a segment."""
    rows: list[Any] = []
    for segment, start in zip(found, _starts(found), strict=True):
        params = {"conversation_id": conversation_id, "segment_id": segment.segment_id, "top": segment.top}
        part = (yield Exec(statement, params)).all()
        if len(part) != segment.top - start + 1:
            raise (yield from _gone(conversation_id, segment.segment_id))
        rows += part
    return rows


@attrs.frozen
class Replay:
    """The step texts of a branch from its root to ``head``, as a conversation last read or wrote them.

    Nodes are immutable, so while the branch head is still ``head`` these are exactly its history: a
    conversation keeps them and the next ``history`` checks only the head (one primary-key lookup)
    instead of reading the whole branch again.
    """

    head: Head
    payloads: list[str]

    def extended(self, head: Head, payloads: Sequence[str]) -> Replay:
        return Replay(head, [*self.payloads, *payloads])


_HISTORY_COLUMNS = list(st.HISTORY_SCAN.selected_columns.keys())
_PAYLOAD = operator.itemgetter(_HISTORY_COLUMNS.index("payload"))
_MEDIA = operator.itemgetter(_HISTORY_COLUMNS.index("media"))


class _IdPayload(NamedTuple):
    id: str
    payload: str


def history(
    conversation_id: str, branch: str, cipher: DataCipher | None = None, known: Replay | None = None
) -> Op[Replay]:
    """The branch's steps as stored JSON texts (opened by ``cipher`` when encrypted), root first, and the
    head they end at. ``known``: what the caller last read; reused when the head has not moved."""
    if known is not None and known.head.node_id is not None:
        result = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        row = result.first()
        if row is not None and row.head_id == known.head.node_id:
            return known
    found = yield from segments(conversation_id, branch)
    if not found:
        check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        if check.first() is None:
            raise (yield from missing_branch_or_conversation(conversation_id, branch))
        return Replay(EMPTY_HEAD, [])
    rows = yield from _scan(conversation_id, found, st.HISTORY_SCAN)
    last = rows[-1]
    # By position: a Row's attribute access costs ten times its index (0.7 vs 0.07 us), and a replay reads
    # every step of the branch.
    if cipher is None:
        payloads = list(map(_PAYLOAD, rows))
    else:
        payloads = cipher.open_nodes(_IdPayload(canonical_id(row.id), row.payload) for row in rows)
    yield from put_back_media(conversation_id, payloads, list(map(_MEDIA, rows)), rows, cipher)
    head = Head(
        canonical_id(last.id),
        last.depth,
        last.total_tokens,
        canonical_id(last.exchange_id),
        found[-1].segment_id,
    )
    return Replay(head, payloads)


def path(
    conversation_id: str, branch: str, node_id: str | None, cipher: DataCipher | None = None
) -> Op[list[Node]]:
    """Nodes from the root to ``node_id`` (or to the branch head when None)."""
    found = yield from segments(conversation_id, branch, node_id)
    if not found:
        if node_id is not None:
            check = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
            if check.first() is None:
                raise ConversationNotFoundError(conversation_id)
            raise NodeNotFoundError(conversation_id, node_id)
        check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        if check.first() is None:
            raise (yield from missing_branch_or_conversation(conversation_id, branch))
        return []
    rows = yield from _scan(conversation_id, found, st.PATH_SCAN)
    return (yield from nodes_of(conversation_id, rows, cipher))


def path_exchange_ids(conversation_id: str, branch: str) -> Op[list[str]]:
    """The exchange ids along a branch, oldest first, once each (empty for an empty or missing branch)."""
    found = yield from segments(conversation_id, branch)
    rows = yield from _scan(conversation_id, found, st.PATH_EXCHANGES_SCAN)
    return list(dict.fromkeys(row.exchange_id for row in rows))


# -- budget windows ---------------------------------------------------------------------------------------


class _Descent:
    """A path read from its head down, a batch at a time, as far as a threshold needs.

    ``rows`` are newest first: the head, then its ancestors. ``more(threshold)`` reads on until the last row
    read has a running total below ``threshold`` (or the root is read); a lower threshold later reads on
    from there. The first batch's size is estimated from the head's average tokens per step, and each
    further batch in a segment is twice the one before, so the statements are few and the rows read beyond
    the window are about one batch: the cost grows with the window, not with the conversation.
    """

    def __init__(self, conversation_id: str, found: list[Segment]) -> None:
        self.conversation_id = conversation_id
        self.found = found
        self.starts = _starts(found)
        self.index = len(found) - 1  # the segment read next
        self.top = found[-1].top  # the depth read next in it
        self.rows: list[Any] = []
        head = found[-1]
        self.per_step = head.total / (head.top + 1)

    @property
    def head(self) -> Segment:
        return self.found[-1]

    def _batch(self, threshold: int) -> int:
        """Rows to ask for: enough to reach ``threshold`` at the average step size, and a little more."""
        if self.per_step <= 0:
            return 64
        reach = self.rows[-1].total_tokens if self.rows else self.head.total
        return max(8, math.ceil(max(0, reach - threshold) / self.per_step * 1.25) + 2)

    def more(self, threshold: int) -> Op[None]:
        limit = self._batch(threshold)
        while self.index >= 0:
            if self.rows and self.rows[-1].total_tokens < threshold:
                return
            start, segment = self.starts[self.index], self.found[self.index]
            if self.top < start:
                self.index -= 1
                if self.index >= 0:
                    self.top = self.found[self.index].top
                continue
            if self.rows and self.top == segment.top and segment.total < threshold:
                return  # the whole segment lies below the threshold: nothing more to read
            size = min(limit, self.top - start + 1)
            params = {
                "conversation_id": self.conversation_id,
                "segment_id": segment.segment_id,
                "top": self.top,
                "limit": size,
            }
            batch = (yield Exec(st.WINDOW_SCAN, params)).all()
            if len(batch) != size:
                raise (yield from _gone(self.conversation_id, segment.segment_id))
            self.rows += batch
            self.top -= size
            limit *= 2

    def window(self, threshold: int) -> list[Any]:
        """The head and every path node whose running total is at least ``threshold``, oldest first."""
        kept = 1
        rows = self.rows
        while kept < len(rows) and rows[kept].total_tokens >= threshold:
            kept += 1
        return rows[kept - 1 :: -1]


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


def _calibration(conversation_id: str, rows: Sequence[Any]) -> Op[Calibration]:
    ids = list(dict.fromkeys(row.exchange_id for row in reversed(rows)))[:200]
    result = yield Exec(st.CALIBRATION, {"conversation_id": conversation_id, "exchange_ids": ids})
    found = result.first()
    return Calibration() if found is None else Calibration.from_measurements(*found)


def _first_exchange(conversation_id: str, root_id: str) -> Op[list[Any]]:
    """The rows of the first exchange of the path whose root is ``root_id``."""
    found = yield Exec(st.FIRST_EXCHANGE_NODES, {"conversation_id": conversation_id, "root_id": root_id})
    return list(found.all())


def window(  # noqa: PLR0917 -- an internal operation; every caller passes all of it
    conversation_id: str,
    branch: str,
    budget: TokenBudget,
    fixed_tokens: int,
    require_history: bool,
    cipher: DataCipher | None = None,
) -> Op[Window]:
    """Fetch and choose the window of a branch that fits ``budget`` (see ``convstore.budget``); ``cipher``
    opens the kept payloads of an encrypted conversation."""
    plain = available_tokens(budget, Calibration(), fixed_tokens=fixed_tokens)
    found = yield from segments(conversation_id, branch)
    if not found:
        check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        if check.first() is None:
            raise (yield from missing_branch_or_conversation(conversation_id, branch))
        choose_window([], budget=budget, available=plain, require_history=require_history)
        return Window(
            pinned=[],
            rows=[],
            summary=None,
            needs_summary=False,
            history_tokens=0,
            calibration=Calibration(),
            head=EMPTY_HEAD,
        )
    # The threshold comes from the head's running total as read now, by the segments statement.
    descent = _Descent(conversation_id, found)
    threshold = fetch_threshold(found[-1].total, plain)
    yield from descent.more(threshold)
    rows = descent.window(threshold)
    head_row = rows[-1]
    segment_id = found[-1].segment_id
    head = Head(head_row.id, head_row.depth, head_row.total_tokens, head_row.exchange_id, segment_id)
    calibration = yield from _calibration(conversation_id, rows)
    available = available_tokens(budget, calibration, fixed_tokens=fixed_tokens)
    lower = fetch_threshold(head.total_tokens, available)
    if rows[0].parent_id is not None and lower < threshold:
        yield from descent.more(lower)
        rows = descent.window(lower)
    choice = choose_window(rows, budget=budget, available=available, require_history=require_history)
    kept = rows[choice.start :] if choice.start is not None else []
    pinned: list[Any] = []
    if budget.pin_first_exchange and not (kept and kept[0].parent_id is None):
        first = yield from _first_exchange(conversation_id, found[0].segment_id)
        pinned_tokens = sum(row.token_count for row in first)
        first_ids = {row.id for row in first}
        after = [row for row in rows if row.id not in first_ids]
        available = available_tokens(
            budget, calibration, fixed_tokens=fixed_tokens, pinned_tokens=pinned_tokens
        )
        choice = choose_window(after, budget=budget, available=available, require_history=require_history)
        kept = after[choice.start :] if choice.start is not None else []
        pinned = first
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
    texts = yield from payload_texts(conversation_id, rows, cipher)
    return [Row({**row._mapping, "payload": text}) for row, text in zip(rows, texts, strict=True)]
