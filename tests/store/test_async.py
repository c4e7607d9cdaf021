"""What only asyncio can show: many tasks at once, and cancellation, on the async store."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import steps_of, user

import convstore
from convstore.model._interaction import Interaction
from convstore.testing import Emulator, text_reply

MODEL = "gemini-3-flash-preview"


def count_rows(url: str) -> tuple[int, int, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return tuple(  # type: ignore[return-value]
                conn.execute(sa.text(f"SELECT count(*) FROM convstore_{table}")).scalar_one()
                for table in ("nodes", "exchanges", "branches")
            )
    finally:
        engine.dispose()


def test_many_tasks_appending_to_many_conversations_lose_nothing(db_url):
    conversations, writers_each, exchanges_each = 6, 3, 8

    async def main() -> tuple[list[list[dict]], int]:
        async with convstore.AsyncStore(db_url) as store:
            made = [await store.create_conversation() for _ in range(conversations)]
            conflicts = 0

            async def writer(conversation_id: str, writer_id: int) -> None:
                nonlocal conflicts
                conv = await store.conversation(conversation_id)
                for i in range(exchanges_each):
                    steps = [user(f"w{writer_id}-{i}"), {"type": "model_output", "content": []}]
                    while True:
                        try:
                            await conv.append(steps)
                            break
                        except convstore.ConflictError:
                            conflicts += 1
                            await conv.refresh()

            await asyncio.gather(*(writer(conv.id, w) for conv in made for w in range(writers_each)))
            return [await conv.history() for conv in made], conflicts

    histories, _ = asyncio.run(main())
    for history in histories:
        assert len(history) == writers_each * exchanges_each * 2
        texts = [step["content"][0]["text"] for step in history[::2]]
        expected = [f"w{w}-{i}" for w in range(writers_each) for i in range(exchanges_each)]
        assert sorted(texts) == sorted(expected)
        assert all(step["type"] == "model_output" for step in history[1::2])  # exchanges never interleave


class SlowClient:
    """An async client whose call waits until cancelled (or released)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def create(self, body: Any) -> Interaction:
        self.started.set()
        await asyncio.sleep(3600)
        raise AssertionError("not reached")


def test_cancelling_send_writes_nothing(db_url):
    async def main() -> None:
        async with convstore.AsyncStore(db_url) as store:
            conv = await store.create_conversation(model=MODEL)
            await conv.append([user("kept")])
            client = SlowClient()
            task = asyncio.create_task(conv.send("never recorded", client=client))
            await client.started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await conv.history() == [user("kept")]

    asyncio.run(main())
    assert count_rows(db_url) == (1, 0, 1)


def test_cancelling_a_stream_midway_writes_nothing(db_url):
    emulator = Emulator()
    emulator.script(text_reply("a long answer " * 50))

    async def main() -> None:
        async with (
            convstore.AsyncStore(db_url) as store,
            httpx.AsyncClient(transport=emulator.transport()) as http,
        ):
            conv = await store.create_conversation(model=MODEL)
            client = convstore.AsyncInteractionsClient("test-key", http_client=http)
            seen = asyncio.Event()

            async def consume() -> None:
                turn = await conv.stream("tell me", client=client)
                async for _ in turn:
                    seen.set()
                    await asyncio.sleep(0.05)

            task = asyncio.create_task(consume())
            await seen.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await conv.history() == []

    asyncio.run(main())
    assert count_rows(db_url) == (0, 0, 1)


def test_appends_cancelled_at_any_point_leave_the_pool_whole(db_url):
    # Cancelled inside a driver call, aiosqlite's connection close could wait forever and psycopg's
    # connection was dropped unreturned; the transaction now stops between statements, whole.
    tasks, appends = 4, 60

    async def writer(store: convstore.AsyncStore, seed: int) -> tuple[str, list[str]]:
        rng = random.Random(seed)
        conv = await store.create_conversation()
        written = []
        for i in range(appends):
            try:
                await asyncio.wait_for(conv.append(steps_of(f"u{i}")), timeout=rng.uniform(0, 0.01))
                written.append(f"u{i}")
            except asyncio.TimeoutError:
                await conv.refresh()
        return conv.id, written

    async def main() -> list[tuple[list[str], list[dict]]]:
        async with convstore.AsyncStore(db_url) as store:
            results = await asyncio.gather(*(writer(store, seed) for seed in range(tasks)))
            assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            assert (await store.check()).ok
            histories = []
            for conversation_id, written in results:
                conv = await store.conversation(conversation_id)
                await conv.append([user("after")])
                histories.append((written, await conv.history()))
            return histories

    for written, history in asyncio.run(asyncio.wait_for(main(), timeout=120)):
        texts = [step["content"][0]["text"] for step in history if step["type"] == "user_input"]
        assert texts[-1] == "after"
        assert history[:-1] == [step for text in texts[:-1] for step in steps_of(text)]
        assert set(written) <= set(texts)  # a cancelled append is there or not; one that returned is there
        assert texts[:-1] == sorted(set(texts[:-1]), key=lambda t: int(t[1:]))
        assert len(written) < appends  # some were cancelled


def test_the_async_store_and_the_sync_store_share_one_database(db_url):
    async def write() -> str:
        async with convstore.AsyncStore(db_url) as store:
            conv = await store.create_conversation(model=MODEL, metadata={"from": "async"})
            await conv.append([user("hello from asyncio")])
            return conv.id

    conversation_id = asyncio.run(write())
    with convstore.Store(db_url) as store:
        conv = store.conversation(conversation_id)
        assert conv.history() == [user("hello from asyncio")]
        assert conv.metadata == {"from": "async"}


def test_an_outdated_database_is_refused_by_the_async_store_too(db_url):
    from convstore.store import _migrate  # noqa: PLC0415

    with convstore.Store(db_url) as store:
        _migrate.downgrade(store.engine, "0001")

    async def main() -> None:
        store = convstore.AsyncStore(db_url)
        with pytest.raises(convstore.SchemaOutdatedError):
            await store.create_conversation()
        upgrading = convstore.AsyncStore(db_url, check_schema=False)
        await upgrading.upgrade()
        await upgrading.aclose()
        async with convstore.AsyncStore(db_url) as fresh:
            assert await fresh.schema_revision() == _migrate.head_revision()

    asyncio.run(main())
