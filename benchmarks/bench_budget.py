"""Token-budget windows: cost against conversation length, against the floor, and prefix stability.

    python benchmarks/bench_budget.py [--backend sqlite|postgres|all] [--quick] [--out DIR]

1. Window building with a 32k-token budget on branches of 1k, 10k and 100k steps: ``conv.history(budget=...)``
   against the floor, the same bounded recursive CTE through the raw driver plus the same choice of the
   first exchange to keep. The cost should follow the window, not the conversation: 100k/1k <= 1.5.
2. Over 1,000 simulated turns under the budget, how many consecutive requests keep an identical first step
   (the prefix the API's implicit cache can reuse), for each policy.

Setup writes the long branches in bulk (one transaction, convstore's own row builder) so the 100k-step
branch takes seconds; the measured operations are the library's public calls.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DEFAULT_POSTGRES_URL,
    POSTGRES_ENV,
    conversation_exchanges,
    machine_info,
)

import convstore
from convstore import codec
from convstore.budget import HeuristicCounter
from convstore.store import _ops
from convstore.store import _statements as st

BUDGET = 32_000


def bulk_branch(store: convstore.Store, steps: int) -> convstore.Conversation:
    """A conversation whose main branch has ``steps`` steps, written in one transaction."""
    conv = store.create_conversation(model="gemini-3-flash-preview")
    counter = HeuristicCounter()
    head = _ops.EMPTY_HEAD
    rows: list[dict[str, Any]] = []
    now = convstore.store._prepare.utcnow()  # type: ignore[attr-defined]
    for exchange in conversation_exchanges(steps):
        prepared = [(s["type"], codec.dumps(s), counter.count_step(s)) for s in exchange]
        built = _ops.build_node_rows(conv.id, head, prepared, now, continues=True)
        rows.extend(built)
        last = built[-1]
        head = _ops.Head(
            last["id"], last["depth"], last["total_tokens"], last["exchange_id"], last["segment_id"]
        )
    with store.engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(st.INSERT_NODES, rows[i : i + 5000])
        conn.execute(
            st.MOVE_HEAD,
            {
                "in_conversation": conv.id,
                "branch": "main",
                "expected_head": None,
                "new_head": head.node_id,
                "now": now,
            },
        )
    return store.conversation(conv.id)


FLOOR_SQL = """
WITH RECURSIVE w(id, parent_id, depth, exchange_id, type, token_count, total_tokens, payload) AS (
  SELECT n.id, n.parent_id, n.depth, n.exchange_id, n.type, n.token_count, n.total_tokens, n.payload
  FROM convstore_nodes n
  JOIN convstore_branches b ON b.conversation_id = n.conversation_id AND b.head_id = n.id
  WHERE b.conversation_id = {p} AND b.name = 'main'
  UNION ALL
  SELECT p.id, p.parent_id, p.depth, p.exchange_id, p.type, p.token_count, p.total_tokens, p.payload
  FROM convstore_nodes p JOIN w ON p.conversation_id = {p} AND p.id = w.parent_id
  WHERE w.total_tokens - w.token_count >= {p}
)
SELECT id, parent_id, exchange_id, type, token_count, total_tokens, payload FROM w ORDER BY depth
"""


def floor_window(execute: Any, conversation_id: str, head_total: int) -> list[Any]:
    rows = execute(conversation_id, conversation_id, head_total - BUDGET)
    head = rows[-1][5]
    for i, row in enumerate(rows):  # the first user_input that starts an exchange and fits
        starts = row[3] == "user_input" and (row[1] is None if i == 0 else rows[i - 1][2] != row[2])
        if starts and head - (row[5] - row[4]) <= BUDGET:
            return json.loads("[" + ",".join(r[6] for r in rows[i:]) + "]")
    return []


def timed(fn: Any, repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1e6


def window_costs(url: str, backend: str, sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    results = []
    with convstore.Store(url) as store:
        for size in sizes:
            conv = bulk_branch(store, size)
            budget = convstore.TokenBudget(max_input_tokens=BUDGET, policy="sliding")
            ours = conv.history(budget=budget)
            head_total = conv.nodes()[-1].total_tokens if size <= 10_000 else None
            if backend == "sqlite":
                raw = sqlite3.connect(sa.make_url(url).database)
                sql = FLOOR_SQL.format(p="?")

                def execute(a: str, b: str, c: int, raw: Any = raw, sql: str = sql) -> list[Any]:
                    return raw.execute(sql, (a.replace("-", ""), b.replace("-", ""), c)).fetchall()

            else:
                import psycopg  # noqa: PLC0415

                base = sa.make_url(url)
                schema = dict(base.query)["options"].split("=", 1)[1]
                raw = psycopg.connect(
                    base.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
                )
                raw.execute(f"SET search_path TO {schema}")
                sql = FLOOR_SQL.format(p="%s")

                def execute(a: str, b: str, c: int, raw: Any = raw, sql: str = sql) -> list[Any]:
                    return [
                        tuple(str(v) if isinstance(v, uuid.UUID) else v for v in r)
                        for r in raw.execute(sql, (a, b, c)).fetchall()
                    ]

            if head_total is None:
                head_total = conv.path(conv.head_id)[-1].total_tokens if conv.head_id else 0
            floor = floor_window(execute, conv.id, head_total)
            assert floor == ours, "the floor must build the same window"
            t_ours = timed(lambda conv=conv, budget=budget: conv.history(budget=budget), repeat)
            t_floor = timed(
                lambda execute=execute, conv=conv, head_total=head_total: floor_window(
                    execute, conv.id, head_total
                ),
                repeat,
            )
            t_request = timed(lambda conv=conv, budget=budget: conv.request("next?", budget=budget), repeat)
            raw.close()
            results.append(
                {
                    "steps": size,
                    "window_steps": len(ours),
                    "convstore_ms": t_ours,
                    "floor_ms": t_floor,
                    "request_ms": t_request,
                    "ratio": t_ours / t_floor,
                }
            )
            print(
                f"  {backend} {size:>7,} steps: window {len(ours)} steps, convstore {t_ours:.2f} ms, "
                f"floor {t_floor:.2f} ms ({t_ours / t_floor:.2f}x), request() {t_request:.2f} ms",
                flush=True,
            )
    return results


def prefix_stability(url: str, turns: int) -> dict[str, dict[str, Any]]:
    out = {}
    exchanges = conversation_exchanges(turns * 3)
    user_turns = [e for e in exchanges if e[0]["type"] == "user_input"][:turns]
    with convstore.Store(url) as store:
        for policy in ("stable", "sliding"):
            conv = store.create_conversation(model="m")
            budget = convstore.TokenBudget(max_input_tokens=BUDGET, policy=policy)
            firsts: list[str] = []
            sizes = []
            for exchange in user_turns:
                conv.append(exchange)
                window = conv.history(budget=budget)
                firsts.append(json.dumps(window[0], sort_keys=True))
                sizes.append(len(window))
            same = sum(a == b for a, b in itertools.pairwise(firsts))
            out[policy] = {
                "turns": len(firsts),
                "same_prefix_as_previous": same,
                "distinct_first_steps": len(set(firsts)),
                "mean_window_steps": statistics.mean(sizes),
            }
            print(
                f"  {policy}: {same}/{len(firsts) - 1} requests keep the previous first step; "
                f"{len(set(firsts))} distinct; mean window {statistics.mean(sizes):.0f} steps",
                flush=True,
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a CI smoke run")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    sizes = [1_000, 5_000] if args.quick else [1_000, 10_000, 100_000]
    turns = 120 if args.quick else 1_000
    repeat = 3 if args.quick else 9
    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    report: dict[str, Any] = {"machine": machine_info(), "budget_tokens": BUDGET, "results": {}}
    import os  # noqa: PLC0415

    for backend in backends:
        print(f"{backend}: load average {[round(x, 2) for x in os.getloadavg()]}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "sqlite":
                url = f"sqlite:///{tmp}/budget.db"
                cleanup = None
            else:
                base = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES_URL)
                schema = f"bench_budget_{uuid.uuid4().hex[:8]}"
                admin = sa.create_engine(base)
                with admin.begin() as conn:
                    conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
                url = (
                    sa.make_url(base)
                    .update_query_dict({"options": f"-csearch_path={schema}"})
                    .render_as_string(hide_password=False)
                )
                cleanup = (admin, schema)
            try:
                windows = window_costs(url, backend, sizes, repeat)
                stability = prefix_stability(url, turns)
            finally:
                if cleanup is not None:
                    with cleanup[0].begin() as conn:
                        conn.exec_driver_sql(f"DROP SCHEMA {cleanup[1]} CASCADE")
                    cleanup[0].dispose()
        scaling = windows[-1]["convstore_ms"] / windows[0]["convstore_ms"]
        print(
            f"  {backend}: {sizes[-1]:,}/{sizes[0]:,} window cost ratio {scaling:.2f} (target <= 1.5)",
            flush=True,
        )
        report["results"][backend] = {"windows": windows, "scaling": scaling, "prefix_stability": stability}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "budget.json").write_text(json.dumps(report, indent=2, default=str))
    lines = ["# Token-budget windows (32k budget)", "", f"`{' '.join(sys.argv)}`", ""]
    for backend, data in report["results"].items():
        lines += [
            f"## {backend}",
            "",
            "| steps | window steps | history(budget) | floor | ratio | request(budget) |",
            "|--:|--:|--:|--:|--:|--:|",
        ]
        lines += [
            f"| {w['steps']:,} | {w['window_steps']} | {w['convstore_ms']:.2f} ms | {w['floor_ms']:.2f} ms | "
            f"{w['ratio']:.2f}x | {w['request_ms']:.2f} ms |"
            for w in data["windows"]
        ]
        lines += [
            "",
            f"largest/smallest window cost: {data['scaling']:.2f}x (target <= 1.5)",
            "",
            "| policy | turns | same first step as previous request | distinct first steps | mean window |",
            "|:--|--:|--:|--:|--:|",
        ]
        lines += [
            f"| {p} | {s['turns']} | {s['same_prefix_as_previous']} | {s['distinct_first_steps']} | "
            f"{s['mean_window_steps']:.0f} steps |"
            for p, s in data["prefix_stability"].items()
        ]
        lines.append("")
    (out / "budget.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
