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
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.base import OptionEngine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.base import Executable
from typing_extensions import TypeIs

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from convstore._extras import missing_extra, require
from convstore.errors import ConvstoreError, DatabaseError, StoreBusyError

__all__ = [
    "Call",
    "Exec",
    "Op",
    "adopt_async_engine",
    "adopt_engine",
    "busy_errors",
    "checkpoint",
    "checkpoint_async",
    "configure_engine",
    "drive",
    "drive_async",
    "is_async_engine",
    "is_engine",
    "make_async_engine",
    "make_engine",
    "run",
    "run_async",
    "translate",
]

T = TypeVar("T")

_WRITE_OPTION = "convstore_write"


@attrs.frozen
class Exec:
    """One statement for the runner to execute, with its parameters (a list of dicts: executemany).

    ``rows``: send back the driver's rows (a list of tuples, no SQLAlchemy ``Row`` built, no result
    processing), for the wide scans of a turn. On PostgreSQL with psycopg they are fetched with binary
    results, by psycopg directly: a ``bytea`` then comes as its bytes instead of hex text (SQLAlchemy's
    cursor events do not see that statement).
    """

    statement: Executable
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
    rows: bool = False


@attrs.frozen
class Call:
    """A blocking call for the runner to make inside the operation's transaction, between its statements (a
    ``KeyStore`` method, which must happen while the transaction holds its locks): a plain call in the sync
    store, a worker thread in the async one. Its return value is sent back; its exception thrown back in."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()


Op = Generator[Exec | Call, Any, T]
"""A store operation: yields statements (and calls), receives each one's result, returns its value."""


# Engines convstore makes log through a logger of their own, a child of SQLAlchemy's engine logger, so
# they honour the app's logging settings but never pass on result rows (SQLAlchemy logs them at DEBUG, and
# they are the conversation's content). Statements are logged with their parameters hidden.
LOGGING_NAME = "convstore"


class _NoRows(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_NO_ROWS = _NoRows()
logging.getLogger(f"sqlalchemy.engine.Engine.{LOGGING_NAME}").addFilter(_NO_ROWS)


def _engine_args(url: str | sa.URL) -> tuple[sa.URL, dict[str, Any]]:
    parsed = sa.make_url(url)
    kwargs: dict[str, Any] = {"hide_parameters": True, "logging_name": LOGGING_NAME}
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        # One shared connection: an in-memory database exists only inside the connection that made it.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    return parsed, kwargs


@contextmanager
def _driver_extra() -> Iterator[None]:
    """A database driver of an extra that is not installed (psycopg, aiosqlite): say which extra."""
    try:
        yield
    except ImportError as error:
        found = missing_extra(error)
        if found is None:
            raise
        raise found from error


def _require_greenlet() -> None:
    # SQLAlchemy's asyncio layer imports without greenlet and fails at the first statement, with advice
    # about SQLAlchemy's own extra: check first, and name convstore's.
    require("greenlet", needed_by="AsyncStore")


def make_engine(url: str | sa.URL, *, busy_timeout: float = 30.0, synchronous: str = "FULL") -> Engine:
    """Create an engine for ``url`` with convstore's settings (see ``configure_engine``)."""
    parsed, kwargs = _engine_args(url)
    with _driver_extra():
        engine = sa.create_engine(parsed, **kwargs)
    configure_engine(engine, busy_timeout=busy_timeout, synchronous=synchronous)
    return engine


def make_async_engine(
    url: str | sa.URL, *, busy_timeout: float = 30.0, synchronous: str = "FULL"
) -> AsyncEngine:
    """``make_engine`` for SQLAlchemy's asyncio engine (``sqlite+aiosqlite://``, ``postgresql+psycopg://``).

    A plain ``sqlite://`` URL is given the aiosqlite driver.
    """
    _require_greenlet()
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415 -- needs the asyncio extra

    parsed, kwargs = _engine_args(url)
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername == "sqlite+aiosqlite":
        # aiosqlite traces every operation at DEBUG with its parameters (the steps): not through here.
        logger = logging.getLogger("aiosqlite")
        if _NO_ROWS not in logger.filters:
            logger.addFilter(_NO_ROWS)
    kwargs.pop("connect_args", None)
    with _driver_extra():
        engine = create_async_engine(parsed, **kwargs)
    configure_engine(engine.sync_engine, busy_timeout=busy_timeout, synchronous=synchronous)
    return engine


def is_engine(value: object) -> TypeIs[Engine]:
    return isinstance(value, Engine)


def is_async_engine(value: object) -> TypeIs[AsyncEngine]:
    # Without importing sqlalchemy.ext.asyncio, which needs greenlet (the asyncio extra): if that module
    # was never imported, nothing can be an AsyncEngine.
    module = sys.modules.get("sqlalchemy.ext.asyncio")
    return module is not None and isinstance(value, module.AsyncEngine)


def adopt_engine(engine: Engine, *, busy_timeout: float = 30.0, synchronous: str = "FULL") -> Engine:
    """A user's engine, with convstore's connection settings installed."""
    configure_engine(engine, busy_timeout=busy_timeout, synchronous=synchronous)
    return engine


def adopt_async_engine(
    engine: AsyncEngine, *, busy_timeout: float = 30.0, synchronous: str = "FULL"
) -> AsyncEngine:
    """A user's asyncio engine, with convstore's connection settings installed."""
    _require_greenlet()
    configure_engine(engine.sync_engine, busy_timeout=busy_timeout, synchronous=synchronous)
    return engine


@attrs.frozen
class _Settings:
    """What ``configure_engine`` installed on an engine: SQLite's busy timeout (ms) and ``synchronous``."""

    timeout_ms: int
    synchronous: str


# The settings installed on each engine, so that installing them is idempotent: any number of stores may
# share one engine (one per request, say), and its listeners are added once. Weak: an engine the app drops
# is not kept alive here.
_CONFIGURED: weakref.WeakKeyDictionary[Engine, _Settings] = weakref.WeakKeyDictionary()
_CONFIGURING = threading.Lock()


def _root(engine: Engine) -> Engine:
    """The engine an ``engine.execution_options(...)`` copy was made from: listeners belong there (the copy
    shares its pool, and runs the listeners of the engine it came from)."""
    while isinstance(engine, OptionEngine):
        engine = engine._proxied  # SQLAlchemy keeps the parent only here
    return engine


def configure_engine(engine: Engine, *, busy_timeout: float = 30.0, synchronous: str = "FULL") -> None:
    """Install convstore's per-connection settings on an engine (a user's engine too), once.

    SQLite: WAL, foreign keys, a busy timeout, ``synchronous`` (FULL by default: a committed turn survives a
    power loss), and explicit ``BEGIN``/``BEGIN IMMEDIATE``. Other backends need nothing.

    Idempotent: an engine already set up (by another store on it) is left as it is, with its listeners
    added once.

    Raises:
        ValueError: ``synchronous`` is not a SQLite level, or the engine was set up with other settings
            (two stores cannot give one engine two busy timeouts).
    """
    if engine.dialect.name != "sqlite":
        return
    if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
    settings = _Settings(int(busy_timeout * 1000), synchronous.upper())
    engine = _root(engine)
    with _CONFIGURING:
        installed = _CONFIGURED.get(engine)
        if installed is None:
            _install(engine, settings)
            _CONFIGURED[engine] = settings
    if installed is not None and installed != settings:
        raise ValueError(
            f"this engine is set up with busy_timeout={installed.timeout_ms / 1000:g} and "
            f"sqlite_synchronous={installed.synchronous!r} by another store on it; pass the same settings "
            "(or derive the store with store.for_owner(owner))"
        )


def _install(engine: Engine, settings: _Settings) -> None:
    memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun explicitly, below
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {settings.timeout_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {settings.synchronous}")
            # Deleted content is overwritten, not left in free pages of the file.
            cursor.execute("PRAGMA secure_delete = ON")
        finally:
            cursor.close()

    event.listen(engine, "begin", _on_begin)


def _on_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def translate(error: exc.DBAPIError) -> ConvstoreError:
    """Turn a database error no operation handled into a convstore error (no statement parameters in it)."""
    orig = error.orig
    text = str(orig).lower() if orig is not None else ""
    if isinstance(error, exc.OperationalError) and (
        "database is locked" in text or "database is busy" in text
    ):
        return StoreBusyError("the SQLite database stayed locked for longer than the busy timeout")
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in {"55P03", "57014"}:  # lock_not_available, query_canceled (statement/lock timeout)
        return StoreBusyError(f"the database did not grant a lock in time (SQLSTATE {sqlstate})")
    detail = f", SQLSTATE {sqlstate}" if sqlstate else ""
    return DatabaseError(f"database error ({type(orig).__name__ if orig is not None else 'unknown'}{detail})")


@contextmanager
def busy_errors() -> Iterator[None]:
    """Lock timeouts become ``StoreBusyError``; other database errors pass unchanged, for callers that
    explain them better (the schema check on open, whose failures the command line reports as they are)."""
    try:
        yield
    except exc.DBAPIError as error:
        translated = translate(error)
        if isinstance(translated, StoreBusyError):
            raise translated from None
        raise


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


# -- the driver's rows ------------------------------------------------------------------------------------


def _psycopg(dialect: Any) -> bool:
    return dialect.name == "postgresql" and dialect.driver in ("psycopg", "psycopg_async")


@functools.lru_cache(maxsize=64)
def _compiled(statement: Executable, dialect: Any) -> Any:
    return statement.compile(dialect=dialect)  # type: ignore[attr-defined]


def _psycopg_sql(conn: Connection | AsyncConnection, step: Exec) -> tuple[str, Mapping[str, Any]]:
    """The statement as SQLAlchemy would send it to psycopg (named ``%(name)s`` parameters, each cast)."""
    compiled = _compiled(step.statement, conn.dialect)
    if not isinstance(step.params, Mapping | None):
        raise TypeError("Exec(rows=True) takes one mapping of parameters")
    return str(compiled), compiled.construct_params(step.params)


def _driver_error(conn: Connection | AsyncConnection, sql: str, params: Any, error: Exception) -> Exception:
    """A driver's error as SQLAlchemy would have raised it (a ``DBAPIError``), for ``translate``."""
    return exc.DBAPIError.instance(
        sql, params, error, conn.dialect.loaded_dbapi.Error, hide_parameters=True, dialect=conn.dialect
    )


def _result_rows(result: Any) -> list[Any]:
    """The rows of a result as the driver's cursor gives them, then the result closed."""
    try:
        cursor = result.cursor
        return [] if cursor is None else list(cursor.fetchall())
    finally:
        result.close()


def _driver_rows(conn: Connection, step: Exec) -> list[Any]:
    if not _psycopg(conn.dialect):
        return _result_rows(conn.execute(step.statement, step.params))
    sql, params = _psycopg_sql(conn, step)
    driver: Any = conn.connection.driver_connection
    try:
        with driver.cursor(binary=True) as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    except conn.dialect.loaded_dbapi.Error as error:
        raise _driver_error(conn, sql, params, error) from error


async def _driver_rows_async(conn: AsyncConnection, step: Exec) -> list[Any]:
    if not _psycopg(conn.dialect):
        return _result_rows(await conn.execute(step.statement, step.params))
    sql, params = _psycopg_sql(conn, step)
    driver: Any = (await conn.get_raw_connection()).driver_connection
    try:
        async with driver.cursor(binary=True) as cursor:
            await cursor.execute(sql, params)
            return list(await cursor.fetchall())
    except conn.dialect.loaded_dbapi.Error as error:
        raise _driver_error(conn, sql, params, error) from error


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
