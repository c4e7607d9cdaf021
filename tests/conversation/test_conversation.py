"""The conversation facade end to end: the text-generation guide's examples, stateless, on the emulator."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from conftest import FIXTURES, model, user

import convstore
from convstore import APIError, CodecError, ConflictError, StreamError
from convstore.testing import (
    continuation_reply,
    error_reply,
    function_call_reply,
    stream_error_reply,
    text_reply,
)

MODEL = "gemini-3-flash-preview"


def rows(store: convstore.Store) -> list[tuple]:
    with store.engine.connect() as conn:
        return sorted(
            (table, *map(str, row))
            for table in ("convstore_nodes", "convstore_branches", "convstore_exchanges")
            for row in conn.execute(sa.text(f"SELECT * FROM {table}"))
        )


def test_the_two_dogs_conversation_replays_exactly(store, client, emulator):
    emulator.script(text_reply("Two dogs, how nice."), text_reply("Eight paws."))
    conv = store.create_conversation(model=MODEL)
    first = conv.send("I have 2 dogs in my house.", client=client)
    second_body = conv.request("How many paws are in my house?")
    assert second_body["store"] is False
    assert second_body["input"] == [
        user("I have 2 dogs in my house."),
        *first.steps,
        user("How many paws are in my house?"),
    ]
    assert any(step["type"] == "thought" and step.get("signature") for step in first.steps)
    second = client.create(second_body)
    conv.record(second_body, second)
    assert emulator.requests[-1].body == second_body  # the emulator accepted the replay, signatures intact
    assert conv.history() == [*second_body["input"], *second.steps]
    assert second.text == "Eight paws."


def test_plain_prompt_generation_config_and_system_instruction(store, client, emulator):
    conv = store.create_conversation(
        model=MODEL,
        system_instruction="You are a cat. Your name is Neko.",
        generation_config={"thinking_level": "low", "temperature": 1.0},
    )
    conv.send("Hello there", client=client)
    sent = emulator.requests[-1].body
    assert sent["system_instruction"] == "You are a cat. Your name is Neko."
    assert sent["generation_config"] == {"thinking_level": "low", "temperature": 1.0}
    assert sent["model"] == MODEL
    conv.send("Again", client=client, generation_config={"thinking_level": "high"}, system_instruction=None)
    sent = emulator.requests[-1].body
    assert sent["generation_config"] == {"thinking_level": "high", "temperature": 1.0}  # only that key
    assert "system_instruction" not in sent
    assert sent["input"][0] == user("Hello there")


def test_multimodal_input_by_uri_and_inline(store, client, emulator):
    fixture = json.loads((FIXTURES / "request_multimodal_user_input.json").read_text())
    contents = fixture["input"][0]["content"]
    emulator.files.add(
        b"%PDF-1.7", mime_type="application/pdf", file_id="q3-report-7f2k"
    )  # uploaded by the app
    conv = store.create_conversation(model=MODEL)
    conv.send(contents, client=client)
    assert emulator.requests[-1].body["input"] == fixture["input"]
    assert conv.history()[0] == fixture["input"][0]


def test_streaming_records_the_same_steps_as_a_plain_call(store, client, emulator):
    emulator.script(text_reply("Water boils at 100 °C at sea level."))
    conv = store.create_conversation(model=MODEL)
    turn = conv.stream("When does water boil?", client=client)
    kinds = [type(event).__name__ for event in turn]
    assert "StepDelta" in kinds
    assert kinds[-1] == "InteractionCompleted"
    assert turn.interaction is not None
    assert turn.interaction.text == "Water boils at 100 °C at sea level."
    assert conv.history() == [user("When does water boil?"), *turn.interaction.steps]
    assert emulator.requests[-1].body["stream"] is True
    emulator.script(text_reply("Water boils at 100 °C at sea level."))
    plain = store.create_conversation(model=MODEL)
    plain.send("When does water boil?", client=client)
    strip = lambda steps: [{k: v for k, v in s.items() if k != "signature"} for s in steps]  # noqa: E731
    assert strip(plain.history()) == strip(conv.history())


def test_function_calling_round_trip(store, client, emulator):
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    emulator.script(function_call_reply("get_weather", {"city": "Lisbon"}), text_reply("Take an umbrella."))
    conv = store.create_conversation(model=MODEL, tools=tools)
    reply = conv.send("Do I need an umbrella in Lisbon today?", client=client)
    assert reply.status == "requires_action"
    (call,) = [step for step in reply.steps if step["type"] == "function_call"]
    result = {"type": "function_result", "call_id": call["id"], "name": call["name"], "result": "rain"}
    final = conv.send([result], client=client)
    assert final.text == "Take an umbrella."
    assert emulator.requests[-1].body["tools"] == tools
    history = conv.history()
    assert [s["type"] for s in history] == [
        "user_input",
        "thought",
        "function_call",
        "function_result",
        "thought",
        "model_output",
    ]
    # Function call and result sit in different exchanges, never split from what followed them.
    nodes = conv.nodes()
    assert nodes[2].exchange_id != nodes[3].exchange_id == nodes[5].exchange_id


def test_a_result_for_an_unknown_call_is_refused_and_nothing_written(store, client, emulator):
    conv = store.create_conversation(model=MODEL)
    conv.send("hello", client=client)
    before = rows(store)
    with pytest.raises(APIError) as raised:
        conv.send([{"type": "function_result", "call_id": "nope", "result": "x"}], client=client)
    assert raised.value.status_code == 400
    assert rows(store) == before


def test_a_failed_call_writes_nothing(store, client, emulator):
    conv = store.create_conversation(model=MODEL)
    conv.send("first", client=client)
    before = rows(store)
    emulator.script(error_reply(500), error_reply(500), error_reply(500), error_reply(500), error_reply(500))
    with pytest.raises(APIError):
        conv.send("second", client=client)
    assert rows(store) == before


@pytest.mark.parametrize("broken", ["error_event", "dropped"])
def test_a_broken_stream_writes_nothing(store, client, emulator, broken):
    conv = store.create_conversation(model=MODEL)
    conv.send("first", client=client)
    before = rows(store)
    if broken == "error_event":
        emulator.script(stream_error_reply())
    else:
        emulator.script(*[text_reply("a long answer " * 20, break_after=3)] * 6)
    turn = conv.stream("second", client=client)
    with pytest.raises((APIError, StreamError)):
        for _ in turn:
            pass
    assert turn.nodes is None
    assert rows(store) == before


def test_an_abandoned_stream_writes_nothing(store, client, emulator):
    conv = store.create_conversation(model=MODEL)
    before = rows(store)
    turn = conv.stream("hi", client=client)
    for _ in turn:
        break
    assert rows(store) == before


def test_continuation_hops_are_merged_into_one_exchange(store, client, emulator):
    emulator.script(continuation_reply(["# The Printing Press\n", "Gutenberg ", "changed everything."]))
    conv = store.create_conversation(model=MODEL)
    reply = conv.send("Write an essay on the printing press.", client=client)
    assert reply.status == "completed"
    assert "changed everything." in reply.text
    assert len(emulator.requests) == 3
    assert emulator.requests[1].body["continuation_token"]
    assert emulator.requests[1].body["input"] == emulator.requests[0].body["input"]
    history = conv.history()
    assert history[0] == user("Write an essay on the printing press.")
    assert history[1:] == reply.steps
    (exchange,) = conv.exchanges()
    assert exchange.interaction_id == reply.id
    assert reply.usage is not None
    assert exchange.input_tokens == reply.usage.total_input_tokens
    assert exchange.usage["initial_input_tokens"] < exchange.input_tokens  # every hop is billed its input


def test_stateful_mode_chains_while_the_head_is_the_stored_interaction(store, client, emulator):
    conv = store.create_conversation(model=MODEL)
    first = conv.send("I have 2 dogs.", client=client, store=True)
    assert emulator.requests[-1].body["store"] is True
    conv.send("How many paws?", client=client, store=True)
    chained = emulator.requests[-1].body
    assert chained["previous_interaction_id"] == first.id
    assert chained["input"] == [user("How many paws?")]
    assert len(conv.history()) == 6  # the full local copy is kept
    # A fork that ends where a stored interaction ends can chain on it: the API's timeline is the same.
    nodes = conv.nodes()
    at_end = conv.fork(at=nodes[2].id, branch="end-of-turn-1")
    at_end.send("How many tails?", client=client, store=True)
    assert emulator.requests[-1].body["previous_interaction_id"] == first.id
    # A fork anywhere else cannot: it replays instead.
    mid = conv.fork(at=nodes[1].id, branch="mid-turn-1")
    mid.send("How many tails?", client=client, store=True)
    replayed = emulator.requests[-1].body
    assert "previous_interaction_id" not in replayed
    assert replayed["input"] == [*conv.history()[:2], user("How many tails?")]
    # Anything appended locally after a stored turn breaks the chain too.
    conv.append([user("a note kept only here")])
    conv.send("And now?", client=client, store=True)
    assert "previous_interaction_id" not in emulator.requests[-1].body


def test_record_accepts_plain_dicts_and_refuses_foreign_bodies(store):
    conv = store.create_conversation(model=MODEL)
    body = conv.request("hi")
    conv.record(body, {"id": "i1", "status": "completed", "steps": [{"type": "model_output", "content": []}]})
    assert [s["type"] for s in conv.history()] == ["user_input", "model_output"]
    with pytest.raises(CodecError, match="history"):
        conv.record(
            {"model": MODEL, "input": [user("not from here")]}, {"status": "completed", "steps": [model("x")]}
        )
    with pytest.raises(CodecError):
        conv.record(conv.request("x"), {"status": "completed", "steps": [{"no": "type"}]})


def test_a_copied_body_is_checked_against_the_branch(store):
    conv = store.create_conversation(model=MODEL)
    conv.append([user("one"), {"type": "model_output", "content": []}])
    kept = conv.request("two")
    # A copy of a body is not one request() built: record() checks it against the branch instead.
    copied = {**kept, "input": [*kept["input"][:-1], user("two, edited")]}
    conv.record(copied, {"status": "completed", "steps": [model("ok")]})
    assert [s["type"] for s in conv.history()] == ["user_input", "model_output"] * 2
    assert conv.history()[-2] == user("two, edited")


def test_record_after_another_writer_moved_the_branch_conflicts(store):
    conv = store.create_conversation(model=MODEL)
    body = conv.request("hi")
    store.conversation(conv.id).append([user("someone else")])
    with pytest.raises(ConflictError):
        conv.record(body, {"status": "completed", "steps": [model("x")]})


def test_request_validates_its_input_and_overrides(store):
    conv = store.create_conversation(model=MODEL)
    with pytest.raises(CodecError, match="mixes"):
        conv.request([{"type": "text", "text": "a"}, user("b")])
    with pytest.raises(TypeError, match="stream"):
        conv.request("hi", stream=True)
    with pytest.raises(TypeError, match="not_a_field"):
        conv.request("hi", not_a_field=1)
    with pytest.raises(ValueError, match="model"):
        store.create_conversation().request("hi")
    assert conv.request([convstore.TextContent(text="typed")])["input"] == [user("typed")]


def test_a_lone_surrogate_in_a_turns_text_is_a_codec_error_before_anything_is_sent(store, client, emulator):
    """Text given as a string or as text contents is checked at the door like any step: a lone surrogate
    (which UTF-8 cannot carry) is a ``CodecError`` naming where it is, not a ``UnicodeEncodeError`` from
    building the body; nothing is sent and nothing stored."""
    conv = store.create_conversation(model=MODEL)
    conv.send("hello", client=client)
    before = (conv.history(), len(emulator.requests))
    for given in ("a\ud800b", [{"type": "text", "text": "fine"}, {"type": "text", "text": "\udfff"}]):
        for call in (lambda g: conv.send(g, client=client), conv.request):
            with pytest.raises(CodecError, match=r"input\.content\[\d\]\.text.*surrogate") as raised:
                call(given)
            assert "\ud800" not in str(raised.value)
            assert "\udfff" not in str(raised.value)
    assert (store.conversation(conv.id).history(), len(emulator.requests)) == before


def test_edit_a_past_message_keeps_both_versions(store, client, emulator):
    conv = store.create_conversation(model=MODEL)
    conv.send("I have 2 dogs.", client=client)
    question = conv.send("How many paws?", client=client)
    asked = [n for n in conv.nodes() if n.type == "user_input"][-1]
    edited = conv.edit(asked.id, branch="tails")
    edited.send("How many tails?", client=client)
    assert edited.history()[3] == user("How many tails?")
    assert conv.history()[-len(question.steps) - 1] == user("How many paws?")
    first = conv.nodes()[0]
    assert conv.edit(first.id).history() == []


@pytest.mark.parametrize("tamper", ["signature", "drop"])
def test_the_emulator_refuses_a_replay_whose_thought_changed(store, client, emulator, tamper):
    conv = store.create_conversation(model=MODEL)
    conv.send("hi", client=client)
    body = conv.request("next")
    assert body["input"][1]["type"] == "thought"
    if tamper == "signature":
        body["input"][1] = {**body["input"][1], "signature": "AAAA" + body["input"][1]["signature"][4:]}
    else:
        del body["input"][1]
    with pytest.raises(APIError) as raised:
        client.create(body)
    assert raised.value.status_code == 400
