"""Opening a branch reads a short branch's history with its record; a deep branch's open must not walk its
history to find that it is too deep. Counted in SQLite's virtual machine steps, not timed."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from conftest import model, user

import convstore


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_opening_a_deep_branch_costs_what_opening_a_less_deep_one_does(db_url):
    engine = sa.create_engine(db_url)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0  # go on

    def connected(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_progress_handler(count, 50)

    sa.event.listen(engine, "connect", connected)
    try:
        with convstore.Store(engine) as store:
            deep, shallow = store.create_conversation(), store.create_conversation()
            # One segment each (appends continue their segment): 6,000 and 600 steps, both past the
            # prefetch's reach.
            for conv, exchanges in ((deep, 3_000), (shallow, 300)):
                for start in range(0, exchanges, 500):
                    end = min(start + 500, exchanges)
                    conv.append([s for i in range(start, end) for s in (user(f"q{i}"), model(f"a{i}"))])

            def cost(conversation_id: str) -> int:
                store.conversation(conversation_id)  # warm: the statements prepared, the pages read
                before = steps[0]
                store.conversation(conversation_id)
                return steps[0] - before

            deep_cost, shallow_cost = cost(deep.id), cost(shallow.id)
            assert deep_cost <= shallow_cost * 1.5 + 10, (deep_cost, shallow_cost)
    finally:
        engine.dispose()


def _texts(steps: list[dict[str, Any]]) -> list[str]:
    return [step["content"][0]["text"] for step in steps]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL's open is one pipeline
@pytest.mark.parametrize("prefetched", [True, False], ids=["short", "deep"])
def test_a_turn_whose_reads_straddle_another_write_builds_on_one_head(db_url, monkeypatch, prefetched):
    """On SQLite too, the turn's reads run without a transaction around them (each statement its own
    snapshot): another writer's append lands between the open's record and its history scan. The open keeps
    the record's head, a write built on it is refused by compare-and-swap, its history is one head's (the
    opened one or the new one, never a mix), and read afresh holds both exchanges, whole."""
    from convstore.store._engine import _trips  # noqa: PLC0415 -- the seam the slow fake takes
    from convstore.store._statements import LOAD_CONVERSATION  # noqa: PLC0415

    with convstore.Store(db_url) as store, convstore.Store(db_url) as other:
        conv = store.create_conversation()
        conv.append([user("one"), model("a")])
        if not prefetched:  # past the open's prefetch: the turn reads the history itself
            conv.append([s for i in range(150) for s in (user(f"q{i}"), model(f"a{i}"))])
        before = _texts(conv.history())
        original = _trips._execute  # a statement run on the driver, in the caller's thread
        fired: list[str] = []

        def slow(trip: Any, raw: Any, step: Any, bound: Any) -> Any:
            result = original(trip, raw, step, bound)
            if step.statement is LOAD_CONVERSATION and not fired:
                fired.append(conv.id)
                other.conversation(conv.id).append([user("two"), model("b")])
            return result

        monkeypatch.setattr(_trips, "_execute", slow)
        opened = store.conversation(conv.id)
        monkeypatch.setattr(_trips, "_execute", original)
        assert fired == [conv.id]
        assert opened.head_id == conv.head_id  # the record's head: the append landed after it was read
        with pytest.raises(convstore.ConflictError):
            opened.append([user("late")])
        assert _texts(opened.history()) in (before, [*before, "two", "b"])  # one head's, never a mix
        opened.refresh()
        assert _texts(opened.history()) == [*before, "two", "b"]
        assert store.check().ok
