"""Alembic environment for convstore.

convstore builds its Alembic ``Config`` in code (``convstore/store/_migrate.py``) and passes the live
connection through ``config.attributes["connection"]``; there is no alembic.ini. The version table has its
own name so convstore can share a database with an app that uses Alembic for its own tables, and only
convstore's tables are compared by autogenerate.
"""

from __future__ import annotations

from alembic import context

from convstore.store._schema import PREFIX, metadata

VERSION_TABLE = f"{PREFIX}alembic_version"


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    if type_ == "table":
        return bool(name) and str(name).startswith(PREFIX) and name != VERSION_TABLE
    return True


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "convstore migrations run through convstore.Store.upgrade() or `convstore db upgrade`"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
