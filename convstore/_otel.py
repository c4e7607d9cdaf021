"""Optional OpenTelemetry spans of ``send``, ``stream`` and ``record``, after the GenAI semantic conventions.

With ``opentelemetry-api`` installed (``pip install "convstore[otel]"``) each turn makes a span through the
global tracer provider (a no-op until the app configures the SDK):

- ``send`` and a streamed turn's iteration: ``chat {model}``, kind ``CLIENT``;
- ``record``: ``record {model}``, kind ``INTERNAL`` (a child of the turn's span when ``send`` or ``stream``
  records, and the only span of a turn the app sent itself, with the official SDK say).

Attributes: ``gen_ai.operation.name`` (``chat``), ``gen_ai.provider.name`` (``gcp.gemini``),
``gen_ai.conversation.id`` (the conversation's id), ``gen_ai.request.model``, and from the reply
``gen_ai.response.id``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens`` and ``gen_ai.usage.cache_read.input_tokens``; ``convstore.branch`` and
``convstore.interaction.status`` besides. A failure sets the span's status to error with ``error.type``
(the exception's class; messages never hold content, but are not recorded either).

Message content is never recorded unless the app opts in with the conventions' environment variable
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``: then ``gen_ai.input.messages`` holds the
``input`` sent (with ``store: false`` the replayed history too), ``gen_ai.output.messages`` the reply's
steps (both the Interactions API's wire JSON) and ``gen_ai.system_instructions`` the system instruction. A
``send`` or stream span gets them once the turn is recorded, so a failed call has none.

Without ``opentelemetry-api`` the decorators return the functions unchanged: no wrapper, no cost. The
conversation module applies them; this one reads replies with its ``interaction_from_reply`` (imported when a
span needs it).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import Any, Final, TypeVar

from convstore._wire import plain_input

__all__ = ["CAPTURE_CONTENT_ENV", "PROVIDER", "traced_record", "traced_send", "traced_stream"]

PROVIDER: Final = "gcp.gemini"
CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

F = TypeVar("F", bound=Callable[..., Any])


def _load_trace() -> ModuleType | None:
    try:
        return importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None


_trace: Final = _load_trace()

# The span of the send() under way in this context, for the record() inside it to add content to. (Only
# send: a coroutine runs in one context, while a stream's iteration may hop between tasks.)
_send_span: ContextVar[Any] = ContextVar("convstore_send_span", default=None)


def _version() -> str:
    from convstore import __version__  # noqa: PLC0415 -- convstore imports this module first

    return __version__


def _capture_content() -> bool:
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _start(conversation: Any, operation: str, kind: str, model: Any) -> Any:
    """A started span (not made current) of ``operation`` on ``conversation``."""
    assert _trace is not None  # noqa: S101 -- the decorators only wrap when tracing is possible
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.conversation.id": conversation.id,
        "convstore.branch": conversation.branch,
    }
    name = operation
    if isinstance(model, str) and model:
        attributes["gen_ai.request.model"] = model
        name = f"{operation} {model}"
    tracer = _trace.get_tracer("convstore", _version())
    return tracer.start_span(name, kind=getattr(_trace.SpanKind, kind), attributes=attributes)


@contextmanager
def _current(span: Any) -> Iterator[None]:
    """``span`` made current for a while; an exception marks it failed (with its class, no message)."""
    assert _trace is not None  # noqa: S101 -- as above
    with _trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
        try:
            yield
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(_trace.Status(_trace.StatusCode.ERROR))
            raise


def _reply_attributes(span: Any, interaction: Any) -> None:
    """The reply's id, model, status and usage (``interaction``: convstore's, API JSON or the SDK's)."""
    reply = _reply(interaction)
    if reply is None:
        return
    if reply.id:
        span.set_attribute("gen_ai.response.id", reply.id)
    if reply.model:
        span.set_attribute("gen_ai.response.model", reply.model)
    span.set_attribute("convstore.interaction.status", reply.status)
    usage = reply.usage
    if usage is not None:
        for name, value in (
            ("gen_ai.usage.input_tokens", usage.total_input_tokens),
            ("gen_ai.usage.output_tokens", usage.total_output_tokens),
            ("gen_ai.usage.cache_read.input_tokens", usage.total_cached_tokens),
        ):
            if value is not None:
                span.set_attribute(name, value)


def _reply(interaction: Any) -> Any:
    """The reply as convstore's ``Interaction``, or None; a stream is never read here (``record()`` reads
    it, once): its span goes without the response's attributes."""
    from convstore.conversation._replies import (  # noqa: PLC0415 -- no import cycle
        interaction_from_reply,
        is_interaction_like,
    )

    if interaction is None or not is_interaction_like(interaction):
        return None
    try:
        return interaction_from_reply(interaction)
    except ValueError:  # malformed: record() raises for it, and its span says so
        return None


def _content(spans: list[Any], body: Mapping[str, Any], interaction: Any) -> None:
    """What was sent and what came back, on ``spans``, if the app opted in to recording content."""
    if not _capture_content():
        return
    reply = _reply(interaction)
    for span in spans:
        span.set_attribute("gen_ai.input.messages", _json(plain_input(body.get("input"))))
        instruction = body.get("system_instruction")
        if instruction is not None:
            span.set_attribute("gen_ai.system_instructions", _json(instruction))
        if reply is not None:
            span.set_attribute("gen_ai.output.messages", _json(reply.steps))


def traced_send(fn: F) -> F:
    """``send(self, input, *, client, ..., **overrides)`` in a ``chat`` span (sync or async)."""
    if _trace is None:
        return fn

    def start(conversation: Any, overrides: Mapping[str, Any]) -> Any:
        model = overrides.get("model", conversation.info.model)
        return _start(conversation, "chat", "CLIENT", model)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def send_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            span = start(self, kwargs)
            token = _send_span.set(span)
            try:
                with _current(span):
                    interaction = await fn(self, *args, **kwargs)
                    _reply_attributes(span, interaction)
                    return interaction
            finally:
                _send_span.reset(token)
                span.end()

        return send_async  # type: ignore[return-value]  # the signature of fn

    @functools.wraps(fn)
    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = start(self, kwargs)
        token = _send_span.set(span)
        try:
            with _current(span):
                interaction = fn(self, *args, **kwargs)
                _reply_attributes(span, interaction)
                return interaction
        finally:
            _send_span.reset(token)
            span.end()

    return send  # type: ignore[return-value]  # the signature of fn


def traced_stream(fn: F) -> F:
    """A turn stream's ``__aiter__`` / ``__iter__`` (it reads ``_conversation``, ``_body`` and, once done,
    ``interaction``) in a ``chat`` span from the first event to the recorded turn.

    The span is current only while the stream works (between events), never across a ``yield``: the
    consumer may resume the iteration from another task or context.
    """
    if _trace is None:
        return fn

    def start(stream: Any) -> Any:
        return _start(stream._conversation, "chat", "CLIENT", stream._body.get("model"))

    def finish(stream: Any, span: Any) -> None:
        _reply_attributes(span, stream.interaction)
        _content([span], stream._body, stream.interaction)

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def iterate_async(self: Any) -> AsyncIterator[Any]:
            span = start(self)
            events = fn(self)
            try:
                while True:
                    with _current(span):
                        try:
                            event = await events.__anext__()
                        except StopAsyncIteration:
                            break
                    yield event
                finish(self, span)
            finally:
                await events.aclose()
                span.end()

        return iterate_async  # type: ignore[return-value]  # the signature of fn

    @functools.wraps(fn)
    def iterate(self: Any) -> Iterator[Any]:
        span = start(self)
        events = fn(self)
        try:
            while True:
                with _current(span):
                    try:
                        event = next(events)
                    except StopIteration:
                        break
                yield event
            finish(self, span)
        finally:
            events.close()
            span.end()

    return iterate  # type: ignore[return-value]  # the signature of fn


def traced_record(fn: F) -> F:
    """``record(self, body, interaction)`` in a ``record`` span (sync or async)."""
    if _trace is None:
        return fn

    def start(conversation: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        body, interaction = (*args, None, None)[:2]
        body = kwargs.get("body", body)
        interaction = kwargs.get("interaction", interaction)
        model = body.get("model") if isinstance(body, Mapping) else None
        span = _start(conversation, "record", "INTERNAL", model)
        _reply_attributes(span, interaction)
        turn = _send_span.get()
        if isinstance(body, Mapping):
            _content([span] if turn is None else [span, turn], body, interaction)
        return span

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def record_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            span = start(self, args, kwargs)
            try:
                with _current(span):
                    return await fn(self, *args, **kwargs)
            finally:
                span.end()

        return record_async  # type: ignore[return-value]  # the signature of fn

    @functools.wraps(fn)
    def record(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = start(self, args, kwargs)
        try:
            with _current(span):
                return fn(self, *args, **kwargs)
        finally:
            span.end()

    return record  # type: ignore[return-value]  # the signature of fn
