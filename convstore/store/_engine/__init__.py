"""Engines, transactions and error translation: the only place the store touches a live connection.

Store operations are written once, as generators that yield ``Exec`` statements and receive their results
(see ``_ops.py``). ``run`` below executes one on a sync ``Connection`` inside a single transaction; the async
store will run the very same generators with ``await conn.execute``, since SQLAlchemy's async connection
returns the same buffered ``Result``. A database error is thrown back into the generator at the statement that
failed, so the operation that knows what the statement meant can turn it into the right error; anything it
does not handle is translated here, in one place.

SQLite: pysqlite's own transaction handling is turned off and each transaction begins explicitly: ``BEGIN
IMMEDIATE`` for writes, so a writer waits for the lock (up to the busy timeout) when its transaction starts
rather than failing halfway; plain ``BEGIN`` for reads, which WAL lets run beside a writer.

The parts, by concern: ``_op`` (what an operation is), ``_factory`` (engines and their connection settings),
``_translate`` (database errors into convstore's), ``_runner`` (one operation in one transaction, sync and
asyncio), ``_fastpath`` (the store's statements compiled once and sent to the driver directly; psycopg's
binary rows for the wide scans and its pipelines), ``_trips`` (an asyncio operation on SQLite driven inside
aiosqlite's thread, one trip a transaction) and ``_wal`` (SQLite's WAL checkpoint).
"""

from __future__ import annotations

from convstore.store._engine._factory import (
    adopt_async_engine,
    adopt_engine,
    configure_engine,
    is_async_engine,
    is_engine,
    make_async_engine,
    make_engine,
)
from convstore.store._engine._fastpath import DriverResult, compile_once
from convstore.store._engine._op import Batch, Call, Exec, Op, Refused
from convstore.store._engine._runner import drive, drive_async, run, run_async
from convstore.store._engine._translate import database_errors, outcome_unknown, translate
from convstore.store._engine._wal import checkpoint, checkpoint_async, finish_pending, finish_pending_async

__all__ = [
    "Batch",
    "Call",
    "DriverResult",
    "Exec",
    "Op",
    "Refused",
    "adopt_async_engine",
    "adopt_engine",
    "checkpoint",
    "checkpoint_async",
    "compile_once",
    "configure_engine",
    "database_errors",
    "drive",
    "drive_async",
    "finish_pending",
    "finish_pending_async",
    "is_async_engine",
    "is_engine",
    "make_async_engine",
    "make_engine",
    "outcome_unknown",
    "run",
    "run_async",
    "translate",
]
