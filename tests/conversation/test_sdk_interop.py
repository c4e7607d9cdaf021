"""The official google-genai SDK in place of convstore's client: request() feeds its create(), record()
takes its replies."""

from __future__ import annotations

import pytest
from conftest import user

from convstore.testing import Emulator, EmulatorServer, function_call_reply, text_reply

genai = pytest.importorskip("google.genai")
types = pytest.importorskip("google.genai.types")

MODEL = "gemini-3-flash-preview"


@pytest.fixture
def emulator() -> Emulator:
    return Emulator()


@pytest.fixture
def sdk(emulator):
    with EmulatorServer(emulator) as server:
        yield genai.Client(
            api_key="test-key", http_options=types.HttpOptions(base_url=server.base_url, api_version="v1beta")
        )


def test_the_sdk_sends_request_bodies_unchanged_and_record_takes_its_replies(store, sdk, emulator):
    emulator.script(text_reply("Two dogs!"), text_reply("Eight paws."))
    conv = store.create_conversation(
        model=MODEL, system_instruction="Be brief.", generation_config={"temperature": 1.0}
    )
    body = conv.request("I have 2 dogs in my house.")
    first = sdk.interactions.create(**body)
    assert emulator.requests[-1].body == body
    conv.record(body, first)
    body = conv.request("How many paws are in my house?")
    second = sdk.interactions.create(**body)
    # The SDK sent our replayed history byte-identical (the emulator checks thought signatures).
    assert emulator.requests[-1].body == body
    conv.record(body, second)
    history = conv.history()
    assert [s["type"] for s in history] == ["user_input", "thought", "model_output"] * 2
    assert history[0] == user("I have 2 dogs in my house.")
    assert history[3] == user("How many paws are in my house?")
    assert history[2]["content"][0]["text"] == "Two dogs!"
    assert history[5]["content"][0]["text"] == "Eight paws."
    assert all(history[i]["signature"] for i in (1, 4))
    assert [e.interaction_id for e in conv.exchanges()] == [first.id, second.id]
    # A third turn replays what record() took from the SDK's objects; the emulator refuses any thought
    # whose signature or content changed, so acceptance proves they were kept byte-identical.
    body = conv.request("And tails?")
    sdk.interactions.create(**body)
    assert emulator.requests[-1].body["input"][:6] == history


def test_function_results_through_the_sdk(store, sdk, emulator):
    emulator.script(function_call_reply("get_weather", {"city": "Lisbon"}), text_reply("Umbrella."))
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    conv = store.create_conversation(model=MODEL, tools=tools)
    body = conv.request("Umbrella in Lisbon?")
    reply = sdk.interactions.create(**body)
    conv.record(body, reply)
    call = next(s for s in conv.history() if s["type"] == "function_call")
    result = {"type": "function_result", "call_id": call["id"], "name": call["name"], "result": "rain"}
    body = conv.request([result])
    final = sdk.interactions.create(**body)
    conv.record(body, final)
    assert conv.history()[-1]["content"][0]["text"] == "Umbrella."
