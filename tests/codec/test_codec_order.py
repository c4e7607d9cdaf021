"""The typed view keeps key order: ``encode_step(decode_step(d))`` is ``d`` down to its JSON text.

The README says ``encode_step`` gives back "exactly the same JSON"; JSON objects compare equal whatever
their key order, so the property is checked on the text (``json.dumps`` without sorting), on steps whose
keys are shuffled at every level, known fields and unknown ones interleaved.
"""

from __future__ import annotations

import json
import random
from typing import Any

import attrs
from conftest import FIXTURES
from hypothesis import given
from hypothesis import strategies as st
from strategies import contents, steps

import convstore


def shuffled(value: Any, rng: random.Random) -> Any:
    """``value`` with the keys of every object in a random order."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {key: shuffled(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [shuffled(item, rng) for item in value]
    return value


def text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@given(steps, st.randoms(use_true_random=False))
def test_a_decoded_step_encodes_to_the_same_json_text(wire, rng):
    wire = shuffled(wire, rng)
    assert text(convstore.encode_step(convstore.decode_step(wire))) == text(wire)


@given(contents, st.randoms(use_true_random=False))
def test_a_decoded_content_encodes_to_the_same_json_text(wire, rng):
    wire = shuffled(wire, rng)
    assert text(convstore.encode_content(convstore.decode_content(wire))) == text(wire)


@given(steps, st.randoms(use_true_random=False))
def test_key_order_is_not_part_of_equality(wire, rng):
    assert convstore.decode_step(shuffled(wire, rng)) == convstore.decode_step(wire)


def test_the_fixtures_and_the_sdk_order_come_back_as_they_were():
    # The SDK writes `type` last ({"content": [...], "type": "model_output"}); the fixtures write it first.
    sdk_order = {"content": [{"text": "hi", "type": "text"}], "type": "model_output"}
    assert list(convstore.encode_step(convstore.decode_step(sdk_order))) == ["content", "type"]
    history = json.loads((FIXTURES / "stateless_function_call_history_after_turn2.json").read_text())
    assert text([convstore.encode_step(convstore.decode_step(step)) for step in history]) == text(history)


def test_objects_built_in_code_encode_type_first_then_fields_then_extra():
    step = convstore.ThoughtStep(signature="c2ln", extra={"x_future": 1})
    assert list(convstore.encode_step(step)) == ["type", "signature", "x_future"]
    # A field set after decoding (absent from the original JSON) goes after the original keys.
    decoded = convstore.decode_step({"summary": [], "type": "thought"})
    evolved = attrs.evolve(decoded, signature="c2ln")
    assert list(convstore.encode_step(evolved)) == ["summary", "type", "signature"]
    assert "key_order" not in repr(decoded)
