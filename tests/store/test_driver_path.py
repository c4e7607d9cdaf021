"""The store's statements go to the driver directly (``_engine._fastpath``): compiled once, bound and read
without SQLAlchemy's execution path. Whatever watches the engine's statements still sees every one of them
(the path steps aside), the results are the same either way, a statement SQLAlchemy must expand at
execution goes through SQLAlchemy, and a connection lost under the short path is not handed out again."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from conftest import model, user

import convstore
from convstore.errors import ConvstoreError
from convstore.store import _statements as st
from convstore.store._engine import Exec, _fastpath, compile_once


def _engine(store: Any) -> sa.Engine:
    """The sync engine under a store of either flavour (the async store's own, not the tests' inspector)."""
    target = getattr(store, "_target", store)
    engine = target.engine
    return engine if isinstance(engine, sa.Engine) else engine.sync_engine


def _workload(store: Any, tag: str) -> dict[str, Any]:
    """A conversation's life through the public API; what it gives back, without ids and times."""
    conv = store.create_conversation(model="m", metadata={"tag": tag})
    conv.append([user(f"{tag} one"), model("a")])
    conv.append([user(f"{tag} two"), model("b")])
    first = conv.nodes()[0]
    side = conv.fork(at=first.id, branch="side")
    side.append([user(f"{tag} side"), model("c")])
    edited = conv.edit(conv.nodes()[2].id, branch="edited")
    edited.append([user(f"{tag} edited"), model("d")])
    reopened = store.conversation(conv.id)
    found = [c.id for c in store.iter_conversations()]
    result = {
        "history": reopened.history(),
        "side": store.conversation(conv.id, branch="side").history(),
        "edited": edited.history(),
        "branches": sorted(b.name for b in reopened.branches()),
        "steps": len(reopened.nodes()),
        "listed": conv.id in found,
        "info": (reopened.info.model, reopened.info.metadata),
    }
    store.delete_conversation(conv.id)
    with pytest.raises(convstore.ConversationNotFoundError):
        store.conversation(conv.id)
    return result


def _scrub(value: Any, tag: str) -> Any:
    return repr(value).replace(tag, "TAG")


def test_a_statement_listener_sees_every_statement_and_the_results_are_the_same(store):
    engine = _engine(store)
    before = _fastpath._prepared.cache_info().hits
    direct = _workload(store, "direct")
    assert _fastpath._prepared.cache_info().hits > before  # the short path ran

    seen: list[str] = []

    def watch(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", watch)
    try:
        watched = _workload(store, "watched")
    finally:
        sa.event.remove(engine, "before_cursor_execute", watch)
    assert _scrub(direct, "direct") == _scrub(watched, "watched")
    # Every kind of statement the workload runs was seen (on PostgreSQL a batch's pipeline is not: see
    # Batch), the node inserts among them.
    assert any(s.startswith("SELECT") for s in seen)
    assert any("DELETE FROM convstore_conversations" in s for s in seen)
    if engine.dialect.name == "sqlite":
        assert any(s.startswith("INSERT INTO convstore_nodes") for s in seen)
        assert any(s.startswith("BEGIN IMMEDIATE") for s in seen)


_ANY_OF = sa.select(sa.literal_column("1")).where(
    sa.literal_column("1").in_(sa.bindparam("values", expanding=True))
)
compile_once({"ANY_OF": _ANY_OF})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_statement_expanded_at_execution_goes_through_sqlalchemy(db_url):
    with convstore.Store(db_url) as store, store.engine.connect() as conn:
        prepared, _many = _fastpath._compiled_for(conn, Exec(_ANY_OF, {"values": [1, 2]}))
        assert not prepared.direct
        assert _fastpath.execute(conn, Exec(_ANY_OF, {"values": [1, 2]})).all() == [(1,)]
        assert _fastpath.execute(conn, Exec(_ANY_OF, {"values": [2, 3]})).all() == []
        # A plain registered statement takes the short way, and reads like SQLAlchemy's rows.
        conv = store.for_owner("alice").create_conversation()
        params = {"conversation_id": conv.id, "branch": "main", "owner": "alice"}
        short = _fastpath.execute(conn, Exec(st.LOAD_CONVERSATION, params))
        assert isinstance(short, _fastpath.DriverResult)
        row = short.one()
        long = conn.execute(st.LOAD_CONVERSATION, params).one()
        assert tuple(row) == tuple(long)
        assert dict(row._mapping) == dict(long._mapping)
        assert row.id == long.id == conv.id
        assert row.created_at == long.created_at
        assert row.head_id == long.head_id is None


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_connection_killed_under_the_short_path_is_not_handed_out_again(db_url, request):
    """The store's one pooled connection is terminated by the server between two reads: the read that
    finds it dead fails with a typed error (or succeeds, if the pool noticed first), and the next one
    gets a new connection."""
    admin = request.getfixturevalue("_postgres_admin")
    engine = sa.create_engine(db_url, pool_size=1, max_overflow=0)
    pids: list[int] = []

    def connected(dbapi_connection: Any, _record: Any) -> None:
        pids.append(dbapi_connection.info.backend_pid)

    sa.event.listen(engine, "connect", connected)
    try:
        with convstore.Store(engine) as store:
            conv = store.create_conversation()
            conv.append([user("one"), model("a")])
            for _ in range(3):
                killed = pids[-1]
                with admin.begin() as conn:
                    conn.exec_driver_sql(f"SELECT pg_terminate_backend({killed})")
                failed: ConvstoreError | None = None
                try:
                    store.conversation(conv.id).history()
                except ConvstoreError as error:
                    failed = error
                assert failed is None or "one" not in str(failed)
                assert store.conversation(conv.id).history() == [user("one"), model("a")]
                assert pids[-1] != killed
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("flavour", ["async"], indirect=True)
def test_an_aiosqlite_without_its_thread_hook_goes_the_adapters_way(store, monkeypatch):
    """The one-trip statement relies on aiosqlite's ``_execute``; without it every statement still runs,
    through SQLAlchemy's adapter, with the same results."""
    monkeypatch.setattr(_fastpath, "_one_hop", lambda _driver: False)
    called: list[object] = []
    monkeypatch.setattr(_fastpath, "_aiosqlite", lambda *args: called.append(args))
    assert _scrub(_workload(store, "adapter"), "adapter") == _scrub(_workload(store, "other"), "other")
    assert not called
