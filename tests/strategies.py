"""Hypothesis strategies for wire JSON: every known step and content type, unknown ones, unknown fields,
absent and null optional fields, and text that is hard to store (NUL, lone surrogates, astral characters)."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import strategies as st

# Text that stresses storage: NUL (PostgreSQL text cannot hold a raw one), surrogates (UTF-8 cannot carry a
# lone one), astral characters, quotes and backslashes.
hard_text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\x00", "\ud800", "\udfff", "😀", '"', "\\", "\u2028", "\n"]),
    ),
    max_size=40,
)
plain_text = st.text(max_size=40)
ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    hard_text,
)
# Keys of arbitrary JSON: any text but ``mime_type``, which the codec checks wherever it is in a step (a media
# type, RFC 6838: ``codec.text_problems``), so that arbitrary JSON with one, under a field this library does
# not model, is refused by design (hypothesis draws the codebase's own string literals too).
json_keys = plain_text.filter(lambda key: key != "mime_type")
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(json_keys, children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(json_keys, json_values, max_size=4)

# Field names this library does not model, to check they survive.
unknown_field_names = st.sampled_from(["x_future", "metadata_v2", "newField", "z"])


def _with_optional(required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]):
    """Objects with every required field, and each optional field absent, null or present."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        obj = {name: draw(strategy) for name, strategy in required.items()}
        for name, strategy in optional.items():
            choice = draw(st.sampled_from(["absent", "null", "value"]))
            if choice == "null":
                obj[name] = None
            elif choice == "value":
                obj[name] = draw(strategy)
        extras = draw(st.dictionaries(unknown_field_names, json_values, max_size=2))
        for name, value in extras.items():
            obj.setdefault(name, value)
        return obj

    return build()


def _tagged(
    tag: str, required: dict[str, Any], optional: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    return _with_optional({"type": st.just(tag), **required}, optional)


media = {"data": st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=", max_size=40), "uri": plain_text}
text_content = _tagged("text", {"text": hard_text}, {"annotations": st.lists(json_objects, max_size=2)})
known_contents = st.one_of(
    text_content,
    _tagged("image", {}, {**media, "mime_type": st.just("image/png"), "resolution": st.just("high")}),
    _tagged("audio", {}, {**media, "mime_type": st.just("audio/wav"), "sample_rate": st.integers(0, 96000)}),
    _tagged("video", {}, {**media, "mime_type": st.just("video/mp4"), "name": plain_text}),
    _tagged("document", {}, {**media, "mime_type": st.just("application/pdf")}),
)
unknown_contents = st.builds(
    lambda tag, body: {**body, "type": tag}, st.sampled_from(["hologram", "smell"]), json_objects
)
contents = st.one_of(known_contents, unknown_contents)
content_lists = st.lists(contents, max_size=3)
signatures = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=40
)

known_steps = st.one_of(
    _tagged("user_input", {}, {"content": content_lists}),
    _tagged("model_output", {}, {"content": content_lists, "error": json_objects}),
    _tagged("thought", {}, {"signature": signatures, "summary": st.lists(text_content, max_size=2)}),
    _tagged("function_call", {"id": ids, "name": ids, "arguments": json_objects}, {}),
    _tagged(
        "function_result",
        {"call_id": ids, "result": st.one_of(hard_text, content_lists, json_objects)},
        {"name": ids, "is_error": st.booleans()},
    ),
    _tagged("code_execution_call", {"id": ids, "arguments": json_objects}, {"signature": signatures}),
    _tagged(
        "code_execution_result",
        {"call_id": ids, "result": st.one_of(hard_text, content_lists)},
        {"is_error": st.booleans(), "signature": signatures},
    ),
    _tagged("google_search_call", {"id": ids, "arguments": json_objects}, {"search_type": ids}),
    _tagged("google_search_result", {"call_id": ids, "result": st.lists(json_objects, max_size=2)}, {}),
    _tagged("url_context_result", {"call_id": ids, "result": st.lists(json_objects, max_size=2)}, {}),
    _tagged("google_maps_call", {"id": ids}, {"arguments": json_objects}),
    _tagged("file_search_call", {"id": ids}, {"signature": signatures}),
    _tagged(
        "mcp_server_tool_call", {"id": ids, "name": ids, "server_name": ids, "arguments": json_objects}, {}
    ),
    _tagged("mcp_server_tool_result", {"call_id": ids, "result": json_values}, {"server_name": ids}),
    _tagged("retrieval_result", {"call_id": ids}, {"is_error": st.booleans()}),
    _tagged("processing_call", {"id": ids}, {"signature": signatures}),
)
unknown_steps = st.builds(
    lambda tag, body: {**body, "type": tag},
    st.sampled_from(["teleport_call", "future_step", "model_output_v2"]),
    json_objects,
)
steps = st.one_of(known_steps, unknown_steps)
exchanges = st.lists(steps, min_size=1, max_size=4)


def mutate_bytes(data: bytes, rng: Any, splices: list[bytes], *, repeat_keys: bool = False) -> bytes:
    """One to three seeded byte-level mutations of ``data``: a byte changed, a run deleted, one of
    ``splices`` inserted, the tail cut; with ``repeat_keys``, also a ``"key":value`` pair near the position
    given twice. The fuzz loops of test_hostile and test_bounds share it."""
    out = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        if not out:
            break
        position = rng.randrange(len(out))
        action = rng.randrange(5 if repeat_keys else 4)
        if action == 0:
            out[position] = rng.randrange(256)
        elif action == 1:
            del out[position : position + rng.randrange(1, 20)]
        elif action == 2:
            out[position:position] = rng.choice(splices)
        elif action == 3:
            del out[position:]
        else:
            start = out.find(b'"', position)
            end = out.find(b",", start)
            if start >= 0 and end > start:
                out[end:end] = b"," + out[start:end]
    return bytes(out)


# How many examples a property test with a count of its own runs, by HYPOTHESIS_PROFILE (conftest.py): the
# default run (dev) takes a third of the count written in the test, CI (ci) the count itself, long ten times
# it. Tests without a count follow the profile's max_examples.
PROFILE_SCALE = {"dev": 1 / 3, "ci": 1, "long": 10}


def examples(count: int) -> int:
    """``count`` scaled for the running profile (at least 5)."""
    scale = PROFILE_SCALE.get(os.environ.get("HYPOTHESIS_PROFILE", "dev"), 1)
    return max(5, round(count * scale))
