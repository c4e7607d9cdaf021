"""The driver's rows: a wide scan's rows fetched by psycopg directly, with binary results; and a batch of
statements sent in one psycopg pipeline (one round trip)."""

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


# -- batches: one pipeline on psycopg ---------------------------------------------------------------------


class DriverResult:
    """A statement's result read from psycopg in a pipeline: its rows, processed as SQLAlchemy processes
    them (a row's columns by name too), and its row count. What the operations use of SQLAlchemy's
    ``Result``: ``first()``, ``all()``, iteration and ``rowcount``."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def all(self) -> list[Any]:
        return self._rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


@attrs.frozen
class _Prepared:
    """A statement compiled once for a dialect (and, for an insert, the columns it is given): its SQL, the
    bind processors of its parameters, and the type of each result column and the row class to read it as."""

    compiled: Any
    sql: str
    binds: Mapping[str, Callable[[Any], Any]]
    columns: tuple[tuple[str, Any], ...]
    row: Any


@functools.lru_cache(maxsize=256)
def _prepared(statement: Executable, dialect: Any, keys: tuple[str, ...] | None) -> _Prepared:
    column_keys = None if keys is None else list(keys)
    compiled: Any = statement.compile(dialect=dialect, column_keys=column_keys)  # type: ignore[attr-defined]
    binds = dict(compiled._bind_processors)
    columns = tuple((entry.keyname, entry.type) for entry in compiled._result_columns or ())
    names = [name for name, _ in columns]
    row = collections.namedtuple("row", names, rename=True) if columns else None
    return _Prepared(compiled, str(compiled), binds, columns, row)


def _bound(prepared: _Prepared, params: Mapping[str, Any] | None) -> dict[str, Any]:
    values: dict[str, Any] = prepared.compiled.construct_params(params)
    for name, process in prepared.binds.items():
        if name in values:
            values[name] = process(values[name])
    return values


def _bind(conn: Connection | AsyncConnection, step: Exec) -> tuple[_Prepared, Any, bool]:
    """The statement of ``step`` compiled for ``conn`` and its parameters bound (a list for executemany)."""
    one: Any = step.params
    if one is not None and not isinstance(one, Mapping):
        params = list(one)
        prepared = _prepared(step.statement, conn.dialect, tuple(params[0]) if params else None)
        return prepared, [_bound(prepared, each) for each in params], True
    insert = bool(getattr(step.statement, "is_insert", False))
    prepared = _prepared(step.statement, conn.dialect, tuple(one) if one is not None and insert else None)
    return prepared, _bound(prepared, one), False


def _processors(prepared: _Prepared, dialect: Any, description: Any) -> list[Any]:
    return [
        type_._cached_result_processor(dialect, column[1])
        for (_, type_), column in zip(prepared.columns, description, strict=True)
    ]


def _read(prepared: _Prepared, dialect: Any, cursor: Any, rows: list[Any]) -> DriverResult:
    if cursor.description is None or prepared.row is None:
        return DriverResult([], cursor.rowcount)
    processors = _processors(prepared, dialect, cursor.description)
    make = prepared.row._make
    if any(processors):
        rows = [
            make([value if p is None else p(value) for p, value in zip(processors, row, strict=True)])
            for row in rows
        ]
    else:
        rows = [make(row) for row in rows]
    return DriverResult(rows, cursor.rowcount)


def _one_by_one(conn: Connection, batch: Batch) -> list[Any]:
    return [
        _driver_rows(conn, step) if step.rows else conn.execute(step.statement, step.params)
        for step in batch.statements
    ]


def run_batch(conn: Connection, batch: Batch) -> list[Any]:
    """The statements of ``batch`` in one pipeline (psycopg), or one after the other; their results."""
    if not _psycopg(conn.dialect):
        return _one_by_one(conn, batch)
    driver: Any = conn.connection.driver_connection
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
            else _read(prepared, conn.dialect, cursor, cursor.fetchall() if cursor.description else [])
            for step, cursor, (prepared, _, _) in zip(batch.statements, cursors, bound, strict=True)
        ]
    except conn.dialect.loaded_dbapi.Error as error:
        raise _driver_error(conn, bound[0][0].sql, None, error) from error
    finally:
        for cursor in cursors:
            cursor.close()


async def run_batch_async(conn: AsyncConnection, batch: Batch) -> list[Any]:
    """``run_batch`` on an asyncio connection."""
    if not _psycopg(conn.dialect):
        return [
            await _driver_rows_async(conn, step)
            if step.rows
            else await conn.execute(step.statement, step.params)
            for step in batch.statements
        ]
    driver: Any = (await conn.get_raw_connection()).driver_connection
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
            rows = list(await cursor.fetchall()) if cursor.description is not None else []
            results.append(rows if step.rows else _read(prepared, conn.dialect, cursor, rows))
    except conn.dialect.loaded_dbapi.Error as error:
        raise _driver_error(conn, bound[0][0].sql, None, error) from error
    else:
        return results
    finally:
        for cursor in cursors:
            await cursor.close()
