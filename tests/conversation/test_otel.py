"""OpenTelemetry spans of send, stream and record (GenAI semantic conventions), read back from the SDK's
in-memory exporter; and no tracing at all without opentelemetry-api."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import convstore
from convstore.testing import error_reply, text_reply

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402  # after the importorskip
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

MODEL = "gemini-3-flash-preview"
CONTENT = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions")


@pytest.fixture
def spans(monkeypatch):
    """The spans convstore makes, from a provider of this test's own: the global one is the app's (the
    README sets it), and OpenTelemetry lets it be set once."""
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    yield exporter
    provider.shutdown()


def by_name(finished):
    return {span.name: span for span in finished.get_finished_spans()}


def test_send_is_a_chat_span_with_the_conversation_the_model_and_the_usage(store, client, spans):
    conv = store.create_conversation(model=MODEL, system_instruction="Be brief.")
    reply = conv.send("I have 2 dogs in my house.", client=client)
    (exchange,) = conv.exchanges()
    named = by_name(spans)
    chat, record = named[f"chat {MODEL}"], named[f"record {MODEL}"]
    assert chat.kind == trace.SpanKind.CLIENT
    assert (chat.instrumentation_scope.name, chat.instrumentation_scope.version) == (
        "convstore",
        convstore.__version__,
    )
    assert record.kind == trace.SpanKind.INTERNAL
    assert record.parent.span_id == chat.context.span_id
    assert dict(chat.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.conversation.id": conv.id,
        "gen_ai.request.model": MODEL,
        "gen_ai.response.id": reply.id,
        "gen_ai.response.model": MODEL,
        "gen_ai.usage.input_tokens": exchange.input_tokens,
        "gen_ai.usage.output_tokens": exchange.output_tokens,
        "convstore.branch": "main",
        "convstore.interaction.status": "completed",
    }
    assert record.attributes["gen_ai.response.id"] == reply.id
    assert chat.status.status_code == trace.StatusCode.UNSET
    assert not any(name in span.attributes for span in (chat, record) for name in CONTENT)


def test_a_streamed_turn_is_one_chat_span_over_its_events(store, client, spans):
    conv = store.create_conversation(model=MODEL)
    conv.send("First.", client=client)
    spans.clear()
    turn = conv.stream("Tell me more.", client=client, model="gemini-3.1-pro-preview")
    events = list(turn)
    named = by_name(spans)
    chat = named["chat gemini-3.1-pro-preview"]
    assert events
    assert chat.attributes["gen_ai.response.id"] == turn.interaction.id
    assert chat.attributes["gen_ai.usage.input_tokens"] == conv.exchanges()[-1].input_tokens
    assert chat.attributes["gen_ai.usage.cache_read.input_tokens"] > 0
    assert named["record gemini-3.1-pro-preview"].parent.span_id == chat.context.span_id


def test_content_is_recorded_only_when_the_app_opts_in(store, client, spans, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    conv = store.create_conversation(model=MODEL, system_instruction="Be brief.")
    reply = conv.send("I have 2 dogs in my house.", client=client)
    turn = conv.stream("How many paws?", client=client)
    list(turn)
    sent = conv.request("unsent")["input"][:-1]
    chats = [span for span in spans.get_finished_spans() if span.name.startswith("chat")]
    assert len(chats) == 2
    first, second = chats
    assert json.loads(first.attributes["gen_ai.input.messages"]) == sent[:1]
    assert json.loads(first.attributes["gen_ai.output.messages"]) == reply.steps
    assert json.loads(first.attributes["gen_ai.system_instructions"]) == "Be brief."
    assert json.loads(second.attributes["gen_ai.input.messages"]) == sent[:4]
    assert json.loads(second.attributes["gen_ai.output.messages"]) == turn.interaction.steps


def test_a_failed_call_marks_the_span_with_the_error_class_and_no_message(store, client, emulator, spans):
    emulator.script(error_reply(400, "Request contains an invalid argument."))
    conv = store.create_conversation(model=MODEL)
    with pytest.raises(convstore.APIError):
        conv.send("Hello", client=client)
    (chat,) = spans.get_finished_spans()
    assert chat.status.status_code == trace.StatusCode.ERROR
    assert chat.status.description is None
    assert chat.attributes["error.type"] == "APIError"
    assert "gen_ai.response.id" not in chat.attributes
    assert not chat.events  # no exception event: messages stay out of traces


def test_record_alone_is_a_record_span(store, spans):
    conv = store.create_conversation(model=MODEL)
    body = conv.request("Hi")
    reply = {
        "id": "v1_abc",
        "status": "completed",
        "model": MODEL,
        "steps": [text_reply("Hello").steps[1]],
        "usage": {"total_input_tokens": 3, "total_output_tokens": 2, "total_tokens": 5},
    }
    conv.record(body, reply)
    (record,) = spans.get_finished_spans()
    assert record.name == f"record {MODEL}"
    assert record.attributes["gen_ai.response.id"] == "v1_abc"
    assert record.attributes["gen_ai.usage.input_tokens"] == 3
    assert record.parent is None


@pytest.mark.parametrize("provider", ["the API's default", "the API's no-op"])
def test_without_a_configured_provider_a_turn_makes_no_span_and_keeps_its_context(
    store, client, flavour, monkeypatch, provider
):
    from convstore import _otel  # noqa: PLC0415

    default = trace.ProxyTracerProvider() if provider == "the API's default" else trace.NoOpTracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: default)
    started = []
    monkeypatch.setattr(_otel, "_start", lambda *args: started.append(args))
    seen = []
    create = client.create  # the async store calls the async client behind this proxy: sync only
    monkeypatch.setattr(client, "create", lambda body: seen.append(trace.get_current_span()) or create(body))
    # A parent carried in from elsewhere (an incoming request's traceparent): the call runs under it.
    parent = trace.NonRecordingSpan(
        trace.SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=trace.TraceFlags(1))
    )
    conv = store.create_conversation(model=MODEL)
    with trace.use_span(parent):
        conv.send("Hello", client=client)
        list(conv.stream("Again", client=client))
        reply = {"id": "v1_once", "status": "completed", "steps": [text_reply("Sure.").steps[1]]}
        conv.record(conv.request("Once more"), reply)
    assert started == []
    if flavour == "sync":
        assert [span.get_span_context() for span in seen] == [parent.get_span_context()]
    assert len(conv.history()) == 8


def test_without_opentelemetry_nothing_is_wrapped_and_turns_still_work():
    code = """
import sys
sys.modules["opentelemetry"] = None
import httpx, convstore
from convstore.testing import Emulator
assert not hasattr(convstore.Conversation.send, "__wrapped__")
assert not hasattr(convstore.AsyncConversation.record, "__wrapped__")
store = convstore.Store("sqlite://")
conv = store.create_conversation(model="gemini-3-flash-preview")
client = convstore.InteractionsClient("k", http_client=httpx.Client(transport=Emulator().transport()))
conv.send("Hello", client=client)
list(conv.stream("Again", client=client))
assert len(conv.history()) == 6
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_record_of_an_sdk_stream_with_tracing_on_reads_the_stream_once(tmp_path, emulator, spans):
    genai = pytest.importorskip("google.genai")
    from convstore.testing import EmulatorServer  # noqa: PLC0415

    with (
        convstore.Store(f"sqlite:///{tmp_path / 'store.db'}") as store,
        EmulatorServer(emulator) as server,
    ):
        options = {"base_url": server.base_url, "api_version": "v1beta"}
        sdk = genai.Client(api_key="offline", http_options=options)
        conv = store.create_conversation(model=MODEL)
        body = conv.request("Stream it.")
        # An iterator the span must not read: record() reads it, once, to the end.
        conv.record(body, sdk.interactions.create(**body, stream=True))
        steps = [step["type"] for step in conv.history()]
        sdk.close()
    assert steps[0] == "user_input"
    assert steps[-1] == "model_output"
    assert f"record {MODEL}" in by_name(spans)
