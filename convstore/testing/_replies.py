"""What the emulator answers: scripted replies and helpers to build them.

A ``Reply`` is the model's output for one create request: its steps (templates: a ``thought`` step without a
``signature`` gets one issued by the emulator, a ``function_call`` without an ``id`` gets one too), the final
status, and options that shape the delivery: continuation hops, checkpoint tokens, a connection drop, an
in-stream ``error`` event. An ``ErrorReply`` is an HTTP error in the service's error shape (reference E6).

Helpers cover the common cases::

    emulator.script(text_reply("Hello"), function_call_reply("get_weather", {"city": "Lisbon"}))
    emulator.script(rate_limited(retry_after=2), text_reply("after the 429"))
    emulator.script(continuation_reply(["part one ", "part two"]))
    emulator.script(text_reply("a long answer", break_after=5))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "ErrorReply",
    "Reply",
    "continuation_reply",
    "error_reply",
    "function_call_reply",
    "function_call_step",
    "output_step",
    "rate_limited",
    "stream_error_reply",
    "text_reply",
    "thought_step",
]

JSONObject = dict[str, Any]

_STATUS_NAMES: Mapping[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@attrs.frozen(kw_only=True)
class Reply:
    """The model's output for one create request.

    Attributes:
        steps: The output steps (templates, see the module docstring).
        status: The final status (``completed``, ``requires_action``, ...).
        continuation_hops: Steps of further hops: with ``n`` of them the reply is delivered in ``n + 1``
            hops, each but the last ending ``requires_continuation`` with a continuation token.
        checkpoints: When streaming, send an ``interaction.status_update`` with a checkpoint
            ``continuation_token`` after every ``step.stop``; resuming from it yields the remaining steps.
        break_after: When streaming, drop the connection after this many SSE events (first delivery
            only: a resume or a replay of the same interaction is delivered whole).
        error_event: When streaming, send this ``error`` object (``{code, message}``) as an ``error`` event
            after ``error_after`` events and end the stream; a non-streamed request gets HTTP 500 instead.
        error_after: See ``error_event``.
        usage: Usage to report instead of the computed one.
        headers: Extra response headers.
    """

    steps: list[JSONObject] = attrs.field(factory=list, repr=lambda steps: f"<{len(steps)} step(s)>")
    status: str = "completed"
    continuation_hops: list[list[JSONObject]] = attrs.field(factory=list, repr=lambda hops: f"<{len(hops)}>")
    checkpoints: bool = False
    break_after: int | None = None
    error_event: JSONObject | None = None
    error_after: int = 2
    usage: JSONObject | None = None
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ErrorReply:
    """An HTTP error response.

    Attributes:
        status_code: The HTTP status.
        body: The JSON body (the service's ``{"error": {...}}``).
        headers: Extra response headers (``Retry-After``, ...).
    """

    status_code: int
    body: JSONObject = attrs.field(repr=False)
    headers: dict[str, str] = attrs.field(factory=dict)


def thought_step(summary: str | None = None, *, signature: str | None = None) -> JSONObject:
    """A ``thought`` step template; the emulator issues the ``signature`` unless one is given."""
    step: JSONObject = {"type": "thought"}
    if signature is not None:
        step["signature"] = signature
    if summary is not None:
        step["summary"] = [{"type": "text", "text": summary}]
    return step


def output_step(text: str) -> JSONObject:
    """A ``model_output`` step with one text content item."""
    return {"type": "model_output", "content": [{"type": "text", "text": text}]}


def function_call_step(name: str, arguments: Mapping[str, Any], *, call_id: str | None = None) -> JSONObject:
    """A ``function_call`` step template; the emulator issues the ``id`` unless one is given."""
    step: JSONObject = {"type": "function_call"}
    if call_id is not None:
        step["id"] = call_id
    step["name"] = name
    step["arguments"] = dict(arguments)
    return step


def text_reply(text: str, *, thought: str | None = "Answering directly.", **options: Any) -> Reply:
    """A thought (with a signature) and a ``model_output`` with ``text``.

    Args:
        text: The answer.
        thought: The thought's summary text; ``None`` for a thought with only a signature.
        **options: Other ``Reply`` fields (``break_after``, ``checkpoints``, ...).
    """
    return Reply(steps=[thought_step(thought), output_step(text)], **options)


def function_call_reply(
    name: str,
    arguments: Mapping[str, Any],
    *,
    call_id: str | None = None,
    thought: str | None = "A tool is needed.",
    **options: Any,
) -> Reply:
    """A thought and one ``function_call``, status ``requires_action``.

    For parallel calls build ``Reply(steps=[thought_step(), function_call_step(...), ...],
    status="requires_action")``.
    """
    steps = [thought_step(thought), function_call_step(name, arguments, call_id=call_id)]
    return Reply(steps=steps, status="requires_action", **options)


def continuation_reply(parts: Sequence[str], *, thought: str | None = None, **options: Any) -> Reply:
    """A text answer decoded in ``len(parts)`` hops (reference §8, E7).

    Hop 1 holds a thought and a ``model_output`` with ``parts[0]``; every later hop a ``model_output`` with
    the next part. All hops but the last end ``requires_continuation``.
    """
    if not parts:
        raise ValueError("continuation_reply needs at least one part")
    return Reply(
        steps=[thought_step(thought), output_step(parts[0])],
        continuation_hops=[[output_step(part)] for part in parts[1:]],
        **options,
    )


def error_reply(
    status_code: int,
    message: str = "Request contains an invalid argument.",
    *,
    status: str | None = None,
    string_code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> ErrorReply:
    """An HTTP error in the service's shape.

    Args:
        status_code: The HTTP status.
        message: The error message.
        status: Google's status name (default: the usual one for ``status_code``).
        string_code: Use the SDK's shape instead: ``code`` is this string and there is no ``status``.
        headers: Extra response headers.
    """
    error: JSONObject
    if string_code is not None:
        error = {"code": string_code, "message": message}
    else:
        name = status or _STATUS_NAMES.get(status_code, "UNKNOWN")
        error = {"code": status_code, "message": message, "status": name}
    return ErrorReply(status_code=status_code, body={"error": error}, headers=dict(headers or {}))


def rate_limited(retry_after: float | None = 1, *, milliseconds: bool = False) -> ErrorReply:
    """HTTP 429 ``RESOURCE_EXHAUSTED`` with ``Retry-After`` (or ``retry-after-ms``)."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        if milliseconds:
            headers["retry-after-ms"] = f"{retry_after:g}"
        else:
            headers["Retry-After"] = f"{retry_after:g}"
    return error_reply(429, "Resource has been exhausted (e.g. check quota).", headers=headers)


def stream_error_reply(
    code: int | str = "internal",
    message: str = "An internal error occurred while generating the response.",
    *,
    after: int = 2,
    base: Reply | None = None,
) -> Reply:
    """A streamed reply that sends an ``error`` event after ``after`` events (``stream_error_event.json``)."""
    reply = base or text_reply("This answer is cut short by an error event.")
    return attrs.evolve(reply, error_event={"code": code, "message": message}, error_after=after)
