"""Search for one owner: on SQLite the owner is in the full-text index itself (a token for each owner,
migration 0013), so these check that the index keeps owners apart, is kept in step by every write and
delete, leaves nothing behind in its shadow tables, and is built for a populated store of the previous
revision."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import model, user
from test_search import word

import convstore
from convstore.store import _migrate
from convstore.store._schema import PREFIX, branches, conversations

FTS = f"{PREFIX}search_fts"


def _sqlite(db_url: str) -> bool:
    return db_url.startswith("sqlite")


def _vocabulary(engine: sa.Engine) -> set[str]:
    """Every term FTS5's index holds (either column), read through ``fts5vocab``."""
    with engine.begin() as db:
        db.execute(sa.text(f"CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, {FTS}, row)"))
        terms = {row[0] for row in db.execute(sa.text("SELECT term FROM temp.vocab"))}
        db.execute(sa.text("DROP TABLE temp.vocab"))
    return terms


def _shadow_rows(engine: sa.Engine) -> dict[str, Any]:
    """The FTS5 index's per-row shadow table and its own check against the rows it indexes."""
    with engine.begin() as db:
        # 'integrity-check' with rank 1 also compares the index with its content (the rows and tokens).
        db.execute(sa.text(f"INSERT INTO {FTS}({FTS}, rank) VALUES ('integrity-check', 1)"))
        return {
            "docsize": db.execute(sa.text(f"SELECT count(*) FROM {FTS}_docsize")).scalar_one(),
            "rows": db.execute(sa.text(f"SELECT count(*) FROM {PREFIX}search")).scalar_one(),
            "owners": sorted(
                row[0] for row in db.execute(sa.text(f"SELECT owner FROM {PREFIX}search_owners"))
            ),
        }


def test_an_owner_finds_only_its_own_text_and_tokens_are_no_words(make_store, db_url):
    shared, alone = word(), word()
    admin = make_store()
    alice, bob = admin.for_owner("alice"), make_store(owner="bob")
    a = alice.create_conversation()
    a.append([user(f"{shared} and {alone}"), model(f"{shared} back")])
    b = bob.create_conversation()
    b.append([user(f"{shared} too")])
    nobody = admin.create_conversation()  # no owner: no token, found by an unbound store only
    nobody.append([user(f"{shared} of no one")])
    assert {hit.conversation_id for hit in alice.search(shared, limit=100)} == {a.id}
    assert len(alice.search(shared, limit=100)) == 2
    assert [hit.conversation_id for hit in bob.search(shared)] == [b.id]
    assert list(bob.search(alone)) == []
    assert list(admin.for_owner("carol").search(shared)) == []
    assert {hit.conversation_id for hit in admin.search(shared, limit=100)} == {a.id, b.id, nobody.id}
    # Filters combine with the owner's token as before.
    assert [hit.type for hit in alice.search(shared, step_types=["model_output"])] == ["model_output"]
    assert list(alice.search(shared, conversation_id=b.id)) == []
    if _sqlite(db_url):
        # The owners' tokens are in the index, but never match a word of a query.
        tokens = {term for term in _vocabulary(admin.engine) if term.startswith("o") and term[1:].isdigit()}
        assert len(tokens) == 2
        for token in tokens:
            assert list(admin.search(token)) == []
            assert list(alice.search(token)) == []


def test_delete_and_purge_leave_nothing_in_the_index_and_release_the_owner(make_store, db_url):
    if not _sqlite(db_url):
        pytest.skip("SQLite: the FTS5 index's shadow tables")
    doomed, purged, kept = word(), word(), word()
    store = make_store()
    bob, carol, dave = store.for_owner("bob"), store.for_owner("carol"), store.for_owner("dave")
    gone = bob.create_conversation()
    for index in range(20):
        gone.append([user(f"{doomed} {index}"), model(f"{doomed} reply {index}")])
    old = carol.create_conversation()
    old.append([user(f"{purged} old")])
    stays = dave.create_conversation()
    stays.append([user(f"{kept} stays")])
    before = _vocabulary(store.engine)
    assert {doomed, purged, kept} <= before
    bob.delete_conversation(gone.id)
    then = datetime(2020, 1, 1, tzinfo=timezone.utc)
    with store.engine.begin() as db:  # untouched since 2020
        db.execute(sa.update(conversations).where(conversations.c.id == old.id).values(created_at=then))
        db.execute(sa.update(branches).where(branches.c.conversation_id == old.id).values(updated_at=then))
    assert carol.purge(older_than=timedelta(days=365)) == 1
    assert list(bob.search(doomed)) == [] == list(store.search(doomed))
    assert list(carol.search(purged)) == [] == list(store.search(purged))
    assert [hit.conversation_id for hit in dave.search(kept)] == [stays.id]
    left = _vocabulary(store.engine)
    assert doomed not in left
    assert purged not in left
    assert kept in left
    tokens = {term for term in left if term.startswith("o") and term[1:].isdigit()}
    assert len(tokens) == 1  # dave's only: bob's and carol's went with their last conversations
    shadow = _shadow_rows(store.engine)
    assert shadow == {"docsize": 1, "rows": 1, "owners": ["dave"]}
    # A new conversation of a released owner is indexed and found again, under a key of its own.
    again = bob.create_conversation()
    again.append([user(f"{doomed} anew")])
    assert [hit.conversation_id for hit in bob.search(doomed)] == [again.id]
    assert list(dave.search(doomed)) == []


def _previous_revision() -> str:
    """The revision before the one that puts the owner in the index."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    scripts = ScriptDirectory.from_config(_migrate.alembic_config())
    (owner,) = [script for script in scripts.walk_revisions() if script.path.endswith("_search_owner.py")]
    assert isinstance(owner.down_revision, str)
    return owner.down_revision


def test_the_migration_indexes_the_owners_of_a_populated_store(db_url):
    needles = [word() for _ in range(2)]
    with convstore.Store(db_url) as store:
        made: dict[str | None, list[str]] = {}
        for index in range(30):
            owner = [None, "alice", "bob"][index % 3]
            conv = (store.for_owner(owner) if owner else store).create_conversation()
            conv.append([user(f"{needles[0]} number {index}"), model(f"{needles[1]} reply {index}")])
            made.setdefault(owner, []).append(conv.id)
        _migrate.downgrade(store.engine, _previous_revision())
        if _sqlite(db_url):
            # At the previous revision: no owner in the index, searches work as they did.
            with store.engine.connect() as db:
                names = sa.inspect(db).get_table_names()
            assert f"{PREFIX}search_owners" not in names
    told: list[tuple[str, int, int]] = []
    with convstore.Store(db_url, check_schema=False) as old:
        old.upgrade(progress=lambda what, done, total: told.append((what, done, total)))
    if _sqlite(db_url):
        assert told[-1] == ("indexing search rows by owner", 60, 60)
    with convstore.Store(db_url) as store:
        assert store.check().ok
        for owner in ("alice", "bob"):
            found = store.for_owner(owner).search(needles[0], limit=100)
            assert sorted(hit.conversation_id for hit in found) == sorted(made[owner])
            found = store.for_owner(owner).search(needles[1], limit=100)
            assert {hit.type for hit in found} == {"model_output"}
            assert sorted(hit.conversation_id for hit in found) == sorted(made[owner])
        assert list(store.for_owner("carol").search(needles[0])) == []
        assert len(store.search(needles[0], limit=100)) == 30
        # New turns are indexed with their owner's token.
        store.for_owner("alice").conversation(made["alice"][0]).append([user(f"{needles[1]} later")])
        assert len(store.for_owner("alice").search(needles[1], limit=100)) == 11
        assert len(store.for_owner("bob").search(needles[1], limit=100)) == 10
        if _sqlite(db_url):
            assert _shadow_rows(store.engine) == {"docsize": 61, "rows": 61, "owners": ["alice", "bob"]}


def test_a_search_goes_to_the_driver_directly_and_finds_the_same_watched(make_store, db_url):
    """The search statements, built per filter set, are registered for the driver directly as the store's
    constant statements are; a statement listener still sees them, and the pages are the same."""
    from convstore.store import _paths, _search_sql  # noqa: PLC0415
    from convstore.store._engine import _fastpath  # noqa: PLC0415

    needle = word()
    store = make_store()
    alice = store.for_owner("alice")
    conv = alice.create_conversation(model="m1")
    conv.append([user(f"{needle} one"), model(f"{needle} two")])
    dialect = "sqlite" if _sqlite(db_url) else "postgresql"
    for filters in (_search_sql.Filters(), _search_sql.Filters(owner=True)):
        assert id(_search_sql.statement(dialect, filters)) in _fastpath._ONCE
    assert id(_search_sql.encrypted_count(owner=True, model=False, conversation=False)) in _fastpath._ONCE

    def pages() -> list[Any]:
        return [
            [(hit.node_id, hit.snippet, hit.branches, hit.rank) for hit in source.search(needle, **options)]
            for source in (store, alice)
            for options in ({}, {"model": "m1"}, {"step_types": ["user_input"]})
        ]

    before = _fastpath._prepared.cache_info().hits
    direct = pages()
    if _sqlite(db_url):  # PostgreSQL's words are rendered into the statement: SQLAlchemy runs it
        assert _fastpath._prepared.cache_info().hits > before
    # The branches through the hits go direct on both: their ids are one parameter each, never expanded.
    branches = _paths.BRANCHES_THROUGH_MANY
    assert id(branches) in _fastpath._ONCE
    assert _fastpath._prepared(branches, getattr(store, "_target", store).engine.dialect, None).direct
    seen: list[str] = []

    def watch(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    engine = getattr(store, "_target", store).engine
    engine = engine if isinstance(engine, sa.Engine) else engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", watch)
    try:
        watched = pages()
    finally:
        sa.event.remove(engine, "before_cursor_execute", watch)
    assert watched == direct
    assert [len(page) for page in direct] == [2, 2, 1, 2, 2, 1]
    assert sum("bm25" in s or "ts_rank" in s for s in seen) == 6


def test_postgresql_builds_the_query_once_at_planning(make_store, db_url):
    """The text search configuration and the words are constants of the statement, so PostgreSQL folds
    ``plainto_tsquery`` into one tsquery when it plans, instead of building it for every row it tests."""
    if _sqlite(db_url):
        pytest.skip("PostgreSQL only")
    needle = word()
    store = make_store(search_language="english")
    bob = store.for_owner("bob")
    bob.create_conversation().append([user(f"{needle} was running"), model("ok")])
    seen: list[tuple[str, Any]] = []

    def watch(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        if "ts_rank" in statement:
            seen.append((statement, params))

    engine = getattr(store, "_target", store).engine
    engine = engine if isinstance(engine, sa.Engine) else engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", watch)
    try:
        assert len(bob.search(f"{needle} runs")) == 1  # english: stemmed, as the store was asked
    finally:
        sa.event.remove(engine, "before_cursor_execute", watch)
    ((statement, params),) = seen
    explaining = sa.create_engine(db_url)  # the async store's engine is not for a sync connection
    with explaining.connect() as db:
        plan = "\n".join(
            row[0] for row in db.exec_driver_sql(f"EXPLAIN (VERBOSE) {statement}", params).fetchall()
        )
    explaining.dispose()
    assert "::tsquery" in plan
    assert "plainto_tsquery" not in plan


def test_a_sqlite_search_runs_its_statements_without_a_transaction(make_store, db_url):
    """On SQLite a search is run as PostgreSQL runs it, each statement its own snapshot (``_search.search``
    says why that is enough): no BEGIN, and the same page, branches and count."""
    if not _sqlite(db_url):
        pytest.skip("SQLite's transactions")
    needle = word()
    store = make_store()
    alice = store.for_owner("alice")
    conv = alice.create_conversation()
    conv.append([user(f"{needle} one"), model("two")])
    conv.fork(branch="side")
    engine = getattr(store, "_target", store).engine
    engine = engine if isinstance(engine, sa.Engine) else engine.sync_engine
    seen: list[str] = []

    def trace(dbapi_connection: Any, *_rest: Any) -> None:  # each connection the pool hands out
        # aiosqlite's: the sqlite3 connection its thread runs
        raw = getattr(getattr(dbapi_connection, "driver_connection", None), "_conn", dbapi_connection)
        raw.set_trace_callback(seen.append)

    sa.event.listen(engine, "checkout", trace)
    try:
        page = alice.search(needle)
    finally:
        sa.event.remove(engine, "checkout", trace)
    assert [hit.branches for hit in page.hits] == [("main", "side")]
    assert page.encrypted_conversations == 0
    assert sum("bm25" in s for s in seen) == 1
    assert any("json_each" in s for s in seen)
    assert not [s for s in seen if s.split(None, 1)[0].upper() in ("BEGIN", "COMMIT")]
