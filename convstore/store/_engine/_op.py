"""What a store operation is: a generator of statements (``Exec``) and blocking calls (``Call``)."""

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


Op = Generator[Exec | Call, Any, T]
"""A store operation: yields statements (and calls), receives each one's result, returns its value."""
