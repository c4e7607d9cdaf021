"""convstore's search against the floor (the raw driver, hand-written SQL, the same index), and what the
index costs an append; beside ``llm logs -q`` on the same text when Simon Willison's ``llm`` installs.

    python benchmarks/bench_search.py [--backend sqlite|postgres|all] [--quick] [--out benchmarks/results]
        [--llm PATH_TO_LLM_EXECUTABLE] [--conversations N] [--steps N] [--runs N] [--keep DIR]
        [--no-appends]

``--conversations``, ``--steps`` and ``--runs`` (timed runs of each query) override the size (for example
``--conversations 2000`` while working: 200,000 steps). ``--keep DIR`` keeps the seeded store and reuses it
on the next run of the same size and seed (SQLite: a file in DIR; PostgreSQL: a schema named after the size,
never dropped: drop it by hand): seeding a million steps takes minutes. The append workload adds a few
hundred steps to the store it runs on (the newest ones, which a common word's candidates then include):
``--no-appends`` leaves a kept store as seeded.

Data: 10,000 conversations of 100 steps (1,000,000 steps; ``--quick``: 200 x 20), alternating a user's text
(about 300 characters) and the model's (about 700), of 100 owners, written in bulk with the driver (SQLite
executemany, the FTS5 index rebuilt once; PostgreSQL COPY, the GIN index built once): what convstore's own
appends would have written, index rows included (checked by ``store.check()`` and a search). Each step's text
is drawn from a fixed vocabulary, plus a rare word (``tagNNNN``: one of 10,000, so about 100 steps each) and
a topic (``topicNN``: one of 100, about 10,000 steps each).

Workloads, convstore and the floor interleaved (alternating which goes first):

1. The first page of hits (20) of: a rare word, across every owner and for one owner; a topic word with a
   common word; and the most common word (in about half the steps); the last two for one owner too. A
   search ranks the newest 1,000 matches (``store.search``'s default ``candidates``), so the common words
   cost about what 1,000 matches do. convstore: ``store.search`` (hits, the branches through each,
   snippets and the count of encrypted conversations); the floor: the same three statements with the
   driver (the same bounded candidates statement, built the same way for the same filters), no snippets.
   Before each run the floor runs the same search untimed on a connection of its own, so that both sides
   find the same caches (see ``run_queries``). Targets: at most 50 ms and 1.5x the floor.
2. An append of one exchange (a user's text and the model's reply) to a conversation of the seeded store,
   with the index (``search_index=True``, the default) and without; target: at most 1.2x.
3. ``llm logs -q WORD -n 20`` (its own SQLite FTS5 database, ``llm`` migrations, the same texts as 500,000
   prompt/response rows): the command's wall time, and the same without the search (``llm logs -n 20``) to
   show the start-up share; installed in a venv apart (``--llm``), skipped with a message otherwise. The
   rows are written to llm's ``responses`` table (FTS5 ``responses_fts``, kept by its triggers), where llm
   logged before its ``turns`` tables: llm 0.36 logs new prompts to ``turns`` and ``turn_search`` and
   searches both (``merged_log_rows``), so this times its search of the older table, the newer one empty.
   Beside it, with the SQLite backend, ``convstore search WORD --limit 20`` on the seeded store: the same
   kind of figure (a process each time, start-up included; a search for a word no step holds for the
   start-up share), where the first workload times the library call. Each command's output is checked
   for the word (a search that found nothing would be fast too).
"""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _common as common
from _common import TableData, fmt_ns, fmt_ratio, median_ns, now_ns
from _search_data import (
    FULL,
    QUICK,
    Config,
    rare_tags,
    sample_texts,
    seed_postgres,
    seed_rows,
    seed_sqlite,
    step_texts,
)
from _search_floor import CANDIDATES, LIMIT, PostgresFloor, SqliteFloor

import convstore

FIRST_PAGE_TARGET_NS = 50_000_000
FLOOR_TARGET = 1.5
APPEND_TARGET = 1.2


# Workloads.

# (label, the words of run number ``run`` with ``tags`` rare words, whether for one owner)
QUERIES: list[tuple[str, Callable[[int, int], list[str]], bool]] = [
    ("rare word, every owner", lambda run, tags: [f"tag{(run * 37) % tags:04d}"], False),
    ("rare word, one owner", lambda run, tags: [f"tag{(run * 41) % tags:04d}"], True),
    ("topic and a common word", lambda run, tags: [f"topic{run % 100:02d}", "weather"], False),
    ("the most common word", lambda run, tags: ["the"], False),
    # What an app bound to one of its users runs (``store.for_owner``): the same words, one owner's
    # conversations (1% of them) among everyone's.
    ("topic and a common word, one owner", lambda run, tags: [f"topic{run % 100:02d}", "weather"], True),
    ("the most common word, one owner", lambda run, tags: ["the"], True),
]


def run_queries(store: convstore.Store, floor: Any, warmer: Any, config: Config) -> list[dict[str, Any]]:
    """Each query's runs, convstore and the floor in turn. Before each run, ``warmer`` (the floor on a
    connection of its own) runs the same search untimed, so that both find the same caches: most runs
    search a word no run searched before, and whichever went first used to read its pages into the
    operating system's cache (SQLite) or the shared buffers (PostgreSQL) for the other; with alternating
    order and an odd number of runs, the medians then fell on opposite sides (a 2x "gap" that was only
    which side went first)."""
    results = []
    for label, words_of, scoped in QUERIES:
        owner = "user07" if scoped else None
        searcher = store.for_owner(owner) if owner else store
        ours, theirs, hits = [], [], []
        # The first run warms the caches, untimed.
        runs = config.query_runs
        for run in range(runs + 1):
            words = words_of(run, rare_tags(config))
            warmer.search(words, owner)
            order = (0, 1) if run % 2 else (1, 0)
            for who in order:
                gc.collect()
                start = now_ns()
                if who == 0:
                    page = searcher.search(" ".join(words), limit=LIMIT)
                    elapsed = now_ns() - start
                    found = len(page.hits)
                else:
                    rows = floor.search(words, owner)
                    elapsed = now_ns() - start
                    found = len(rows)
                if run:
                    (ours if who == 0 else theirs).append(elapsed)
                    if who == 0:
                        hits.append(found)
        results.append(
            {
                "query": label,
                "convstore_ns": median_ns(ours),
                "floor_ns": median_ns(theirs),
                "ratio": median_ns(ours) / median_ns(theirs),
                "hits_median": statistics.median(hits),
                "convstore_p90_ns": common.percentile_ns(ours, 90),
            }
        )
        print(
            f"  {label}: convstore {fmt_ns(median_ns(ours))}, floor {fmt_ns(median_ns(theirs))}", flush=True
        )
    return results


def run_appends(url: str, config: Config, seed: int) -> dict[str, Any]:
    """Appends of one exchange to a conversation in the seeded store, with the index and without."""
    rng = random.Random(seed + 7)
    users, models = sample_texts(rng, 50, 45), sample_texts(rng, 50, 110)
    timings: dict[bool, list[int]] = {True: [], False: []}
    with convstore.Store(url) as indexed, convstore.Store(url, search_index=False) as plain:
        conversations = {True: indexed.create_conversation(), False: plain.create_conversation()}
        for run in range(config.appends + 1):
            steps = [
                {"type": "user_input", "content": [{"type": "text", "text": rng.choice(users)}]},
                {"type": "model_output", "content": [{"type": "text", "text": rng.choice(models)}]},
            ]
            for index in (True, False) if run % 2 else (False, True):
                gc.collect()
                start = now_ns()
                conversations[index].append(steps)
                if run:
                    timings[index].append(now_ns() - start)
    with_index, without = median_ns(timings[True]), median_ns(timings[False])
    return {"with_index_ns": with_index, "without_index_ns": without, "ratio": with_index / without}


def run_llm(
    llm: str | None, config: Config, seed: int, workdir: Path, convstore_db: Path | None
) -> dict[str, Any]:
    """``llm logs -q`` on the same texts in llm's own database, and ``convstore search`` on the seeded
    SQLite store (``convstore_db``, if SQLite ran) the same way; skipped without ``llm``."""
    if llm is None or not Path(llm).exists():
        return {"skipped": "llm is not installed (pass --llm PATH; pip install llm in a venv of its own)"}
    python = Path(llm).with_name("python")
    home = workdir / "llm-home"
    home.mkdir()
    env = {**os.environ, "LLM_USER_PATH": str(home)}
    build = (
        "import sqlite_utils, llm.migrations as m, sys\n"
        "db = sqlite_utils.Database(sys.argv[1])\n"
        "m.migrate(db)\n"
    )
    database = home / "logs.db"
    subprocess.run([str(python), "-c", build, str(database)], check=True, env=env)  # noqa: S603
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO conversations (id, name, model) VALUES ('c', 'bench', 'm1')")
    pending: list[tuple[Any, ...]] = []
    for cid, _, rows in seed_rows(config, seed):
        for prompt, response in zip(rows[::2], rows[1::2], strict=True):
            pending.append(
                (prompt["id"], "m1", prompt["text"], response["text"], cid, prompt["created_at"].isoformat())
            )
        if len(pending) > 5000:
            conn.executemany(
                "INSERT INTO responses (id, model, prompt, response, conversation_id, datetime_utc) "
                "VALUES (?, ?, ?, ?, 'c', ?)",
                [(a, b, c, d, f) for a, b, c, d, _, f in pending],
            )
            pending = []
    if pending:
        conn.executemany(
            "INSERT INTO responses (id, model, prompt, response, conversation_id, datetime_utc) "
            "VALUES (?, ?, ?, ?, 'c', ?)",
            [(a, b, c, d, f) for a, b, c, d, _, f in pending],
        )
    conn.execute("COMMIT")
    conn.close()

    def timed(command: list[str], expect: str | None) -> int:
        """The command's median wall time; its output must hold ``expect``."""
        samples = []
        for _ in range(config.llm_runs):
            start = now_ns()
            done = subprocess.run(command, capture_output=True, env=env, check=False)  # noqa: S603
            samples.append(now_ns() - start)
            if done.returncode:
                raise RuntimeError(f"{command[:2]} failed: {done.stderr.decode(errors='replace')[-500:]}")
            if expect is not None and expect.encode() not in done.stdout:
                raise RuntimeError(f"{command[:2]} printed no {expect!r}: it found nothing")
        return median_ns(samples)

    version = subprocess.run([llm, "--version"], capture_output=True, text=True, check=False).stdout.strip()  # noqa: S603
    results: dict[str, Any] = {"version": version}
    for label, words in (("rare word", "tag0007"), ("the most common word", "the")):
        results[label] = {"llm_logs_q_ns": timed([llm, "logs", "-q", words, "-n", str(LIMIT)], words)}
        if convstore_db is not None:
            command = [sys.executable, "-m", "convstore", "search", words, "--db", str(convstore_db)]
            results[label]["convstore_search_ns"] = timed([*command, "--limit", str(LIMIT)], words)
    listing = {"llm_logs_q_ns": timed([llm, "logs", "-n", str(LIMIT)], None)}
    if convstore_db is not None:  # convstore's nearest: a word no step holds (start-up, the store opened)
        command = [sys.executable, "-m", "convstore", "search", "absentword", "--db", str(convstore_db)]
        listing["convstore_search_ns"] = timed(command, None)
    results["start-up (llm: no query; convstore: no hit)"] = listing
    return results


def _kept_name(config: Config, seed: int) -> str:
    return f"search_{config.conversations}x{config.steps}_{seed}"


def _kept_schema(base_url: str, name: str) -> common.PostgresSchema:
    """A schema kept between runs (``--keep``): created if missing, never dropped."""
    schema = common.PostgresSchema(base_url, f"bench_{name}")
    with schema.connect() as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema.schema}"')
    return schema


def _seeded_postgres(schema: common.PostgresSchema) -> bool:
    with schema.connect() as conn:
        found = conn.execute("SELECT to_regclass('convstore_search') IS NOT NULL").fetchone()[0]
        if not found:
            return False
        return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM convstore_search)").fetchone()[0])


def run_backend(backend: str, args: Any, config: Config, workdir: Path) -> dict[str, Any]:
    keep = args.keep
    reused = False
    with ExitStack() as stack:
        start = time.perf_counter()
        if backend == "sqlite":
            path = (keep or workdir) / f"{_kept_name(config, args.seed)}.db"
            url = f"sqlite:///{path}"
            if keep is not None and path.exists():
                reused = True
                steps = sum(1 for _ in step_texts(config, args.seed))
                print(f"{backend}: reusing {path}", flush=True)
            else:
                convstore.Store(url).close()  # built by convstore's migrations
                steps = seed_sqlite(path, config, args.seed)
            floor: Any = SqliteFloor(path)
            warmer: Any = SqliteFloor(path)
            size = path.stat().st_size
        else:
            if keep is not None:
                schema = _kept_schema(args.postgres_url, _kept_name(config, args.seed))
            else:
                schema = stack.enter_context(common.postgres_schema(args.postgres_url, "bench_search"))
            url = schema.url
            if keep is not None and _seeded_postgres(schema):
                reused = True
                steps = sum(1 for _ in step_texts(config, args.seed))
                print(f"{backend}: reusing schema {schema.schema}", flush=True)
            else:
                convstore.Store(url).close()
                steps = seed_postgres(schema, config, args.seed)
            floor = PostgresFloor(schema)
            warmer = PostgresFloor(schema)
            size = sum(schema.table_sizes().values())
        seeded_s = time.perf_counter() - start
        if not reused:
            print(f"{backend}: seeded {steps} steps in {seeded_s:.0f} s", flush=True)
        stack.callback(floor.close)
        stack.callback(warmer.close)
        with convstore.Store(url) as store:
            probe = store.search("tag0001", limit=LIMIT)
            assert probe.hits, "the seeded index finds nothing"
            assert probe.hits[0].branches == ("main",)
            queries = run_queries(store, floor, warmer, config)
        appends = None if args.no_appends else run_appends(url, config, args.seed)
        print(f"  append: {appends}", flush=True)
        return {
            "cli_db": path if backend == "sqlite" else None,  # for run_llm; not in the report
            "steps": steps,
            "seed_seconds": None if reused else seeded_s,
            "database_bytes": size,
            "queries": queries,
            "appends": appends,
        }


def tables(report: dict[str, Any]) -> list[TableData]:
    out = []
    rows = []
    for backend, result in report["backends"].items():
        for query in result["queries"]:
            rows.append(
                [
                    f"{backend}: {query['query']}",
                    f"{query['hits_median']:g}",
                    fmt_ns(query["convstore_ns"]),
                    fmt_ns(query["floor_ns"]),
                    fmt_ratio(query["ratio"]),
                ]
            )
    out.append(
        TableData(
            "First page of hits (20), median",
            ["backend: query", "hits", "convstore", "floor", "convstore/floor"],
            rows,
            "Targets: at most 50 ms and 1.5x the floor. The floor runs the same three statements (the newest "
            f"{CANDIDATES:,} matches ranked and a page of them, the branches through them, the encrypted "
            "count) with the driver, no snippets.",
        )
    )
    out.append(
        TableData(
            "Append of one exchange to the seeded store, median",
            ["backend", "with the index", "without", "ratio"],
            [
                [
                    backend,
                    fmt_ns(result["appends"]["with_index_ns"]),
                    fmt_ns(result["appends"]["without_index_ns"]),
                    fmt_ratio(result["appends"]["ratio"]),
                ]
                for backend, result in report["backends"].items()
                if result["appends"] is not None
            ],
            "Target: at most 1.2x.",
        )
    )
    llm = report.get("llm", {})
    if "skipped" in llm:
        out.append(TableData("llm logs -q", ["note"], [[llm["skipped"]]]))
    elif llm:
        out.append(
            TableData(
                f"`llm logs -q` on the same texts ({llm['version']}) and `convstore search`, each command's "
                "wall time, median",
                ["query", "llm logs -q -n 20", "convstore search --limit 20"],
                [
                    [
                        label,
                        fmt_ns(value["llm_logs_q_ns"]),
                        fmt_ns(value["convstore_search_ns"]) if "convstore_search_ns" in value else "-",
                    ]
                    for label, value in llm.items()
                    if label != "version"
                ],
                "A process each time: start-up included (the last row: llm logs without a query, convstore "
                "search of a word no step holds). convstore's library call: the first table (every owner).",
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.store_parser(__doc__)
    parser.add_argument(
        "--llm", default=shutil.which("llm"), help="the llm executable (in a venv of its own)"
    )
    parser.add_argument("--conversations", type=int, help="how many conversations to seed")
    parser.add_argument("--steps", type=int, help="how many steps each conversation has")
    parser.add_argument("--runs", type=int, help="timed runs of each query")
    parser.add_argument("--keep", type=Path, help="keep the seeded store in DIR and reuse it (see above)")
    parser.add_argument("--no-appends", action="store_true", help="skip the append workload")
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgres") if args.backend == "all" else (args.backend,)
    config = QUICK if args.quick else FULL
    config = Config(
        conversations=args.conversations or config.conversations,
        steps=args.steps or config.steps,
        query_runs=args.runs or config.query_runs,
        appends=config.appends,
        llm_runs=config.llm_runs,
    )
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = common.report_head("bench_search.py", argv, args, backends)
    report["config"] = config.__dict__
    report["backends"] = {}
    report["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-search-") as temp:
        workdir = Path(temp)
        cli_db = None
        for backend in backends:
            report["backends"][backend] = run_backend(backend, args, config, workdir)
            cli_db = report["backends"][backend].pop("cli_db") or cli_db
        report["llm"] = run_llm(args.llm, config, args.seed, workdir, cli_db)
        report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    made = tables(report)
    for table in made:
        print(common.render_text(table))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "search-quick" if args.quick else "search"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    lines = common.report_opening(
        "Search", report, when=f"; load average after {report['load_average_after']}"
    )
    lines += [common.render_markdown(table) for table in made]
    (args.out / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out / name}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
