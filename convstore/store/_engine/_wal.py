"""SQLite's WAL emptied into the database file and truncated (what a delete leaves behind)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

from convstore.store._engine._factory import _CONFIGURED, _root
from convstore.store._engine._translate import database_errors


def _wal_file(engine: Engine) -> bool:
    """Whether the engine's database is a SQLite file (in WAL mode: ``configure_engine``)."""
    return engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")


def _truncate_wal(conn: Connection) -> bool:
    """``PRAGMA wal_checkpoint(TRUNCATE)`` on the raw connection, outside any transaction (the ``begin``
    listener would open one): every frame of the WAL is copied into the database file and the WAL is cut to
    zero bytes. True when it did; False when the WAL stayed busy for the whole busy timeout.

    SQLite waits (its busy handler) for writers and for readers still using the WAL, but not for another
    connection's checkpoint: while a writer's automatic checkpoint runs, the call fails at once without
    waiting. So a busy result is tried again, with a short growing pause, until the busy timeout is spent.
    """
    settings = _CONFIGURED.get(_root(conn.engine))
    timeout = (settings.timeout_ms if settings is not None else 30_000) / 1000
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        if _truncate_wal_once(conn):
            return True
        if time.monotonic() + pause > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _truncate_wal_once(conn: Connection) -> bool:
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        row = cursor.fetchone()
    except conn.dialect.loaded_dbapi.Error as error:
        if "locked" in str(error) or "busy" in str(error):
            return False
        # As SQLAlchemy would have raised it, for ``translate`` (a full disk, a read-only file...).
        raise exc.DBAPIError.instance(
            "PRAGMA wal_checkpoint(TRUNCATE)",
            None,
            error,
            conn.dialect.loaded_dbapi.Error,
            dialect=conn.dialect,
        ) from error
    finally:
        cursor.close()
    return row is not None and row[0] == 0


def checkpoint(engine: Engine, *, first: str | None = None) -> bool:
    """Empty a SQLite file's WAL into the database file and truncate it (see ``_truncate_wal``), so that what
    was deleted (overwritten in the file by ``secure_delete``) is in no file any more. Other backends: True.

    Args:
        first: A statement run (committed on its own) before the checkpoint when the WAL holds frames: the
            rewrite a delete runs before its checkpoint (the search index's), for a shred left pending.

    Returns:
        Whether the WAL is empty (False: a reader or a writer kept it busy past the busy timeout).

    Raises:
        DatabaseError: ``first`` or the checkpoint failed (a full disk, say), translated.
    """
    if not _wal_file(engine):
        return True
    with database_errors(engine.url), engine.connect() as conn:
        return _finish(conn, first)


async def checkpoint_async(engine: AsyncEngine, *, first: str | None = None) -> bool:
    """``checkpoint`` for an asyncio engine."""
    if not _wal_file(engine.sync_engine):
        return True
    pending = first if _wal_left(engine.sync_engine) else None
    with database_errors(engine.url):
        async with engine.connect() as conn:
            return await conn.run_sync(_truncate_wal_after, pending)


def _finish(conn: Connection, first: str | None) -> bool:
    return _truncate_wal_after(conn, first if _wal_left(conn.engine) else None)


def _truncate_wal_after(conn: Connection, first: str | None) -> bool:
    """``first`` (when given), then ``_truncate_wal``."""
    if first is not None:
        _raw(conn, first)
    return _truncate_wal(conn)


def _raw(conn: Connection, statement: str) -> None:
    """``statement`` on the raw connection, outside any transaction (SQLite commits it on its own); a
    driver error raised as SQLAlchemy would have raised it, for ``translate``."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
    except conn.dialect.loaded_dbapi.Error as error:
        raise exc.DBAPIError.instance(
            statement, None, error, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from error
    finally:
        cursor.close()


def _finish_once(conn: Connection, first: str | None = None) -> None:
    """One attempt at ``first`` (when given) and a checkpoint that waits for nobody (busy timeout 0 for
    them), their failure ignored."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("PRAGMA busy_timeout")
        row = cursor.fetchone()
        cursor.execute("PRAGMA busy_timeout = 0")
        try:
            if first is not None:
                cursor.execute(first)
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.fetchone()
        except conn.dialect.loaded_dbapi.Error:
            pass  # busy, or still no room: the next checkpoint() or delete says so
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {int(row[0]) if row else 0}")
    finally:
        cursor.close()


def _wal_left(engine: Engine) -> bool:
    """Whether a SQLite file's WAL holds frames (a shred that could not finish, or another writer's)."""
    if not _wal_file(engine):
        return False
    try:
        return os.path.getsize(f"{engine.url.database}-wal") > 0
    except OSError:
        return False


def finish_pending(engine: Engine, *, first: str | None = None) -> None:
    """On open: a WAL left with frames (a delete whose shred could not finish: ``ShredPendingError``) is
    emptied, after ``first`` (the rewrite a delete runs before its checkpoint; see ``checkpoint``), if
    nobody is using it right now; never waits, never fails."""
    if _wal_left(engine):
        with database_errors(engine.url), engine.connect() as conn:
            _finish_once(conn, first)


async def finish_pending_async(engine: AsyncEngine, *, first: str | None = None) -> None:
    """``finish_pending`` for an asyncio engine."""
    if _wal_left(engine.sync_engine):
        with database_errors(engine.url):
            async with engine.connect() as conn:
                await conn.run_sync(_finish_once, first)
