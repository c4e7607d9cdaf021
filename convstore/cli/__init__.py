"""The ``convstore`` command: try convstore, chat, inspect and move conversations, manage the schema.

One module a command group, each with ``register(subparsers)``; ``main`` parses, runs the command, and
turns a user's mistake into one line on stderr (``convstore: error: ...``) with a non-zero exit status,
never a traceback. ``CONVSTORE_DEBUG=1`` shows the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

import convstore
from convstore.cli import _browse, _chat, _db, _demo, _lifecycle, _render, _replay, _transfer
from convstore.cli._common import DB_ENV, CliError, Parser, add_db_option, default_db_path
from convstore.web import _command as _serve

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
    for module in (_demo, _chat, _browse, _transfer, _replay, _db, _serve, _lifecycle):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``convstore`` with ``argv`` (default: the process's arguments); returns the exit status."""
    args = build_parser().parse_args(argv)
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


def _report(error: Exception) -> int:
    if isinstance(error, CliError):
        return _fail(str(error), error.code)
    if isinstance(error, convstore.NotFoundError):
        return _fail(str(error), 1)
    if isinstance(error, convstore.ConvstoreError):
        return _fail(f"{type(error).__name__}: {error}", 1)
    if isinstance(error, OSError) and error.filename is not None:
        # A file named on the command line that cannot be used (a name too long, a folder, no permission).
        return _fail(f"cannot use {error.filename}: {error.strerror or type(error).__name__}", 1)
    if os.environ.get("CONVSTORE_DEBUG"):
        traceback.print_exc()
    return _fail(f"unexpected {type(error).__name__}: {error} (set CONVSTORE_DEBUG=1 for the traceback)", 1)


def _fail(message: str, code: int) -> int:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"convstore: error: {first}", file=sys.stderr)
    return code
