"""Stream reassembly (reference §7): the steps of a stream equal those of the non-streamed reply."""

from __future__ import annotations

import json

import pytest
from _client_support import load

from convstore.client import EventDecoder, HopAssembler, TurnAssembler, parse_event
from convstore.errors import APIError, StreamError
from convstore.model._interaction import Interaction
from convstore.testing import Emulator, Reply, function_call_step, output_step, text_reply, thought_step


def assemble(raw: bytes) -> HopAssembler:
    hop = HopAssembler()
    for event in EventDecoder().feed(raw):
        hop.feed(event)
    return hop


def events(*payloads: dict) -> list:
    return [parse_event(json.dumps(p)) for p in payloads]


def feed_all(hop: HopAssembler, *payloads: dict) -> HopAssembler:
    for event in events(*payloads):
        hop.feed(event)
    return hop


def test_stream_basic_fixture() -> None:
    hop = assemble(load("stream_basic.sse"))
    assert hop.steps() == load("stream_basic_steps.json")
    assert hop.result() == load("stream_basic_interaction.json")
    assert Interaction.from_json(hop.result()) == Interaction.from_json(load("stream_basic_interaction.json"))


def test_stream_function_call_fixture() -> None:
    hop = assemble(load("stream_function_call.sse"))
    assert hop.steps() == load("stream_function_call_steps.json")
    assert hop.result()["status"] == "requires_action"


def test_error_event_fixture_raises_api_error() -> None:
    hop = HopAssembler()
    with pytest.raises(APIError) as info:
        feed_all(hop, load("stream_error_event.json"))
    assert info.value.code == "internal"
    assert info.value.status_code is None
    assert info.value.message == "An internal error occurred while generating the response."


def test_end_without_completed_is_a_stream_error() -> None:
    raw = load("stream_basic.sse")
    hop = assemble(raw[: raw.index(b"event: interaction.completed")])
    with pytest.raises(StreamError, match=r"before interaction\.completed"):
        hop.result()


START = {"event_type": "step.start", "index": 0, "step": {"type": "model_output"}}


def delta(d: dict, index: int = 0) -> dict:
    return {"event_type": "step.delta", "index": index, "delta": d}


def test_text_appends_to_text_and_pushes_after_media() -> None:
    image = {"type": "image", "mime_type": "image/png", "data": "AAAA"}
    hop = feed_all(
        HopAssembler(),
        START,
        delta({"type": "text", "text": "a"}),
        delta({"type": "text", "text": "b"}),
        delta(image),
        delta({"type": "text", "text": "c"}),
        {"event_type": "step.stop", "index": 0},
    )
    assert hop.steps() == [
        {
            "type": "model_output",
            "content": [{"type": "text", "text": "ab"}, image, {"type": "text", "text": "c"}],
        }
    ]


def test_text_continues_a_text_item_from_step_start() -> None:
    start = {
        "event_type": "step.start",
        "index": 0,
        "step": {"type": "model_output", "content": [{"type": "text", "text": "Hel"}]},
    }
    hop = feed_all(HopAssembler(), start, delta({"type": "text", "text": "lo"}))
    assert hop.steps()[0]["content"] == [{"type": "text", "text": "Hello"}]


def test_annotations_extend_the_last_text_item() -> None:
    cite = {"type": "url_citation", "url": "https://example.com", "start_index": 0, "end_index": 2}
    hop = feed_all(
        HopAssembler(),
        START,
        delta({"type": "text", "text": "ab"}),
        delta({"type": "text_annotation_delta", "annotations": [cite]}),
        delta({"type": "text", "text": "cd"}),
        delta({"type": "text_annotation_delta", "annotations": [cite]}),
    )
    assert hop.steps()[0]["content"] == [{"type": "text", "text": "abcd", "annotations": [cite, cite]}]


def test_thought_summary_and_signature() -> None:
    summary = {"type": "text", "text": "thinking"}
    hop = feed_all(
        HopAssembler(),
        {"event_type": "step.start", "index": 0, "step": {"type": "thought"}},
        delta({"type": "thought_summary", "content": summary}),
        delta({"type": "thought_summary", "content": summary}),
        delta({"type": "thought_signature", "signature": "sig"}),
    )
    assert hop.steps() == [{"type": "thought", "summary": [summary, summary], "signature": "sig"}]


def test_other_delta_types_copy_their_fields() -> None:
    hop = feed_all(
        HopAssembler(),
        {"event_type": "step.start", "index": 0, "step": {"type": "code_execution_call", "id": "c1"}},
        delta({"type": "code_execution_call", "arguments": {"code": "print(1)", "language": "python"}}),
        delta({"type": "some_future_delta", "extra": [1]}),
    )
    assert hop.steps() == [
        {
            "type": "code_execution_call",
            "id": "c1",
            "arguments": {"code": "print(1)", "language": "python"},
            "extra": [1],
        }
    ]


def test_steps_are_sorted_by_index() -> None:
    hop = feed_all(
        HopAssembler(),
        {"event_type": "step.start", "index": 1, "step": {"type": "model_output"}},
        {"event_type": "step.start", "index": 0, "step": {"type": "thought", "signature": "s"}},
    )
    assert [s["type"] for s in hop.steps()] == ["thought", "model_output"]


def test_bad_arguments_and_orphan_deltas_raise_stream_error() -> None:
    hop = feed_all(
        HopAssembler(),
        {
            "event_type": "step.start",
            "index": 0,
            "step": {"type": "function_call", "id": "f", "name": "n", "arguments": {}},
        },
        delta({"type": "arguments_delta", "arguments": '{"city": "Secret'}),
    )
    with pytest.raises(StreamError) as info:
        feed_all(hop, {"event_type": "step.stop", "index": 0})
    assert "Secret" not in str(info.value)
    with pytest.raises(StreamError, match=r"before its step\.start"):
        feed_all(HopAssembler(), delta({"type": "text", "text": "x"}, index=3))
    with pytest.raises(StreamError, match=r"before its step\.start"):
        feed_all(HopAssembler(), {"event_type": "step.stop", "index": 2})


def test_long_text_in_many_deltas() -> None:
    hop = HopAssembler()
    hop.feed(parse_event(json.dumps(START)))
    piece = parse_event(json.dumps(delta({"type": "text", "text": "x" * 10})))
    for _ in range(20_000):
        hop.feed(piece)
    assert hop.steps()[0]["content"][0]["text"] == "x" * 200_000


def test_checkpoint_rewind_discards_what_followed() -> None:
    turn = TurnAssembler()
    for event in events(
        {"event_type": "interaction.created", "interaction": {"id": "h1", "status": "in_progress"}},
        START,
        delta({"type": "text", "text": "kept "}),
        {
            "event_type": "interaction.status_update",
            "interaction_id": "h1",
            "status": "in_progress",
            "continuation_token": "tok",
            "usage": {"total_output_tokens": 2},
        },
        delta({"type": "text", "text": "discarded"}),
    ):
        turn.feed(event)
    assert turn.checkpoint_token == "tok"
    assert turn.checkpoint_owner == "h1"
    assert turn.steps()[0]["content"][0]["text"] == "kept discarded"
    assert turn.rewind_to_checkpoint() == ("tok", "h1")
    assert turn.hops == [
        {
            "id": "h1",
            "status": "requires_continuation",
            "continuation_token": "tok",
            "steps": [{"type": "model_output", "content": [{"type": "text", "text": "kept "}]}],
            "usage": {"total_output_tokens": 2},
        }
    ]
    assert turn.checkpoint_token is None
    with pytest.raises(StreamError):
        turn.rewind_to_checkpoint()


REPLIES = {
    "text": text_reply("A fairly long answer, long enough to be split into several text deltas."),
    "function_call": Reply(
        steps=[
            thought_step("need tools"),
            function_call_step("f", {"a": [1, {"b": None}], "c": "ü"}),
            function_call_step("g", {}),
        ],
        status="requires_action",
    ),
    "media_and_annotations": Reply(
        steps=[
            thought_step(None),
            {
                "type": "model_output",
                "content": [
                    {
                        "type": "text",
                        "text": "See the picture",
                        "annotations": [
                            {"type": "url_citation", "url": "https://e.com", "start_index": 0, "end_index": 3}
                        ],
                    },
                    {"type": "image", "mime_type": "image/png", "data": "iVBORw0KGgo="},
                    {"type": "text", "text": "and the caption."},
                ],
            },
            {"type": "google_search_call", "id": "gs1", "arguments": {"queries": ["q"]}, "signature": "EMUx"},
            output_step(""),
        ]
    ),
}


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_emulator_stream_reassembles_to_the_unary_steps(name: str) -> None:
    unary, streamed = Emulator(seed="same"), Emulator(seed="same")
    unary.script(REPLIES[name])
    streamed.script(REPLIES[name])
    body = {"model": "m", "store": False, "input": "hi"}
    expected = unary.handle(
        "POST", "/v1beta/interactions", {}, {"x-goog-api-key": "k"}, json.dumps(body).encode()
    )
    response = streamed.handle(
        "POST",
        "/v1beta/interactions",
        {},
        {"x-goog-api-key": "k"},
        json.dumps({**body, "stream": True}).encode(),
    )
    hop = assemble(response.body)
    assert hop.result() == expected.json
