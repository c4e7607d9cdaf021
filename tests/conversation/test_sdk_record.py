"""The official google-genai SDK's objects recorded as convstore's own client would record the same reply:
every step and content type the SDK defines, streamed and not, byte for byte.

Each path runs against its own emulator with the same script: the emulator is deterministic, so the two
sides receive the same reply (ids, signatures and usage included) and must store the same bytes.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from conftest import model, user

import convstore
from convstore import CodecError, codec
from convstore.testing import (
    Emulator,
    EmulatorServer,
    Reply,
    continuation_reply,
    function_call_reply,
    text_reply,
)

genai = pytest.importorskip("google.genai")
sdk_types = pytest.importorskip("google.genai.types")
I = pytest.importorskip("google.genai.interactions")  # noqa: E741 -- the SDK's interaction types

MODEL = "gemini-3-flash-preview"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
SIG = "EpYCCpMCAb4+9vuJ2kQx7Lw0mZp3sQyT1uN8cVbR5eXo"

# One step of every type the SDK defines (and one it does not), every content and annotation type, keys in
# the wire's order. Function arguments and result objects are out of alphabetical order on purpose: they
# are the user's JSON and must keep theirs.
EVERY_STEP: list[dict[str, object]] = [
    {"type": "thought", "summary": [{"type": "text", "text": "Plan the answer."}], "signature": SIG},
    {
        "type": "code_execution_call",
        "id": "ce_1",
        "arguments": {"code": "print(2 + 2)", "language": "python"},
        "signature": SIG,
    },
    {
        "type": "code_execution_result",
        "call_id": "ce_1",
        "result": "4\n",
        "is_error": False,
        "signature": SIG,
    },
    {
        "type": "url_context_call",
        "id": "uc_1",
        "arguments": {"urls": ["https://example.com/a"]},
        "signature": SIG,
    },
    {
        "type": "url_context_result",
        "call_id": "uc_1",
        "result": [{"url": "https://example.com/a", "status": "success"}],
        "signature": SIG,
    },
    {
        "type": "google_search_call",
        "id": "gs_1",
        "arguments": {"queries": ["weather lisbon"]},
        "search_type": "web_search",
        "signature": SIG,
    },
    {
        "type": "google_search_result",
        "call_id": "gs_1",
        "result": [{"search_suggestions": "<div>lisbon</div>"}],
        "signature": SIG,
    },
    {
        "type": "google_maps_call",
        "id": "gm_1",
        "arguments": {"queries": ["cafes near Rossio"]},
        "signature": SIG,
    },
    {
        "type": "google_maps_result",
        "call_id": "gm_1",
        "result": [{"places": [{"name": "Cafe A", "place_id": "p1"}], "widget_context_token": "wct"}],
        "signature": SIG,
    },
    {"type": "file_search_call", "id": "fs_1", "signature": SIG},
    {"type": "file_search_result", "call_id": "fs_1", "signature": SIG},
    {
        "type": "retrieval_call",
        "id": "rt_1",
        "arguments": {"queries": ["q3 revenue"]},
        "retrieval_type": "vertex_ai_search",
        "signature": SIG,
    },
    {"type": "retrieval_result", "call_id": "rt_1", "is_error": False, "signature": SIG},
    {
        "type": "mcp_server_tool_call",
        "id": "mc_1",
        "name": "lookup",
        "server_name": "crm",
        "arguments": {"z": 1, "a": 2},
    },
    {
        "type": "mcp_server_tool_result",
        "call_id": "mc_1",
        "name": "lookup",
        "server_name": "crm",
        "result": {"z": "last", "a": "first"},
    },
    {"type": "processing_call", "id": "pc_1", "signature": SIG},
    {"type": "processing_result", "call_id": "pc_1", "signature": SIG},
    {
        "type": "tool_search_call",
        "id": "ts_1",
        "arguments": {"function_names": ["get_weather"]},
        "signature": SIG,
    },
    {
        "type": "tool_search_result",
        "call_id": "ts_1",
        "result": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "signature": SIG,
    },
    {"type": "a_future_step", "zeta": 1, "alpha": {"b": 2, "a": 1}},
    {
        "type": "model_output",
        "content": [
            {
                "type": "text",
                "text": "Here is what I found.",
                "annotations": [
                    {
                        "type": "url_citation",
                        "start_index": 0,
                        "end_index": 4,
                        "url": "https://example.com/a",
                        "title": "A",
                    },
                    {
                        "type": "file_citation",
                        "start_index": 5,
                        "end_index": 9,
                        "document_uri": "files/doc",
                        "file_name": "doc.pdf",
                        "page_number": 2,
                    },
                    {
                        "type": "place_citation",
                        "name": "Cafe A",
                        "start_index": 10,
                        "end_index": 14,
                        "url": "https://maps.example/p1",
                        "place_id": "p1",
                    },
                ],
            },
            {"type": "image", "mime_type": "image/png", "data": PNG},
            {"type": "audio", "mime_type": "audio/wav", "uri": "https://example.com/a.wav"},
            {"type": "video", "mime_type": "video/mp4", "uri": "https://example.com/v.mp4"},
            {"type": "document", "mime_type": "application/pdf", "uri": "https://example.com/d.pdf"},
            {"type": "a_future_content", "y": 1, "b": 2},
        ],
    },
    {
        "type": "function_call",
        "id": "fc_1",
        "name": "get_weather",
        "arguments": {"unit": "celsius", "city": "Lisbon"},
    },
]


def sdk_client(server: EmulatorServer):
    return genai.Client(
        api_key="test-key", http_options=sdk_types.HttpOptions(base_url=server.base_url, api_version="v1beta")
    )


def recorded(conv) -> tuple[str, list[object]]:
    """What the store holds for the branch: the history's exact text and each exchange's record."""
    exchanges = [(e.interaction_id, e.status, e.model, e.usage, e.stored) for e in conv.exchanges()]
    return conv.history_json(), exchanges


def test_sdk_objects_are_steps_for_append_request_and_record(store):
    conv = store.create_conversation(model=MODEL)
    conv.append(
        [
            I.UserInputStep(content=[I.TextContent(text="hi")]),
            I.ModelOutputStep(content=[I.TextContent(text="yo")]),
        ]
    )
    assert conv.history_json() == codec.dumps([user("hi"), model("yo")])
    body = conv.request(I.TextContent(text="a content item"))
    assert body["input"][-1] == user("a content item")
    body = conv.request([I.UserInputStep(content=[I.TextContent(text="a step")])])
    assert body["input"][-1] == user("a step")
    result = I.FunctionResultStep(call_id="fc_1", name="get_weather", result="rain")
    body = conv.request([result])
    assert body["input"][-1] == {
        "type": "function_result",
        "call_id": "fc_1",
        "name": "get_weather",
        "result": "rain",
    }
    conv.record(
        body, I.Interaction.model_validate({"id": "int-1", "status": "completed", "steps": [model("ok")]})
    )
    assert conv.history()[-2:] == [body["input"][-1], model("ok")]
    with pytest.raises(convstore.InvalidExchangeError, match="list"):
        conv.append(I.UserInputStep(content=[I.TextContent(text="not in a list")]))
    with pytest.raises(CodecError):
        conv.append(
            [I.FunctionCallStep.model_construct(type="function_call", id="fc_2")]
        )  # no name or arguments


def test_every_sdk_step_is_stored_as_its_wire_json(store):
    conv = store.create_conversation(model=MODEL)
    body = conv.request("Everything, please.")
    reply = I.Interaction.model_validate({"id": "int-1", "status": "requires_action", "steps": EVERY_STEP})
    assert [type(step).__name__ for step in reply.steps][-3:] == [
        "UnknownStep",
        "ModelOutputStep",
        "FunctionCallStep",
    ]
    conv.record(body, reply)
    assert conv.history_json() == codec.dumps([user("Everything, please."), *EVERY_STEP])


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(lambda: Reply(steps=EVERY_STEP, status="requires_action"), id="every-step"),
        pytest.param(lambda: text_reply("Two dogs."), id="text"),
        pytest.param(lambda: continuation_reply(["part one, ", "part two"]), id="continuation"),
    ],
)
def test_an_sdk_reply_is_stored_as_convstores_client_stores_it(db_url, script):
    stores = []
    for path in ("convstore", "sdk"):
        emulator = Emulator()
        emulator.script(script())
        store = convstore.Store(db_url)
        conv = store.create_conversation(model=MODEL, generation_config={"thinking_level": "low"})
        body = conv.request("I have 2 dogs in my house.")
        with EmulatorServer(emulator) as server:
            if path == "sdk":
                sdk = sdk_client(server)
                conv.record(body, sdk.interactions.create(**body))
                sdk.close()
            else:
                with httpx.Client(transport=emulator.transport()) as http:
                    conv.record(body, convstore.InteractionsClient("k", http_client=http).create(body))
        stores.append(recorded(conv))
        store.close()
    ours, theirs = stores
    assert theirs == ours
    usage = ours[1][0][3]
    assert ("initial_input_tokens" in usage) == (len(script().continuation_hops) > 0)


# EVERY_STEP as a stream can carry it: a content item of a type nobody knows cannot be streamed (the
# reassembly rules have no delta for it), so the streamed tests leave that one out.
STREAMABLE = [
    {**step, "content": [item for item in step["content"] if item["type"] != "a_future_content"]}  # type: ignore[union-attr]
    if step["type"] == "model_output"
    else step
    for step in EVERY_STEP
]

SCRIPTS = {
    "every-step": lambda: Reply(steps=STREAMABLE, status="requires_action"),
    "text": lambda: text_reply("Two dogs, so eight paws in all."),
    "function-call": lambda: function_call_reply("get_weather", {"unit": "celsius", "city": "Lisbon"}),
    "continuation": lambda: continuation_reply(["The first part, ", "the second part."]),
    # The connection drops just after a checkpoint: both clients resume from it in a new request.
    "checkpoint-resume": lambda: text_reply(
        "An answer resumed from its checkpoint.", checkpoints=True, break_after=7
    ),
}


def run_path(db_url: str, script: str, path: str) -> tuple[str, list[object]]:
    """One turn of ``script`` recorded through ``path``, on a fresh emulator: what the store then holds."""
    emulator = Emulator()
    emulator.script(SCRIPTS[script]())
    store = convstore.Store(db_url)
    conv = store.create_conversation(model=MODEL, generation_config={"thinking_level": "low"})
    body = conv.request("I have 2 dogs in my house.")
    with EmulatorServer(emulator) as server, httpx.Client(transport=emulator.transport()) as http:
        ours = convstore.InteractionsClient("k", http_client=http, sleep=lambda _: None)
        sdk = sdk_client(server)
        if path == "convstore":
            reply: object = ours.create(body)
        elif path == "sdk":
            reply = sdk.interactions.create(**body)
        elif path == "sdk stream":
            reply = sdk.interactions.create(**body, stream=True)
        elif path == "sdk events":
            reply = list(sdk.interactions.create(**body, stream=True))
        elif path == "convstore stream":
            reply = ours.stream(body)
        elif path == "convstore stream, consumed":
            reply = ours.stream(body)
            list(reply)  # type: ignore[call-overload]
        else:
            assert path == "convstore events"
            reply = list(ours.stream(body))
        conv.record(body, reply)
        sdk.close()
    held = recorded(conv)
    store.close()
    return held


@pytest.mark.parametrize("script", list(SCRIPTS))
@pytest.mark.parametrize(
    "path",
    ["sdk stream", "sdk events", "convstore stream", "convstore stream, consumed", "convstore events"],
)
def test_a_streamed_reply_is_stored_as_the_non_streamed_one(db_url, script, path):
    history, exchanges = run_path(db_url, script, path)
    expected_history, expected_exchanges = run_path(db_url, script, "convstore")
    assert history == expected_history
    if script != "checkpoint-resume":  # a resumed decode is two interactions, each billed: its usage differs
        assert exchanges == expected_exchanges


@pytest.mark.parametrize(
    "path", ["sdk aio", "sdk aio events", "convstore aio stream", "convstore aio events"]
)
def test_the_async_conversation_records_async_streams_whole(db_url, path):
    expected_history, expected_exchanges = run_path(db_url, "every-step", "convstore")
    emulator = Emulator()
    emulator.script(SCRIPTS["every-step"]())

    async def main() -> tuple[str, list[object]]:
        async with convstore.AsyncStore(db_url) as store:
            conv = await store.create_conversation(model=MODEL, generation_config={"thinking_level": "low"})
            body = await conv.request("I have 2 dogs in my house.")
            with EmulatorServer(emulator) as server:
                async with httpx.AsyncClient(transport=emulator.transport()) as http:
                    ours = convstore.AsyncInteractionsClient("k", http_client=http)
                    sdk = sdk_client(server)
                    if path == "sdk aio":
                        reply: object = await sdk.aio.interactions.create(**body, stream=True)
                    elif path == "sdk aio events":
                        reply = [
                            event async for event in await sdk.aio.interactions.create(**body, stream=True)
                        ]
                    elif path == "convstore aio stream":
                        reply = ours.stream(body)
                    else:
                        reply = [event async for event in ours.stream(body)]
                    await conv.record(body, reply)
                    await sdk.aio.aclose()
                    sdk.close()
            exchanges = [
                (e.interaction_id, e.status, e.model, e.usage, e.stored) for e in await conv.exchanges()
            ]
            return await conv.history_json(), exchanges

    assert asyncio.run(main()) == (expected_history, expected_exchanges)


def test_what_cannot_be_recorded_whole_is_refused_and_nothing_is_written(store):
    emulator = Emulator()
    emulator.script(text_reply("one"), text_reply("two"))
    conv = store.create_conversation(model=MODEL)
    body = conv.request("hi")
    with EmulatorServer(emulator) as server:
        sdk = sdk_client(server)
        events = list(sdk.interactions.create(**body, stream=True))
        consumed = sdk.interactions.create(**body, stream=True)
        for _ in consumed:
            pass
        sdk.close()
    assert events[-1].event_type == "interaction.completed"
    refused = {
        "the final event's interaction": (events[-1].interaction, "no steps"),
        "the final event": (events[-1], "single stream event"),
        "events without their start": (events[3:], "before interaction.created"),
        "events without their end": (events[:-1], "no interaction.completed"),
        "a stream iterated before": (consumed, "no events"),
        "a completed reply without steps": ({"id": "i", "status": "completed", "steps": []}, "no steps"),
    }
    for reply, message in refused.values():
        with pytest.raises(CodecError, match=message):
            conv.record(body, reply)
    assert conv.history() == []
    assert conv.exchanges() == []
    conv.record(body, events)  # the whole list is the whole reply
    assert [s["type"] for s in conv.history()] == ["user_input", "thought", "model_output"]


def test_events_as_wire_json_unknown_events_and_an_error_event(store):
    emulator = Emulator()
    emulator.script(text_reply("one"))
    conv = store.create_conversation(model=MODEL)
    body = conv.request("hi")
    with httpx.Client(transport=emulator.transport()) as http:
        stream = convstore.InteractionsClient("k", http_client=http).stream(body)
        wire = [event.raw for event in stream]  # the events' JSON, as the service sent them
    assert wire[0]["event_type"] == "interaction.created"
    newer = {"event_type": "interaction.in_progress", "interaction_id": wire[0]["interaction"]["id"]}
    failed = [*wire[:-1], {"event_type": "error", "error": {"code": "internal", "message": "boom"}}]
    with pytest.raises(convstore.APIError):
        conv.record(body, failed)
    assert conv.history() == []
    conv.record(body, [newer, *wire[:3], newer, *wire[3:]])  # events of a type nobody knows are skipped
    assert [s["type"] for s in conv.history()] == ["user_input", "thought", "model_output"]
    assert conv.history()[-1] == model("one")


# Explicit nulls the service may send, on fields the SDK declares (a thought's signature and summary, a
# text's annotations) and on one it does not (a model output's signature), keys in the wire's order.
NULLS: list[dict[str, object]] = [
    {"type": "thought", "summary": None, "signature": None},
    {
        "type": "model_output",
        "content": [{"type": "text", "text": "Two dogs.", "annotations": None}],
        "signature": None,
    },
    {"type": "function_call", "id": "fc_1", "name": "f", "arguments": {"b": 1, "a": 2}, "signature": None},
]


def test_explicit_nulls_are_stored_as_the_wire_sent_them(db_url):
    """The SDK's serializer drops a declared field sent as null; its model remembers it was set, and the
    step is stored as the wire path stores it (``InteractionsClient``, ``record(body, dict)``). (A stream
    is reassembled from its deltas, by convstore's client as from the SDK's events: what only the
    non-streamed body says, such as a null, is not in it.)"""
    SCRIPTS["nulls"] = lambda: Reply(steps=NULLS, status="requires_action")
    try:
        history, exchanges = run_path(db_url, "nulls", "sdk")
        expected_history, expected_exchanges = run_path(db_url, "nulls", "convstore")
    finally:
        del SCRIPTS["nulls"]
    assert history == expected_history
    assert codec.dumps(NULLS)[1:-1] in expected_history  # the wire path keeps them byte for byte
    assert exchanges == expected_exchanges
