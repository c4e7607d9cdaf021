"""One engine, many stores: the web-app pattern, attacked from outside.

An app makes one engine (one pool) at startup and one store per request, ``Store(engine, owner=user)`` or
``app_store.for_owner(user)``. Hundreds of them on one engine, used from many threads (or tasks) at once with
their transactions interleaved, must behave as one store each: every write lands, every owner sees exactly
its own conversations, and the engine's listeners are installed once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from conftest import user

import convstore

STORES = 300  # stores made on one engine, half of them Store(engine, owner=...), half for_owner(...)
OWNERS = 12
THREADS = 8


def _owner(index: int) -> str:
    return f"user-{index % OWNERS}"


def _begin_listeners(engine: sa.Engine) -> int:
    return len(engine.dispatch.begin)


def test_hundreds_of_stores_on_one_engine_from_many_threads(db_url):
    engine = sa.create_engine(db_url, pool_size=THREADS, max_overflow=0)
    app = convstore.Store(engine)
    listeners = _begin_listeners(engine)
    written: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def request(index: int) -> None:
        if index < THREADS:
            start.wait()  # the first requests of every thread begin together
        owner = _owner(index)
        # Both ways of making a per-request store, alternately, on the one engine.
        store = convstore.Store(engine, owner=owner) if index % 2 else app.for_owner(owner)
        with store:
            conv = store.create_conversation(model="m", metadata={"request": index})
            conv.append([user(f"request {index}")])
            # A read between the two writes: transactions of other threads interleave with these.
            assert [info.id for info in store.iter_conversations(page_size=7)].count(conv.id) == 1
            conv.append([user(f"again {index}")])
            assert len(store.conversation(conv.id).history()) == 2
        with lock:
            written[owner] += 1

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(request, range(STORES)))

    assert _begin_listeners(engine) == listeners  # 300 stores later, still the listeners of one
    assert sum(written.values()) == STORES
    assert len(list(app.iter_conversations())) == STORES
    for index in range(OWNERS):
        owner = _owner(index)
        mine = list(app.for_owner(owner).iter_conversations())
        assert len(mine) == written[owner]
        assert all(
            app.conversation(info.id).history()[0]["content"][0]["text"].startswith("request ")
            for info in mine[:3]
        )
    # Closing the per-request stores left the engine working.
    assert app.for_owner("late").create_conversation().id
    app.close()
    engine.dispose()


def test_an_engine_is_set_up_once(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'once.db'}")
    stores = [convstore.Store(engine, owner="o0")]
    connect = len(engine.pool.dispatch.connect)
    stores += [convstore.Store(engine, owner=f"o{i}") for i in range(1, 50)]
    assert _begin_listeners(engine) == 1
    assert len(engine.pool.dispatch.connect) == connect
    # A copy made by execution_options shares the pool and the listeners: nothing installed twice.
    convstore.Store(engine.execution_options(compiled_cache=None), owner="c").create_conversation()
    assert _begin_listeners(engine) == 1
    for store in stores:
        store.close()
    with pytest.raises(ValueError, match="busy_timeout"):
        convstore.Store(engine, busy_timeout=1.0)  # one engine cannot have two busy timeouts
    engine.dispose()


def test_for_owner_shares_everything_but_the_owner(tmp_path):
    keyring = convstore.Keyring({"k": b"k" * 32}, active="k")
    seen: list[str] = []

    def redact(step: dict) -> dict:
        seen.append(step["type"])
        return step

    with convstore.Store(f"sqlite:///{tmp_path / 's.db'}", keyring=keyring, redact=redact) as app:
        ana = app.for_owner("ana")
        assert type(ana) is type(app)
        assert (ana.engine, ana.keyring, ana.key_store, ana.counter, ana.redact) == (
            app.engine,
            app.keyring,
            app.key_store,
            app.counter,
            app.redact,
        )
        conv = ana.create_conversation(system_instruction="secret")
        conv.append([user("hi")])
        assert conv.encrypted
        assert seen == ["user_input"]
        ana.close()  # releases nothing of the app's
        assert app.conversation(conv.id).system_instruction == "secret"
        with pytest.raises(convstore.ConversationNotFoundError):
            app.for_owner("ben").conversation(conv.id)
        assert ana.for_owner("ana").owner == "ana"
        with pytest.raises(ValueError, match="another owner"):
            ana.for_owner("ben")
        for bad in (None, "", "x" * 256):
            with pytest.raises(ValueError, match="owner"):
                app.for_owner(bad)  # type: ignore[arg-type]
        assert app.owner is None


def _async_url(db_url: str) -> str:
    url = sa.make_url(db_url)
    if url.get_backend_name() != "sqlite":
        return db_url
    return url.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)


def test_hundreds_of_async_stores_on_one_engine(db_url):
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415 -- the asyncio extra

    async def main() -> tuple[int, Counter[str], int]:
        engine = create_async_engine(_async_url(db_url), pool_size=THREADS, max_overflow=0)
        app = convstore.AsyncStore(engine)
        await app.__aenter__()
        listeners = _begin_listeners(engine.sync_engine)
        gate = asyncio.Semaphore(THREADS)

        async def request(index: int) -> str:
            owner = _owner(index)
            async with gate:
                if index % 2:
                    store = convstore.AsyncStore(engine, owner=owner)
                    await store.__aenter__()
                else:
                    store = app.for_owner(owner)
                conv = await store.create_conversation(model="m")
                await conv.append([user(f"request {index}")])
                assert conv.id in [info.id async for info in store.iter_conversations(page_size=9)]
                await conv.append([user(f"again {index}")])
                assert len(await (await store.conversation(conv.id)).history()) == 2
                await store.aclose()
            return owner

        owners = Counter(await asyncio.gather(*(request(i) for i in range(STORES))))
        counts = Counter[str]()
        for owner in owners:
            counts[owner] = len([info async for info in app.for_owner(owner).iter_conversations()])
        grown = _begin_listeners(engine.sync_engine) - listeners
        await app.aclose()
        await engine.dispose()
        return grown, counts - owners, sum(owners.values())

    grown, difference, total = asyncio.run(main())
    assert (grown, difference, total) == (0, Counter(), STORES)
