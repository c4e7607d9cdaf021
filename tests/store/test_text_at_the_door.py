"""Text that every surface can show: a lone surrogate (which UTF-8 cannot carry) is refused at the door,
by append, record and import, with a ``CodecError`` naming its path; one stored before this was refused is
shown as U+FFFD; a ``mime_type`` must be a media type (RFC 6838), without control characters.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

import convstore
from convstore import codec
from convstore.errors import CodecError
from convstore.store._schema import nodes
from convstore.store._transfer import TransferFormatError, export_lines, read_dumps
from tests.conftest import user

LONE = "\ud800"


def image(mime: str) -> dict[str, object]:
    return {"type": "user_input", "content": [{"type": "image", "data": "aGVsbG8=", "mime_type": mime}]}


def test_append_refuses_a_lone_surrogate_naming_its_path(store):
    conv = store.create_conversation()
    with pytest.raises(CodecError) as raised:
        conv.append([user("fine"), user(f"bad {LONE} text")])
    assert raised.value.path == "steps[1].content[0].text"
    assert LONE not in str(raised.value)
    assert conv.history() == []


def test_record_refuses_a_lone_surrogate_in_the_reply(db_url):
    with convstore.Store(db_url) as store:
        conv = store.create_conversation(model="m")
        body = conv.request("hello")
        reply = {
            "id": "i1",
            "status": "completed",
            "steps": [{"type": "model_output", "content": [{"type": "text", "text": LONE}]}],
        }
        with pytest.raises(CodecError, match="surrogate"):
            conv.record(body, reply)
        assert conv.history() == []


def test_import_refuses_a_lone_surrogate(tmp_path):
    with convstore.Store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        conv = store.create_conversation()
        conv.append([user("placeholder")])
        lines = list(export_lines([store.export_conversation(conv.id)]))
    lines = [line.replace("placeholder", "\\ud800") for line in lines]
    with pytest.raises(TransferFormatError, match="surrogate"):
        list(read_dumps(lines))


def test_a_lone_surrogate_stored_before_is_shown_as_a_replacement_character(db_url):
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        conv.append([user("placeholder 😀")])
        with store.engine.begin() as db:
            payload = db.exec_driver_sql("SELECT payload FROM convstore_nodes").scalar_one()
            older = json.dumps(json.loads(payload)).replace("placeholder", "old \\ud800 data")
            db.execute(sa.update(nodes).values(payload=older))
        history = store.conversation(conv.id).history()
    text = history[0]["content"][0]["text"]
    assert text == "old \ufffd data 😀"
    text.encode("utf-8")  # printable, encodable


@pytest.mark.parametrize(
    "mime",
    ["image/png\t", "image/png\x00", "image", "/png", "image/", "image/png; x", "ima ge/png", "image/p\nng"],
)
def test_a_mime_type_outside_the_grammar_is_refused(store, mime):
    conv = store.create_conversation()
    with pytest.raises(CodecError) as raised:
        conv.append([image(mime)])
    assert raised.value.path == "steps[0].content[0].mime_type"


@pytest.mark.parametrize(
    "mime", ["image/png", "application/vnd.api+json", "text/plain; charset=utf-8", 'text/x; a="b c"']
)
def test_a_media_type_in_the_grammar_is_stored(store, mime):
    conv = store.create_conversation()
    conv.append([image(mime)])
    assert conv.history()[0]["content"][0]["mime_type"] == mime


@given(st.text())
def test_text_problems_finds_exactly_the_strings_utf8_cannot_carry(text):
    found = codec.text_problems({"type": "user_input", "content": [{"type": "text", "text": text}]})
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        assert [path for path, _ in found] == ["content[0].text"]
    else:
        assert found == []
    codec.replace_surrogates(text).encode("utf-8")  # never raises
