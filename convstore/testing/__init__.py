"""An offline emulator of the Gemini Interactions API, for tests of convstore and of apps built on it.

``Emulator`` answers ``POST /v1beta/interactions`` (also ``/v1/``, ``?alt=sse``) with deterministic,
scriptable replies, JSON or SSE, validates requests like the service, reports usage, keeps stored
interactions (forgotten after ``retention``), speaks the Files API (resumable uploads that expire after 48
hours by its clock, ``ManualClock`` in tests), and records every request. Use it through
``emulator.transport()`` (an httpx transport for sync and async clients) or ``EmulatorServer(emulator)`` (a
local HTTP server, e.g. for the google-genai SDK)::

    emulator = Emulator()
    emulator.script(text_reply("Hello!"))
    with httpx.Client(transport=emulator.transport()) as http:
        client = InteractionsClient("test-key", http_client=http)
        interaction = client.create({"model": "gemini-3-flash-preview", "store": False, "input": "Hi"})
"""

from convstore.testing._emulator import Emulator, EmulatorResponse, RecordedRequest, Responder
from convstore.testing._files import ManualClock
from convstore.testing._replies import (
    ErrorReply,
    Reply,
    continuation_reply,
    error_reply,
    function_call_reply,
    function_call_step,
    output_step,
    rate_limited,
    stream_error_reply,
    text_reply,
    thought_step,
)
from convstore.testing._server import EmulatorServer
from convstore.testing._transport import EmulatorTransport

__all__ = [
    "Emulator",
    "EmulatorResponse",
    "EmulatorServer",
    "EmulatorTransport",
    "ErrorReply",
    "ManualClock",
    "RecordedRequest",
    "Reply",
    "Responder",
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
