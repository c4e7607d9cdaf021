"""Many writers on one branch: compare-and-swap loses nothing and never interleaves exchanges."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

import pytest

import convstore
from convstore import ConflictError

WRITERS = 4
EXCHANGES_EACH = 15


def append_with_retry(conv: convstore.Conversation, steps: list[dict]) -> int:
    """Append, refreshing and retrying on conflict; returns how many conflicts it met."""
    conflicts = 0
    while True:
        try:
            conv.append(steps)
        except ConflictError:
            conflicts += 1
            conv.refresh()
        else:
            return conflicts


def exchange(writer: int, index: int) -> list[dict]:
    tag = f"w{writer}-{index}"
    return [
        {"type": "user_input", "content": [{"type": "text", "text": tag}]},
        {"type": "thought", "signature": f"sig-{tag}"},
        {"type": "model_output", "content": [{"type": "text", "text": f"re {tag}"}]},
    ]


def check_whole(history: list[dict], writers: int, each: int) -> None:
    assert len(history) == writers * each * 3
    tags = []
    for start in range(0, len(history), 3):
        tag = history[start]["content"][0]["text"]
        # The three steps of an exchange stay together, in order.
        assert history[start : start + 3] == exchange(int(tag[1 : tag.index("-")]), int(tag.split("-")[1]))
        tags.append(tag)
    assert Counter(tags) == Counter(f"w{w}-{i}" for w in range(writers) for i in range(each))
    # Each writer's exchanges keep their order.
    for w in range(writers):
        mine = [int(t.split("-")[1]) for t in tags if t.startswith(f"w{w}-")]
        assert mine == sorted(mine)


def test_threads_appending_to_one_branch_lose_nothing(store):
    conv = store.create_conversation()
    conflicts: list[int] = []
    errors: list[BaseException] = []

    def work(writer: int) -> None:
        mine = store.conversation(conv.id)
        try:
            conflicts.append(sum(append_with_retry(mine, exchange(writer, i)) for i in range(EXCHANGES_EACH)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    check_whole(conv.history(), WRITERS, EXCHANGES_EACH)


def _process_writer(
    url: str, conversation_id: str, writer: int, each: int, queue: multiprocessing.Queue
) -> None:
    try:
        with convstore.Store(url) as store:
            conv = store.conversation(conversation_id)
            queue.put(("ok", sum(append_with_retry(conv, exchange(writer, i)) for i in range(each))))
    except BaseException as exc:
        queue.put(("error", repr(exc)))


def test_processes_appending_to_one_branch_lose_nothing(db_url):
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        ctx = multiprocessing.get_context("spawn")
        queue: multiprocessing.Queue = ctx.Queue()
        procs = [
            ctx.Process(target=_process_writer, args=(db_url, conv.id, w, EXCHANGES_EACH, queue))
            for w in range(WRITERS)
        ]
        for proc in procs:
            proc.start()
        results = [queue.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        assert [kind for kind, _ in results] == ["ok"] * WRITERS, results
        check_whole(conv.history(), WRITERS, EXCHANGES_EACH)


def test_first_open_of_an_empty_database_by_many_processes_builds_it_once(db_url):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        revisions = pool.map(_open_and_report, [db_url] * 4)
    assert len(set(revisions)) == 1
    assert revisions[0] is not None


def _open_and_report(url: str) -> str | None:
    with convstore.Store(url) as store:
        return store.schema_revision()


@pytest.mark.parametrize("writers", [2])
def test_appends_to_different_branches_do_not_conflict(store, writers):
    conv = store.create_conversation()
    base = conv.append(exchange(0, 0))
    branches = [conv.fork(at=base[-1].id, branch=f"b{w}") for w in range(writers)]
    for i in range(5):
        for w, view in enumerate(branches):
            view.append(exchange(w + 1, i))  # no refresh needed: nobody else writes this branch
    for w, view in enumerate(branches):
        assert view.history() == exchange(0, 0) + [s for i in range(5) for s in exchange(w + 1, i)]
