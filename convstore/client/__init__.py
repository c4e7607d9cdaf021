"""HTTP client of the Gemini Interactions API, sync and async, for conversations kept on the client.

``InteractionsClient`` / ``AsyncInteractionsClient`` send ``POST /interactions`` (``create`` or ``stream``),
retry what the service allows to retry, follow ``requires_continuation`` hops and merge them, and resume a
broken stream. ``GenAIClient`` / ``AsyncGenAIClient`` do the same with the official google-genai SDK
sending each request (an optional dependency, imported when one is made). The pure pieces (SSE decoding,
typed events, reassembly) are public too, for use with another transport.

The client knows nothing of the store; ``convstore.conversation`` joins the two.
"""

import importlib
from typing import TYPE_CHECKING, Any

from convstore.client._events import (
    ErrorEvent,
    EventDecoder,
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
from convstore.client._sse import ServerSentEvent, SSEDecoder
from convstore.client._stream import HopAssembler, TurnAssembler

if TYPE_CHECKING:
    from convstore.client._async.client import AsyncInteractionsClient, AsyncStream
    from convstore.client._async.genai import AsyncGenAIClient
    from convstore.client._http import DEFAULT_API_REVISION, DEFAULT_API_VERSION, DEFAULT_BASE_URL
    from convstore.client._sync.client import InteractionsClient, Stream
    from convstore.client._sync.genai import GenAIClient

# The clients and the HTTP settings, imported when first used (PEP 562): they import httpx, which a program
# that only reads and writes its store (the ``convstore`` command's ``ls``, ``show``, ``search``) never needs.
_LAZY: dict[str, str] = {
    "AsyncInteractionsClient": "convstore.client._async.client",
    "AsyncStream": "convstore.client._async.client",
    "AsyncGenAIClient": "convstore.client._async.genai",
    "InteractionsClient": "convstore.client._sync.client",
    "Stream": "convstore.client._sync.client",
    "GenAIClient": "convstore.client._sync.genai",
    "DEFAULT_API_REVISION": "convstore.client._http",
    "DEFAULT_API_VERSION": "convstore.client._http",
    "DEFAULT_BASE_URL": "convstore.client._http",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DEFAULT_API_REVISION",
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "AsyncGenAIClient",
    "AsyncInteractionsClient",
    "AsyncStream",
    "ErrorEvent",
    "EventDecoder",
    "GenAIClient",
    "HopAssembler",
    "InteractionCompleted",
    "InteractionCreated",
    "InteractionStatusUpdate",
    "InteractionsClient",
    "SSEDecoder",
    "ServerSentEvent",
    "StepDelta",
    "StepStart",
    "StepStop",
    "Stream",
    "StreamEvent",
    "StreamResumed",
    "TurnAssembler",
    "UnknownEvent",
    "parse_event",
]
