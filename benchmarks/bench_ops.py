"""The operations around a turn against the floor: a budgeted window, a fork and an edit, the first page of a
listing and a purge, each against the raw driver with hand-written SQL doing the same work, in the same run.

    python benchmarks/bench_ops.py [--backend sqlite|postgres|all] [--quick] [--out benchmarks/results]

Each contender has a database of its own built by convstore's migrations (a SQLite file, or a PostgreSQL
schema), seeded alike in bulk (untimed). Timed operations alternate between the two (which goes first
alternates too); medians are reported with their ratio and the load average, measured before and after.

1. **Budgeted window** (``TokenBudget(max_input_tokens=32000, policy="sliding")``): ``conv.history(budget=)``
   on branches of 1,000 and 10,000 steps (1,000 and 2,000 with ``--quick``) against the floor: one recursive
   statement that walks the branch from its head up its parent pointers while the running totals fit (the
   threshold computed from the head it reads), the same choice of the first kept exchange, one
   ``json.loads``. Target <= 1.5x.
2. **Fork and edit** at the head of the longest branch (depth 10,000; 2,000): ``conv.fork(at=)`` and
   ``conv.edit()`` against one INSERT of a branch row (autocommit; the foreign keys check the node). The
   edit is also measured against a floor doing an edit's work: one ``INSERT ... SELECT`` of a branch row at
   the edited node's parent, read by primary key (``floor_edit``; the fork's floor starts at a head it is
   given, which an edit has to find). 200 each (50). Target <= 1.5x. And the edit of an answer by the object
   that just appended it with its question (a regenerate), against the same edit floor: that object knows
   the heads along what it wrote, so its edit reads no node (``edit_known``).
3. **Listing**: the first page (50) of 100,000 conversations (2,000): ``store.conversations()`` against the
   same SELECT whose rows the floor makes records of (id in its text form, aware time, settings decoded).
   Target <= 1.5x.
4. **Purge** 10% of 100,000 conversations of one exchange (200 of 2,000): ``store.purge()`` against a floor
   that deletes them conversation by conversation with the same guarantees (each locked and tested again
   for staleness, its key, search rows, summaries, exchanges, branches, nodes, media, files and row deleted,
   its id added to the erasure list), 256 conversations a transaction, then on SQLite the search index
   rewritten and the WAL checkpointed and truncated, as convstore does. One run each. Target <= 1.5x.
"""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import _common as common
import bench_budget

import convstore
from convstore import codec
from convstore.budget import HeuristicCounter
from convstore.store import _ops
from convstore.store import _search as search
from convstore.store import _statements as st

MODEL = "gemini-3-flash-preview"
BUDGET = 32_000
TARGET = 1.5


@dataclass(frozen=True)
class Config:
    window_steps: tuple[int, ...]
    window_runs: int
    forks: int
    conversations: int
    list_runs: int
    purged_share: float = 0.1


FULL = Config(window_steps=(1_000, 10_000), window_runs=31, forks=200, conversations=100_000, list_runs=101)
QUICK = Config(window_steps=(1_000, 2_000), window_runs=7, forks=50, conversations=2_000, list_runs=21)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def alternate(calls: dict[str, Callable[[], Any]], runs: int) -> dict[str, Any]:
    """Median wall-clock ns of each call (and ``<name>_cpu``: this process's CPU ns), the calls alternating
    (and which goes first), after one warm-up each. On a loaded machine the CPU time is the steadier
    figure for SQLite, whose work is all in this process; PostgreSQL's is on the server (wall only)."""
    for call in calls.values():
        call()
    wall: dict[str, list[int]] = {name: [] for name in calls}
    cpu: dict[str, list[int]] = {name: [] for name in calls}
    gc.collect()
    for index in range(runs):
        order = list(calls.items())
        if index % 2:
            order.reverse()
        for name, call in order:
            start, start_cpu = time.perf_counter_ns(), time.process_time_ns()
            call()
            cpu[name].append(time.process_time_ns() - start_cpu)
            wall[name].append(time.perf_counter_ns() - start)
    return {name: statistics.median(values) for name, values in wall.items()} | {
        f"{name}_cpu": statistics.median(values) for name, values in cpu.items()
    }


# The databases: each contender's own, built by convstore's migrations.


@dataclass
class Database:
    url: str
    raw: Callable[[], Any]  # a new raw-driver connection (autocommit)
    sqlite: bool

    def stored_id(self, value: str) -> str:
        """An id as the floor binds it (SQLite: the 32 hex digits SQLAlchemy stores)."""
        return value.replace("-", "") if self.sqlite else value

    def now(self) -> Any:
        moment = datetime.now(timezone.utc)
        return moment.replace(tzinfo=None).isoformat(" ", "microseconds") if self.sqlite else moment

    def sql(self, text: str) -> str:
        return text if self.sqlite else common.to_pg(text)


@contextmanager
def databases(backend: str, postgres_url: str, names: Sequence[str]) -> Iterator[dict[str, Database]]:
    with ExitStack() as stack:
        out = {}
        for name in names:
            if backend == "sqlite":
                directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ops-")))
                path = directory / f"{name}.db"

                def connect(path: Path = path) -> Any:
                    conn = sqlite3.connect(path, isolation_level=None)
                    for pragma in ("busy_timeout = 30000", "foreign_keys = ON", "synchronous = FULL"):
                        conn.execute(f"PRAGMA {pragma}")
                    return conn

                out[name] = Database(f"sqlite:///{path}", connect, sqlite=True)
            else:
                schema = stack.enter_context(common.postgres_schema(postgres_url, prefix="bench_ops"))
                out[name] = Database(schema.url, lambda schema=schema: schema.connect(autocommit=True), False)
            convstore.Store(out[name].url).close()
        yield out


def analyze(db: Database) -> None:
    if not db.sqlite:
        with db.raw() as conn:
            for table in ("conversations", "branches", "nodes", "exchanges", "search"):
                conn.execute(f"ANALYZE convstore_{table}")


# 1. Budgeted window.

FLOOR_WINDOW = """
WITH RECURSIVE w(id, parent_id, depth, exchange_id, type, token_count, total_tokens, payload, threshold) AS (
  SELECT n.id, n.parent_id, n.depth, n.exchange_id, n.type, n.token_count, n.total_tokens, n.payload,
         n.total_tokens - ?
  FROM convstore_branches b JOIN convstore_nodes n ON n.conversation_id = ? AND n.id = b.head_id
  WHERE b.conversation_id = ? AND b.name = 'main'
  UNION ALL
  SELECT p.id, p.parent_id, p.depth, p.exchange_id, p.type, p.token_count, p.total_tokens, p.payload,
         w.threshold
  FROM convstore_nodes p JOIN w ON p.conversation_id = ? AND p.id = w.parent_id
  WHERE w.total_tokens - w.token_count >= w.threshold
)
SELECT parent_id, exchange_id, type, token_count, total_tokens, payload FROM w ORDER BY depth
"""


def floor_window(conn: Any, sql: str, conversation_id: str) -> list[Any]:
    """The window ``conv.history(budget=)`` keeps with the sliding policy: from the first exchange start (a
    user_input) whose running total fits, decoded with one json.loads."""
    rows = conn.execute(sql, (BUDGET, conversation_id, conversation_id, conversation_id)).fetchall()
    head = rows[-1][4]
    for i, row in enumerate(rows):
        starts = row[2] == "user_input" and (row[0] is None if i == 0 else rows[i - 1][1] != row[1])
        if starts and head - (row[4] - row[3]) <= BUDGET:
            return json.loads("[" + ",".join(r[5] for r in rows[i:]) + "]")  # type: ignore[no-any-return]
    return []


def run_windows(db: Database, config: Config) -> list[dict[str, Any]]:
    out = []
    budget = convstore.TokenBudget(max_input_tokens=BUDGET, policy="sliding")
    with convstore.Store(db.url) as store, db.raw() as conn:
        sql = db.sql(FLOOR_WINDOW)
        for steps in config.window_steps:
            conv = bench_budget.bulk_branch(store, steps)
            analyze(db)
            cid = db.stored_id(conv.id)
            assert floor_window(conn, sql, cid) == conv.history(budget=budget), "not the same window"
            times = alternate(
                {
                    "convstore": lambda conv=conv: conv.history(budget=budget),
                    "floor": lambda cid=cid: floor_window(conn, sql, cid),
                },
                config.window_runs,
            )
            out.append({"steps": steps, "window_steps": len(conv.history(budget=budget)), **times})
    return out


# 2. Fork and edit at the head of the longest branch.


def run_forks(db: Database, config: Config) -> dict[str, Any]:
    steps = config.window_steps[-1]
    insert = db.sql(
        "INSERT INTO convstore_branches (conversation_id, name, head_id, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?)"
    )
    insert_at_parent = db.sql(
        "INSERT INTO convstore_branches (conversation_id, name, head_id, created_at, updated_at) "
        "SELECT conversation_id, ?, parent_id, ?, ? FROM convstore_nodes WHERE conversation_id = ? AND id = ?"
    )
    with convstore.Store(db.url) as store, db.raw() as conn:
        conv = bench_budget.bulk_branch(store, steps)
        analyze(db)
        head = conv.head_id
        assert head is not None
        cid, stored_head = db.stored_id(conv.id), db.stored_id(head)
        names = iter(range(10**9))

        def floor() -> None:
            now = db.now()
            conn.execute(insert, (cid, f"floor-{next(names)}", stored_head, now, now))

        def floor_edit() -> None:
            now = db.now()
            done = conn.execute(insert_at_parent, (f"floor-edit-{next(names)}", now, now, cid, stored_head))
            assert done.rowcount == 1

        # Another object on the branch appends an exchange (a question and its answer): it knows the heads
        # along what it wrote, so its edit of the answer (a regenerate) reads no node.
        writer = store.conversation(conv.id)
        answer = writer.append(
            [
                {"type": "user_input", "content": [{"type": "text", "text": "again?"}]},
                {"type": "model_output", "content": [{"type": "text", "text": "again."}]},
            ]
        )[-1].id
        before = conv.branches()
        times = alternate(
            {
                "fork": lambda: conv.fork(at=head, branch=f"fork-{next(names)}"),
                "edit": lambda: conv.edit(head, branch=f"edit-{next(names)}"),
                "edit_known": lambda: writer.edit(answer, branch=f"known-{next(names)}"),
                "floor": floor,
                "floor_edit": floor_edit,
            },
            config.forks,
        )
        made = len(conv.branches()) - len(before)
    return {"depth": steps - 1, "forks": config.forks, "branches_made": made, **times}


# 3. The first page of a listing.

LIST_SQL = (
    "SELECT id, created_at, model, system_instruction, generation_config, tools, metadata, encryption "
    "FROM convstore_conversations ORDER BY created_at DESC, id DESC LIMIT ?"
)


def conversation_rows(count: int, start: datetime, step: timedelta) -> list[dict[str, Any]]:
    return [
        {
            "id": str(uuid.uuid4()),
            "created_at": start + step * i,
            "model": MODEL,
            "system_instruction": None,
            "generation_config": None,
            "tools": None,
            "metadata": json.dumps({"n": i}),
            "owner": None,
            "encryption": None,
        }
        for i in range(count)
    ]


def floor_page(conn: Any, sql: str, sqlite: bool, limit: int = 50) -> list[tuple[Any, ...]]:
    """The page's records as tuples: id in its text form, time aware UTC, settings decoded."""
    out = []
    for row in conn.execute(sql, (limit + 1,)).fetchall()[:limit]:
        raw, created = row[0], row[1]
        if sqlite:
            raw = f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
            created = datetime.fromisoformat(created).replace(tzinfo=timezone.utc)
        else:
            raw = str(raw)
        settings = (None if text is None else json.loads(text) for text in row[4:7])
        out.append((raw, created, row[2], row[3], *settings))
    return out


def run_listing(db: Database, config: Config) -> dict[str, Any]:
    rows = conversation_rows(
        config.conversations, datetime(2026, 1, 1, tzinfo=timezone.utc), timedelta(seconds=1)
    )
    with convstore.Store(db.url) as store, db.raw() as conn:
        with store.engine.begin() as sa_conn:
            for i in range(0, len(rows), 5000):
                sa_conn.execute(st.INSERT_CONVERSATION, rows[i : i + 5000])
        analyze(db)
        sql = db.sql(LIST_SQL)
        page = store.conversations(limit=50).items
        assert [(i.id, i.created_at, i.metadata) for i in page] == [
            (r[0], r[1], r[6]) for r in floor_page(conn, sql, db.sqlite)
        ]
        times = alternate(
            {
                "convstore": lambda: store.conversations(limit=50),
                "floor": lambda: floor_page(conn, sql, db.sqlite),
            },
            config.list_runs,
        )
    return {"conversations": config.conversations, "page": 50, **times}


# 4. Purge.

OLD = datetime(2020, 1, 1, tzinfo=timezone.utc)


def seed_purge(db: Database, count: int, old: int) -> None:
    """``count`` conversations of one exchange (a question and an answer, indexed for search), the first
    ``old`` of them untouched since 2020."""
    counter = HeuristicCounter()
    now = datetime.now(timezone.utc)
    with convstore.Store(db.url) as store, store.engine.begin() as conn:
        for start in range(0, count, 2000):
            made = [*conversation_rows(min(2000, count - start), now, timedelta(0))]
            branch_rows, node_rows, search_rows = [], [], []
            for offset, row in enumerate(made):
                stamp = OLD if start + offset < old else now
                row["created_at"] = stamp
                steps = [
                    {
                        "type": "user_input",
                        "content": [{"type": "text", "text": f"question {start + offset}"}],
                    },
                    {"type": "model_output", "content": [{"type": "text", "text": "an answer"}]},
                ]
                prepared = [(s["type"], codec.dumps(s), counter.count_step(s)) for s in steps]
                nodes = _ops.build_node_rows(row["id"], _ops.EMPTY_HEAD, prepared, stamp)
                node_rows += nodes
                search_rows += search.index_rows(row["id"], nodes, "simple")
                branch_rows.append(
                    {"conversation_id": row["id"], "name": "main", "head_id": nodes[-1]["id"]}
                    | {"created_at": stamp, "updated_at": stamp}
                )
            conn.execute(st.INSERT_CONVERSATION, made)
            conn.execute(st.INSERT_NODES, node_rows)
            conn.execute(st.INSERT_BRANCH, branch_rows)
            conn.execute(st.INSERT_SEARCH, search_rows)
    analyze(db)


_FLOOR_DELETES = [
    f"DELETE FROM convstore_{table} WHERE conversation_id = ?"
    for table in ("keys", "search", "summaries", "exchanges", "branches", "nodes", "media", "files")
]


def floor_purge(db: Database, cutoff: datetime) -> int:
    """Conversation by conversation, 256 a transaction, with the guarantees of convstore's purge."""
    stamp = cutoff.replace(tzinfo=None).isoformat(" ", "microseconds") if db.sqlite else cutoff
    stale_sql = db.sql(
        "SELECT id FROM convstore_conversations c WHERE c.created_at < ? AND NOT EXISTS (SELECT 1 FROM "
        "convstore_branches b WHERE b.conversation_id = c.id AND b.updated_at >= ?)"
    )
    lock_sql = db.sql("SELECT id, encryption FROM convstore_conversations WHERE id = ?")
    recheck_sql = stale_sql + db.sql(" AND c.id = ?")
    deletes = [db.sql(sql) for sql in _FLOOR_DELETES]
    delete_row = db.sql("DELETE FROM convstore_conversations WHERE id = ?")
    erased_sql = db.sql("SELECT 1 FROM convstore_erased WHERE conversation_id = ?")
    insert_erased = db.sql("INSERT INTO convstore_erased (conversation_id, erased_at) VALUES (?, ?)")
    if not db.sqlite:
        lock_sql += " FOR UPDATE"
    deleted = 0
    with db.raw() as conn:
        stale = [row[0] for row in conn.execute(stale_sql, (stamp, stamp)).fetchall()]
        for start in range(0, len(stale), 256):
            if db.sqlite:
                conn.execute("BEGIN IMMEDIATE")
            else:
                conn.execute("BEGIN")
            for cid in stale[start : start + 256]:
                if conn.execute(lock_sql, (cid,)).fetchone() is None:
                    continue
                if conn.execute(recheck_sql, (stamp, stamp, cid)).fetchone() is None:
                    continue
                for sql in deletes:
                    conn.execute(sql, (cid,))
                conn.execute(delete_row, (cid,))
                if conn.execute(erased_sql, (cid,)).fetchone() is None:
                    conn.execute(insert_erased, (cid, db.now()))
                deleted += 1
            conn.execute("COMMIT")
        if db.sqlite:
            conn.execute(search.ERASE_DELETED_SQL)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return deleted


def run_purge(dbs: dict[str, Database], config: Config) -> dict[str, Any]:
    old = int(config.conversations * config.purged_share)
    for db in dbs.values():
        seed_purge(db, config.conversations, old)
    cutoff = datetime.now(timezone.utc) - timedelta(days=365)
    out: dict[str, Any] = {"conversations": config.conversations, "purged": old}
    for name, db in dbs.items():
        gc.collect()
        with convstore.Store(db.url) as store:
            store.conversations(limit=1)  # the schema checked, a connection open
            start, start_cpu = time.perf_counter_ns(), time.process_time_ns()
            done = store.purge(older_than=cutoff) if name == "convstore" else floor_purge(db, cutoff)
            out[f"{name}_cpu"] = time.process_time_ns() - start_cpu
            out[name] = time.perf_counter_ns() - start
        assert done == old, f"{name} purged {done}, not {old}"
    return out


# The run.


def run_backend(backend: str, postgres_url: str, config: Config) -> dict[str, Any]:
    result: dict[str, Any] = {"load_before": load()}
    with databases(backend, postgres_url, ["shared"]) as dbs:
        result["window"] = run_windows(dbs["shared"], config)
        result["fork"] = run_forks(dbs["shared"], config)
        result["listing"] = run_listing(dbs["shared"], config)
    with databases(backend, postgres_url, ["convstore", "floor"]) as dbs:
        result["purge"] = run_purge(dbs, config)
    result["load_after"] = load()
    return result


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def lines_for(backend: str, r: dict[str, Any]) -> list[str]:
    def ms(ns: float) -> str:
        return f"{ns / 1e6:.3f} ms"

    def row(what: str, ours: str, data: dict[str, Any], floor: str = "floor") -> str:
        cells = [what, ms(data[ours]), ms(data[floor]), ratio(data[ours], data[floor])]
        if f"{ours}_cpu" in data:
            cells.append(ratio(data[f"{ours}_cpu"], data[f"{floor}_cpu"]))
        else:
            cells.append("")
        return "| " + " | ".join(cells) + f" | <= {TARGET} |"

    out = [
        f"## {backend} (load average {r['load_before']} before, {r['load_after']} after)",
        "",
        "| operation | convstore | floor | convstore / floor | CPU ratio | target |",
        "|:--|--:|--:|--:|--:|--:|",
    ]
    for w in r["window"]:
        out.append(
            row(f"history(budget=32k) of {w['steps']:,} steps ({w['window_steps']} kept)", "convstore", w)
        )
    f = r["fork"]
    out += [row(f"{name} at depth {f['depth']:,}", name, f) for name in ("fork", "edit")]
    if "floor_edit" in f:
        what = f"edit at depth {f['depth']:,}, floor: INSERT at the node's parent"
        out.append(row(what, "edit", f, "floor_edit"))
    if "edit_known" in f:
        what = f"edit of the answer the object just appended (depth {f['depth'] + 2:,}), floor: at the parent"
        out.append(row(what, "edit_known", f, "floor_edit"))
    li = r["listing"]
    out.append(row(f"first page (50) of {li['conversations']:,} conversations", "convstore", li))
    p = r["purge"]
    out.append(row(f"purge {p['purged']:,} of {p['conversations']:,}", "convstore", p))
    return [
        *out,
        "",
        "Medians of alternating runs (purge: one run each); CPU ratio: this process's CPU time (SQLite's "
        "work is all in it; on PostgreSQL the server's is not counted).",
        "",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args, backends = common.store_args(__doc__, argv)
    config = QUICK if args.quick else FULL
    report: dict[str, Any] = {
        **common.report_head("bench_ops.py", argv, args, backends),
        "config": asdict(config) | {"quick": args.quick},
        "backends": {},
    }
    lines = [*common.report_opening("convstore's operations against the floor", report)]
    for backend in backends:
        print(f"{backend}: load average {load()}", file=sys.stderr, flush=True)
        result = run_backend(backend, args.postgres_url, config)
        report["backends"][backend] = result
        table = lines_for(backend, result)
        print("\n".join(table), flush=True)
        lines += table
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ops-quick" if args.quick else "ops"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out / stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
