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

Without ``opentelemetry-api`` the wrappers return what they wrap unchanged: no wrapper, no cost (``record``
enters a shared no-op span). With it but no tracer provider configured (the API's default, or its no-op
provider), a turn makes no span either: the API's no-op span would record nothing and only carry its
parent's context on, which the turn then keeps as it is. The conversation layer applies them and hands
the reply its turn read (``record_span(...).replied``): nothing here reads a reply or imports the
conversation layer.
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

from convstore._version import __version__
from convstore._wire import plain_input

__all__ = ["CAPTURE_CONTENT_ENV", "PROVIDER", "record_span", "traced_events", "traced_send"]

PROVIDER: Final = "gcp.gemini"
CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

F = TypeVar("F", bound=Callable[..., Any])


def _load_trace() -> ModuleType | None:
    try:
        return importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None


_trace: Final = _load_trace()

# The span of the turn under way in this context (a send(), or the step of a stream's iteration that
# records it), for the record() inside it to put the reply on.
_turn_span: ContextVar[Any] = ContextVar("convstore_turn_span", default=None)


def _tracing() -> bool:
    """Whether the app configured a tracer provider, so that a span made now may be recorded."""
    assert _trace is not None  # noqa: S101 -- only asked when tracing is possible
    provider = _trace.get_tracer_provider()
    return not isinstance(provider, (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider))


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
    tracer = _trace.get_tracer("convstore", __version__)
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


def _reply_attributes(span: Any, reply: Any) -> None:
    """The reply's id, model, status and usage (``reply``: convstore's ``Interaction``)."""
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


def _content(span: Any, body: Mapping[str, Any], reply: Any) -> None:
    """What was sent and what came back, on ``span`` (the app opted in to recording content)."""
    span.set_attribute("gen_ai.input.messages", _json(plain_input(body.get("input"))))
    instruction = body.get("system_instruction")
    if instruction is not None:
        span.set_attribute("gen_ai.system_instructions", _json(instruction))
    span.set_attribute("gen_ai.output.messages", _json(reply.steps))


class _RecordSpan:
    """The span of one ``record``; ``replied`` puts the reply on it (and on the turn's span around it)."""

    __slots__ = ("_current", "_span")

    def __init__(self, span: Any) -> None:
        self._span = span
        self._current: Any = None

    def __enter__(self) -> _RecordSpan:
        if self._span is not None:
            self._current = _current(self._span)
            self._current.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._span is not None:
            try:
                self._current.__exit__(*exc_info)
            finally:
                self._span.end()

    def replied(self, body: Mapping[str, Any], reply: Any) -> None:
        """The reply ``record`` read (convstore's ``Interaction``), on this span and the turn's."""
        if self._span is None:
            return
        turn = _turn_span.get()
        spans = [self._span] if turn is None else [self._span, turn]
        capture = _capture_content()
        for span in spans:
            _reply_attributes(span, reply)
            if capture:
                _content(span, body, reply)


_NO_SPAN: Final = _RecordSpan(None)


def record_span(conversation: Any, body: Mapping[str, Any]) -> _RecordSpan:
    """A ``record {model}`` span (kind ``INTERNAL``) around one ``record`` of ``conversation``; a no-op
    without ``opentelemetry-api``. A child of the ``send`` or stream span when one of those records."""
    if _trace is None or not _tracing():
        return _NO_SPAN
    model = body.get("model") if isinstance(body, Mapping) else None
    return _RecordSpan(_start(conversation, "record", "INTERNAL", model))


def traced_send(fn: F) -> F:
    """``send(self, input, *, client, ..., **overrides)`` in a ``chat`` span (sync or async); the ``record``
    inside puts the reply on it."""
    if _trace is None:
        return fn

    def start(conversation: Any, overrides: Mapping[str, Any]) -> Any:
        model = overrides.get("model", conversation.info.model)
        return _start(conversation, "chat", "CLIENT", model)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def send_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not _tracing():
                return await fn(self, *args, **kwargs)
            span = start(self, kwargs)
            token = _turn_span.set(span)
            try:
                with _current(span):
                    return await fn(self, *args, **kwargs)
            finally:
                _turn_span.reset(token)
                span.end()

        return send_async  # type: ignore[return-value]  # the signature of fn

    @functools.wraps(fn)
    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _tracing():
            return fn(self, *args, **kwargs)
        span = start(self, kwargs)
        token = _turn_span.set(span)
        try:
            with _current(span):
                return fn(self, *args, **kwargs)
        finally:
            _turn_span.reset(token)
            span.end()

    return send  # type: ignore[return-value]  # the signature of fn


E = TypeVar("E", AsyncIterator[Any], Iterator[Any])


def traced_events(events: E, conversation: Any, model: Any) -> E:
    """A streamed turn's events (a sync or async generator that records the turn after the last) in a
    ``chat`` span from the first event to the recorded turn; ``events`` itself without tracing (nor a
    tracer provider, when the turn starts).

    The span is current only while the stream works (between events), never across a ``yield``: the
    consumer may resume the iteration from another task or context.
    """
    if _trace is None or not _tracing():
        return events
    if isinstance(events, AsyncIterator):
        return _traced_async(events, conversation, model)  # type: ignore[return-value]
    return _traced_sync(events, conversation, model)


@contextmanager
def _step(span: Any) -> Iterator[None]:
    """One step of a stream's iteration: its span current, and the turn's for the ``record`` at the end."""
    token = _turn_span.set(span)
    try:
        with _current(span):
            yield
    finally:
        _turn_span.reset(token)


async def _traced_async(events: Any, conversation: Any, model: Any) -> AsyncIterator[Any]:
    span = _start(conversation, "chat", "CLIENT", model)
    try:
        while True:
            with _step(span):
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    break
            yield event
    finally:
        await events.aclose()
        span.end()


def _traced_sync(events: Any, conversation: Any, model: Any) -> Iterator[Any]:
    span = _start(conversation, "chat", "CLIENT", model)
    try:
        while True:
            with _step(span):
                try:
                    event = next(events)
                except StopIteration:
                    break
            yield event
    finally:
        events.close()
        span.end()
