"""How fast ``convstore serve`` opens a big conversation: 10,000 steps and 1,000 branches.

    python benchmarks/bench_serve.py [--backend sqlite|postgres|all] [--quick] [--out benchmarks/results]

One conversation on a fresh database built by convstore's migrations (a SQLite file in a temporary
directory, or a new PostgreSQL schema, dropped at the end): a main branch of half the steps (exchanges of
2-4 steps from ``_common.conversation_exchanges``, about 1 KB of JSON a step, each recorded with the API's
usage), then B-1 forks at random exchange boundaries of main (B = 1,000; 200 with ``--quick``), and the other
half of the steps appended to the forks in turn, an exchange at a time: N = 10,000 steps in all (2,000).

Timed, each the median of R runs (7; 3) after a warm-up, through Starlette's TestClient (the whole ASGI app
in-process: the guard, the handler, the store, the templates; no socket):

1. The conversation page (``GET /c/{id}``): ``tree()`` (every node and branch), the tree drawn as rows of
   chains, the branch table with each head's steps and running token total, rendered to HTML. Per-branch API
   usage is read only while the branches' lengths sum to at most 20,000 steps (the store walks each branch
   to list its exchanges), so at this size the table leaves it to each branch's page.
   Each also with the process's CPU time over the request (every thread's: the TestClient runs the app in a
   thread of its own), which other work on a shared machine inflates less than the wall clock.
   The report also gives the contention: wall clock over CPU time of a fixed pure-Python loop, 1.0 on an
   idle core.
2. Its parts, untimed in the page: ``conv.tree()`` alone and ``segments()`` alone.
3. The page of main (``GET /c/{id}/branch``, its newest 200 steps of ~5,000 rendered), the page of a fork,
   and the comparison of main with a fork (``GET /c/{id}/compare``).
4. The first page of the conversation list (``GET /``).

PostgreSQL: ``CONVSTORE_TEST_POSTGRES_URL`` or ``--postgres-url`` (default the local ``test`` database).
The benchmark runs ANALYZE after the build.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _common as common
from _common import TableData, fmt_bytes, fmt_ns, median_ns, now_ns

import convstore

MODEL = "gemini-3-flash-preview"
TABLES = ("convstore_conversations", "convstore_nodes", "convstore_branches", "convstore_exchanges")
TOKEN = "bench-token"  # noqa: S105 -- the access token of a server that lives for the run


@dataclass(frozen=True)
class Config:
    total_steps: int
    branches: int
    runs: int


FULL = Config(total_steps=10_000, branches=1_000, runs=7)
QUICK = Config(total_steps=2_000, branches=200, runs=3)


@contextmanager
def database(name: str, postgres_url: str) -> Iterator[tuple[str, Callable[[], None]]]:
    """A fresh database's URL and what to run before the reads."""
    with ExitStack() as stack:
        if name == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="convstore-bench-")))
            yield common.SqliteFile(directory / "serve.db").url, lambda: None
            return
        schema = stack.enter_context(common.postgres_schema(postgres_url))

        def analyze() -> None:
            with schema.connect() as conn:
                for table in TABLES:
                    conn.execute(f"ANALYZE {table}")

        yield schema.url, analyze


def _record(conv: convstore.Conversation, steps: list[dict[str, Any]], n: int) -> list[convstore.Node]:
    """One recorded turn with the API's usage; stateful, so the body carries only the new input."""
    body = {"model": MODEL, "input": steps[:1], "store": True, "previous_interaction_id": f"prev-{n}"}
    reply = {
        "id": f"interaction-{n}",
        "status": "completed",
        "steps": steps[1:],
        "usage": {"total_input_tokens": 1000 + n, "total_output_tokens": 100, "total_thought_tokens": 10},
    }
    return conv.record(body, reply)


def build(url: str, config: Config, seed: int) -> dict[str, Any]:
    """The conversation: main with half the steps, forks off it, the rest spread over the forks."""
    exchanges = common.conversation_exchanges(config.total_steps, seed=seed)
    rng = random.Random(seed)
    started = time.monotonic()
    with convstore.Store(url) as store:
        conv = store.create_conversation(model=MODEL, system_instruction="You are a careful assistant.")
        boundaries: list[str] = []
        steps = 0
        index = 0
        while steps < config.total_steps // 2:
            nodes = _record(conv, exchanges[index], index)
            boundaries.append(nodes[-1].id)
            steps += len(nodes)
            index += 1
        forks = [
            conv.fork(at=rng.choice(boundaries), branch=f"fork-{b:04d}") for b in range(config.branches - 1)
        ]
        turn = 0
        while index < len(exchanges):
            _record(forks[turn % len(forks)], exchanges[index], index)
            index += 1
            turn += 1
        tree = conv.tree()
    return {
        "conversation_id": conv.id,
        "steps": len(tree.nodes),
        "branches": len(tree.branches),
        "main_steps": steps,
        "exchanges": len(exchanges),
        "mean_step_bytes": round(common.mean_step_bytes(exchanges), 1),
        "build_seconds": round(time.monotonic() - started, 1),
        "fork": forks[0].branch,
    }


def contention() -> float:
    """Wall clock over CPU time of a fixed pure-Python loop: 1.0 on an idle core, k when this process gets
    1/k of one (a machine shared with other work). The wall-clock figures divided by it estimate an idle
    machine's."""
    ratios = []
    for _ in range(3):
        wall, cpu = now_ns(), time.process_time_ns()
        total = 0
        for i in range(1_000_000):
            total += i * i
        ratios.append((now_ns() - wall) / max(1, time.process_time_ns() - cpu))
    return round(sorted(ratios)[1], 2)


def _timed(runs: int, call: Callable[[], Any], cpu: list[int] | None = None) -> tuple[list[int], Any]:
    """Wall-clock samples of ``call`` (and, into ``cpu``, the process's CPU time over each: every thread's,
    the TestClient's app thread included, which a machine shared with other work inflates less)."""
    result = call()  # warm-up
    samples = []
    gc.collect()
    for _ in range(runs):
        start, start_cpu = now_ns(), time.process_time_ns()
        result = call()
        samples.append(now_ns() - start)
        if cpu is not None:
            cpu.append(time.process_time_ns() - start_cpu)
    return samples, result


def run_backend(url: str, before_reads: Callable[[], None], config: Config, seed: int) -> dict[str, Any]:
    from starlette.testclient import TestClient  # noqa: PLC0415 -- the web extra

    from convstore.web import Settings, create_app  # noqa: PLC0415
    from convstore.web._views import segments  # noqa: PLC0415

    started = time.monotonic()
    built = build(url, config, seed)
    load = [round(x, 2) for x in os.getloadavg()]
    slowdown = contention()
    before_reads()
    cid = built["conversation_id"]
    pages = {
        "conversation page (tree + branches)": f"/c/{cid}",
        "branch page: main (newest 200 steps)": f"/c/{cid}/branch?b=main",
        f"branch page: {built['fork']}": f"/c/{cid}/branch?b={built['fork']}",
        f"compare main with {built['fork']}": f"/c/{cid}/compare?a=main&b={built['fork']}",
        "conversation list, first page": "/",
    }
    results: dict[str, Any] = {
        "workload": built,
        "pages": {},
        "parts": {},
        "load_average": load,
        "contention": slowdown,
    }
    with TestClient(create_app(Settings(url, token=TOKEN))) as client:
        client.cookies.set("convstore_token", TOKEN)

        def get(path: str) -> Callable[[], int]:
            def call() -> int:
                response = client.get(path)
                if response.status_code != 200:
                    raise AssertionError(f"{path}: HTTP {response.status_code}")
                return len(response.content)

            return call

        for label, path in pages.items():
            cpu: list[int] = []
            samples, size = _timed(config.runs, get(path), cpu)
            results["pages"][label] = {
                "path": path,
                "median_ns": median_ns(samples),
                "cpu_median_ns": median_ns(cpu),
                "bytes": size,
                "samples_ns": samples,
                "cpu_samples_ns": cpu,
            }
            print(
                f"  {label}: {fmt_ns(median_ns(samples))} (CPU {fmt_ns(median_ns(cpu))})",
                file=sys.stderr,
                flush=True,
            )
    with convstore.Store(url) as store:
        conv = store.conversation(cid)
        samples, tree = _timed(config.runs, conv.tree)
        results["parts"]["conv.tree()"] = {"median_ns": median_ns(samples), "samples_ns": samples}
        samples, rows = _timed(config.runs, lambda: segments(tree))
        results["parts"]["segments(tree)"] = {
            "median_ns": median_ns(samples),
            "samples_ns": samples,
            "rows": len(rows),
        }
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def table_for(backend: str, results: dict[str, Any], config: Config) -> TableData:
    work = results["workload"]
    rows = [
        [label, fmt_ns(entry["median_ns"]), fmt_ns(entry["cpu_median_ns"]), fmt_bytes(entry["bytes"])]
        for label, entry in results["pages"].items()
    ]
    rows += [
        [f"part: {label}", fmt_ns(entry["median_ns"]), "", ""] for label, entry in results["parts"].items()
    ]
    return TableData(
        f"{backend}: {work['steps']:,} steps, {work['branches']:,} branches "
        f"(main {work['main_steps']:,} steps)",
        ["GET through the ASGI app", f"median of {config.runs}", "CPU (process)", "HTML"],
        rows,
        f"tree rows (chains between forks and heads): {results['parts']['segments(tree)']['rows']:,}; "
        f"built in {work['build_seconds']} s; load average at the start {results['load_average']}; "
        f"contention (wall/CPU of a fixed loop, 1.0 = an idle core): {results['contention']}",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args, backends = common.store_args(__doc__, argv)
    config = QUICK if args.quick else FULL
    report: dict[str, Any] = {
        **common.report_head(
            "bench_serve.py",
            argv,
            args,
            backends,
            starlette=common.package_version("starlette"),
            jinja2=common.package_version("Jinja2"),
        ),
        "config": asdict(config) | {"quick": args.quick, "seed": args.seed},
        "backends": {},
    }
    tables: list[TableData] = []
    for name in backends:
        print(
            f"{name}: {config.total_steps:,} steps, {config.branches:,} branches", file=sys.stderr, flush=True
        )
        with database(name, args.postgres_url) as (url, before_reads):
            results = run_backend(url, before_reads, config, args.seed)
        report["backends"][name] = results
        table = table_for(name, results, config)
        tables.append(table)
        print(f"{name}: done in {results['seconds']} s", file=sys.stderr, flush=True)
        print(common.render_text(table))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "serve-quick" if args.quick else "serve"
    json_path, md_path = args.out / f"{stem}.json", args.out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    lines = [
        *common.report_opening(
            "convstore serve: opening a conversation of 10,000 steps and 1,000 branches", report
        ),
        *(common.render_markdown(table) for table in tables),
    ]
    md_path.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
