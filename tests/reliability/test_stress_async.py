"""The asyncio twin of ``test_stress``: many tasks in one event loop (and several processes each running a
loop of them) writing at once through ``AsyncStore``, on both backends; and tasks cancelled mid-append.

The invariants are ``test_stress.verify``'s: every exchange an ``append`` returned is stored exactly once,
whole and in order, each task's exchanges in its own order, forks are prefixes of main as it was, and
nothing else is stored; ``check()`` is clean. A cancelled append is stored whole or not at all. The store is
read back through a plain ``Store``, a reader independent of the writers. The number of ``ConflictError``s
retried is printed (``pytest -s``). Sizes: ``CONVSTORE_STRESS_TASKS`` (tasks a loop),
``CONVSTORE_STRESS_EXCHANGES`` (each task's count), ``CONVSTORE_STRESS_PROCESSES`` (loops, for the
processes x tasks variant); the ``slow`` variants use larger defaults.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from typing import Any

import pytest
from conftest import steps_of
from test_stress import MODES, run_processes, sizes, verify

import convstore
from convstore import ConflictError, StoreBusyError

SMALL = {"tasks": 16, "exchanges": 6}
LARGE = {"tasks": 64, "exchanges": 20}
SMALL_PROCESSES = {"processes": 2, "tasks": 8, "exchanges": 6}
LARGE_PROCESSES = {"processes": 4, "tasks": 16, "exchanges": 20}


def backend(url: str) -> str:
    return url.split(":", maxsplit=1)[0]


def checked_out(store: convstore.AsyncStore) -> int:
    """Connections taken from the store's pool and not yet returned."""
    return store.engine.pool.checkedout()  # type: ignore[attr-defined,no-any-return]


async def append(conv: convstore.AsyncConversation, tag: str) -> tuple[str, int]:
    conflicts = 0
    while True:
        try:
            nodes = await conv.append(steps_of(tag))
        except ConflictError:
            conflicts += 1
            await conv.refresh()
        else:
            return nodes[0].exchange_id, conflicts


async def task_work(
    store: convstore.AsyncStore, plan: dict[str, Any], writer: int, out: dict[str, Any]
) -> None:
    mode, targets = plan["mode"], plan["targets"]
    convs: dict[tuple[str, str], convstore.AsyncConversation] = {}
    for index in range(plan["exchanges"]):
        tag = f"w{writer}-{index}"
        if mode == "fork_while_appending" and writer % 2 == 1:
            # Fork from main's head as it is now, while the others append to main, and write on the fork.
            main = await store.conversation(targets[0][0])
            fork = await main.fork(branch=f"f{writer}-{index}")
            exchange_id, conflicts = await append(fork, tag)
            out["forks"].append((fork.branch, main.head_id))
            out["done"].append((targets[0][0], fork.branch, tag, exchange_id))
        else:
            key = targets[writer % len(targets)]
            conv = convs.get(key) or await store.conversation(*key)
            convs[key] = conv
            exchange_id, conflicts = await append(conv, tag)
            out["done"].append((*key, tag, exchange_id))
        out["conflicts"] += conflicts


async def make_targets(store: convstore.AsyncStore, mode: str, writers: int) -> list[tuple[str, str]]:
    if mode == "many_conversations":
        return [((await store.create_conversation()).id, "main") for _ in range(max(2, writers // 2))]
    if mode == "many_branches":
        conv = await store.create_conversation()
        base = await conv.append(steps_of("base"))
        names = [f"b{i}" for i in range(max(2, writers // 2))]  # two writers a branch: some conflicts
        for name in names:
            await conv.fork(at=base[-1].id, branch=name)
        return [(conv.id, name) for name in names]
    return [((await store.create_conversation()).id, "main")]


async def run_tasks(store: convstore.AsyncStore, plan: dict[str, Any], first_writer: int) -> list[dict]:
    """One loop's tasks, each writing its exchanges; every task's record (an error too, as text)."""
    outs = [{"done": [], "forks": [], "conflicts": 0, "error": None} for _ in range(plan["tasks"])]

    async def run(writer: int, out: dict[str, Any]) -> None:
        try:
            await task_work(store, plan, writer, out)
        except Exception as exc:
            out["error"] = repr(exc)

    await asyncio.gather(*(run(first_writer + t, out) for t, out in enumerate(outs)))
    return outs


def check_outs(db_url: str, outs: list[dict], mode: str, writers: int, exchanges: int) -> int:
    errors = [out["error"] for out in outs if out["error"]]
    assert errors == []
    done = [d for out in outs for d in out["done"]]
    assert len(done) == writers * exchanges
    with convstore.Store(db_url) as reader:
        verify(reader, done, [f for out in outs for f in out["forks"]], mode)
    return sum(out["conflicts"] for out in outs)


def run_stress(db_url: str, mode: str, slow: bool) -> dict[str, Any]:
    size = sizes(slow, SMALL, LARGE)
    writers = size["tasks"]

    async def main() -> tuple[list[dict], float]:
        async with convstore.AsyncStore(db_url) as store:
            targets = await make_targets(store, mode, writers)
            plan = {"mode": mode, "targets": targets, "exchanges": size["exchanges"], "tasks": writers}
            started = time.perf_counter()
            outs = await run_tasks(store, plan, 0)
            elapsed = time.perf_counter() - started
            assert checked_out(store) == 0
            report = await store.check()
            assert report.ok, report.lines()
            return outs, elapsed

    outs, elapsed = asyncio.run(main())
    conflicts = check_outs(db_url, outs, mode, writers, size["exchanges"])
    print(
        f"\nstress-async {mode} on {backend(db_url)}: {writers} tasks x {size['exchanges']} exchanges "
        f"in {elapsed:.1f} s, {conflicts} conflicts retried"
    )
    return {"conflicts": conflicts}


@pytest.mark.parametrize("mode", MODES)
def test_tasks_writing_at_once(db_url, mode):
    run_stress(db_url, mode, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_tasks_writing_at_once_at_length(db_url, mode):
    run_stress(db_url, mode, slow=True)


# Processes x tasks: several event loops, each in its own process, each with its tasks.


def _process(url: str, plan: dict[str, Any], first_writer: int, queue: Any) -> None:
    async def main() -> list[dict]:
        async with convstore.AsyncStore(url) as store:
            return await run_tasks(store, plan, first_writer)

    try:
        outs = asyncio.run(main())
    except BaseException as exc:
        outs = [{"error": repr(exc), "done": [], "forks": [], "conflicts": 0}] * plan["tasks"]
    for out in outs:  # one report a task, so the parent is not left waiting
        queue.put(out)


def run_process_stress(db_url: str, mode: str, slow: bool) -> None:
    size = sizes(slow, SMALL_PROCESSES, LARGE_PROCESSES)
    writers = size["processes"] * size["tasks"]

    async def setup() -> list[tuple[str, str]]:
        async with convstore.AsyncStore(db_url) as store:
            return await make_targets(store, mode, writers)

    plan = {
        "mode": mode,
        "targets": asyncio.run(setup()),
        "exchanges": size["exchanges"],
        "tasks": size["tasks"],
    }
    outs, elapsed = run_processes(_process, db_url, plan, size["processes"], size["tasks"])
    conflicts = check_outs(db_url, outs, mode, writers, size["exchanges"])
    with convstore.Store(db_url) as reader:
        report = reader.check()
        assert report.ok, report.lines()
    print(
        f"\nstress-async {mode} on {backend(db_url)}: {size['processes']} processes x {size['tasks']} tasks "
        f"x {size['exchanges']} exchanges in {elapsed:.1f} s, {conflicts} conflicts retried"
    )


@pytest.mark.parametrize("mode", MODES)
def test_processes_of_tasks_writing_at_once(db_url, mode):
    run_process_stress(db_url, mode, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_processes_of_tasks_writing_at_once_at_length(db_url, mode):
    run_process_stress(db_url, mode, slow=True)


# Cancellation: tasks cancelled mid-append, by a tiny timeout or by task.cancel() at a random moment.


def run_cancellations(db_url: str, slow: bool, seed: int = 0) -> None:
    size = sizes(slow, SMALL, LARGE)
    writers, exchanges = size["tasks"], size["exchanges"]
    rng = random.Random(seed)
    done: list[tuple] = []
    maybe: list[tuple] = []  # appends whose outcome the cancelled caller never learnt
    counts = {"timeouts": 0, "cancels": 0, "conflicts": 0}

    async def writer(store: convstore.AsyncStore, key: tuple[str, str], number: int) -> None:
        conv = await store.conversation(*key)
        for index in range(exchanges):
            tag = f"w{number}-{index}"
            try:
                while True:
                    try:
                        if rng.random() < 0.5:
                            nodes = await asyncio.wait_for(conv.append(steps_of(tag)), rng.uniform(0, 0.03))
                        else:
                            nodes = await conv.append(steps_of(tag))
                    except ConflictError:
                        counts["conflicts"] += 1
                        await conv.refresh()
                    else:
                        done.append((*key, tag, nodes[0].exchange_id))
                        break
            except asyncio.TimeoutError:
                counts["timeouts"] += 1
                maybe.append((*key, tag))
                await conv.refresh()
            except asyncio.CancelledError:
                maybe.append((*key, tag))  # the append in flight, if any
                raise

    async def canceller(tasks: list[asyncio.Task]) -> None:
        for task in rng.sample(tasks, len(tasks) // 4):
            await asyncio.sleep(rng.uniform(0, 0.1))
            counts["cancels"] += task.cancel()

    async def main() -> None:
        async with convstore.AsyncStore(db_url) as store:
            conversations = [(await store.create_conversation()).id for _ in range(2)]
            keys = [(cid, "main") for cid in conversations]  # a few tasks a branch: conflicts too
            tasks = [asyncio.ensure_future(writer(store, keys[n % 2], n)) for n in range(writers)]
            await canceller(tasks)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            unexpected = [r for r in results if r is not None and not isinstance(r, asyncio.CancelledError)]
            assert unexpected == []
            # Nothing half-done is left behind: every connection is back, and the store takes more writes.
            # A task cancelled while its asyncio.wait_for was cancelling the append inside it can end before
            # that append's shielded transaction does (Python 3.11's wait_for): wait for such stragglers,
            # a few seconds at most, then every connection must be back.
            stragglers = asyncio.all_tasks() - {asyncio.current_task()}
            if stragglers:
                await asyncio.wait(stragglers, timeout=10)
            assert checked_out(store) == 0
            report = await store.check()
            assert report.ok, report.lines()
            for number, key in enumerate(keys):
                tag = f"w{writers + number}-0"
                exchange_id, _ = await append(await store.conversation(*key), tag)
                done.append((*key, tag, exchange_id))
            assert checked_out(store) == 0

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    with convstore.Store(db_url) as reader:
        written_anyway = verify(reader, done, [], "one_branch", maybe)
        assert reader.check().ok
    print(
        f"\nstress-async cancellations on {backend(db_url)}: {writers} tasks x {exchanges} exchanges in "
        f"{elapsed:.1f} s, {counts['timeouts']} timed out and {counts['cancels']} tasks cancelled mid-run "
        f"({written_anyway} of the cancelled appends committed first), "
        f"{counts['conflicts']} conflicts retried"
    )


def test_tasks_cancelled_mid_append_leave_the_store_whole(db_url):
    run_cancellations(db_url, slow=False)


@pytest.mark.slow
def test_tasks_cancelled_mid_append_leave_the_store_whole_at_length(db_url):
    run_cancellations(db_url, slow=True)


# SQLite's lock under many tasks: only ConflictError or StoreBusyError reaches them, never sqlite3's error.


def test_many_tasks_on_one_sqlite_file_see_only_conflict_or_busy(tmp_path):
    size = sizes(False, SMALL, LARGE)
    path = tmp_path / "busy.db"
    url = f"sqlite:///{path}"
    done: list[tuple] = []
    maybe: list[tuple] = []
    seen: dict[str, int] = {"ConflictError": 0, "StoreBusyError": 0, "lock held": 0}
    raw: list[str] = []

    async def writer(store: convstore.AsyncStore, key: tuple[str, str], number: int) -> None:
        conv = await store.conversation(*key)
        serial = 0  # one tag an attempt that may have been written, in the task's order
        for _ in range(size["exchanges"]):
            while True:
                tag = f"w{number}-{serial}"
                try:
                    nodes = await conv.append(steps_of(tag))
                except (ConflictError, StoreBusyError) as exc:
                    seen[type(exc).__name__] += 1
                    if isinstance(exc, StoreBusyError):
                        maybe.append((*key, tag))  # stored whole or not at all; retried under a new tag
                        serial += 1
                    await conv.refresh()
                except Exception as exc:
                    raw.append(repr(exc))
                    return
                else:
                    done.append((*key, tag, nodes[0].exchange_id))
                    serial += 1
                    break

    async def lock_holder(stop: asyncio.Event) -> None:
        """Another program that takes SQLite's write lock now and then, for longer than the busy timeout."""
        holder = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            while not stop.is_set():
                try:
                    holder.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError:
                    await asyncio.sleep(0.01)
                    continue
                seen["lock held"] += 1
                await asyncio.sleep(0.15)
                holder.rollback()
                await asyncio.sleep(0.05)
        finally:
            holder.close()

    async def main() -> None:
        # Several stores on the file (more connections than one pool holds), a short busy timeout.
        stores = [convstore.AsyncStore(url, busy_timeout=0.05) for _ in range(3)]
        try:
            conv = await stores[0].create_conversation()
            keys = [(conv.id, "main")]
            stop = asyncio.Event()
            holding = asyncio.ensure_future(lock_holder(stop))
            await asyncio.gather(*(writer(stores[n % 3], keys[0], n) for n in range(2 * size["tasks"])))
            stop.set()
            await holding
            for store in stores:
                assert checked_out(store) == 0
            assert (await stores[0].check()).ok
        finally:
            for store in stores:
                await store.aclose()

    asyncio.run(main())
    assert raw == []
    assert seen["StoreBusyError"] > 0  # the lock was met, and met as StoreBusyError
    with convstore.Store(url) as reader:
        written_anyway = verify(reader, done, [], "one_branch", maybe)
        assert reader.check().ok
    print(
        f"\nstress-async sqlite lock: {2 * size['tasks']} tasks x {size['exchanges']} exchanges, lock held "
        f"{seen['lock held']} times, {seen['StoreBusyError']} StoreBusyError ({written_anyway} committed "
        f"anyway), {seen['ConflictError']} conflicts retried"
    )
