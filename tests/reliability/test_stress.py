"""Many processes and threads writing at once, on both backends: nothing lost, nothing doubled, no
exchange interleaved, ``check()`` clean afterwards; and SQLite's lock never reaches the user raw.

Each writer records every exchange an ``append`` returned (its tag and exchange id); afterwards each
recorded exchange is in the store exactly once, whole and in order, and nothing else is. The number of
``ConflictError``s met (and retried) is printed (``pytest -s``). Sizes: ``CONVSTORE_STRESS_PROCESSES``,
``CONVSTORE_STRESS_THREADS``, ``CONVSTORE_STRESS_EXCHANGES`` (each writer's count); the ``slow`` variants
use larger defaults.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import steps_of, user

import convstore
from convstore import ConflictError, StoreBusyError

SMALL = {"processes": 2, "threads": 2, "exchanges": 6}
LARGE = {"processes": 4, "threads": 4, "exchanges": 40}
MODES = ["one_branch", "many_branches", "many_conversations", "fork_while_appending"]


def process_context() -> Any:
    """Fresh processes, forked from a server that has convstore imported already (no copied connections,
    and no second of start-up each as with spawn)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["convstore", "sqlalchemy", "psycopg"])
    return ctx


def run_processes(
    target: Any, db_url: str, plan: dict[str, Any], processes: int, each: int
) -> tuple[list[dict[str, Any]], float]:
    """``processes`` processes of ``target(db_url, plan, first_writer, queue)``, ``each`` writers apiece, each
    writer putting one report on the queue: the reports, and the seconds they all took."""
    ctx = process_context()
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(db_url, plan, p * each, queue)) for p in range(processes)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    outs = [queue.get(timeout=600) for _ in range(processes * each)]
    for proc in procs:
        proc.join(timeout=60)
    return outs, time.perf_counter() - started


def sizes(slow: bool, small: dict[str, int] = SMALL, large: dict[str, int] = LARGE) -> dict[str, int]:
    base = large if slow else small
    return {k: int(os.environ.get(f"CONVSTORE_STRESS_{k.upper()}", v)) for k, v in base.items()}


def _append(conv: convstore.Conversation, tag: str) -> tuple[str, int]:
    conflicts = 0
    while True:
        try:
            nodes = conv.append(steps_of(tag))
        except ConflictError:
            conflicts += 1
            conv.refresh()
        else:
            return nodes[0].exchange_id, conflicts


def _thread_work(store: convstore.Store, plan: dict[str, Any], writer: int, out: dict[str, Any]) -> None:
    mode, targets = plan["mode"], plan["targets"]
    convs: dict[tuple[str, str], convstore.Conversation] = {}
    for index in range(plan["exchanges"]):
        tag = f"w{writer}-{index}"
        if mode == "fork_while_appending" and writer % 2 == 1:
            # Fork from main's head as it is now, while the others append to main, and write on the fork.
            main = store.conversation(targets[0][0])
            fork = main.fork(branch=f"f{writer}-{index}")
            exchange_id, conflicts = _append(fork, tag)
            out["forks"].append((fork.branch, main.head_id))
            out["done"].append((targets[0][0], fork.branch, tag, exchange_id))
        else:
            key = targets[writer % len(targets)]
            conv = convs.get(key) or store.conversation(*key)
            convs[key] = conv
            exchange_id, conflicts = _append(conv, tag)
            out["done"].append((*key, tag, exchange_id))
        out["conflicts"] += conflicts


def _process(url: str, plan: dict[str, Any], first_writer: int, queue: Any) -> None:
    results: list[dict[str, Any]] = []
    try:
        with convstore.Store(url) as store:
            threads = []
            for t in range(plan["threads"]):
                out: dict[str, Any] = {"done": [], "forks": [], "conflicts": 0, "error": None}
                results.append(out)

                def run(writer: int = first_writer + t, out: dict[str, Any] = out) -> None:
                    try:
                        _thread_work(store, plan, writer, out)
                    except BaseException as exc:
                        out["error"] = repr(exc)

                threads.append(threading.Thread(target=run))
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    except BaseException as exc:
        for _ in range(plan["threads"]):  # one report a writer, so the parent is not left waiting
            queue.put({"error": repr(exc), "done": [], "forks": [], "conflicts": 0})
        return
    for out in results:
        queue.put(out)


def run_stress(db_url: str, mode: str, slow: bool) -> dict[str, Any]:
    size = sizes(slow)
    writers = size["processes"] * size["threads"]
    with convstore.Store(db_url) as store:
        if mode == "many_conversations":
            targets = [(store.create_conversation().id, "main") for _ in range(max(2, writers // 2))]
        elif mode == "many_branches":
            conv = store.create_conversation()
            base = conv.append(steps_of("base"))
            names = [f"b{i}" for i in range(max(2, writers // 2))]  # two writers a branch: some conflicts
            for name in names:
                conv.fork(at=base[-1].id, branch=name)
            targets = [(conv.id, name) for name in names]
        else:
            targets = [(store.create_conversation().id, "main")]
        plan = {"mode": mode, "targets": targets, "exchanges": size["exchanges"], "threads": size["threads"]}
        outs, elapsed = run_processes(_process, db_url, plan, size["processes"], size["threads"])
        errors = [out["error"] for out in outs if out.get("error")]
        assert errors == []
        done = [d for out in outs for d in out["done"]]
        forks = [f for out in outs for f in out["forks"]]
        conflicts = sum(out["conflicts"] for out in outs)
        assert len(done) == writers * size["exchanges"]
        verify(store, done, forks, mode)
        report = store.check()
        assert report.ok, report.lines()
    print(
        f"\nstress {mode} on {db_url.split(':', maxsplit=1)[0]}: {writers} writers x "
        f"{size['exchanges']} exchanges in {elapsed:.1f} s, {conflicts} conflicts retried"
    )
    return {"conflicts": conflicts, "exchanges": len(done)}


def verify(
    store: convstore.Store, done: list[tuple], forks: list[tuple], mode: str, maybe: Sequence[tuple] = ()
) -> int:
    """Every recorded exchange is stored exactly once, whole and in order; nothing else is stored.

    ``maybe`` names appends whose outcome their writer never learnt (cancelled ones), as (conversation,
    branch, tag): each is stored whole, once, or not at all. Returns how many of them are stored.
    """
    recorded = {exchange_id: (cid, branch, tag) for cid, branch, tag, exchange_id in done}
    assert len(recorded) == len(done)  # no exchange id returned twice
    assert Counter(tag for _, _, tag, _ in done) == Counter({tag: 1 for _, _, tag, _ in done})
    uncertain = {tag for _, _, tag in maybe}
    assert len(uncertain) == len(maybe)
    assert not uncertain & {tag for _, _, tag, _ in done}
    stored_uncertain: Counter[str] = Counter()
    for conversation_id in {cid for cid, _, _, _ in done} | {cid for cid, _, _ in maybe}:
        tree = store.conversation(conversation_id).tree()
        by_exchange: dict[str, list] = {}
        for node in tree.nodes:
            by_exchange.setdefault(node.exchange_id, []).append(node)
        for exchange_id, members in by_exchange.items():
            members.sort(key=lambda node: node.depth)
            tag = members[0].data["content"][0]["text"]
            if tag == "base":
                continue
            if exchange_id in recorded:
                tag = recorded[exchange_id][2]
            else:
                assert tag in uncertain, f"an exchange nobody saw returned: {exchange_id}"
                stored_uncertain[tag] += 1
            assert [node.data for node in members] == steps_of(tag)
        mine = [d for d in done if d[0] == conversation_id]
        assert {e for _, _, _, e in mine} <= set(by_exchange)
        # Each branch's history is whole exchanges, and every writer's own exchanges stay in its order.
        for branch in tree.branches:
            history = store.conversation(conversation_id, branch.name).history()
            tags = [step["content"][0]["text"] for step in history[::3]]
            assert len(history) == 3 * len(tags)
            for start, tag in zip(range(0, len(history), 3), tags, strict=True):
                assert history[start : start + 3] == steps_of(tag)
            if mode != "fork_while_appending" or branch.name == "main":
                on_branch = {tag for cid, b, tag, _ in mine if b == branch.name}
                might = {tag for cid, b, tag in maybe if cid == conversation_id and b == branch.name}
                assert on_branch <= set(tags) - {"base"} <= on_branch | might
                for writer in {t.split("-")[0] for t in on_branch | might}:
                    order = [int(t.split("-")[1]) for t in tags if t.startswith(f"{writer}-")]
                    assert order == sorted(order)
    assert all(count == 1 for count in stored_uncertain.values()), "an uncertain append stored twice"
    if forks:
        conv_id = done[0][0]
        main_ids = [node.id for node in store.conversation(conv_id).nodes()]
        for name, seen_head in forks:
            fork_nodes = store.conversation(conv_id, name).nodes()
            # A fork holds main as it was at the fork (a prefix of main's history), then its one exchange.
            prefix = [node.id for node in fork_nodes[:-3]]
            assert prefix == main_ids[: len(prefix)]
            assert (prefix[-1] if prefix else None) == seen_head
    return len(stored_uncertain)


@pytest.mark.parametrize("mode", MODES)
def test_processes_and_threads_writing_at_once(db_url, mode):
    run_stress(db_url, mode, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_processes_and_threads_writing_at_once_at_length(db_url, mode):
    run_stress(db_url, mode, slow=True)


# SQLite's lock: a bounded wait, then StoreBusyError, never sqlite3's "database is locked".


def _hold_write_lock(path: str) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    return holder


@pytest.fixture
def sqlite_path(tmp_path):
    return str(tmp_path / "busy.db")


def test_a_held_write_lock_gives_store_busy_error_after_the_timeout(make_store, sqlite_path, flavour):
    url = f"sqlite:///{sqlite_path}"
    with convstore.Store(url) as setup:
        conv_id = setup.create_conversation().id
    # make_store is bound to the test's db_url; this test needs its own file, so build stores directly.
    del make_store
    store = convstore.Store(url, busy_timeout=0.2)
    try:
        conv = store.conversation(conv_id)
        holder = _hold_write_lock(sqlite_path)
        try:
            for attempt in (
                lambda: conv.append([user("x")]),
                store.create_conversation,
                lambda: conv.fork(branch="other"),
                lambda: store.delete_conversation(conv_id),
            ):
                started = time.perf_counter()
                with pytest.raises(StoreBusyError) as raised:
                    attempt()
                waited = time.perf_counter() - started
                assert 0.15 <= waited < 3, waited
                assert "locked" in str(raised.value)
                assert not isinstance(raised.value, sqlite3.Error)
                assert raised.value.__cause__ is None
            # Reads go on beside the writer (WAL).
            assert conv.history() == []
            assert store.check().ok
        finally:
            holder.rollback()
            holder.close()
        conv.append([user("after the lock")])
        assert [s["content"][0]["text"] for s in conv.history()] == ["after the lock"]
    finally:
        store.close()


def test_the_async_store_gives_store_busy_error_too(sqlite_path, portal):
    url = f"sqlite:///{sqlite_path}"
    with convstore.Store(url) as setup:
        conv_id = setup.create_conversation().id

    async def attempt() -> BaseException | None:
        async with convstore.AsyncStore(url, busy_timeout=0.2) as store:
            conv = await store.conversation(conv_id)
            try:
                await conv.append([user("x")])
            except BaseException as exc:
                return exc
        return None

    holder = _hold_write_lock(sqlite_path)
    try:
        raised = portal.call(attempt())
    finally:
        holder.rollback()
        holder.close()
    assert isinstance(raised, StoreBusyError)


def test_opening_an_empty_database_under_a_held_lock_gives_store_busy_error(sqlite_path):
    holder = _hold_write_lock(sqlite_path)
    try:
        started = time.perf_counter()
        with pytest.raises(StoreBusyError):
            convstore.Store(f"sqlite:///{sqlite_path}", busy_timeout=0.2)
        assert time.perf_counter() - started < 3
    finally:
        holder.rollback()
        holder.close()
    with convstore.Store(f"sqlite:///{sqlite_path}") as store:
        assert store.check().ok
