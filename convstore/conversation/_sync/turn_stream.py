# Generated from convstore/conversation/_async/turn_stream.py by scripts/unasync.py: do not edit.
"""A streamed turn: the client's events, passed through as they come, and the turn recorded once the
stream completes (``Conversation.stream`` makes it). A stream the API refuses before its first event,
for something it forgot, is opened once more (as ``send`` retries)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from convstore import _otel
from convstore.conversation._request import RequestBody
from convstore.errors import APIError
from convstore.model import Node
from convstore.model._interaction import Interaction

if TYPE_CHECKING:
    from convstore.conversation._sync.conversation import Conversation

__all__ = ["TurnStream"]


class _Reopen(Protocol):
    """Builds a refused stream's request again (``send``'s retry arguments) and opens it."""

    def __call__(self, retry: dict[str, Any]) -> tuple[RequestBody, Any]: ...


class TurnStream:
    """The events of one streamed turn; the turn is written to the branch once the stream completes."""

    def __init__(
        self,
        conversation: Conversation,
        body: RequestBody,
        stream: Any,
        *,
        reopen: _Reopen | None = None,
    ) -> None:
        self._conversation = conversation
        self._body = body
        self._stream = stream
        self._reopen = reopen
        self.interaction: Interaction | None = None
        self.nodes: list[Node] | None = None

    def __iter__(self) -> Iterator[Any]:
        return _otel.traced_events(self._events(), self._conversation, self._body.get("model"))

    def _events(self) -> Iterator[Any]:
        started = False
        while True:
            try:
                with self._stream as events:
                    for event in events:
                        started = True
                        yield event
                    interaction = events.get_final_interaction()
                break
            except APIError as exc:
                # Refused before the first event for something the API forgot: opened once more.
                reopen, self._reopen = self._reopen, None
                retry = None
                if not started and reopen is not None:
                    retry = self._conversation._after_refusal(exc, self._body)
                if reopen is None or retry is None:
                    raise
                self._body, self._stream = reopen(retry)
        self.nodes = self._conversation.record(self._body, interaction)
        self.interaction = interaction

    def until_done(self) -> Interaction:
        """Consume every event and return the recorded interaction."""
        for _ in self:
            pass
        if self.interaction is None:  # pragma: no cover -- iteration either records or raises
            raise RuntimeError("the stream ended without an interaction")
        return self.interaction
