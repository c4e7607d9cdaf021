"""The cold turn's cost as counts (never as time): a branch opened with its history, one write; and the
guarantees the shorter path keeps (the compare-and-swap, an exchange stored once, forks, long branches)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from conftest import user

import convstore
from convstore import ConflictError
from convstore.store import _ops
from convstore.testing import text_reply

MODEL = "gemini-3-flash-preview"


def reply(text: str) -> dict:
    return {"type": "model_output", "content": [{"type": "text", "text": text}]}


def types(conv) -> list[str]:
    return [step["type"] for step in conv.history()]


@pytest.fixture(autouse=True)
def opened_lasts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The history read with the open is built on for an hour here, not a second: a loaded test machine
    must not turn the counts below into a race with the clock."""
    from convstore.store._async import store as async_store  # noqa: PLC0415
    from convstore.store._sync import store as sync_store  # noqa: PLC0415

    for module in (async_store, sync_store):
        monkeypatch.setattr(module, "OPENED_FRESH_SECONDS", 3600.0)


@pytest.fixture
def sync_client(emulator) -> Iterator[convstore.InteractionsClient]:
    with httpx.Client(transport=emulator.transport()) as http:
        yield convstore.InteractionsClient("test-key", http_client=http, sleep=lambda _: None)


def test_a_cold_turn_is_one_read_and_one_write(db_url, emulator, sync_client):
    """Two connection checkouts (the open, which reads the history too, and the write), and on SQLite one
    transaction, the write's (the open's statements each run alone), with the search index on."""
    with convstore.Store(db_url) as store:
        conv = store.create_conversation(model=MODEL)
        conv.append([user("hello"), reply("hi")])
        emulator.script(text_reply("Fine."))
        counts = {"begin": 0, "commit": 0, "checkout": 0}
        listeners = []
        for target, name in (
            (store.engine, "begin"),
            (store.engine, "commit"),
            (store.engine.pool, "checkout"),
        ):

            def on_event(*_args: object, name: str = name) -> None:
                counts[name] += 1

            sa.event.listen(target, name, on_event)
            listeners.append((target, name, on_event))
        try:
            store.conversation(conv.id).send("How are you?", client=sync_client)
        finally:
            for target, name, on_event in listeners:
                sa.event.remove(target, name, on_event)
        assert counts["checkout"] == 2
        if store.engine.dialect.name == "sqlite":
            assert (counts["begin"], counts["commit"]) == (1, 1)
        assert types(store.conversation(conv.id)) == [
            "user_input",
            "model_output",
            "user_input",
            "thought",  # the emulator's reply: a thought, then the text
            "model_output",
        ]
        assert store.search("Fine").hits  # the index rows are written with the turn


def test_a_turn_on_a_branch_that_moved_since_it_was_opened_is_refused(store, client, emulator):
    """The history read when the branch was opened is what the turn builds on: if another writer moved the
    branch since, the compare-and-swap refuses the turn and nothing is written."""
    conv = store.create_conversation(model=MODEL)
    conv.append([user("one"), reply("1")])
    opened = store.conversation(conv.id)
    store.conversation(conv.id).append([user("two"), reply("2")])
    emulator.script(text_reply("late"), text_reply("three"))
    with pytest.raises(ConflictError):
        opened.send("three?", client=client)
    assert types(store.conversation(conv.id)) == ["user_input", "model_output"] * 2
    opened.refresh()
    opened.send("three?", client=client)
    assert len(store.conversation(conv.id).history()) == 7  # + user, thought, text


def test_an_object_kept_open_past_the_bound_reads_the_branch_afresh(store, client, emulator, monkeypatch):
    """Past ``OPENED_FRESH_SECONDS`` the open's history is not built on: a turn on an object kept open a
    while sees what another writer added meanwhile, and goes through."""
    from convstore.store._async import store as async_store  # noqa: PLC0415
    from convstore.store._sync import store as sync_store  # noqa: PLC0415

    for module in (async_store, sync_store):
        monkeypatch.setattr(module, "OPENED_FRESH_SECONDS", 0.0)
    conv = store.create_conversation(model=MODEL)
    conv.append([user("one"), reply("1")])
    opened = store.conversation(conv.id)
    store.conversation(conv.id).append([user("two"), reply("2")])
    emulator.script(text_reply("three"))
    opened.send("three?", client=client)
    assert types(store.conversation(conv.id)) == ["user_input", "model_output"] * 2 + [
        "user_input",
        "thought",
        "model_output",
    ]
    assert emulator.requests[-1].body["input"][2] == user("two")


def test_an_exchange_sent_again_is_stored_once(store):
    conv = store.create_conversation(model=MODEL)
    conv.append([user("one"), reply("1")])
    exchange_id = str(uuid.uuid4())
    first = store.conversation(conv.id).append([user("two"), reply("2")], exchange_id=exchange_id)
    again = store.conversation(conv.id).append([user("two"), reply("2")], exchange_id=exchange_id)
    assert [n.id for n in again] == [n.id for n in first]
    assert len(store.conversation(conv.id).history()) == 4


def test_a_turn_after_a_fork_point_starts_a_segment_of_its_own(store, client, emulator):
    """A branch whose head something follows already (the guess that the head is its segment's last node
    is wrong): the turn is written again statement by statement, and both branches read whole."""
    conv = store.create_conversation(model=MODEL)
    conv.append([user("one"), reply("1")])
    conv.append([user("two"), reply("2")])
    side = conv.fork(at=store.conversation(conv.id).nodes()[1].id, branch="side")
    emulator.script(text_reply("side reply"))
    store.conversation(conv.id, "side").send("on the side", client=client)
    assert len(store.conversation(conv.id, "side").history()) == 5
    assert len(store.conversation(conv.id).history()) == 4
    assert side.branch == "side"
    assert not store.check().problems


def test_a_branch_longer_than_the_prefetch_is_read_by_the_turn(store, client, emulator, monkeypatch):
    """Opening a branch of ``prefetch`` steps or more reads its record only; the turn reads the history."""
    monkeypatch.setitem(_ops.open_branch.__kwdefaults__, "prefetch", 3)
    conv = store.create_conversation(model=MODEL)
    for i in range(3):
        conv.append([user(f"q{i}"), reply(f"a{i}")])
    emulator.script(text_reply("done"))
    store.conversation(conv.id).send("next", client=client)
    assert len(store.conversation(conv.id).history()) == 9
