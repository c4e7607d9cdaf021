"""One turn of a conversation as a pure object: what goes out, and what is written when the reply is in.

Sans-IO, as the client's call state machine and h11's connection are: a ``Turn`` reads no database and
sends nothing. The sync and async conversations run it: they read the branch (its history, a budget window
or the interaction to chain on) and hand it to ``body``, send that body, and give the reply to ``exchange``,
whose rows they append.

The input is taken at the door: normalised, bounded by the store's ``Limits``, encoded and its tokens
counted when the ``Turn`` is made, before the branch is read and before anything is sent. A turn the store
would refuse is refused then (``LimitExceededError``, ``CodecError``), never after the API was paid for it.
Each new step is bounded once and counted once; the reply is read once (``exchange``) and what it holds is
then the turn's ``interaction``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from convstore import codec
from convstore._limits import Limits, text_bytes
from convstore._wire import SplicedInput
from convstore.budget import TokenBudget, TokenCounter
from convstore.conversation._replies import interaction_from_reply
from convstore.conversation._request import RequestBody, build_body, new_input_steps, request_settings
from convstore.model import ConversationInfo
from convstore.model._interaction import Interaction
from convstore.store._prepare import Redactor, exchange_row, prepare_wires, settings_tokens
from convstore.store._rows import Head

__all__ = ["Row", "Turn"]

Row = tuple[str, str, int]
"""A step ready to be written: its type, its JSON text and its tokens (``prepare_wires``)."""


class Turn:
    """One turn: the new input, checked at the door, then the body to send and the exchange to write.

    Args:
        input: What the caller passed as ``input`` (see ``Conversation.request``).
        settings: The conversation's record (its request settings).
        overrides: The per-request settings laid over the conversation's.
        store: The API's ``store`` flag.
        budget: Send only the history that fits (``None``: the whole history).
        limits: The store's limits: the new steps are bounded by them here, the reply's in ``exchange``.
        counter: The store's token counter: the steps' tokens are counted with it, once.
        redact: The store's redaction hook, run on what is written (what is sent is the caller's input).

    Raises:
        CodecError: a malformed input. LimitExceededError: a new step or the new steps together beyond
            ``limits``. TypeError: an unknown override. ValueError: no model.

    Attributes:
        steps: The new steps as sent (wire JSON).
        rows: The new steps as written (after ``redact``).
        budget: The turn's budget.
        fixed_tokens: The estimated tokens every request of this turn carries whatever the history: the
            system instruction, tools and the new steps.
        interaction: The reply, once ``exchange`` read it.
    """

    __slots__ = (
        "_counter",
        "_limits",
        "_redact",
        "_settings",
        "_stateful",
        "budget",
        "fixed_tokens",
        "interaction",
        "rows",
        "steps",
    )

    def __init__(
        self,
        input: Any,
        *,
        settings: ConversationInfo,
        overrides: Mapping[str, Any],
        store: bool,
        budget: TokenBudget | None,
        limits: Limits,
        counter: TokenCounter,
        redact: Redactor | None,
    ) -> None:
        self._settings = request_settings(settings, overrides)
        self._stateful = store
        self._limits = limits
        self._counter = counter
        self._redact = redact
        self.budget = budget
        self.steps = new_input_steps(input, limits)
        self.rows = prepare_wires(self.steps, counter, redact, limits, checked=True)
        self.interaction: Interaction | None = None
        estimator = budget.counter if budget is not None and budget.counter is not None else counter
        if estimator is counter and redact is None:
            new_tokens = sum(tokens for _, _, tokens in self.rows)  # the steps sent are the steps written
        else:
            new_tokens = sum(estimator.count_step(step) for step in self.steps)
        self.fixed_tokens = settings_tokens(settings, estimator) + new_tokens

    @classmethod
    def of_steps(
        cls, steps: Sequence[Any], *, limits: Limits, counter: TokenCounter, redact: Redactor | None
    ) -> Turn:
        """The turn of steps sent in a body no conversation built (a copy, the SDK's): only ``exchange``."""
        turn = cls.__new__(cls)
        turn._settings = {}
        turn._stateful = True
        turn._limits = limits
        turn._counter = counter
        turn._redact = redact
        turn.budget = None
        turn.steps = codec.normalize_steps(steps, limits=limits)
        turn.rows = prepare_wires(turn.steps, counter, redact, limits, checked=True)
        turn.interaction = None
        turn.fixed_tokens = 0
        return turn

    @property
    def chains(self) -> bool:
        """Whether the turn chains on the branch head's stored interaction when there is one (a budget
        always replays: chaining sends the API's whole timeline)."""
        return self._stateful and self.budget is None

    @property
    def needs_history(self) -> bool:
        """Whether a budget window must keep some history (new steps that answer the model's calls)."""
        return bool(self.steps[0]["type"] != "user_input")

    def sends(self, steps: Sequence[Any]) -> bool:
        """Whether ``steps`` (the new steps of a body's input) are this turn's own, as it checked them."""
        return len(steps) == len(self.steps) and all(a is b for a, b in zip(steps, self.steps, strict=True))

    def chained(
        self, previous_interaction_id: str, *, conversation_id: str, branch: str, head: Head
    ) -> RequestBody:
        """The body that chains on the stored interaction ``previous_interaction_id``: the new steps only."""
        body = build_body(
            self._settings, self.steps, store=True, previous_interaction_id=previous_interaction_id
        )
        return RequestBody(
            body, conversation_id=conversation_id, branch=branch, head=head, history_length=0, turn=self
        )

    def replayed(
        self,
        history: Sequence[bytes] | Sequence[str],
        *,
        history_length: int,
        history_tokens: int,
        spliced: bool,
        conversation_id: str,
        branch: str,
        head: Head,
    ) -> RequestBody:
        """The body that replays ``history`` (stored step texts, each one or more array elements) then the
        new steps; ``spliced``: its ``input`` is a ``SplicedInput`` for convstore's own clients, else
        plain wire JSON, the history decoded."""
        steps = SplicedInput(history, self.steps)
        body = build_body(self._settings, steps if spliced else steps.decode(), store=self._stateful)
        return RequestBody(
            body,
            conversation_id=conversation_id,
            branch=branch,
            head=head,
            history_length=history_length,
            estimated_input_tokens=self.fixed_tokens + history_tokens,
            turn=self,
        )

    def exchange(
        self, reply: Any, *, stored: bool, model: str | None, estimated_input_tokens: int | None
    ) -> tuple[list[Row], dict[str, Any]]:
        """The rows of the whole exchange (the new steps, then the reply's) and its exchanges-table row.

        Args:
            reply: The reply in any form ``record`` takes but a stream (read it first): an ``Interaction``,
                the API's JSON (a dict or its text), an SDK object, or the list of a stream's events.
            stored: The body's ``store`` flag.
            model: The body's model, recorded when the reply names none.
            estimated_input_tokens: The body's estimate, stored with the exchange.

        Raises:
            CodecError: a malformed reply (see ``interaction_from_reply``).
            LimitExceededError: a reply step, or the exchange, beyond the store's limits.
        """
        limits = self._limits
        interaction = interaction_from_reply(reply, limits)
        wires = codec.normalize_steps(interaction.steps, limits=limits, start=len(self.steps))
        sent_bytes = sum(text_bytes(text) for _, text, _ in self.rows)
        rows = prepare_wires(
            wires, self._counter, self._redact, limits, checked=True, first=len(self.steps), total=sent_bytes
        )
        row = exchange_row(
            estimated_input_tokens=estimated_input_tokens,
            interaction_id=interaction.id,
            stored=stored,
            model=interaction.model or model,
            status=interaction.status,
            usage=interaction.usage.to_json() if interaction.usage is not None else None,
        )
        self.interaction = interaction
        return [*self.rows, *rows], row
