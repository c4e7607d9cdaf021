"""``busy_timeout`` means the same on both backends: an operation behind another connection's lock gives up
after it with ``StoreBusyError`` (PostgreSQL's ``lock_timeout``, SQLite's busy handler); an asyncio deadline
holds behind a lock (the statement is cancelled on the server); the first opens of a new SQLite file by
several processes at once wait for each other instead of failing.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import convstore
from convstore.errors import StoreBusyError
from tests.conftest import user


@pytest.fixture
def locked(db_url: str) -> Iterator[tuple[str, Any]]:
    """A conversation, and a second connection that can lock the nodes table (PostgreSQL only)."""
    if db_url.startswith("sqlite"):
        pytest.skip("LOCK TABLE is PostgreSQL's")
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        conv.append([user("one")])
        other = sa.create_engine(db_url)
        yield conv.id, other
        other.dispose()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_an_append_behind_a_table_lock_gives_up_after_the_busy_timeout(locked, db_url, flavour, portal):
    conversation_id, other = locked
    with other.connect() as holder:
        holder.exec_driver_sql("BEGIN")
        holder.exec_driver_sql("LOCK TABLE convstore_nodes IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        if flavour == "sync":
            with convstore.Store(db_url, busy_timeout=1) as store, pytest.raises(StoreBusyError):
                store.conversation(conversation_id).append([user("two")])
        else:

            async def attempt() -> None:
                async with convstore.AsyncStore(db_url, busy_timeout=1) as store:
                    conv = await store.conversation(conversation_id)
                    await conv.append([user("two")])

            with pytest.raises(StoreBusyError):
                portal.call(attempt())
        waited = time.monotonic() - started
        holder.exec_driver_sql("ROLLBACK")
    assert 0.9 <= waited < 10, waited


def test_an_asyncio_deadline_holds_behind_a_table_lock(locked, db_url, portal):
    """The default busy timeout is 30 s: ``wait_for(append, 2)`` must still return in about 2 s, with the
    store usable afterwards (its connection went back to the pool whole)."""
    conversation_id, other = locked

    async def attempt(conv: Any) -> float:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(conv.append([user("two")]), 2)
        return time.monotonic() - started

    async def after(store: convstore.AsyncStore) -> int:
        conv = await store.conversation(conversation_id)
        await conv.append([user("three")])
        return len(await conv.history())

    store = convstore.AsyncStore(db_url)
    portal.call(store.__aenter__())
    try:
        conv = portal.call(store.conversation(conversation_id))
        with other.connect() as holder:
            holder.exec_driver_sql("BEGIN")
            holder.exec_driver_sql("LOCK TABLE convstore_nodes IN ACCESS EXCLUSIVE MODE")
            # Should the append not give up, the lock goes after 15 s (the test then fails, not hangs).
            pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            release = threading.Timer(15, _terminate, (other, pid))
            release.start()
            waited = portal.call(attempt(conv))
            release.cancel()
            holder.exec_driver_sql("ROLLBACK")
        assert waited < 4, waited
        assert portal.call(after(store)) == 2
    finally:
        portal.call(store.aclose())


def _terminate(engine: sa.Engine, pid: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")


def _open_and_write(url: str, start: Any, errors: Any) -> None:
    start.wait()
    try:
        with convstore.Store(url, busy_timeout=10) as store:
            store.create_conversation().append([user("hello")])
    except Exception as error:  # reported to the test, which names it
        errors.put(f"{type(error).__name__}: {error}")


@pytest.mark.parametrize("round_", range(3))
def test_first_opens_of_a_new_file_by_eight_processes_wait_for_each_other(tmp_path: Path, round_: int):
    url = f"sqlite:///{tmp_path / f'new-{round_}.db'}"
    context = multiprocessing.get_context("fork")
    start, errors = context.Event(), context.Queue()
    workers = [context.Process(target=_open_and_write, args=(url, start, errors)) for _ in range(8)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(60)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    with convstore.Store(url) as store:
        assert len(store.conversations(limit=100).items) == 8


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_sqlite_fork_or_edit_behind_a_writer_waits_for_it_then_gives_up(tmp_path: Path, flavour, portal):
    """A fork or an edit is one statement, which SQLite runs as its own transaction: behind another
    connection's write transaction it waits (the busy timeout) as a BEGIN IMMEDIATE would, goes on when
    the writer commits within it, and otherwise gives up with ``StoreBusyError`` having written nothing."""
    import sqlite3  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    with convstore.Store(url) as setup:
        conv = setup.create_conversation()
        nodes = conv.append([user("one"), user("two")])
    holder = sqlite3.connect(tmp_path / "busy.db", isolation_level=None, check_same_thread=False)

    def attempt(name: str, *, fork: bool) -> None:
        async def run() -> None:
            async with convstore.AsyncStore(url, busy_timeout=1) as store:
                opened = await store.conversation(conv.id)
                await (
                    opened.fork(at=nodes[1].id, branch=name)
                    if fork
                    else opened.edit(nodes[1].id, branch=name)
                )

        if flavour == "async":
            portal.call(run())
            return
        with convstore.Store(url, busy_timeout=1) as store:
            opened = store.conversation(conv.id)
            opened.fork(at=nodes[1].id, branch=name) if fork else opened.edit(nodes[1].id, branch=name)

    try:
        for fork in (False, True):
            holder.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            with pytest.raises(StoreBusyError):
                attempt("refused", fork=fork)
            assert 0.9 <= time.monotonic() - started < 10
            holder.execute("ROLLBACK")
            holder.execute("BEGIN IMMEDIATE")
            release = threading.Timer(0.3, holder.execute, ("COMMIT",))
            release.start()
            attempt(f"waited-{fork}", fork=fork)
            release.join()
    finally:
        holder.close()
    with convstore.Store(url) as store:
        branches = {b.name: b.head_id for b in store.conversation(conv.id).branches()}
    assert branches == {"main": nodes[1].id, "waited-False": nodes[0].id, "waited-True": nodes[1].id}
