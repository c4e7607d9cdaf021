"""The runner: one operation, one transaction, on a sync or an asyncio connection."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from convstore.store._engine._factory import _WRITE_OPTION
from convstore.store._engine._fastpath import _driver_rows, _driver_rows_async
from convstore.store._engine._op import Call, Op
from convstore.store._engine._translate import translate

T = TypeVar("T")


def _autocommit_reads(dialect: Any) -> bool:
    """Whether a read runs without a transaction: on PostgreSQL, whose READ COMMITTED statements each take
    their own snapshot inside a transaction too, so a read's BEGIN and COMMIT would only add a round trip
    (every read is written for that: see ``_reads``). SQLite's reads keep theirs, one snapshot for all
    their statements."""
    return bool(dialect.name == "postgresql")


def run(engine: Engine, op: Op[T], *, write: bool) -> T:
    """Execute one operation in one transaction: committed if it returns, rolled back if it raises. A read
    on PostgreSQL runs its statements in autocommit instead (``_autocommit_reads``)."""
    try:
        with engine.connect() as conn:
            if write:
                conn.execution_options(**{_WRITE_OPTION: True})
            elif _autocommit_reads(conn.dialect):
                conn.execution_options(isolation_level="AUTOCOMMIT")  # reset when the pool takes it back
                return drive(conn, op)
            with conn.begin():
                return drive(conn, op)
    except exc.DBAPIError as error:
        raise translate(error) from None


def drive(conn: Connection, op: Op[T]) -> T:
    """Feed an operation's statements to ``conn`` until it returns."""
    try:
        step = next(op)
        while True:
            if isinstance(step, Call):
                try:
                    value = step.function(*step.args)
                except Exception as error:
                    step = op.throw(error)
                else:
                    step = op.send(value)
                continue
            try:
                if step.rows:
                    result: Any = _driver_rows(conn, step)
                else:
                    result = conn.execute(step.statement, step.params)
            except exc.DBAPIError as error:
                step = op.throw(error)
            else:
                step = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(engine: AsyncEngine, op: Op[T], *, write: bool) -> T:
    """``run`` on an asyncio engine: the same operation, awaited, in one transaction.

    A cancellation never interrupts a call into the driver: cancelled mid-call, SQLAlchemy's asyncio
    drivers drop the connection without returning it to the pool (psycopg) or wait forever in its close
    (aiosqlite). So the transaction runs in a task of its own, shielded. Cancelled, it stops before its next
    statement or its commit, rolls back and returns its connection whole; then the caller's
    ``CancelledError`` is raised. A cancellation that arrives while the commit is under way finds it
    committed (the caller still sees ``CancelledError``).
    """
    stop = asyncio.Event()
    work = asyncio.ensure_future(_transaction(engine, op, write, stop))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set()
        while not work.done():  # further cancellations are the same one: wait for the rollback
            with suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(work)
        if not work.cancelled():
            work.exception()  # retrieved: the caller is told of the cancellation instead
        raise


class _Stopped(Exception):
    """Raised inside a cancelled operation's transaction, so that it rolls back."""


async def _transaction(engine: AsyncEngine, op: Op[T], write: bool, stop: asyncio.Event) -> T:
    try:
        async with engine.connect() as conn:
            if write:
                await conn.execution_options(**{_WRITE_OPTION: True})
            elif _autocommit_reads(conn.dialect):
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                return await drive_async(conn, op, stop)
            async with conn.begin():
                return await drive_async(conn, op, stop)
    except exc.DBAPIError as error:
        raise translate(error) from None


async def drive_async(conn: AsyncConnection, op: Op[T], stop: asyncio.Event | None = None) -> T:
    """``drive`` for an asyncio connection, whose ``execute`` returns the same buffered ``Result``.

    Once ``stop`` is set, the next statement is not run and the operation is abandoned (``_Stopped``).
    """
    try:
        step = next(op)
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
                if step.rows:
                    result: Any = await _driver_rows_async(conn, step)
                else:
                    result = await conn.execute(step.statement, step.params)
            except exc.DBAPIError as error:
                step = op.throw(error)
            else:
                step = op.send(result)
    except StopIteration as stop_iteration:
        if stop is not None and stop.is_set():
            raise _Stopped from None  # not committed after all
        return stop_iteration.value  # type: ignore[no-any-return]
