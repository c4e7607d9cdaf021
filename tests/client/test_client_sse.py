"""SSE decoding (WHATWG conformance, arbitrary chunking) and typed event parsing."""

from __future__ import annotations

import contextlib
import itertools
import json

import pytest
from _client_support import load
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples

from convstore.client import (
    ErrorEvent,
    EventDecoder,
    InteractionCompleted,
    InteractionCreated,
    InteractionStatusUpdate,
    ServerSentEvent,
    SSEDecoder,
    StepDelta,
    StepStart,
    StepStop,
    UnknownEvent,
    parse_event,
)
from convstore.errors import StreamError


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    decoder.end()
    return events


def as_tuples(events: list[ServerSentEvent]) -> list[tuple[str, str, str, int | None]]:
    return [(e.event, e.data, e.id, e.retry) for e in events]


# -- WHATWG conformance -------------------------------------------------------------------------------


def test_fields_of_one_event() -> None:
    events = decode(b"event: greet\ndata: hello\nid: 7\nretry: 1500\n\n")
    assert as_tuples(events) == [("greet", "hello", "7", 1500)]


def test_type_defaults_to_message_and_resets_between_events() -> None:
    events = decode(b"event: a\ndata: 1\n\ndata: 2\n\n")
    assert [e.event for e in events] == ["a", "message"]


def test_multiline_data_joined_with_newline() -> None:
    assert decode(b"data: one\ndata: two\ndata:\ndata: four\n\n")[0].data == "one\ntwo\n\nfour"


def test_comments_and_unknown_fields_are_ignored() -> None:
    events = decode(b": a comment\nfoo: bar\ndata: x\n:another\n\n")
    assert as_tuples(events) == [("message", "x", "", None)]


def test_only_one_leading_space_is_dropped() -> None:
    assert decode(b"data:  two spaces\n\n")[0].data == " two spaces"
    assert decode(b"data:none\n\n")[0].data == "none"
    assert decode(b"data: a: b\n\n")[0].data == "a: b"


def test_line_without_colon_is_a_field_with_empty_value() -> None:
    events = decode(b"data\n\ndata\ndata\n\n")
    assert [e.data for e in events] == ["", "\n"]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_line_endings(newline: bytes) -> None:
    raw = (
        b"event: e"
        + newline
        + b"data: 1"
        + newline
        + b"data: 2"
        + newline
        + newline
        + b"data: 3"
        + newline * 2
    )
    assert as_tuples(decode(raw)) == [("e", "1\n2", "", None), ("message", "3", "", None)]


def test_cr_and_lf_of_one_crlf_in_different_chunks() -> None:
    # "\r" ends a line; the "\n" that follows in the next chunk belongs to it and is no blank line.
    events = decode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n")
    assert [e.data for e in events] == ["a\nb"]


def test_cr_then_cr_is_two_line_ends() -> None:
    assert [e.data for e in decode(b"data: a\r", b"\r")] == ["a"]


def test_multibyte_character_split_across_chunks() -> None:
    raw = "data: 100 °C → ok 🙂\n\n".encode()
    split = raw.index("🙂".encode()) + 2
    assert decode(raw[:split], raw[split:])[0].data == "100 °C → ok 🙂"


def test_leading_bom_is_dropped_once() -> None:
    raw = b"\xef\xbb\xbfdata: x\n\n"
    assert decode(raw[:1], raw[1:])[0].data == "x"
    # Later, a BOM is part of the line: "\ufeffdata" is an unknown field, so no second event.
    assert [e.data for e in decode(b"data: x\n\n\xef\xbb\xbfdata: y\n\n")] == ["x"]


def test_invalid_utf8_decodes_to_replacement_characters() -> None:
    assert decode(b"data: a\xffb\n\n")[0].data == "a\ufffdb"


def test_id_persists_and_nul_ids_are_ignored() -> None:
    events = decode(b"id: 1\ndata: a\n\ndata: b\n\nid: x\x00y\ndata: c\n\nid\ndata: d\n\n")
    assert [e.id for e in events] == ["1", "1", "1", ""]


def test_retry_needs_ascii_digits() -> None:
    decoder = SSEDecoder()
    events = decoder.feed("retry: 12a\ndata: a\n\nretry: ²\ndata: b\n\nretry: 30\n\n".encode())
    assert [e.retry for e in events] == [None, None]
    assert decoder.retry == 30


def test_block_without_data_is_not_dispatched() -> None:
    assert decode(b"event: lonely\nid: 3\n\ndata: x\n\n") == [ServerSentEvent(data="x", id="3")]


def test_unterminated_event_is_discarded_at_eof() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete\n\ndata: partial\n") == [ServerSentEvent(data="complete")]
    assert decoder.end() is True
    clean = SSEDecoder()
    clean.feed(b"data: complete\n\n")
    assert clean.end() is False


def test_repr_hides_data() -> None:
    assert "secret" not in repr(ServerSentEvent(data="secret"))


# -- chunking properties ------------------------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12
)
_line = st.one_of(
    st.builds(lambda v: f"data: {v}", _text),
    st.builds(lambda v: f"data:{v}", _text),
    st.builds(lambda v: f"event: {v}", _text),
    st.builds(lambda v: f"id: {v}", _text),
    st.builds(lambda v: f": {v}", _text),
    st.builds(lambda v: f"retry: {v}", st.integers(0, 99999)),
    st.just(""),
)
_stream = st.tuples(st.lists(_line, max_size=30), st.sampled_from(["\n", "\r\n", "\r"])).map(
    lambda t: ("".join(line + t[1] for line in t[0]) + t[1]).encode()
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(_stream, st.lists(st.integers(min_value=0), max_size=20))
def test_any_chunking_gives_the_same_events(data: bytes, cuts: list[int]) -> None:
    assert decode(*_split(data, cuts)) == decode(data)


@given(st.lists(st.integers(min_value=0), max_size=30))
def test_fixture_stream_chunked_anywhere(cuts: list[int]) -> None:
    data = 'data: {"text": "100 °C"}\r\n\r\nevent: x\rdata: 🙂\r\r: c\ndata: y\n\n'.encode()
    expected = decode(data)
    assert len(expected) == 3
    assert decode(*_split(data, cuts)) == expected


@settings(max_examples=examples(300))
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_random_bytes_raise_only_stream_error(chunks: list[bytes]) -> None:
    decoder = EventDecoder()
    try:
        for chunk in chunks:
            decoder.feed(chunk)
        decoder.end()
    except StreamError:
        pass


@settings(max_examples=examples(200))
@given(
    st.lists(
        st.one_of(
            st.builds(
                json.dumps,
                st.dictionaries(
                    st.sampled_from(
                        ["event_type", "index", "step", "delta", "interaction", "error", "status"]
                    ),
                    st.one_of(
                        st.none(),
                        st.integers(),
                        st.text(),
                        st.sampled_from(
                            ["step.start", "step.delta", "step.stop", "error", "interaction.created"]
                        ),
                    ),
                ),
            ),
            st.text(max_size=20),
        ),
        max_size=8,
    )
)
def test_random_event_payloads_parse_or_raise_stream_error(payloads: list[str]) -> None:
    for payload in payloads:
        with contextlib.suppress(StreamError):
            parse_event(payload)


# -- typed events -------------------------------------------------------------------------------------


def test_fixture_events_are_typed() -> None:
    decoder = EventDecoder()
    events = decoder.feed(load("stream_basic.sse"))
    assert [type(e) for e in events] == [
        InteractionCreated,
        InteractionStatusUpdate,
        StepStart,
        StepDelta,
        StepDelta,
        StepStop,
        StepStart,
        StepDelta,
        StepDelta,
        StepStop,
        InteractionCompleted,
    ]
    assert decoder.done
    assert events[3].event_id == "evt_000004"
    assert events[7].text == "Water boils at 100 °C "
    assert events[-1].interaction["usage"]["total_tokens"] == 63


def test_done_stops_decoding() -> None:
    decoder = EventDecoder()
    raw = b'data: [DONE]\n\ndata: {"event_type": "step.stop", "index": 0}\n\n'
    assert decoder.feed(raw) == []
    assert decoder.done
    assert decoder.feed(b'data: {"event_type": "step.stop", "index": 0}\n\n') == []


def test_event_and_id_lines_do_not_decide_the_kind() -> None:
    event = EventDecoder().feed(b'event: error\nid: 9\ndata: {"event_type":"step.stop","index":2}\n\n')[0]
    assert isinstance(event, StepStop)
    assert event.index == 2
    assert event.event_id is None


def test_unknown_event_type_is_kept_raw() -> None:
    event = parse_event('{"event_type": "interaction.in_progress", "event_id": "e1", "x": [1]}')
    assert isinstance(event, UnknownEvent)
    assert event.event_type == "interaction.in_progress"
    assert event.raw == {"event_type": "interaction.in_progress", "event_id": "e1", "x": [1]}


def test_error_event() -> None:
    event = parse_event(json.dumps(load("stream_error_event.json")))
    assert isinstance(event, ErrorEvent)
    assert event.error["code"] == "internal"
    assert event.event_id == "evt_000042"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            '{"event_type": "step.delta", "index": 0, "delta": {"type": "text", "text": "private',
            "not valid JSON",
        ),
        ('["private"]', "JSON object"),
        ('{"index": 0}', "event_type"),
        ('{"event_type": "step.delta", "index": -1, "delta": {"type": "text"}}', "index"),
        ('{"event_type": "step.delta", "index": true, "delta": {"type": "text"}}', "index"),
        ('{"event_type": "step.delta", "index": 0, "delta": "private"}', "delta"),
        ('{"event_type": "step.start", "index": 0, "step": {"text": "private"}}', "type"),
        ('{"event_type": "interaction.created", "interaction": {"status": "in_progress"}}', "id"),
        ('{"event_type": "interaction.completed", "interaction": {"id": "x"}}', "status"),
        ('{"event_type": "interaction.status_update", "status": "in_progress"}', "interaction_id"),
        ('{"event_type": "error", "error": "private"}', "error"),
    ],
)
def test_malformed_events_raise_stream_error_without_content(data: str, fragment: str) -> None:
    with pytest.raises(StreamError) as info:
        parse_event(data, position=4)
    assert fragment in str(info.value)
    assert "#4" in str(info.value)
    assert "private" not in str(info.value)


def test_empty_keepalive_data_is_skipped() -> None:
    assert EventDecoder().feed(b"data:\n\n: ping\n\n") == []


def test_reprs_hide_content() -> None:
    delta = parse_event('{"event_type":"step.delta","index":1,"delta":{"type":"text","text":"my secret"}}')
    start = parse_event(
        '{"event_type":"step.start","index":1,"step":{"type":"model_output","content":[{"type":'
        '"text","text":"my secret"}]}}'
    )
    update = parse_event(
        '{"event_type":"interaction.status_update","interaction_id":"i","status":"in_progress",'
        '"continuation_token":"tok-secret"}'
    )
    for event in (delta, start, update):
        assert "secret" not in repr(event)
    assert "<text>" in repr(delta)
    assert "<model_output>" in repr(start)
