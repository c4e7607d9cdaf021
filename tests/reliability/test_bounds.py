"""Hostile input and resource bounds: no input can crash, hang or exhaust the library.

Three parts:

- **Symptoms**: each input that once escaped as a builtin error (``RecursionError``, ``JSONDecodeError``,
  ``AttributeError``, ``OverflowError``), was slept on, or was accepted by import though ``append`` refuses
  it, is a test here; each failed on the code before ``convstore.Limits``.
- **Memory**: each size limit is driven past its bound with an input generated lazily (a 1 GB SSE line, a
  200 MB reply, a 100 MB step, a large import file), and ``tracemalloc`` measures what the refusing call
  allocated. Each prints its figure; the README's Reliability section quotes them.
- **Fuzz**: every public entry point (append, create_conversation, record with a dict and with text, the
  codec, the client's reply and stream reading, import) receives hypothesis values nested up to 100,000
  deep and seeded byte-level mutations of the wire fixtures in ``tests/fixtures/hostile`` (deepened,
  duplicated keys, NaN, truncated). Anything but a ``ConvstoreError`` (or a ``TypeError`` for a wrong
  argument type) fails, and every refused write leaves the tables byte-identical.
  ``CONVSTORE_FUZZ_ITERATIONS`` sets the loop's length (default 200; 5,000 in the ``slow`` variant).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import strategies
from conftest import model, user
from hypothesis import given
from hypothesis import strategies as st

import convstore
from convstore import CodecError, ConvstoreError, LimitExceededError, Limits, codec
from convstore.cli import main
from convstore.client._events import EventDecoder, parse_event
from convstore.client._sse import SSEDecoder
from convstore.store._engine import run
from convstore.store._schema import metadata as schema_metadata
from convstore.store._transfer import (
    TransferFormatError,
    export_lines,
    export_ops,
    import_rows_ops,
    read_conversations,
    read_dumps,
)

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "hostile"
DEEP = 100_000
MiB = 1024 * 1024
FIGURES: dict[str, str] = {}


def iterations(slow: bool) -> int:
    return int(os.environ.get("CONVSTORE_FUZZ_ITERATIONS", "5000" if slow else "200"))


def deep_list(depth: int = DEEP) -> list[Any]:
    root: list[Any] = []
    node = root
    for _ in range(depth - 1):
        child: list[Any] = []
        node.append(child)
        node = child
    return root


def deep_text(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def tables(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every convstore table, sorted: the store's bytes, to compare before and after."""
    found = {}
    with engine.connect() as conn:
        for table in schema_metadata.sorted_tables:
            rows = conn.execute(sa.select(table)).all()
            found[table.name] = sorted(tuple(repr(v) for v in row) for row in rows)
    return found


@contextlib.contextmanager
def unchanged(store: Any) -> Iterator[None]:
    before = tables(store.engine)
    yield
    assert tables(store.engine) == before, "a refused write changed the store"


def measure(call: Callable[[], Any]) -> tuple[int, BaseException | None]:
    """Peak bytes ``call`` allocated (tracemalloc), and what it raised."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    raised: BaseException | None = None
    try:
        call()
    except Exception as error:  # the caller asserts on it
        raised = error
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, raised


def figure(name: str, peak: int, note: str) -> None:
    FIGURES[name] = f"{peak / MiB:.2f} MiB peak ({note})"
    print(f"\n{name}: {FIGURES[name]}")


# -- symptoms: nesting 100,000 deep --------------------------------------------------------------------


def test_a_deep_step_is_refused_at_append(store):
    conv = store.create_conversation()
    with unchanged(store), pytest.raises(LimitExceededError) as raised:
        conv.append([{"type": "function_call", "id": "c", "name": "f", "arguments": {"x": deep_list()}}])
    assert raised.value.limit == "max_depth"
    assert raised.value.path.startswith("steps[0].arguments.x")


def test_a_deep_model_object_is_refused_at_append(store):
    conv = store.create_conversation()
    step = convstore.FunctionCallStep(id="c", name="f", arguments={"x": deep_list()})
    with unchanged(store), pytest.raises(LimitExceededError):
        conv.append([step])


def test_deep_metadata_is_refused_at_create(store):
    with unchanged(store), pytest.raises(LimitExceededError, match="metadata"):
        store.create_conversation(metadata={"k": deep_list()})


def test_deep_reply_text_and_dict_are_refused_at_record(store):
    conv = store.create_conversation(model="gemini-3-flash-preview")
    body = conv.request("hi")
    text = '{"id":"i","status":"completed","steps":' + deep_text() + "}"
    with unchanged(store):
        with pytest.raises(LimitExceededError, match="max_depth"):
            conv.record(body, text)
        with pytest.raises(LimitExceededError, match="max_depth"):
            conv.record(body, {"id": "i", "status": "completed", "steps": [], "x": deep_list()})


def test_a_deep_request_body_is_refused_before_sending():
    client = convstore.InteractionsClient("k", http_client=httpx.Client(transport=_never()))
    with pytest.raises(LimitExceededError):
        client.create({"model": "m", "input": deep_list()})


def _never() -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    return httpx.MockTransport(handler)


def _client(
    handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any
) -> convstore.InteractionsClient:
    sleeps: list[float] = kwargs.pop("sleeps", [])
    return convstore.InteractionsClient(
        "k", http_client=httpx.Client(transport=httpx.MockTransport(handler)), sleep=sleeps.append, **kwargs
    )


def test_a_deep_reply_body_is_refused():
    body = ('{"id":"i","status":"completed","x":' + deep_text() + "}").encode()
    client = _client(lambda request: httpx.Response(200, content=body))
    with pytest.raises(LimitExceededError, match="max_depth"):
        client.create({"model": "m", "input": "hi"})


def test_deep_sse_data_is_refused():
    decoder = EventDecoder()
    with pytest.raises(LimitExceededError, match="max_depth"):
        decoder.feed(b'data: {"event_type":"step.delta","x":' + deep_text().encode() + b"}\n\n")
    with pytest.raises(LimitExceededError):
        parse_event('{"event_type":"x","y":' + deep_text() + "}")


def test_a_deep_import_line_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "deep.jsonl"
    header = '{"kind":"header","format":"convstore-export","version":1}'
    path.write_text(header + "\n" + '{"kind":"conversation","x":' + deep_text() + "}\n")
    code = main(["--db", f"sqlite:///{tmp_path / 'x.db'}", "import", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "unexpected" not in err
    assert "line 2" in err
    assert "max_depth" in err


def test_the_codec_refuses_deep_values_by_a_typed_error():
    step = convstore.FunctionCallStep(id="c", name="f", arguments={"x": deep_list()})
    with pytest.raises(LimitExceededError):
        codec.encode_step(step)
    with pytest.raises(LimitExceededError):
        codec.dumps(deep_list())
    with pytest.raises(LimitExceededError, match=r"\[0\].v"):
        codec.normalize_steps([{"type": "x", "v": deep_list()}])
    with pytest.raises(LimitExceededError):
        codec.loads(deep_text())


# -- symptoms: builtin errors from deep inside -------------------------------------------------------------


def test_a_reply_text_that_is_not_json_is_a_codec_error(store):
    conv = store.create_conversation(model="gemini-3-flash-preview")
    with unchanged(store), pytest.raises(CodecError, match="not valid JSON"):
        conv.record(conv.request("hi"), "nope")


@pytest.mark.parametrize("cursor", [5, b"x", ["a"]])
def test_a_cursor_of_the_wrong_type_is_a_type_error(store, cursor):
    with pytest.raises(TypeError, match="cursor"):
        store.conversations(cursor=cursor)


def test_a_malformed_cursor_is_a_codec_error(store):
    with pytest.raises(CodecError, match="cursor"):
        store.conversations(cursor="!!!")


@pytest.mark.parametrize(
    "attempt",
    [
        lambda s: s.create_conversation(branch=5),
        lambda s: s.conversation("01a2b3c4-0000-7000-8000-000000000000", branch=None),
        lambda s: s.purge(older_than="30d"),
        lambda s: s.create_conversation().fork(branch=b"x"),
    ],
    ids=["create-branch", "open-branch", "purge", "fork"],
)
def test_arguments_of_the_wrong_type_are_type_errors(store, attempt):
    with pytest.raises(TypeError):
        attempt(store)


@pytest.mark.parametrize("limit", ["5", 2.5, None])
def test_a_page_size_of_the_wrong_type_is_a_type_error(store, limit):
    with pytest.raises(TypeError, match="limit"):
        store.conversations(limit=limit)


def test_a_model_object_of_the_wrong_field_type_is_refused_at_append(store):
    conv = store.create_conversation()
    with unchanged(store), pytest.raises(CodecError, match=r"steps\[0\]\.content"):
        conv.append([convstore.UserInputStep(content="str")])  # type: ignore[arg-type]


def _export_lines(url: str) -> list[str]:
    with convstore.Store(url) as store:
        conv = store.create_conversation(model="m")
        conv.append([user("hello"), model("hi")])
        dump = run(store.engine, export_ops(conv.id), write=False)
        store.delete_conversation(conv.id)
    return list(export_lines([dump]))


def _edit(lines: list[str], kind: str, edit: Callable[[dict[str, Any]], None], nth: int = 0) -> list[str]:
    out = list(lines)
    at = [i for i, line in enumerate(out) if json.loads(line).get("kind") == kind][nth]
    row = json.loads(out[at])
    edit(row)
    out[at] = json.dumps(row)
    return out


def test_an_import_time_that_overflows_utc_is_refused(tmp_path):
    lines = _edit(
        _export_lines(f"sqlite:///{tmp_path / 's.db'}"),
        "conversation",
        lambda row: row.update(created_at="9999-12-31T23:59:59.000000-14:00"),
    )
    with pytest.raises(TransferFormatError, match="created_at: a time out of range"):
        list(read_dumps(lines))


def test_a_setting_that_is_not_json_is_a_corruption_error(db_url):
    with convstore.Store(db_url) as store:
        conv = store.create_conversation(metadata={"k": 1})
        with store.engine.begin() as conn:  # an encrypted row whose encryption was cleared, say
            conn.execute(
                sa.text("UPDATE convstore_conversations SET metadata = 'AAAA-sealed', encryption = NULL")
            )
        with pytest.raises(convstore.CorruptionError, match="metadata"):
            store.conversation(conv.id)
        with pytest.raises(convstore.CorruptionError):
            store.conversations()


# -- symptoms: waits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{"retry-after": "100000000"}, {"retry-after-ms": "100000000000"}], ids=["seconds", "ms"]
)
def test_a_retry_after_beyond_the_cap_is_not_slept(headers):
    sleeps: list[float] = []
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(429, headers=headers, json={"error": {"code": 429, "message": "slow down"}})

    client = _client(handler, sleeps=sleeps)
    with pytest.raises(convstore.APIError, match="max_retry_wait") as raised:
        client.create({"model": "m", "input": "hi"})
    assert sleeps == []
    assert len(calls) == 1
    assert raised.value.retry_after == 100_000_000
    assert raised.value.status_code == 429


def test_a_retry_after_within_the_cap_is_slept():
    sleeps: list[float] = []
    replies = iter(
        [
            httpx.Response(503, headers={"retry-after": "3"}),
            httpx.Response(200, json={"id": "i", "status": "completed", "steps": []}),
        ]
    )
    client = _client(lambda request: next(replies), sleeps=sleeps, limits=Limits(max_retry_wait=5))
    client.create({"model": "m", "input": "hi", "store": False})  # a stored create is never retried on 5xx
    assert sleeps == [3.0]


# -- symptoms: import accepts what append refuses ----------------------------------------------------------


def _payload_edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    def edit(row: dict[str, Any]) -> None:
        payload = json.loads(row["payload"])
        result = change(payload)
        row["payload"] = result if isinstance(result, str) else json.dumps(payload)

    return edit


IMPORT_REFUSALS = {
    "nan-in-payload": (
        _payload_edit(lambda p: json.dumps(p).replace('"hello"', "NaN")),
        "payload: expected JSON text",
    ),
    "codec-rejects-step": (_payload_edit(lambda p: p.update(content="str")), "refused by the codec"),
    "duplicate-key-in-payload": (
        _payload_edit(lambda p: json.dumps(p)[:-1] + ',"type":"user_input"}'),
        "a key twice",
    ),
    "token-count-zero": (
        lambda row: row.update(payload=json.dumps(user("x" * 100_000)), token_count=0, total_tokens=0),
        "token_count",
    ),
}


@pytest.mark.parametrize("case", sorted(IMPORT_REFUSALS))
def test_import_refuses_what_append_refuses(tmp_path, case):
    edit, says = IMPORT_REFUSALS[case]
    lines = _edit(_export_lines(f"sqlite:///{tmp_path / 's.db'}"), "node", edit)
    with pytest.raises(TransferFormatError, match=says) as raised:
        list(read_dumps(lines))
    assert raised.value.line == 3


def test_an_import_line_with_a_key_twice_is_refused(tmp_path):
    lines = _export_lines(f"sqlite:///{tmp_path / 's.db'}")
    lines[1] = lines[1][:-1] + ', "model": "other"}'
    with pytest.raises(TransferFormatError, match="line 2: model: an object gives a key twice"):
        list(read_dumps(lines))


def test_an_import_line_with_nan_is_refused(tmp_path):
    lines = _export_lines(f"sqlite:///{tmp_path / 's.db'}")
    lines[2] = lines[2][:-1] + ', "depth": NaN}'
    with pytest.raises(TransferFormatError, match=r"line 3: .*NaN"):
        list(read_dumps(lines))


def test_a_key_twice_before_a_syntax_error_is_one_codec_error():
    """Found by the bounds fuzz loop: the second parse that looks for the repeated key met the later
    syntax error and raised json's JSONDecodeError."""
    for text in ['{"a":{"b":1,"b":2}, x', '{"a":1,"a":2,"c":NaN}']:
        with pytest.raises(CodecError, match=r"not valid JSON|NaN"):
            codec.loads(text)


def test_a_reply_text_with_a_key_twice_is_refused_at_record(store):
    conv = store.create_conversation(model="gemini-3-flash-preview")
    text = '{"id":"i","status":"completed","steps":[{"type":"model_output","content":[],"content":[]}]}'
    with (
        unchanged(store),
        pytest.raises(CodecError, match=r"steps\[0\]\.content: an object gives a key twice"),
    ):
        conv.record(conv.request("hi"), text)


def test_json_text_is_strict():
    for text, says in [
        ('{"a":1,"a":2}', "a key twice"),
        ("[NaN]", "NaN"),
        ("[1e400]", "infinite"),
        ("[-Infinity]", "NaN or an infinite"),
        ("1" * 5000, "not valid JSON"),
        (b"\xff", "not UTF-8"),
    ]:
        with pytest.raises(CodecError, match=says):
            codec.loads(text)
    assert codec.loads('["[[[[", {"a": "}}}}"}]', limits=Limits(max_depth=2)) == ["[[[[", {"a": "}}}}"}]


# -- memory: each size limit, driven past its bound ---------------------------------------------------------


def _streamed(head: bytes, filler: bytes, total: int) -> Iterator[bytes]:
    """``head``, then ``filler`` repeated up to ``total`` bytes: generated as it is read, never held."""
    yield head
    sent = len(head)
    while sent < total:
        yield bytes(bytearray(filler))  # a new object each time, as a socket's reads are
        sent += len(filler)


def _sse_response(chunks: Iterator[bytes]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=chunks)

    return handler


@pytest.mark.parametrize(
    ("name", "limits", "head", "filler"),
    [
        ("max_sse_line_bytes", Limits(max_sse_line_bytes=MiB), b"data: ", b"a" * 65536),
        ("max_sse_event_bytes", Limits(max_sse_event_bytes=MiB), b"", b"data: " + b"a" * 1000 + b"\n"),
        ("max_reply_bytes", Limits(max_reply_bytes=MiB), b"", b": " + b"a" * 65536 + b"\n"),
    ],
)
def test_a_gigabyte_stream_is_refused_within_its_limit(name, limits, head, filler):
    chunks = _streamed(head, filler, 1024 * MiB)  # a gigabyte, were it read
    client = _client(_sse_response(chunks), limits=limits)

    def call() -> None:
        with client.stream({"model": "m", "input": "hi"}) as stream:
            for _ in stream:
                pass

    peak, raised = measure(call)
    assert isinstance(raised, LimitExceededError), raised
    assert raised.limit == name
    assert peak < 4 * MiB, peak
    figure(name, peak, "limit 1 MiB, stream of 1 GB")


def test_a_200_megabyte_reply_is_refused_within_its_limit():
    chunks = _streamed(b'{"id":"i","status":"completed","x":"', b"a" * 65536, 200 * MiB)
    client = _client(lambda request: httpx.Response(200, content=chunks), limits=Limits(max_reply_bytes=MiB))
    peak, raised = measure(lambda: client.create({"model": "m", "input": "hi"}))
    assert isinstance(raised, LimitExceededError), raised
    assert raised.limit == "max_reply_bytes"
    assert peak < 4 * MiB, peak
    figure("max_reply_bytes (unary)", peak, "limit 1 MiB, body of 200 MB")


def test_the_async_client_reads_within_the_limits():
    async def body() -> Any:
        for chunk in _streamed(b'{"id":"i","status":"completed","x":"', b"a" * 65536, 200 * MiB):
            yield chunk

    async def call(stream: bool) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            headers = {"content-type": "text/event-stream"} if stream else {}
            return httpx.Response(200, headers=headers, content=body())

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = convstore.AsyncInteractionsClient(
                "k", http_client=http, limits=Limits(max_reply_bytes=MiB)
            )
            if stream:
                async with client.stream({"model": "m", "input": "hi"}) as events:
                    async for _ in events:
                        pass
            else:
                await client.create({"model": "m", "input": "hi"})

    for stream in (False, True):
        with pytest.raises(LimitExceededError):
            asyncio.run(call(stream))


def test_a_declared_content_length_beyond_the_limit_is_refused_unread():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": str(10**12)}, content=iter([b"{}"]))

    with pytest.raises(LimitExceededError, match="max_reply_bytes"):
        _client(handler).create({"model": "m", "input": "hi"})


def test_a_100_megabyte_step_is_refused_before_it_is_encoded(db_url):
    big = user("x" * (100 * MiB))
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        with unchanged(store):
            peak, raised = measure(lambda: conv.append([big]))
    assert isinstance(raised, LimitExceededError), raised
    assert raised.limit == "max_step_bytes"
    assert peak < MiB, peak
    figure("max_step_bytes", peak, "default limit 32 MiB, a 100 MB step")


def test_limits_are_per_store(make_store):
    store = make_store(limits=Limits(max_step_bytes=1000, max_exchange_bytes=1500))
    conv = store.create_conversation()
    with pytest.raises(LimitExceededError, match="max_step_bytes"):
        conv.append([user("x" * 2000)])
    with pytest.raises(LimitExceededError, match="max_exchange_bytes") as raised:
        conv.append([user("x" * 800), model("y" * 800)])
    assert raised.value.path == "steps[1]"
    conv.append([user("x" * 500), model("y" * 500)])
    with pytest.raises(TypeError, match="limits"):
        make_store(limits={"max_depth": 3})


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_depth"):
        Limits(max_depth=10_000)
    with pytest.raises(ValueError, match="max_step_bytes"):
        Limits(max_step_bytes=0)
    with pytest.raises(TypeError, match="max_retry_wait"):
        Limits(max_retry_wait="60")


def test_an_import_line_beyond_its_limit_is_refused_unread(tmp_path, capsys):
    path = tmp_path / "long.jsonl"
    with path.open("wb") as handle:
        handle.write(
            b'{"kind":"header","format":"convstore-export","version":1}\n{"kind":"conversation","x":"'
        )
        handle.write(b"a" * (90 * MiB))
        handle.write(b'"}\n')
    db = f"sqlite:///{tmp_path / 'x.db'}"
    peak, raised = measure(lambda: main(["--db", db, "import", str(path)]))
    err = capsys.readouterr().err
    assert raised is None
    assert "line 2" in err
    assert "max_import_line_bytes" in err
    assert peak < 100 * MiB
    figure("max_import_line_bytes", peak, "default limit 80 MiB, a line of 90 MB")


def _big_conversation_file(tmp_path: Path, steps: int, step_bytes: int) -> Path:
    db = f"sqlite:///{tmp_path / 'source.db'}"
    with convstore.Store(db) as store:
        conv = store.create_conversation(model="m")
        for i in range(steps // 2):
            conv.append([user(f"{i} " + "q" * step_bytes), model(f"{i} " + "a" * step_bytes)])
    out = tmp_path / "big.jsonl"
    assert main(["--db", db, "export", "-o", str(out)]) == 0
    return out


def test_an_import_of_one_large_conversation_is_not_held_whole(tmp_path, capsys):
    source = _big_conversation_file(tmp_path, steps=400, step_bytes=64 * 1024)
    size = source.stat().st_size
    target = f"sqlite:///{tmp_path / 'target.db'}"
    peak, raised = measure(lambda: main(["--db", target, "import", str(source)]))
    assert raised is None
    assert "imported 1 conversation into" in capsys.readouterr().out
    assert peak < size / 2, (peak, size)
    figure("import of one conversation", peak, f"a file of {size / MiB:.0f} MB, 400 steps")
    with convstore.Store(target) as store:
        (info,) = store.conversations().items
        assert len(store.conversation(info.id).history()) == 400


# -- fuzz --------------------------------------------------------------------------------------------------

json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)
)
json_trees = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def deepen(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


deep_values = st.tuples(json_trees, st.sampled_from([0, 1, 63, 64, 65, 1000, DEEP])).map(
    lambda pair: deepen(*pair)
)


@given(deep_values)
def test_any_value_at_any_depth_is_accepted_or_a_typed_error(store, value):
    conv = store.create_conversation(model="m")
    with unchanged_if_refused(store):
        conv.append([{"type": "function_call", "id": "c", "name": "f", "arguments": {"v": value}}])
    with unchanged_if_refused(store):
        store.create_conversation(metadata={"v": value})
    with unchanged_if_refused(store):
        conv.record(
            conv.request("hi"), {"id": "i", "status": "completed", "steps": [{"type": "x", "v": value}]}
        )


@contextlib.contextmanager
def unchanged_if_refused(store: Any) -> Iterator[None]:
    before = tables(store.engine)
    try:
        yield
    except (ConvstoreError, TypeError):
        assert tables(store.engine) == before, "a refused write changed the store"


SPLICES = [b"\xff", b"\x00", b"\n", b'"', b"}", b"{", b"[" * 70, b"[" * DEEP, b"NaN", b"1e999", b"\\u", b","]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    return strategies.mutate_bytes(data, rng, SPLICES, repeat_keys=True)


def _fixtures(suffix: str) -> list[bytes]:
    return [path.read_bytes() for path in sorted(HERE.glob(f"*{suffix}"))]


def _fuzz_loop(db_url: str, count: int) -> dict[str, int]:
    rng = random.Random(15)
    texts = _fixtures(".json")
    streams = _fixtures(".sse")
    export = "\n".join(_export_lines(db_url)).encode()
    tally = {"tried": 0, "refused": 0, "accepted": 0}
    escaped: list[str] = []
    with convstore.Store(db_url) as store:
        conv = store.create_conversation(model="gemini-3-flash-preview")
        conv.append([user("kept"), model("yes")])
        for _ in range(count):
            entry = rng.randrange(6)
            data = mutate_bytes(rng.choice(streams if entry == 4 else [export] if entry == 5 else texts), rng)
            tally["tried"] += 1
            before = tables(store.engine)
            try:
                if entry == 0:
                    codec.loads(data)
                elif entry == 1:
                    conv.record(conv.request("hi"), data.decode("utf-8", "replace"))
                elif entry == 2:
                    _client(lambda request, d=data: httpx.Response(200, content=d)).create({"input": "x"})
                elif entry == 3:
                    value = codec.loads(data)
                    conv.append(value if isinstance(value, list) else [value])
                elif entry == 4:
                    decoder = EventDecoder()
                    for start in range(0, len(data), 97):
                        decoder.feed(data[start : start + 97])
                    decoder.end()
                else:
                    lines = data.decode("utf-8", "replace").split("\n")
                    for conversation in read_conversations(lines):
                        if run(store.engine, import_rows_ops(conversation), write=True):
                            store.conversation(conversation.id).history()
                            store.delete_conversation(conversation.id)
            except ConvstoreError:
                tally["refused"] += 1
                assert tables(store.engine) == before, ("a refused write changed the store", entry)
                continue
            except UnicodeEncodeError as error:  # our own .decode("utf-8", "replace") never makes these
                escaped.append(f"entry {entry}: {error}")
                continue
            except Exception as error:  # what the suite exists to find
                escaped.append(f"entry {entry}: {type(error).__name__}: {error}"[:300])
                continue
            tally["accepted"] += 1
            if entry in (1, 3):
                conv.refresh()
        assert store.check().ok
    assert not escaped, escaped[:5]
    print(f"\nbounds fuzz on {db_url.split(':', maxsplit=1)[0]}: {tally}")
    return tally


def test_bounds_fuzz_loop(db_url):
    tally = _fuzz_loop(db_url, iterations(slow=False))
    assert tally["refused"] > 0
    assert tally["accepted"] > 0


@pytest.mark.slow
def test_bounds_fuzz_loop_at_length(db_url):
    _fuzz_loop(db_url, iterations(slow=True))


@given(st.binary(max_size=300), st.sampled_from([16, 64, 1000]))
def test_sse_with_small_limits_never_raises_anything_else(data, limit):
    decoder = SSEDecoder(max_line=limit, max_event=limit)
    with contextlib.suppress(LimitExceededError):
        decoder.feed(data)
        decoder.end()


def test_the_cli_import_of_mutated_files_never_escapes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    export = "\n".join(_export_lines(f"sqlite:///{tmp_path / 's.db'}")).encode()
    rng = random.Random(7)
    db = f"sqlite:///{tmp_path / 'target.db'}"
    for index in range(max(10, iterations(slow=False) // 10)):
        path = tmp_path / f"m{index}.jsonl"
        path.write_bytes(mutate_bytes(export, rng))
        stdin, sys.stdin = sys.stdin, io.TextIOWrapper(io.BytesIO(b""))
        try:
            main(["--db", db, "import", str(path)])
        finally:
            sys.stdin = stdin
        err = capsys.readouterr().err
        assert "unexpected" not in err, err
        assert "Traceback" not in err, err
        with convstore.Store(db) as store:
            for info in store.iter_conversations():
                store.delete_conversation(info.id)
