"""A write in one round trip: its transaction's ``BEGIN``, its statements, a guard and the ``COMMIT``, sent
together in one psycopg pipeline.

psycopg begins a transaction by sending ``BEGIN`` and waiting for it (a pipeline syncs after it), and
SQLAlchemy commits with a statement of its own: a write sent as one pipeline still cost three round trips
(``BEGIN``, the pipeline, ``COMMIT``). With the connection in autocommit, psycopg begins nothing, and the
pipeline carries ``BEGIN`` and ``COMMIT`` itself. An explicit ``BEGIN`` rather than the implicit transaction
a pipeline runs in until its sync: Citus coordinates a transaction block across its workers, and does not
treat the statements of an implicit one as one.

What the operation would check in Python between its statements and the commit (that the compare-and-swap
moved the head, that an exchange is not stored already), the ``Batch``'s guard checks in SQL before the
``COMMIT``: a guard that fails divides by zero (``22012``), the only statement of a guarded batch that
divides. When any statement fails, PostgreSQL skips the rest of the pipeline, ``COMMIT`` included, and
leaves the transaction aborted: it is rolled back (one round trip more, on that path only) and the
operation gets ``Refused`` (the guard) or the statement's error.

A connection lost on the way is another matter: the ``COMMIT`` may have run. So may a ``COMMIT`` that
failed (on Citus, a worker may have committed before the coordinator reported the error): the server has
then ended the block, where a failed statement leaves it open and failed. Either way the connection is
invalidated, and the runner reports the outcome as unknown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

from convstore.store._engine._fastpath import (
    _bind,
    _fairy,
    _lost,
    _lost_async,
    _psycopg,
    _read,
    _read_async,
    _watched,
)
from convstore.store._engine._op import Batch, Refused

__all__ = ["commits_with", "run_committed", "run_committed_async"]

_REFUSED = "22012"  # division_by_zero: a guard's refusal
_IN_FAILED_BLOCK = 3  # psycopg.pq.TransactionStatus.INERROR: a statement failed, the block not ended


def commits_with(conn: Connection, batch: Batch) -> bool:
    """Whether ``batch``, a write's first step, is sent with its transaction's ``BEGIN`` and ``COMMIT``: a
    guarded batch on psycopg, its statements not watched (whatever watches them sees them through
    SQLAlchemy, in a transaction SQLAlchemy begins)."""
    return batch.guard is not None and _psycopg(conn.dialect) and not _watched(conn)


def _refused(driver: Any, error: Exception) -> bool | None:
    """After a failed pipeline: None when the commit may have run, else whether the guard refused (a
    statement before the ``COMMIT`` failed: the transaction did not commit, and is to be rolled back).

    The commit may have run when the connection is lost, and when the ``COMMIT`` itself failed: the
    server then left the transaction block (it is idle, not in a failed block), and on Citus a worker may
    have committed its part before the coordinator reported the error. SQLAlchemy's path reports a failed
    commit as an unknown outcome too."""
    if driver.closed or driver.broken:
        return None
    if driver.info.transaction_status != _IN_FAILED_BLOCK:
        return None
    return getattr(error, "sqlstate", None) == _REFUSED


def run_committed(conn: Connection, batch: Batch) -> list[Any]:
    """``batch`` with its guard, between ``BEGIN`` and ``COMMIT``, in one pipeline on a connection in
    autocommit; the results of its statements (as ``run_batch`` gives them), committed.

    Raises:
        Refused: the guard failed; rolled back.
        sqlalchemy.exc.DBAPIError: a statement failed (rolled back), or the connection was lost (then
            invalidated: the commit may have run).
    """
    assert batch.guard is not None  # noqa: S101 -- commits_with chose this way
    fairy: Any = conn.connection
    driver = fairy.driver_connection
    steps = (*batch.statements, batch.guard)
    bound = [_bind(conn, step) for step in steps]
    cursors = [driver.cursor(binary=step.rows) for step in steps]
    control = driver.cursor()
    sent = False  # the pipeline ran to its COMMIT: what fails after it is the reading of its rows
    try:
        with driver.pipeline():
            control.execute("BEGIN")
            for cursor, (prepared, params, many) in zip(cursors, bound, strict=True):
                if many:
                    cursor.executemany(prepared.sql, params)
                else:
                    cursor.execute(prepared.sql, params)
            control.execute("COMMIT")
        sent = True
        return [
            list(cursor.fetchall())
            if step.rows
            else _read(prepared, conn.dialect, cursor)
            for step, cursor, (prepared, _, _) in zip(batch.statements, cursors[:-1], bound[:-1], strict=True)
        ]
    except conn.dialect.loaded_dbapi.Error as error:
        if sent:  # committed; a row the driver cannot load is convstore's bug, not the write's outcome
            raise
        refused = _refused(driver, error)
        if refused is not None:
            try:
                driver.rollback()
            except conn.dialect.loaded_dbapi.Error as lost:
                raise _lost(conn, lost, fairy, "ROLLBACK", None) from lost
            if refused:
                raise Refused from None
        wrapped = _lost(conn, error, fairy, bound[0][0].sql, None)
        if refused is None and not conn.invalidated:  # lost, whatever the driver called it: not reused
            conn.invalidate(wrapped)
        raise wrapped from error
    finally:
        for cursor in (*cursors, control):
            cursor.close()


async def run_committed_async(conn: AsyncConnection, batch: Batch) -> list[Any]:
    """``run_committed`` on an asyncio connection."""
    assert batch.guard is not None  # noqa: S101 -- commits_with chose this way
    fairy: Any = await _fairy(conn)
    driver = fairy.driver_connection
    steps = (*batch.statements, batch.guard)
    bound = [_bind(conn, step) for step in steps]
    cursors = [driver.cursor(binary=step.rows) for step in steps]
    control = driver.cursor()
    sent = False  # the pipeline ran to its COMMIT: what fails after it is the reading of its rows
    try:
        async with driver.pipeline():
            await control.execute("BEGIN")
            for cursor, (prepared, params, many) in zip(cursors, bound, strict=True):
                if many:
                    await cursor.executemany(prepared.sql, params)
                else:
                    await cursor.execute(prepared.sql, params)
            await control.execute("COMMIT")
        sent = True
        return [
            await _read_async(prepared, conn.dialect, cursor, step.rows)
            for step, cursor, (prepared, _, _) in zip(batch.statements, cursors[:-1], bound[:-1], strict=True)
        ]
    except conn.dialect.loaded_dbapi.Error as error:
        if sent:  # committed; a row the driver cannot load is convstore's bug, not the write's outcome
            raise
        refused = _refused(driver, error)
        if refused is not None:
            try:
                await driver.rollback()
            except conn.dialect.loaded_dbapi.Error as lost:
                raise await _lost_async(conn, lost, fairy, "ROLLBACK", None) from lost
            if refused:
                raise Refused from None
        wrapped = await _lost_async(conn, error, fairy, bound[0][0].sql, None)
        if refused is None and not conn.invalidated:  # lost, whatever the driver called it: not reused
            await conn.invalidate(wrapped)
        raise wrapped from error
    finally:
        for cursor in (*cursors, control):
            await cursor.close()
