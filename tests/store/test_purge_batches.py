"""Purge in batches (``store/_purge.py``): many conversations a transaction, every guarantee of a delete kept:
keys and search rows go with the rows, ids join the erasure list, a conversation touched meanwhile stays, and
a failure in a batch leaves that batch whole and names the batches before it."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from conftest import model, user

import convstore
from convstore import ConvstoreError, PurgeIncompleteError
from convstore.store import _purge

OLD = "2000-01-01 00:00:00"


def _age(engine: sa.Engine, ids: list[str] | None = None) -> None:
    """Make conversations (all, or ``ids``) look untouched since 2000."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE convstore_conversations SET created_at = '{OLD}'"))
        if ids is None:
            conn.execute(sa.text(f"UPDATE convstore_branches SET updated_at = '{OLD}'"))
        else:
            for conversation_id in ids:
                stored = (
                    conversation_id
                    if engine.dialect.name == "postgresql"
                    else conversation_id.replace("-", "")
                )
                update = f"UPDATE convstore_branches SET updated_at = '{OLD}' WHERE conversation_id = :c"
                conn.execute(sa.text(update), {"c": stored})


def _count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM convstore_{table}")).scalar_one())


def test_batches_grow_to_the_largest():
    ids = [str(i) for i in range(600)]
    sizes = [len(batch) for batch in _purge.batches(ids, together=True)]
    assert sizes[:5] == [1, 2, 4, 8, 16]
    assert max(sizes) == _purge.BATCH
    assert [i for batch in _purge.batches(ids, together=True) for i in batch] == ids
    assert {len(batch) for batch in _purge.batches(ids, together=False)} == {1}


def test_a_batched_purge_deletes_rows_keys_and_search_rows_and_keeps_the_ids(db_url):
    keyring = convstore.Keyring({"k": bytes(32)}, active="k")
    with convstore.Store(db_url) as plain_store, convstore.Store(db_url, keyring=keyring) as store:
        plain = [plain_store.create_conversation(model="m") for _ in range(9)]
        sealed = [store.create_conversation(model="m") for _ in range(4)]
        for conv in plain + sealed:
            conv.append([user("pelican"), model("pelicans fly")])
        kept = plain_store.create_conversation(model="m")
        kept.append([user("pelican"), model("kept")])
        doomed = {conv.id for conv in plain + sealed}
        _age(store.engine, sorted(doomed))
        seen: list[str] = []
        assert store.purge(older_than=timedelta(days=1), on_deleted=seen.append) == len(doomed)
        assert set(seen) == doomed
        assert [info.id for info in store.iter_conversations()] == [kept.id]
        assert _count(store.engine, "keys") == 0
        for table in ("nodes", "branches", "exchanges", "media", "files", "summaries"):
            with store.engine.connect() as conn:
                left = conn.execute(sa.text(f"SELECT count(*) FROM convstore_{table}")).scalar_one()
            assert left == (2 if table == "nodes" else 1 if table == "branches" else 0), table
        assert [hit.conversation_id for hit in store.search("pelican").hits] == [kept.id]
        assert _count(store.engine, "erased") == len(doomed)
        assert store.check().ok


def _citus(store: convstore.Store) -> bool:
    from convstore.store import _search  # noqa: PLC0415
    from convstore.store._engine import run  # noqa: PLC0415

    postgres = store.engine.dialect.name == "postgresql"
    return postgres and bool(run(store.engine, _search.routed(), write=False))


def test_a_conversation_touched_after_the_listing_is_kept(db_url, monkeypatch):
    """The staleness is tested again inside each batch's transaction, after its lock."""
    with convstore.Store(db_url) as store:
        if _citus(store):
            pytest.skip("Citus purges one conversation at a time: no batch to touch")
        convs = [store.create_conversation(model="m") for _ in range(6)]
        _age(store.engine)
        real = _purge.delete_batch

        def touched_first(ids, cutoff, owner=None, *, inline_keys=True):
            if convs[4].id in ids:
                convs[4].append([user("still here")])  # a turn commits before the batch locks
            return real(ids, cutoff, owner, inline_keys=inline_keys)

        monkeypatch.setattr("convstore.store._ops.delete_batch", touched_first)
        assert store.purge(older_than=timedelta(days=1)) == 5
        assert [info.id for info in store.iter_conversations()] == [convs[4].id]
        assert store.conversation(convs[4].id).history() == [user("still here")]


def test_a_failing_batch_is_rolled_back_whole_and_the_batches_before_it_are_named(db_url):
    """Batches of 1, 2, 4: a delete refused in the third leaves its four conversations whole; the error
    names the three deleted before it, which on_deleted was told of."""
    with convstore.Store(db_url) as store:
        if _citus(store):
            pytest.skip("Citus purges one conversation at a time (and has no triggers on distributed tables)")
        convs = [store.create_conversation(model="m") for _ in range(7)]
        for conv in convs:
            conv.append([user("hello"), model("hi")])
        _age(store.engine)
        order = sorted(store.stale_conversations(older_than=timedelta(days=1)))
        assert sorted(c.id for c in convs) == order
        listed = store.stale_conversations(older_than=timedelta(days=1))
        victim = listed[5]  # in the third batch (the 4th to 7th listed)
        _refuse_delete(store.engine, victim)
        seen: list[str] = []
        with pytest.raises(PurgeIncompleteError) as raised:
            store.purge(older_than=timedelta(days=1), on_deleted=seen.append)
        assert isinstance(raised.value.error, ConvstoreError)
        assert sorted(raised.value.deleted_ids) == sorted(listed[:3])
        assert seen == raised.value.deleted_ids
        left = {info.id for info in store.iter_conversations()}
        assert left == set(listed[3:])
        for conversation_id in listed[3:]:
            assert store.conversation(conversation_id).history() == [user("hello"), model("hi")]
        _allow_delete(store.engine)
        assert store.purge(older_than=timedelta(days=1)) == 4


def _refuse_delete(engine: sa.Engine, conversation_id: str) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse BEFORE DELETE ON convstore_conversations "
                    f"WHEN old.id = '{conversation_id.replace('-', '')}' BEGIN SELECT RAISE(ABORT, 'no'); END"
                )
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF old.id = '{conversation_id}' THEN RAISE EXCEPTION 'no'; END IF; RETURN old; END $$"
                )
            )
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse BEFORE DELETE ON convstore_conversations "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )


def _allow_delete(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        on = "" if engine.dialect.name == "sqlite" else " ON convstore_conversations"
        conn.execute(sa.text(f"DROP TRIGGER refuse{on}"))
