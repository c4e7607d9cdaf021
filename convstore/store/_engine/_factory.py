"""Engines: made or adopted with convstore's settings (SQLite pragmas, explicit ``BEGIN``, logging that never
passes on rows)."""

from __future__ import annotations

import logging
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.base import OptionEngine
from sqlalchemy.pool import StaticPool
from typing_extensions import TypeIs

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

from convstore._extras import missing_extra, require
from convstore.store._engine._fastpath import _lost, _watched
from convstore.store._engine._trips import IN_TRIPS, OWN_LISTENERS

_WRITE_OPTION = "convstore_write"
_WRITE: dict[str, Any] = {_WRITE_OPTION: True}
_WRITE_IN_AUTOCOMMIT: dict[str, Any] = {_WRITE_OPTION: True, "isolation_level": "READ COMMITTED"}


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


def write_options(engine: Engine) -> dict[str, Any]:
    """The execution options of a connection of ``engine`` that runs a write transaction: marked a write
    (SQLite begins it with ``BEGIN IMMEDIATE``); on a PostgreSQL engine made in autocommit
    (``create_engine(..., isolation_level="AUTOCOMMIT")`` or ``.execution_options(isolation_level=
    "AUTOCOMMIT")``), in PostgreSQL's default isolation level, the one the store's statements are written
    for: SQLAlchemy's ``begin()`` sends no ``BEGIN`` in autocommit, so each statement of a write would
    commit alone, and a refused write would leave what its first statements wrote. The connection goes
    back to the pool in autocommit. (SQLite's driver is in autocommit on every engine: the store begins its
    transactions itself.)"""
    if engine.dialect.name != "postgresql":
        return _WRITE
    dialect: Any = engine.dialect
    level = (
        engine.get_execution_options().get("isolation_level")
        or dialect.isolation_level
        # create_engine(isolation_level=...): where SQLAlchemy 2 keeps it to set on each new connection
        or getattr(dialect, "_on_connect_isolation_level", None)
    )
    return _WRITE_IN_AUTOCOMMIT if level == "AUTOCOMMIT" else _WRITE


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
    power loss), and explicit ``BEGIN``/``BEGIN IMMEDIATE``. PostgreSQL: ``lock_timeout`` set to the busy
    timeout on each new connection, so that a statement waiting for a lock gives up after it (the store
    then raises ``StoreBusyError``, as SQLite's busy timeout does). Other backends need nothing.

    Idempotent: an engine already set up (by another store on it) is left as it is, with its listeners
    added once.

    Raises:
        ValueError: ``synchronous`` is not a SQLite level, or the engine was set up with other settings
            (two stores cannot give one engine two busy timeouts).
    """
    if engine.dialect.name == "postgresql":
        _configure_postgres(_root(engine), int(busy_timeout * 1000))
        return
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


def _configure_postgres(engine: Engine, timeout_ms: int) -> None:
    """``lock_timeout`` on every new connection (a session setting: no statement more per transaction).
    The first store on an engine sets it; another store on the same engine shares it."""
    with _CONFIGURING:
        if engine in _CONFIGURED:
            return
        _CONFIGURED[engine] = _Settings(timeout_ms, "")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = getattr(dbapi_connection, "autocommit", None)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET lock_timeout = {max(timeout_ms, 1)}")
        finally:
            cursor.close()
        if autocommit is False:
            dbapi_connection.commit()  # the SET opened a transaction (psycopg): keep the setting, end it


def _wal_mode(cursor: Any, timeout_ms: int) -> None:
    """``PRAGMA journal_mode = WAL``, tried again while another connection holds the file: the first
    connections to a new database race to switch it, and SQLite answers the losers "locked" at once,
    without its busy handler. Within the busy timeout they wait for each other instead."""
    deadline = time.monotonic() + timeout_ms / 1000
    pause = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except Exception as error:
            text = str(error).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() + pause > deadline:
                raise
        else:
            return
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


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
                _wal_mode(cursor, settings.timeout_ms)
            cursor.execute(f"PRAGMA synchronous = {settings.synchronous}")
            # Deleted content is overwritten, not left in free pages of the file.
            cursor.execute("PRAGMA secure_delete = ON")
        finally:
            cursor.close()

    event.listen(engine, "begin", _on_begin)
    if engine.dialect.driver == "aiosqlite":
        _rollback_only_if_begun(engine.dialect)


def _rollback_only_if_begun(dialect: Any) -> None:
    """An aiosqlite connection is rolled back (the pool's reset when it goes back, a transaction's end) only
    if it is in a transaction, as ``sqlite3`` itself decides in aiosqlite's thread: without the trip there,
    which would cost every operation one more wake of that thread and of the event loop (``_trips``)."""
    rollback = dialect.do_rollback

    def do_rollback(dbapi_connection: Any) -> None:
        driver: Any = getattr(dbapi_connection, "driver_connection", None)
        if getattr(driver, "_connection", None) is None or driver.in_transaction:
            rollback(dbapi_connection)  # not known here, closed (aiosqlite's own error), or a transaction

    dialect.do_rollback = do_rollback


def _on_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(_WRITE_OPTION, False)
    sql = "BEGIN IMMEDIATE" if write else "BEGIN"
    if _watched(conn):  # seen by whoever watches the statements
        conn.exec_driver_sql(sql)
        return
    fairy: Any = conn.connection
    if fairy.info.get(IN_TRIPS) and fairy.driver_connection.in_transaction:
        return  # begun by an operation's trip to aiosqlite's thread, which SQLAlchemy joins (_trips)
    cursor = fairy.dbapi_connection.cursor()
    try:
        cursor.execute(sql)
    except conn.dialect.loaded_dbapi.Error as error:
        raise _lost(conn, error, fairy, sql, cursor) from error  # as exec_driver_sql raises it
    finally:
        cursor.close()


OWN_LISTENERS.add(_on_begin)
