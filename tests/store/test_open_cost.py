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
