"""Migrations are the only way the schema is built, and they agree with the table definitions."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import REPO, model, user

import convstore
from convstore import SchemaOutdatedError, SchemaUnknownError
from convstore.store import _migrate
from convstore.store._schema import PREFIX, metadata
from convstore.testing import Emulator


def _diff(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": lambda name, type_, _: (
                    type_ != "table"
                    or (
                        name.startswith(PREFIX)
                        and name != _migrate.VERSION_TABLE
                        # The search index differs by backend (FTS5, tsvector): tests/store/test_search.py.
                        and not name.startswith(f"{PREFIX}search")
                    )
                ),
            },
        )
        return compare_metadata(context, metadata)


def test_migrations_build_exactly_the_tables_the_code_defines(store):
    assert _diff(store.engine) == []


def test_there_is_one_head_and_revisions_are_sequential():
    scripts = ScriptDirectory.from_config(_migrate.alembic_config())
    assert len(scripts.get_heads()) == 1
    revisions = [rev.revision for rev in reversed(list(scripts.walk_revisions()))]
    assert revisions == [f"{i:04d}" for i in range(1, len(revisions) + 1)]
    assert _migrate.head_revision() == revisions[-1]


def test_an_empty_database_is_built_at_head(db_url):
    with convstore.Store(db_url) as store:
        assert store.schema_revision() == _migrate.head_revision()


def _all_earlier_revisions() -> list[str]:
    scripts = ScriptDirectory.from_config(_migrate.alembic_config())
    ordered = [rev.revision for rev in reversed(list(scripts.walk_revisions()))]
    return ["base", *ordered[:-1]]


@pytest.mark.parametrize("revision", _all_earlier_revisions())
def test_an_older_database_is_refused_until_upgraded(db_url, revision):
    with convstore.Store(db_url) as store:
        if revision != "base":
            conv = store.create_conversation(system_instruction='Be "brief".\n', metadata={"k": 1})
            conv.append([user("kept across the upgrade"), model("yes")])
        _migrate.downgrade(store.engine, revision)
    with pytest.raises(SchemaOutdatedError) as raised:
        convstore.Store(db_url)
    assert "convstore db upgrade" in str(raised.value)
    assert raised.value.current == (None if revision == "base" else revision)
    with convstore.Store(db_url, check_schema=False) as old:
        old.upgrade()
    with convstore.Store(db_url) as upgraded:
        assert upgraded.schema_revision() == _migrate.head_revision()
        if revision != "base":
            kept = upgraded.conversation(conv.id)
            assert kept.history() == [user("kept across the upgrade"), model("yes")]
            assert (kept.system_instruction, kept.metadata) == ('Be "brief".\n', {"k": 1})


def test_a_revision_from_a_newer_convstore_is_refused(db_url):
    with convstore.Store(db_url) as store, store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {_migrate.VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(SchemaUnknownError, match="9999"):
        convstore.Store(db_url)


def test_convstore_tables_without_a_version_table_are_refused(db_url):
    with convstore.Store(db_url) as store, store.engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {_migrate.VERSION_TABLE}"))
    with pytest.raises(SchemaUnknownError, match="not built by convstore"):
        convstore.Store(db_url)


def test_other_tables_in_the_database_are_left_alone(db_url):
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE app_users (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('apps_own_revision')"))
    engine.dispose()
    with convstore.Store(db_url) as store:
        store.create_conversation()
        with store.engine.connect() as conn:
            assert (
                conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
                == "apps_own_revision"
            )


def test_a_user_engine_is_used_and_not_disposed(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'mine.db'}")
    with convstore.Store(engine) as store:
        store.create_conversation().append([user("hi")])
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM convstore_nodes")).scalar() == 1
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the sources")
def test_the_wheel_ships_the_migrations(wheel_names):
    names = wheel_names
    shipped = {Path(n).name for n in names if n.startswith("convstore/_migrations/")}
    expected = {p.name for p in (REPO / "migrations").rglob("*.py")} | {"script.py.mako"}
    assert expected <= shipped
    assert "convstore/py.typed" in names


def _rows_at_head(url: str, client) -> dict[str, list[dict]]:
    """Every table's rows of a store at head that uses every table (an exchange record, a summary, forks)."""
    with convstore.Store(url) as store:
        conv = store.create_conversation(model="gemini-3-flash-preview", system_instruction="brief")
        conv.append([user("first"), model("one")])
        conv.send("second", client=client)
        conv.fork(at=conv.nodes()[0].id, branch="side").append([user("other way")])
        with store.engine.begin() as conn:
            node = conv.nodes()[1]
            conn.execute(
                sa.insert(metadata.tables[f"{PREFIX}summaries"]).values(
                    conversation_id=conv.id,
                    node_id=node.id,
                    payload="[]",
                    token_count=0,
                    created_at=node.created_at,
                )
            )
        assert store.check().ok
        with store.engine.connect() as conn:
            return {
                name: [dict(row._mapping) for row in conn.execute(sa.select(table))]
                for name, table in metadata.tables.items()
            }


@pytest.mark.parametrize("revision", _all_earlier_revisions()[1:])
def test_data_written_at_an_older_revision_survives_upgrade_and_round_trips(db_url, tmp_path, revision):
    """A database built by the old revision's own migrations, holding rows that revision could hold, upgrades
    to head with check() clean; then down to the old revision and up again, the data kept each time."""
    with httpx.Client(transport=Emulator().transport()) as http:
        client = convstore.InteractionsClient("test-key", http_client=http)
        rows = _rows_at_head(f"sqlite:///{tmp_path / 'source.db'}", client)
    engine = sa.create_engine(db_url)
    try:
        _migrate.upgrade(engine, revision)
        old = sa.MetaData()
        old.reflect(engine)
        with engine.begin() as conn:
            for name in metadata.tables:  # parents first: the definitions are in dependency order
                if name not in old.tables:
                    continue
                table = old.tables[name]
                kept = [{k: v for k, v in row.items() if k in table.c} for row in rows[name]]
                if kept:
                    # Through today's column types (UUIDs, UTC times), restricted to the old columns.
                    subset = sa.Table(
                        name,
                        sa.MetaData(),
                        *(c._copy() for c in metadata.tables[name].c if c.name in table.c),
                    )
                    conn.execute(sa.insert(subset), kept)
        conversation_id = rows[f"{PREFIX}conversations"][0]["id"]
        expected = None
        for _ in range(2):
            with convstore.Store(db_url, check_schema=False) as store:
                store.upgrade()
            with convstore.Store(db_url) as store:
                report = store.check()
                assert report.ok, report.lines()
                conv = store.conversation(conversation_id)
                found = (conv.history(), store.conversation(conversation_id, "side").history())
                assert found[0][:2] == [user("first"), model("one")]
                assert found[1] == [user("first"), user("other way")]
                assert expected in (None, found)
                expected = found
                assert report.nodes == len(rows[f"{PREFIX}nodes"])
                _migrate.downgrade(store.engine, revision)
    finally:
        engine.dispose()


def _shapes(store: convstore.Store, keyring_store: convstore.Store) -> list[str]:
    """Conversations of every shape segments have to get right; returns their ids."""
    linear = store.create_conversation()
    for i in range(4):
        linear.append([user(f"linear {i}"), model(f"reply {i}")])
    forked = store.create_conversation()
    first = forked.append([user("one"), model("a")])
    forked.append([user("two"), model("b")])
    forked.fork(at=first[0].id, branch="mid").append([user("from the middle")])
    forked._fork(None, "edit").append([user("the first message, edited")])  # a second root
    tip = forked.fork(branch="tip")  # at main's tip...
    forked.append([user("three"), model("c")])  # ...which main continues first,
    tip.append([user("tip's own")])  # so this one starts a segment
    tip.fork(branch="tip2").append([user("continues tip")])
    tip.append([user("tip again")])
    sealed = keyring_store.create_conversation()
    sealed.append([user("secret"), model("kept")])
    sealed.fork(at=sealed.nodes()[0].id, branch="side").append([user("other secret")])
    return [linear.id, forked.id, sealed.id]


def _reads_of(store: convstore.Store, ids: list[str]) -> dict:
    out = {}
    for conversation_id in ids:
        conv = store.conversation(conversation_id)
        for branch in conv.branches():
            view = store.conversation(conversation_id, branch.name)
            nodes = view.nodes()
            out[conversation_id, branch.name] = (
                view.history(),
                [node.id for node in nodes],
                [[x.id for x in view.path(node.id)] for node in nodes],
            )
    return out


def test_segments_are_backfilled_from_0007_and_reads_are_unchanged(db_url):
    keyring = convstore.Keyring({"k1": b"k" * 32}, active="k1")
    with convstore.Store(db_url) as store, convstore.Store(db_url, keyring=keyring) as sealed_store:
        ids = _shapes(store, sealed_store)
        before = _reads_of(sealed_store, ids)
        _migrate.downgrade(store.engine, "0007")
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        columns = {column["name"] for column in sa.inspect(conn).get_columns(f"{PREFIX}nodes")}
    engine.dispose()
    assert "segment_id" not in columns
    with convstore.Store(db_url, check_schema=False) as old:
        old.upgrade()
    with convstore.Store(db_url, keyring=keyring) as store:
        report = store.check()
        assert report.ok, report.lines()
        assert report.unopened == 0
        assert _reads_of(store, ids) == before
        with store.engine.connect() as conn:
            # The backfill's rule: the main branch of the linear conversation is one segment.
            nodes = metadata.tables[f"{PREFIX}nodes"]
            distinct = sa.func.count(sa.distinct(nodes.c.segment_id))
            segments = conn.execute(sa.select(distinct).where(nodes.c.conversation_id == ids[0])).scalar_one()
        assert segments == 1
        for (conversation_id, branch), (history, _, _) in before.items():
            view = store.conversation(conversation_id, branch)
            view.append([user(f"after {branch}")])
            assert view.history() == [*history, user(f"after {branch}")]
        report = store.check()
        assert report.ok, report.lines()
