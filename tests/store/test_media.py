"""Inline media stored once per content hash: forks, edits, replays and repeated uploads store one copy per
conversation, and every read returns each step byte for byte as it was appended.

Both backends, sync and async stores; the split itself is checked by hypothesis on arbitrary JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import model, user
from hypothesis import given
from hypothesis import strategies as hs

import convstore
from convstore import codec
from convstore._ids import canonical_id
from convstore.store import _migrate
from convstore.store._engine import run
from convstore.store._media import MIN_MEDIA, join_media, join_media_utf8, refs_json, split_media
from convstore.store._statements import INSERT_MEDIA
from convstore.store._transfer import (
    export_lines,
    export_ops,
    import_ops,
    read_dumps,
)


def picture(size: int = 30_000, seed: int = 1) -> str:
    return base64.b64encode(hashlib.shake_256(str(seed).encode()).digest(size)).decode("ascii")


def with_image(text: str, data: str, kind: str = "image") -> dict[str, Any]:
    mime = {"image": "image/png", "document": "application/pdf", "audio": "audio/wav"}[kind]
    return {
        "type": "user_input",
        "content": [{"type": "text", "text": text}, {"type": kind, "data": data, "mime_type": mime}],
    }


def media_rows(engine: sa.Engine) -> list[Any]:
    """Every media row, conversation ids canonical (SQLite keeps UUIDs as bare hex)."""
    with engine.connect() as db:
        rows = db.execute(sa.text("SELECT conversation_id, hash, data FROM convstore_media")).all()
    return [SimpleNamespace(conversation_id=canonical_id(r[0]), hash=r[1], data=r[2]) for r in rows]


def payload_bytes(engine: sa.Engine) -> int:
    with engine.connect() as db:
        return db.execute(sa.text("SELECT SUM(LENGTH(payload)) FROM convstore_nodes")).scalar_one()


# -- the split, on any JSON ------------------------------------------------------------------------------

_strings = hs.one_of(
    hs.text(max_size=30),
    hs.sampled_from(['"data":"', '\\"data\\":\\"', ',"data":"', '{"data":"', "\\", '"']),
)
_big = hs.builds(
    lambda base, extra: base * (MIN_MEDIA // max(1, len(base)) + 1) + extra,
    hs.text(min_size=1, max_size=8),
    _strings,
)
_json = hs.recursive(
    hs.one_of(hs.none(), hs.booleans(), hs.integers(), _strings, _big),
    lambda inner: hs.one_of(
        hs.lists(inner, max_size=4),
        hs.dictionaries(
            hs.one_of(hs.sampled_from(["data", 'x"data', "metadata"]), _strings), inner, max_size=4
        ),
    ),
    max_leaves=12,
)


@given(_json)
def test_split_and_join_give_back_any_json_text_exactly(value):
    text = codec.dumps(value)
    stripped, found = split_media(text)
    refs = refs_json([offset for offset, _ in found], [str(i) for i in range(len(found))])
    blobs = {str(i): content for i, (_, content) in enumerate(found)}
    assert join_media(stripped, refs, blobs.__getitem__) == text
    # A replay reads the payload as UTF-8 bytes: joined as bytes (ASCII) or decoded first (the rest).
    assert join_media_utf8(stripped.encode(), refs, blobs.__getitem__) == text.encode()
    json.loads(stripped)  # what is stored is still JSON
    for _, content in found:
        assert len(content) >= MIN_MEDIA
        assert json.loads(f'"{content}"') is not None  # a whole JSON string's text


def test_only_large_data_strings_of_objects_are_kept_apart():
    big, small = picture(), "AAAA"
    text = codec.dumps(
        {"type": "user_input", "content": [{"type": "image", "data": big}, {"type": "image", "data": small}],
         "x": {"not data": big}, 'y"data': big}
    )  # fmt: skip
    stripped, found = split_media(text)
    assert [content for _, content in found] == [big]
    assert small in stripped
    assert stripped.count(big) == 2  # under other keys, it stays where it is


# -- stored once -----------------------------------------------------------------------------------------


def test_forks_edits_replays_and_repeated_uploads_store_one_copy(make_store, db_url):
    store = make_store()
    image, pdf = picture(seed=1), picture(40_000, seed=2)
    first = [with_image("what is this?", image), model("a cat")]
    conv = store.create_conversation()
    conv.append(first)
    before = payload_bytes(store.engine)
    conv.append([with_image("and this again?", image), model("the same cat")])
    conv.append([with_image("and this pdf?", pdf, "document"), model("a report")])
    root = conv.nodes()[0].id
    fork = conv.fork(at=root, branch="fork")
    fork.append([model("a kitten")])
    replay = conv.edit(root, branch="replay")  # a branch of its own from the start
    replay.append(first)  # the same turn replayed against another model
    edited = conv.edit(conv.nodes()[2].id, branch="edited")
    edited.append([with_image("what is it, really?", image), model("a lynx")])

    rows = media_rows(store.engine)
    assert sorted(row.data for row in rows) == sorted([image, pdf])
    # Each append of the image added its text and a reference, not the image.
    assert payload_bytes(store.engine) - before < 5 * 2_000
    # Every read gives back exactly what was appended.
    reread = store.conversation(conv.id)
    assert [node.raw_json for node in reread.nodes()][:2] == [codec.dumps(step) for step in first]
    assert reread.history()[4] == with_image("and this pdf?", pdf, "document")
    assert json.loads(reread.history_json()) == reread.history()
    assert store.conversation(conv.id, "replay").history() == first
    assert store.conversation(conv.id, "edited").history()[-2] == with_image("what is it, really?", image)
    tree = reread.tree()
    assert {node.raw_json for node in tree.nodes} >= {codec.dumps(step) for step in first}
    assert reread.node(reread.nodes()[0].id).data == first[0]
    assert store.check().ok


def test_history_json_is_the_appended_text_byte_for_byte(make_store):
    store = make_store()
    odd = picture(5_000) + '\\u00e9\\"/\u2713'  # escapes and non-ASCII inside a data string
    steps = [with_image('é ✓ "quoted"', odd), model("ok")]
    conv = store.create_conversation()
    conv.append(steps)
    expected = "[" + ",".join(codec.dumps(step) for step in steps) + "]"
    assert store.conversation(conv.id).history_json() == expected
    assert media_rows(store.engine)[0].data == codec.dumps(odd)[1:-1]


def test_a_budgeted_request_carries_the_media_whole(make_store):
    store = make_store()
    conv = store.create_conversation(model="m")
    image = picture()
    for turn in range(3):
        conv.append([with_image(f"turn {turn}", image), model(f"reply {turn}")])
    window = store.conversation(conv.id).history(budget=convstore.TokenBudget(max_input_tokens=1_000_000))
    assert window[0] == with_image("turn 0", image)
    kept = store.conversation(conv.id).history(budget=convstore.TokenBudget(max_input_tokens=25_000))
    assert kept
    assert kept[0]["type"] == "user_input"
    assert all(step == with_image(step["content"][0]["text"], image) for step in kept[::2])


def test_each_conversation_keeps_its_own_copy_and_delete_removes_it(make_store):
    store = make_store()
    image = picture()
    a, b = store.create_conversation(), store.create_conversation()
    a.append([with_image("x", image)])
    b.append([with_image("y", image)])
    assert len(media_rows(store.engine)) == 2  # nothing shared across conversations (tenants)
    store.delete_conversation(a.id)
    assert [str(row.conversation_id) for row in media_rows(store.engine)] == [b.id]
    assert store.check().ok


def test_two_writers_storing_the_same_media_at_once_keep_one(db_url):
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        row = {"conversation_id": conv.id, "hash": "0" * 64, "data": "x"}
        with store.engine.begin() as db:  # the insert a writer makes after finding the hash missing
            db.execute(INSERT_MEDIA, [row])
        with store.engine.begin() as db:  # a second writer that looked before the first committed
            db.execute(INSERT_MEDIA, [row | {"data": "y"}])
        assert [r.data for r in media_rows(store.engine)] == ["x"]


def test_a_failed_append_stores_no_media(make_store):
    store = make_store()
    conv = store.create_conversation()
    stale = store.conversation(conv.id)
    conv.append([user("moved the head")])
    with pytest.raises(convstore.ConflictError):
        stale.append([with_image("lost race", picture())])
    assert media_rows(store.engine) == []
    with pytest.raises(convstore.CodecError):
        conv.append([with_image("fine", picture()), {"type": "model_output", "content": 3}])
    assert media_rows(store.engine) == []


# -- export, import, check -------------------------------------------------------------------------------


def test_export_writes_media_inline_and_import_stores_it_once_again(db_url, tmp_path):
    image = picture()
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        conv.append([with_image("a", image), model("b")])
        conv.append([with_image("c", image), model("d")])
        dump = run(store.engine, export_ops(conv.id), write=False)
        lines = list(export_lines([dump]))
    assert sum(line.count(image) for line in lines) == 2
    assert all('"media"' not in line for line in lines)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    with convstore.Store(target) as other:
        for _, read in read_dumps(lines):
            run(other.engine, import_ops(read), write=True)
        assert len(media_rows(other.engine)) == 1
        assert other.conversation(conv.id).history() == [
            with_image("a", image), model("b"), with_image("c", image), model("d")
        ]  # fmt: skip
        assert other.check().ok


def test_check_finds_missing_and_altered_media_and_reading_it_is_a_typed_error(db_url):
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        conv.append([with_image("a", picture(seed=1))])
        conv.append([with_image("b", picture(seed=2))])
        first, second = sorted(media_rows(store.engine), key=lambda row: row.hash)
        with store.engine.begin() as db:
            db.execute(sa.text("DELETE FROM convstore_media WHERE hash = :h"), {"h": first.hash})
            db.execute(
                sa.text("UPDATE convstore_media SET data = 'AAAA' WHERE hash = :h"), {"h": second.hash}
            )
        report = store.check()
        assert report.kinds() == {"missing_media", "bad_media"}
        missing = next(p for p in report.problems if p.kind == "missing_media")
        assert missing.subject == "node"
        assert missing.conversation_id == conv.id
        with pytest.raises(convstore.CorruptionError, match=conv.id) as raised:
            store.conversation(conv.id).history()
        assert picture(seed=1)[:20] not in str(raised.value)


# -- encryption at rest ----------------------------------------------------------------------------------


def test_encrypted_media_is_sealed_and_named_by_a_keyed_hash(make_store, db_url):
    pytest.importorskip("cryptography")
    keyring = convstore.Keyring({"k1": bytes(range(32))}, active="k1")
    store = make_store(keyring=keyring)
    image = picture()
    a, b = store.create_conversation(), store.create_conversation()
    for conv in (a, b):
        conv.append([with_image("x", image)])
        conv.append([with_image("y", image)])
    rows = media_rows(store.engine)
    assert len(rows) == 2  # once per conversation
    assert all(image[:64] not in row.data for row in rows)
    assert hashlib.sha256(image.encode()).hexdigest() not in {row.hash for row in rows}
    assert len({row.hash for row in rows}) == 2  # the same file has another name in each conversation
    assert store.conversation(a.id).history()[1] == with_image("y", image)
    assert store.check().ok
    store.delete_conversation(a.id)
    assert [str(row.conversation_id) for row in media_rows(store.engine)] == [b.id]


def test_size_grows_by_the_text_not_the_image(db_url):
    image = picture(300_000)
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        conv.append([with_image("first", image)])
        with store.engine.connect() as db:
            before = db.execute(sa.text("SELECT SUM(LENGTH(data)) FROM convstore_media")).scalar_one()
        for turn in range(10):
            conv.edit(conv.nodes()[0].id, branch=f"b{turn}").append([with_image(f"again {turn}", image)])
        with store.engine.connect() as db:
            after = db.execute(sa.text("SELECT SUM(LENGTH(data)) FROM convstore_media")).scalar_one()
        assert before == after == len(image)
        assert payload_bytes(store.engine) < 10_000


# -- migration 0007 --------------------------------------------------------------------------------------


def test_downgrade_below_0007_puts_the_media_back_into_the_payloads(db_url):
    image = picture()
    steps = [with_image("a", image), model("b"), with_image("c", image)]
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        conv.append(steps[:2])
        conv.append(steps[2:])
        _migrate.downgrade(store.engine, "0006")
        with store.engine.connect() as db:
            payloads = (
                db.execute(sa.text("SELECT payload FROM convstore_nodes ORDER BY depth")).scalars().all()
            )
            assert "convstore_media" not in sa.inspect(db).get_table_names()
        assert payloads == [codec.dumps(step) for step in steps]
        store.upgrade()
        assert store.conversation(conv.id).history() == steps
        assert store.check().ok


def test_downgrade_below_0007_refuses_encrypted_media_it_cannot_rebuild(db_url):
    pytest.importorskip("cryptography")
    keyring = convstore.Keyring({"k1": bytes(range(32))}, active="k1")
    with convstore.Store(db_url, keyring=keyring) as store:
        store.create_conversation().append([with_image("a", picture())])
        with pytest.raises(RuntimeError, match="encrypted"):
            _migrate.downgrade(store.engine, "0006")
        assert store.schema_revision() == _migrate.head_revision()
