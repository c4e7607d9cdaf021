"""The ``convstore`` command: try convstore, chat, inspect and move conversations, manage the schema.

One module a command group, each with ``register(subparsers)``; ``main`` parses, runs the command, and
turns a user's mistake into one line on stderr (``convstore: error: ...``) with a non-zero exit status,
never a traceback. ``CONVSTORE_DEBUG=1`` shows the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import codecs
import io
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import convstore
from convstore.cli import _browse, _chat, _db, _demo, _lifecycle, _render, _replay, _search, _serve, _transfer
from convstore.cli._common import (
    DB_ENV,
    KEYRING_HINT,
    CliError,
    Parser,
    add_db_option,
    default_db_path,
)

__all__ = ["build_parser", "main"]

_EPILOG = f"""\
The store is a SQLite file, {default_db_path()}, unless --db URL or ${DB_ENV} names another
(sqlite:///path/chat.db or postgresql+psycopg://user@host/db). `convstore demo` takes the tour offline.
Ids: a conversation's or a node's full id, or its last 8 or more characters. COMMAND --help for more.

examples:
  convstore demo
  convstore chat --offline
  convstore ls
  convstore show 5f3c9a2e41d7 --tree"""
_PLAIN = """
Output is plain text: pip install "convstore[cli]" adds colour, tables and progress bars (rich)."""


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (every command with its own --help)."""
    parser = Parser(
        prog="convstore",
        description="Keep Gemini Interactions API conversations on the client, as trees you can branch.",
        epilog=_EPILOG if _render.HAVE_RICH else _EPILOG + _PLAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"convstore {convstore.__version__}")
    add_db_option(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for module in (_demo, _chat, _browse, _search, _transfer, _replay, _db, _serve, _lifecycle):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``convstore`` with ``argv`` (default: the process's arguments); returns the exit status."""
    args = build_parser().parse_args(argv)
    _replace_unencodable()
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`convstore export | head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:  # the one place where any error becomes a line
        return _report(error)
    return status


def _replace_unencodable() -> None:
    """Stored text with a lone surrogate (no UTF-8 stream can carry one) prints as U+FFFD, the replacement
    character, instead of ending the command in a UnicodeEncodeError."""
    codecs.register_error("convstore-replace", _replacement)
    for stream in (sys.stdout, sys.stderr):
        utf8 = (getattr(stream, "encoding", "") or "").lower().replace("-", "") == "utf8"
        if isinstance(stream, io.TextIOWrapper) and utf8 and stream.errors in {"strict", "surrogateescape"}:
            stream.reconfigure(encoding="utf-8", errors="convstore-replace")


def _replacement(error: UnicodeError) -> tuple[bytes, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return "\ufffd".encode(), error.end  # as bytes: UTF-8's encoder takes only ASCII text back


def _report(error: Exception) -> int:
    message = _sentence(error)
    if message is None:
        if os.environ.get("CONVSTORE_DEBUG"):
            traceback.print_exc()
        message = f"unexpected {type(error).__name__}: {error} (set CONVSTORE_DEBUG=1 for the traceback)"
    return _fail(message, error.code if isinstance(error, CliError) else 1)


_SENTENCES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[[Any], str]], ...] = (
    ((CliError, convstore.NotFoundError), str),
    (
        convstore.KeyringRequiredError,
        lambda e: f"conversation {e.conversation_id} is encrypted: {KEYRING_HINT} to read it",
    ),
    (
        convstore.EncryptionError,
        lambda e: f"{type(e).__name__}: {e} ({KEYRING_HINT} with the key that wrote it)",
    ),
    (convstore.ConvstoreError, lambda e: f"{type(e).__name__}: {e}"),
    # A file named on the command line that cannot be used (a folder, a name too long, no permission).
    (IsADirectoryError, lambda e: f"{e.filename} is a folder: give a file"),
    (OSError, lambda e: f"cannot use {e.filename}: {e.strerror or type(e).__name__}"),
)


def _sentence(error: Exception) -> str | None:
    """The line that says what went wrong, or None for an error nobody foresaw."""
    for kind, say in _SENTENCES:
        if isinstance(error, kind) and (not isinstance(error, OSError) or error.filename is not None):
            return say(error)
    return None


def _fail(message: str, code: int) -> int:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"convstore: error: {first}", file=sys.stderr)
    return code
