"""SQLite: an operation's whole transaction driven on the ``sqlite3`` connection itself.

``AsyncStore`` (aiosqlite): aiosqlite runs each call on its connection in a thread of its own and wakes the
event loop when the call is done. A trip there and back costs more CPU than a short statement (a queue, a
thread woken, the loop woken), and a turn's write took nine: ``BEGIN IMMEDIATE`` (three: the adapter's
cursor, its execute, its close), one per statement, the ``COMMIT``. So ``AsyncStore`` cost two to three times
``Store``'s CPU for the same append. Here the operation's generator is driven inside the thread instead
(``run_in_trips``): ``BEGIN``, every statement, the blocking calls (``Call``, which ran in a worker thread of
their own anyway) and the ``COMMIT`` or ``ROLLBACK`` run there, and the event loop waits once. The caller's
context variables go with it (the operation and its calls run in a copy of the caller's context).

``Store`` (``sqlite3``): the same drive in the caller's thread (``run_in_place``), with no SQLAlchemy
transaction around it: SQLAlchemy's ``begin()`` and ``commit()`` (their objects, events and the execution
options they read) cost a short append about 25 µs of its 550 µs of CPU, for a ``BEGIN`` and a ``COMMIT``
the driver runs as fast alone.

The operation sees exactly what ``drive`` gives it: the same results (``DriverResult``, or the driver's
rows), the same ``DBAPIError`` thrown in at a failed statement.

A statement the driver cannot run as it is (one SQLAlchemy expands or renders at execution) ends the trip:
SQLAlchemy runs it in the same transaction (``_on_begin`` sends no second ``BEGIN`` to a driver already in
the trip's), then the next trip goes on. Nothing of this runs while something watches the engine's
statements (``_watched``) or its transactions (a listener of SQLAlchemy's ``begin``, ``commit`` or
``rollback`` events beside the store's own): then SQLAlchemy begins and ends the transaction and runs every
statement, and the listeners see them.

A cancellation (``stop``, set by ``run_async``) is seen before each statement and before the ``COMMIT``, as in
``drive_async``: the operation is abandoned and the transaction rolled back, in the thread.
"""

from __future__ import annotations

import contextvars
import sqlite3
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Connection

from convstore.store._engine._fastpath import (
    _failed,
    _one_hop,
    _result,
    _short_way,
    _sqlite_statement,
    _watched,
    execute,
    execute_async,
    run_batch,
    run_batch_async,
)
from convstore.store._engine._op import Batch, Call, Exec, Op, answer

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")

# convstore's own listeners of SQLAlchemy's ``begin`` event (``_factory._on_begin``): not a watcher.
OWN_LISTENERS: set[Any] = set()

# In the pool connection's info while an operation runs in trips: SQLAlchemy, running a statement of it,
# joins the transaction the trip began instead of sending a BEGIN of its own (``_factory._on_begin``).
IN_TRIPS = "convstore_in_trips"

_DONE = object()  # a trip's outcome: the operation returned (its value follows)
_PENDING = object()  # or: it yielded a statement only SQLAlchemy can run (which follows)


class Stopped(Exception):
    """Raised inside a cancelled operation's transaction, so that it rolls back (``_runner._Stopped``)."""


class CommitFailed(Exception):
    """The ``COMMIT`` of a trip failed: the write's outcome is unknown to the caller (``outcome_unknown``)."""

    def __init__(self, error: exc.DBAPIError) -> None:
        super().__init__()
        self.error = error


def _unwatched_sqlite(conn: Connection | None) -> bool:
    """Whether ``conn`` is SQLite with nothing watching its statements or its transactions."""
    if conn is None or conn.dialect.name != "sqlite" or _watched(conn):
        return False
    dispatch = conn.dispatch
    return not (dispatch.commit or dispatch.rollback or any(fn not in OWN_LISTENERS for fn in dispatch.begin))


def in_one_trip(conn: Connection | None) -> bool:
    """Whether an operation on ``conn`` (an asyncio connection's sync side, checked out) runs in trips to
    aiosqlite's thread: SQLite through the aiosqlite this knows (``_one_hop``), nothing watching its
    statements or its transactions."""
    if not _unwatched_sqlite(conn):
        return False
    fairy: Any = conn.connection  # type: ignore[union-attr]  # not None: _unwatched_sqlite saw it
    return _one_hop(fairy.driver_connection)


def in_place(conn: Connection) -> bool:
    """Whether an operation on ``conn`` (a sync connection, checked out) is driven on its ``sqlite3``
    connection directly (``run_in_place``): SQLite through ``sqlite3``, nothing watching its statements
    or its transactions."""
    if not _unwatched_sqlite(conn):
        return False
    fairy: Any = conn.connection
    return isinstance(fairy.driver_connection, sqlite3.Connection)


class _Trip:
    """What every trip of one operation shares: the connection (its dialect and compiled statements), the
    operation, the cancellation, the driver error that lost the connection, if one did, and where the next
    trip starts: the ``BEGIN`` still to send (the first trip's only) and how the operation resumes
    (``("start", None)``, then ``("send", result)`` or ``("throw", error)`` of the statement SQLAlchemy ran).
    Made, it marks the pool connection as in trips (``IN_TRIPS``); ``end`` removes the mark."""

    __slots__ = ("begin", "conn", "fairy", "lost", "op", "resume", "stop", "write")

    def __init__(
        self, conn: Connection, op: Op[Any], stop: asyncio.Event | None, *, write: bool, single: bool
    ) -> None:
        self.conn = conn
        self.fairy: Any = conn.connection
        self.op = op
        self.stop = stop
        self.write = write
        self.begin = None if single else ("BEGIN IMMEDIATE" if write else "BEGIN")
        self.resume: tuple[str, Any] = ("start", None)
        self.lost: exc.DBAPIError | None = None
        self.fairy.info[IN_TRIPS] = True

    def end(self) -> exc.DBAPIError | None:
        """The operation is over: the pool connection's mark removed; the error that lost the connection,
        for the caller to invalidate it (None: not lost)."""
        self.fairy.info.pop(IN_TRIPS, None)
        return self.lost


async def run_in_trips(
    conn: AsyncConnection, op: Op[T], *, write: bool, single: bool, stop: asyncio.Event | None
) -> T:
    """Run ``op`` on ``conn`` (``in_one_trip``) in one transaction: ``BEGIN IMMEDIATE`` for a write,
    ``BEGIN`` for a read, committed when it returns; no transaction of the store's for ``single`` (a read
    of statements each on its own snapshot, or a write of one statement in the driver's autocommit).

    Raises: ``CommitFailed`` for a failed ``COMMIT``; ``Stopped`` once ``stop`` is set; the operation's own
    exceptions and the ``DBAPIError`` of a ``BEGIN`` or of a statement it did not handle, after the rollback.
    """
    sync = conn.sync_connection
    if sync is None:  # pragma: no cover -- in_one_trip saw it open
        raise RuntimeError("the connection closed under the operation")
    fairy: Any = sync.connection
    driver = fairy.driver_connection
    context = contextvars.copy_context()
    trip = _Trip(sync, op, stop, write=write, single=single)  # the pool connection marked: ended below
    try:
        while True:
            outcome, value = await driver._execute(context.run, _run, trip, driver._conn)
            if outcome is _DONE:
                return value  # type: ignore[no-any-return]
            trip.resume = await _through_sqlalchemy_async(conn, value)
    finally:
        lost = trip.end()
        if lost is not None and not conn.invalidated:
            await conn.invalidate(lost)


def run_in_place(conn: Connection, op: Op[T], *, write: bool, single: bool) -> T:
    """``run_in_trips`` on a sync connection (``in_place``): one trip, in the caller's own thread, unless a
    statement only SQLAlchemy can run comes between two. The same transactions, the same errors."""
    fairy: Any = conn.connection
    raw = fairy.driver_connection
    trip = _Trip(conn, op, None, write=write, single=single)  # the pool connection marked: ended below
    try:
        while True:
            outcome, value = _run(trip, raw)
            if outcome is _DONE:
                return value  # type: ignore[no-any-return]
            trip.resume = _through_sqlalchemy(conn, value)
    finally:
        lost = trip.end()
        if lost is not None and not conn.invalidated:
            conn.invalidate(lost)


async def _through_sqlalchemy_async(conn: AsyncConnection, step: Exec | Batch) -> tuple[str, Any]:
    """A statement only SQLAlchemy can run, in the transaction the trip left open: how the operation
    resumes (its result sent, or its ``DBAPIError`` thrown in)."""
    try:
        if isinstance(step, Batch):
            return ("send", await run_batch_async(conn, step))
        return ("send", await execute_async(conn, step, watched=False))
    except exc.DBAPIError as error:
        return ("throw", error)


def _through_sqlalchemy(conn: Connection, step: Exec | Batch) -> tuple[str, Any]:
    """``_through_sqlalchemy_async`` on a sync connection."""
    try:
        if isinstance(step, Batch):
            return ("send", run_batch(conn, step))
        return ("send", execute(conn, step, watched=False))
    except exc.DBAPIError as error:
        return ("throw", error)


def _run(trip: _Trip, raw: Any) -> tuple[object, Any]:
    """One trip, in aiosqlite's thread or the caller's (``raw``: the ``sqlite3`` connection): the operation
    resumed and driven until it returns (then committed) or yields a statement the driver cannot run (the
    transaction left open)."""
    op = trip.op
    begin, trip.begin = trip.begin, None
    try:
        if begin is not None:
            _statement(trip, raw, begin)
        kind, value = trip.resume
        step = next(op) if kind == "start" else op.send(value) if kind == "send" else op.throw(value)
        return _PENDING, _drive(trip, raw, step)
    except StopIteration as returned:
        _finish(trip, raw)
        return _DONE, returned.value
    except BaseException:
        _rollback(raw)
        raise


def _drive(trip: _Trip, raw: Any, step: Exec | Call | Batch) -> Exec | Batch:
    """Feed the operation its steps' results until it returns (``StopIteration``) or yields a statement
    the driver cannot run as it is, which is returned."""
    op = trip.op
    while True:
        _check_stop(trip)
        if isinstance(step, Call):
            step = answer(op, step)
            continue
        statements = step.statements if isinstance(step, Batch) else (step,)
        bound = [found for each in statements if (found := _short_way(trip.conn, each, False)) is not None]
        if len(bound) < len(statements):
            return step  # SQLAlchemy must run it: the loop does, then comes back
        try:
            results = [
                _execute(trip, raw, each, found) for each, found in zip(statements, bound, strict=True)
            ]
        except exc.DBAPIError as error:
            step = op.throw(error)
        else:
            step = op.send(results if isinstance(step, Batch) else results[0])


def _check_stop(trip: _Trip) -> None:
    if trip.stop is not None and trip.stop.is_set():
        trip.op.close()
        raise Stopped


def _finish(trip: _Trip, raw: Any) -> None:
    """The operation returned: its transaction committed (unless cancelled meanwhile: rolled back)."""
    if trip.stop is not None and trip.stop.is_set():
        _rollback(raw)
        raise Stopped  # not committed after all
    if raw.in_transaction:
        try:
            _statement(trip, raw, "COMMIT")
        except exc.DBAPIError as error:
            _rollback(raw)
            if trip.write:
                raise CommitFailed(error) from None
            raise


def _statement(trip: _Trip, raw: Any, sql: str) -> None:
    """``BEGIN``, ``COMMIT``: its driver error as SQLAlchemy raises it."""
    try:
        raw.execute(sql)
    except trip.conn.dialect.loaded_dbapi.Error as error:
        raise _lost(trip, error, sql) from error


def _execute(trip: _Trip, raw: Any, step: Exec, bound: tuple[Any, Any, bool]) -> Any:
    """One statement, as ``execute`` gives its result."""
    prepared, params, many = bound
    try:
        rows, description, rowcount = _sqlite_statement(raw, prepared.sql, params, many)
    except trip.conn.dialect.loaded_dbapi.Error as error:
        raise _lost(trip, error, prepared.sql) from error
    return rows if step.rows else _result(prepared, trip.conn.dialect, description, rowcount, rows)


def _lost(trip: _Trip, error: Exception, sql: str) -> exc.DBAPIError:
    wrapped = _failed(trip.conn.dialect, trip.fairy, sql, error, None)
    if wrapped.connection_invalidated and trip.lost is None:
        trip.lost = wrapped  # invalidated by the loop once the trip is over
    return wrapped


def _rollback(raw: Any) -> None:
    """Roll back what the trip began, if anything is still open; a failure leaves it to the pool's reset."""
    try:
        if raw.in_transaction:
            raw.execute("ROLLBACK")
    except Exception:  # noqa: S110 -- the connection is returned to the pool, which resets it
        pass
