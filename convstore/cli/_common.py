"""What every command shares: the argument parser, where the store is, opening it, and user errors.

A user's mistake (an unknown id, a bad URL or duration, a missing file, an outdated schema) becomes a
``CliError``; ``main`` prints it as one line, ``convstore: error: ...``, and exits non-zero. Nothing here
prints step content in an error: errors name ids, files and line numbers.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy import exc

import convstore
from convstore._extras import MissingExtraError
from convstore._ids import is_id
from convstore.store._engine import run
from convstore.store._reads import list_branches

__all__ = [
    "DB_ENV",
    "KEYRING_ENV",
    "CliError",
    "Parser",
    "add_db_option",
    "confirm",
    "default_db_path",
    "display_url",
    "free_branch_name",
    "keyring_from_env",
    "load_keyring",
    "missing_sqlite_file",
    "open_conversation",
    "open_store",
    "parse_duration",
    "resolve_conversation",
    "resolve_db",
    "short_id",
]

DB_ENV = "CONVSTORE_DB"
KEYRING_ENV = "CONVSTORE_KEYRING"  # "ID=BASE64,ID=BASE64": 32-byte application keys, the first one active


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


def keyring_from_env() -> convstore.Keyring | None:
    """The keyring of ``$CONVSTORE_KEYRING`` (``ID=BASE64[,ID=BASE64...]``, the first key active), or None.

    A malformed value is refused naming the variable and the entry's place, never a key.
    """
    value = os.environ.get(KEYRING_ENV)
    if not value:
        return None
    keys: dict[str, bytes] = {}
    for number, entry in enumerate(value.split(","), start=1):
        key_id, _, encoded = entry.strip().partition("=")
        try:
            keys[key_id] = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise CliError(f"{KEYRING_ENV}: entry {number} is not ID=BASE64") from None
    try:
        return convstore.Keyring(keys, active=next(iter(keys)))
    except ValueError as error:
        raise CliError(f"{KEYRING_ENV}: {error}") from None


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
    except convstore.DatabaseError as error:  # the store's translation of the same failures
        raise CliError(f"cannot use the database {shown}: {error}") from None
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
def open_store(
    url: str,
    *,
    check_schema: bool = True,
    create: bool = False,
    keyring: convstore.Keyring | None = None,
) -> Iterator[convstore.Store]:
    """The store at ``url``, closed afterwards (an outdated one is refused with the command that upgrades
    it). Database failures inside the block become ``CliError``s too. Its keyring is ``keyring`` (from a
    command's ``--keyring FILE``) or else the keys of ``$CONVSTORE_KEYRING``, or none.

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
        store = convstore.Store(
            url, check_schema=check_schema, keyring=keyring if keyring is not None else keyring_from_env()
        )
        with store:
            yield store


def add_keyring_option(parser: argparse.ArgumentParser) -> None:
    """``--keyring FILE``, for the commands that read encrypted conversations."""
    parser.add_argument(
        "--keyring",
        metavar="FILE",
        default=None,
        help="a JSON keyring to read encrypted conversations (default: the keys of "
        f"${KEYRING_ENV}, ID=BASE64[,ID=BASE64...]):\n"
        '{"active": "K1", "keys": {"K1": "<32 bytes, base64>"}}',
    )


def load_keyring(path: str | None) -> convstore.Keyring | None:
    """The ``convstore.Keyring`` of a JSON keyring file, or None without one. Errors name the file only."""
    if path is None:
        return None
    try:
        document = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"no keyring file at {path}") from None
    except (OSError, UnicodeDecodeError, ValueError):
        raise CliError(f"{path}: not a JSON keyring file") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    active = document.get("active") if isinstance(document, dict) else None
    if not isinstance(keys, dict) or not isinstance(active, str):
        raise CliError(f'{path}: a keyring file is {{"active": KEY_ID, "keys": {{KEY_ID: BASE64, ...}}}}')
    decoded: dict[str, bytes] = {}
    for key_id, text in keys.items():
        try:
            decoded[key_id] = base64.b64decode(str(text), validate=True)
        except (binascii.Error, ValueError):
            raise CliError(f"{path}: key {key_id!r} is not base64") from None
    try:
        return convstore.Keyring(decoded, active=active)
    except ValueError as error:
        raise CliError(f"{path}: {error}") from None


SHORT_ID = 12  # how much of an id the command line shows; any 8 or more last characters are accepted
MIN_SUFFIX = 8
_ID_TEXT = re.compile(r"^[0-9a-f-]+$")


def short_id(full: str) -> str:
    """The last characters of an id, as listings show it."""
    return full[-SHORT_ID:]


def match_id(text: str, candidates: Iterable[str], *, what: str, where: str) -> str:
    """The one id among ``candidates`` that is ``text`` or ends in it (``MIN_SUFFIX`` characters or more).

    Raises:
        CliError: ``text`` is not (part of) an id, none matches, or several do.
    """
    wanted = text.strip().lower()
    if not _ID_TEXT.match(wanted) or (len(wanted) < MIN_SUFFIX and not is_id(wanted)):
        raise CliError(
            f"not a {what} id: {text!r} (give the id, or its last {MIN_SUFFIX} or more characters, "
            f"as {where} prints it)"
        )
    found = [candidate for candidate in candidates if candidate == wanted or candidate.endswith(wanted)]
    exact = [candidate for candidate in found if candidate == wanted]
    if exact:
        return exact[0]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise CliError(f"{text!r} is the ending of {len(found)} {what}s: give more of the id")
    raise CliError(f"no {what} {'is' if is_id(wanted) else 'ends in'} {wanted!r} ({where} lists them)")


def resolve_conversation(store: convstore.Store, text: str) -> str:
    """A conversation id from its full id or the last 8+ characters of it, as ``ls`` shows them."""
    wanted = text.strip().lower()
    if is_id(wanted):
        return wanted  # opening it says whether it exists
    return match_id(
        text, (info.id for info in store.iter_conversations()), what="conversation", where="`convstore ls`"
    )


def confirm(question: str, *, assume_yes: bool) -> bool:
    """Ask a yes/no question on a terminal (default no); without one, or with ``assume_yes``, go ahead."""
    if assume_yes or not sys.stdin.isatty():
        return True
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    return answer.strip().lower() in {"y", "yes"}


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


def examples_epilog(examples: Sequence[str]) -> str | None:
    """The ``examples:`` block that ends a command's --help."""
    if not examples:
        return None
    return "examples:\n" + "\n".join(f"  {example}" for example in examples)


def positive_int(text: str) -> int:
    """argparse ``type=`` for a count."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def command(
    sub: Any, name: str, summary: str, description: str | None = None, *, examples: Sequence[str] = ()
) -> argparse.ArgumentParser:
    """A subcommand parser with ``--db``, its one-line summary in the command list and atop its --help,
    and its examples at the end of its --help (each a whole command line, ``convstore ...``)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description or summary,
        epilog=examples_epilog(examples),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    add_db_option(parser)
    return parser
