"""The runner: one operation, one transaction, on a sync or an asyncio connection."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from convstore.store._engine._committed import commits_with, run_committed, run_committed_async
from convstore.store._engine._factory import write_options
from convstore.store._engine._fastpath import (
    _psycopg,
    _watched,
    execute,
    execute_async,
    run_batch,
    run_batch_async,
)
from convstore.store._engine._op import Batch, Call, Op, Refused, answer
from convstore.store._engine._translate import outcome_unknown, translate
from convstore.store._engine._trips import (
    CommitFailed,
    Stopped,
    in_one_trip,
    in_place,
    run_in_place,
    run_in_trips,
)

T = TypeVar("T")


def _autocommit_reads(dialect: Any) -> bool:
    """Whether a read runs without a transaction: on PostgreSQL, whose READ COMMITTED statements each take
    their own snapshot inside a transaction too, so a read's BEGIN and COMMIT would only add a round trip
    (every read is written for that: see ``_reads``). SQLite's reads keep theirs, one snapshot for all
    their statements."""
    return bool(dialect.name == "postgresql")


def run(engine: Engine, op: Op[T], *, write: bool, single: bool = False) -> T:  # noqa: PLR0911 -- a return for each way it runs
    """Execute one operation in one transaction: committed if it returns, rolled back if it raises. A read
    on PostgreSQL runs its statements in autocommit instead (``_autocommit_reads``), and so does a write of
    one statement (``single``: atomic alone), which then costs one round trip instead of three. A read
    marked ``single`` (written for each statement's own snapshot, as every read is on PostgreSQL) runs
    without a transaction on SQLite too: each statement is its own, no ``BEGIN`` and ``COMMIT`` around
    them. So does a ``single`` write on SQLite whose statements go to the driver directly (``_watched``):
    in the driver's autocommit the statement is its own transaction, which takes the write lock before it
    reads (waiting for it as ``BEGIN IMMEDIATE`` does) and commits when it completes (``_sqlite_single``).
    On SQLite through ``sqlite3`` with nothing watching, the whole transaction is driven on the driver
    (``_trips.run_in_place``), the same statements without SQLAlchemy's transaction around them.

    Every database error is translated (``translate``); one raised while a write commits is
    ``OutcomeUnknownError`` (``outcome_unknown``): the commit may have happened.
    """
    committing = False
    try:
        with engine.connect() as conn:
            if in_place(conn):  # SQLite through sqlite3: the transaction on the driver itself
                committing = write and single  # as below: the statement commits as it completes
                return run_in_place(conn, op, write=write, single=single)
            if write and single and (_autocommit_reads(conn.dialect) or _sqlite_single(conn)):
                committing = True  # the statement commits: its failure may come after the commit
                return _single_write(conn, op)
            first = None
            if write:
                try:
                    first = next(op)  # Python only: the operation has not touched the database yet
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                if isinstance(first, Batch) and commits_with(conn, first):
                    conn.execution_options(isolation_level="AUTOCOMMIT")  # the batch begins and commits
                    return _commit_batch(conn, op, first, engine.url)
                conn.execution_options(**write_options(engine))
            elif _autocommit_reads(conn.dialect):
                conn.execution_options(isolation_level="AUTOCOMMIT")  # reset when the pool takes it back
                return drive(conn, op)
            elif single:
                # SQLite's driver is in autocommit: a transaction begins only for a statement that goes
                # through SQLAlchemy, rolled back when the connection closes.
                return drive(conn, op)
            with conn.begin():
                value = drive(conn, op, first)
                committing = write
            return value
    except CommitFailed as failed:
        raise outcome_unknown(failed.error, engine.url) from None
    except exc.DBAPIError as error:
        if committing:
            raise outcome_unknown(error, engine.url) from None
        raise translate(error, engine.url) from None


def _sqlite_single(conn: Connection | None) -> bool:
    """Whether a write of one statement (``single``) runs in the driver's autocommit on ``conn``: SQLite
    (whose driver convstore leaves in autocommit, beginning transactions itself), its statements going to
    the driver directly (nothing watches them through SQLAlchemy, which would begin a transaction)."""
    return conn is not None and conn.dialect.name == "sqlite" and not _watched(conn)


def _single_write(conn: Connection, op: Op[T]) -> T:
    """A write of one statement (``single``), committed as it completes: in autocommit on PostgreSQL, in
    the driver's autocommit on SQLite (``_sqlite_single``)."""
    if _autocommit_reads(conn.dialect):
        conn.execution_options(isolation_level="AUTOCOMMIT")
        return drive(conn, op)
    value = drive(conn, op, watched=False)
    if conn.in_transaction():  # pragma: no cover -- a statement SQLAlchemy had to run began one
        conn.commit()
    return value


async def _single_write_async(conn: AsyncConnection, op: Op[T], stop: asyncio.Event) -> T:
    """``_single_write`` on an asyncio connection."""
    if _autocommit_reads(conn.dialect):
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        return await drive_async(conn, op, stop)
    value = await drive_async(conn, op, stop, watched=False)
    if conn.in_transaction():  # pragma: no cover -- as in _single_write
        await conn.commit()
    return value


def _commit_batch(conn: Connection, op: Op[T], batch: Batch, url: Any) -> T:
    """A write whose first step is a guarded batch, sent with its ``BEGIN`` and ``COMMIT``
    (``_committed``); its connection in autocommit."""
    try:
        results = run_committed(conn, batch)
    except (Refused, exc.DBAPIError) as error:
        _not_committed(op, error, url, lost=conn.invalidated)
    return _after_commit(op, results)


async def _commit_batch_async(
    conn: AsyncConnection, op: Op[T], batch: Batch, url: Any, stop: asyncio.Event
) -> T:
    """``_commit_batch`` on an asyncio connection; abandoned before it is sent once ``stop`` is set."""
    if stop.is_set():
        op.close()
        raise _Stopped
    try:
        results = await run_committed_async(conn, batch)
    except (Refused, exc.DBAPIError) as error:
        _not_committed(op, error, url, lost=conn.invalidated)
    return _after_commit(op, results)


def _not_committed(op: Op[Any], error: Refused | exc.DBAPIError, url: Any, *, lost: bool) -> NoReturn:
    """The failure of a batch sent with its commit. The connection ``lost`` (invalidated): the ``COMMIT``
    may have run, ``OutcomeUnknownError``. Otherwise nothing was written: the failure is thrown into the
    operation, which must raise (the connection is no longer in a transaction for it to go on in)."""
    if lost and isinstance(error, exc.DBAPIError):
        raise outcome_unknown(error, url) from None
    op.throw(error)
    raise RuntimeError("an operation went on after its committed batch failed")  # pragma: no cover


def _after_commit(op: Op[T], results: list[Any]) -> T:
    """Send a committed batch's results to its operation, which must return: its write is over."""
    try:
        op.send(results)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise RuntimeError("an operation went on after its committed batch")  # pragma: no cover


def drive(conn: Connection, op: Op[T], first: Any = None, *, watched: bool | None = None) -> T:
    """Feed an operation's statements to ``conn`` until it returns (``first``: its first step, already
    taken from it; ``watched``: ``_watched(conn)``, when the caller knows it)."""
    if watched is None:
        watched = _watched(conn)  # whether its statements go through SQLAlchemy, for the whole transaction
    try:
        step = next(op) if first is None else first
        while True:
            if isinstance(step, Call):
                step = answer(op, step)
                continue
            try:
                if isinstance(step, Batch):
                    result: Any = run_batch(conn, step)
                else:
                    result = execute(conn, step, watched=watched)
            except exc.DBAPIError as error:
                step = op.throw(error)
            else:
                step = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(engine: AsyncEngine, op: Op[T], *, write: bool, single: bool = False) -> T:
    """``run`` on an asyncio engine: the same operation, awaited, in one transaction.

    A cancellation never interrupts a call into the driver: cancelled mid-call, SQLAlchemy's asyncio
    drivers drop the connection without returning it to the pool (psycopg) or wait forever in its close
    (aiosqlite). So the transaction runs in a task of its own, shielded. Cancelled, it stops before its next
    statement or its commit, rolls back and returns its connection whole; then the caller's
    ``CancelledError`` is raised. On PostgreSQL with psycopg, a statement under way (waiting for a lock,
    say) is cancelled on the server too, so that the caller's deadline holds. A cancellation that arrives
    while the commit is under way finds it committed (the caller still sees ``CancelledError``).
    """
    stop = asyncio.Event()
    held: list[Any] = []  # the connection, then True once a cancel request was sent for it
    work = asyncio.ensure_future(_transaction(engine, op, write, stop, held, single))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set()
        if held and not work.done():
            held.append(True)
            await _cancel_statement(held[0])
        while not work.done():  # further cancellations are the same one: wait for the rollback
            with suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(work)
        if not work.cancelled():
            work.exception()  # retrieved: the caller is told of the cancellation instead
        raise


async def _cancel_statement(conn: AsyncConnection) -> None:
    """Ask PostgreSQL to cancel the statement ``conn`` is running (psycopg only; elsewhere nothing): it then
    fails with ``query_canceled``, and the transaction rolls back at once instead of after the statement."""
    if not _psycopg(conn.dialect) or conn.closed:
        return
    with suppress(Exception):
        raw: Any = (await conn.get_raw_connection()).driver_connection
        cancel = getattr(raw, "cancel_safe", None)
        if cancel is not None:
            await cancel()
        else:  # pragma: no cover -- psycopg before 3.2
            await asyncio.to_thread(raw.cancel)


_Stopped = Stopped  # raised inside a cancelled operation's transaction, so that it rolls back


async def _transaction(  # noqa: PLR0911,PLR0912,PLR0917 -- run_async's parts, a return for each way it runs
    engine: AsyncEngine, op: Op[T], write: bool, stop: asyncio.Event, held: list[Any], single: bool
) -> T:
    committing = False
    try:
        async with engine.connect() as conn:
            held.append(conn)
            cancelled = False
            try:
                sync = conn.sync_connection
                if in_one_trip(sync):  # SQLite under aiosqlite: the transaction in its thread
                    committing = write and single  # as below: the statement commits as it completes
                    return await run_in_trips(conn, op, write=write, single=single, stop=stop)
                if write and single and (_autocommit_reads(conn.dialect) or _sqlite_single(sync)):
                    committing = True  # the statement commits: its failure may come after the commit
                    return await _single_write_async(conn, op, stop)
                first = None
                if write:
                    try:
                        first = next(op)  # Python only: the operation has not touched the database yet
                    except StopIteration as stop_iteration:
                        return stop_iteration.value  # type: ignore[no-any-return]
                    if isinstance(first, Batch) and sync is not None and commits_with(sync, first):
                        await conn.execution_options(isolation_level="AUTOCOMMIT")
                        return await _commit_batch_async(conn, op, first, engine.url, stop)
                    await conn.execution_options(**write_options(engine.sync_engine))
                elif _autocommit_reads(conn.dialect):
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                    return await drive_async(conn, op, stop)
                elif single:  # as in run
                    return await drive_async(conn, op, stop)
                async with conn.begin():
                    value = await drive_async(conn, op, stop, first)
                    committing = write
                return value  # noqa: TRY300 -- the finally below runs either way
            except exc.DBAPIError as error:
                cancelled = getattr(error.orig, "sqlstate", None) == "57014"
                raise
            finally:
                if len(held) > 1 and not cancelled:
                    # A cancel request was sent, and no statement took it: it could still land on this
                    # backend's next statement, another operation's. The connection is not reused.
                    await conn.invalidate()
    except CommitFailed as failed:
        raise outcome_unknown(failed.error, engine.url) from None
    except exc.DBAPIError as error:
        if committing:
            raise outcome_unknown(error, engine.url) from None
        raise translate(error, engine.url) from None


async def drive_async(
    conn: AsyncConnection,
    op: Op[T],
    stop: asyncio.Event | None = None,
    first: Any = None,
    *,
    watched: bool | None = None,
) -> T:
    """``drive`` for an asyncio connection, whose ``execute`` returns the same buffered ``Result``.

    Once ``stop`` is set, the next statement is not run and the operation is abandoned (``_Stopped``).
    """
    if watched is None:
        sync = conn.sync_connection
        watched = sync is not None and _watched(sync)
    try:
        step = next(op) if first is None else first
        while True:
            if stop is not None and stop.is_set():
                op.close()
                raise _Stopped
            if isinstance(step, Call):
                try:
                    value = await asyncio.to_thread(step.function, *step.args)
                except Exception as error:
                    step = op.throw(error)
                else:
                    step = op.send(value)
                continue
            try:
                if isinstance(step, Batch):
                    result: Any = await run_batch_async(conn, step)
                else:
                    result = await execute_async(conn, step, watched=watched)
            except exc.DBAPIError as error:
                step = op.throw(error)
            else:
                step = op.send(result)
    except StopIteration as stop_iteration:
        if stop is not None and stop.is_set():
            raise _Stopped from None  # not committed after all
        return stop_iteration.value  # type: ignore[no-any-return]
