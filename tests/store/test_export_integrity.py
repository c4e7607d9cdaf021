"""Exports that cannot be cut or rearranged, and erasure that sticks.

An export ends with a line that counts its conversations and lines and digests them: a file cut short at a
line boundary, or with lines removed, is refused (an older format imports, with a warning that says what it
cannot verify). A sealed conversation exported with its keyring carries a seal over its whole structure, an
HMAC with a key derived from its data key: a change made without the key (an exchange cut out with the
parents, depths and totals recomputed, a branch rolled back or removed, the model or the usage changed) is
refused, even with the end line recomputed. A conversation deleted from a store is not imported back into it
unless the caller says so.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from helpers import ring

import convstore
from convstore import SQLKeyStore
from convstore.errors import ConversationErasedError, UnverifiedExportWarning
from convstore.store._transfer import (
    ExportEnd,
    TransferFormatError,
    export_lines,
    header_line,
    read_dumps,
)
from tests.conftest import model, user

pytest.importorskip("cryptography")


def build(store: Any, count: int = 3) -> list[str]:
    ids = []
    for n in range(count):
        conv = store.create_conversation(model="m")
        for turn in range(3):
            conv.append([user(f"question {n}.{turn}"), model(f"answer {n}.{turn}")])
        conv.fork(at=conv.nodes()[1].id, branch="side").append([user("aside"), model("ok")])
        body = conv.request(f"question {n}.3")
        reply = {
            "id": f"interaction-{n}",
            "status": "completed",
            "model": "m",
            "usage": {"total_input_tokens": 40, "total_output_tokens": 7, "total_tokens": 47},
            "steps": [{"type": "model_output", "content": [{"type": "text", "text": f"answer {n}.3"}]}],
        }
        conv.record(body, reply)
        ids.append(conv.id)
    return ids


def exported(store: Any, ids: list[str]) -> list[str]:
    return list(export_lines((store.export_conversation(i) for i in ids), store.schema_revision()))


def read_all(lines: list[str]) -> list[Any]:
    return [dump for _, dump in read_dumps(lines)]


def with_new_end(lines: list[str]) -> list[str]:
    """``lines`` (an end line at the end, or none) with the end line recomputed, as anyone can."""
    body = lines[:-1] if json.loads(lines[-1])["kind"] == "end" else lines
    end = ExportEnd()
    return [end.add(line) for line in body] + [end.line()]


def test_an_export_ends_with_counts_and_a_digest(db_url):
    with convstore.Store(db_url) as store:
        lines = exported(store, build(store))
    end = json.loads(lines[-1])
    assert end["kind"] == "end"
    assert end["conversations"] == 3
    assert end["lines"] == len(lines) - 1
    assert len(read_all(lines)) == 3


@pytest.mark.parametrize("cut", ["last conversation", "usage lines", "end line only"])
def test_a_file_cut_at_a_line_boundary_is_refused(db_url, cut):
    with convstore.Store(db_url) as store:
        lines = exported(store, build(store))
    kinds = [json.loads(line)["kind"] for line in lines]
    if cut == "last conversation":
        short = lines[: max(i for i, kind in enumerate(kinds) if kind == "conversation")]
    elif cut == "usage lines":
        short = lines[: kinds.index("exchange", max(i for i, k in enumerate(kinds) if k == "conversation"))]
    else:
        short = lines[:-1]
    with pytest.raises(TransferFormatError, match="end line"):
        read_all(short)


def test_lines_removed_under_an_old_end_line_are_refused(db_url):
    with convstore.Store(db_url) as store:
        lines = exported(store, build(store))
    kinds = [json.loads(line)["kind"] for line in lines]
    fewer = [line for i, line in enumerate(lines) if i != kinds.index("branch")]
    with pytest.raises(TransferFormatError, match="removed, added or changed"):
        read_all(fewer)


def test_an_older_format_imports_with_a_warning_saying_what_it_cannot_verify(db_url):
    with convstore.Store(db_url) as store:
        lines = exported(store, build(store, 1))
    header = json.loads(lines[0])
    old = [json.dumps({**header, "version": 2}), *lines[1:-1]]
    with pytest.warns(UnverifiedExportWarning, match="no end line"):
        assert len(read_all(old)) == 1


# -- a sealed conversation's structure ----------------------------------------------------------------------


def _sealed_export(db_url: str) -> tuple[list[str], str]:
    with convstore.Store(db_url, keyring=ring()) as store:
        (conv_id,) = build(store, 1)
        return exported(store, [conv_id]), conv_id


def _rows(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines[:-1]]


def _lines(rows: list[dict[str, Any]]) -> list[str]:
    return with_new_end([json.dumps(row, ensure_ascii=False) for row in rows])


def _tampered(rows: list[dict[str, Any]], how: str) -> list[dict[str, Any]]:
    if how == "model changed":
        for row in rows:
            if row["kind"] == "exchange":
                row["model"] = "another-model"
                break
        else:  # no exchange rows (plain appends): the conversation's own
            rows[1]["created_at"] = "2001-01-01T00:00:00.000000+00:00"
    elif how == "branch removed":
        rows = [row for row in rows if not (row["kind"] == "branch" and row["name"] == "side")]
    elif how == "main rolled back":
        nodes = [row for row in rows if row["kind"] == "node"]
        for row in rows:
            if row["kind"] == "branch" and row["name"] == "main":
                row["head_id"] = nodes[3]["id"]
    elif how == "exchange cut out":
        nodes = [row for row in rows if row["kind"] == "node"]
        main = [row for row in nodes if row["depth"] <= 5 and row["id"] not in {n["id"] for n in nodes[6:]}]
        cut = {main[2]["id"], main[3]["id"]}  # the second exchange of main
        kept = []
        for row in rows:
            if row["kind"] == "node" and row["id"] in cut:
                continue
            kept.append(row)
        by_id = {row["id"]: row for row in kept if row["kind"] == "node"}
        for row in kept:
            if row["kind"] == "node" and row["parent_id"] in cut:
                row["parent_id"] = main[1]["id"]
        for row in kept:  # depths and totals recomputed, parents first
            if row["kind"] == "node":
                parent = by_id.get(row["parent_id"]) if row["parent_id"] else None
                row["depth"] = 0 if parent is None else parent["depth"] + 1
                row["total_tokens"] = row["token_count"] + (parent["total_tokens"] if parent else 0)
        rows = kept
    return rows


@pytest.mark.parametrize("how", ["model changed", "branch removed", "main rolled back", "exchange cut out"])
def test_a_sealed_conversation_changed_without_its_key_is_refused(db_url, tmp_path, how):
    lines, _ = _sealed_export(db_url)
    assert [json.loads(line)["kind"] for line in lines].count("seal") == 1
    changed = _lines(_tampered(_rows(lines), how))
    assert changed != lines
    target = f"sqlite:///{tmp_path / 'target.db'}"
    with convstore.Store(target, keyring=ring()) as store:
        (dump,) = read_all(changed)
        with pytest.raises(TransferFormatError, match="seal"):
            store.import_conversation(dump)
        assert list(store.iter_conversations()) == []


def test_a_sealed_conversation_unchanged_imports_and_its_seal_verifies(db_url, tmp_path):
    lines, conv_id = _sealed_export(db_url)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    with convstore.Store(target, keyring=ring()) as store:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnverifiedExportWarning)
            for dump in read_all(lines):
                assert store.import_conversation(dump)
        assert len(store.conversation(conv_id).history()) == 8
        assert store.check().ok


def test_a_sealed_conversation_exported_without_its_keyring_imports_with_a_warning(db_url, tmp_path):
    _, conv_id = _sealed_export(db_url)
    with convstore.Store(db_url) as keyless:
        unsealed = exported(keyless, [conv_id])
    assert "seal" not in [json.loads(line)["kind"] for line in unsealed]
    (dump,) = read_all(unsealed)
    assert dump.seal is None
    with (
        convstore.Store(f"sqlite:///{tmp_path / 'target.db'}", keyring=ring()) as store,
        pytest.warns(UnverifiedExportWarning, match="no seal") as warned,
    ):
        store.import_conversation(dump)
    # The warning names the conversation, says why it has no seal and what that leaves unverified.
    (message,) = [str(w.message) for w in warned if issubclass(w.category, UnverifiedExportWarning)]
    assert conv_id in message
    assert "exported without the keyring" in message
    assert "would go unnoticed" in message


# -- erasure that sticks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("keys", ["inline", "key store"])
def test_a_deleted_conversation_is_not_imported_back_unasked(db_url, tmp_path, keys):
    key_store = SQLKeyStore(f"sqlite:///{tmp_path / 'keys.db'}") if keys == "key store" else None
    with convstore.Store(db_url, keyring=ring(), key_store=key_store) as store:
        ids = build(store, 2)
        lines = exported(store, ids)
        store.delete_conversation(ids[0])
        dumps = read_all(lines)
        with pytest.raises(ConversationErasedError) as raised:
            store.import_conversation(dumps[0])
        assert raised.value.conversation_id == ids[0]
        assert [info.id for info in store.iter_conversations()] == [ids[1]]
        assert store.import_conversation(dumps[0], allow_erased=True)
        assert len(store.conversation(ids[0]).history()) == 8
        store.delete_conversation(ids[0])  # deleted again: refused again
        with pytest.raises(ConversationErasedError):
            store.import_conversation(dumps[0])
    if key_store is not None:
        key_store.close()


def test_the_header_alone_is_still_a_valid_empty_export():
    end = ExportEnd()
    lines = [end.add(header_line()), end.line()]
    assert read_all(lines) == []
