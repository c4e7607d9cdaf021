"""A turn is checked once, at the door, with the store's limits, before anything is sent; its new steps are
bounded once and counted once, and its reply read once (``convstore.conversation._turn.Turn``)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest
from conftest import completed_reply, model, user

import convstore
from convstore import LimitExceededError, Limits
from convstore.budget import HeuristicCounter
from convstore.conversation import _request
from convstore.model._interaction import Interaction
from convstore.store import _prepare
from convstore.store._rows import EMPTY_HEAD

MODEL = "gemini-3-flash-preview"
SMALL = Limits(max_step_bytes=1000)


@pytest.mark.parametrize("call", ["send", "stream", "request"])
def test_an_oversized_turn_is_refused_before_the_request_is_sent(make_store, client, emulator, call):
    store = make_store(limits=SMALL)
    conv = store.create_conversation(model=MODEL)
    calls = {
        "send": lambda: conv.send("x" * 5000, client=client),
        "stream": lambda: list(conv.stream("x" * 5000, client=client)),
        "request": lambda: conv.request("x" * 5000),
    }
    with pytest.raises(LimitExceededError) as raised:
        calls[call]()
    assert raised.value.limit == "max_step_bytes"
    assert emulator.requests == []  # nothing left the process: the API was not paid for a refused turn
    assert conv.nodes() == []
    assert conv.exchanges() == []


def test_oversized_content_items_and_steps_are_refused_at_the_door(make_store, client, emulator):
    conv = make_store(limits=SMALL).create_conversation(model=MODEL)
    item = {"type": "text", "text": "x" * 5000}
    step = {"type": "user_input", "content": [item]}
    for given in (item, [item], step, [step]):
        with pytest.raises(LimitExceededError):
            conv.send(given, client=client)
    assert emulator.requests == []
    assert conv.nodes() == []


def test_a_turn_within_the_limits_is_sent_and_recorded(make_store, client, emulator):
    conv = make_store(limits=SMALL).create_conversation(model=MODEL)
    conv.send("x" * 500, client=client)
    assert len(emulator.requests) == 1
    assert conv.nodes()[0].type == "user_input"


@pytest.fixture
def bounded(monkeypatch):
    """The paths ``check_value`` bounds a step at, each time it does (not the reply's whole-body check, nor
    the exchange's usage), and those of the steps of text the codec bounds without it (``_is_text_step``)."""
    seen: Counter[str] = Counter()
    original = _prepare.check_value
    normalize = convstore.codec.normalize_step

    def counting(value: Any, **kwargs: Any) -> int:
        path = kwargs.get("path", "")
        if path.startswith("steps["):
            seen[path] += 1
        return original(value, **kwargs)

    def normalizing(value: Any, *, path: str = "", **kwargs: Any) -> Any:
        if path.startswith("steps[") and convstore.codec._is_text_step(value, kwargs["limits"]):
            seen[path] += 1
        return normalize(value, path=path, **kwargs)

    for module in (convstore.codec, _request, _prepare):
        monkeypatch.setattr(module, "check_value", counting)
    monkeypatch.setattr(convstore.codec, "normalize_step", normalizing)
    return seen


def test_each_step_of_a_turn_is_bounded_once(store, client, bounded):
    conv = store.create_conversation(model=MODEL)
    conv.send("hello", client=client)
    steps = len(conv.nodes())
    assert steps >= 2
    assert sorted(bounded) == [f"steps[{i}]" for i in range(steps)]
    assert set(bounded.values()) == {1}, bounded


def test_each_step_of_an_append_is_bounded_once(store, bounded):
    conv = store.create_conversation(model=MODEL)
    conv.append([user("hi"), model("done")])
    assert bounded == {"steps[0]": 1, "steps[1]": 1}


class CountingCounter:
    """A ``TokenCounter`` that counts how often a step's tokens are counted."""

    def __init__(self) -> None:
        self._inner = HeuristicCounter()
        self.steps = 0

    def count_step(self, step: Any) -> int:
        self.steps += 1
        return self._inner.count_step(step)

    def count_text(self, text: str) -> int:
        return self._inner.count_text(text)


def test_the_tokens_of_each_step_are_counted_once(make_store, client):
    counter = CountingCounter()
    conv = make_store(counter=counter).create_conversation(model=MODEL)
    conv.send("hello", client=client)
    assert counter.steps == len(conv.nodes())
    (exchange,) = conv.exchanges()
    assert exchange.estimated_input_tokens == conv.nodes()[0].token_count  # no settings, no history


def test_a_reply_is_read_once(store, monkeypatch):
    parsed = []
    original = Interaction.from_json.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Interaction], d: Any, **kwargs: Any) -> Interaction:
        parsed.append(d.get("id"))
        return original(cls, d, **kwargs)

    monkeypatch.setattr(Interaction, "from_json", classmethod(counting))
    conv = store.create_conversation(model=MODEL)
    conv.record(conv.request("hi"), completed_reply())
    assert parsed == ["v1_reply"]


def test_the_turn_object_does_no_io():
    """A ``Turn`` alone: the body from a given history, then the rows from a given reply."""
    from convstore.conversation import _turn  # noqa: PLC0415 -- new with the turn object

    info = convstore.ConversationInfo(
        id="c",
        created_at=datetime.now(timezone.utc),
        model=MODEL,
        system_instruction=None,
        generation_config=None,
        tools=None,
        metadata=None,
    )
    turn = _turn.Turn(
        "hi",
        settings=info,
        overrides={},
        store=False,
        budget=None,
        limits=SMALL,
        counter=HeuristicCounter(),
        redact=None,
    )
    body = turn.replayed(
        [b'{"type":"user_input","content":[]}'],
        history_length=1,
        history_tokens=3,
        spliced=False,
        conversation_id="c",
        branch="main",
        head=EMPTY_HEAD,
    )
    assert body["input"][1] == {"type": "user_input", "content": [{"type": "text", "text": "hi"}]}
    assert body.estimated_input_tokens == turn.fixed_tokens + 3
    rows, exchange = turn.exchange(completed_reply(), stored=False, model=MODEL, estimated_input_tokens=None)
    assert [kind for kind, _, _ in rows] == ["user_input", "model_output"]
    assert exchange["interaction_id"] == "v1_reply"
    assert turn.interaction is not None
    with pytest.raises(LimitExceededError) as raised:
        turn.exchange(completed_reply("y" * 5000), stored=False, model=MODEL, estimated_input_tokens=None)
    assert raised.value.path == "steps[1]"
