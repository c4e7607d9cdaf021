"""The driver directly: the store's own statements, compiled once, sent to the driver's cursor and read as
its rows, past SQLAlchemy's per-statement execution (its parameter handling, result objects and events),
which costs more than the statement itself on a short turn; a wide scan's rows fetched by psycopg with
binary results; and a batch of statements sent in one psycopg pipeline (one round trip).

SQLAlchemy still checks the connection out of its pool and begins and commits its transaction: only the
statements take the short way. A statement takes it when its module registered it (``compile_once``: the
constants of ``_statements``, ``_paths`` and the like, never a statement built per call) and nothing is
watching the engine's statements (a ``before_cursor_execute`` listener, as OpenTelemetry's instrumentation
installs, or ``echo``): then each goes through ``Connection.execute`` as before, so that it is seen.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import exc
from sqlalchemy.engine import Connection
from sqlalchemy.sql.base import Executable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

from convstore.store._engine._op import Batch, Exec

# -- the statements that may take the short way ---------------------------------------------------------

_ONCE: dict[int, Executable] = {}  # by id: a module's constants live as long as the process


def compile_once(namespace: Mapping[str, object]) -> None:
    """Register every statement among a module's names (``compile_once(globals())`` at its end) for the
    driver directly: each is compiled once per dialect, and executed past SQLAlchemy's execution path."""
    for value in namespace.values():
        if isinstance(value, Executable):
            _ONCE[id(value)] = value


def _watched(conn: Connection) -> bool:
    """Whether ``conn``'s statements must go through SQLAlchemy: something watches them (the engine's
    statement events, its echo), or SQLAlchemy rewrites them at execution (a ``schema_translate_map``)."""
    dispatch = conn.dispatch
    return bool(
        dispatch.before_cursor_execute
        or dispatch.after_cursor_execute
        or dispatch.before_execute
        or dispatch.after_execute
        or getattr(conn, "_echo", False)
        or conn.get_execution_options().get("schema_translate_map")
    )


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


def _result_rows(result: Any) -> list[Any]:
    """The rows of a result as the driver's cursor gives them, then the result closed."""
    try:
        cursor = result.cursor
        return [] if cursor is None else list(cursor.fetchall())
    finally:
        result.close()


async def _fairy(conn: AsyncConnection) -> Any:
    """The pool's connection under ``conn``: read from its sync connection, without the greenlet hop that
    ``get_raw_connection`` takes, once the connection is open."""
    sync = conn.sync_connection
    return sync.connection if sync is not None else await conn.get_raw_connection()


def _driver_rows(conn: Connection, step: Exec) -> list[Any]:
    if not _psycopg(conn.dialect):
        return _result_rows(conn.execute(step.statement, step.params))
    sql, params = _psycopg_sql(conn, step)
    fairy: Any = conn.connection
    try:
        with fairy.driver_connection.cursor(binary=True) as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    except conn.dialect.loaded_dbapi.Error as error:
        raise _lost(conn, error, fairy, sql, None) from error


async def _driver_rows_async(conn: AsyncConnection, step: Exec) -> list[Any]:
    if not _psycopg(conn.dialect):
        return _result_rows(await conn.execute(step.statement, step.params))
    sql, params = _psycopg_sql(conn, step)
    fairy: Any = await _fairy(conn)
    try:
        async with fairy.driver_connection.cursor(binary=True) as cursor:
            await cursor.execute(sql, params)
            return list(await cursor.fetchall())
    except conn.dialect.loaded_dbapi.Error as error:
        raise await _lost_async(conn, error, fairy, sql, None) from error


# -- statements compiled once, read as the driver's rows -------------------------------------------------


class DriverResult:
    """A statement's result read from the driver: its rows, processed as SQLAlchemy processes them (a row's
    columns by name too, and ``row._mapping``), and its row count. What the operations use of SQLAlchemy's
    ``Result``: ``first()``, ``all()``, ``one()``, the scalars, iteration and ``rowcount``."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def all(self) -> list[Any]:
        return self._rows

    def fetchall(self) -> list[Any]:
        return self._rows

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise exc.NoResultFound("no row") if not self._rows else exc.MultipleResultsFound("rows")
        return self._rows[0]

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise exc.MultipleResultsFound("rows")
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


def _row_class(names: list[str]) -> Any:
    """A named tuple of ``names`` with SQLAlchemy's ``Row._mapping`` (the columns by their own names)."""
    base: Any = collections.namedtuple("row", names, rename=True)  # type: ignore[misc]
    keys = tuple(names)

    def mapping(self: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(keys, self, strict=True))

    return type("row", (base,), {"__slots__": (), "_mapping": property(mapping)})


@attrs.frozen
class _Prepared:
    """A statement compiled once for a dialect (and, for an insert, the columns it is given): its SQL, the
    bind processors of its parameters (and their order, for a positional driver), the type of each result
    column and the row class to read it as; ``direct``: whether the driver can run it as it is (no
    parameter SQLAlchemy expands or renders at execution, no column default computed in Python)."""

    compiled: Any
    sql: str
    binds: tuple[tuple[str, str, Any, Callable[[Any], Any] | None], ...]  # name, key, default, processor
    positions: tuple[str, ...] | None
    columns: tuple[tuple[str, Any], ...]
    row: Any
    direct: bool
    # The result processors, by the type codes of the cursor's description (the same for every run of the
    # statement on SQLite, whose are all None): looked up once, not for each column of each run.
    processors: dict[tuple[Any, ...], list[Any]] = attrs.field(factory=dict, eq=False)


@functools.lru_cache(maxsize=256)
def _prepared(statement: Executable, dialect: Any, keys: tuple[str, ...] | None) -> _Prepared:
    column_keys = None if keys is None else list(keys)
    compiled: Any = statement.compile(dialect=dialect, column_keys=column_keys)  # type: ignore[attr-defined]
    processors = compiled._bind_processors
    binds = tuple(
        (name, bind.key, bind, processors.get(name)) for bind, name in compiled.bind_names.items()
    )
    columns = tuple((entry.keyname, entry.type) for entry in compiled._result_columns or ())
    row = _row_class([name for name, _ in columns]) if columns else None
    positions = tuple(compiled.positiontup) if compiled.positional else None
    direct = not (
        any(bind.expanding or bind.literal_execute for bind in compiled.binds.values())
        or compiled.literal_execute_params
        or compiled.post_compile_params
        or compiled.escaped_bind_names
        or compiled.insert_prefetch
        or compiled.update_prefetch
        or getattr(compiled, "_insertmanyvalues", None) is not None
    )
    return _Prepared(compiled, str(compiled), binds, positions, columns, row, direct)


def _bound(prepared: _Prepared, params: Mapping[str, Any] | None) -> Any:
    """The parameters as the driver takes them, as ``construct_params`` and the bind processors make them
    (a value by its parameter's key or its name, else the parameter's own value), without their generality."""
    given = params or {}
    values: dict[str, Any] = {}
    for name, key, bind, process in prepared.binds:
        if key in given:
            value = given[key]
        elif name in given:
            value = given[name]
        elif bind.required:
            raise exc.InvalidRequestError(f"A value is required for bind parameter {key!r}")
        else:
            value = bind.effective_value
        values[name] = value if process is None else process(value)
    if prepared.positions is not None:
        return tuple([values[name] for name in prepared.positions])
    return values


def _compiled_for(conn: Connection | AsyncConnection, step: Exec) -> tuple[_Prepared, bool]:
    """The statement of ``step`` compiled for ``conn``, and whether it is an executemany."""
    one: Any = step.params
    if one is not None and not isinstance(one, Mapping):
        first = next(iter(one), None)
        return _prepared(step.statement, conn.dialect, None if first is None else tuple(first)), True
    insert = bool(getattr(step.statement, "is_insert", False))
    return _prepared(step.statement, conn.dialect, tuple(one) if one is not None and insert else None), False


def _bind(conn: Connection | AsyncConnection, step: Exec) -> tuple[_Prepared, Any, bool]:
    """The statement of ``step`` compiled for ``conn`` and its parameters bound (a list for executemany)."""
    prepared, many = _compiled_for(conn, step)
    return prepared, _bound_all(prepared, step, many), many


def _bound_all(prepared: _Prepared, step: Exec, many: bool) -> Any:
    if many:
        return [_bound(prepared, each) for each in step.params]  # type: ignore[union-attr,arg-type]
    return _bound(prepared, step.params)  # type: ignore[arg-type]


def _processors(prepared: _Prepared, dialect: Any, description: Any) -> list[Any]:
    codes = tuple([column[1] for column in description])
    found = prepared.processors.get(codes)
    if found is None:
        found = prepared.processors[codes] = [
            type_._cached_result_processor(dialect, code)
            for (_, type_), code in zip(prepared.columns, codes, strict=True)
        ]
    return found


def _read(prepared: _Prepared, dialect: Any, cursor: Any) -> DriverResult:
    """A sync cursor's result. Its ``description`` is read once: psycopg builds its column objects anew
    each time it is read."""
    description = cursor.description
    rows = cursor.fetchall() if description is not None else []
    return _result(prepared, dialect, description, cursor.rowcount, rows)


async def _read_async(prepared: _Prepared, dialect: Any, cursor: Any, raw: bool) -> Any:
    """``_read`` for an asyncio cursor; ``raw``: its rows as the driver gives them."""
    description = cursor.description
    rows = list(await cursor.fetchall()) if description is not None else []
    return rows if raw else _result(prepared, dialect, description, cursor.rowcount, rows)


def _result(
    prepared: _Prepared, dialect: Any, description: Any, rowcount: int, rows: list[Any]
) -> DriverResult:
    if description is None or prepared.row is None:
        return DriverResult([], rowcount)
    processors = _processors(prepared, dialect, description)
    make = prepared.row._make
    if any(processors):
        rows = [
            make([value if p is None else p(value) for p, value in zip(processors, row, strict=True)])
            for row in rows
        ]
    else:
        rows = [make(row) for row in rows]
    return DriverResult(rows, rowcount)


def _failed(dialect: Any, fairy: Any, sql: str, error: Exception, cursor: Any) -> exc.DBAPIError:
    """A driver's error as SQLAlchemy raises it (``DBAPIError``), which says whether the connection is lost
    (``connection_invalidated``): then the caller invalidates it, as SQLAlchemy does, so that the pool
    does not hand it out again."""
    return exc.DBAPIError.instance(  # type: ignore[return-value]  # the driver error: a DBAPIError
        sql,
        None,
        error,
        dialect.loaded_dbapi.Error,
        hide_parameters=True,
        dialect=dialect,
        connection_invalidated=bool(dialect.is_disconnect(error, fairy, cursor)),
    )


def _lost(conn: Connection, error: Exception, fairy: Any, sql: str, cursor: Any) -> exc.DBAPIError:
    wrapped = _failed(conn.dialect, fairy, sql, error, cursor)
    if wrapped.connection_invalidated and not conn.invalidated:
        conn.invalidate(wrapped)
    return wrapped


async def _lost_async(
    conn: AsyncConnection, error: Exception, fairy: Any, sql: str, cursor: Any
) -> exc.DBAPIError:
    wrapped = _failed(conn.dialect, fairy, sql, error, cursor)
    if wrapped.connection_invalidated and not conn.invalidated:
        await conn.invalidate(wrapped)
    return wrapped


def _short_way(conn: Connection, step: Exec, watched: bool | None) -> tuple[_Prepared, Any, bool] | None:
    if id(step.statement) not in _ONCE or (_watched(conn) if watched is None else watched):
        return None
    prepared, many = _compiled_for(conn, step)
    return (prepared, _bound_all(prepared, step, many), many) if prepared.direct else None


def execute(conn: Connection, step: Exec, *, watched: bool | None = None) -> Any:
    """One statement on ``conn``: through the driver when it may (``compile_once``), else SQLAlchemy's
    ``execute``. A ``DriverResult`` or SQLAlchemy's ``Result``; the driver's rows for ``Exec(rows=True)``.
    ``watched``: ``_watched(conn)``, when the caller knows it (it holds for a transaction)."""
    bound = _short_way(conn, step, watched)
    if bound is None:
        return _driver_rows(conn, step) if step.rows else conn.execute(step.statement, step.params)
    prepared, params, many = bound
    fairy: Any = conn.connection
    driver = fairy.driver_connection
    cursor = driver.cursor(binary=True) if step.rows and _psycopg(conn.dialect) else driver.cursor()
    try:
        if many:
            cursor.executemany(prepared.sql, params)
        else:
            cursor.execute(prepared.sql, params)
        if not step.rows:
            return _read(prepared, conn.dialect, cursor)
        return list(cursor.fetchall()) if cursor.description is not None else []
    except conn.dialect.loaded_dbapi.Error as error:
        raise _lost(conn, error, fairy, prepared.sql, cursor) from error
    finally:
        cursor.close()


def _one_hop(driver: Any) -> bool:
    """Whether ``driver`` is the aiosqlite this knows, whose thread takes a function (``_execute``): else a
    statement goes the adapter's way."""
    return callable(getattr(driver, "_execute", None))


async def _through_sqlalchemy(conn: AsyncConnection, step: Exec) -> Any:
    if step.rows:
        return await _driver_rows_async(conn, step)
    return await conn.execute(step.statement, step.params)


async def execute_async(conn: AsyncConnection, step: Exec, *, watched: bool | None = None) -> Any:
    """``execute`` on an asyncio connection: the driver's own coroutines (psycopg's, aiosqlite's), no
    greenlet hop into SQLAlchemy for the statement."""
    sync = conn.sync_connection
    bound = None if sync is None else _short_way(sync, step, watched)
    if bound is None or sync is None:
        return await _through_sqlalchemy(conn, step)
    prepared, params, many = bound
    fairy: Any = sync.connection
    driver = fairy.driver_connection
    if not _psycopg(conn.dialect):
        if not _one_hop(driver):
            return await _through_sqlalchemy(conn, step)
        return await _aiosqlite(conn, fairy, step, prepared, params, many)
    cursor = driver.cursor(binary=True) if step.rows else driver.cursor()
    try:
        if many:
            await cursor.executemany(prepared.sql, params)
        else:
            await cursor.execute(prepared.sql, params)
        return await _read_async(prepared, conn.dialect, cursor, step.rows)
    except conn.dialect.loaded_dbapi.Error as error:
        raise await _lost_async(conn, error, fairy, prepared.sql, cursor) from error
    finally:
        await cursor.close()


def _sqlite_statement(connection: Any, sql: str, params: Any, many: bool) -> tuple[list[Any], Any, int]:
    """One statement on a ``sqlite3`` connection, in aiosqlite's thread: its rows, description, row count."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
        rows = cursor.fetchall() if cursor.description is not None else []
        return rows, cursor.description, cursor.rowcount
    finally:
        cursor.close()


async def _aiosqlite(  # noqa: PLR0917 -- execute_async's parts
    conn: AsyncConnection, fairy: Any, step: Exec, prepared: _Prepared, params: Any, many: bool
) -> Any:
    """A statement through aiosqlite in one trip to its thread (its cursor's methods take one each)."""
    driver = fairy.driver_connection
    try:
        rows, description, rowcount = await driver._execute(
            _sqlite_statement, driver._conn, prepared.sql, params, many
        )
    except conn.dialect.loaded_dbapi.Error as error:
        raise await _lost_async(conn, error, fairy, prepared.sql, None) from error
    return rows if step.rows else _result(prepared, conn.dialect, description, rowcount, rows)


# -- batches: one pipeline on psycopg ---------------------------------------------------------------------


def run_batch(conn: Connection, batch: Batch) -> list[Any]:
    """The statements of ``batch`` in one pipeline (psycopg), or one after the other; their results."""
    if not _psycopg(conn.dialect):
        watched = _watched(conn)
        return [execute(conn, step, watched=watched) for step in batch.statements]
    fairy: Any = conn.connection
    driver = fairy.driver_connection
    bound = [_bind(conn, step) for step in batch.statements]
    cursors = [driver.cursor(binary=step.rows) for step in batch.statements]
    try:
        with driver.pipeline():
            for cursor, (prepared, params, many) in zip(cursors, bound, strict=True):
                if many:
                    cursor.executemany(prepared.sql, params)
                else:
                    cursor.execute(prepared.sql, params)
        return [
            list(cursor.fetchall())
            if step.rows
            else _read(prepared, conn.dialect, cursor)
            for step, cursor, (prepared, _, _) in zip(batch.statements, cursors, bound, strict=True)
        ]
    except conn.dialect.loaded_dbapi.Error as error:
        raise _lost(conn, error, fairy, bound[0][0].sql, None) from error
    finally:
        for cursor in cursors:
            cursor.close()


async def run_batch_async(conn: AsyncConnection, batch: Batch) -> list[Any]:
    """``run_batch`` on an asyncio connection."""
    if not _psycopg(conn.dialect):
        watched = conn.sync_connection is not None and _watched(conn.sync_connection)
        return [await execute_async(conn, step, watched=watched) for step in batch.statements]
    fairy: Any = await _fairy(conn)
    driver = fairy.driver_connection
    bound = [_bind(conn, step) for step in batch.statements]
    cursors = [driver.cursor(binary=step.rows) for step in batch.statements]
    try:
        async with driver.pipeline():
            for cursor, (prepared, params, many) in zip(cursors, bound, strict=True):
                if many:
                    await cursor.executemany(prepared.sql, params)
                else:
                    await cursor.execute(prepared.sql, params)
        results: list[Any] = []
        for step, cursor, (prepared, _, _) in zip(batch.statements, cursors, bound, strict=True):
            results.append(await _read_async(prepared, conn.dialect, cursor, step.rows))
    except conn.dialect.loaded_dbapi.Error as error:
        raise await _lost_async(conn, error, fairy, bound[0][0].sql, None) from error
    else:
        return results
    finally:
        for cursor in cursors:
            await cursor.close()
