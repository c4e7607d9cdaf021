"""HTTP client of the Gemini Interactions API, sync and async, for conversations kept on the client.

``InteractionsClient`` / ``AsyncInteractionsClient`` send ``POST /interactions`` (``create`` or ``stream``),
retry what the service allows to retry, follow ``requires_continuation`` hops and merge them, and resume a
broken stream. ``GenAIClient`` / ``AsyncGenAIClient`` do the same with the official google-genai SDK
sending each request (an optional dependency, imported when one is made). The pure pieces (SSE decoding,
typed events, reassembly) are public too, for use with another transport.

The client knows nothing of the store; ``convstore.conversation`` joins the two.
"""

from convstore.client._async.client import AsyncInteractionsClient, AsyncStream
from convstore.client._async.genai import AsyncGenAIClient
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
from convstore.client._http import DEFAULT_API_REVISION, DEFAULT_API_VERSION, DEFAULT_BASE_URL
from convstore.client._sse import ServerSentEvent, SSEDecoder
from convstore.client._stream import HopAssembler, TurnAssembler
from convstore.client._sync.client import InteractionsClient, Stream
from convstore.client._sync.genai import GenAIClient

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
