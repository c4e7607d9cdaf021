"""The official google-genai SDK doing the HTTP for conv.send() and conv.stream(): every example of the API
guide, sync and async, recorded byte for byte as convstore's own InteractionsClient records it.

Each scenario runs twice against two identical emulators (same seed, same script): once with
``InteractionsClient`` on the emulator's httpx transport, once with ``GenAIClient`` and a real
``genai.Client`` on the emulator's local server. The branch's history JSON, the exchanges, the events the
stream yielded and the requests the emulator received must be the same.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from flavours import SyncProxy

import convstore
from convstore.testing import (
    Emulator,
    EmulatorServer,
    continuation_reply,
    error_reply,
    function_call_reply,
    rate_limited,
    stream_error_reply,
    text_reply,
)

genai = pytest.importorskip("google.genai", reason="the google-genai SDK is not installed")

MODEL = "gemini-3-flash-preview"
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n a tiny image").decode()
WEATHER = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def sdk_for(server: EmulatorServer) -> Any:
    options = {"base_url": server.base_url, "api_version": "v1beta"}
    return genai.Client(api_key="test-key", http_options=options)


@contextmanager
def client_of(kind: str, emulator: Emulator, flavour: str, portal: Any) -> Iterator[Any]:
    """A client of the flavour: convstore's own on the transport, or the SDK adapter on the local server."""
    if kind == "convstore":
        if flavour == "sync":
            with httpx.Client(transport=emulator.transport()) as http:
                yield convstore.InteractionsClient("test-key", http_client=http)
            return
        async_http = httpx.AsyncClient(transport=emulator.transport())
        yield SyncProxy(convstore.AsyncInteractionsClient("test-key", http_client=async_http), portal)
        portal.call(async_http.aclose())
        return
    with EmulatorServer(emulator) as server:
        sdk = sdk_for(server)
        try:
            if flavour == "sync":
                yield convstore.GenAIClient(sdk)
            else:
                yield SyncProxy(convstore.AsyncGenAIClient(sdk), portal)
                portal.call(sdk.aio.aclose())
        finally:
            sdk.close()


def consume(turn: Any) -> list[Any]:
    return [(type(event).__name__, getattr(event, "raw", None)) for event in turn]


# Each scenario: the conversation's settings, and what to do with a conversation, a client and the emulator.
# It returns what it observed beyond the history (replies, events), to compare too.


def plain(conv, client, emulator):
    return [conv.send("I have 2 dogs in my house.", client=client).text]


def thinking(conv, client, emulator):
    reply = conv.send(
        "Explain the Occam's Razor concept and provide everyday examples of it.",
        client=client,
        generation_config={"thinking_level": "high", "thinking_summaries": "auto"},
    )
    return [reply.text, [step["type"] for step in reply.steps]]


def system_instruction(conv, client, emulator):
    return [conv.send("Hello there", client=client).text]


def generation_config(conv, client, emulator):
    return [conv.send("Tell me a story about a brave little toaster.", client=client).text]


def multimodal(conv, client, emulator):
    image = {"type": "image", "data": PIXEL, "mime_type": "image/png"}
    return [conv.send([{"type": "text", "text": "Describe the image."}, image], client=client).text]


def function_calling(conv, client, emulator):
    emulator.script(
        function_call_reply("get_weather", {"city": "Lisbon"}),
        continuation_reply(["Take an ", "umbrella: ", "light rain."]),
    )
    reply = conv.send("Do I need an umbrella in Lisbon today?", client=client)
    call = reply.function_calls[0]
    result = {"type": "function_result", "call_id": call["id"], "name": call["name"], "result": "light rain"}
    answer = conv.send([result], client=client)
    return [reply.status, answer.text, answer.hop_ids]


def streaming(conv, client, emulator):
    emulator.script(
        text_reply("Once upon a time, a toaster."),
        continuation_reply(["In three ", "hops."]),
        text_reply("A story cut short, then resumed.", checkpoints=True, break_after=9),
    )
    observed = []
    for text in ("Tell me a story.", "Another one.", "And a third."):
        turn = conv.stream(text, client=client)
        observed.append(consume(turn))
        observed.append(turn.interaction.to_json())
    return observed


def stateful(conv, client, emulator):
    emulator.script(text_reply("replayed after a break", break_after=5))
    observed = [conv.send("I have 2 dogs in my house.", client=client, store=True).id]
    observed.append(conv.send("How many paws are in my house?", client=client, store=True).text)
    turn = conv.stream("And with a cat?", client=client, store=True)
    observed.append(consume(turn))
    return observed


def stateless(conv, client, emulator):
    replies = [conv.send(text, client=client) for text in ("I have 2 dogs.", "How many paws?", "And tails?")]
    turn = conv.stream("And ears?", client=client)
    return [[reply.text for reply in replies], consume(turn)]


def budget(conv, client, emulator):
    limit = convstore.TokenBudget(max_input_tokens=160, policy="sliding")
    for i in range(5):
        conv.send(f"Question {i}: tell me something about the number {i}.", client=client, budget=limit)
    sent = [len(r.body["input"]) for r in emulator.requests]
    assert sent[-1] < len(conv.history()) - 3, "the budget cut nothing"
    return sent


SCENARIOS: dict[str, tuple[dict[str, Any], Callable[..., list[Any]]]] = {
    "plain": ({}, plain),
    "thinking": ({}, thinking),
    "system_instruction": ({"system_instruction": "You are a cat. Your name is Neko."}, system_instruction),
    "generation_config": (
        {"generation_config": {"temperature": 0.7, "max_output_tokens": 500, "thinking_level": "low"}},
        generation_config,
    ),
    "multimodal": ({}, multimodal),
    "function_calling": ({"tools": WEATHER, "system_instruction": "Be brief."}, function_calling),
    "streaming": ({}, streaming),
    "stateful": ({}, stateful),
    "stateless": ({}, stateless),
    "budget": ({}, budget),
}


def exchange_view(exchange: convstore.Exchange) -> tuple[Any, ...]:
    return (
        exchange.interaction_id,
        exchange.stored,
        exchange.model,
        exchange.status,
        dict(exchange.usage or {}),
        exchange.estimated_input_tokens,
    )


def run(store, kind, name, flavour, portal):
    settings, scenario = SCENARIOS[name]
    emulator = Emulator()
    with client_of(kind, emulator, flavour, portal) as client:
        conv = store.create_conversation(model=MODEL, **settings)
        observed = scenario(conv, client, emulator)
    sent = [(r.method, r.path, r.query, r.body) for r in emulator.requests]
    return {
        "history": conv.history_json(),
        "exchanges": [exchange_view(e) for e in conv.exchanges()],
        "observed": observed,
        "sent": sent,
    }


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_sdk_turn_is_recorded_byte_for_byte_as_convstores_client_records_it(store, flavour, portal, name):
    ours = run(store, "convstore", name, flavour, portal)
    sdk = run(store, "sdk", name, flavour, portal)
    assert sdk["history"] == ours["history"]
    assert sdk["exchanges"] == ours["exchanges"]
    assert sdk["observed"] == ours["observed"]
    assert sdk["sent"] == ours["sent"]
    assert ours["exchanges"], "the scenario recorded nothing"


def test_continuation_hops_through_the_sdk_are_one_exchange(store, flavour, portal):
    emulator = Emulator()
    emulator.script(continuation_reply(["one, ", "two, ", "three."]))
    with client_of("sdk", emulator, flavour, portal) as client:
        conv = store.create_conversation(model=MODEL)
        reply = conv.send("Count to three.", client=client)
    assert reply.text == "one, two, three."
    assert len(reply.hop_ids) == 3
    (exchange,) = conv.exchanges()
    assert exchange.interaction_id == reply.hop_ids[-1]
    assert [r.body.get("continuation_token") is not None for r in emulator.requests] == [False, True, True]
    assert [s["type"] for s in conv.history()] == ["user_input", "thought", *["model_output"] * 3]


def test_stateful_turns_through_the_sdk_chain_on_the_previous_interaction(store, flavour, portal):
    emulator = Emulator()
    with client_of("sdk", emulator, flavour, portal) as client:
        conv = store.create_conversation(model=MODEL)
        first = conv.send("I have 2 dogs in my house.", client=client, store=True)
        conv.send("How many paws are in my house?", client=client, store=True)
    second_body = emulator.requests[-1].body
    assert second_body["previous_interaction_id"] == first.id
    assert second_body["input"] == [
        {"type": "user_input", "content": [{"type": "text", "text": "How many paws are in my house?"}]}
    ]
    assert len(conv.history()) == 6
    assert [e.stored for e in conv.exchanges()] == [True, True]


def test_an_sdk_error_is_convstores_api_error_and_nothing_is_written(store, flavour, portal):
    emulator = Emulator()
    invalid = error_reply(400, "Request contains an invalid argument.")
    emulator.script(text_reply("fine"), invalid, invalid)
    with client_of("sdk", emulator, flavour, portal) as client:
        conv = store.create_conversation(model=MODEL)
        conv.send("Hello", client=client)
        with pytest.raises(convstore.APIError) as info:
            conv.send("Again", client=client)
        with pytest.raises(convstore.APIError):
            consume(conv.stream("Streamed", client=client))
    assert info.value.status_code == 400
    assert info.value.status == "INVALID_ARGUMENT"
    assert info.value.message == "Request contains an invalid argument."
    assert not isinstance(info.value, convstore.APIConnectionError)
    assert len(conv.history()) == 3
    assert len(conv.exchanges()) == 1


def test_a_stream_error_event_through_the_sdk_is_an_api_error(store, flavour, portal):
    emulator = Emulator()
    emulator.script(stream_error_reply(code=500, message="Internal error."))
    with client_of("sdk", emulator, flavour, portal) as client:
        conv = store.create_conversation(model=MODEL)
        with pytest.raises(convstore.APIError, match="Internal error"):
            consume(conv.stream("Hello", client=client))
    assert conv.history() == []


def test_no_answer_through_the_sdk_is_an_api_connection_error(store, flavour, portal):
    emulator = Emulator()
    with EmulatorServer(emulator) as server:
        base_url = server.base_url  # closed below: nothing listens there any more
    sdk = genai.Client(
        api_key="test-key",
        http_options={"base_url": base_url, "api_version": "v1beta", "retry_options": {"attempts": 1}},
    )
    if flavour == "sync":
        client = convstore.GenAIClient(sdk)
    else:
        client = SyncProxy(convstore.AsyncGenAIClient(sdk), portal)
    conv = store.create_conversation(model=MODEL)
    try:
        with pytest.raises(convstore.APIConnectionError, match="google-genai SDK"):
            conv.send("Hello", client=client)
        with pytest.raises(convstore.APIConnectionError):
            consume(conv.stream("Hello", client=client))
    finally:
        if flavour == "async":
            portal.call(sdk.aio.aclose())
        sdk.close()
    assert conv.history() == []


def test_the_sdk_retries_what_the_service_allows_to_retry():
    emulator = Emulator()
    emulator.script(rate_limited(0.01))
    with EmulatorServer(emulator) as server:
        sdk = sdk_for(server)
        try:
            reply = convstore.GenAIClient(sdk).create({"model": MODEL, "store": False, "input": "Hi"})
        finally:
            sdk.close()
    assert reply.text == "Echo: Hi"
    assert [r.path for r in emulator.requests] == ["/v1beta/interactions"] * 2
