"""The driver's rows: a wide scan's rows fetched by psycopg directly, with binary results."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc
from sqlalchemy.engine import Connection
from sqlalchemy.sql.base import Executable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

from convstore.store._engine._op import Exec

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
