"""The clients, sync and async on the same cases: create, stream, retries, errors, continuation, resume."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import httpx
import pytest
from _client_support import Driver, load

from convstore.client import (
    AsyncInteractionsClient,
    InteractionCompleted,
    InteractionsClient,
    StepDelta,
    StreamResumed,
)
from convstore.errors import APIConnectionError, APIError, StreamError
from convstore.model._interaction import Interaction
from convstore.testing import (
    Emulator,
    continuation_reply,
    error_reply,
    rate_limited,
    stream_error_reply,
    text_reply,
)

BODY = {"model": "gemini-3-flash-preview", "store": False, "input": "Hello"}


@pytest.fixture(params=["sync", "async"])
def make_driver(request: pytest.FixtureRequest) -> Callable[..., Driver]:
    """``make_driver(transport, **client_kwargs)``: a driver of one client flavour (both are run)."""

    def make(transport: object, **client_kwargs: object) -> Driver:
        return Driver(str(request.param), transport, **client_kwargs)

    return make


class Recorder:
    """A MockTransport handler replaying scripted responses (or exceptions) and recording requests."""

    def __init__(
        self, *responses: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]
    ) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(item, Exception):
            raise item
        if callable(item):
            return item(request)
        return item

    @property
    def bodies(self) -> list[dict]:
        return [json.loads(r.content) if r.content else None for r in self.requests]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def as_json(body: object, status: int = 200, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def as_sse(raw: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=raw)


# -- create -------------------------------------------------------------------------------------------


def test_create_sends_the_documented_request(make_driver) -> None:
    recorder = Recorder(as_json(load("response_basic.json")))
    interaction = make_driver(recorder.transport()).create(BODY)
    assert interaction == Interaction.from_json(load("response_basic.json"))
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == "https://generativelanguage.googleapis.com/v1beta/interactions"
    assert request.headers["x-goog-api-key"] == "test-key"
    assert request.headers["accept"] == "application/json"
    assert request.headers["Api-Revision"] == "2026-05-20"
    assert recorder.bodies == [BODY]


def test_create_against_the_emulator(make_driver) -> None:
    emulator = Emulator()
    interaction = make_driver(emulator.transport()).create(BODY)
    assert interaction.status == "completed"
    assert interaction.text == "Echo: Hello"
    assert [s["type"] for s in interaction.steps] == ["thought", "model_output"]
    assert interaction.usage is not None
    assert interaction.usage.total_tokens == (
        interaction.usage.total_input_tokens
        + interaction.usage.total_output_tokens
        + interaction.usage.total_thought_tokens
    )


def test_create_refuses_a_stream_body(make_driver) -> None:
    with pytest.raises(ValueError, match="stream"):
        make_driver(Emulator().transport()).create({**BODY, "stream": True})


def test_non_object_response_is_an_api_error(make_driver) -> None:
    with pytest.raises(APIError, match="JSON object"):
        make_driver(Recorder(httpx.Response(200, content=b"[]")).transport()).create(BODY)


# -- errors and retries -------------------------------------------------------------------------------


def test_error_response_fields(make_driver) -> None:
    recorder = Recorder(as_json(load("error_400_body.json"), 400))
    with pytest.raises(APIError) as info:
        make_driver(recorder.transport()).create(BODY)
    assert (info.value.status_code, info.value.code, info.value.status) == (400, 400, "INVALID_ARGUMENT")
    assert info.value.message == "Request contains an invalid argument."
    assert len(recorder.requests) == 1  # 400 is not retried


def test_string_code_error_from_the_emulator(make_driver) -> None:
    emulator = Emulator()
    emulator.script(error_reply(403, "Permission denied.", string_code="permission_denied"))
    with pytest.raises(APIError) as info:
        make_driver(emulator.transport()).create(BODY)
    assert (info.value.status_code, info.value.code, info.value.status) == (403, "permission_denied", None)


def test_429_with_retry_after_is_retried(make_driver) -> None:
    emulator = Emulator()
    emulator.script(rate_limited(retry_after=2), text_reply("after the wait"))
    driver = make_driver(emulator.transport())
    assert driver.create(BODY).text == "after the wait"
    assert driver.sleeps == [2.0]
    assert len(emulator.requests) == 2


def test_retry_after_ms(make_driver) -> None:
    emulator = Emulator()
    emulator.script(rate_limited(retry_after=1500, milliseconds=True), text_reply("ok"))
    driver = make_driver(emulator.transport())
    driver.create(BODY)
    assert driver.sleeps == [1.5]


def test_503_backs_off_exponentially(make_driver) -> None:
    recorder = Recorder(
        as_json({"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}, 503),
        as_json({"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}, 503),
        as_json(load("response_basic.json")),
    )
    driver = make_driver(recorder.transport())
    assert driver.create(BODY).status == "completed"
    assert len(driver.sleeps) == 2
    assert 0.375 <= driver.sleeps[0] <= 0.5
    assert 0.75 <= driver.sleeps[1] <= 1.0


def test_transport_error_is_retried(make_driver) -> None:
    recorder = Recorder(
        httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), as_json(load("response_basic.json"))
    )
    driver = make_driver(recorder.transport())
    assert driver.create(BODY).id == "v1_ChdCYXNpY1R1cm4wMQ"
    assert len(recorder.requests) == 3
    assert len(driver.sleeps) == 2


def test_retries_run_out(make_driver) -> None:
    recorder = Recorder(
        as_json({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}, 429)
    )
    driver = make_driver(recorder.transport(), max_retries=2)
    with pytest.raises(APIError) as info:
        driver.create(BODY)
    assert info.value.status_code == 429
    assert len(recorder.requests) == 3
    assert len(driver.sleeps) == 2


def test_connection_errors_run_out(make_driver) -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    driver = make_driver(recorder.transport(), max_retries=1)
    with pytest.raises(APIConnectionError) as info:
        driver.create(BODY)
    assert isinstance(info.value, ConnectionError)
    assert "2 attempt(s)" in str(info.value)
    assert len(recorder.requests) == 2


def test_stream_opening_is_retried(make_driver) -> None:
    recorder = Recorder(
        as_json({"error": {"code": 500, "message": "x", "status": "INTERNAL"}}, 500),
        as_sse(load("stream_basic.sse")),
    )
    driver = make_driver(recorder.transport())
    _, interaction = driver.stream(BODY)
    assert interaction.status == "completed"
    assert len(driver.sleeps) == 1


# -- the API key stays private ------------------------------------------------------------------------

SECRET = "AIzaSy-this-must-never-leak"


def test_api_key_never_in_repr_errors_or_logs(make_driver, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    recorder = Recorder(
        httpx.ConnectError("refused"), as_json({"error": {"code": 400, "message": "bad"}}, 400)
    )
    driver = make_driver(recorder.transport(), api_key=SECRET, max_retries=1)
    with pytest.raises(APIError) as info:
        driver.create(BODY)
    assert recorder.requests[0].headers["x-goog-api-key"] == SECRET
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)
    assert "retrying" in caplog.text
    assert SECRET not in caplog.text
    for client in (InteractionsClient(SECRET), AsyncInteractionsClient(SECRET)):
        assert SECRET not in repr(client)
        assert SECRET not in repr(vars(client).get("_config"))


def test_api_key_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    emulator = Emulator()
    with httpx.Client(transport=emulator.transport()) as http:
        InteractionsClient(http_client=http).create(BODY)
    assert emulator.requests[0].headers["x-goog-api-key"] == SECRET


@pytest.mark.parametrize("cls", [InteractionsClient, AsyncInteractionsClient])
def test_missing_api_key(monkeypatch, cls) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="no API key"):
        cls()


# -- streaming ----------------------------------------------------------------------------------------


def test_stream_fixture(make_driver) -> None:
    recorder = Recorder(as_sse(load("stream_basic.sse")))
    events, interaction = make_driver(recorder.transport()).stream(BODY)
    assert interaction == Interaction.from_json(load("stream_basic_interaction.json"))
    assert len(events) == 11
    assert (
        "".join(e.text for e in events if isinstance(e, StepDelta))
        == "Water boils at 100 °C (212 °F) at sea level."
    )
    assert isinstance(events[-1], InteractionCompleted)
    (request,) = recorder.requests
    assert request.headers["accept"] == "text/event-stream"
    assert recorder.bodies == [{**BODY, "stream": True}]


def test_stream_function_call_fixture(make_driver) -> None:
    _, interaction = make_driver(Recorder(as_sse(load("stream_function_call.sse"))).transport()).stream(BODY)
    assert interaction.steps == load("stream_function_call_steps.json")
    assert interaction.status == "requires_action"


def test_stream_error_event(make_driver) -> None:
    raw = load("stream_basic.sse")
    cut = raw.index(b"event: step.start")
    error_event = b"event: error\ndata: " + json.dumps(load("stream_error_event.json")).encode() + b"\n\n"
    driver = make_driver(Recorder(as_sse(raw[:cut] + error_event)).transport())
    with pytest.raises(APIError) as info:
        driver.stream(BODY)
    assert info.value.code == "internal"
    assert len(driver.events) == 2  # the events before the error were delivered


def test_stream_error_event_from_the_emulator(make_driver) -> None:
    emulator = Emulator()
    emulator.script(stream_error_reply(after=4))
    driver = make_driver(emulator.transport())
    with pytest.raises(APIError, match="internal error"):
        driver.stream(BODY)
    assert len(driver.events) == 4


@pytest.mark.parametrize("ending", [b"", b"event: done\ndata: [DONE]\n\n"])
def test_stream_without_completion_is_a_stream_error(make_driver, ending) -> None:
    raw = load("stream_basic.sse")
    truncated = raw[: raw.index(b"event: interaction.completed")] + ending
    with pytest.raises(StreamError, match=r"before interaction\.completed"):
        make_driver(Recorder(as_sse(truncated)).transport()).stream(BODY)


def test_stream_needs_an_event_stream(make_driver) -> None:
    with pytest.raises(StreamError, match="text/event-stream"):
        make_driver(Recorder(as_json(load("response_basic.json"))).transport()).stream(BODY)


def test_stream_against_the_emulator_equals_create(make_driver) -> None:
    streamed, unary = Emulator(seed="s"), Emulator(seed="s")
    events, interaction = make_driver(streamed.transport()).stream(BODY)
    expected = make_driver(unary.transport()).create(BODY)
    assert interaction == expected
    assert sum(isinstance(e, StepDelta) and e.delta["type"] == "text" for e in events) >= 1


def test_sync_stream_api() -> None:
    emulator = Emulator()
    emulator.script(text_reply("one"), text_reply("two"))
    with httpx.Client(transport=emulator.transport()) as http:
        client = InteractionsClient("k", http_client=http)
        stream = client.stream(BODY)
        assert stream.interaction is None
        assert emulator.requests == []  # nothing sent before iterating
        assert stream.get_final_interaction().text == "one"
        assert stream.interaction is not None
        with client.stream(BODY) as partial:
            next(iter(partial))
        assert partial.interaction is None
        assert len(partial.current_steps()) == 0


def test_async_stream_api() -> None:
    async def main() -> None:
        emulator = Emulator()
        emulator.script(text_reply("one"))
        async with httpx.AsyncClient(transport=emulator.transport()) as http:
            client = AsyncInteractionsClient("k", http_client=http)
            stream = client.stream(BODY)
            assert (await stream.get_final_interaction()).text == "one"
            assert stream.interaction is not None

    asyncio.run(main())


@pytest.mark.parametrize("cls", [InteractionsClient, AsyncInteractionsClient])
def test_clients_close_only_what_they_own(cls) -> None:
    async def close(client) -> None:
        await client.aclose()

    owned = cls("k")
    shared_http = httpx.Client() if cls is InteractionsClient else httpx.AsyncClient()
    borrowed = cls("k", http_client=shared_http)
    for client in (owned, borrowed):
        if cls is InteractionsClient:
            with client:
                pass
        else:
            asyncio.run(close(client))
    assert owned._http.is_closed
    assert not shared_http.is_closed
    if cls is InteractionsClient:
        shared_http.close()
    else:
        asyncio.run(shared_http.aclose())


# -- continuation -------------------------------------------------------------------------------------


def test_continuation_against_fixtures(make_driver) -> None:
    recorder = Recorder(
        as_json(load("response_requires_continuation.json")), as_json(load("continuation_hop2_response.json"))
    )
    interaction = make_driver(recorder.transport()).create(load("continuation_hop1_request.json"))
    assert recorder.bodies == [load("continuation_hop1_request.json"), load("continuation_hop2_request.json")]
    merged = load("continuation_merged_turn.json")
    assert (interaction.id, interaction.status, interaction.steps) == (
        merged["id"],
        merged["status"],
        merged["steps"],
    )
    assert interaction.usage.to_json() == merged["usage"]
    assert interaction.hop_ids == merged["hop_ids"]


def test_continuation_can_be_turned_off(make_driver) -> None:
    recorder = Recorder(as_json(load("response_requires_continuation.json")))
    interaction = make_driver(recorder.transport()).create(BODY, auto_continue=False)
    assert interaction.status == "requires_continuation"
    assert interaction.continuation_token == "Cg5jb250X3Rva2VuX2hvcDESEHYxX2hvcDE="
    assert len(recorder.requests) == 1
    off = make_driver(
        Recorder(as_json(load("response_requires_continuation.json"))).transport(), auto_continue=False
    )
    assert off.create(BODY).status == "requires_continuation"


def test_continuation_stops_when_the_token_comes_back(make_driver) -> None:
    recorder = Recorder(as_json(load("response_requires_continuation.json")))  # the same token, forever
    interaction = make_driver(recorder.transport()).create(BODY)
    assert len(recorder.requests) == 2
    assert interaction.status == "requires_continuation"
    assert interaction.continuation_token == "Cg5jb250X3Rva2VuX2hvcDESEHYxX2hvcDE="
    assert len(interaction.hop_ids) == 1  # both hops carry the same id: listed once


@pytest.mark.parametrize("store", [False, True])
def test_continuation_against_the_emulator(make_driver, store) -> None:
    emulator = Emulator()
    emulator.script(continuation_reply(["one ", "two ", "three"]))
    body = {**BODY, "store": store}
    interaction = make_driver(emulator.transport()).create(body)
    assert interaction.text == "one two three"
    assert len(interaction.hop_ids) == 3
    usage = interaction.usage
    assert usage.initial_input_tokens is not None
    assert usage.total_input_tokens == 3 * usage.initial_input_tokens  # every hop is billed its input again
    hop2 = emulator.requests[1].body
    if store:
        assert hop2["previous_interaction_id"] == interaction.hop_ids[0]
        assert "input" not in hop2
    else:
        assert {k: v for k, v in hop2.items() if k != "continuation_token"} == body
        assert "previous_interaction_id" not in hop2


def test_streamed_continuation(make_driver) -> None:
    emulator = Emulator()
    emulator.script(continuation_reply(["first half, ", "second half."]))
    events, interaction = make_driver(emulator.transport()).stream(BODY)
    markers = [e for e in events if isinstance(e, StreamResumed)]
    assert markers == [StreamResumed(reason="continuation", hop=1)]
    assert interaction.text == "first half, second half."
    assert interaction.status == "completed"
    assert len(interaction.hop_ids) == 2


# -- resume after a broken stream ---------------------------------------------------------------------

LONG = "A long streamed answer that arrives in many small text deltas, one after the other."


def test_resume_from_checkpoint(make_driver) -> None:
    emulator = Emulator()
    # Events: created, status, thought start, summary, signature, stop, checkpoint, output start, 2 deltas...
    emulator.script(text_reply(LONG, checkpoints=True, break_after=10))
    events, interaction = make_driver(emulator.transport()).stream(BODY)
    assert StreamResumed(reason="checkpoint", hop=1) in events
    assert interaction.text == LONG
    assert [s["type"] for s in interaction.steps] == ["thought", "model_output"]
    resumed = emulator.requests[1].body
    assert resumed["continuation_token"]
    assert {k: v for k, v in resumed.items() if k != "continuation_token"} == {**BODY, "stream": True}
    # The partial output received after the checkpoint was discarded, not duplicated.
    assert interaction.text.count(LONG[:20]) == 1


def test_resume_by_replaying_a_stored_interaction(make_driver) -> None:
    emulator = Emulator()
    emulator.script(text_reply(LONG, break_after=9))
    events, interaction = make_driver(emulator.transport()).stream({**BODY, "store": True})
    assert StreamResumed(reason="replay", hop=0) in events
    assert interaction.text == LONG
    get = emulator.requests[1]
    assert get.method == "GET"
    assert get.path == f"/v1beta/interactions/{interaction.id}"
    assert get.query == {"stream": "true", "last_event_id": "evt_000009"}


def test_unresumable_break_is_a_stream_error(make_driver) -> None:
    emulator = Emulator()
    emulator.script(text_reply(LONG, break_after=9))
    driver = make_driver(emulator.transport())
    with pytest.raises(StreamError, match="no checkpoint token") as info:
        driver.stream(BODY)
    assert isinstance(info.value.__cause__, httpx.ReadError)
    assert len(emulator.requests) == 1


def test_resumes_stop_without_progress(make_driver) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raw = (
            b'data: {"event_type":"interaction.created","interaction":{"id":"i","status":"in_progress"}}\n\n'
            b'data: {"event_type":"interaction.status_update","interaction_id":"i","status":"in_progress",'
            b'"continuation_token":"tok"}\n\n'
        )

        class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
            def __iter__(self):
                yield raw
                raise httpx.ReadError("drop")

            async def __aiter__(self):
                yield raw
                raise httpx.ReadError("drop")

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Body())

    recorder = Recorder(broken)
    with pytest.raises(StreamError, match="without progress"):
        make_driver(recorder.transport(), max_retries=2).stream(BODY)
    assert len(recorder.requests) == 3
