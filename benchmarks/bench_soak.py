"""Load and soak: convstore's read and write latencies on a large store.

    python benchmarks/bench_soak.py [--backend postgres|sqlite] [--conversations 10000] [--steps 1000000]
                                    [--quick] [--samples 200] [--out DIR]

The store is built by convstore's migrations (``Store(url)``), then filled in bulk, outside convstore's API:
PostgreSQL ``COPY`` (SQLite ``executemany``) of rows computed exactly as ``append`` computes them (parent
pointers, depths, running token totals from the store's own counter, one exchange id per exchange), with
the steps drawn from the benchmarks' seeded generator (~1 KB of JSON a step). One conversation in ten gets
a second branch forked halfway. ``store.check()`` must then pass: the bulk rows obey every invariant. Then
ANALYZE, and the timings, each through the public API on one ``Store``:

- listing: the first page of ``conversations(limit=50)``;
- paging: each next page of 50, following cursors through the whole listing (or ``--samples`` pages);
- open + history: ``store.conversation(id)`` and ``history()`` of random conversations;
- window: ``history(budget=TokenBudget(max_input_tokens=20_000))`` of random conversations;
- append: one 2-step exchange to random conversations;
- check: one ``store.check()`` of the whole store.

Reports median and p95 of each, the build time and the database size. ``--quick``: 200 conversations,
20,000 steps. PostgreSQL: ``CONVSTORE_TEST_POSTGRES_URL`` or ``--postgres-url``; a new schema, dropped at
the end.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from _common import (
    DEFAULT_POSTGRES_URL,
    POSTGRES_ENV,
    conversation_exchanges,
    fmt_ns,
    machine_info,
    median_ns,
    now_ns,
    percentile_ns,
    postgres_schema,
)

import convstore
from convstore import TokenBudget, codec
from convstore.store._schema import branches, conversations, nodes


def _uuid7ish(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128)))


def step_pool(counter: convstore.TokenCounter) -> list[list[tuple[str, str, int]]]:
    """Exchanges as ``(type, JSON text, tokens)``: generated once, reused round-robin."""
    return [
        [(step["type"], codec.dumps(step), counter.count_step(step)) for step in exchange]
        for exchange in conversation_exchanges(4000, seed=7)
    ]


def conversation_rows(
    rng: random.Random, pool: list[list[tuple[str, str, int]]], steps: int, created: datetime, fork: bool
) -> tuple[dict[str, Any], list[tuple], list[dict[str, Any]]]:
    """One conversation's row, its node tuples (in column order) and its branch rows."""
    cid = _uuid7ish(rng)
    conv = {"id": cid, "created_at": created, "model": "gemini-3-flash-preview"}
    out: list[tuple] = []
    parent, depth, total = None, -1, 0
    start = rng.randrange(len(pool))
    e = 0
    while len(out) < steps:
        exchange = pool[(start + e) % len(pool)]
        e += 1
        exchange_id = _uuid7ish(rng)
        for step_type, payload, count in exchange[: steps - len(out)]:
            node_id = _uuid7ish(rng)
            depth += 1
            total += count
            segment = out[0][1] if out else node_id  # one chain from the root: the root's segment
            row = (cid, node_id, parent, depth, exchange_id, step_type, count, total, created, payload)
            out.append((*row, segment))
            parent = node_id
    heads = [
        {
            "conversation_id": cid,
            "name": "main",
            "head_id": parent,
            "created_at": created,
            "updated_at": created,
        }
    ]
    if fork and len(out) > 2:
        # Halfway, at the end of an exchange (the next node starts another one).
        at = next(i for i in range(len(out) // 2, len(out) - 1) if out[i][4] != out[i + 1][4])
        heads.append({**heads[0], "name": "side", "head_id": out[at][1]})
    return conv, out, heads


NODE_COLUMNS = [
    "conversation_id", "id", "parent_id", "depth", "exchange_id", "type",
    "token_count", "total_tokens", "created_at", "payload", "segment_id",
]  # fmt: skip


def bulk_load(store: convstore.Store, n_conversations: int, n_steps: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    pool = step_pool(store.counter)
    per = max(2, n_steps // n_conversations)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    engine = store.engine
    postgres = engine.dialect.name == "postgresql"
    started = time.perf_counter()
    written = 0
    batch_convs: list[dict[str, Any]] = []
    batch_nodes: list[tuple] = []
    batch_branches: list[dict[str, Any]] = []

    def flush() -> None:
        with engine.begin() as conn:
            conn.execute(conversations.insert(), batch_convs)
            if postgres:
                raw = conn.connection.driver_connection
                with (
                    raw.cursor() as cursor,
                    cursor.copy(f"COPY {nodes.name} ({', '.join(NODE_COLUMNS)}) FROM STDIN") as copy,
                ):
                    for row in batch_nodes:
                        copy.write_row(row)
            else:
                conn.execute(
                    nodes.insert(), [dict(zip(NODE_COLUMNS, row, strict=True)) for row in batch_nodes]
                )
            conn.execute(branches.insert(), batch_branches)
        batch_convs.clear()
        batch_nodes.clear()
        batch_branches.clear()

    for i in range(n_conversations):
        conv, rows, heads = conversation_rows(rng, pool, per, base + timedelta(seconds=i), fork=i % 10 == 0)
        batch_convs.append(conv)
        batch_nodes.extend(rows)
        batch_branches.extend(heads)
        written += len(rows)
        if len(batch_nodes) >= 50_000:
            flush()
            print(
                f"  {written:,} steps, {i + 1:,} conversations, {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
            )
    if batch_convs:
        flush()
    load_s = time.perf_counter() - started
    if postgres:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    return {"steps": written, "conversations": n_conversations, "load_s": load_s,
            "analyze_s": time.perf_counter() - started - load_s}  # fmt: skip


def sample(fn, count: int) -> list[int]:
    out = []
    for _ in range(count):
        started = now_ns()
        fn()
        out.append(now_ns() - started)
    return out


def measure(store: convstore.Store, samples: int, seed: int) -> dict[str, list[int]]:
    rng = random.Random(seed + 1)
    ids = [info.id for info in store.iter_conversations(page_size=1000)]
    results: dict[str, list[int]] = {}
    results["listing (first page of 50)"] = sample(lambda: store.conversations(limit=50), samples)
    pages: list[int] = []
    cursor = None
    while len(pages) < samples:
        started = now_ns()
        page = store.conversations(limit=50, cursor=cursor)
        pages.append(now_ns() - started)
        cursor = page.next_cursor
        if cursor is None:
            cursor = None  # back to the start: the listing is shorter than the samples
    results["paging (next page of 50)"] = pages

    def open_history() -> None:
        store.conversation(rng.choice(ids)).history()

    results["open + history"] = sample(open_history, samples)
    budget = TokenBudget(max_input_tokens=20_000)

    def window() -> None:
        store.conversation(rng.choice(ids)).history(budget=budget)

    results["open + window (20,000 tokens)"] = sample(window, samples)

    def append() -> None:
        conv = store.conversation(rng.choice(ids))
        conv.append(
            [
                {"type": "user_input", "content": [{"type": "text", "text": "one more"}]},
                {"type": "model_output", "content": [{"type": "text", "text": "sure"}]},
            ]
        )

    results["open + append (2 steps)"] = sample(append, samples)
    return results


def database_size(store: convstore.Store) -> int | None:
    engine = store.engine
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                ).scalar_one()
            )
    path = engine.url.database
    return Path(path).stat().st_size if path else None


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    with convstore.Store(url) as store:
        print(f"loading {args.steps:,} steps over {args.conversations:,} conversations", file=sys.stderr)
        built = bulk_load(store, args.conversations, args.steps, args.seed)
        started = time.perf_counter()
        report = store.check()
        built["check_s"] = time.perf_counter() - started
        if not report.ok:
            raise SystemExit("check() failed on the bulk-built store:\n" + "\n".join(report.lines()[:20]))
        built["nodes_checked"] = report.nodes
        built["bytes"] = database_size(store)
        print(f"built: {built}", file=sys.stderr)
        print("measuring", file=sys.stderr)
        timings = measure(store, args.samples, args.seed)
    return {"build": built, "timings": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20260520)
    parser.add_argument("--quick", action="store_true", help="200 conversations, 20,000 steps, 50 samples")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--out", default=None, help="folder for soak.json")
    args = parser.parse_args()
    if args.quick:
        args.conversations, args.steps, args.samples = 200, 20_000, 50
    started = time.perf_counter()
    if args.backend == "postgres":
        import os  # noqa: PLC0415

        base = args.postgres_url or os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES_URL)
        with postgres_schema(base, prefix="soak") as schema:
            result = run(schema.url, args)
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = run(f"sqlite:///{Path(folder) / 'soak.db'}", args)
    result["backend"] = args.backend
    result["wall_s"] = time.perf_counter() - started
    result["machine"] = machine_info()
    built = result["build"]
    size = f", {built['bytes'] / 2**30:.2f} GiB" if built.get("bytes") else ""
    print(
        f"\n{args.backend}: {built['steps']:,} steps in {built['conversations']:,} conversations "
        f"(one in ten with a fork){size}; bulk load {built['load_s']:.0f} s, "
        f"ANALYZE {built['analyze_s']:.0f} s, "
        f"check() of {built['nodes_checked']:,} nodes {built['check_s']:.1f} s, all ok"
    )
    print(f"{'operation':34} {'median':>10} {'p95':>10}  samples")
    for name, values in result["timings"].items():
        print(
            f"{name:34} {fmt_ns(median_ns(values)):>10} "
            f"{fmt_ns(percentile_ns(values, 95)):>10}  {len(values)}"
        )
    print(f"wall time {result['wall_s']:.0f} s")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        summary = {
            **{k: v for k, v in result.items() if k != "timings"},
            "timings": {
                name: {"median_ns": median_ns(v), "p95_ns": percentile_ns(v, 95), "samples": len(v)}
                for name, v in result["timings"].items()
            },
        }
        (out / f"soak-{args.backend}.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
