"""record(body, reply) writes a turn only where it was asked: after the branch head the body was built on.

Every test runs on SQLite and PostgreSQL, with the sync and the async store.
"""

from __future__ import annotations

import gc
import weakref

import pytest
from conftest import model, user

import convstore
from convstore import CodecError, ConflictError
from convstore.testing import text_reply

MODEL = "gemini-3-flash-preview"


def reply(text: str = "ok") -> dict[str, object]:
    return {"id": "int-1", "status": "completed", "steps": [model(text)]}


@pytest.fixture(params=["other store", "other conversation"])
def other_writer(request, make_store, store):
    """Opens the same branch as a second writer: through another Store, or another object of this one."""

    def open_branch(conversation_id: str, branch: str = "main"):
        opener = make_store() if request.param == "other store" else store
        return opener.conversation(conversation_id, branch)

    return open_branch


@pytest.mark.parametrize("between", ["nothing", "history", "refresh", "another request"])
def test_record_refuses_a_body_built_before_another_writer_moved_the_branch(store, other_writer, between):
    conv = store.create_conversation(model=MODEL)
    conv.append([user("one"), model("first answer")])
    body = conv.request("two")
    other_writer(conv.id).append([user("someone else's turn"), model("their answer")])
    if between == "history":
        conv.history()  # reads the other writer's turn: the head this object knows moves past it
    elif between == "refresh":
        conv.refresh()
    elif between == "another request":
        conv.request("unsent")
    with pytest.raises(ConflictError):
        conv.record(body, reply("produced without seeing their turn"))
    assert [s["type"] for s in conv.history()] == ["user_input", "model_output"] * 2
    assert conv.history()[-1] == model("their answer")
    assert conv.exchanges() == []  # appends keep no exchange record, and ours was not written


def test_a_body_is_recorded_after_its_own_head_even_when_the_history_was_read_since(store):
    conv = store.create_conversation(model=MODEL)
    body = conv.request("hi")
    conv.history()
    first = conv.record(body, reply())
    assert conv.history() == [user("hi"), model("ok")]
    # The same turn recorded again (after an unknown outcome, say) is the same exchange: returned as stored.
    assert [node.id for node in conv.record(body, reply())] == [node.id for node in first]
    assert conv.history() == [user("hi"), model("ok")]
    # Another reply to that body is a turn built on an old head.
    with pytest.raises(ConflictError):
        conv.record(body, {**reply(), "id": "int-2"})


def test_a_body_carries_its_head_and_its_history_length(store):
    conv = store.create_conversation(model=MODEL)
    empty = conv.request("hi")
    assert isinstance(empty, convstore.RequestBody)
    assert isinstance(empty, dict)
    assert empty.head_id is None
    assert empty.history_length == 0
    nodes = conv.record(empty, reply())
    body = conv.request("again")
    assert (body.conversation_id, body.branch) == (conv.id, "main")
    assert body.head_id == nodes[-1].id
    assert body.history_length == 2
    assert body["input"][2:] == [user("again")]


def test_another_object_on_the_same_branch_records_the_body_and_another_branch_refuses_it(store):
    conv = store.create_conversation(model=MODEL)
    conv.append([user("one"), model("first answer")])
    body = conv.request("two")
    fork = conv.fork(branch="side")
    with pytest.raises(CodecError, match="branch"):
        fork.record(body, reply())
    same_branch = store.conversation(conv.id)
    same_branch.record(body, reply("recorded by another object"))
    assert conv.history()[-2:] == [user("two"), model("recorded by another object")]
    assert fork.history() == conv.history()[:2]


def test_a_stream_whose_branch_moved_while_it_ran_is_not_recorded(store, client, emulator, other_writer):
    emulator.script(text_reply("an answer that did not see their turn"))
    conv = store.create_conversation(model=MODEL)
    turn = conv.stream("hi", client=client)

    def consume() -> None:
        for index, _ in enumerate(turn):
            if index == 2:
                other_writer(conv.id).append([user("someone else"), model("their answer")])
                conv.history()  # mid-stream: this object now knows the moved head

    with pytest.raises(ConflictError):
        consume()
    assert turn.nodes is None
    assert conv.history() == [user("someone else"), model("their answer")]


def test_the_conversation_keeps_no_body_alive(store):
    conv = store.create_conversation(model=MODEL)
    conv.append([user("one"), model("first answer")])
    kept = conv.request("two")
    dropped = conv.request("three")
    freed = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert freed() is None
    conv.record(kept, reply())
    assert conv.history()[-2:] == [user("two"), model("ok")]


def test_request_with_store_builds_the_chained_body_send_would(store, client, emulator):
    conv = store.create_conversation(model=MODEL)
    first_body = conv.request("I have 2 dogs.", store=True)
    assert first_body["store"] is True
    assert "previous_interaction_id" not in first_body  # nothing stored to chain on yet: a replay
    first = client.create(first_body)
    conv.record(first_body, first)
    body = conv.request("How many paws?", store=True)
    assert body["previous_interaction_id"] == first.id
    assert body["input"] == [user("How many paws?")]
    assert body.history_length == 0
    conv.record(body, client.create(body))
    assert emulator.requests[-1].body == body  # the emulator kept the first turn and accepted the chain
    assert [s["type"] for s in conv.history()] == ["user_input", "thought", "model_output"] * 2
    assert [e.stored for e in conv.exchanges()] == [True, True]
    # A local append breaks the chain: the next stateful body replays.
    conv.append([user("a note kept only here"), model("noted")])
    replayed = conv.request("And now?", store=True)
    assert "previous_interaction_id" not in replayed
    assert replayed["input"] == [*conv.history(), user("And now?")]


def test_a_generation_config_override_changes_only_the_keys_it_names(store):
    conv = store.create_conversation(
        model=MODEL, generation_config={"thinking_level": "low", "temperature": 1.0}, system_instruction="Hi."
    )
    assert conv.request("a", generation_config={"temperature": 0.2})["generation_config"] == {
        "thinking_level": "low",
        "temperature": 0.2,
    }
    assert conv.request("a", generation_config={"temperature": None, "seed": 7})["generation_config"] == {
        "thinking_level": "low",
        "seed": 7,
    }
    assert "generation_config" not in conv.request("a", generation_config=None)
    emptied = conv.request("a", generation_config={"thinking_level": None, "temperature": None})
    assert "generation_config" not in emptied
    assert conv.generation_config == {"thinking_level": "low", "temperature": 1.0}  # the conversation's own
    # Settings that are not mappings are replaced whole, and None removes them.
    body = conv.request("a", system_instruction=None, model="gemini-3.1-pro-preview")
    assert "system_instruction" not in body
    assert body["model"] == "gemini-3.1-pro-preview"
    # A mapping with no conversation setting beneath it is sent without its None keys.
    assert conv.request("a", labels={"team": "x", "gone": None})["labels"] == {"team": "x"}


def test_send_sends_the_merged_generation_config(store, client, emulator):
    conv = store.create_conversation(model=MODEL, generation_config={"thinking_level": "low"})
    conv.send("hi", client=client, generation_config={"temperature": 0.2})
    assert emulator.requests[-1].body["generation_config"] == {"thinking_level": "low", "temperature": 0.2}
