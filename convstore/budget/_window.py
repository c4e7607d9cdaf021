"""Choosing the window of history that fits a token budget: pure functions over the rows the store fetched.

The store fetches the steps of a branch from its head upwards while they could still fit (an indexed walk
whose cost follows the window, not the conversation; see ``WINDOW`` in ``store/_statements.py``). Here, with
no I/O:

- the budget for history is what is left of ``max_input_tokens`` after the reserved output, the system
  instruction and tools, and the new input, all in estimated tokens scaled by the calibration factor;
- a window may start only where an exchange starts with a ``user_input`` step, so a function call is never
  separated from its result and a thought never from the output it belongs to;
- ``"sliding"`` keeps as much as fits (its first step moves every turn once over budget); ``"stable"`` cuts in
  steps of ``(1 - low_watermark) * budget`` measured on the running totals, so the first step, and the
  prefix the API can cache, stays put for many turns;
- when even the newest exchange cannot fit, ``BudgetExceededError`` says by how much.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import attrs

from convstore.budget._counting import TokenCounter
from convstore.errors import BudgetExceededError

__all__ = [
    "Calibration",
    "TokenBudget",
    "WindowChoice",
    "WindowRow",
    "available_tokens",
    "choose_window",
    "fetch_threshold",
]

Compactor = Callable[
    [list[dict[str, Any]]], "Sequence[Mapping[str, Any]] | Awaitable[Sequence[Mapping[str, Any]]]"
]


@attrs.frozen(kw_only=True)
class TokenBudget:
    """How much input a request may send, and how to cut history to fit.

    Attributes:
        max_input_tokens: The most input tokens a request may carry (the model's context, or less).
        reserve_output_tokens: Kept free for the answer (counts against ``max_input_tokens``).
        pin_first_exchange: Always keep the conversation's first exchange (instructions given in the first
            message, say), whatever else is dropped.
        counter: Counts the new input and the settings; None uses the store's counter.
        policy: ``"stable"`` (default) keeps the window's first step fixed for many turns, so the API's
            implicit prefix cache keeps hitting; ``"sliding"`` keeps as much history as fits.
        low_watermark: ``"stable"``: after a cut the window holds about this fraction of the budget.
        compact: Optional hook: given the steps about to be dropped (wire JSON, oldest first), return steps
            that replace them (a summary). It runs once per cut point; the result is stored and reused by
            every later request (of any branch) that windows at the same step. May be async for
            ``AsyncConversation``.
        summary_tokens: Tokens set aside for the summary when ``compact`` is set.
    """

    max_input_tokens: int = attrs.field(validator=attrs.validators.gt(0))
    reserve_output_tokens: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    pin_first_exchange: bool = False
    counter: TokenCounter | None = None
    policy: Literal["stable", "sliding"] = attrs.field(
        default="stable", validator=attrs.validators.in_(("stable", "sliding"))
    )
    low_watermark: float = attrs.field(
        default=0.75, validator=[attrs.validators.gt(0), attrs.validators.lt(1)]
    )
    compact: Compactor | None = None
    summary_tokens: int = attrs.field(default=1024, validator=attrs.validators.ge(0))


class WindowRow(Protocol):
    """A fetched step: what the window choice needs of it."""

    id: str
    parent_id: str | None
    exchange_id: str
    type: str
    token_count: int
    total_tokens: int


@attrs.frozen
class Calibration:
    """Measured over estimated input tokens of the newest measured exchange (1.0 when there is none)."""

    factor: float = 1.0

    @classmethod
    def from_measurements(cls, measured: int | None, estimated: int | None) -> Calibration:
        if not measured or not estimated:
            return cls()
        # Clamped: one odd reply must not make the next window absurd.
        return cls(min(4.0, max(0.25, measured / estimated)))

    def to_estimate(self, tokens: int) -> int:
        """Real tokens -> estimated tokens."""
        return math.floor(tokens / self.factor)


@attrs.frozen(kw_only=True)
class WindowChoice:
    """Index of the first kept row (None: no history kept), and what the window costs in estimated tokens."""

    start: int | None
    history_tokens: int
    available: int


def available_tokens(
    budget: TokenBudget, calibration: Calibration, *, fixed_tokens: int, pinned_tokens: int = 0
) -> int:
    """Estimated tokens left for history after the reserve, the settings, the new input and pinned steps."""
    usable = budget.max_input_tokens - budget.reserve_output_tokens
    left = calibration.to_estimate(usable) - fixed_tokens - pinned_tokens
    if budget.compact is not None:
        left -= calibration.to_estimate(budget.summary_tokens)
    return left


def fetch_threshold(head_total: int, available: int) -> int:
    """The smallest prefix total a kept step can have: fetch steps down to it."""
    return head_total - max(available, 0)


def _is_start(rows: Sequence[WindowRow], index: int) -> bool:
    row = rows[index]
    if row.type != "user_input":
        return False
    if index == 0:
        return row.parent_id is None
    return rows[index - 1].exchange_id != row.exchange_id


def choose_window(
    rows: Sequence[WindowRow],
    *,
    budget: TokenBudget,
    available: int,
    require_history: bool,
) -> WindowChoice:
    """Pick the first kept row among ``rows`` (root-most first, head last).

    Args:
        rows: Steps from (at least) every step that could fit up to the head, in depth order.
        available: Estimated tokens history may use.
        require_history: The newest exchange must be kept (when nothing new is sent, or when the new input
            answers function calls of the history).

    Raises:
        BudgetExceededError: nothing that may start a window fits.
    """
    if available < 0:
        # The settings and the new input alone are over budget.
        raise BudgetExceededError(
            max_input_tokens=budget.max_input_tokens,
            available_tokens=0,
            needed_tokens=None,
            over_by=-available,
        )
    if not rows:
        return WindowChoice(start=None, history_tokens=0, available=available)
    head_total = rows[-1].total_tokens
    starts = [i for i in range(len(rows)) if _is_start(rows, i)]
    fitting = [i for i in starts if head_total - (rows[i].total_tokens - rows[i].token_count) <= available]
    if budget.policy == "stable" and fitting and available > 0:
        step = max(1, math.floor(available * (1 - budget.low_watermark)))
        cut = math.ceil(max(0, head_total - available) / step) * step
        stable = [i for i in fitting if rows[i].total_tokens - rows[i].token_count >= cut]
        if stable:
            fitting = stable
    if fitting:
        start = fitting[0]
        return WindowChoice(
            start=start,
            history_tokens=head_total - (rows[start].total_tokens - rows[start].token_count),
            available=available,
        )
    if require_history:
        newest = starts[-1] if starts else None
        needed = (
            head_total - (rows[newest].total_tokens - rows[newest].token_count)
            if newest is not None
            else None
        )
        raise BudgetExceededError(
            max_input_tokens=budget.max_input_tokens,
            available_tokens=max(available, 0),
            needed_tokens=needed,
        )
    return WindowChoice(start=None, history_tokens=0, available=available)
