"""Database errors turned into convstore errors, in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import exc

if TYPE_CHECKING:
    pass

from convstore.errors import ConvstoreError, DatabaseError, StoreBusyError


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
