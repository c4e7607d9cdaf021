"""Unknown outcomes: a connection lost while an append commits raises ``OutcomeUnknownError`` (not a plain
database error), and the same exchange sent again, with the same id, is stored exactly once: whether the
lost commit had gone through or not.

The commit is interrupted for real: an event hook at COMMIT terminates the store's backend from another
connection (``pg_terminate_backend``), either after committing the transaction itself (the commit went
through, its answer was lost) or before (it never happened).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import convstore
from convstore.errors import InvalidExchangeError, OutcomeUnknownError
from tests.conftest import model, user
from tests.cutter import CommitCutter


def texts(conv: Any) -> list[str]:
    return [step["content"][0]["text"] for step in conv.history()]


@pytest.fixture
def pg_store(db_url: str) -> Iterator[Any]:
    if db_url.startswith("sqlite"):
        pytest.skip("a lost COMMIT needs a server")
    with convstore.Store(db_url) as store:
        yield store


def lose_commit(
    engine: sa.Engine, admin: sa.Engine, *, committed: bool
) -> tuple[list[int], Callable[[sa.Connection], None]]:
    """Arm a hook: at the next COMMIT, commit first (``committed``) and open a new transaction, then have
    another connection terminate this one's backend, so the COMMIT the store sends fails."""
    killed: list[int] = []

    def at_commit(conn: sa.Connection) -> None:
        if killed:
            return
        raw: Any = conn.connection.dbapi_connection
        if committed:
            cursor = raw.cursor()
            cursor.execute("COMMIT")
            cursor.execute("SELECT 1")  # a transaction again, so the store's COMMIT goes to the server
            cursor.close()
        pid = raw.info.backend_pid
        with admin.begin() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({pid}, 5000)")
        killed.append(pid)

    sa.event.listen(engine, "commit", at_commit)
    return killed, at_commit


def watch(engine: sa.Engine) -> Callable[..., None]:
    """A statement listener, as OpenTelemetry's instrumentation installs: the store's statements then go
    through SQLAlchemy, in a transaction it begins and commits (not a pipeline carrying its commit)."""

    def seen(*_args: Any) -> None:
        return None

    sa.event.listen(engine, "before_cursor_execute", seen)
    return seen


@pytest.mark.parametrize("committed", [True, False], ids=["went-through", "never-happened"])
def test_a_lost_commit_is_an_unknown_outcome_and_the_retry_stores_once(pg_store, db_url, committed):
    seen = watch(pg_store.engine)  # the commit event below fires for SQLAlchemy's COMMIT only
    admin = sa.create_engine(db_url)
    conv = pg_store.create_conversation()
    conv.append([user("one"), model("a")])
    exchange_id = str(uuid.uuid4())
    killed, hook = lose_commit(pg_store.engine, admin, committed=committed)
    with pytest.raises(OutcomeUnknownError) as raised:
        conv.append([user("two"), model("b")], exchange_id=exchange_id)
    assert killed
    sa.event.remove(pg_store.engine, "commit", hook)
    sa.event.remove(pg_store.engine, "before_cursor_execute", seen)
    assert "may have been committed" in str(raised.value)
    assert "two" not in str(raised.value)
    assert texts(conv) == (["one", "a", "two", "b"] if committed else ["one", "a"])
    nodes = conv.append([user("two"), model("b")], exchange_id=exchange_id)
    assert [node.exchange_id for node in nodes] == [exchange_id, exchange_id]
    assert texts(conv) == ["one", "a", "two", "b"]
    assert conv.head_id == nodes[-1].id
    assert len(conv.tree().nodes) == 4
    assert pg_store.check().ok
    admin.dispose()


@pytest.mark.parametrize("watched", [False, True], ids=["pipeline", "sqlalchemy"])
@pytest.mark.parametrize("when", ["after", "before"], ids=["went-through", "never-happened"])
def test_a_connection_cut_at_the_commit_is_an_unknown_outcome(db_url, when, watched):
    """The connection cut on the wire at the append's COMMIT (a network fault, a failover), whether the
    append's statements go with their COMMIT in one pipeline or through SQLAlchemy's transaction: either
    way ``OutcomeUnknownError``, the store as the server left it, and the same exchange sent again stored
    once."""
    if db_url.startswith("sqlite"):
        pytest.skip("a lost COMMIT needs a server")
    cutter = CommitCutter(db_url)
    try:
        with convstore.Store(cutter.url(db_url)) as store:
            if watched:
                watch(store.engine)
            conv = store.create_conversation()
            conv.append([user("one"), model("a")])
            exchange_id = str(uuid.uuid4())
            cutter.arm(when)
            with pytest.raises(OutcomeUnknownError) as raised:
                conv.append([user("two"), model("b")], exchange_id=exchange_id)
            assert cutter.cut == 1
            assert "two" not in str(raised.value)
            reopened = store.conversation(conv.id)
            assert texts(reopened) == (["one", "a", "two", "b"] if when == "after" else ["one", "a"])
            nodes = reopened.append([user("two"), model("b")], exchange_id=exchange_id)
            assert [node.exchange_id for node in nodes] == [exchange_id, exchange_id]
            assert texts(store.conversation(conv.id)) == ["one", "a", "two", "b"]
            assert len(conv.tree().nodes) == 4
            assert store.check().ok
    finally:
        cutter.close()


@pytest.mark.parametrize("watched", [False, True], ids=["pipeline", "sqlalchemy"])
def test_a_commit_the_server_refuses_is_an_unknown_outcome(db_url, watched):
    """The ``COMMIT`` itself fails, the connection intact (here a deferred constraint trigger; on Citus, a
    worker lost while the coordinator commits, after it may have committed its part): the outcome is
    unknown on both paths, never a failure that says nothing was written."""
    if not db_url.startswith("postgresql") or "citus" in db_url:
        pytest.skip("a deferred constraint trigger on a plain PostgreSQL server")
    with convstore.Store(db_url) as store:
        if watched:
            watch(store.engine)
        conv = store.create_conversation()
        conv.append([user("one"), model("a")])
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$"
            )
            conn.exec_driver_sql(
                "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON convstore_nodes "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()"
            )
        exchange_id = str(uuid.uuid4())
        with pytest.raises(OutcomeUnknownError) as raised:
            conv.append([user("two"), model("b")], exchange_id=exchange_id)
        assert "two" not in str(raised.value)
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse_at_commit ON convstore_nodes")
        assert texts(store.conversation(conv.id)) == ["one", "a"]  # here the server did roll it back
        nodes = conv.append([user("two"), model("b")], exchange_id=exchange_id)
        assert [node.exchange_id for node in nodes] == [exchange_id, exchange_id]
        assert texts(store.conversation(conv.id)) == ["one", "a", "two", "b"]
        assert store.check().ok


def test_an_exchange_sent_again_is_returned_as_stored(store):
    conv = store.create_conversation()
    exchange_id = str(uuid.uuid4())
    first = conv.append([user("hello"), model("hi")], exchange_id=exchange_id)
    again = store.conversation(conv.id).append([user("hello"), model("hi")], exchange_id=exchange_id)
    assert [node.id for node in again] == [node.id for node in first]
    assert texts(conv) == ["hello", "hi"]
    with pytest.raises(InvalidExchangeError):
        conv.append([user("x")], exchange_id="not a uuid")


def test_a_recorded_turn_recorded_again_is_stored_once(db_url):
    """``record`` chooses the exchange id before it writes (from the head the body was built on and the
    interaction's id): the same turn recorded again after an unknown outcome is the same exchange."""
    with convstore.Store(db_url) as store:
        conv = store.create_conversation(model="m")
        body = conv.request("hello")
        reply = {
            "id": "interaction-1",
            "status": "completed",
            "steps": [{"type": "model_output", "content": [{"type": "text", "text": "hi"}]}],
        }
        first = conv.record(body, reply)
        again = conv.record(body, reply)
        assert [node.id for node in again] == [node.id for node in first]
        assert texts(store.conversation(conv.id)) == ["hello", "hi"]
