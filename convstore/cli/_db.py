"""``db upgrade`` and ``db current``: the database schema, built and upgraded by convstore's migrations."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import convstore
from convstore.cli._common import (
    Parser,
    add_db_option,
    add_keyring_option,
    database_errors,
    display_url,
    examples_epilog,
    load_keyring,
    open_store,
    plural,
    refuse_unusable,
    resolve_db,
)
from convstore.cli._progress import Progress

__all__ = ["register"]


def register(sub: Any) -> None:
    db = sub.add_parser(
        "db",
        help="The database: upgrade its schema, show its revision, check its integrity.",
        description="The database: upgrade its schema, show its revision, check its integrity.",
        epilog=examples_epilog(["convstore db upgrade", "convstore db check sqlite:///chat.db"]),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    actions = db.add_subparsers(dest="action", metavar="ACTION", title="actions", parser_class=Parser)
    actions.required = True
    for name, summary, func, examples in (
        (
            "upgrade",
            "Upgrade a database's schema to this convstore's revision, keeping its data.",
            cmd_upgrade,
            ["convstore db upgrade", "convstore db upgrade postgresql+psycopg://me@db/convstore"],
        ),
        (
            "current",
            "Show a database's schema revision, and whether it is this convstore's.",
            cmd_current,
            ["convstore db current", "convstore db current sqlite:///chat.db"],
        ),
        (
            "check",
            "Verify every stored tree's invariants; one line per problem, exit status 1 if any.",
            cmd_check,
            ["convstore db check", "convstore db check --db chat.db"],
        ),
    ):
        action = actions.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=examples_epilog(examples),
            formatter_class=argparse.RawTextHelpFormatter,
        )
        action.add_argument(
            "url", nargs="?", metavar="URL", help="the database (default: --db, as elsewhere)"
        )
        add_db_option(action)
        if name == "upgrade":
            action.add_argument(
                "--distribute",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="on Citus: distribute every convstore table by conversation id (--distribute), or "
                "leave them local (--no-distribute); by default a new database is distributed and an "
                "existing one is kept as it is",
            )
        if name == "check":
            add_keyring_option(action)
        action.set_defaults(func=func)


# What a migration's long step counts, by its name (revision 0013 counts indexed steps); else conversations.
_UNITS = {"indexing search rows by owner": "steps"}


class _UpgradeProgress:
    """A migration's long step (a backfill) drawn as a progress bar on stderr (``Progress``), one a step."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._bars: dict[str, Progress] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        bar = self._bars.get(what)
        if bar is None:
            bar = self._bars[what] = Progress(
                what, total, unit=_UNITS.get(what, "conversations"), stream=self._stream
            ).__enter__()
        bar.advance(done - bar.done)
        if done >= total:
            bar.__exit__(None, None, None)

    def close(self) -> None:
        for bar in self._bars.values():
            if bar.done < (bar.total or 0):
                bar.__exit__(None, None, None)


def cmd_upgrade(args: argparse.Namespace) -> int:
    url = resolve_db(args.url or args.db)
    progress = _UpgradeProgress()
    with open_store(url, check_schema=False, create=True) as store:
        before = store.schema_revision()
        try:
            store.upgrade(distribute=args.distribute, progress=progress)
        finally:
            progress.close()
        after = store.schema_revision()
    if before == after:
        print(f"{display_url(url)} is at revision {after}, this convstore's: nothing to do")
    else:
        print(f"upgraded {display_url(url)} from revision {before or 'none (empty)'} to {after}")
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    url = resolve_db(args.url or args.db)
    refuse_unusable(url, outdated_ok=True)  # reads the catalog only: nothing is built
    with database_errors(url):
        status = convstore.schema_status(url)
    if status.state == "current":
        state = "this convstore's revision"
    else:
        state = f"this convstore needs {status.head}: run `convstore db upgrade {display_url(url)}`"
    print(f"{status.revision}  ({state})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    url = resolve_db(args.url or args.db)
    with open_store(url, keyring=load_keyring(args.keyring)) as store:
        report = store.check()
    for line in report.lines():
        print(line)
    counted = ", ".join(
        plural(count, noun)
        for count, noun in (
            (report.conversations, "conversation"),
            (report.nodes, "node"),
            (report.branches, "branch"),
            (report.exchanges, "exchange"),
        )
    )
    if report.unopened:
        counted += (
            f"; {plural(report.unopened, 'encrypted conversation')} checked without decrypting "
            "(--keyring FILE or $CONVSTORE_KEYRING decrypts them)"
        )
    if report.ok:
        print(f"{display_url(url)}: ok ({counted}; {len(report.checks)} checks)")
        return 0
    print(f"{display_url(url)}: {plural(len(report.problems), 'problem')} ({counted})", file=sys.stderr)
    return 1
