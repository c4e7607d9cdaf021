"""Hostile input: malformed steps, event streams, import files and command lines.

Each gives a typed error (a ``ConvstoreError``; on the command line one ``convstore: error:`` line and a
non-zero exit, never a traceback) and leaves the store as it was. Hypothesis drives the structured cases; a
seeded fuzz loop mutates real fixtures (JSON-level and byte-level). ``CONVSTORE_FUZZ_ITERATIONS`` sets the
loop's length (default 300; 5,000 in the ``slow`` variants); each loop prints how many inputs it tried.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import strategies
from conftest import FIXTURES, model, user
from hypothesis import given
from hypothesis import strategies as st
from strategies import exchanges, json_values, steps

import convstore
from convstore import CodecError, ConvstoreError, InvalidExchangeError, codec
from convstore.cli import main
from convstore.client._events import EventDecoder, parse_event
from convstore.client._sse import SSEDecoder
from convstore.client._stream import HopAssembler
from convstore.store._engine import run
from convstore.store._schema import branches
from convstore.store._transfer import (
    ExportEnd,
    TransferFormatError,
    export_lines,
    export_ops,
    import_ops,
    read_dumps,
)


def iterations(slow: bool) -> int:
    return int(os.environ.get("CONVSTORE_FUZZ_ITERATIONS", "5000" if slow else "300"))


WEIRD: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    -(2**70),
    1.5,
    float("1e308"),
    "",
    "\u0000",
    "\ud800",
    "é" * 3,
    "x" * 5000,
    [],
    [None],
    {},
    {"type": None},
    {"type": "text"},
    {"type": 7},
    [[[[[]]]]],
]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*prefix, index)))
    return found


def mutate_json(value: Any, rng: random.Random) -> Any:
    """One random edit somewhere in a JSON value: replace, delete, rename or duplicate."""
    value = json.loads(json.dumps(value))
    path = rng.choice(_paths(value))
    if not path:
        return rng.choice(WEIRD)
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    action = rng.randrange(4)
    if action == 0 or not isinstance(parent, dict):
        if action == 1 and isinstance(parent, list):
            del parent[last]
        else:
            parent[last] = rng.choice(WEIRD)
    elif action == 1:
        del parent[last]
    elif action == 2:
        parent[f"{last}_"] = parent.pop(last)
    else:
        parent[last] = [parent[last], parent[last]]
    return value


SPLICES = [b"\xff", b"\x00", b"\n", b'"', b"}", b"{", b"\r\n\r\n", b"data: "]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    return strategies.mutate_bytes(data, rng, SPLICES)


def fixture_steps() -> list[dict]:
    found: list[dict] = []
    if FIXTURES.is_dir():
        for path in sorted(FIXTURES.glob("*.json")):
            data = json.loads(path.read_text())
            if isinstance(data, list):
                found.extend(data)
            elif isinstance(data.get("steps"), list):
                found.extend(data["steps"])
            elif isinstance(data.get("input"), list):
                found.extend(data["input"])
    return found or [user("hello"), model("hi"), {"type": "thought", "signature": "s"}]


# -- codec ---------------------------------------------------------------------------------------------


@given(json_values)
def test_any_json_decodes_to_a_step_or_a_codec_error(value):
    problems: list = [("", "decoded")]
    try:
        codec.decode_step(value)
    except CodecError as error:
        problems = error.problems
    assert problems  # a refusal always names at least one problem
    with contextlib.suppress(CodecError):
        codec.normalize_step(value)


@given(steps, st.randoms(use_true_random=False))
def test_a_mutated_step_decodes_or_is_refused_by_codec_error(wire, rng):
    try:
        step = codec.decode_step(mutate_json(wire, rng))
    except CodecError:
        return
    codec.encode_step(step)  # whatever decodes also encodes


def _codec_loop(count: int) -> int:
    rng = random.Random(9)
    corpus = fixture_steps()
    tried = 0
    for _ in range(count):
        value = rng.choice(corpus)
        for _ in range(rng.randrange(1, 4)):
            value = mutate_json(value, rng)
        tried += 1
        with contextlib.suppress(CodecError):
            codec.encode_step(codec.decode_step(value))
        text = mutate_bytes(json.dumps(rng.choice(corpus)).encode(), rng)
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            continue  # not JSON at all: the codec only ever receives parsed JSON
        tried += 1
        with contextlib.suppress(CodecError):
            codec.decode_step(parsed)
    print(f"\ncodec fuzz: {tried} inputs")
    return tried


def test_codec_fuzz_loop():
    assert _codec_loop(iterations(slow=False)) > 0


@pytest.mark.slow
def test_codec_fuzz_loop_at_length():
    _codec_loop(iterations(slow=True))


def count_rows(engine: sa.Engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(sa.text(f"SELECT count(*) FROM convstore_{table}")).scalar_one()
            for table in ("conversations", "nodes", "branches", "exchanges", "files", "media")
        )


hostile_exchanges = st.one_of(exchanges.map(lambda e: ("mutated", e)), json_values.map(lambda v: ("raw", v)))


@given(hostile_exchanges, st.randoms())
def test_a_hostile_append_writes_all_or_nothing(store, data, rng):
    kind, value = data
    conv = store.conversation(_conversation_of(store))
    before = count_rows(store.engine)
    head = conv.head_id
    steps_in = [mutate_json(step, rng) for step in value] if kind == "mutated" else value
    try:
        nodes = conv.append(steps_in)
    except (CodecError, InvalidExchangeError):
        assert count_rows(store.engine) == before
        assert conv.head_id == head
        return
    assert len(nodes) == len(steps_in)


def _conversation_of(store) -> str:
    page = store.conversations(limit=1)
    if page.items:
        return page.items[0].id
    return store.create_conversation().id


# -- SSE and stream reassembly -------------------------------------------------------------------------


def _decode_all(chunks: list[bytes]) -> tuple[list, bool]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events, decoder.end()


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=8))
def test_sse_never_raises_and_ignores_how_bytes_are_split(data, cuts):
    whole = _decode_all([data])
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert _decode_all(pieces) == whole


def _stream_fixtures() -> list[bytes]:
    found = []
    if FIXTURES.is_dir():
        found = [path.read_bytes() for path in sorted(FIXTURES.glob("*.sse"))]
        found += [path.read_bytes() for path in sorted(FIXTURES.glob("*stream*.txt"))]
    if not found:
        found = [
            b'data: {"event_type":"interaction.created","interaction":{"id":"i1","status":"in_progress"}}\n\n'
            b'data: {"event_type":"step.start","index":0,"step":{"type":"model_output","content":[]}}\n\n'
            b'data: {"event_type":"step.delta","index":0,"delta":{"type":"text","text":"hi"}}\n\n'
            b'data: {"event_type":"step.stop","index":0}\n\n'
            b'data: {"event_type":"interaction.completed","interaction":{"id":"i1","status":"completed"}}\n\n'
            b"data: [DONE]\n\n"
        ]
    return found


def assemble(body: bytes, chunk: int) -> Any:
    decoder = EventDecoder()
    hop = HopAssembler()
    for start in range(0, len(body), chunk):
        for event in decoder.feed(body[start : start + chunk]):
            hop.feed(event)
    decoder.end()
    return hop.result()


def _stream_loop(count: int) -> int:
    rng = random.Random(5)
    corpus = _stream_fixtures()
    tried = 0
    for _ in range(count):
        body = rng.choice(corpus)
        lines = body.split(b"\n\n")
        if rng.random() < 0.5:
            index = rng.randrange(len(lines))
            line = lines[index]
            if line.startswith(b"data: {"):
                try:
                    event = json.loads(line[6:])
                except ValueError:
                    event = None
                if event is not None:
                    lines[index] = b"data: " + json.dumps(mutate_json(event, rng)).encode()
            body = b"\n\n".join(lines)
        else:
            body = mutate_bytes(body, rng)
        tried += 1
        with contextlib.suppress(ConvstoreError):
            assemble(body, rng.randrange(1, 64))
    print(f"\nstream fuzz: {tried} inputs")
    return tried


def test_stream_fuzz_loop():
    assert _stream_loop(iterations(slow=False)) > 0


@pytest.mark.slow
def test_stream_fuzz_loop_at_length():
    _stream_loop(iterations(slow=True))


@given(json_values)
def test_any_event_data_parses_or_is_a_stream_error(value):
    with contextlib.suppress(convstore.StreamError):
        parse_event(json.dumps(value))


# -- import files --------------------------------------------------------------------------------------


def _exported(url: str) -> list[str]:
    with convstore.Store(url) as store:
        conv = store.create_conversation(model="m", metadata={"k": [1, 2]})
        first = conv.append([user("hello"), {"type": "thought", "signature": "s"}, model("hi")])
        conv.append([user("again"), model("yes")])
        conv.fork(at=first[0].id, branch="side").append([user("other way")])
        # An uploaded file's record and bytes: the export's file and media lines (format 4) are fuzzed too.
        uri = "https://generativelanguage.googleapis.com/v1beta/files/fuzzed-1"
        conv.attach_media(uri, b"\x89PNG fuzzed bytes", mime_type="image/png")
        conv.append([user("see", {"type": "image", "uri": uri, "mime_type": "image/png"})])
        dump = run(store.engine, export_ops(conv.id), write=False)
        store.delete_conversation(conv.id)
    return list(export_lines([dump]))


def _import(engine: sa.Engine, lines: list[str]) -> None:
    # allow_erased: ``_exported`` deleted the conversation from this store, and every round deletes what it
    # imported; without it every import was refused as erased, the mutations unread.
    for _, dump in list(read_dumps(lines)):
        run(engine, import_ops(dump, allow_erased=True), write=True)


def _import_loop(url: str, count: int) -> dict[str, int]:
    lines = _exported(url)
    rng = random.Random(3)
    tallies = {"tried": 0, "refused": 0, "imported": 0}
    with convstore.Store(url) as store:
        engine = store.engine
        before = count_rows(engine)
        for _ in range(count):
            mutated = list(lines)
            index = rng.randrange(len(mutated))
            if rng.random() < 0.6:
                try:
                    obj = json.loads(mutated[index])
                except ValueError:
                    obj = None
                if obj is not None:
                    mutated[index] = json.dumps(mutate_json(obj, rng))
            else:
                text = mutate_bytes("\n".join(mutated).encode(), rng)
                mutated = text.decode("utf-8", errors="replace").split("\n")
            if mutated and mutated[-1] == lines[-1]:  # the end line recomputed, as anyone can: the rows
                end = ExportEnd()  # are then checked by their rules, not refused by the end line at once
                mutated = [end.add(line) for line in mutated[:-1]] + [end.line()]
            tallies["tried"] += 1
            try:
                _import(engine, mutated)
            except ConvstoreError:
                tallies["refused"] += 1
                assert count_rows(engine) == before, "a refused import wrote something"
                continue
            tallies["imported"] += 1
            report = store.check()
            assert report.ok, (report.lines(), mutated)
            # What was written is readable and is deleted again for the next round.
            with engine.connect() as conn:
                found = conn.execute(sa.select(branches.c.conversation_id, branches.c.name)).all()
            for conversation_id, name in found:  # whichever branches the mutation left
                store.conversation(conversation_id, name).history()
            for conversation_id in {cid for cid, _ in found}:
                store.delete_conversation(conversation_id)
    print(f"\nimport fuzz on {url.split(':', maxsplit=1)[0]}: {tallies}")
    return tallies


def test_import_fuzz_loop(db_url):
    tallies = _import_loop(db_url, iterations(slow=False) // 3)
    assert tallies["refused"] > 0


@pytest.mark.slow
def test_import_fuzz_loop_at_length(db_url):
    _import_loop(db_url, iterations(slow=True))


@given(st.lists(st.text(max_size=80), max_size=6))
def test_any_text_lines_read_as_dumps_or_a_transfer_format_error(lines):
    with contextlib.suppress(TransferFormatError):
        list(read_dumps(lines))


# -- command-line arguments ----------------------------------------------------------------------------

WORDS = [
    "demo", "ls", "show", "fork", "delete", "purge", "export", "import", "replay", "db", "upgrade",
    "current", "check", "--tree", "--json", "--limit", "--older-than", "--branch", "--at", "--out", "-o",
    "--skip-existing", "--yes", "--help", "--db", "0", "-1", "99999999999999999999", "1d", "abc", "",
    "\u0000", "é✓", "../../etc/passwd", "--", "-", "sqlite://", "postgresql+psycopg://nobody@127.0.0.1:1/x",
    "01a2b3c4-0000-7000-8000-000000000000", "x" * 300,
]  # fmt: skip


def _cli(argv: list[str], db: str, capsys) -> tuple[int, str]:
    stdin, sys.stdin = sys.stdin, io.TextIOWrapper(io.BytesIO(b""))
    try:
        code = main(["--db", db, *argv])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.stdin = stdin
    captured = capsys.readouterr()
    return code, captured.err


def _cli_loop(tmp_path: Path, capsys, count: int) -> int:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    with convstore.Store(db) as store:
        store.create_conversation().append([user("kept"), model("yes")])
        engine = sa.create_engine(db)
    before = count_rows(engine)
    rng = random.Random(11)
    os.environ.pop("GEMINI_API_KEY", None)
    tried = 0
    for _ in range(count):
        argv = [rng.choice(WORDS) for _ in range(rng.randrange(1, 5))]
        if "--help" in argv or "demo" in argv:
            continue  # prints help / runs the offline tour on its own database: both fine
        tried += 1
        before_files = set(Path.cwd().iterdir())
        code, err = _cli(argv, db, capsys)
        # Only a command that creates a database (import, db upgrade) may make one at a word taken as a path.
        made = set(Path.cwd().iterdir()) - before_files
        assert not made or {"import", "upgrade"} & set(argv), (argv, made)
        for path in made:
            path.unlink()
        assert "Traceback" not in err, (argv, err)
        assert "unexpected" not in err, (argv, err)
        if code != 0:
            lines = err.strip().splitlines()
            assert len(lines) == 1, (argv, err)
            assert lines[0].startswith("convstore: error:"), (argv, err)
        assert count_rows(engine) == before, argv
    engine.dispose()
    with capsys.disabled():
        print(f"\ncli fuzz: {tried} command lines")
    return tried


def test_cli_fuzz_loop(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)  # a word taken as a file name (`--db fork`) must not land in the checkout
    monkeypatch.delenv("CONVSTORE_DB", raising=False)
    assert _cli_loop(tmp_path, capsys, iterations(slow=False) // 3) > 0


@pytest.mark.slow
def test_cli_fuzz_loop_at_length(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)  # a word taken as a file name (`--db fork`) must not land in the checkout
    monkeypatch.delenv("CONVSTORE_DB", raising=False)
    _cli_loop(tmp_path, capsys, iterations(slow=True))


# -- text the drivers cannot take: found by the loops above; each is refused before anything is written --

SURROGATE = "a\ud800b"


@pytest.mark.parametrize(
    ("attempt", "error"),
    [
        (lambda s: s.create_conversation(model=SURROGATE), CodecError),
        (lambda s: s.create_conversation(model="a\x00b"), CodecError),
        (lambda s: s.create_conversation(branch=SURROGATE), ValueError),
        (lambda s: s.create_conversation().fork(branch=SURROGATE), ValueError),
        (lambda s: s.create_conversation().append([{"type": SURROGATE}]), CodecError),
        (lambda s: s.create_conversation().append([{"type": "t" * 65}]), CodecError),
        (lambda s: s.create_conversation().append([{"type": "a\x00b"}]), CodecError),
    ],
    ids=["model-surrogate", "model-nul", "branch-surrogate", "fork-surrogate", "type-surrogate",
         "type-long", "type-nul"],
)  # fmt: skip
def test_text_a_driver_cannot_store_is_refused_by_a_typed_error(store, attempt, error):
    before = count_rows(store.engine)
    conversations_before = before[0]
    with pytest.raises(error) as raised:
        attempt(store)
    assert "\ud800" not in str(raised.value)
    after = count_rows(store.engine)
    # Only the conversation a lambda made for the purpose may be new; nothing of the refused call is.
    assert after[0] - conversations_before <= 1
    assert after[1] == before[1]
    assert store.check().ok


def test_an_owner_a_driver_cannot_store_is_refused(db_url):
    with pytest.raises(ValueError, match="lone surrogates"):
        convstore.Store(db_url, owner=SURROGATE)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda row: row.update(total_tokens=row["total_tokens"] + 1), "total_tokens"),
        (lambda row: row.update(exchange_id="01a2b3c4-0000-7000-8000-000000000000"), "one chain"),
    ],
    ids=["total", "exchange"],
)
def test_an_import_that_would_break_an_invariant_is_refused(tmp_path, edit, says):
    """Found by the import loop: rows whose running totals or exchange chains were wrong imported and
    failed ``check()`` afterwards; the import now refuses them."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    lines = _exported(url)
    nodes_at = [i for i, line in enumerate(lines) if json.loads(line).get("kind") == "node"]
    row = json.loads(lines[nodes_at[1]])  # the second node: a middle of the first exchange
    edit(row)
    lines[nodes_at[1]] = json.dumps(row)
    with convstore.Store(url) as store:
        with pytest.raises(TransferFormatError, match=says):
            _import(store.engine, lines)
        assert count_rows(store.engine) == (0,) * 6


def test_a_file_name_the_system_refuses_is_one_line(tmp_path, capsys):
    """Found by the command-line loop: ``import`` of a 300-character name was an "unexpected OSError"."""
    code, err = _cli(["import", "x" * 300], f"sqlite:///{tmp_path / 'cli.db'}", capsys)
    assert code == 1
    assert err.startswith("convstore: error: cannot use ")
    assert "File name too long" in err
    assert "unexpected" not in err


def test_an_import_of_a_branch_the_store_cannot_open_is_refused(tmp_path):
    """Found by the long import loop: a branch named "" imported, and then no call could open it."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    lines = _exported(url)
    at = next(i for i, line in enumerate(lines) if json.loads(line).get("kind") == "branch")
    row = json.loads(lines[at])
    row["name"] = ""
    lines[at] = json.dumps(row)
    with convstore.Store(url) as store:
        with pytest.raises(TransferFormatError, match="must not be empty"):
            _import(store.engine, lines)
        assert count_rows(store.engine) == (0,) * 6


def test_an_import_of_settings_the_store_cannot_read_is_refused(tmp_path):
    """Found by the long import loop: a system_instruction that was not JSON text imported, and opening the
    conversation then raised json's JSONDecodeError."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    lines = _exported(url)
    at = next(i for i, line in enumerate(lines) if json.loads(line).get("kind") == "conversation")
    row = json.loads(lines[at])
    row["system_instruction"] = ""
    lines[at] = json.dumps(row)
    with convstore.Store(url) as store:
        with pytest.raises(TransferFormatError, match="system_instruction: expected JSON text"):
            _import(store.engine, lines)
        assert count_rows(store.engine) == (0,) * 6


@pytest.mark.parametrize(
    "reply",
    [{"id": "int\ud800", "status": "completed"}, {"id": "int-1", "status": "completed\x00"}],
    ids=["id-surrogate", "status-nul"],
)
def test_a_reply_with_text_no_database_can_store_is_refused(store, reply):
    """Found after the loops: a reply id with a lone surrogate reached the driver (UnicodeEncodeError)."""
    conv = store.create_conversation(model="gemini-3-flash-preview")
    body = conv.request("hi")
    before = count_rows(store.engine)
    with pytest.raises(CodecError) as raised:
        conv.record(body, {**reply, "steps": [model("ok")]})
    assert "\ud800" not in str(raised.value)
    assert count_rows(store.engine) == before
    assert store.check().ok


def test_a_usage_count_beyond_the_columns_is_kept_in_the_usage_json_only(store):
    """Found after the loops: on PostgreSQL a count over 2**31 - 1 was a DatabaseError, the turn lost."""
    conv = store.create_conversation(model="gemini-3-flash-preview")
    body = conv.request("hi")
    usage = {"total_input_tokens": 2**40, "total_tokens": -5, "total_output_tokens": 3}
    conv.record(body, {"id": "int-1", "status": "completed", "usage": usage, "steps": [model("ok")]})
    (recorded,) = conv.exchanges()
    assert (recorded.input_tokens, recorded.total_tokens, recorded.output_tokens) == (None, None, 3)
    assert recorded.usage["total_input_tokens"] == 2**40
    assert store.check().ok
