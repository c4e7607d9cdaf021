"""Export and import: whole trees, ids kept, byte for byte across SQLite and PostgreSQL, all or nothing.

The round trip runs the real ``convstore`` command (export from SQLite, import into the ``db_url`` store,
SQLite or PostgreSQL, export again, import back into SQLite, export a third time) and compares the files
byte for byte and the conversations through the library. The refusals check that a target is left exactly
as it was. ``convstore.store._transfer`` is also tested directly, as the store will call it.
"""

from __future__ import annotations

import functools
import json
import os
import pty
import re
import select
from pathlib import Path

import helpers
import httpx
import pytest
import sqlalchemy as sa

import convstore
from convstore.store._engine import run
from convstore.store._transfer import (
    ConversationDump,
    ConversationExistsError,
    TransferFormatError,
    check_dump,
    conversation_exists,
    export_lines,
    export_ops,
    header_line,
    import_ops,
    read_dumps,
)
from convstore.testing import Emulator, text_reply

SECRET = "the-dog-is-called-Rex"  # in a payload: must never appear in an error


run_cli = functools.partial(helpers.run_cli, text=False)


def one_line_error(result) -> str:
    text = result.stderr.decode()
    assert result.returncode == 1, text
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("convstore: error: ")
    return lines[0]


def build(url: str) -> list[str]:
    """Conversations that use every part of the schema: settings, exchanges with usage, hand-written
    exchanges, unknown step types and fields, forks, an empty branch, Unicode and an escaped NUL."""
    emulator = Emulator()
    with convstore.Store(url) as store, httpx.Client(transport=emulator.transport()) as http:
        client = convstore.InteractionsClient("test-key", http_client=http)
        conv = store.create_conversation(
            model="gemini-3-flash-preview",
            system_instruction="Sé breve ✓",
            generation_config={"temperature": 0.2, "thinking_level": "low"},
            tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
            metadata={"tenant": "ü-42", "tags": ["a", "b"]},
        )
        emulator.script(text_reply(f"Hello! {SECRET} \u0000 👋"))
        conv.send(f"My dog: {SECRET}", client=client)
        conv.append(
            [
                {
                    "type": "user_input",
                    "content": [{"type": "text", "text": "by hand"}],
                    "future_field": {"x": 1},
                },
                {"type": "brand_new_step", "data": [1, 2.5, None, "ß"]},
            ]
        )
        alt = conv.fork(branch="ünïcode branch ✓")
        alt.send("on the other branch", client=client, store=True)
        first = conv.nodes()[0]
        conv.edit(first.id, branch="empty")  # a branch with no steps
        bare = store.create_conversation()
        return [conv.id, bare.id]


def export(db: str, *ids: str) -> bytes:
    result = run_cli("export", *ids, db=db)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def import_file(db: str, path: Path, *options: str):
    return run_cli("import", str(path), *options, db=db)


def snapshot(url: str) -> dict[str, object]:
    """Everything the library shows of a store's conversations."""
    with convstore.Store(url) as store:
        found: dict[str, object] = {}
        for info in store.iter_conversations():
            conv = store.conversation(info.id, "main")
            tree = conv.tree()
            found[info.id] = {
                "info": info,
                "nodes": tree.nodes,
                "branches": tree.branches,
                "histories": {b.name: conv.checkout(b.name).history_json() for b in tree.branches},
                "exchanges": {b.name: conv.checkout(b.name).exchanges() for b in tree.branches},
            }
        return found


def test_round_trip_is_byte_identical_across_backends(tmp_path, db_url):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    build(source)
    first = export(source)
    (tmp_path / "first.jsonl").write_bytes(first)

    imported = import_file(db_url, tmp_path / "first.jsonl")
    assert imported.returncode == 0, imported.stderr.decode()
    assert b"imported 2 conversations" in imported.stdout
    if db_url.startswith("postgresql"):
        # The import analysed what it wrote (reltuples stays -1 until a table's first ANALYZE).
        engine = sa.create_engine(db_url)
        with engine.connect() as conn:
            if conn.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'citus'").first():
                # Distributed: the rows and their statistics are in the shards, on the workers.
                tuples = max(
                    float(row.result)
                    for row in conn.execute(
                        sa.text("SELECT result FROM run_command_on_shards('convstore_nodes', :command)"),
                        {"command": "SELECT reltuples FROM pg_class WHERE oid = '%s'::regclass"},
                    )
                )
            else:
                tuples = conn.exec_driver_sql(
                    "SELECT reltuples FROM pg_class WHERE oid = 'convstore_nodes'::regclass"
                ).scalar_one()
        engine.dispose()
        assert tuples > 0
    second = export(db_url)
    (tmp_path / "second.jsonl").write_bytes(second)

    back = f"sqlite:///{tmp_path / 'back.db'}"
    assert import_file(back, tmp_path / "second.jsonl").returncode == 0
    third = export(back)

    assert first == second == third
    assert snapshot(source) == snapshot(db_url) == snapshot(back)
    lines = first.decode().splitlines()
    assert json.loads(lines[0]) == json.loads(header_line(json.loads(lines[0])["schema_revision"]))
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds.count("conversation") == 2
    assert "exchange" in kinds
    assert "branch" in kinds


def test_export_of_chosen_ids_and_to_a_file(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    conv_id, bare_id = build(source)
    only = export(source, bare_id).decode().splitlines()
    assert [json.loads(line)["kind"] for line in only] == ["header", "conversation", "branch", "end"]
    target = tmp_path / "out.jsonl"
    result = run_cli("export", conv_id, "-o", str(target), db=source)
    assert result.returncode == 0
    assert result.stdout == b""
    assert target.read_bytes() == export(source, conv_id)
    missing = run_cli(
        "export", conv_id, "01a21405-8db3-7b7a-af47-2eb734a127bd", "-o", str(tmp_path / "x"), db=source
    )
    assert "not found" in one_line_error(missing)
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []


def test_import_refuses_an_existing_id_and_writes_nothing(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    conv_id, _bare_id = build(source)
    (tmp_path / "all.jsonl").write_bytes(export(source))
    target = f"sqlite:///{tmp_path / 'target.db'}"
    (tmp_path / "one.jsonl").write_bytes(export(source, conv_id))
    assert import_file(target, tmp_path / "one.jsonl").returncode == 0
    before = export(target)

    refused = import_file(target, tmp_path / "all.jsonl")  # the bare conversation is new, the other is not
    line = one_line_error(refused)
    assert conv_id in line
    assert "already exists" in line
    assert "nothing was imported" in line
    assert export(target) == before

    skipped = import_file(target, tmp_path / "all.jsonl", "--skip-existing")
    assert skipped.returncode == 0
    assert b"imported 1 conversation into" in skipped.stdout
    assert b"skipped 1" in skipped.stdout
    assert export(target) == export(source)


def test_import_from_stdin(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    build(source)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = run_cli("import", "-", db=target, stdin=export(source))
    assert result.returncode == 0, result.stderr.decode()
    assert export(target) == export(source)


def _edit(kind: str, index: int, change):
    """A mutation of the ``index``-th line of ``kind`` (0-based), by a function of its JSON object."""

    def mutate(lines: list[str]) -> tuple[list[str], int]:
        positions = [i for i, line in enumerate(lines) if json.loads(line)["kind"] == kind]
        at = positions[index]
        obj = json.loads(lines[at])
        change(obj)
        lines[at] = json.dumps(obj, ensure_ascii=False)
        return lines, at + 1

    return mutate


def _set(**values):
    return lambda obj: obj.update(values)


def _drop(name: str):
    return lambda obj: obj.pop(name)


def _swap_first_nodes(lines: list[str]) -> tuple[list[str], int]:
    at = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "node")
    lines[at], lines[at + 1] = lines[at + 1], lines[at]
    return lines, at + 1


def _truncate(lines: list[str]) -> tuple[list[str], int]:
    at = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "node") + 2
    lines[at] = lines[at][: len(lines[at]) // 2]
    return lines, at + 1


def _drop_branches_of_last(lines: list[str]) -> tuple[list[str], int]:
    last = max(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "conversation")
    kept = [line for i, line in enumerate(lines) if i <= last or json.loads(line)["kind"] != "branch"]
    return kept, last + 1


def _duplicate_conversation(lines: list[str]) -> tuple[list[str], int]:
    body = lines[:-1]  # before the end line
    return [*body, *body[1:], lines[-1]], len(body) + 1


def _exchange_before_node(lines: list[str]) -> tuple[list[str], int]:
    node = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "node")
    # An exchange of that node's conversation (an earlier conversation may have none).
    at = next(i for i, line in enumerate(lines) if i > node and json.loads(line)["kind"] == "exchange")
    lines.insert(node, lines.pop(at))
    return lines, node + 2  # the node after it is out of order


def _duplicate_branch(lines: list[str]) -> tuple[list[str], int]:
    at = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "branch")
    lines.insert(at + 1, lines[at])
    return lines, at + 2


def _key_after_node(lines: list[str]) -> tuple[list[str], int]:
    """A key line among a conversation's nodes (the order check named it by a plural it has not)."""
    node = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "node")
    lines.insert(node + 1, json.dumps({"kind": "key", "conversation_id": OTHER_ID}))
    return lines, node + 2


OTHER_ID = "01a21405-8db3-7b7a-af47-2eb734a127bd"

MALFORMED = {
    "not json": (_truncate, "not valid JSON"),
    "unknown kind": (_edit("node", 1, _set(kind="nodule")), "kind: unknown kind"),
    "missing field": (_edit("node", 1, _drop("depth")), "(node): depth: missing"),
    "bad id": (_edit("node", 1, _set(id="not-an-id")), "(node): id: expected an id"),
    "parents first": (_swap_first_nodes, "parent_id: names no earlier node"),
    "wrong depth": (_edit("node", 2, _set(depth=7)), "depth: is not its parent's depth + 1"),
    "newer format": (_edit("header", 0, _set(version=99)), "format version 99 is newer"),
    "unknown column": (_edit("node", 0, _set(secret_column=1)), "secret_column: no such column"),
    "type differs": (_edit("node", 0, _set(type="model_output")), "type: differs from the payload's type"),
    "payload not json": (_edit("node", 0, _set(payload="{" + SECRET)), "payload: expected JSON text"),
    "unknown head": (_edit("branch", 0, _set(head_id=OTHER_ID)), "head_id: names no earlier node"),
    "other conversation": (
        _edit("node", 1, _set(conversation_id=OTHER_ID)),
        "conversation_id: does not match",
    ),
    "bad time": (_edit("node", 1, _set(created_at="yesterday")), "created_at: expected an ISO 8601 time"),
    "naive time": (_edit("branch", 0, _set(created_at="2026-01-01T00:00:00")), "with its UTC offset"),
    "negative count": (_edit("node", 1, _set(token_count=-1)), "token_count: integer out of range"),
    "bool as int": (_edit("node", 1, _set(depth=True)), "depth: expected an integer"),
    "int as bool": (_edit("exchange", 0, _set(stored=1)), "stored: expected true or false"),
    "settings not object": (
        _edit("conversation", 0, _set(metadata="[1]")),
        "metadata: expected the JSON text",
    ),
    "null required": (_edit("node", 1, _set(payload=None)), "payload: must not be null"),
    "nul character": (_edit("branch", 1, _set(name="a\u0000b")), "name: contains a NUL character"),
    "no branch": (_drop_branches_of_last, "a conversation needs at least one branch"),
    "second copy": (_duplicate_conversation, "a second conversation with this id"),
    "out of order": (_exchange_before_node, "out of order"),
    "key after nodes": (_key_after_node, "out of order: key lines come before node lines"),
    "duplicate branch": (_duplicate_branch, "name: a second branch with this name"),
}


@pytest.fixture(scope="module")
def valid_export(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("valid")
    source = f"sqlite:///{folder / 'source.db'}"
    build(source)
    return export(source).decode().splitlines()


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_lines_are_refused_by_number_and_nothing_is_written(tmp_path, valid_export, case):
    mutate, says = MALFORMED[case]
    lines, number = mutate(list(valid_export))
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    line = one_line_error(import_file(target, path))
    assert f"line {number}" in line, line
    assert says in line
    assert "nothing was imported" in line
    assert SECRET not in line
    assert "Sé" not in line
    with convstore.Store(target) as store:
        assert store.conversations().items == []


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "line 1: empty"),
        (b'{"kind": "node"}\n', "line 1: expected the convstore-export header"),
        (b'{"kind":"header","format":"convstore-export","version":1}\n\xff\xfe\n', "line 2: not UTF-8 text"),
        (
            b'{"kind":"header","format":"convstore-export","version":1}\n[1]\n',
            "line 2: expected a JSON object",
        ),
    ],
)
def test_unreadable_files(tmp_path, content, says):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    assert says in one_line_error(import_file(f"sqlite:///{tmp_path / 't.db'}", path))


def test_a_header_alone_imports_nothing(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n".join(export_lines([])) + "\n\n")
    result = import_file(f"sqlite:///{tmp_path / 't.db'}", path)
    assert result.returncode == 0
    assert b"imported 0 conversations" in result.stdout


def test_progress_is_drawn_on_a_terminal_only(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    build(source)
    piped = run_cli("export", "-o", str(tmp_path / "a.jsonl"), db=source)
    [said] = piped.stderr.decode().strip().splitlines()  # the summary alone: no progress off a terminal
    assert re.fullmatch(r"exported 2 conversations \(\d+ rows\)", said)

    leader, follower = pty.openpty()
    try:
        result = run_cli(
            "import", str(tmp_path / "a.jsonl"), db=f"sqlite:///{tmp_path / 't.db'}", stderr=follower
        )
        os.close(follower)
        drawn = b""
        while select.select([leader], [], [], 1)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    assert result.returncode == 0
    assert b"importing" in drawn


# -- the store operations, directly ----------------------------------------------------------------------


def test_operations_round_trip_and_refuse(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    conv_id, _ = build(source)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    with convstore.Store(source) as src, convstore.Store(target) as dst:
        dump = run(src.engine, export_ops(conv_id), write=False)
        assert dump.id == conv_id
        assert dump.row_count == 1 + len(dump.nodes) + 3 + len(dump.exchanges)
        seen: list[int] = []
        assert run(dst.engine, import_ops(dump, progress=seen.append), write=True) is True
        assert sum(seen) == dump.row_count
        assert run(dst.engine, conversation_exists(conv_id), write=False)
        assert run(dst.engine, export_ops(conv_id), write=False) == dump
        assert run(dst.engine, import_ops(dump, skip_existing=True), write=True) is False
        with pytest.raises(ConversationExistsError, match=conv_id):
            run(dst.engine, import_ops(dump), write=True)
        with pytest.raises(convstore.ConversationNotFoundError):
            run(src.engine, export_ops(OTHER_ID), write=False)
        assert not run(src.engine, conversation_exists("not-an-id"), write=False)


def test_an_import_is_all_or_nothing(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    conv_id, _ = build(source)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    with convstore.Store(source) as src, convstore.Store(target) as dst:
        dump = run(src.engine, export_ops(conv_id), write=False)
        # Checked rules pass, but the last row written cannot be stored: everything before it goes too.
        broken = [*dump.exchanges[:-1], {**dump.exchanges[-1], "stored": "yes"}]
        bad = ConversationDump(
            conversation=dump.conversation, nodes=dump.nodes, branches=dump.branches, exchanges=broken
        )
        with pytest.raises(sa.exc.StatementError):
            run(dst.engine, import_ops(bad), write=True)
        assert not run(dst.engine, conversation_exists(conv_id), write=False)


def test_check_dump_and_read_dumps_name_the_place(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    conv_id, _ = build(source)
    with convstore.Store(source) as src:
        dump = run(src.engine, export_ops(conv_id), write=False)
    orphan = {**dump.nodes[3], "parent_id": OTHER_ID}
    with pytest.raises(TransferFormatError) as caught:
        check_dump(
            ConversationDump(
                conversation=dump.conversation, nodes=[*dump.nodes[:3], orphan], branches=dump.branches[:1]
            )
        )
    assert (caught.value.line, caught.value.where, caught.value.field) == (None, "nodes[3]", "parent_id")
    lines = list(export_lines([dump]))
    [(number, parsed)] = list(read_dumps(lines))
    assert number == 2
    assert parsed == dump
    lines[4] = lines[4].replace('"kind": "node"', '"kind": "nod"')
    with pytest.raises(TransferFormatError) as caught:
        list(read_dumps(lines))
    assert (caught.value.line, caught.value.field) == (5, "kind")
