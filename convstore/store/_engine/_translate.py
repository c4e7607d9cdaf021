"""Database errors turned into convstore errors, in one place: at open, in every operation, in maintenance.

Each driver error becomes a ``ConvstoreError`` whose message starts with what a person can act on (the disk
is full, the database is read-only, permission is denied, the directory or the database is missing, the
server refused the connection or lost it, a lock was held past the busy timeout), followed by the engine's
own message: its first line only (on Citus it names the node that failed). PostgreSQL puts the values of a
failing row in the lines after it (``DETAIL``), and those can be step content; SQLAlchemy's statement and
parameters are never included.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import exc

from convstore.errors import (
    ConvstoreError,
    DatabaseError,
    OutcomeUnknownError,
    SchemaUnknownError,
    StoreBusyError,
)

__all__ = ["database_errors", "outcome_unknown", "translate"]

_DETAIL_CHARS = 300

# What each cause tells a person, first in the message.
_SAY = {
    "disk_full": "the disk is full",
    "read_only": "the database is read-only",
    "permission_denied": "permission denied",
    "directory_missing": "the database's directory does not exist",
    "database_missing": "the database does not exist",
    "connection_refused": "the database server refused the connection (is it running there?)",
    "connection_lost": "the connection to the database was lost",
    "authentication_failed": "the database refused the credentials",
    "io_error": "the disk failed to read or write (is it full, or failing?)",
}

# PostgreSQL's SQLSTATEs (and classes) that name a cause.
_SQLSTATES = {
    "53100": "disk_full",
    "25006": "read_only",
    "42501": "permission_denied",
    "3D000": "database_missing",
    "28000": "authentication_failed",
    "28P01": "authentication_failed",
    "57P01": "connection_lost",  # admin_shutdown: pg_terminate_backend, a fast shutdown
    "57P02": "connection_lost",
    "57P03": "connection_refused",  # cannot_connect_now: starting up, shutting down
}

# SQLite's extended error names (Python 3.11: sqlite3.Error.sqlite_errorname).
_SQLITE = {
    "SQLITE_FULL": "disk_full",
    "SQLITE_READONLY": "read_only",
    "SQLITE_READONLY_DIRECTORY": "read_only",
    "SQLITE_READONLY_DBMOVED": "read_only",
    "SQLITE_PERM": "permission_denied",
    "SQLITE_AUTH": "permission_denied",
}

# Phrases in a driver's message (connection failures carry no SQLSTATE), lower case.
_PHRASES = (
    ("no space left on device", "disk_full"),
    ("database or disk is full", "disk_full"),
    ("could not extend file", "disk_full"),
    ("readonly database", "read_only"),
    ("read-only", "read_only"),
    ("permission denied", "permission_denied"),
    ("connection refused", "connection_refused"),
    ("does not exist", "database_missing"),
    ("terminating connection", "connection_lost"),
    ("server closed the connection", "connection_lost"),
    ("connection is closed", "connection_lost"),
    ("consuming input failed", "connection_lost"),
    ("connection to server", "connection_lost"),
    ("connection to the remote node", "connection_lost"),
    ("connection not open", "connection_lost"),
    ("the connection is lost", "connection_lost"),
    ("ssl syscall error", "connection_lost"),
    ("password authentication failed", "authentication_failed"),
)


def _first_line(orig: BaseException | None) -> str:
    if orig is None:
        return ""
    text = str(orig).strip().splitlines()
    line = text[0].strip() if text else ""
    return line if len(line) <= _DETAIL_CHARS else line[:_DETAIL_CHARS] + "..."


def _sqlite_file_cause(url: sa.URL | None) -> str:  # noqa: PLR0911 -- one answer a cause
    """Why SQLite could not open (or write) its file, from the file system: the directory is missing, the
    mount is read-only, the directory or file is not writable, or its disk is full."""
    if url is None or url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return ""
    path = os.path.abspath(url.database)
    folder = os.path.dirname(path)
    try:
        os.stat(folder)
        stat = os.statvfs(folder)
    except FileNotFoundError:
        return "directory_missing"
    except PermissionError:
        return "permission_denied"
    except OSError:
        return ""
    if stat.f_flag & os.ST_RDONLY:
        return "read_only"
    if stat.f_bavail * stat.f_frsize < 64 * 1024:
        return "disk_full"
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return "permission_denied"
    return ""


def _cause(orig: BaseException | None, sqlstate: str | None, url: sa.URL | None) -> str:  # noqa: PLR0911
    if sqlstate in _SQLSTATES:
        return _SQLSTATES[sqlstate]
    if sqlstate is not None and sqlstate.startswith("08"):  # connection_exception
        return "connection_lost"
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str):
        if name in _SQLITE:
            return _SQLITE[name]
        if name.startswith(("SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_READONLY")):
            found = _sqlite_file_cause(url)
            if found:
                return found
            return "io_error" if name.startswith("SQLITE_IOERR") else ""
    text = str(orig).lower() if orig is not None else ""
    for phrase, cause in _PHRASES:
        if phrase in text:
            return cause
    if "unable to open database file" in text:
        return _sqlite_file_cause(url)
    return ""


def _sqlstate(orig: BaseException | None) -> str | None:
    found = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if found is None:
        found = getattr(orig, "sqlite_errorname", None)
    return found if isinstance(found, str) else None


def translate(error: exc.DBAPIError, url: sa.URL | None = None) -> ConvstoreError:
    """Turn a database error no operation handled into a convstore error (no statement parameters in it).

    Args:
        error: SQLAlchemy's wrapping of the driver's error.
        url: The engine's URL: for SQLite, the file whose directory and disk are examined to say why it
            could not be opened or written.
    """
    orig = error.orig
    text = str(orig).lower() if orig is not None else ""
    sqlstate = _sqlstate(orig)
    if isinstance(error, exc.OperationalError) and (
        "database is locked" in text or "database is busy" in text or "database table is locked" in text
    ):
        return StoreBusyError("the SQLite database stayed locked for longer than the busy timeout")
    if sqlstate in {"55P03", "57014"}:  # lock_not_available, query_canceled (statement/lock timeout)
        return StoreBusyError(
            f"the database did not grant a lock within the busy timeout (SQLSTATE {sqlstate}: "
            f"{_first_line(orig)})"
        )
    cause = _cause(orig, sqlstate, url)
    detail = _first_line(orig)
    kind = type(orig).__name__ if orig is not None else "unknown"
    code = f", {sqlstate}" if sqlstate else ""
    said = _SAY.get(cause, "database error")
    return DatabaseError(f"{said} ({kind}{code}: {detail})", cause=cause, detail=detail, sqlstate=sqlstate)


def outcome_unknown(error: exc.DBAPIError, url: sa.URL | None = None) -> ConvstoreError:
    """A failure while a write transaction was committing: its outcome is unknown (``OutcomeUnknownError``),
    unless the engine says at once that nothing was committed (a lock or serialisation failure)."""
    translated = translate(error, url)
    if isinstance(translated, StoreBusyError) or (url is not None and url.get_backend_name() == "sqlite"):
        return translated  # SQLite's COMMIT is local: when it fails, nothing was committed
    orig = error.orig
    sqlstate = _sqlstate(orig)
    if sqlstate is not None and sqlstate[:2] in {"23", "40"}:  # integrity, rollback: not committed
        return translated
    cause = translated.cause if isinstance(translated, DatabaseError) else ""
    return OutcomeUnknownError(cause=cause or "connection_lost", detail=_first_line(orig), sqlstate=sqlstate)


@contextmanager
def database_errors(url: sa.URL | None = None) -> Iterator[None]:
    """Every database error raised inside becomes a convstore error (see ``translate``); alembic's refusal
    of a revision it does not know becomes ``SchemaUnknownError``."""
    try:
        yield
    except exc.DBAPIError as error:
        raise translate(error, url) from None
    except Exception as error:
        if not _alembic_refused(error):
            raise
        raise SchemaUnknownError(
            f"alembic refused the revision: {_first_line(error)}; was the database written by a newer "
            "convstore, or is the revision misspelt?"
        ) from None


def _alembic_refused(error: BaseException) -> bool:
    """Whether ``error`` is Alembic's ``CommandError``, without importing Alembic: a store whose schema is at
    head never imports it (``import convstore`` and an open stay cheap), and an error Alembic raised was
    raised after Alembic was imported."""
    util = sys.modules.get("alembic.util")
    command_error = getattr(util, "CommandError", None) if util is not None else None
    return command_error is not None and isinstance(error, command_error)
