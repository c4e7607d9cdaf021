from __future__ import annotations

import json

import pytest
from conftest import FIXTURES
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import contents, examples, hard_text, json_scalars, steps

import convstore
from convstore import UNSET, CodecError, codec


def _fixture_steps() -> list[dict]:
    found = []
    for path in sorted(FIXTURES.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, list):
            found.extend(data)
        elif isinstance(data.get("steps"), list):
            found.extend(data["steps"])
        elif isinstance(data.get("input"), list):
            found.extend(data["input"])
    return found


def test_every_fixture_step_round_trips_and_decodes_to_a_known_class():
    fixture_steps = _fixture_steps()
    assert len(fixture_steps) > 20
    for wire in fixture_steps:
        step = convstore.decode_step(wire)
        assert not isinstance(step, convstore.UnknownStep), wire["type"]
        assert convstore.encode_step(step) == wire


@given(steps)
def test_any_step_round_trips_unchanged(wire):
    step = convstore.decode_step(wire)
    assert convstore.encode_step(step) == wire
    assert json.loads(codec.dumps(convstore.encode_step(step))) == wire


@given(contents)
def test_any_content_round_trips_unchanged(wire):
    assert convstore.encode_content(convstore.decode_content(wire)) == wire


def test_typed_view_of_a_function_call():
    step = convstore.decode_step(
        {"type": "function_call", "id": "fc_1", "name": "get_weather", "arguments": {"city": "Lisbon"}}
    )
    assert isinstance(step, convstore.FunctionCallStep)
    assert (step.id, step.name, step.arguments) == ("fc_1", "get_weather", {"city": "Lisbon"})


def test_absent_and_null_are_kept_apart():
    absent = convstore.decode_step({"type": "thought"})
    null = convstore.decode_step({"type": "thought", "signature": None})
    assert isinstance(absent, convstore.ThoughtStep)
    assert isinstance(null, convstore.ThoughtStep)
    assert absent.signature is UNSET
    assert null.signature is None
    assert convstore.encode_step(absent) == {"type": "thought"}
    assert convstore.encode_step(null) == {"type": "thought", "signature": None}
    assert not UNSET


def test_unknown_fields_and_types_survive():
    wire = {"type": "model_output", "content": [{"type": "hologram", "depth": 3}], "safety": {"x": 1}}
    step = convstore.decode_step(wire)
    assert isinstance(step, convstore.ModelOutputStep)
    assert step.extra == {"safety": {"x": 1}}
    assert isinstance(step.content, list)
    assert isinstance(step.content[0], convstore.UnknownContent)
    assert convstore.encode_step(step) == wire
    future = {"type": "teleport_call", "id": "t1", "where": "mars"}
    assert convstore.encode_step(convstore.decode_step(future)) == future


def test_model_objects_encode_to_wire_json():
    step = convstore.UserInputStep(content=[convstore.TextContent(text="hi")])
    assert convstore.encode_step(step) == {"type": "user_input", "content": [{"type": "text", "text": "hi"}]}


@pytest.mark.parametrize(
    ("wire", "problems"),
    [
        (3, [("", "expected an object, got an integer")]),
        ([], [("", "expected an object, got an array")]),
        ({}, [("type", "required field is missing")]),
        ({"type": 7}, [("type", "expected a string, got an integer")]),
        ({"type": "function_call", "id": "a", "name": "f"}, [("arguments", "required field is missing")]),
        (
            {"type": "function_call", "id": 1, "name": None, "arguments": []},
            [
                ("id", "expected a string, got an integer"),
                ("name", "required field must not be null"),
                ("arguments", "expected an object, got an array"),
            ],
        ),
        ({"type": "user_input", "content": "hi"}, [("content", "expected an array, got a string")]),
        (
            {"type": "user_input", "content": [{"type": "text", "text": True}, {"text": "x"}]},
            [
                ("content[0].text", "expected a string, got a boolean"),
                ("content[1].type", "required field is missing"),
            ],
        ),
        (
            {"type": "function_result", "call_id": "c", "result": 4},
            [("result", "expected a string, an array of content or an object, got an integer")],
        ),
    ],
)
def test_malformed_steps_name_every_field(wire, problems):
    with pytest.raises(CodecError) as raised:
        convstore.decode_step(wire)
    assert raised.value.problems == problems
    assert isinstance(raised.value, ValueError)


def test_codec_errors_never_contain_the_value():
    secret = "my diagnosis is private"
    with pytest.raises(CodecError) as raised:
        convstore.decode_step({"type": "function_call", "id": secret, "name": 5, "arguments": secret})
    assert secret not in str(raised.value)
    assert "name" in str(raised.value)


def test_reprs_do_not_show_content():
    secret = "my diagnosis is private"
    step = convstore.decode_step(
        {"type": "function_call", "id": "fc_1", "name": "lookup", "arguments": {"q": secret}}
    )
    text = convstore.decode_step({"type": "user_input", "content": [{"type": "text", "text": secret}]})
    unknown = convstore.decode_step({"type": "later", "body": secret})
    for obj in (step, text, unknown):
        assert secret not in repr(obj)
    assert "fc_1" in repr(step)


def test_dumps_keeps_utf8_and_escapes_what_utf8_cannot_carry():
    assert codec.dumps({"t": "é😀"}) == '{"t":"é😀"}'
    lone = codec.dumps({"t": "a\ud800b"})
    lone.encode("utf-8")
    assert json.loads(lone) == {"t": "a\ud800b"}
    assert json.loads(codec.dumps({"t": "\x00"})) == {"t": "\x00"}
    with pytest.raises(CodecError):
        codec.dumps({"n": float("nan")})


def test_normalize_steps_collects_problems_of_every_step():
    with pytest.raises(CodecError) as raised:
        codec.normalize_steps([{"type": "user_input"}, {"content": []}, "text"])
    paths = [path for path, _ in raised.value.problems]
    assert paths == ["steps[1].type", "steps[2]"]


# A step of text contents only (the usual step of a turn) is recognised without decoding it; any other, and
# one such a step the slow path would refuse, goes the slow way. Both must say the same of every value.
text_items = st.fixed_dictionaries({"type": st.just("text"), "text": hard_text})
text_steps = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["user_input", "model_output", "thought", "text"]),
        "content": st.one_of(
            st.lists(text_items, max_size=3),
            st.lists(
                st.one_of(
                    text_items,
                    st.fixed_dictionaries({"type": st.sampled_from(["text", "image"]), "text": json_scalars}),
                    contents,
                ),
                max_size=3,
            ),
        ),
    }
)
limits = st.builds(
    convstore.Limits,
    max_depth=st.integers(min_value=1, max_value=5),
    max_step_bytes=st.sampled_from([1, 40, 100, 200, 32 * 1024 * 1024]),
)


def _outcome(value, limits):
    try:
        return ("ok", codec.normalize_step(value, path="steps[3]", limits=limits))
    except (CodecError, convstore.LimitExceededError) as exc:
        return (type(exc), str(exc), getattr(exc, "problems", None))


def _text_step(text: str) -> dict:
    return {"type": "user_input", "content": [{"type": "text", "text": text}]}


@settings(max_examples=examples(600))
@given(value=st.one_of(text_steps, steps), limits=limits)
@example(value=_text_step("a\ud800"), limits=convstore.Limits())
@example(value=_text_step("a"), limits=convstore.Limits(max_depth=2))
@example(value=_text_step("a" * 150), limits=convstore.Limits(max_step_bytes=100))
@example(value={"type": "model_output", "content": None}, limits=convstore.Limits())
def test_a_text_step_is_normalised_as_the_decoding_path_does(value, limits):
    fast = _outcome(value, limits)
    slow_path = codec._is_text_step
    try:
        codec._is_text_step = lambda *_: False  # every step decoded and checked
        slow = _outcome(value, limits)
    finally:
        codec._is_text_step = slow_path
    assert fast == slow
    if fast[0] == "ok":
        assert fast[1] is value  # returned as given, not copied


def test_the_usual_turn_step_takes_the_fast_path():
    step = {"type": "model_output", "content": [{"type": "text", "text": "é" * 2000}]}
    assert codec._is_text_step(step, convstore.Limits())
    assert not codec._is_text_step({**step, "type": ["model_output"]}, convstore.Limits())
    assert not codec._is_text_step(step, convstore.Limits(max_step_bytes=2000))
