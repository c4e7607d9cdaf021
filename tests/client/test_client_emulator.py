"""The offline emulator: validation rules, replies, streaming shape, usage, stateful mode, transports."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest
from _client_support import load

from convstore.client import EventDecoder, HopAssembler, InteractionsClient, StreamResumed
from convstore.testing import (
    Emulator,
    EmulatorServer,
    Reply,
    continuation_reply,
    error_reply,
    function_call_reply,
    function_call_step,
    rate_limited,
    stream_error_reply,
    text_reply,
    thought_step,
)

HEADERS = {"x-goog-api-key": "k", "content-type": "application/json"}
USER = {"type": "user_input", "content": [{"type": "text", "text": "Where is my private diary?"}]}


def post(emulator: Emulator, body, *, path: str = "/v1beta/interactions", query=None, headers=HEADERS):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return emulator.handle("POST", path, query or {}, headers, raw)


def get(emulator: Emulator, interaction_id: str, **query):
    return emulator.handle("GET", f"/v1beta/interactions/{interaction_id}", query, HEADERS, b"")


def body(**fields):
    return {"model": "gemini-3-flash-preview", "store": False, "input": [USER], **fields}


def assert_rejected(response, *fragments: str) -> None:
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == 400
    assert error["status"] == "INVALID_ARGUMENT"
    for fragment in fragments:
        assert fragment in error["message"]
    assert "diary" not in error["message"]  # messages never quote content


# -- validation ---------------------------------------------------------------------------------------


def test_missing_model() -> None:
    b = body()
    del b["model"]
    assert_rejected(post(Emulator(), b), "model")


def test_unknown_top_level_field() -> None:
    assert_rejected(post(Emulator(), body(tool_choice="auto", temperature=1)), "temperature", "tool_choice")


def test_every_documented_field_is_accepted() -> None:
    b = body(
        system_instruction="Be brief.",
        generation_config={"temperature": 1.0, "tool_choice": "auto"},
        tools=[{"type": "google_search"}],
        response_format={"type": "text", "mime_type": "text/plain"},
        response_modalities=["text"],
        safety_settings=[],
        service_tier="standard",
        labels={"a": "b"},
    )
    assert post(Emulator(), b).status_code == 200


def test_previous_interaction_id_with_store_false() -> None:
    assert_rejected(
        post(Emulator(), body(previous_interaction_id="v1_x")), "previous_interaction_id", "store"
    )


def test_background_without_store() -> None:
    assert_rejected(post(Emulator(), body(background=True)), "background")
    assert post(Emulator(), body(background=True, store=True)).status_code == 200


def test_function_result_without_its_call() -> None:
    result = {"type": "function_result", "call_id": "fc_missing", "name": "f", "result": "private"}
    assert_rejected(post(Emulator(), body(input=[USER, result])), "input[1].call_id", "fc_missing")


def test_function_result_answering_a_later_call() -> None:
    call = {"type": "function_call", "id": "fc_1", "name": "f", "arguments": {}}
    result = {"type": "function_result", "call_id": "fc_1", "name": "f", "result": "ok"}
    assert_rejected(post(Emulator(), body(input=[USER, result, call])), "input[1]")
    assert post(Emulator(), body(input=[USER, call, result])).status_code == 200


def test_mixed_step_and_content_list() -> None:
    response = post(Emulator(), body(input=[USER, {"type": "text", "text": "diary"}]))
    assert_rejected(response, "mixes Step and Content", "input[0]", "input[1]")


@pytest.mark.parametrize(
    ("bad_input", "fragment"),
    [
        ([USER, "diary"], "input[1] must be an object"),
        ([{"content": []}], "input[0].type is missing"),
        ([], "empty"),
        (7, "input must be"),
        ({"type": "user_input", "content": []}, "must be a Content"),
    ],
)
def test_malformed_input(bad_input, fragment) -> None:
    assert_rejected(post(Emulator(), body(input=bad_input)), fragment)


def test_other_malformed_bodies() -> None:
    assert_rejected(post(Emulator(), b"{not json"), "not valid JSON")
    assert_rejected(post(Emulator(), b"[1]"), "JSON object")
    assert_rejected(post(Emulator(), body(stream="yes")), "stream must be a boolean")
    assert_rejected(post(Emulator(), body(tools=[{"name": "f"}])), "tools")


@pytest.mark.parametrize(
    "input_value", ["Hello", {"type": "text", "text": "Hello"}, [{"type": "text", "text": "Hello"}]]
)
def test_input_shapes(input_value) -> None:
    response = post(Emulator(), body(input=input_value))
    assert response.status_code == 200
    assert response.json["steps"][-1]["content"][0]["text"] == "Echo: Hello"


def test_missing_api_key_and_unknown_paths() -> None:
    emulator = Emulator()
    assert post(emulator, body(), headers={}).status_code == 401
    assert post(emulator, body(), path="/v2/interactions").status_code == 404
    assert post(emulator, body(), path="/v1beta/models").status_code == 404
    assert emulator.handle("PUT", "/v1beta/interactions", {}, HEADERS, b"").status_code == 405
    assert get(emulator, "v1_unknown").status_code == 404


# -- signatures ---------------------------------------------------------------------------------------


def first_turn(emulator: Emulator, reply: Reply | None = None):
    if reply is not None:
        emulator.script(reply)
    response = post(emulator, body())
    assert response.status_code == 200
    return response.json["steps"]


def test_replayed_turn_with_its_thought_is_accepted() -> None:
    emulator = Emulator()
    steps = first_turn(emulator)
    assert steps[0]["signature"].startswith("EMU")
    assert post(emulator, body(input=[USER, *steps, USER])).status_code == 200


def test_dropped_thought_is_rejected() -> None:
    emulator = Emulator()
    steps = first_turn(emulator)
    assert_rejected(post(emulator, body(input=[USER, steps[1], USER])), "input[1]", "thought")


@pytest.mark.parametrize("edit", ["signature", "summary"])
def test_altered_thought_is_rejected(edit) -> None:
    emulator = Emulator()
    thought, output = first_turn(emulator)
    changed = dict(thought)
    if edit == "signature":
        changed["signature"] = thought["signature"][:-2] + "AA"
    else:
        changed["summary"] = [{"type": "text", "text": "edited"}]
    response = post(emulator, body(input=[USER, changed, output, USER]))
    assert_rejected(response, "input[1]" if edit == "signature" else "input[2]")


def test_thought_of_a_function_call_turn_is_checked() -> None:
    emulator = Emulator()
    thought, call = first_turn(emulator, function_call_reply("get_weather", {"city": "Lisbon"}))
    result = {"type": "function_result", "call_id": call["id"], "name": "get_weather", "result": "sunny"}
    assert post(emulator, body(input=[USER, thought, call, result])).status_code == 200
    assert_rejected(post(emulator, body(input=[USER, call, result])), "input[1]")


def test_merged_continuation_turn_is_accepted() -> None:
    emulator = Emulator()
    emulator.script(continuation_reply(["a", "b"]))
    hop1 = post(emulator, body()).json
    hop2 = post(emulator, body(continuation_token=hop1["continuation_token"])).json
    merged = [*hop1["steps"], *hop2["steps"]]
    assert post(emulator, body(input=[USER, *merged, USER])).status_code == 200
    assert post(emulator, body(input=[USER, *merged[1:], USER])).status_code == 400


def test_foreign_signatures_are_accepted() -> None:
    request = load("stateless_function_call_turn2_request.json")
    assert post(Emulator(), request).status_code == 200


# -- replies ------------------------------------------------------------------------------------------


def test_default_reply_is_deterministic() -> None:
    a, b = Emulator(), Emulator()
    assert post(a, body()).body == post(b, body()).body
    assert post(Emulator(seed="other"), body()).json["id"] != post(Emulator(), body()).json["id"]


def test_default_reply_to_a_function_result() -> None:
    call = {"type": "function_call", "id": "fc_1", "name": "get_weather", "arguments": {}}
    result = {"type": "function_result", "call_id": "fc_1", "name": "get_weather", "result": "ok"}
    steps = post(Emulator(), body(input=[USER, call, result])).json["steps"]
    assert steps[-1]["content"][0]["text"] == "Received the result of get_weather."


def test_script_then_responder_then_default() -> None:
    seen = []

    def respond(request_body):
        seen.append(request_body)
        return text_reply("from the responder") if len(seen) == 1 else None

    emulator = Emulator(respond=respond)
    emulator.script(text_reply("scripted"))
    texts = [post(emulator, body()).json["steps"][-1]["content"][0]["text"] for _ in range(3)]
    assert texts == ["scripted", "from the responder", "Echo: Where is my private diary?"]
    assert seen == [body(), body()]


def test_function_call_reply() -> None:
    emulator = Emulator()
    emulator.script(
        Reply(
            steps=[
                thought_step(),
                function_call_step("a", {"x": 1}),
                function_call_step("b", {}, call_id="mine"),
            ],
            status="requires_action",
        )
    )
    interaction = post(emulator, body()).json
    assert interaction["status"] == "requires_action"
    calls = interaction["steps"][1:]
    assert calls[0]["id"].startswith("fc_emu")
    assert calls[1]["id"] == "mine"
    assert calls[0]["arguments"] == {"x": 1}


def test_error_replies() -> None:
    emulator = Emulator()
    emulator.script(
        rate_limited(retry_after=3), error_reply(500, "boom"), error_reply(400, string_code="bad")
    )
    limited = post(emulator, body())
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert limited.json == {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
        }
    }
    assert post(emulator, body()).json["error"]["status"] == "INTERNAL"
    assert post(emulator, body()).json == {
        "error": {"code": "bad", "message": "Request contains an invalid argument."}
    }


def test_stream_error_reply_without_stream_is_http_500() -> None:
    emulator = Emulator()
    emulator.script(stream_error_reply())
    assert post(emulator, body()).status_code == 500


def test_continuation_hops_and_token_checks() -> None:
    emulator = Emulator()
    emulator.script(continuation_reply(["one", "two"]))
    hop1 = post(emulator, body()).json
    assert hop1["status"] == "requires_continuation"
    token = hop1["continuation_token"]
    assert_rejected(post(emulator, body(continuation_token="nope")), "continuation_token")  # noqa: S106  # not a secret
    assert_rejected(post(emulator, body(input="other", continuation_token=token)), "continuation_token")
    hop2 = post(emulator, body(continuation_token=token)).json
    assert hop2["status"] == "completed"
    assert hop2["steps"] == [{"type": "model_output", "content": [{"type": "text", "text": "two"}]}]


def test_stored_continuation_needs_the_issuing_interaction() -> None:
    emulator = Emulator()
    emulator.script(continuation_reply(["one", "two"]))
    hop1 = post(emulator, body(store=True)).json
    token = hop1["continuation_token"]
    assert_rejected(post(emulator, {"model": "m", "continuation_token": token}), "previous_interaction_id")
    assert_rejected(
        post(
            emulator,
            {"model": "m", "continuation_token": token, "previous_interaction_id": hop1["id"], "input": "x"},
        ),
        "input",
    )
    ok = post(emulator, {"model": "m", "continuation_token": token, "previous_interaction_id": hop1["id"]})
    assert ok.json["status"] == "completed"


# -- usage --------------------------------------------------------------------------------------------


def test_usage_is_computed_from_the_prompt() -> None:
    b = body(system_instruction="Be brief.", tools=[{"type": "google_search"}])
    usage = post(Emulator(), b).json["usage"]
    units = [
        "Be brief.",
        json.dumps([{"type": "google_search"}], separators=(",", ":"), sort_keys=True),
        json.dumps(USER, separators=(",", ":"), sort_keys=True, ensure_ascii=False),
    ]
    assert usage["total_input_tokens"] == sum(math.ceil(len(u) / 4) for u in units)
    assert (
        usage["total_tokens"]
        == usage["total_input_tokens"] + usage["total_output_tokens"] + usage["total_thought_tokens"]
    )
    assert "total_cached_tokens" not in usage


def test_cached_tokens_for_a_shared_prefix() -> None:
    emulator = Emulator()
    first = post(emulator, body())
    steps = first.json["steps"]
    second = post(emulator, body(input=[USER, *steps, USER])).json["usage"]
    user_tokens = math.ceil(len(json.dumps(USER, separators=(",", ":"), sort_keys=True)) / 4)
    assert second["total_cached_tokens"] == user_tokens
    assert second["total_input_tokens"] > first.json["usage"]["total_input_tokens"]
    third = post(emulator, body(input="unrelated")).json["usage"]
    assert "total_cached_tokens" not in third


def test_usage_override() -> None:
    emulator = Emulator()
    emulator.script(text_reply("x", usage={"total_tokens": 1}))
    assert post(emulator, body()).json["usage"] == {"total_tokens": 1}


# -- streaming ----------------------------------------------------------------------------------------


def sse_events(raw: bytes) -> list[tuple[str, dict | str]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append(
            (lines["event"], lines["data"] if lines["data"] == "[DONE]" else json.loads(lines["data"]))
        )
    return out


def test_stream_shape() -> None:
    emulator = Emulator()
    emulator.script(text_reply("A reply long enough for several deltas."))
    response = post(emulator, body(stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.body)
    names = [name for name, _ in events]
    assert names[:3] == ["interaction.created", "interaction.status_update", "step.start"]
    assert names[-2:] == ["interaction.completed", "done"]
    assert events[-1][1] == "[DONE]"
    assert all(name == data["event_type"] for name, data in events[:-1])
    deltas = [data for name, data in events if name == "step.delta"]
    assert all(d["event_id"].startswith("evt_") for d in deltas)
    assert sum(d["delta"]["type"] == "text" for d in deltas) >= 2
    assert [d["delta"]["type"] for d in deltas][:2] == ["thought_summary", "thought_signature"]
    completed = events[-2][1]
    assert completed["interaction"]["usage"]["total_tokens"] > 0
    assert completed["event_id"] == f"evt_{len(events) - 1:06d}"


def test_streamed_function_call_arguments_come_in_fragments() -> None:
    emulator = Emulator()
    emulator.script(function_call_reply("get_weather", {"city": "Lisbon", "unit": "celsius"}))
    events = sse_events(post(emulator, body(stream=True)).body)
    start = next(d for n, d in events if n == "step.start" and d["step"]["type"] == "function_call")
    assert start["step"]["arguments"] == {}
    assert start["step"]["name"] == "get_weather"
    fragments = [
        d["delta"]["arguments"]
        for n, d in events
        if n == "step.delta" and d["delta"]["type"] == "arguments_delta"
    ]
    assert len(fragments) >= 2
    assert json.loads("".join(fragments)) == {"city": "Lisbon", "unit": "celsius"}
    assert events[-2][1]["interaction"]["status"] == "requires_action"


def test_alt_sse_and_v1_paths() -> None:
    emulator = Emulator()
    assert (
        post(emulator, body(), query={"alt": "sse"}).headers["content-type"].startswith("text/event-stream")
    )
    assert post(emulator, body(), path="/v1/interactions").status_code == 200


def test_broken_stream_and_stream_error_shapes() -> None:
    emulator = Emulator()
    emulator.script(text_reply("x", break_after=3), stream_error_reply(after=2))
    broken = post(emulator, body(stream=True))
    assert broken.broken
    assert len(broken.chunks) == 3
    failing = sse_events(post(emulator, body(stream=True)).body)
    assert [n for n, _ in failing] == ["interaction.created", "interaction.status_update", "error"]
    assert failing[-1][1]["error"] == {
        "code": "internal",
        "message": "An internal error occurred while generating the response.",
    }


# -- stateful mode ------------------------------------------------------------------------------------


def test_previous_interaction_id_prepends_the_stored_timeline() -> None:
    emulator = Emulator()
    first = post(emulator, body(store=True)).json
    assert first["id"] in emulator.stored_ids
    follow = {"model": "m", "previous_interaction_id": first["id"], "input": "And now?"}
    second = post(emulator, follow).json
    assert second["usage"]["total_input_tokens"] > first["usage"]["total_input_tokens"]
    timeline = get(emulator, second["id"]).json["steps"]
    assert [s["type"] for s in timeline] == [
        "user_input",
        "thought",
        "model_output",
        "user_input",
        "thought",
        "model_output",
    ]
    assert timeline[:3] == [USER, *first["steps"]]
    assert get(emulator, second["id"], include_input="true").json["input"] == "And now?"
    missing = post(emulator, {"model": "m", "previous_interaction_id": "v1_nope", "input": "x"})
    assert missing.status_code == 404


def test_stateless_interactions_are_not_kept() -> None:
    emulator = Emulator()
    interaction = post(emulator, body()).json
    assert emulator.stored_ids == []
    assert get(emulator, interaction["id"]).status_code == 404


def test_get_stream_replays_after_last_event_id() -> None:
    emulator = Emulator()
    full = post(emulator, body(store=True, stream=True)).body
    interaction_id = sse_events(full)[0][1]["interaction"]["id"]
    assert get(emulator, interaction_id, stream="true").body == full
    replay = sse_events(get(emulator, interaction_id, stream="true", last_event_id="evt_000005").body)
    assert replay == sse_events(full)[5:]
    assert get(emulator, interaction_id, stream="true", last_event_id="evt_999").status_code == 400
    assert get(emulator, interaction_id, last_event_id="evt_000005").status_code == 400


def test_delete() -> None:
    emulator = Emulator()
    interaction = post(emulator, body(store=True)).json
    assert (
        emulator.handle("DELETE", f"/v1beta/interactions/{interaction['id']}", {}, HEADERS, b"").status_code
        == 200
    )
    assert get(emulator, interaction["id"]).status_code == 404


def test_requests_are_recorded() -> None:
    emulator = Emulator()
    post(emulator, body(), query={"alt": "sse"})
    post(emulator, b"{bad", headers={"x-goog-api-key": "secret-key-123"})
    first, second = emulator.requests
    assert (first.method, first.path, first.query, first.body) == (
        "POST",
        "/v1beta/interactions",
        {"alt": "sse"},
        body(),
    )
    assert first.headers["x-goog-api-key"] == "k"
    assert second.body is None
    assert second.headers["x-goog-api-key"] == "secret-key-123"
    assert "secret-key-123" not in repr(second)
    assert "diary" not in repr(first)
    response = post(emulator, body())
    assert "diary" not in repr(response)
    assert "diary" not in repr(text_reply("my diary"))


# -- transports ---------------------------------------------------------------------------------------


def test_transport_serves_sync_and_async_clients() -> None:
    emulator = Emulator()
    with httpx.Client(transport=emulator.transport()) as http:
        assert (
            http.post("https://x/v1beta/interactions", json=body(), headers=HEADERS).json()["status"]
            == "completed"
        )

    async def run() -> int:
        async with httpx.AsyncClient(transport=emulator.transport()) as http:
            response = await http.post("https://x/v1beta/interactions", json=body(), headers=HEADERS)
            return response.status_code

    assert asyncio.run(run()) == 200


def test_transport_drops_broken_streams() -> None:
    emulator = Emulator()
    emulator.script(text_reply("x", break_after=2))
    with httpx.Client(transport=emulator.transport()) as http:
        request = http.build_request(
            "POST", "https://x/v1beta/interactions", json=body(stream=True), headers=HEADERS
        )
        response = http.send(request, stream=True)
        iterator = response.iter_bytes()
        assert next(iterator).startswith(b"event: interaction.created")
        assert next(iterator).startswith(b"event: interaction.status_update")
        with pytest.raises(httpx.ReadError):
            next(iterator)
        response.close()


def test_local_server_json_stream_and_drop() -> None:
    emulator = Emulator()
    emulator.script(
        text_reply("over real HTTP"), text_reply("streamed"), text_reply("x" * 200, break_after=4)
    )
    with EmulatorServer(emulator) as server, httpx.Client(base_url=server.base_url) as http:
        assert server.base_url.startswith("http://127.0.0.1:")
        response = http.post("/v1beta/interactions", json=body(), headers=HEADERS)
        assert response.json()["steps"][-1]["content"][0]["text"] == "over real HTTP"
        with http.stream("POST", "/v1beta/interactions", json=body(stream=True), headers=HEADERS) as streamed:
            hop = HopAssembler()
            decoder = EventDecoder()
            for chunk in streamed.iter_bytes():
                for event in decoder.feed(chunk):
                    hop.feed(event)
        assert hop.result()["steps"][-1]["content"][0]["text"] == "streamed"
        with (
            http.stream("POST", "/v1beta/interactions", json=body(stream=True), headers=HEADERS) as dropped,
            pytest.raises(httpx.TransportError),
        ):
            for _ in dropped.iter_bytes():
                pass


def test_client_resumes_over_real_http() -> None:
    emulator = Emulator()
    emulator.script(text_reply("y" * 200, break_after=9))
    with EmulatorServer(emulator) as server, InteractionsClient("k", base_url=server.base_url) as client:
        stream = client.stream({**body(), "store": True})
        events = list(stream)
    assert StreamResumed(reason="replay", hop=0) in events
    assert stream.interaction is not None
    assert stream.interaction.text == "y" * 200
