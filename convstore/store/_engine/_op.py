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


def answer(op: Generator[Any, Any, Any], step: Call) -> Any:
    """Make ``step``'s call here and now, and give the operation its return value or its exception; the
    operation's next step."""
    try:
        value = step.function(*step.args)
    except Exception as error:
        return op.throw(error)
    return op.send(value)


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
    # A statement that fails unless the batch's results are ones to commit (the conditions the operation
    # checks in Python after it, written in SQL): with one, a batch that is its write's first step may
    # carry the transaction's BEGIN and COMMIT too (``_committed.run_committed``: PostgreSQL, one round
    # trip for the whole write). When the guard fails, nothing is written and ``Refused`` is thrown in at
    # the ``yield``. Where the batch is not sent so, the guard is not run: the operation's own checks hold.
    guard: Exec | None = None


class Refused(Exception):
    """Thrown into an operation at a guarded ``Batch`` whose guard failed: the transaction rolled back,
    nothing of the batch is written. The operation must raise (it finds out why in a transaction of its
    own)."""


Op = Generator[Exec | Call | Batch, Any, T]
"""A store operation: yields statements (and calls), receives each one's result, returns its value."""
