"""Deletes, purges and key rotation attacked from outside, on both backends and both flavours.

The promises: a purge deletes a conversation only if it is still untouched in the transaction that deletes
it (a turn confirmed during the purge survives; one that loses the race gets ``ConversationNotFoundError``);
a delete racing appends never deadlocks; a rotation never writes back a key that was deleted; and on SQLite,
once a delete returns, no file the store leaves (database, ``-wal``, ``-shm``, a ``SQLKeyStore``'s) holds the
deleted plaintext, ciphertext or wrapped key.

Key stores that sleep (``SlowKeys``, ``SlowKeyring``) widen the windows each race needs, and signal when a
call is inside its window so that the attacker acts exactly there. Sizes: ``CONVSTORE_SHRED_CONVERSATIONS``,
``CONVSTORE_SHRED_WRITERS``, ``CONVSTORE_SHRED_SECONDS``; the ``slow`` variants use larger defaults.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import model, user
from helpers import K1, K2, ring

import convstore
from convstore import (
    ConflictError,
    ConversationNotFoundError,
    DatabaseError,
    DataKeyNotFoundError,
    InvalidAgeError,
    Keyring,
    ShredPendingError,
    SQLKeyStore,
    WrappedKey,
)
from convstore.store._schema import branches, conversations, nodes
from convstore.store._schema import keys as key_table

pytest.importorskip("cryptography")

SMALL = {"conversations": 8, "writers": 3, "seconds": 1.5}
LARGE = {"conversations": 60, "writers": 8, "seconds": 20.0}


def sizes(slow: bool) -> dict[str, Any]:
    base = LARGE if slow else SMALL
    return {
        key: type(value)(os.environ.get(f"CONVSTORE_SHRED_{key.upper()}", value))
        for key, value in base.items()
    }


class Window:
    """Where a slow call pauses: ``entered`` is set (with the conversation's id in ``ids``) when a call is
    inside its window, and the call sleeps ``delay`` seconds there (the first ``calls`` calls, if set)."""

    def __init__(self, delay: float, calls: int | None = None) -> None:
        self.delay, self.calls = delay, calls
        self.entered = threading.Event()
        self.ids: list[str] = []

    def pause(self, conversation_id: str) -> None:
        if self.calls is not None and len(self.ids) >= self.calls:
            return
        self.ids.append(conversation_id)
        self.entered.set()
        time.sleep(self.delay)


class SlowKeys:
    """A real ``SQLKeyStore`` whose ``delete_key`` pauses before deleting and whose ``get_key`` pauses after
    reading (where a rotation is between reading a key and writing it back)."""

    def __init__(
        self, inner: SQLKeyStore, *, delete: Window | None = None, get: Window | None = None
    ) -> None:
        self.inner, self.delete, self.get = inner, delete, get

    def get_key(self, conversation_id: str) -> WrappedKey | None:
        found = self.inner.get_key(conversation_id)
        if self.get is not None and found is not None:
            self.get.pause(conversation_id)
        return found

    def put_key(self, conversation_id: str, wrapped: WrappedKey) -> None:
        self.inner.put_key(conversation_id, wrapped)

    def replace_key(self, conversation_id: str, old: WrappedKey, new: WrappedKey) -> bool:
        return self.inner.replace_key(conversation_id, old, new)

    def delete_key(self, conversation_id: str) -> None:
        if self.delete is not None:
            self.delete.pause(conversation_id)
        self.inner.delete_key(conversation_id)


class SlowKeyring(Keyring):
    """A keyring that pauses in ``rewrap``: inside the rotation's transaction of the default key store,
    after it read the key and before it writes the new one."""

    window: Window

    def rewrap(self, conversation_id: str, wrapped: WrappedKey) -> WrappedKey | None:
        self.window.pause(conversation_id)
        return super().rewrap(conversation_id, wrapped)


def slow_ring(window: Window, *ids: str) -> SlowKeyring:
    keys = {"k1": K1, "k2": K2}
    made = SlowKeyring({key_id: keys[key_id] for key_id in ids}, active=ids[-1])
    made.window = window
    return made


def backdate(engine: sa.Engine, ids: list[str], age: timedelta) -> None:
    """Make conversations look untouched for ``age``: created and last moved then."""
    then = datetime.now(timezone.utc) - age
    with engine.begin() as db:
        db.execute(sa.update(conversations).where(conversations.c.id.in_(ids)).values(created_at=then))
        db.execute(sa.update(branches).where(branches.c.conversation_id.in_(ids)).values(updated_at=then))


def key_rows(engine: sa.Engine) -> set[str]:
    with engine.connect() as db:
        return {str(r) for r in db.execute(sa.text("SELECT conversation_id FROM convstore_keys")).scalars()}


def turn(tag: str) -> list[dict[str, Any]]:
    return [user(f"q {tag}"), model(f"a {tag}")]


def append_once(conv: Any, tag: str) -> list[Any] | None:
    """Append, retrying conflicts: the nodes written, or None when the conversation was deleted."""
    while True:
        try:
            return list(conv.append(turn(tag)))
        except ConversationNotFoundError:
            return None
        except ConflictError:
            try:
                conv.refresh()
            except ConversationNotFoundError:
                return None


def in_threads(*targets: Callable[[], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return errors


@pytest.fixture
def key_db(tmp_path: Path) -> Any:
    keys = SQLKeyStore(f"sqlite:///{tmp_path / 'keys.db'}")
    yield keys
    keys.close()


# Purge


def test_purge_refuses_an_age_that_would_delete_what_is_being_written(store):
    conv = store.create_conversation()
    conv.append(turn("fresh"))
    for age in (timedelta(days=-1), timedelta(0), datetime.now(timezone.utc) + timedelta(minutes=1)):
        with pytest.raises(InvalidAgeError) as raised:
            store.purge(older_than=age)
        assert isinstance(raised.value, ValueError)
    with pytest.raises(InvalidAgeError, match="aware"):
        store.purge(older_than=datetime(2020, 1, 1))  # naive
    assert store.conversation(conv.id).history() == turn("fresh")


@pytest.mark.parametrize("keys", ["default", "sql"])
def test_a_turn_written_while_the_purge_deletes_its_conversation_is_never_lost(make_store, key_db, keys):
    """The purge's delete_key pauses inside the delete; a writer appends to that very conversation then."""
    window = Window(0.3)
    store = make_store(
        keyring=ring("k1"), key_store=SlowKeys(key_db, delete=window) if keys == "sql" else None
    )
    convs = [store.create_conversation() for _ in range(3)]
    for conv in convs:
        conv.append(turn("old"))
    backdate(store.engine, [c.id for c in convs], timedelta(hours=2))
    writer = convstore.Store(
        store.engine.url, keyring=ring("k1"), key_store=key_db if keys == "sql" else None
    )
    opened = {c.id: writer.conversation(c.id) for c in convs}
    outcome: dict[str, Any] = {}

    def write_inside_the_window() -> None:
        if keys == "sql":
            assert window.entered.wait(30)
            target = window.ids[0]
        else:
            target = convs[1].id  # no window: write while the purge runs
        outcome[target] = append_once(opened[target], "during")

    purged: list[int] = []
    errors = in_threads(
        lambda: purged.append(store.purge(older_than=timedelta(hours=1))), write_inside_the_window
    )
    writer.close()
    assert errors == []
    ((target, nodes),) = outcome.items()
    if nodes is None:  # lost the race: told so
        with pytest.raises(ConversationNotFoundError):
            store.conversation(target)
    else:  # confirmed: kept, with the turn
        assert store.conversation(target).history() == turn("old") + turn("during")
    survivors = [c.id for c in convs if _exists(store, c.id)]
    assert purged == [len(convs) - len(survivors)]
    assert survivors == ([] if nodes is None else [target])
    assert store.check().ok


def _exists(store: Any, conversation_id: str) -> bool:
    try:
        store.conversation(conversation_id)
    except ConversationNotFoundError:
        return False
    return True


def _purge_under_writers(make_store, key_db, keys: str, slow: bool) -> None:
    size = sizes(slow)
    delete = Window(0.02) if keys == "sql" else None
    key_store = SlowKeys(key_db, delete=delete) if keys == "sql" else None
    store = make_store(keyring=ring("k1"), key_store=key_store)
    convs = [store.create_conversation() for _ in range(size["conversations"])]
    for conv in convs:
        conv.append(turn("old"))
    backdate(store.engine, [c.id for c in convs], timedelta(hours=2))
    targets = [c.id for c in convs[: len(convs) // 2]]  # the other half is left alone: purged
    confirmed: list[tuple[str, str]] = []  # (conversation, first node of the turn)
    lost: set[str] = set()
    started, done = threading.Event(), threading.Event()
    # The purge starts once every writer has opened its conversations (opening one the purge already
    # deleted is not the race under test; on a slow backend a fixed pause was not always enough).
    opened = threading.Barrier(size["writers"] + 1)
    rng = random.Random(7)

    def writer(number: int) -> None:
        mine = {cid: store.conversation(cid) for cid in targets}
        opened.wait(60)
        # Once the purge has listed the stale conversations: each turn now races its delete.
        assert started.wait(30)
        if delete is not None:
            assert delete.entered.wait(30)
        else:
            time.sleep(0.005)
        index = 0
        while not done.is_set() and len(lost) < len(targets):
            cid = rng.choice(targets)
            if cid in lost:
                continue
            nodes = append_once(mine[cid], f"w{number}-{index}")
            index += 1
            if nodes is None:
                lost.add(cid)
            else:
                confirmed.append((cid, nodes[0].id))

    purged: list[int] = []

    def purge() -> None:
        opened.wait(60)
        started.set()
        try:
            purged.append(store.purge(older_than=timedelta(hours=1)))
            time.sleep(0.05)
        finally:
            done.set()

    errors = in_threads(purge, *[lambda n=n: writer(n) for n in range(size["writers"])])
    assert errors == []
    # Every confirmed turn is there; a conversation that got one was kept.
    for cid, node_id in confirmed:
        assert store.conversation(cid).node(node_id).id == node_id
    kept = {cid for cid, _ in confirmed}
    gone = {c.id for c in convs} - kept
    assert purged == [len(gone)]
    for cid in gone:
        assert not _exists(store, cid)
    assert not lost & kept
    assert store.check().ok


@pytest.mark.parametrize("keys", ["default", "sql"])
def test_purge_under_many_writers_keeps_every_confirmed_turn(make_store, key_db, keys):
    _purge_under_writers(make_store, key_db, keys, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("keys", ["default", "sql"])
def test_purge_under_many_writers_keeps_every_confirmed_turn_long(make_store, key_db, keys):
    _purge_under_writers(make_store, key_db, keys, slow=True)


# Delete


def _delete_under_appends(store: Any, slow: bool) -> None:
    size = sizes(slow)
    convs = [store.create_conversation() for _ in range(size["conversations"])]
    for conv in convs:
        conv.append(turn("first"))
    errors: list[BaseException] = []
    stop = threading.Event()

    alive = [conv.id for conv in convs]
    opened = threading.Barrier(size["writers"] + 1)  # the deletes start once every appender is ready

    def appender(number: int) -> None:
        rng = random.Random(number)
        mine = {cid: store.conversation(cid) for cid in alive}
        opened.wait(60)
        index = 0
        while not stop.is_set() and alive:
            cid = rng.choice(alive)
            try:
                if append_once(mine[cid], f"{number}-{index}") is None and cid in alive:
                    alive.remove(cid)
            except BaseException as error:  # a deadlock (40P01) would land here
                errors.append(error)
                return
            index += 1

    def deleter() -> None:
        try:
            opened.wait(60)
            for conv in convs:
                time.sleep(size["seconds"] / len(convs) / 4)
                store.delete_conversation(conv.id)
        finally:
            stop.set()

    errors.extend(in_threads(deleter, *[lambda n=n: appender(n) for n in range(size["writers"])]))
    assert [e for e in errors if isinstance(e, DatabaseError)] == []  # no 40P01
    assert errors == []
    for conv in convs:
        assert not _exists(store, conv.id)
    assert store.check().ok


def test_delete_racing_appends_never_deadlocks(make_store):
    _delete_under_appends(make_store(), slow=False)


@pytest.mark.slow
def test_delete_racing_appends_never_deadlocks_long(make_store):
    _delete_under_appends(make_store(), slow=True)


# Rotation


@pytest.mark.parametrize("keys", ["default", "sql"])
def test_a_rotation_racing_a_delete_never_writes_the_key_back(make_store, key_db, db_url, keys, tmp_path):
    """The rotation pauses between reading a key and writing the new one; the key is deleted then."""
    window = Window(1.0, calls=1)
    if keys == "sql":
        rotator = make_store(keyring=ring("k1", "k2"), key_store=SlowKeys(key_db, get=window))
        maker = make_store(keyring=ring("k1"), key_store=key_db)
    else:
        rotator = make_store(keyring=slow_ring(window, "k1", "k2"))
        maker = make_store(keyring=ring("k1"))
    convs = [maker.create_conversation(system_instruction="secret") for _ in range(3)]
    for conv in convs:
        conv.append(turn("kept secret"))
    backup = None
    if db_url.startswith("sqlite"):
        backup = _copy_files(Path(sa.make_url(db_url).database or ""), tmp_path / "backup.db")
    deleter = convstore.Store(db_url, keyring=ring("k1"), key_store=key_db if keys == "sql" else None)
    # Appenders on the conversations that stay, while the rotation runs.
    stop = threading.Event()
    appenders = [deleter.conversation(c.id) for c in convs[1:]]

    def append_meanwhile(conv: Any) -> None:
        index = 0
        while not stop.is_set():
            assert append_once(conv, f"r{index}") is not None
            index += 1
            time.sleep(0.005)  # busy, not a tight loop: SQLite's lock is not fair to the deleter

    def delete_inside_the_window() -> None:
        assert window.entered.wait(30)
        deleter.delete_conversation(window.ids[0])

    rotated: list[int] = []

    def rotate() -> None:
        try:
            rotated.append(rotator.rotate_keys())
        finally:
            stop.set()

    errors = in_threads(
        rotate, delete_inside_the_window, *[lambda c=c: append_meanwhile(c) for c in appenders]
    )
    deleter.close()
    assert errors == []
    doomed = window.ids[0]
    assert doomed == convs[0].id
    # SQLite's default key store rotates in a write transaction: the delete waits for it, and comes after.
    rotation_first = keys == "default" and db_url.startswith("sqlite")
    assert rotated == [len(convs) - (0 if rotation_first else 1)]
    if keys == "sql":
        assert key_db.get_key(doomed) is None
        assert key_db.get_key(convs[1].id).key_id == "k2"
    else:
        assert doomed not in key_rows(maker.engine)
    report = convstore.Store(db_url, keyring=ring("k1", "k2"), key_store=key_db if keys == "sql" else None)
    try:
        assert report.check().ok, report.check().problems
    finally:
        report.close()
    if backup is not None and keys == "sql":
        # A copy of the data from before the delete stays unreadable: the key did not come back.
        with (
            convstore.Store(f"sqlite:///{backup}", keyring=ring("k1", "k2"), key_store=key_db) as copy,
            pytest.raises(DataKeyNotFoundError),
        ):
            copy.conversation(doomed)


def _copy_files(source: Path, target: Path) -> Path:
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            Path(f"{target}{suffix}").write_bytes(Path(f"{source}{suffix}").read_bytes())
    return target


# What is left on disk


def _files(*databases: Path) -> dict[str, bytes]:
    found = {}
    for database in databases:
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(f"{database}{suffix}")
            if path.exists():
                found[path.name] = path.read_bytes()
    return found


def _traces(engine: sa.Engine, cid: str, keys: SQLKeyStore | None) -> list[bytes]:
    """What must not stay on disk of a conversation: its ciphertexts (each sealed payload and setting,
    as stored) and its wrapped data key."""
    traces = []
    with engine.connect() as db:
        sealed = [
            *db.execute(sa.select(nodes.c.payload).where(nodes.c.conversation_id == cid)).scalars(),
            db.execute(
                sa.select(conversations.c.system_instruction).where(conversations.c.id == cid)
            ).scalar(),
        ]
        traces += [value[5:45].encode() for value in sealed if value and value.startswith("enc1:")]
        if keys is None:
            wrapped = db.execute(
                sa.select(key_table.c.wrapped).where(key_table.c.conversation_id == cid)
            ).scalar()
            if wrapped is not None:
                traces.append(bytes(wrapped))
    if keys is not None:
        found = keys.get_key(cid)
        assert found is not None
        traces.append(found.wrapped)
    return traces


@pytest.mark.parametrize("mode", ["plaintext", "default", "sql"])
def test_no_file_holds_a_deleted_conversation(make_store, db_url, tmp_path, mode):
    if not db_url.startswith("sqlite") and mode != "sql":
        pytest.skip("PostgreSQL keeps deleted rows in its own files until VACUUM (README, Privacy)")
    keys = SQLKeyStore(f"sqlite:///{tmp_path / 'keys.db'}") if mode == "sql" else None
    try:
        options: dict[str, Any] = {} if mode == "plaintext" else {"keyring": ring("k1"), "key_store": keys}
        store = make_store(**options)
        secret = f"the secret {uuid.uuid4().hex}"
        doomed = store.create_conversation(system_instruction=secret, metadata={"note": secret})
        for index in range(20):
            doomed.append([user(f"{secret} {index} " + "x" * 2000), model(f"{secret} answer {index}")])
        kept = store.create_conversation()
        kept.append(turn("kept"))
        traces = [secret.encode(), *_traces(store.engine, doomed.id, keys)]
        assert len(traces) >= (1 if mode == "plaintext" else 22)  # secret, 40 payloads, settings, key
        store.delete_conversation(doomed.id)
        databases = [tmp_path / "keys.db"] if keys is not None else []
        if db_url.startswith("sqlite"):
            databases.append(Path(sa.make_url(db_url).database or ""))
        files = _files(*databases)
        assert files  # something to look at on either backend (PostgreSQL: the key store's files)
        leaks = sorted(name for name, content in files.items() if any(t in content for t in traces))
        assert leaks == []  # the files that still hold a trace of the deleted conversation
        assert store.conversation(kept.id).history() == turn("kept")
        assert store.check().ok
    finally:
        if keys is not None:
            keys.close()


def test_a_reader_that_keeps_the_wal_busy_is_reported_not_ignored(make_store, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("the SQLite WAL")
    store = make_store(busy_timeout=0.2)
    secret = f"the secret {uuid.uuid4().hex}"
    conv = store.create_conversation()
    conv.append([user(secret)])
    path = Path(sa.make_url(db_url).database or "")
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM convstore_nodes").fetchone()  # holds its snapshot
        with pytest.raises(ShredPendingError) as raised:
            store.delete_conversation(conv.id)
        assert raised.value.conversation_ids == [conv.id]
        assert raised.value.pending == "wal"
        assert "kept the SQLite WAL busy" in str(raised.value)
        assert "search index" not in str(raised.value)
        assert secret not in str(raised.value)
        with pytest.raises(ConversationNotFoundError):
            store.conversation(conv.id)  # deleted all the same
        assert secret.encode() in b"".join(_files(path).values()), "as reported: still in a file"
    finally:
        reader.close()
    store.checkpoint()
    assert secret.encode() not in b"".join(_files(path).values()), "gone once the reader is done"


def test_a_search_index_rewrite_kept_waiting_is_named_as_the_pending_step(tmp_path):
    """The delete commits, then another writer takes the write lock before the search index is rewritten
    without the deleted words: ``ShredPendingError`` says that the search index rewrite is what is pending
    (not the WAL checkpoint); once the writer is done, ``checkpoint()`` finishes both."""
    path = tmp_path / "x.db"
    secret = f"the secret {uuid.uuid4().hex}"
    other = sqlite3.connect(path, isolation_level=None)
    with convstore.Store(f"sqlite:///{path}", busy_timeout=0.2) as store:
        conv = store.create_conversation()
        conv.append([user(secret)])
        deleted: list[str] = []

        @sa.event.listens_for(store.engine, "before_cursor_execute")
        def another_writer_first(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.startswith("INSERT INTO convstore_erased"):
                deleted.append(statement)  # the delete's last statement: its commit comes next
            elif statement == "BEGIN IMMEDIATE" and len(deleted) == 1:
                deleted.append(statement)  # the rewrite's transaction: another writer gets the lock first
                other.execute("BEGIN IMMEDIATE")

        try:
            with pytest.raises(ShredPendingError) as raised:
                store.delete_conversation(conv.id)
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", another_writer_first)
            other.execute("ROLLBACK")
            other.close()
        error = raised.value
        assert error.conversation_ids == [conv.id]
        assert error.pending == "search_index"
        assert "search index rewrite" in str(error)
        assert "WAL" not in str(error)
        assert secret not in str(error)
        with pytest.raises(ConversationNotFoundError):
            store.conversation(conv.id)  # deleted all the same
        assert secret.encode() in b"".join(_files(path).values()), "as reported: still in a file"
        store.checkpoint()
        assert secret.encode() not in b"".join(_files(path).values()), "the rewrite and the checkpoint done"


def test_a_checkpoint_another_connection_holds_is_tried_again(make_store, db_url, monkeypatch):
    """While a writer's automatic checkpoint runs, SQLite fails ``wal_checkpoint(TRUNCATE)`` at once, without
    its busy handler (the checkpoint lock is never waited for): a delete then tries again within the busy
    timeout instead of reporting ``ShredPendingError`` (CI met it with 8 writers appending beside deletes)."""
    if not db_url.startswith("sqlite"):
        pytest.skip("the SQLite WAL")
    from convstore.store._engine import _wal  # noqa: PLC0415

    real, busy = _wal._truncate_wal_once, [3]

    def held_by_another_checkpoint(conn: Any) -> bool:
        if busy[0]:
            busy[0] -= 1
            return False  # what SQLite answers while another connection holds the checkpoint lock
        return real(conn)

    monkeypatch.setattr(_wal, "_truncate_wal_once", held_by_another_checkpoint)
    store = make_store(busy_timeout=5)
    secret = f"the secret {uuid.uuid4().hex}"
    conv = store.create_conversation()
    conv.append([user(secret)])
    store.delete_conversation(conv.id)  # no ShredPendingError
    assert busy == [0]
    path = Path(sa.make_url(db_url).database or "")
    assert Path(f"{path}-wal").stat().st_size == 0
    assert secret.encode() not in b"".join(_files(path).values())

    busy[0] = 10**9  # held for good: reported once the busy timeout is spent, not retried for ever
    store = make_store(busy_timeout=0.3)
    conv = store.create_conversation()
    conv.append([user(secret)])
    started = time.monotonic()
    with pytest.raises(ShredPendingError):
        store.delete_conversation(conv.id)
    assert 0.25 <= time.monotonic() - started < 5


def test_a_key_store_that_cannot_compare_and_swap_is_refused_by_rotation_only(make_store, key_db):
    class ThreeMethods:  # a KeyStore as it was before replace_key
        def get_key(self, conversation_id: str) -> WrappedKey | None:
            return key_db.get_key(conversation_id)

        def put_key(self, conversation_id: str, wrapped: WrappedKey) -> None:
            key_db.put_key(conversation_id, wrapped)

        def delete_key(self, conversation_id: str) -> None:
            key_db.delete_key(conversation_id)

    store = make_store(keyring=ring("k1"), key_store=ThreeMethods())
    conv = store.create_conversation()
    conv.append(turn("kept"))
    with pytest.raises(TypeError, match="replace_key"):
        make_store(keyring=ring("k1", "k2"), key_store=ThreeMethods()).rotate_keys()
    assert key_db.get_key(conv.id).key_id == "k1"  # untouched
    store.delete_conversation(conv.id)
    assert key_db.get_key(conv.id) is None
