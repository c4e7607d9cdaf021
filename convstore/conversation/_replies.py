"""Reading a reply in every shape ``record()`` takes: pure functions shared by the sync and async
conversations (iterating a stream is theirs to do).

A reply is an interaction (convstore's ``Interaction``, the API's JSON as a dict or text, or an object of
the official ``google-genai`` SDK), or the events of a streamed one: convstore's own typed events, the SDK's
event objects, or their JSON. Events are reassembled by convstore's stream assembly (``TurnAssembler``,
the same code its client runs), hop by hop, into the interaction the non-streamed call would have returned,
so a streamed turn is stored exactly as the non-streamed one.

Nothing is ever half-recorded: events that do not make a whole stream (one iterated before ``record()``
saw its start, or one that ended before ``interaction.completed``), and a completed interaction without
steps (a stream's final ``interaction``, which carries none), are refused with a ``CodecError`` that says
what to pass instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from convstore import codec
from convstore._limits import DEFAULT_LIMITS, Limits, check_value, loads
from convstore.client._events import (
    ErrorEvent,
    InteractionCompleted,
    InteractionCreated,
    InteractionStatusUpdate,
    StepDelta,
    StepStart,
    StepStop,
    StreamEvent,
    StreamResumed,
    UnknownEvent,
    parse_event,
)
from convstore.client._stream import TurnAssembler
from convstore.errors import CodecError, StreamError
from convstore.model._interaction import Interaction
from convstore.model._sdk import is_sdk_object, sdk_interaction_json, sdk_json

__all__ = ["interaction_from_events", "interaction_from_reply", "is_interaction_like"]

_EVENT_TYPES: Final = (
    InteractionCreated,
    InteractionStatusUpdate,
    StepStart,
    StepDelta,
    StepStop,
    InteractionCompleted,
    ErrorEvent,
    UnknownEvent,
    StreamResumed,
)

# Statuses whose interaction holds what the model produced: a completed answer, or the calls it waits on.
_MUST_HAVE_STEPS: Final = frozenset({"completed", "requires_action"})

# What to pass instead of a reply record() cannot take whole.
_INSTEAD: Final = "pass the stream itself, or the list of all its events: record(body, events)"


def is_interaction_like(reply: object) -> bool:
    """Whether ``reply`` is read as one interaction or a list of events, never iterated as a stream."""
    return isinstance(reply, (Interaction, str, bytes, Mapping, list, tuple)) or is_sdk_object(reply)


def interaction_from_reply(reply: Any, limits: Limits = DEFAULT_LIMITS) -> Interaction:
    """Our ``Interaction`` from a reply: ours, the API's JSON (a dict or its text), an object of the
    official SDK, or the events of a streamed reply (a list of them, or an iterator such as the SDK's
    sync stream, which is consumed here).

    Raises:
        CodecError: the reply is none of these, is not strict JSON, has no ``steps`` list, is an interaction
            that should have steps and has none, or is a single stream event.
        LimitExceededError: the reply is nested deeper than ``limits.max_depth`` or longer than
            ``limits.max_reply_bytes``.
    """
    if isinstance(reply, Interaction):
        interaction = reply
    elif isinstance(reply, (list, tuple)):
        return interaction_from_events(reply)
    elif _is_event(reply):
        raise CodecError([("interaction", f"a single stream event, not a reply: {_INSTEAD}")])
    else:
        if isinstance(reply, (str, bytes)):
            reply = loads(
                reply,
                path="interaction",
                limits=limits,
                max_bytes=limits.max_reply_bytes,
                limit_name="max_reply_bytes",
            )
        elif isinstance(reply, Mapping):
            check_value(
                reply,
                path="interaction",
                limits=limits,
                max_bytes=limits.max_reply_bytes,
                limit_name="max_reply_bytes",
            )
        elif is_sdk_object(reply):
            reply = sdk_interaction_json(reply)
        elif not isinstance(reply, Mapping) and isinstance(reply, Iterable):
            return interaction_from_events(list(reply))
        if not isinstance(reply, Mapping):
            raise CodecError([("interaction", f"expected an interaction, got {type(reply).__name__}")])
        steps = reply.get("steps", [])
        if not isinstance(steps, list):
            raise CodecError([("interaction.steps", "expected an array")])
        interaction = Interaction.from_json(reply)
    if not interaction.steps and interaction.status in _MUST_HAVE_STEPS:
        raise CodecError(
            [
                (
                    "interaction.steps",
                    f"none, though the status is {interaction.status!r}: a streamed reply's final "
                    f"interaction carries no steps; {_INSTEAD}",
                )
            ]
        )
    return interaction


def _is_event(value: object) -> bool:
    if isinstance(value, _EVENT_TYPES):
        return True
    return is_sdk_object(value) and isinstance(getattr(value, "event_type", None), str)


def _typed(event: Any, position: int) -> StreamEvent:
    """One event as convstore's typed event: ours as is, the SDK's and raw JSON parsed as the wire's."""
    if isinstance(event, _EVENT_TYPES):
        return event
    if is_sdk_object(event):
        event = sdk_json(event)
    if not isinstance(event, Mapping):
        raise CodecError([(f"events[{position}]", f"expected a stream event, got {type(event).__name__}")])
    try:
        return parse_event(codec.dumps(event), position=position)
    except StreamError as exc:
        raise CodecError([(f"events[{position}]", str(exc))]) from None


def interaction_from_events(events: Sequence[Any]) -> Interaction:
    """The interaction a streamed turn's events assemble into, as the non-streamed call returns it.

    A turn may span hops (the SDK and convstore's client both continue a ``requires_continuation`` decode
    in new requests): each ``interaction.completed`` closes one, and the hops are merged as convstore's
    client merges them. A hop that broke at a checkpoint and was resumed in a new request (an
    ``interaction.created`` before the broken hop completed, or convstore's ``StreamResumed`` marker) is cut
    back to its checkpoint, as the client does.

    Raises:
        CodecError: the events do not make a whole stream (see the module docstring).
        APIError: the stream carries an ``error`` event: the turn failed.
    """
    turn = TurnAssembler()
    started = False
    try:
        for position, raw in enumerate(events):
            event = _typed(raw, position)
            if isinstance(event, StreamResumed):
                if event.reason == "checkpoint":
                    turn.rewind_to_checkpoint()
                continue
            if isinstance(event, UnknownEvent):
                continue  # an event type this version does not know carries nothing to assemble
            if isinstance(event, InteractionCreated):
                broken = turn.current.interaction_id
                if broken is not None and broken != event.interaction["id"]:
                    turn.rewind_to_checkpoint()  # the hop broke; a new one resumed from its checkpoint
                started = True
            elif not started:
                raise CodecError(
                    [
                        (
                            f"events[{position}]",
                            f"a {event.event_type} before interaction.created: the stream was iterated "
                            "before record() saw its start; collect every event as you iterate and "
                            "record(body, events)",
                        )
                    ]
                )
            turn.feed(event)
            if isinstance(event, InteractionCompleted):
                turn.finish_hop()
    except StreamError as exc:
        raise CodecError([("events", str(exc))]) from None
    if turn.current.interaction_id is not None or not turn.hops:
        what = "no events" if not started else "no interaction.completed at the end"
        raise CodecError(
            [
                (
                    "events",
                    f"{what}: a stream is recorded whole, once it completed (one iterated before record() "
                    "saw it has lost its events: collect them as you iterate and record(body, events))",
                )
            ]
        )
    return interaction_from_reply(Interaction.from_hops(turn.hops))
