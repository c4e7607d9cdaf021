"""What every command shares: the argument parser, where the store is, opening it, and user errors.

A user's mistake (an unknown id, a bad URL or duration, a missing file, an outdated schema) becomes a
``CliError``; ``main`` prints it as one line, ``convstore: error: ...``, and exits non-zero. Nothing here
prints step content in an error: errors name ids, files and line numbers.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy import exc

import convstore
from convstore._extras import MissingExtraError
from convstore.store._engine import run
from convstore.store._ops import list_branches

__all__ = [
    "DB_ENV",
    "CliError",
    "Parser",
    "add_db_option",
    "default_db_path",
    "display_url",
    "free_branch_name",
    "missing_sqlite_file",
    "open_conversation",
    "open_store",
    "parse_duration",
    "resolve_db",
]

DB_ENV = "CONVSTORE_DB"


class CliError(Exception):
    """A user's mistake or an unmet condition: printed as one line, then exit with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (``convstore: error: ...``), never the usage block."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see `{self.prog} --help`)"
        self.exit(2, f"convstore: error: {message}{hint}\n")


def add_db_option(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--db`` on the top-level parser and on each command, so it may come before or after the command."""
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None if top else argparse.SUPPRESS,
        help=f"database URL or SQLite file path (default: ${DB_ENV}, else {default_db_path()})",
    )


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/convstore/convstore.db``, else ``~/.local/share/convstore/convstore.db``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "convstore" / "convstore.db"


def resolve_db(value: str | None) -> str:
    """The database URL: ``--db``, else ``$CONVSTORE_DB``, else the default file (its folder made here).

    A value without ``://`` is a SQLite file path.
    """
    chosen = value or os.environ.get(DB_ENV)
    if not chosen:
        path = default_db_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in chosen:
        return f"sqlite:///{Path(chosen).expanduser().resolve()}"
    return chosen


def display_url(url: str) -> str:
    """The URL with any password hidden."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<not a URL>"


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn failures to reach or read a database into one-line ``CliError``s."""
    shown = display_url(url)
    try:
        yield
    except exc.NoSuchModuleError:  # an ArgumentError too: first
        raise CliError(f"no database driver for {shown} (sqlite:// or postgresql+psycopg://)") from None
    except exc.ArgumentError:
        raise CliError(
            f"not a database URL: {shown} (e.g. sqlite:///chat.db, postgresql+psycopg://...)"
        ) from None
    except MissingExtraError as error:  # a ModuleNotFoundError too: first
        raise CliError(f"{shown}: {error}") from None
    except ModuleNotFoundError as error:
        raise CliError(f"the driver for {shown} is not installed ({error.name})") from None
    except exc.DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else type(error).__name__
        raise CliError(f"cannot use the database {shown}: {reason}") from None
    except convstore.SchemaError as error:
        raise CliError(f"{shown}: {error}") from None


def missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL when no such file exists yet (opening it would create it), else None."""
    try:
        parsed = sa.make_url(url)
    except exc.ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):  # a URI filename: SQLite's own business
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


@contextmanager
def open_store(url: str, *, check_schema: bool = True, create: bool = False) -> Iterator[convstore.Store]:
    """The store at ``url``, closed afterwards (an outdated one is refused with the command that upgrades
    it). Database failures inside the block become ``CliError``s too.

    A SQLite file that does not exist is refused, rather than an empty database left behind a mistyped
    path, unless ``create``: the commands that write a conversation or the schema (chat, import, demo,
    db upgrade) build an empty database there.
    """
    if not create and (path := missing_sqlite_file(url)) is not None:
        raise CliError(
            f"no database at {path} (`convstore chat`, `convstore import` or `convstore db upgrade` "
            "creates one)"
        )
    with database_errors(url):
        store = convstore.Store(url, check_schema=check_schema)
        with store:
            yield store


def open_conversation(
    store: convstore.Store, conversation_id: str, branch: str | None = None
) -> convstore.Conversation:
    """A conversation on ``branch``; without one, on ``main`` or else its oldest branch."""
    if branch is not None:
        return store.conversation(conversation_id, branch)
    try:
        return store.conversation(conversation_id)
    except convstore.BranchNotFoundError:
        branches = run(store.engine, list_branches(conversation_id), write=False)
        return store.conversation(conversation_id, branches[0].name)


def free_branch_name(conv: convstore.Conversation, wanted: str) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3``... whichever no branch of the conversation has."""
    taken = {branch.name for branch in conv.branches()}
    base = wanted[:240]
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as a ``timedelta`` (argparse ``type=``)."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (a positive number and a unit: 30d, 12h, 90m, 45s, 2w)"
        )
    amount, unit = int(match.group(1)), match.group(2)
    try:
        return timedelta(**{_UNITS[unit]: amount})
    except OverflowError:
        raise argparse.ArgumentTypeError(f"duration too long: {text!r}") from None


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def positive_int(text: str) -> int:
    """argparse ``type=`` for a count."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def command(sub: Any, name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser with ``--db``, its one-line summary in the command list and atop its --help."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description or summary, formatter_class=argparse.RawTextHelpFormatter
    )
    add_db_option(parser)
    return parser
