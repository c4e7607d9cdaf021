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
from convstore._extras import MissingExtraError, missing_extra
from convstore._ids import MIN_ENDING, is_id
from convstore.conversation._frontend import open_default

__all__ = [
    "DB_ENV",
    "KEYRING_ENV",
    "CliError",
    "Parser",
    "add_db_option",
    "confirm",
    "default_db_path",
    "describe_age",
    "display_url",
    "free_branch_name",
    "keyring_from_env",
    "load_keyring",
    "missing_sqlite_file",
    "open_conversation",
    "open_store",
    "parse_duration",
    "plural",
    "resolve_conversation",
    "resolve_db",
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
        extra = missing_extra(error)  # a driver convstore knows: name the pip install that brings it
        if extra is not None:
            raise CliError(f"{shown}: {extra}") from None
        raise CliError(f"the driver for {shown} is not installed ({error.name})") from None
    except exc.DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else type(error).__name__
        raise CliError(f"cannot use the database {shown}: {reason}") from None
    except convstore.DatabaseError as error:  # the store's translation of the same failures
        raise CliError(f"cannot use the database {shown}: {error}") from None
    except convstore.SchemaError as error:
        raise CliError(f"{shown}: {error}") from None
    except IsADirectoryError:
        raise CliError(f"{shown} names a folder: give a database file (or a URL)") from None


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


def refuse_unusable(url: str, *, create: bool = False, outdated_ok: bool = False) -> None:
    """Look at the database's schema (reading its catalog only: nothing is built or changed) and refuse,
    as a sentence, what this command must not use: a database without convstore's schema (unless
    ``create``: only the commands that write a conversation or the schema build one), an outdated schema
    (unless ``outdated_ok``: ``db upgrade``), and a schema a newer convstore wrote."""
    shown = display_url(url)
    with database_errors(url):
        status = convstore.schema_status(url)
    if status.state == "missing" and not create:
        path = missing_sqlite_file(url)
        raise CliError(
            f"no database at {path or shown} (`convstore chat`, `convstore import` or `convstore db "
            "upgrade` creates one)"
        )
    if status.state in {"empty", "foreign"} and not create:
        raise CliError(f"{shown} is not a convstore database; `convstore db upgrade {shown}` creates one")
    if status.state == "newer":
        raise CliError(
            f"{shown} was written by a newer convstore (schema revision {status.revision}; this convstore "
            f"{convstore.__version__} knows up to {status.head}): upgrade convstore to use it"
        )
    if status.state == "broken":
        raise CliError(f"{shown} holds convstore tables but is not usable: {status.detail}")
    if status.state == "outdated" and not outdated_ok:
        raise CliError(
            f"{shown} is at schema revision {status.revision}, this convstore needs {status.head}: "
            f"run `convstore db upgrade {shown}` (back it up first)"
        )


@contextmanager
def open_store(
    url: str,
    *,
    check_schema: bool = True,
    create: bool = False,
    keyring: convstore.Keyring | None = None,
) -> Iterator[convstore.Store]:
    """The store at ``url``, closed afterwards. Its schema is looked at first (``refuse_unusable``): a
    command that only reads or maintains a store refuses a database that is not convstore's, and leaves it
    as it was. Database failures inside the block become ``CliError``s too. Its keyring is ``keyring``
    (from a command's ``--keyring FILE``) or else the keys of ``$CONVSTORE_KEYRING``, or none.

    Only with ``create`` (the commands that write a conversation or the schema: chat, import, demo, db
    upgrade) is an empty database built, or a missing SQLite file made.
    """
    refuse_unusable(url, create=create, outdated_ok=not check_schema)
    with database_errors(url):
        store = convstore.Store(
            url, check_schema=check_schema, keyring=keyring if keyring is not None else keyring_from_env()
        )
        with store:
            yield store


KEYRING_HELP = (
    "a JSON keyring file that opens encrypted conversations, "
    '{"active": "K1", "keys": {"K1": "<32 random bytes, base64>"}} '
    f"(default: ${KEYRING_ENV}, K1=BASE64[,K2=BASE64...], the first key active)"
)
KEYRING_HINT = f"pass --keyring FILE or set ${KEYRING_ENV}"


def add_keyring_option(parser: argparse.ArgumentParser, help_text: str = KEYRING_HELP) -> None:
    """``--keyring FILE``, on every command that reads or writes conversation content."""
    parser.add_argument("--keyring", metavar="FILE", default=None, help=help_text)


def load_keyring(path: str | None) -> convstore.Keyring | None:
    """The ``convstore.Keyring`` of a JSON keyring file, or None without one. Errors name the file only."""
    if path is None:
        return None
    try:
        document = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"--keyring: no keyring file at {path}") from None
    except IsADirectoryError:
        raise CliError(f"--keyring: {path} is a folder, not a keyring file") from None
    except (OSError, UnicodeDecodeError, ValueError):
        raise CliError(f"--keyring: {path} is not a JSON keyring file") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    active = document.get("active") if isinstance(document, dict) else None
    if not isinstance(keys, dict) or not isinstance(active, str):
        raise CliError(
            f'--keyring: {path}: a keyring file is {{"active": KEY_ID, "keys": {{KEY_ID: BASE64, ...}}}}'
        )
    decoded: dict[str, bytes] = {}
    for key_id, text in keys.items():
        try:
            decoded[key_id] = base64.b64decode(str(text), validate=True)
        except (binascii.Error, ValueError):
            raise CliError(f"--keyring: {path}: key {key_id!r} is not base64") from None
    try:
        return convstore.Keyring(decoded, active=active)
    except ValueError as error:
        raise CliError(f"--keyring: {path}: {error}") from None


MIN_SUFFIX = MIN_ENDING  # the fewest last characters of an id accepted for it
_ID_TEXT = re.compile(r"^[0-9a-f-]+$")


def match_id(text: str, candidates: Iterable[str], *, what: str, where: str) -> str:
    """The one id among ``candidates`` that is ``text`` or ends in it (``MIN_SUFFIX`` characters or more).

    Raises:
        CliError: ``text`` is not (part of) an id, none matches, or several do.
    """
    wanted = _id_text(text, what=what, where=where)
    found = [candidate for candidate in candidates if candidate == wanted or candidate.endswith(wanted)]
    exact = [candidate for candidate in found if candidate == wanted]
    if exact:
        return exact[0]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise CliError(f"{text!r} is the ending of {len(found)} {what}s: give more of the id")
    raise CliError(f"no {what} {'is' if is_id(wanted) else 'ends in'} {wanted!r} ({where} lists them)")


def _id_text(text: str, *, what: str, where: str) -> str:
    wanted = text.strip().lower()
    if not _ID_TEXT.match(wanted) or (len(wanted) < MIN_SUFFIX and not is_id(wanted)):
        raise CliError(
            f"not a {what} id: {text!r} (give the id, or its last {MIN_SUFFIX} or more characters, "
            f"as {where} prints it)"
        )
    return wanted


def resolve_conversation(store: convstore.Store, text: str) -> str:
    """A conversation id from its full id or the last 8+ characters of it, as ``ls`` shows them."""
    wanted = _id_text(text, what="conversation", where="`convstore ls`")
    try:
        return store.resolve_id(wanted)
    except convstore.AmbiguousIdError as error:
        raise CliError(
            f"{text!r} is the ending of {error.matches} conversations: give more of the id"
        ) from None
    except convstore.ConversationNotFoundError:
        if is_id(wanted):
            raise CliError(f"conversation {wanted} not found (`convstore ls` lists them)") from None
        raise CliError(f"no conversation ends in {wanted!r} (`convstore ls` lists them)") from None


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
    return open_default(store, conversation_id, branch)


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


MAX_AGE = timedelta(days=36500)  # a hundred years: older than any conversation convstore can hold


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as a ``timedelta`` (argparse ``type=``), at most
    ``MAX_AGE``."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (a positive number and a unit: 30d, 12h, 90m, 45s, 2w)"
        )
    amount, unit = int(match.group(1)), match.group(2)
    too_long = f"{text.strip()} is longer than the longest age, {MAX_AGE.days}d (100 years)"
    try:
        value = timedelta(**{_UNITS[unit]: amount})
    except OverflowError:
        raise argparse.ArgumentTypeError(too_long) from None
    if value > MAX_AGE:
        raise argparse.ArgumentTypeError(too_long)
    return value


def describe_age(age: timedelta) -> str:
    """An age as a person says it: ``30 days``, ``12 hours``, ``90 minutes``."""
    seconds = int(age.total_seconds())
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return plural(seconds // size, unit)
    return plural(seconds, "second")


def plural(count: int, noun: str) -> str:
    """``1 conversation``, ``2 conversations``, ``3 branches``."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun}{'es' if noun.endswith(('ch', 'sh', 's', 'x')) else 's'}"


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
