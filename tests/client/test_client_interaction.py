"""Interaction / Usage (wire JSON <-> model) and the continuation merge of reference §8."""

from __future__ import annotations

import copy

import pytest
from _client_support import load

from convstore.errors import CodecError
from convstore.model._interaction import Interaction, Usage, merge_continuation_hops


def test_response_basic() -> None:
    body = load("response_basic.json")
    interaction = Interaction.from_json(body)
    assert interaction.id == "v1_ChdCYXNpY1R1cm4wMQ"
    assert interaction.status == "completed"
    assert interaction.model == "gemini-3-flash-preview"
    assert interaction.created == "2026-06-02T10:15:30Z"
    assert interaction.updated == "2026-06-02T10:15:33Z"
    assert interaction.steps == body["steps"]
    assert interaction.usage is not None
    assert interaction.usage.total_tokens == 133
    assert interaction.usage.input_tokens_by_modality == [{"modality": "text", "tokens": 14}]
    assert interaction.text == "A haiku is a three-line Japanese poem with a 5-7-5 syllable pattern."
    assert interaction.raw == body
    assert interaction.to_json() == body
    assert Interaction.from_json(interaction.to_json()) == interaction


def test_function_call_response() -> None:
    interaction = Interaction.from_json(load("stateless_function_call_turn1_response.json"))
    assert interaction.status == "requires_action"
    assert [c["id"] for c in interaction.function_calls] == ["fc_8k2m1q"]
    assert interaction.text == ""


def test_leading_user_input_echo_is_dropped() -> None:
    body = load("response_basic.json")
    echo = {"type": "user_input", "content": [{"type": "text", "text": "What is a haiku?"}]}
    body["steps"] = [echo, *body["steps"]]
    assert len(Interaction.from_json(body).steps) == 2
    timeline = Interaction.from_json(body, drop_input_echo=False)
    assert timeline.steps[0] == echo
    assert timeline.raw["steps"][0] == echo  # nothing is lost


def test_text_is_the_answer_after_the_last_user_input() -> None:
    history = load("stateless_function_call_history_after_turn2.json")
    timeline = Interaction.from_json({"status": "completed", "steps": history}, drop_input_echo=False)
    assert timeline.text.startswith("Yes, take an umbrella")


def test_sdk_only_attributes_are_not_kept() -> None:
    body = load("response_basic.json")
    polluted = {**body, "output_text": "x", "continuation_ids": ["a"], "output_image": None}
    interaction = Interaction.from_json(polluted)
    assert interaction.raw == body
    assert "output_text" not in interaction.to_json()


def test_unknown_fields_and_statuses_survive() -> None:
    body = {**load("response_basic.json"), "status": "some_future_status", "new_field": {"a": 1}}
    interaction = Interaction.from_json(body)
    assert interaction.status == "some_future_status"
    assert interaction.to_json() == body


def test_repr_shows_ids_and_numbers_not_content() -> None:
    text = repr(Interaction.from_json(load("response_basic.json")))
    assert "haiku" not in text
    assert "short definition" not in text
    assert "EpYCCpMC" not in text  # signatures are opaque and stay out too
    assert "v1_ChdCYXNpY1R1cm4wMQ" in text
    assert "'completed'" in text
    assert "steps=2" in text
    assert "total_tokens=133" in text


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"id": "x"}, "status"),
        ({"status": 3}, "status"),
        ({"status": "completed", "steps": {}}, "steps"),
        ({"status": "completed", "steps": ["text"]}, "steps[0]"),
        ({"status": "completed", "id": 5}, "id"),
    ],
)
def test_malformed_interactions_raise_codec_error(body, path) -> None:
    with pytest.raises(CodecError) as info:
        Interaction.from_json(body)
    assert info.value.path == path


def test_usage_round_trip_keeps_unknown_and_odd_values() -> None:
    wire = {
        "total_input_tokens": 10,
        "total_tokens": None,
        "total_output_tokens": "7",
        "grounding_tool_count": [{"type": "google_search", "count": 2}],
        "future_counter": 3,
    }
    usage = Usage.from_json(wire)
    assert usage.total_input_tokens == 10
    assert usage.total_tokens is None
    assert usage.total_output_tokens is None
    assert usage.grounding_tool_count == [{"type": "google_search", "count": 2}]
    assert usage.raw == {"total_tokens": None, "total_output_tokens": "7", "future_counter": 3}
    assert usage.to_json() == wire


# -- merge --------------------------------------------------------------------------------------------


def test_merge_matches_the_fixture() -> None:
    hops = [load("response_requires_continuation.json"), load("continuation_hop2_response.json")]
    assert merge_continuation_hops(hops) == load("continuation_merged_turn.json")


def test_merge_does_not_mutate_its_input() -> None:
    hops = [load("response_requires_continuation.json"), load("continuation_hop2_response.json")]
    before = copy.deepcopy(hops)
    merge_continuation_hops(hops)
    assert hops == before


def test_merged_interaction() -> None:
    first, second = load("response_requires_continuation.json"), load("continuation_hop2_response.json")
    interaction = Interaction.from_hops([first, second])
    merged = load("continuation_merged_turn.json")
    assert interaction.id == second["id"]
    assert interaction.status == "completed"
    assert interaction.created == first["created"]
    assert interaction.updated == second["updated"]
    assert interaction.continuation_token is None
    assert interaction.steps == merged["steps"]
    assert interaction.usage == Usage.from_json(merged["usage"])
    assert interaction.hop_ids == merged["hop_ids"]
    assert interaction.text.startswith("# The Printing Press")
    assert interaction.text.endswith("across Europe.")
    assert Interaction.from_json(interaction.to_json()) == interaction


def test_merge_sums_lists_by_key_and_drops_later_user_input() -> None:
    echo = {"type": "user_input", "content": [{"type": "text", "text": "q"}]}
    hop1 = {
        "id": "h1",
        "status": "requires_continuation",
        "continuation_token": "t1",
        "steps": [echo, {"type": "model_output", "content": []}],
        "usage": {
            "total_input_tokens": 5,
            "total_cached_tokens": 1,
            "input_tokens_by_modality": [{"modality": "text", "tokens": 5}],
            "grounding_tool_count": [{"type": "google_search", "count": 1}],
        },
    }
    hop2 = {
        "id": "h2",
        "status": "requires_continuation",
        "continuation_token": "t2",
        "steps": [echo, {"type": "thought", "signature": "s"}],
        "usage": {
            "total_input_tokens": 9,
            "input_tokens_by_modality": [
                {"modality": "text", "tokens": 7},
                {"modality": "image", "tokens": 2},
            ],
            "grounding_tool_count": [
                {"type": "google_search", "count": 2},
                {"type": "retrieval", "count": 1},
            ],
        },
    }
    merged = merge_continuation_hops([hop1, hop2])
    assert [s["type"] for s in merged["steps"]] == ["user_input", "model_output", "thought"]
    assert merged["usage"] == {
        "total_input_tokens": 14,
        "total_cached_tokens": 1,
        "input_tokens_by_modality": [{"modality": "text", "tokens": 12}, {"modality": "image", "tokens": 2}],
        "grounding_tool_count": [{"type": "google_search", "count": 3}, {"type": "retrieval", "count": 1}],
        "initial_input_tokens": 5,
    }
    assert merged["id"] == "h2"
    assert merged["status"] == "requires_continuation"
    assert merged["continuation_token"] == "t2"
    assert merged["hop_ids"] == ["h1", "h2"]


def test_merge_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one hop"):
        merge_continuation_hops([])
