"""On SQLite an operation's whole transaction is driven on the ``sqlite3`` connection itself
(``_engine._trips``): ``AsyncStore`` runs it in one trip to aiosqlite's thread (``BEGIN``, the statements, the
blocking calls and the ``COMMIT`` there, the event loop woken once), ``Store`` in the caller's thread without
SQLAlchemy's transaction around it. What the store promised before still holds: a write is whole or absent,
a statement only SQLAlchemy can run joins the same transaction, a refused ``COMMIT`` writes nothing and holds
no lock, a cancelled operation rolls back and gives its connection back clean, the caller's context reaches
the calls, and whoever listens to the engine's transactions still sees them."""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa
from conftest import model, user
from sqlalchemy.ext.asyncio import create_async_engine

import convstore
from convstore.errors import DatabaseError
from convstore.store._engine import (
    Call,
    Exec,
    adopt_async_engine,
    compile_once,
    make_async_engine,
    make_engine,
    run,
    run_async,
)

_probe = sa.table("trip_probe", sa.column("id", sa.Integer), sa.column("parent", sa.Integer))
INSERT_PROBE = sa.insert(_probe)
SELECT_PROBES = sa.select(_probe.c.id).where(_probe.c.id.in_(sa.bindparam("ids", expanding=True)))
compile_once(globals())  # as the store's modules do: INSERT_PROBE goes to the driver; SELECT_PROBES cannot

_CALLER = contextvars.ContextVar[str]("caller")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A SQLite file with the store's schema and a probe table whose foreign key is checked at commit."""
    file = tmp_path / "trips.db"
    with convstore.Store(f"sqlite:///{file}"):
        pass
    conn = sqlite3.connect(file)
    conn.executescript(
        "CREATE TABLE trip_parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE trip_probe (id INTEGER PRIMARY KEY, parent INTEGER"
        " REFERENCES trip_parent (id) DEFERRABLE INITIALLY DEFERRED);"
        "INSERT INTO trip_parent VALUES (1);"
    )
    conn.close()
    return file


def _probes(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM trip_probe ORDER BY id")]
    finally:
        conn.close()


class _Trips:
    """Counts the functions sent to aiosqlite's thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = aiosqlite.Connection._execute

        async def counted(connection: Any, function: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await original(connection, function, *args, **kwargs)

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)


def test_an_async_turn_takes_one_trip_to_the_driver_thread_for_each_operation(tmp_path, monkeypatch):
    trips = _Trips(monkeypatch)

    async def main() -> list[Any]:
        async with convstore.AsyncStore(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}") as store:
            conv = await store.create_conversation()
            await conv.append([user("one"), model("a")])
            trips.count = 0
            await conv.append([user("two"), model("b")])
            appended = trips.count
            trips.count = 0
            reopened = await store.conversation(conv.id)
            opened = trips.count
            return [appended, opened, await reopened.history()]

    appended, opened, history = asyncio.run(main())
    assert (appended, opened) == (1, 1)  # nine and three before: BEGIN's three, one a statement, the reset
    assert history == [user("one"), model("a"), user("two"), model("b")]


def _with_fallback(fail: bool) -> Any:
    """A write whose second statement only SQLAlchemy can run (an expanding ``IN``), between two the
    driver runs: it must see the first, and the third must land in the same transaction."""
    yield Exec(INSERT_PROBE, {"id": 1, "parent": 1})
    found = yield Exec(SELECT_PROBES, {"ids": [1, 2]})
    seen = [row.id for row in found]
    yield Exec(INSERT_PROBE, {"id": 2, "parent": 1})
    if fail:
        raise RuntimeError("refused after the third statement")
    return seen


def _run_op(path: Path, flavour: str, op: Any) -> Any:
    """``op`` as a write on a store's engine of ``flavour`` (``Store``'s or ``AsyncStore``'s) on ``path``."""
    if flavour == "sync":
        engine = make_engine(f"sqlite:///{path}", busy_timeout=0.5)
        try:
            return run(engine, op, write=True)
        finally:
            engine.dispose()

    async def main() -> Any:
        engine = make_async_engine(f"sqlite+aiosqlite:///{path}", busy_timeout=0.5)
        try:
            return await run_async(engine, op, write=True)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _no_lock_left(path: Path) -> None:
    other = sqlite3.connect(path, timeout=0.5)
    try:
        other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if a transaction was left open
        other.execute("ROLLBACK")
    finally:
        other.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("fail", [False, True], ids=["committed", "rolled-back"])
def test_a_statement_only_sqlalchemy_runs_joins_the_trips_transaction(path, fail, flavour):
    if fail:
        with pytest.raises(RuntimeError, match="refused"):
            _run_op(path, flavour, _with_fallback(fail))
        assert _probes(path) == []  # the statements before and after SQLAlchemy's, all rolled back
    else:
        assert _run_op(path, flavour, _with_fallback(fail)) == [1]
        assert _probes(path) == [1, 2]
    _no_lock_left(path)


def _orphan() -> Any:
    yield Exec(INSERT_PROBE, {"id": 7, "parent": 99})  # accepted now, refused by the COMMIT


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_commit_sqlite_refuses_writes_nothing_and_leaves_no_transaction(path, flavour):
    """The ``COMMIT`` fails (a deferred foreign key). SQLite's commit is local: nothing was written, and
    the error says what failed, as on the sync path. SQLite keeps the transaction open after such a
    failure: it must be rolled back before the connection goes back to the pool, or it would hold the
    write lock for whoever takes the connection next."""
    with pytest.raises(DatabaseError, match="FOREIGN KEY"):
        _run_op(path, flavour, _orphan())
    _no_lock_left(path)
    _run_op(path, flavour, iter_insert(8))
    assert _probes(path) == [8]


def iter_insert(probe: int) -> Any:
    yield Exec(INSERT_PROBE, {"id": probe, "parent": 1})


def test_a_blocking_call_in_a_trip_sees_the_callers_context(path):
    def read() -> str:
        return _CALLER.get("unset")

    def op() -> Any:
        value = yield Call(read)
        yield Exec(INSERT_PROBE, {"id": 3, "parent": 1})
        return value

    async def main() -> str:
        _CALLER.set("the caller's")
        engine = make_async_engine(f"sqlite+aiosqlite:///{path}")
        try:
            return await run_async(engine, op(), write=True)
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == "the caller's"
    assert _probes(path) == [3]


def test_a_trip_cancelled_during_its_call_rolls_back_and_returns_its_connection(path):
    entered, release = threading.Event(), threading.Event()

    def wait() -> None:
        entered.set()
        release.wait(10)

    def op() -> Any:
        yield Exec(INSERT_PROBE, {"id": 4, "parent": 1})
        yield Call(wait)
        yield Exec(INSERT_PROBE, {"id": 5, "parent": 1})

    async def main() -> None:
        engine = make_async_engine(f"sqlite+aiosqlite:///{path}", busy_timeout=0.5)
        try:
            task = asyncio.ensure_future(run_async(engine, op(), write=True))
            await asyncio.to_thread(entered.wait, 10)
            task.cancel()
            await asyncio.sleep(0.05)
            assert not task.done()  # the trip is not interrupted: it finishes its call first
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            await run_async(engine, iter_insert(6), write=True)  # the connection came back without a lock
        finally:
            await engine.dispose()

    asyncio.run(main())
    assert _probes(path) == [6]


@pytest.mark.parametrize("made", [True, False], ids=["made", "adopted"])
def test_a_connection_back_in_the_pool_is_rolled_back_only_if_a_transaction_is_open(path, monkeypatch, made):
    """The rollback of a connection going back to the pool (``_rollback_only_if_begun``): a clean one costs
    no trip to aiosqlite's thread, one left in a transaction is still rolled back; on an engine convstore
    made and on a user's."""
    trips = _Trips(monkeypatch)

    async def main() -> None:
        url = f"sqlite+aiosqlite:///{path}"
        if made:
            engine = make_async_engine(url, busy_timeout=0.5)
        else:
            engine = adopt_async_engine(create_async_engine(url, pool_size=2), busy_timeout=0.5)
        try:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
                await conn.commit()
                trips.count = 0
            assert trips.count == 0
            async with engine.connect() as conn:
                raw: Any = (await conn.get_raw_connection()).driver_connection
                await raw.execute("BEGIN IMMEDIATE")
                await raw.execute("INSERT INTO trip_probe VALUES (9, 1)")
            await run_async(engine, iter_insert(10), write=True)
        finally:
            await engine.dispose()

    asyncio.run(main())
    assert _probes(path) == [10]


def test_a_sync_write_is_one_driver_transaction_without_sqlalchemys(tmp_path, monkeypatch):
    """``Store`` on SQLite: an append is ``BEGIN IMMEDIATE``, its statements and ``COMMIT`` on the driver
    (what the driver ran, traced by ``sqlite3`` itself), and SQLAlchemy begins no transaction for it."""
    begun: list[int] = []
    begin = sa.engine.Connection.begin

    def counted(self: sa.engine.Connection) -> Any:
        begun.append(1)
        return begin(self)

    monkeypatch.setattr(sa.engine.Connection, "begin", counted)
    ran: list[str] = []
    with convstore.Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        conv = store.create_conversation()
        conv.append([user("one"), model("a")])

        def trace(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.set_trace_callback(lambda sql: ran.append(sql.split(None, 2)[:2]))

        store.engine.dispose()  # new connections, each traced
        sa.event.listen(store.engine, "connect", trace)  # a pool event: nothing watches the statements
        begun.clear()
        conv.append([user("two"), model("b")])
        assert begun == []
        assert ran[0] == ["BEGIN", "IMMEDIATE"]
        assert ran[-1] == ["COMMIT"]
        assert sum(sql[0] in ("BEGIN", "COMMIT", "ROLLBACK") for sql in ran) == 2  # one transaction
        assert store.conversation(conv.id).history() == [user("one"), model("a"), user("two"), model("b")]


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_listeners_of_the_engines_transactions_still_see_them(tmp_path, flavour):
    """With a listener of SQLAlchemy's ``begin`` and ``commit`` events on the engine, the store's SQLite
    transactions go through SQLAlchemy, and the listener sees each write begun and committed once."""
    seen: list[str] = []

    def listen(engine: sa.Engine) -> None:
        sa.event.listen(engine, "begin", lambda _conn: seen.append("begin"))
        sa.event.listen(engine, "commit", lambda _conn: seen.append("commit"))

    if flavour == "sync":
        with convstore.Store(f"sqlite:///{tmp_path / 's.db'}") as store:
            conv = store.create_conversation()
            listen(store.engine)
            conv.append([user("one"), model("a")])
            appended = list(seen)
            history = store.conversation(conv.id).history()
    else:

        async def main() -> Any:
            async with convstore.AsyncStore(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}") as store:
                conv = await store.create_conversation()
                listen(store.engine.sync_engine)
                await conv.append([user("one"), model("a")])
                appended = list(seen)
                return appended, await (await store.conversation(conv.id)).history()

        appended, history = asyncio.run(main())
    assert appended == ["begin", "commit"]
    assert history == [user("one"), model("a")]


def test_a_sync_write_interrupted_mid_transaction_rolls_back_and_holds_no_lock(path):
    """``Store`` on SQLite: a ``KeyboardInterrupt`` (not an ``Exception``) raised in the middle of a write,
    after a statement ran, reaches the caller; nothing is written, no lock is left, and the connection
    the write used goes back to the pool clean (the next write on the same engine goes through)."""

    def interrupt() -> None:
        raise KeyboardInterrupt

    def op() -> Any:
        yield Exec(INSERT_PROBE, {"id": 11, "parent": 1})
        yield Call(interrupt)
        yield Exec(INSERT_PROBE, {"id": 12, "parent": 1})

    engine = make_engine(f"sqlite:///{path}", busy_timeout=0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(engine, op(), write=True)
        _no_lock_left(path)
        run(engine, iter_insert(13), write=True)
    finally:
        engine.dispose()
    assert _probes(path) == [13]
