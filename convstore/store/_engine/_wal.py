"""SQLite's WAL emptied into the database file and truncated (what a delete leaves behind)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

from convstore.store._engine._factory import _CONFIGURED, _root


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
    except Exception as error:
        if "locked" in str(error) or "busy" in str(error):
            return False
        raise
    finally:
        cursor.close()
    return row is not None and row[0] == 0


def checkpoint(engine: Engine) -> bool:
    """Empty a SQLite file's WAL into the database file and truncate it (see ``_truncate_wal``), so that what
    was deleted (overwritten in the file by ``secure_delete``) is in no file any more. Other backends: True.

    Returns:
        Whether the WAL is empty (False: a reader or a writer kept it busy past the busy timeout).
    """
    if not _wal_file(engine):
        return True
    with engine.connect() as conn:
        return _truncate_wal(conn)


async def checkpoint_async(engine: AsyncEngine) -> bool:
    """``checkpoint`` for an asyncio engine."""
    if not _wal_file(engine.sync_engine):
        return True
    async with engine.connect() as conn:
        return await conn.run_sync(_truncate_wal)
