"""The official google-genai SDK against the emulator's local server: convstore's request bodies are valid
SDK input, and the emulator's answers are valid SDK output."""

from __future__ import annotations

import json

import httpx
import pytest
from _client_support import load

from convstore.client import InteractionsClient
from convstore.testing import Emulator, EmulatorServer, function_call_reply

genai = pytest.importorskip("google.genai", reason="the google-genai SDK is not installed")
from google.genai import types  # noqa: E402  # after the importorskip


def sdk_client(base_url: str):
    return genai.Client(api_key="x", http_options=types.HttpOptions(base_url=base_url, api_version="v1beta"))


def test_sdk_accepts_a_stateless_replayed_history() -> None:
    emulator = Emulator()
    body = load("stateless_function_call_turn2_request.json")
    with EmulatorServer(emulator) as server:
        client = sdk_client(server.base_url)
        try:
            interaction = client.interactions.create(**body)
        finally:
            client.close()
    assert interaction.status == "completed"
    assert interaction.id
    assert interaction.output_text == "Received the result of get_weather."
    (request,) = emulator.requests
    assert request.path == "/v1beta/interactions"
    assert request.headers["x-goog-api-key"] == "x"
    assert request.body["input"] == body["input"]
    assert {k: v for k, v in request.body.items() if k in body} == body


def test_sdk_replays_a_history_made_with_convstore() -> None:
    emulator = Emulator()
    emulator.script(function_call_reply("get_weather", {"city": "Lisbon"}))
    first = {"model": "gemini-3-flash-preview", "store": False, "input": "Umbrella in Lisbon?"}
    with httpx.Client(transport=emulator.transport()) as http:
        turn1 = InteractionsClient("k", http_client=http).create(first)
    call = turn1.function_calls[0]
    result = {"type": "function_result", "call_id": call["id"], "name": "get_weather", "result": "light rain"}
    history = [
        {"type": "user_input", "content": [{"type": "text", "text": "Umbrella in Lisbon?"}]},
        *turn1.steps,
        result,
    ]
    with EmulatorServer(emulator) as server:
        client = sdk_client(server.base_url)
        try:
            turn2 = client.interactions.create(**{**first, "input": history})
            events = list(client.interactions.create(**{**first, "input": history, "stream": True}))
            # The emulator's 400 reaches the SDK as its own (privately named) BadRequestError.
            with pytest.raises(Exception, match="thought step is missing") as info:
                client.interactions.create(**{**first, "input": [history[0], *history[2:]]})
        finally:
            client.close()
    assert turn2.status == "completed"
    assert json.loads(turn2.model_dump_json(exclude_none=True))["steps"][0]["type"] == "thought"
    assert events[0].event_type == "interaction.created"
    assert events[-1].event_type == "interaction.completed"
    assert type(info.value).__name__ == "BadRequestError"
    assert info.value.status_code == 400
