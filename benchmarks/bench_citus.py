"""convstore on a Citus cluster against convstore on one PostgreSQL server, each beside its floor.

    python benchmarks/bench_citus.py [--quick] [--out DIR] [--postgres-url URL] [--citus-url URL]

The same single-conversation operations as ``bench_store.py`` (its contenders and workloads, reused): append
one exchange at a time up to N steps, a cold ``history()`` / ``history_json()`` of a 1,000-step branch and of
the whole branch, forks in the middle; and a cold budgeted read (a 32k-token window of the whole branch). On
each backend convstore runs beside the floor (psycopg and hand-written SQL on the same tables), operations
interleaved, so each backend has its own convstore/floor ratio; the Citus/PostgreSQL ratio compares the two
backends' medians, run one after the other on the same machine.

Citus: ``--citus-url`` or ``CONVSTORE_TEST_CITUS_URL`` (a coordinator; ``../shared/citus/up.sh`` starts a
3-node cluster on this machine and prints it). The tables are distributed by ``Store(url)`` as in service,
with Citus's default shard count. The cluster's nodes share this machine's cores with the benchmark, so the
figures show what routing through the coordinator costs, not what more machines would add.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import _common as common
import bench_store as bs
from _common import TableData, fmt_ns, fmt_ratio, median_ns, now_ns

import convstore

CITUS_ENV = "CONVSTORE_TEST_CITUS_URL"
DEFAULT_CITUS_URL = "postgresql+psycopg://postgres@127.0.0.1:5440/test"
WINDOW_TOKENS = 32_000
WINDOW_RUNS = (31, 5)  # full, quick


def run_window(backend: bs.Backend, runs: int) -> dict[str, Any]:
    """A cold budgeted read of the whole branch (convstore only: the floor has no token budget)."""
    contender = backend.contenders[0]
    assert isinstance(contender, bs.ConvstoreContender)
    budget = convstore.TokenBudget(max_input_tokens=WINDOW_TOKENS)
    steps = len(contender.conv.history(budget=budget))
    samples = []
    gc.collect()
    for _ in range(runs):
        common.cold(contender.conv)
        start = now_ns()
        contender.conv.history(budget=budget)
        samples.append(now_ns() - start)
    return {"tokens": WINDOW_TOKENS, "steps": steps, "median_ns": median_ns(samples), "samples_ns": samples}


def _row(name: str, pg: float, citus: float, pg_floor: float | None, citus_floor: float | None) -> list[str]:
    def ratio(ours: float, floor: float | None) -> str:
        return fmt_ratio(ours / floor) if floor else "-"

    return [
        name,
        fmt_ns(pg),
        ratio(pg, pg_floor),
        fmt_ns(citus),
        ratio(citus, citus_floor),
        fmt_ratio(citus / pg),
    ]


def table_for(results: dict[str, dict[str, Any]]) -> TableData:
    pg, citus = results["postgres"], results["citus"]
    rows = [
        _row(
            "append (median)",
            pg["append"]["convstore"]["median_ns"],
            citus["append"]["convstore"]["median_ns"],
            pg["append"]["floor"]["median_ns"],
            citus["append"]["floor"]["median_ns"],
        )
    ]
    for ours, theirs in zip(pg["history"], citus["history"], strict=True):
        rows.append(
            _row(
                f"cold {ours['method']}() at {ours['steps']:,} steps",
                ours["convstore_median_ns"],
                theirs["convstore_median_ns"],
                ours["floor_median_ns"],
                theirs["floor_median_ns"],
            )
        )
    window_steps = pg["window"]["steps"]
    rows.append(
        _row(
            f"cold {WINDOW_TOKENS // 1000}k-token window ({window_steps:,} steps)",
            pg["window"]["median_ns"],
            citus["window"]["median_ns"],
            None,
            None,
        )
    )
    rows.append(
        _row(
            "fork (median)",
            pg["fork"]["convstore"]["median_ns"],
            citus["fork"]["convstore"]["median_ns"],
            pg["fork"]["floor"]["median_ns"],
            citus["fork"]["floor"]["median_ns"],
        )
    )
    return TableData(
        "Single-conversation operations: one PostgreSQL server and a 3-node Citus cluster",
        ["operation", "PostgreSQL", "vs floor", "Citus", "vs floor", "Citus / PostgreSQL"],
        rows,
        "Each backend's convstore/floor ratio comes from interleaved runs; the last column compares medians "
        "of the two backends' runs.",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.store_parser(__doc__)
    parser.add_argument(
        "--citus-url",
        default=os.environ.get(CITUS_ENV, DEFAULT_CITUS_URL),
        help=f"SQLAlchemy URL of a Citus coordinator's database (default ${CITUS_ENV} or %(default)s)",
    )
    args = parser.parse_args(argv)
    config = bs.QUICK if args.quick else bs.FULL
    window_runs = WINDOW_RUNS[1] if args.quick else WINDOW_RUNS[0]
    exchanges = common.conversation_exchanges(config.total_steps, seed=args.seed)
    report: dict[str, Any] = {
        **common.report_head("bench_citus.py", argv, args, ("postgres",)),
        "config": asdict(config) | {"quick": args.quick, "window_runs": window_runs},
        "workload": {
            "seed": args.seed,
            "steps": config.total_steps,
            "exchanges": len(exchanges),
            "mean_step_bytes": round(common.mean_step_bytes(exchanges), 1),
        },
        "backends": {},
    }
    for name, url in (("postgres", args.postgres_url), ("citus", args.citus_url)):
        print(f"{name}: {config.total_steps:,} steps", file=sys.stderr, flush=True)
        with bs.open_backend("postgres", url) as backend:
            results = bs.run_backend(backend, config, exchanges)
            results["window"] = run_window(backend, window_runs)
        results.pop("size", None)  # sizes on Citus live on the workers: bench_store measures one server
        report["backends"][name] = results
    table = table_for(report["backends"])
    print(common.render_text(table))
    stem = "citus-quick" if args.quick else "citus"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    lines = [
        *common.report_opening("convstore on Citus against one PostgreSQL server", report),
        f"Workload: {config.total_steps:,} steps in {len(exchanges):,} exchanges (seed {args.seed}).",
        "",
        common.render_markdown(table),
    ]
    (args.out / f"{stem}.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out / f'{stem}.md'} and {args.out / f'{stem}.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
