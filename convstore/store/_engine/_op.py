"""What a store operation is: a generator of statements (``Exec``, ``Batch``) and blocking calls
(``Call``)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, TypeVar

import attrs
from sqlalchemy.sql.base import Executable

T = TypeVar("T")


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


@attrs.frozen
class Batch:
    """Statements sent together: on PostgreSQL with psycopg in one pipeline (one round trip for all of
    them), elsewhere one after the other. The operation receives the list of their results; a database
    error on any of them is thrown back in at the ``yield`` (the statements after it did not run, and on
    PostgreSQL the transaction is aborted: the operation must raise).

    A statement of a batch sent through psycopg's pipeline returns the driver's rows (``Exec.rows``), or
    for the others a ``DriverResult``: the rows with SQLAlchemy's result processing (ids as text, times
    as aware datetimes), ``first()``, ``all()``, ``rowcount``. An executemany's parameter dicts must all
    have the same keys.
    """

    statements: tuple[Exec, ...]


Op = Generator[Exec | Call | Batch, Any, T]
"""A store operation: yields statements (and calls), receives each one's result, returns its value."""
