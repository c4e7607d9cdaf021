"""Budget windows: the newest steps of a branch that fit a ``TokenBudget``, read from the head down in a few
batches, so that their cost grows with the window, not the conversation (see ``_reads`` for segments)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs

from convstore._ids import canonical_id
from convstore.budget._window import (
    Calibration,
    TokenBudget,
    available_tokens,
    choose_window,
    fetch_threshold,
)
from convstore.store import _paths as paths
from convstore.store import _statements as st
from convstore.store._crypto import DataCipher
from convstore.store._engine import Exec, Op
from convstore.store._reads import Segment, gone, segments, starts
from convstore.store._rows import (
    EMPTY_HEAD,
    Head,
    Row,
    missing_branch_or_conversation,
    payload_texts,
)

__all__ = ["Window", "window"]


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
        self.starts = starts(found)
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
            batch = (yield Exec(paths.WINDOW_SCAN, params)).all()
            if len(batch) != size:
                raise (yield from gone(self.conversation_id, segment.segment_id))
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
    found = yield Exec(paths.FIRST_EXCHANGE_NODES, {"conversation_id": conversation_id, "root_id": root_id})
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
    head = _head(rows[-1], found[-1].segment_id)
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
    return [Row({**row._mapping, "payload": text}) for row, text in zip(rows, texts, strict=True)]


def _head(row: Any, segment_id: str) -> Head:
    return Head(canonical_id(row.id), row.depth, row.total_tokens, canonical_id(row.exchange_id), segment_id)


def _canonical(row: Any) -> Row:
    """A window row with its ids in canonical form (the statements read them raw)."""
    values = dict(row._mapping)
    values["id"] = canonical_id(values["id"])
    values["exchange_id"] = canonical_id(values["exchange_id"])
    if values["parent_id"] is not None:
        values["parent_id"] = canonical_id(values["parent_id"])
    return Row(values)
