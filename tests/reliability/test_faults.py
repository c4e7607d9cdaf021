"""Faults at the edges, made real: a full disk (a small tmpfs the test mounts), a read-only mount, a directory
another user cannot write, a missing directory, a PostgreSQL role without privileges, a refused connection, a
missing database, a connection killed while the store opens. Every failure is a ``ConvstoreError`` whose
``cause`` names what a person can act on, and no message holds what was written.

The mounts need root (CI runs as root); without it those tests skip, saying so.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import ring

import convstore
from convstore import SQLKeyStore
from convstore.errors import (
    ConversationNotFoundError,
    ConvstoreError,
    DatabaseError,
    DataKeyNotFoundError,
    PurgeIncompleteError,
    SchemaOutdatedError,
    SchemaUnknownError,
    ShredPendingError,
)
from convstore.store import _migrate
from tests.conftest import postgres_base_url, user
from tests.flavours import Portal, SyncProxy

SECRET = "the patient's name is Ana Ribeiro"


def open_store(flavour: str, url: str, portal: Portal, **options: Any) -> Any:
    """A store of ``flavour`` on ``url``, opened (its schema checked): sync, or async behind a proxy."""
    if flavour == "sync":
        return convstore.Store(url, **options)
    opened = convstore.AsyncStore(url, **options)
    portal.call(opened.__aenter__())
    return SyncProxy(opened, portal)


def close(store: Any) -> None:
    if isinstance(store, SyncProxy):
        store.aclose()
    else:
        store.close()


def refused(flavour: str, url: str, portal: Portal, **options: Any) -> ConvstoreError:
    with pytest.raises(ConvstoreError) as raised:
        close(open_store(flavour, url, portal, **options))
    assert not isinstance(raised.value, sa.exc.SQLAlchemyError)
    assert SECRET not in str(raised.value)
    return raised.value


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted at the end."""
    needs_root()
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path, leave: int) -> Path:
    """Fill the file system at ``where`` but ``leave`` bytes; the filler file is returned."""
    stat = os.statvfs(where)
    free = stat.f_bavail * stat.f_frsize
    filler = where / f"filler-{uuid.uuid4().hex[:6]}"
    with filler.open("wb") as out, contextlib.suppress(OSError):  # full already: what the test wanted
        out.write(b"\0" * max(free - leave, 0))
    return filler


def files_holding(where: Path, text: str) -> list[str]:
    return sorted(p.name for p in where.iterdir() if p.is_file() and text.encode() in p.read_bytes())


# -- SQLite: the file system ------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_missing_directory_is_named(flavour, portal, tmp_path):
    error = refused(flavour, f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}", portal)
    assert isinstance(error, DatabaseError)
    assert error.cause == "directory_missing"
    assert "directory does not exist" in str(error)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_full_disk_at_open_is_named(flavour, portal, small_disk):
    fill(small_disk, 0)
    error = refused(flavour, f"sqlite:///{small_disk / 'new.db'}", portal)
    assert isinstance(error, DatabaseError)
    assert error.cause == "disk_full", error
    assert "disk is full" in str(error)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_read_only_mount_is_named(flavour, portal, small_disk):
    url = f"sqlite:///{small_disk / 'ro.db'}"
    store = open_store(flavour, url, portal)
    store.create_conversation().append([user(SECRET)])
    close(store)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    opened: list[Any] = []
    error = _first_failure(
        lambda: opened.append(open_store(flavour, url, portal)) or opened[0].create_conversation()
    )
    for store in opened:
        close(store)
    assert isinstance(error, DatabaseError), repr(error)
    assert error.cause == "read_only", error
    assert SECRET not in str(error)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can reach and only root can write (pytest's own are root's only)."""
    folder = Path(tempfile.mkdtemp(prefix="convstore-faults-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _first_failure(action: Callable[[], object]) -> ConvstoreError:
    try:
        action()
    except ConvstoreError as error:
        return error
    pytest.fail("no error")


def test_a_directory_another_user_cannot_write_is_named(shared_dir):
    """Root writes anywhere, so the store is opened by root without the capabilities that bypass file
    permissions, in a directory user ``nobody`` owns: the interpreter and its virtualenv stay readable
    (a virtualenv in a private temporary directory is not, to another user)."""
    needs_root()
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    folder = shared_dir
    shutil.chown(folder, "nobody", "nogroup")
    code = (
        "import convstore, sys\n"
        "try:\n"
        f"    convstore.Store('sqlite:///{folder / 'x.db'}')\n"
        "except convstore.DatabaseError as error:\n"
        "    print(type(error).__name__, error.cause)\n"
        "except BaseException as error:\n"
        "    print('untyped', type(error).__name__)\n"
    )
    done = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.stdout.split() == ["DatabaseError", "permission_denied"], done.stderr


# -- SQLite: deletes on a full disk ---------------------------------------------------------------------


def test_a_delete_whose_checkpoint_finds_the_disk_full_says_so_and_the_next_open_finishes_it(small_disk):
    """The delete commits (its WAL frames fit), then the checkpoint needs room in the database file: a
    typed ``ShredPendingError`` naming the conversation and the full disk; ``checkpoint()`` says
    ``disk_full`` while it lasts; once there is room, opening the store empties the WAL."""
    url = f"sqlite:///{small_disk / 'x.db'}"
    secret = SECRET * 2000
    # The delete itself needs room for its WAL frames: the node's pages zeroed (``secure_delete``), and
    # since the search index, its row's copy of the text and its FTS5 entries too (about 200 KiB here).
    for leave_kb in range(48, 512, 8):
        for name in os.listdir(small_disk):
            os.remove(small_disk / name)
        with convstore.Store(url) as store:
            conv = store.create_conversation()
            conv.append([user(secret)])
            filler = fill(small_disk, leave_kb * 1024)
            error = _first_failure(lambda: store.delete_conversation(conv.id))  # noqa: B023 -- called here
            if isinstance(error, ShredPendingError):
                break
            # Too little room for the delete itself: nothing deleted.
            assert isinstance(error, DatabaseError)
            assert error.cause == "disk_full"
            assert store.conversation(conv.id).history()[0]["content"][0]["text"] == secret
        filler.unlink()
    else:
        pytest.fail("no room left made the delete commit and its checkpoint fail")
    assert error.conversation_ids == [conv.id]
    assert "disk is full" in str(error)
    assert files_holding(small_disk, SECRET[:20]) == ["x.db-wal"]
    with convstore.Store(url) as store, pytest.raises(DatabaseError) as raised:
        store.checkpoint()
    assert raised.value.cause == "disk_full"
    filler.unlink()
    with convstore.Store(url) as store:  # opening finishes the shred
        assert files_holding(small_disk, SECRET[:20]) == []
        store.checkpoint()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_appends_that_meet_a_full_disk_are_whole_or_absent_and_hold_no_lock(flavour, portal, small_disk):
    """The disk fills under a writer: each append is written whole or raises ``disk_full`` having written
    nothing, and leaves no transaction behind (the async store's runs in aiosqlite's thread): once there is
    room, the next append goes through at once and the history is exactly the appends that returned."""
    url = f"sqlite:///{small_disk / 'full.db'}"
    store = open_store(flavour, url, portal, busy_timeout=1.0)
    try:
        conv = store.create_conversation()
        conv.append([user("first")])
        written = ["first"]
        filler = fill(small_disk, 256 * 1024)
        failures: list[ConvstoreError] = []
        for index in range(200):
            text = f"{index:03d} {SECRET} " + "x" * 20_000
            try:
                conv.append([user(text)])
            except ConvstoreError as error:
                failures.append(error)
                if len(failures) == 3:
                    break
                conv = store.conversation(conv.id)  # the head as stored: a refused append moved nothing
            else:
                written.append(text)
        assert len(failures) == 3, "the disk never filled"
        for error in failures:
            assert isinstance(error, DatabaseError), repr(error)
            assert error.cause == "disk_full", error
            assert SECRET not in str(error)
        filler.unlink()
        conv = store.conversation(conv.id)
        conv.append([user("after")])
        written.append("after")
        assert [step["content"][0]["text"] for step in conv.history()] == written
        assert store.check().ok
    finally:
        close(store)


# -- PostgreSQL --------------------------------------------------------------------------------------------


def _pg(url: str, **query: str) -> str:
    return sa.make_url(url).update_query_dict(query).render_as_string(hide_password=False)


@pytest.mark.postgres
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_refused_connection_is_named(flavour, portal):
    base = sa.make_url(postgres_base_url())
    url = base.set(host="127.0.0.1", port=9).render_as_string(hide_password=False)  # discard: nobody there
    error = refused(flavour, url, portal)
    assert isinstance(error, DatabaseError)
    assert error.cause == "connection_refused", error


@pytest.mark.postgres
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_missing_database_is_named(flavour, portal):
    url = sa.make_url(postgres_base_url()).set(database=f"nodb_{uuid.uuid4().hex[:8]}")
    error = refused(flavour, url.render_as_string(hide_password=False), portal)
    assert isinstance(error, DatabaseError)
    assert error.cause == "database_missing", error


@pytest.fixture
def bare_role(_postgres_admin: Any, db_url: str) -> Iterator[str]:
    """A login role with no privilege on the test's schema (which a store has built)."""
    name = f"faults_{uuid.uuid4().hex[:8]}"
    with convstore.Store(db_url):
        pass
    schema = sa.make_url(db_url).query["options"].split("=")[-1]
    with _postgres_admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {name} LOGIN")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema} TO {name}")  # it sees the tables, no more
    try:
        yield name
    finally:
        with _postgres_admin.begin() as conn:
            conn.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'"
            )
            conn.exec_driver_sql(f"REVOKE USAGE ON SCHEMA {schema} FROM {name}")
            conn.exec_driver_sql(f"DROP ROLE {name}")


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_role_without_privileges_is_named(flavour, portal, db_url, bare_role):
    url = sa.make_url(db_url).set(username=bare_role).render_as_string(hide_password=False)
    error = refused(flavour, url, portal)
    assert isinstance(error, DatabaseError)
    assert error.cause == "permission_denied", error


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_connection_killed_while_the_store_opens_is_named(flavour, portal, db_url, request):
    """Another connection terminates the store's first connection before its schema check runs."""
    admin = request.getfixturevalue("_postgres_admin")
    engine = sa.create_engine(db_url) if flavour == "sync" else None
    killed: list[int] = []

    def kill(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if killed:
            return
        pid = dbapi_connection.info.backend_pid
        with admin.begin() as conn:
            conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        killed.append(pid)

    if engine is not None:
        sa.event.listen(engine, "checkout", kill)
        with pytest.raises(ConvstoreError) as raised:
            convstore.Store(engine)
        engine.dispose()
    else:
        from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

        async_engine = create_async_engine(db_url)
        sa.event.listen(async_engine.sync_engine, "checkout", kill)
        with pytest.raises(ConvstoreError) as raised:
            portal.call(convstore.AsyncStore(async_engine).__aenter__())
        portal.call(async_engine.dispose())
    assert killed
    error = raised.value
    assert isinstance(error, DatabaseError), repr(error)
    assert error.cause == "connection_lost", error


# -- schema skew -----------------------------------------------------------------------------------------


def test_a_database_a_newer_convstore_wrote_is_refused_as_such(db_url):
    with convstore.Store(db_url) as store:
        store.create_conversation()
        with store.engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {_migrate.VERSION_TABLE} SET version_num = '9999'")
    with pytest.raises(SchemaUnknownError, match="newer convstore"):
        convstore.Store(db_url)
    with convstore.Store(db_url, check_schema=False) as store:
        with pytest.raises(SchemaUnknownError, match="newer convstore"):
            store.upgrade()
        with pytest.raises(SchemaUnknownError, match="newer convstore"):
            store.upgrade("9999")


def test_an_emptied_version_table_is_not_called_outdated(db_url):
    with convstore.Store(db_url) as store, store.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM {_migrate.VERSION_TABLE}")
    with pytest.raises(SchemaUnknownError, match="empty") as raised:
        convstore.Store(db_url)
    assert not isinstance(raised.value, SchemaOutdatedError)


# -- a key store outside the database, and a process killed between its commit and the rows' -------------


def _delete_and_die(db_url: str, key_url: str, conversation_id: str) -> None:
    class DyingKeyStore(SQLKeyStore):
        def delete_key(self, conversation_id: str) -> None:
            super().delete_key(conversation_id)
            os.kill(os.getpid(), signal.SIGKILL)  # the key is gone; the rows' transaction never commits

    keys = DyingKeyStore(key_url)
    with convstore.Store(db_url, keyring=ring(), key_store=keys) as store:
        store.delete_conversation(conversation_id)


def test_check_repairs_a_delete_killed_after_the_key_store_committed(db_url, tmp_path):
    pytest.importorskip("cryptography")
    key_url = f"sqlite:///{tmp_path / 'keys.db'}"
    keys = SQLKeyStore(key_url)
    with convstore.Store(db_url, keyring=ring(), key_store=keys) as store:
        conv = store.create_conversation()
        conv.append([user(SECRET)])
        kept = store.create_conversation()
        kept.append([user("kept")])
    child = multiprocessing.get_context("fork").Process(
        target=_delete_and_die, args=(db_url, key_url, conv.id)
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    with convstore.Store(db_url, keyring=ring(), key_store=keys) as store:
        with pytest.raises(DataKeyNotFoundError):  # nothing readable is left
            store.conversation(conv.id)
        assert store.check().kinds() == {"missing_data_key"}
        report = store.check(repair=True)
        assert report.ok
        assert report.repaired == (conv.id,)
        assert store.check().ok
        with pytest.raises(ConversationNotFoundError):
            store.conversation(conv.id)
        assert store.conversation(kept.id).history() == [user("kept")]
    keys.close()


def test_a_purge_stopped_by_a_full_disk_says_what_it_deleted(small_disk):
    url = f"sqlite:///{small_disk / 'x.db'}"
    text = SECRET * 1500
    for leave_kb in range(120, 600, 40):
        for name in os.listdir(small_disk):
            os.remove(small_disk / name)
        with convstore.Store(url) as store:
            ids = []
            for _ in range(5):
                conv = store.create_conversation()
                conv.append([user(text)])
                ids.append(conv.id)
            store.checkpoint()
            with store.engine.begin() as conn:
                conn.exec_driver_sql("UPDATE convstore_conversations SET created_at = '2000-01-01 00:00:00'")
                conn.exec_driver_sql("UPDATE convstore_branches SET updated_at = '2000-01-01 00:00:00'")
            store.checkpoint()
            filler = fill(small_disk, leave_kb * 1024)
            error = _first_failure(lambda: store.purge(older_than=timedelta(days=1)))
            filler.unlink()
            if isinstance(error, PurgeIncompleteError):
                break
    else:
        pytest.fail("no room left stopped the purge halfway")
    assert isinstance(error.error, DatabaseError)
    assert error.error.cause == "disk_full"
    assert 0 < len(error.deleted_ids) < 5
    with convstore.Store(url) as store:
        left = {info.id for info in store.iter_conversations()}
    assert left == set(ids) - set(error.deleted_ids)
