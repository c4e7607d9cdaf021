"""Typed stream events (reference §7): SSE ``data`` JSON in, one class per ``event_type`` out, no I/O.

The JSON ``event_type`` decides the kind of event; the SSE ``event:`` and ``id:`` lines are ignored, as the
SDK does. An ``event_type`` this version does not know becomes ``UnknownEvent``, kept raw and non-fatal.
``data: [DONE]`` ends the stream. Malformed JSON, or a known event missing a required field, raises
``StreamError``; its message names the event's position and the field, never content.

Reprs hide content: steps and deltas show their ``type`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Literal

import attrs

from convstore._limits import DEFAULT_LIMITS, Limits, loads
from convstore.client._sse import SSEDecoder
from convstore.errors import CodecError, StreamError

__all__ = [
    "ErrorEvent",
    "EventDecoder",
    "InteractionCompleted",
    "InteractionCreated",
    "InteractionStatusUpdate",
    "StepDelta",
    "StepStart",
    "StepStop",
    "StreamEvent",
    "StreamResumed",
    "UnknownEvent",
    "parse_event",
]

JSONObject = dict[str, Any]


def _typed(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"<{value.get('type')!s}>" if "type" in value else f"<{len(value)} field(s)>"
    return "<redacted>" if value is not None else "None"


def _interaction_repr(value: Mapping[str, Any]) -> str:
    return f"<id={value.get('id')!r} status={value.get('status')!r}>"


def _hidden(value: Any) -> str:
    return "<redacted>" if value is not None else "None"


@attrs.frozen(kw_only=True)
class InteractionCreated:
    """``interaction.created``: the interaction exists; ``interaction`` holds ``id`` and ``status``."""

    event_type: ClassVar[str] = "interaction.created"
    interaction: JSONObject = attrs.field(repr=_interaction_repr)
    event_id: str | None = None
    raw: JSONObject = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class InteractionStatusUpdate:
    """``interaction.status_update``; a ``continuation_token`` here is a resume checkpoint (§8)."""

    event_type: ClassVar[str] = "interaction.status_update"
    interaction_id: str
    status: str
    continuation_token: str | None = attrs.field(default=None, repr=_hidden)
    usage: JSONObject | None = None
    event_id: str | None = None
    raw: JSONObject = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class StepStart:
    """``step.start``: step ``index`` of this response begins with the partial ``step``."""

    event_type: ClassVar[str] = "step.start"
    index: int
    step: JSONObject = attrs.field(repr=_typed)
    event_id: str | None = None
    raw: JSONObject = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class StepDelta:
    """``step.delta``: a piece of step ``index`` (``delta["type"]`` says which kind)."""

    event_type: ClassVar[str] = "step.delta"
    index: int
    delta: JSONObject = attrs.field(repr=_typed)
    metadata: JSONObject | None = attrs.field(default=None, repr=False)
    event_id: str | None = None
    raw: JSONObject = attrs.field(factory=dict, repr=False)

    @property
    def text(self) -> str:
        """The text of a ``text`` delta, else ``""``: what a UI prints as it arrives."""
        if self.delta.get("type") == "text":
            text = self.delta.get("text")
            return text if isinstance(text, str) else ""
        return ""


@attrs.frozen(kw_only=True)
class StepStop:
    """``step.stop``: step ``index`` is complete."""

    event_type: ClassVar[str] = "step.stop"
    index: int
    usage: JSONObject | None = None
    step_usage: JSONObject | None = None
    event_id: str | None = None
    raw: JSONObject = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class InteractionCompleted:
    """``interaction.completed``: the final interaction (usually without ``steps``), with ``usage``."""

    event_type: ClassVar[str] = "interaction.completed"
    interaction: JSONObject = attrs.field(repr=_interaction_repr)
    event_id: str | None = None
    raw: JSONObject = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class ErrorEvent:
    """``error``: the service failed mid-stream; ``error`` is ``{code, message}``."""

    event_type: ClassVar[str] = "error"
    error: JSONObject = attrs.field(repr=lambda e: f"<code={e.get('code')!r}>")
    event_id: str | None = None
    raw: JSONObject = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class UnknownEvent:
    """An event whose ``event_type`` this version does not know; kept raw, never fatal."""

    event_type: str
    event_id: str | None = None
    raw: JSONObject = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class StreamResumed:
    """Not a wire event: the client opened a new request to carry on the same turn.

    ``reason`` is ``continuation`` (the previous hop ended with ``requires_continuation``), ``checkpoint``
    (the connection broke and the decode resumes from the newest checkpoint token: output shown after that
    checkpoint is generated again and replaced) or ``replay`` (the connection broke and a stored
    interaction's events are replayed after the last ``event_id``; a few events may repeat). ``hop`` is the
    0-based hop the following events belong to; step indices restart at 0 in a new hop.
    """

    event_type: ClassVar[str] = "convstore.stream_resumed"
    reason: Literal["continuation", "checkpoint", "replay"]
    hop: int


StreamEvent = (
    InteractionCreated
    | InteractionStatusUpdate
    | StepStart
    | StepDelta
    | StepStop
    | InteractionCompleted
    | ErrorEvent
    | UnknownEvent
    | StreamResumed
)
"""Everything a stream yields."""


class _Fields:
    """Required-field checks that name the event's position and the field, never a value."""

    def __init__(self, d: JSONObject, where: str) -> None:
        self.d = d
        self.where = where

    def fail(self, name: str, what: str) -> StreamError:
        return StreamError(f"{self.where}: {name} {what}")

    def obj(self, name: str) -> JSONObject:
        value = self.d.get(name)
        if not isinstance(value, dict):
            raise self.fail(name, "must be an object")
        return value

    def opt_obj(self, name: str) -> JSONObject | None:
        value = self.d.get(name)
        return value if isinstance(value, dict) else None

    def string(self, name: str, d: Mapping[str, Any] | None = None) -> str:
        value = (self.d if d is None else d).get(name)
        if not isinstance(value, str):
            raise self.fail(name, "must be a string")
        return value

    def opt_str(self, name: str) -> str | None:
        value = self.d.get(name)
        return value if isinstance(value, str) else None

    def index(self) -> int:
        value = self.d.get("index")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail("index", "must be a non-negative integer")
        return value

    def interaction(self) -> JSONObject:
        value = self.obj("interaction")
        self.string("id", value)
        self.string("status", value)
        return value


def _step_delta(f: _Fields, event_id: str | None) -> StepDelta:
    delta = f.obj("delta")
    f.string("type", delta)
    return StepDelta(index=f.index(), delta=delta, metadata=f.opt_obj("metadata"), event_id=event_id, raw=f.d)


def _step_start(f: _Fields, event_id: str | None) -> StepStart:
    step = f.obj("step")
    f.string("type", step)
    return StepStart(index=f.index(), step=step, event_id=event_id, raw=f.d)


def _step_stop(f: _Fields, event_id: str | None) -> StepStop:
    usage, step_usage = f.opt_obj("usage"), f.opt_obj("step_usage")
    return StepStop(index=f.index(), usage=usage, step_usage=step_usage, event_id=event_id, raw=f.d)


def _created(f: _Fields, event_id: str | None) -> InteractionCreated:
    return InteractionCreated(interaction=f.interaction(), event_id=event_id, raw=f.d)


def _status_update(f: _Fields, event_id: str | None) -> InteractionStatusUpdate:
    return InteractionStatusUpdate(
        interaction_id=f.string("interaction_id"),
        status=f.string("status"),
        continuation_token=f.opt_str("continuation_token") or None,
        usage=f.opt_obj("usage"),
        event_id=event_id,
        raw=f.d,
    )


def _completed(f: _Fields, event_id: str | None) -> InteractionCompleted:
    return InteractionCompleted(interaction=f.interaction(), event_id=event_id, raw=f.d)


def _error(f: _Fields, event_id: str | None) -> ErrorEvent:
    return ErrorEvent(error=f.obj("error"), event_id=event_id, raw=f.d)


_PARSERS: Final[Mapping[str, Callable[[_Fields, str | None], StreamEvent]]] = {
    "step.delta": _step_delta,
    "step.start": _step_start,
    "step.stop": _step_stop,
    "interaction.created": _created,
    "interaction.status_update": _status_update,
    "interaction.completed": _completed,
    "error": _error,
}


def parse_event(data: str, *, position: int = 0, limits: Limits = DEFAULT_LIMITS) -> StreamEvent:
    """Parses the ``data`` of one SSE event into a typed event.

    Args:
        data: The event's data: a JSON object with an ``event_type``.
        position: The event's 0-based position in the stream, for error messages.
        limits: ``max_depth`` bounds the data's nesting (scanned before it is parsed).

    Returns:
        The typed event (``UnknownEvent`` for an unknown ``event_type``).

    Raises:
        StreamError: The data is not a JSON object (or not strict JSON: NaN, a key given twice), has no
            string ``event_type``, or a known event lacks a required field.
        LimitExceededError: The data is nested deeper than ``limits.max_depth``.
    """
    where = f"stream event #{position}"
    try:
        d = loads(data, path=where, limits=limits)
    except CodecError as exc:
        raise StreamError(f"data is not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise StreamError(f"{where}: data must be a JSON object, got {type(d).__name__}")
    event_type = d.get("event_type")
    event_id = d.get("event_id")
    if event_type == "step.delta":  # the hot path, checked inline; failures take the general path below
        delta, index = d.get("delta"), d.get("index")
        if type(delta) is dict and type(index) is int and index >= 0 and type(delta.get("type")) is str:
            metadata = d.get("metadata")
            return StepDelta(
                index=index,
                delta=delta,
                metadata=metadata if type(metadata) is dict else None,
                event_id=event_id if type(event_id) is str else None,
                raw=d,
            )
    f = _Fields(d, where)
    event_type = f.string("event_type")
    event_id = f.opt_str("event_id")
    parser = _PARSERS.get(event_type)
    if parser is None:
        return UnknownEvent(event_type=event_type, event_id=event_id, raw=d)
    return parser(f, event_id)


class EventDecoder:
    """Bytes of one SSE response in, typed events out; stops at ``data: [DONE]``.

    Attributes:
        done: ``data: [DONE]`` was received; later bytes are ignored.
        count: How many events were decoded (including ``[DONE]``).
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._sse = SSEDecoder(max_line=limits.max_sse_line_bytes, max_event=limits.max_sse_event_bytes)
        self.done = False
        self.count = 0

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        """Decodes one chunk of the response body.

        Args:
            chunk: The next bytes, split anywhere.

        Returns:
            The events this chunk completed.

        Raises:
            StreamError: An event's data is malformed.
        """
        if self.done:
            return []
        out: list[StreamEvent] = []
        for sse in self._sse.feed(chunk):
            position = self.count
            self.count += 1
            data = sse.data
            if data == "[DONE]":
                self.done = True
                break
            if not data.strip():
                continue  # an empty keep-alive event carries nothing
            out.append(parse_event(data, position=position, limits=self._limits))
        return out

    def end(self) -> bool:
        """Marks the end of the body; returns whether a truncated event was discarded."""
        return self._sse.end()
