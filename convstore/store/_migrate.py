"""Schema revisions: Alembic, configured in code, the only way convstore's tables are built.

Opening a store checks the database's revision in one query. An empty database (none of convstore's
tables) is upgraded to head at once; a database at an older revision is refused with ``SchemaOutdatedError``,
which says how to upgrade; a revision this library does not know (a newer convstore wrote it) is refused
with ``SchemaUnknownError``. Upgrades take a lock first (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
PostgreSQL), so two processes opening one new database at once do not both build it.

Alembic itself (about 0.3 s of imports, most of ``import convstore``) is imported only to change a schema:
checking a database against head reads the revision chain from the migration files' ``revision`` and
``down_revision`` assignments (a test compares it with Alembic's ``ScriptDirectory``).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine

from convstore.errors import SchemaOutdatedError, SchemaUnknownError
from convstore.store._citus import distribute_on
from convstore.store._engine import database_errors
from convstore.store._engine._factory import write_options
from convstore.store._schema import PREFIX

__all__ = [
    "VERSION_TABLE",
    "check_schema",
    "check_schema_async",
    "current_revision",
    "downgrade",
    "head_revision",
    "migrations_dir",
    "revision",
    "revision_async",
    "upgrade",
    "upgrade_async",
]

VERSION_TABLE = f"{PREFIX}alembic_version"
_PG_LOCK_KEY = 0x636F6E7673746F72  # "convstor": one advisory lock for schema changes


def migrations_dir() -> Path:
    """Where the migration scripts are: inside the installed wheel, or at the top of a source checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError(f"convstore's migrations are missing (looked in {package / '_migrations'})")


Progress = Callable[[str, int, int], None]
"""Told ``(what, done, total)`` as a long migration step goes (a backfill: conversations done of all)."""


def alembic_config(connection: Connection | None = None, progress: Progress | None = None) -> Config:
    from alembic.config import Config  # noqa: PLC0415 -- Alembic only when a schema changes

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    if progress is not None:
        config.attributes["convstore_progress"] = progress
    return config


def _declared(path: Path) -> dict[str, object]:
    """The module-level ``revision`` and ``down_revision`` of a migration file, read without running it."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in {"revision", "down_revision"}:
            found[target.id] = ast.literal_eval(value)
    return found


def _chain() -> list[str] | None:
    """The revisions oldest first, read from the files; None unless they are one line (then Alembic reads)."""
    parents: dict[str, str | None] = {}
    for path in sorted((migrations_dir() / "versions").glob("*.py")):
        declared = _declared(path)
        revision, parent = declared.get("revision"), declared.get("down_revision")
        if not isinstance(revision, str) or not (parent is None or isinstance(parent, str)):
            return None
        parents[revision] = parent
    heads = set(parents) - set(parents.values())
    if len(heads) != 1:
        return None
    ordered: list[str] = []
    current: str | None = heads.pop()
    while current is not None and current in parents and current not in ordered:
        ordered.append(current)
        current = parents[current]
    return ordered[::-1] if len(ordered) == len(parents) and current is None else None


@lru_cache(maxsize=1)
def _scripts() -> tuple[str, frozenset[str], tuple[str, ...]]:
    """(head, every known revision, revisions oldest first); read once a process."""
    chain = _chain()
    if chain is not None:
        return chain[-1], frozenset(chain), tuple(chain)
    from alembic.script import ScriptDirectory  # noqa: PLC0415 -- branches and merges: Alembic decides

    scripts = ScriptDirectory.from_config(alembic_config())
    heads = scripts.get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"convstore's migrations have {len(heads)} heads; expected one")
    ordered = tuple(rev.revision for rev in reversed(list(scripts.walk_revisions())))
    return heads[0], frozenset(ordered), ordered


def head_revision() -> str:
    """The schema revision this version of convstore needs."""
    return _scripts()[0]


def current_revision(conn: Connection) -> tuple[bool, str | None]:
    """``(initialised, revision)``: whether convstore's version table exists, and the revision in it."""
    # One catalog read decides both facts: another process may commit the schema between two reads.
    ours = [name for name in sa.inspect(conn).get_table_names() if name.startswith(PREFIX)]
    if VERSION_TABLE not in ours:
        if ours:
            raise SchemaUnknownError(
                f"the database has convstore tables ({', '.join(sorted(ours))}) but no {VERSION_TABLE}: "
                "it was not built by convstore's migrations"
            )
        return False, None
    revisions = [row[0] for row in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))]  # noqa: S608 -- constant name
    if len(revisions) > 1:
        raise SchemaUnknownError(f"{VERSION_TABLE} holds {len(revisions)} revisions; expected one")
    if not revisions:
        if len(ours) > 1:
            # Not an old database: an upgrade would build tables that exist. Someone emptied the table.
            raise SchemaUnknownError(
                f"{VERSION_TABLE} is empty but convstore's tables exist: the schema revision is unknown "
                "(do not upgrade: it would build them again); put the revision back with `alembic stamp`"
            )
        return True, None  # only the version table: downgraded to base (an upgrade builds it again)
    return True, revisions[0]


def _verify(initialised: bool, revision: str | None) -> bool:
    """True when the database must be built from scratch; raises when it is not at head."""
    head = _scripts()[0]
    if not initialised:
        return True
    if revision == head:
        return False
    _known(revision)
    raise SchemaOutdatedError(revision, head)


def _known(revision: str | None) -> None:
    """Refuse a revision this library does not know: a newer convstore wrote the database."""
    head, known, _ = _scripts()
    if revision is not None and revision not in known:
        raise SchemaUnknownError(
            f"the database is at schema revision {revision!r}, which this convstore does not know "
            f"(it needs {head}): it was written by a newer convstore (or another program); use that "
            "version, neither this one's upgrade nor its downgrade"
        )


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


# Each step works on one sync Connection; the async store runs the same functions with run_sync.


def check_schema_on(conn: Connection) -> None:
    """Make sure the database is at head: build an empty one, refuse an old or unknown one."""
    with conn.begin():
        needs_build = _verify(*current_revision(conn))
    if needs_build:
        upgrade_on(conn, only_if_empty=True)


def upgrade_on(
    conn: Connection,
    revision: str = "head",
    *,
    only_if_empty: bool = False,
    distribute: bool | None = None,
    progress: Progress | None = None,
) -> None:
    """Upgrade to ``revision`` (head by default), keeping the data, under the schema lock; then, on Citus,
    distribute the tables as ``distribute`` says (see ``_citus``), in the same transaction. ``progress``
    is told how a long step (a backfill) goes."""
    conn.execution_options(**write_options(conn.engine))  # a transaction, also on an engine in autocommit
    with conn.begin():
        _lock(conn)
        initialised, current = current_revision(conn)
        if only_if_empty and initialised:
            # Another process built it while we waited for the lock; just verify.
            _verify(initialised, current)
            return
        _known(current)
        from alembic import command  # noqa: PLC0415 -- Alembic only when a schema changes

        command.upgrade(alembic_config(conn, progress), revision)
        distribute_on(conn, distribute, new=not initialised)


def downgrade_on(conn: Connection, revision: str) -> None:
    """Downgrade to ``revision`` (``"base"`` removes convstore's tables and their data)."""
    conn.execution_options(**write_options(conn.engine))  # a transaction, also on an engine in autocommit
    with conn.begin():
        _lock(conn)
        _known(current_revision(conn)[1])
        from alembic import command  # noqa: PLC0415 -- Alembic only when a schema changes

        command.downgrade(alembic_config(conn), revision)


def revision_on(conn: Connection) -> str | None:
    with conn.begin():
        return current_revision(conn)[1]


def check_schema(engine: Engine) -> None:
    with database_errors(engine.url), engine.connect() as conn:
        check_schema_on(conn)


def upgrade(
    engine: Engine,
    revision: str = "head",
    *,
    distribute: bool | None = None,
    progress: Progress | None = None,
) -> None:
    with database_errors(engine.url), engine.connect() as conn:
        upgrade_on(conn, revision, distribute=distribute, progress=progress)


def downgrade(engine: Engine, revision: str) -> None:
    with database_errors(engine.url), engine.connect() as conn:
        downgrade_on(conn, revision)


def revision(engine: Engine) -> str | None:
    with database_errors(engine.url), engine.connect() as conn:
        return revision_on(conn)


async def check_schema_async(engine: AsyncEngine) -> None:
    with database_errors(engine.url):
        async with engine.connect() as conn:
            await conn.run_sync(check_schema_on)


async def upgrade_async(
    engine: AsyncEngine,
    revision: str = "head",
    *,
    distribute: bool | None = None,
    progress: Progress | None = None,
) -> None:
    with database_errors(engine.url):
        async with engine.connect() as conn:
            await conn.run_sync(
                lambda sync: upgrade_on(sync, revision, distribute=distribute, progress=progress)
            )


async def revision_async(engine: AsyncEngine) -> str | None:
    with database_errors(engine.url):
        async with engine.connect() as conn:
            return await conn.run_sync(revision_on)
