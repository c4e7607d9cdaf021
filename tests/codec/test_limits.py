"""Big inputs on both backends: very large steps, deep trees, wide trees.

The default run uses small variants (a few seconds); ``--run-slow`` runs the sizes the README quotes: a
20 MB inline image, 100,000 steps on one branch, 10,000 branches of one conversation. Each prints its times.
"""

from __future__ import annotations

import base64
import os
import time

import pytest
from conftest import model, user

import convstore
from convstore import TokenBudget


def timed(label: str, started: float) -> float:
    elapsed = time.perf_counter() - started
    print(f"\n{label}: {elapsed:.2f} s")
    return time.perf_counter()


def image_step(megabytes: float) -> dict:
    raw = os.urandom(int(megabytes * 1024 * 1024 * 3 / 4))
    data = base64.b64encode(raw).decode("ascii")
    return {
        "type": "user_input",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image", "data": data, "mime_type": "image/png"},
        ],
    }


@pytest.mark.parametrize(
    "megabytes", [pytest.param(2, id="2MB"), pytest.param(20, id="20MB", marks=pytest.mark.slow)]
)
def test_a_very_large_step_round_trips(db_url, megabytes):
    big = image_step(megabytes)
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        started = time.perf_counter()
        conv.append([big, model("a cat")])
        started = timed(f"append of a {megabytes} MB step on {db_url.split(':')[0]}", started)
        reopened = store.conversation(conv.id)
        assert reopened.history() == [big, model("a cat")]
        started = timed("history", started)
        window = reopened.history(budget=TokenBudget(max_input_tokens=100_000))
        assert window[-1] == model("a cat")
        assert store.check().ok


def deep_sizes(slow: bool) -> int:
    return int(os.environ.get("CONVSTORE_DEEP_STEPS", "100000" if slow else "5000"))


def analyze(store: convstore.Store) -> None:
    """PostgreSQL: statistics after a bulk load. Before its first ANALYZE (autovacuum's comes within a
    minute or so), the planner hash-joins the recursive history query against every node of the
    conversation once per level: 5,000 steps took 2-3 s instead of 0.06 s. See the README."""
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")


def build_deep(store: convstore.Store, steps: int) -> convstore.Conversation:
    """``steps`` steps on one branch, written as exchanges of 1,000 steps (one transaction each)."""
    conv = store.create_conversation()
    per = 1000
    for e in range(steps // per):
        conv.append([user(f"question {e}")] + [model(f"part {e}.{i}") for i in range(per - 1)])
    return conv


@pytest.mark.parametrize(
    "slow", [pytest.param(False, id="default"), pytest.param(True, id="full", marks=pytest.mark.slow)]
)
def test_a_deep_tree_keeps_history_and_window_working(db_url, slow):
    steps = deep_sizes(slow)
    with convstore.Store(db_url) as store:
        started = time.perf_counter()
        conv = build_deep(store, steps)
        analyze(store)
        started = timed(f"build {steps} steps on {db_url.split(':')[0]}", started)
        reopened = store.conversation(conv.id)
        history = reopened.history()
        started = timed("history", started)
        assert len(history) == steps
        assert history[0] == user("question 0")
        assert history[-1] == model(f"part {steps // 1000 - 1}.998")
        window = reopened.history(budget=TokenBudget(max_input_tokens=15_000))
        started = timed("window of 15,000 tokens", started)
        assert 0 < len(window) < steps
        assert len(window) % 1000 == 0  # whole exchanges
        assert window[0]["type"] == "user_input"
        assert window[-1] == history[-1]
        middle = reopened.nodes()[steps // 2]
        assert len(reopened.path(middle.id)) == steps // 2 + 1
        started = timed("nodes and path", started)
        fork = reopened.fork(at=middle.id, branch="halfway")
        fork.append([user("from the middle")])
        assert len(fork.history()) == steps // 2 + 2
        report = store.check()
        timed("fork and check", started)
        assert report.ok


def wide_sizes(slow: bool) -> int:
    return int(os.environ.get("CONVSTORE_WIDE_BRANCHES", "10000" if slow else "200"))


@pytest.mark.parametrize(
    "slow", [pytest.param(False, id="default"), pytest.param(True, id="full", marks=pytest.mark.slow)]
)
def test_a_wide_tree_lists_its_branches_and_draws(db_url, slow):
    count = wide_sizes(slow)
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        base = conv.append([user("root"), model("ok")])
        started = time.perf_counter()
        for i in range(count):
            conv.fork(at=base[i % 2].id, branch=f"b{i:05d}")
        started = timed(f"{count} forks on {db_url.split(':')[0]}", started)
        branches = conv.branches()
        assert len(branches) == count + 1
        assert {b.name for b in branches} == {"main"} | {f"b{i:05d}" for i in range(count)}
        started = timed("branches()", started)
        tree = conv.tree()
        assert len(tree.branches) == count + 1
        assert len(tree.nodes) == 2
        drawn = tree.render()
        timed("tree() and render()", started)
        assert "b00000" in drawn
        assert store.check().ok
