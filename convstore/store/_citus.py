"""Distribution on Citus: every convstore table sharded by its conversation id, colocated.

Every convstore table is keyed by conversation first (``_schema``), so on a PostgreSQL database with the
``citus`` extension each can be a distributed table whose distribution column is the conversation id:
``convstore_conversations`` by ``id``, every other table by ``conversation_id``, all colocated with
``convstore_conversations``. A single conversation's rows then live on one worker, and each statement of a
single-conversation operation (an append, a history read, a fork) is routed there whole: no two-phase
commit. The version table stays a local table on the coordinator.

``distribute_on`` runs after the migrations, in their transaction and under their lock, so it is the one
hook every migration shares: a table a later migration creates is distributed the same way, without a
line about Citus in the migration itself. Whether a database is distributed is read from the database:

- ``distribute=None`` (the default): a new database is distributed; an existing one follows what it is.
  When its conversations table is distributed, any convstore table that is not (one a migration just made)
  is distributed beside it; when it is a local table (someone upgraded with ``distribute=False``), nothing
  changes, so the choice made once sticks across upgrades.
- ``distribute=True``: distribute every convstore table that is not distributed yet, data included (an
  existing single-server schema moved onto the cluster).
- ``distribute=False``: never distribute (you distribute by hand, or use schema-based sharding, where
  Citus places the tables itself and they are already in its catalog).

A database without Citus is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from convstore.store._schema import PREFIX

__all__ = ["CONVERSATIONS", "distribute_on", "distributed_tables", "has_citus"]

CONVERSATIONS = f"{PREFIX}conversations"
_VERSION_TABLE = f"{PREFIX}alembic_version"


def has_citus(conn: Connection) -> bool:
    """Whether the database has the ``citus`` extension (never true on SQLite)."""
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")).first()
    return found is not None


def distributed_tables(conn: Connection, tables: Sequence[str]) -> set[str]:
    """Which of ``tables`` (names found on the search path) Citus already places: hash-distributed,
    single-shard (schema-based sharding) or reference tables alike."""
    rows = conn.execute(
        sa.text(
            "SELECT t.name FROM unnest(CAST(:names AS text[])) AS t(name) "
            "JOIN pg_dist_partition p ON p.logicalrelid = to_regclass(quote_ident(t.name))"
        ),
        {"names": list(tables)},
    )
    return {row.name for row in rows}


def _convstore_tables(conn: Connection) -> list[str]:
    names = sa.inspect(conn).get_table_names()
    return sorted(name for name in names if name.startswith(PREFIX) and name != _VERSION_TABLE)


def _in_dependency_order(conn: Connection, tables: list[str]) -> list[str]:
    """Conversations first, then each table after every convstore table its foreign keys refer to: Citus
    distributes a table with a foreign key only once the table it refers to is distributed."""
    inspector = sa.inspect(conn)
    refers = {
        name: {fk["referred_table"] for fk in inspector.get_foreign_keys(name)} - {name} for name in tables
    }
    ordered: list[str] = []
    pending = [name for name in tables if name != CONVERSATIONS]
    if CONVERSATIONS in tables:
        ordered.append(CONVERSATIONS)
    while pending:
        ready = [name for name in pending if refers[name] <= set(ordered) | (refers[name] - set(tables))]
        if not ready:
            raise RuntimeError(f"convstore tables refer to each other in a cycle: {', '.join(pending)}")
        ordered += ready
        pending = [name for name in pending if name not in ready]
    return ordered


def _column_of(conn: Connection, table: str) -> str:
    if table == CONVERSATIONS:
        return "id"
    columns = {column["name"] for column in sa.inspect(conn).get_columns(table)}
    if "conversation_id" not in columns:
        # Every convstore table is keyed by conversation (see _schema); a migration that breaks the rule
        # must not leave a table the cluster cannot route.
        raise RuntimeError(f"{table} has no conversation_id column: it cannot be distributed by conversation")
    return "conversation_id"


def distribute_on(conn: Connection, distribute: bool | None = None, *, new: bool = False) -> list[str]:
    """Distribute convstore's tables on a Citus database (see the module's doc for ``distribute``); ``new``
    says the migrations just built the schema from nothing. Returns the tables it distributed."""
    if distribute is False or not has_citus(conn):
        return []
    tables = _convstore_tables(conn)
    placed = distributed_tables(conn, tables)
    if distribute is None and not new and CONVERSATIONS not in placed:
        return []  # a local schema on a Citus database: left as it was chosen
    todo = [name for name in _in_dependency_order(conn, tables) if name not in placed]
    for name in todo:
        colocate = "default" if name == CONVERSATIONS else CONVERSATIONS
        conn.execute(
            sa.text(
                "SELECT create_distributed_table(CAST(:table AS regclass), :column, colocate_with => :with)"
            ),
            {"table": name, "column": _column_of(conn, name), "with": colocate},
        )
    for name in todo:
        # Rows that were there before are copied into the shards; the coordinator's copy goes.
        conn.execute(
            sa.text("SELECT truncate_local_data_after_distributing_table(CAST(:table AS regclass))"),
            {"table": name},
        )
    return todo
