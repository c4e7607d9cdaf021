"""The wire fixtures in ``tests/fixtures/interactions`` are what they say they are.

Each file parses as the google-genai SDK's own types for what it stands for (no unknown union variant, no
unrecognised enum value, no field the SDK does not model except ``object`` on responses) and serialises back
unchanged; usage figures add up; the README beside them describes every file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, REPO

pydantic = pytest.importorskip("pydantic")
pytest.importorskip("google.genai", reason="the google-genai SDK is not installed")
from google.genai._gaos.types import interactions as sdk  # noqa: E402  # after the importorskip

# What each fixture is, as the SDK types it. A new fixture must be added here (and to the README).
KINDS: dict[str, str] = {
    "response_basic.json": "interaction",
    "stateless_function_call_turn1_request.json": "request",
    "stateless_function_call_turn1_response.json": "interaction",
    "stateless_function_call_turn2_request.json": "request",
    "stateless_function_call_turn2_response.json": "interaction",
    "stateless_function_call_history_after_turn2.json": "steps",
    "request_multimodal_user_input.json": "request",
    "stream_basic.sse": "sse",
    "stream_basic_steps.json": "steps",
    "stream_basic_interaction.json": "interaction",
    "stream_function_call.sse": "sse",
    "stream_function_call_steps.json": "steps",
    "stream_error_event.json": "event",
    "error_400_body.json": "error",
    "error_429_body.json": "error",
    "continuation_hop1_request.json": "request",
    "response_requires_continuation.json": "interaction",
    "continuation_hop2_request.json": "request",
    "continuation_hop2_response.json": "interaction",
    "continuation_merged_turn.json": "merged",
}

# Attributes the SDK computes on its Interaction object; never on the wire (the reference, section 3).
SDK_ONLY = {"output_text", "output_image", "output_audio", "output_video", "continuation_ids"}


def _unknowns(value: Any, path: str = "$") -> list[str]:
    """Where a parsed SDK object holds something the SDK did not recognise."""
    found: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        if type(value).__name__.startswith("Unknown"):
            found.append(f"{path}: {type(value).__name__}")
        found.extend(f"{path}.{key}: not an SDK field" for key in (value.__pydantic_extra__ or {}))
        for name in value.model_fields_set:
            if name in value.__dict__:
                found.extend(_unknowns(value.__dict__[name], f"{path}.{name}"))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(_unknowns(item, f"{path}[{i}]"))
    elif isinstance(value, dict):
        for key, item in value.items():
            found.extend(_unknowns(item, f"{path}.{key}"))
    elif "Unrecognized" in type(value).__name__:
        found.append(f"{path}: unrecognised value {value!r}")
    return found


def _check(adapter_type: Any, value: Any, *, allowed_extra: frozenset[str] = frozenset()) -> None:
    adapter = pydantic.TypeAdapter(adapter_type)
    parsed = adapter.validate_python(value)
    problems = [p for p in _unknowns(parsed) if p.split(":")[0] not in {f"$.{k}" for k in allowed_extra}]
    assert problems == []
    back = json.loads(adapter.dump_json(parsed, by_alias=True, exclude_unset=True))
    if isinstance(back, dict):
        back = {key: item for key, item in back.items() if key not in SDK_ONLY}
    assert back == value


def _sse_events(raw: bytes) -> list[dict[str, Any]]:
    text = raw.decode("utf-8")
    assert "\r" not in text  # LF line endings, as the reference says
    events = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[len("data: ") :]))
    assert text.rstrip("\n").endswith("data: [DONE]")
    return events


def test_every_fixture_has_a_kind_and_a_readme_row():
    present = {path.name for path in FIXTURES.iterdir() if path.name != "README.md"}
    assert present == set(KINDS)
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    for name in KINDS:
        assert f"| `{name}` |" in readme, name


def test_the_fixtures_are_inside_the_repository():
    assert FIXTURES.resolve().is_relative_to(REPO.resolve())
    assert FIXTURES.is_dir()


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_fixture_is_known_sdk_types_and_round_trips(name):
    path: Path = FIXTURES / name
    kind = KINDS[name]
    if kind == "sse":
        events = _sse_events(path.read_bytes())
        assert events
        for event in events:
            _check(sdk.InteractionSSEEvent, event)
        return
    value = json.loads(path.read_text(encoding="utf-8"))
    if kind == "interaction":
        _check(sdk.Interaction, value, allowed_extra=frozenset({"object"}))
        assert value["object"] == "interaction"
    elif kind == "request":
        _check(sdk.CreateModelInteraction, value)
        assert value["store"] is False  # every request here is the stateless form
    elif kind == "steps":
        _check(list[sdk.Step], value)
    elif kind == "event":
        _check(sdk.InteractionSSEEvent, value)
    elif kind == "error":
        error = value["error"]
        assert set(error) == {"code", "message", "status"}
        assert isinstance(error["code"], int)
        assert name.startswith(f"error_{error['code']}_")
    else:
        assert kind == "merged"
        _check(list[sdk.Step], value["steps"])
        _check(sdk.Usage, value["usage"])


def _usages() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, kind in KINDS.items():
        if kind == "interaction":
            found.append((name, json.loads((FIXTURES / name).read_text(encoding="utf-8"))["usage"]))
        elif kind == "sse":
            for event in _sse_events((FIXTURES / name).read_bytes()):
                usage = event.get("interaction", {}).get("usage")
                if usage:
                    found.append((name, usage))
    return found


@pytest.mark.parametrize(("name", "usage"), _usages())
def test_usage_adds_up(name, usage):
    parts = usage["total_input_tokens"] + usage["total_output_tokens"] + usage.get("total_thought_tokens", 0)
    assert parts == usage["total_tokens"], name


def test_the_merged_continuation_is_the_two_hops():
    hop1 = json.loads((FIXTURES / "response_requires_continuation.json").read_text(encoding="utf-8"))
    hop2 = json.loads((FIXTURES / "continuation_hop2_response.json").read_text(encoding="utf-8"))
    merged = json.loads((FIXTURES / "continuation_merged_turn.json").read_text(encoding="utf-8"))
    assert merged["steps"] == hop1["steps"] + hop2["steps"]
    assert (merged["id"], merged["status"]) == (hop2["id"], hop2["status"])
    assert merged["hop_ids"] == [hop1["id"], hop2["id"]]
    for key in ("total_input_tokens", "total_output_tokens", "total_thought_tokens", "total_tokens"):
        assert merged["usage"][key] == hop1["usage"][key] + hop2["usage"][key]
    assert merged["usage"]["initial_input_tokens"] == hop1["usage"]["total_input_tokens"]
    request1 = json.loads((FIXTURES / "continuation_hop1_request.json").read_text(encoding="utf-8"))
    request2 = json.loads((FIXTURES / "continuation_hop2_request.json").read_text(encoding="utf-8"))
    assert request2 == {**request1, "continuation_token": hop1["continuation_token"]}
