"""Tenant isolation, retention, redaction, and no content in logs, reprs or errors."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from conftest import user

import convstore
from convstore import CodecError, ConversationNotFoundError

SECRET = "my diagnosis is stage two"
HOSTILE = ["'; DROP TABLE convstore_nodes; --", "a\x00b", "💥" * 10, "%(owner)s", "\\' OR 1=1 --"]


def test_another_owners_ids_behave_as_if_they_did_not_exist(make_store):
    alice, bob, admin = make_store(owner="alice"), make_store(owner="bob"), make_store()
    mine = alice.create_conversation(model="m", metadata={"who": "alice"})
    mine.append([user(SECRET)])
    missing = "01a213da-0000-7000-8000-000000000000"
    for conversation_id in (mine.id, missing):
        with pytest.raises(ConversationNotFoundError) as seen:
            bob.conversation(conversation_id)
        assert str(seen.value) == str(ConversationNotFoundError(conversation_id))  # identical to a missing id
        with pytest.raises(ConversationNotFoundError):
            bob.conversation(conversation_id, branch="main")
        with pytest.raises(ConversationNotFoundError):
            bob.delete_conversation(conversation_id)
    assert [c.id for c in bob.conversations()] == []
    assert list(bob.iter_conversations()) == []
    assert bob.purge(older_than=datetime.now(timezone.utc)) == 0
    # Alice still has it, untouched; an unbound (admin) store sees it too.
    assert alice.conversation(mine.id).history() == [user(SECRET)]
    assert [c.id for c in alice.conversations()] == [mine.id]
    assert mine.id in [c.id for c in admin.conversations()]
    theirs = bob.create_conversation(model="m")
    assert [c.id for c in alice.conversations()] == [mine.id]
    assert {mine.id, theirs.id} <= {c.id for c in admin.iter_conversations()}


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_strings_reach_sql_as_parameters(make_store, hostile):
    owner = hostile.replace("\x00", "")  # PostgreSQL text cannot hold NUL; owners are plain ids anyway
    store = make_store(owner=owner)
    model = hostile.replace("\x00", "")
    conv = store.create_conversation(model=model, metadata={hostile: hostile}, system_instruction=hostile)
    conv.append([user(hostile)])
    fork = conv.fork(branch=hostile.replace("\x00", "") or "x")
    assert fork.history() == [user(hostile)]
    again = store.conversation(conv.id)
    assert (again.model, again.metadata, again.system_instruction) == (model, {hostile: hostile}, hostile)
    assert [c.id for c in store.conversations()] == [conv.id]
    with pytest.raises(ConversationNotFoundError):
        store.conversation(hostile)
    if "\x00" in hostile:
        with pytest.raises(CodecError, match="model"):
            store.create_conversation(model=hostile)
        with pytest.raises(ValueError, match="branch name"):
            conv.fork(branch=hostile)
    with store.engine.connect() as db:
        assert db.execute(sa.text("SELECT count(*) FROM convstore_nodes")).scalar_one() == 1


def test_purge_deletes_what_is_older_than_the_cutoff(make_store):
    store = make_store(owner="alice")
    old = store.create_conversation()
    old.append([user("old")])
    cutoff = datetime.now(timezone.utc)
    assert store.purge(older_than=timedelta(days=30)) == 0  # nothing is 30 days old
    other = make_store(owner="bob").create_conversation()
    assert store.purge(older_than=cutoff) == 1
    with pytest.raises(ConversationNotFoundError):
        store.conversation(old.id)
    assert make_store(owner="bob").conversation(other.id).id == other.id  # another owner's is kept
    with pytest.raises(ValueError, match="aware"):
        store.purge(older_than=datetime(2020, 1, 1))


def test_the_redaction_hook_runs_before_anything_is_written(make_store):
    emails = re.compile(r"[\w.]+@[\w.]+")

    def scrub(step: dict) -> dict:
        for item in step.get("content") or []:
            if item.get("type") == "text":
                item["text"] = emails.sub("[email]", item["text"])
        return step

    store = make_store(redact=scrub)
    conv = store.create_conversation()
    conv.append([user("write to ana@example.com please")])
    assert conv.history() == [user("write to [email] please")]
    with store.engine.connect() as db:
        stored = db.execute(sa.text("SELECT payload FROM convstore_nodes")).scalar_one()
    assert "ana@example.com" not in stored
    broken = make_store(redact=lambda step: {"no": "type"})
    conv = broken.create_conversation()
    with pytest.raises(CodecError):
        conv.append([user("x")])
    assert conv.history() == []


def test_sqlite_secure_delete_is_on(tmp_path):
    # A SQLite pragma: on a SQLite file only (not parametrised over the backends, so never a skip).
    with convstore.Store(f"sqlite:///{tmp_path / 'store.db'}") as plain, plain.engine.connect() as db:
        assert db.exec_driver_sql("PRAGMA secure_delete").scalar() == 1


def test_no_content_in_logs_reprs_or_errors(make_store, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy.engine", "convstore", "httpx", "alembic"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        store = make_store(owner="alice")
        conv = store.create_conversation(model="m", system_instruction=SECRET, metadata={"note": SECRET})
        call = {"type": "function_call", "id": "c1", "name": "f", "arguments": {"q": SECRET}}
        nodes = conv.append([user(SECRET), call])
        other = store.conversation(conv.id)
        other.append([user("moved")])
        errors = []
        for attempt in (
            lambda: conv.append([user(SECRET)]),  # ConflictError
            lambda: conv.append(
                [{"type": "user_input", "content": [{"type": "text", "text": 1}], "x": SECRET}]
            ),
            lambda: conv.fork(at=SECRET),
            lambda: store.conversation(SECRET),
        ):
            with pytest.raises(convstore.ConvstoreError) as raised:
                attempt()
            errors.append(raised.value)
        shown = [repr(store), repr(conv), repr(conv.info), *map(repr, nodes), repr(nodes[0].step)]
        shown.append(repr(conv.tree()))
        shown += [repr(b) for b in conv.branches()] + [str(e) for e in errors] + [repr(e) for e in errors]
        for text in shown:
            assert SECRET not in text, text
        assert SECRET not in caplog.text
        assert "parameters hidden" in caplog.text or not caplog.text
    finally:
        for name in ("sqlalchemy.engine", "convstore", "httpx", "alembic"):
            logging.getLogger(name).setLevel(logging.NOTSET)
