"""convstore's store against the floor: the raw driver with hand-written SQL doing the same work.

    python benchmarks/bench_store.py [--backend sqlite|postgres|all] [--quick] [--out benchmarks/results]

Each contender gets a fresh database of its own, built by convstore's migrations (``Store(url)``): a SQLite
file in a temporary directory, or a new PostgreSQL schema (dropped at the end). The floor then writes its own
conversation into those same tables with plain SQL through ``sqlite3`` / ``psycopg`` 3, with the same
durability settings as convstore (SQLite: WAL, ``synchronous=FULL``, ``foreign_keys=ON``), one transaction per
exchange, ``executemany`` for the steps and a compare-and-swap of the branch head. Both contenders get the
same steps from the same seeded generator, and their operations are interleaved (alternating which goes
first), so drift in the machine affects both alike.

Workloads:

1. Append one exchange (2-4 steps) at a time up to N steps (10,000; 2,000 with ``--quick``); per-append
   latency, its growth (median of the last 10% of appends over the first 10%) and convstore/floor.
2. ``history()`` and ``history_json()`` of a 1,000-step branch and of the whole N-step branch, against the
   floor's query + ``json.loads`` and the floor's query + text splice.
3. Forks in the middle of the N-step conversation; rows added per fork must be exactly one branch row.
4. Database size at a few step counts (SQLite file after ``wal_checkpoint(TRUNCATE)``; PostgreSQL
   ``pg_total_relation_size`` of the three tables), measured between appends, outside the timings.
5. Deleting conversations of about 30 steps each (untimed set-up; 200 deletes, 50 with ``--quick``):
   ``delete_conversation`` (the delete transaction, which locks the conversation row first, then on SQLite
   the WAL checkpointed and truncated so that no file keeps what was deleted), the same delete transaction
   alone (what a delete cost before the WAL was truncated), and the floor's six DELETEs in one transaction.

PostgreSQL: ``CONVSTORE_TEST_POSTGRES_URL`` or ``--postgres-url`` (default the local ``test`` database).
Each connection caches the plans of its foreign-key checks, often made on a new, empty ``convstore_nodes``.
Until migration 0005, such a plan could pick an index led by ``conversation_id`` for the check
``conversation_id = $1 AND id = $2`` and filter on ``id``: a scan of the whole conversation at every step
(appends 8x slower at 10,000 steps than at the start) until an ANALYZE made the connection re-plan. The
secondary indexes are now led by ``parent_id`` / ``exchange_id``, so only the primary key can serve the check.
The report still shows how many autoanalyze runs each schema had at each size point. Before the reads, the
benchmark runs ANALYZE on both schemas.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

import _common as common
from _common import TableData, fmt_bytes, fmt_ns, fmt_ratio, median_ns, now_ns, percentile_ns

import convstore
from convstore.store import _ops
from convstore.store._engine import run as run_op

TABLES = ("convstore_conversations", "convstore_nodes", "convstore_branches")
MODEL = "gemini-3-flash-preview"
APPEND_GROWTH_TARGET = 1.2
HISTORY_RATIO_TARGET = 3.0


@dataclass(frozen=True)
class Config:
    total_steps: int
    history_sizes: tuple[int, ...]
    history_runs: tuple[int, ...]  # timed runs for each history size (after one warm-up run)
    size_points: tuple[int, ...]
    forks: int
    deletes: int = 200


FULL = Config(
    total_steps=10_000,
    history_sizes=(1_000, 10_000),
    history_runs=(31, 15),
    size_points=(1_000, 2_000, 5_000, 10_000),
    forks=200,
)
QUICK = Config(
    total_steps=2_000,
    history_sizes=(1_000, 2_000),
    history_runs=(9, 5),
    size_points=(500, 1_000, 2_000),
    forks=50,
    deletes=50,
)


# The contenders.


class Contender(Protocol):
    name: str

    def append(self, steps: list[dict[str, Any]]) -> list[str]:
        """Write one exchange on the main branch; the new node ids in order."""

    def branch_at(self, node_id: str, branch: str) -> None:
        """Set-up, untimed: a branch whose head is ``node_id``."""

    def history(self, branch: str) -> list[dict[str, Any]]: ...

    def history_json(self, branch: str) -> str: ...

    def fork(self, node_id: str, branch: str) -> None: ...

    def count_rows(self) -> tuple[int, int]:
        """(branch rows, node rows) in the contender's database."""

    def seed_conversation(self, exchanges: Sequence[list[dict[str, Any]]]) -> str:
        """Set-up, untimed: a new conversation holding ``exchanges``; its id."""

    def delete(self, conversation_id: str) -> None: ...

    def size_bytes(self) -> int: ...

    def close(self) -> None: ...


class ConvstoreContender:
    name = "convstore"

    def __init__(self, url: str, size_bytes: Callable[[], int]) -> None:
        self.store = convstore.Store(url)
        self.conv = self.store.create_conversation(model=MODEL)
        self.branches: dict[str, convstore.Conversation] = {"main": self.conv}
        self._size_bytes = size_bytes

    def append(self, steps: list[dict[str, Any]]) -> list[str]:
        return [node.id for node in self.conv.append(steps)]

    def branch_at(self, node_id: str, branch: str) -> None:
        self.branches[branch] = self.conv.fork(at=node_id, branch=branch)

    def before_read(self, branch: str) -> None:
        common.cold(self.branches[branch])

    def history(self, branch: str) -> list[dict[str, Any]]:
        return self.branches[branch].history()

    def history_json(self, branch: str) -> str:
        return self.branches[branch].history_json()

    def fork(self, node_id: str, branch: str) -> None:
        self.conv.fork(at=node_id, branch=branch)

    def seed_conversation(self, exchanges: Sequence[list[dict[str, Any]]]) -> str:
        conv = self.store.create_conversation(model=MODEL)
        for exchange in exchanges:
            conv.append(exchange)
        return conv.id

    def delete(self, conversation_id: str) -> None:
        self.store.delete_conversation(conversation_id)

    def count_rows(self) -> tuple[int, int]:
        with self.store.engine.connect() as conn:
            branches = conn.exec_driver_sql("SELECT count(*) FROM convstore_branches").scalar_one()
            nodes = conn.exec_driver_sql("SELECT count(*) FROM convstore_nodes").scalar_one()
        return int(branches), int(nodes)

    def size_bytes(self) -> int:
        return self._size_bytes()

    def close(self) -> None:
        self.store.close()


class TransactionOnlyDelete:
    """convstore's delete transaction without what ``delete_conversation`` does after it (SQLite: empty and
    truncate the WAL): what a delete cost before the WAL was truncated. Shares the convstore contender's
    store."""

    name = "convstore, transaction only"

    def __init__(self, ours: ConvstoreContender) -> None:
        self.ours = ours

    def seed_conversation(self, exchanges: Sequence[list[dict[str, Any]]]) -> str:
        return self.ours.seed_conversation(exchanges)

    def delete(self, conversation_id: str) -> None:
        run_op(self.ours.store.engine, _ops.delete_conversation(conversation_id), write=True)


def new_id() -> str:
    """A UUIDv7 as 32 hex digits: how SQLAlchemy stores a UUID in SQLite, and valid ``uuid`` input for PG."""
    value = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76
    value = value & ~(0x3 << 62) | 0x2 << 62
    return f"{value:032x}"


def dumps(step: dict[str, Any]) -> str:
    return json.dumps(step, ensure_ascii=False, separators=(",", ":"))


class ConflictError(RuntimeError):
    pass


# The floor's SQL, the same on both backends but for the parameter style and the NULL-safe comparison.
#
# The history query is convstore's recursive CTE (its HISTORY statement), column for column: the floor returns
# the head's id, depth, exchange id and token total with the payloads, as convstore's history operation does.
# Variants measured while writing this, and not consistently faster on either backend: the recursion carrying
# (id, parent_id, depth) only, with the payloads joined in afterwards; and selecting the payloads only.
# Dropping the ORDER BY (the recursion walks head to root, so reversing the rows would do) is faster on
# SQLite, but neither database promises that order, so the floor does not rely on it.
_FLOOR_INSERT_NODES = (
    "INSERT INTO convstore_nodes (conversation_id, id, parent_id, depth, exchange_id, type, token_count, "
    "total_tokens, created_at, payload, segment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_FLOOR_MOVE_HEAD = (
    "UPDATE convstore_branches SET head_id = ?, updated_at = ? "
    "WHERE conversation_id = ? AND name = ? AND head_id IS ?"
)
_FLOOR_INSERT_BRANCH = (
    "INSERT INTO convstore_branches (conversation_id, name, head_id, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
_FLOOR_INSERT_CONVERSATION = "INSERT INTO convstore_conversations (id, created_at, model) VALUES (?, ?, ?)"
_FLOOR_SET_HEAD = "UPDATE convstore_branches SET head_id = ? WHERE conversation_id = ? AND name = ?"
_FLOOR_DELETES = tuple(
    f"DELETE FROM convstore_{table} WHERE {column} = ?"
    for table, column in (
        ("summaries", "conversation_id"),
        ("exchanges", "conversation_id"),
        ("branches", "conversation_id"),
        ("nodes", "conversation_id"),
        ("media", "conversation_id"),
        ("conversations", "id"),
    )
)


class _Floor:
    """The hand-written side; subclasses supply the connection, timestamps and the SQL dialect."""

    name = "floor"

    def __init__(self, size_bytes: Callable[[], int], to_dialect: Callable[[str], str]) -> None:
        self._size_bytes = size_bytes
        self.conversation_id = new_id()
        # What append's compare-and-swap expects (head id, depth, total), and the head's segment.
        self.head: tuple[Any, int, int, Any] = (None, -1, 0, None)
        self.sql_insert_conversation = to_dialect(_FLOOR_INSERT_CONVERSATION)
        self.sql_insert_nodes = to_dialect(_FLOOR_INSERT_NODES)
        self.sql_move_head = to_dialect(_FLOOR_MOVE_HEAD)
        self.sql_insert_branch = to_dialect(_FLOOR_INSERT_BRANCH)
        self.sql_history = to_dialect(common.FLOOR_HISTORY)
        self.sql_set_head = to_dialect(_FLOOR_SET_HEAD)
        self.sql_deletes = [to_dialect(sql) for sql in _FLOOR_DELETES]

    def transaction(self) -> Any:
        raise NotImplementedError

    def seed_conversation(self, exchanges: Sequence[list[dict[str, Any]]]) -> str:
        """A conversation with its main branch and every step, in one transaction (set-up)."""
        main_id, main_head = self.conversation_id, self.head
        self.conversation_id, self.head = new_id(), (None, -1, 0, None)
        try:
            now = self.now()
            rows = []
            for exchange in exchanges:
                rows += self.rows_for(exchange, now)
                last = rows[-1]
                self.head = (last[1], last[3], last[7], last[10])
            cid = self.conversation_id
            with self.transaction():
                self.conn.execute(self.sql_insert_conversation, (cid, now, MODEL))
                self.conn.execute(self.sql_insert_branch, (cid, "main", None, now, now))
                self.conn.cursor().executemany(self.sql_insert_nodes, rows)
                self.conn.execute(self.sql_set_head, (rows[-1][1], cid, "main"))
            return cid
        finally:
            self.conversation_id, self.head = main_id, main_head

    def delete(self, conversation_id: str) -> None:
        with self.transaction():
            for sql in self.sql_deletes:
                self.conn.execute(sql, (conversation_id,))

    def now(self) -> Any:
        raise NotImplementedError

    def history_rows(self, branch: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def rows_for(self, steps: list[dict[str, Any]], now: Any) -> list[tuple[Any, ...]]:
        """The exchange's node rows: JSON text, ids, parent chain, depths, token counts, as convstore's."""
        exchange_id = new_id()
        parent, depth, total, segment = self.head
        rows = []
        for step in steps:
            payload = dumps(step)
            node_id = new_id()
            count = max(1, math.ceil(len(payload) / 4))
            depth += 1
            total += count
            segment = segment or node_id  # one branch, appended at its tip: one segment, the root's
            row = (self.conversation_id, node_id, parent, depth, exchange_id, step["type"], count, total, now)
            rows.append((*row, payload, segment))
            parent = node_id
        return rows

    def history_payloads(self, branch: str) -> tuple[list[str], tuple[Any, ...]]:
        """The stored step texts, root first, and the head they end at (convstore's history operation)."""
        rows = self.history_rows(branch)
        last = rows[-1]
        return [row[5] for row in rows], (str(last[0]), last[2], last[4], str(last[3]))

    def history(self, branch: str) -> list[dict[str, Any]]:
        # One json.loads of the spliced array: faster than a json.loads a payload (measured, both backends).
        payloads, _head = self.history_payloads(branch)
        return json.loads("[" + ",".join(payloads) + "]")  # type: ignore[no-any-return]

    def history_json(self, branch: str) -> str:
        payloads, _head = self.history_payloads(branch)
        return "[" + ",".join(payloads) + "]"

    def branch_at(self, node_id: str, branch: str) -> None:
        self.fork(node_id, branch)

    def fork(self, node_id: str, branch: str) -> None:
        # One statement, so its own transaction (autocommit); the foreign key checks that the node exists.
        now = self.now()
        self.conn.execute(self.sql_insert_branch, (self.conversation_id, branch, node_id, now, now))

    def count_rows(self) -> tuple[int, int]:
        branches = self.conn.execute("SELECT count(*) FROM convstore_branches").fetchone()[0]
        nodes = self.conn.execute("SELECT count(*) FROM convstore_nodes").fetchone()[0]
        return int(branches), int(nodes)

    def size_bytes(self) -> int:
        return self._size_bytes()

    def close(self) -> None:
        self.conn.close()

    conn: Any


class SqliteFloor(_Floor):
    def __init__(self, path: Path, size_bytes: Callable[[], int]) -> None:
        super().__init__(size_bytes, lambda sql: sql)
        # convstore's connection settings. Autocommit mode (no implicit transactions): a write transaction
        # begins with BEGIN IMMEDIATE, as convstore's do; a one-statement read or insert needs no BEGIN.
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA busy_timeout = 30000")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        now = self.now()
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(self.sql_insert_conversation, (self.conversation_id, now, MODEL))
        self.conn.execute(self.sql_insert_branch, (self.conversation_id, "main", None, now, now))
        self.conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def now(self) -> str:
        # SQLAlchemy's SQLite DATETIME text: naive UTC, microseconds always written.
        return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")

    def append(self, steps: list[dict[str, Any]]) -> list[str]:
        now = self.now()
        rows = self.rows_for(steps, now)
        last = rows[-1]
        conn, cid = self.conn, self.conversation_id
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(self.sql_insert_nodes, rows)
            moved = conn.execute(self.sql_move_head, (last[1], now, cid, "main", self.head[0])).rowcount
            if moved == 1:
                conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if moved != 1:
            conn.execute("ROLLBACK")
            raise ConflictError(cid)
        self.head = (last[1], last[3], last[7], last[10])
        return [row[1] for row in rows]

    def history_rows(self, branch: str) -> list[tuple[Any, ...]]:
        cid = self.conversation_id
        return self.conn.execute(self.sql_history, (cid, branch, cid)).fetchall()


class PostgresFloor(_Floor):
    def __init__(self, schema: common.PostgresSchema, size_bytes: Callable[[], int]) -> None:
        super().__init__(size_bytes, common.to_pg)
        # Autocommit: a write runs in ``conn.transaction()`` (BEGIN ... COMMIT); a one-statement read or
        # insert is a transaction of its own.
        self.conn = schema.connect(autocommit=True)
        now = self.now()
        with self.conn.transaction():
            self.conn.execute(self.sql_insert_conversation, (self.conversation_id, now, MODEL))
            self.conn.execute(self.sql_insert_branch, (self.conversation_id, "main", None, now, now))

    def transaction(self) -> Any:
        return self.conn.transaction()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def append(self, steps: list[dict[str, Any]]) -> list[str]:
        now = self.now()
        rows = self.rows_for(steps, now)
        last = rows[-1]
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(self.sql_insert_nodes, rows)  # pipelined by psycopg: one round trip
            cur.execute(self.sql_move_head, (last[1], now, self.conversation_id, "main", self.head[0]))
            if cur.rowcount != 1:
                raise ConflictError(self.conversation_id)
        self.head = (last[1], last[3], last[7], last[10])
        return [row[1] for row in rows]

    def history_rows(self, branch: str) -> list[tuple[Any, ...]]:
        cid = self.conversation_id
        with self.conn.cursor() as cur:
            return cur.execute(self.sql_history, (cid, branch, cid)).fetchall()


# The workloads. convstore and the floor run each operation back to back, alternating which goes first.


def _pair(index: int, contenders: Sequence[Contender]) -> Sequence[Contender]:
    return contenders if index % 2 == 0 else list(reversed(contenders))


def append_summary(samples: list[int]) -> dict[str, Any]:
    tenth = max(1, len(samples) // 10)
    first, last = median_ns(samples[:tenth]), median_ns(samples[-tenth:])
    bounds = [round(len(samples) * i / 10) for i in range(11)]
    return {
        "decile_medians_ns": [median_ns(samples[lo:hi]) for lo, hi in pairwise(bounds)],
        "appends": len(samples),
        "median_ns": median_ns(samples),
        "p95_ns": percentile_ns(samples, 95),
        "p99_ns": percentile_ns(samples, 99),
        "first_10pct_median_ns": first,
        "last_10pct_median_ns": last,
        "growth_last_over_first": last / first,
        "samples_ns": samples,
    }


@dataclass
class BackendRun:
    backend: Backend
    node_ids: dict[str, list[str]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def contenders(self) -> list[Contender]:
        return self.backend.contenders


Exchanges = Sequence[list[dict[str, Any]]]


def run_appends(run: BackendRun, exchanges: Exchanges, size_points: Sequence[int]) -> None:
    samples: dict[str, list[int]] = {c.name: [] for c in run.contenders}
    run.node_ids = {c.name: [] for c in run.contenders}
    sizes: list[dict[str, Any]] = []
    pending = list(size_points)
    steps = 0
    gc.collect()
    for index, exchange in enumerate(exchanges):
        for contender in _pair(index, run.contenders):
            start = now_ns()
            ids = contender.append(exchange)
            samples[contender.name].append(now_ns() - start)
            run.node_ids[contender.name].extend(ids)
        steps += len(exchange)
        if pending and steps >= pending[0]:
            pending.pop(0)
            point: dict[str, Any] = {"steps": steps, **{c.name: c.size_bytes() for c in run.contenders}}
            if run.backend.nodes_stats is not None:
                point["nodes_stats"] = run.backend.nodes_stats()
            sizes.append(point)
    run.results["append"] = {name: append_summary(values) for name, values in samples.items()}
    run.results["size"] = sizes


def run_history(run: BackendRun, sizes: Sequence[int], runs: Sequence[int]) -> None:
    results: list[dict[str, Any]] = []
    for size, repeats in zip(sizes, runs, strict=True):
        branch = "main" if size == len(run.node_ids["convstore"]) else f"history-{size}"
        if branch != "main":
            for contender in run.contenders:
                contender.branch_at(run.node_ids[contender.name][size - 1], branch)
        for method in ("history", "history_json"):
            # Warm-up, and a check that both sides return the same thing.
            outputs = [getattr(contender, method)(branch) for contender in run.contenders]
            if outputs[0] != outputs[1]:
                raise AssertionError(f"{method}() differs between convstore and the floor at {size} steps")
            if method == "history" and len(outputs[0]) != size:
                raise AssertionError(f"history() returned {len(outputs[0])} steps, expected {size}")
            del outputs
            samples: dict[str, list[int]] = {c.name: [] for c in run.contenders}
            gc.collect()
            for index in range(repeats):
                for contender in _pair(index, run.contenders):
                    call = getattr(contender, method)
                    getattr(contender, "before_read", lambda _branch: None)(branch)
                    start = now_ns()
                    call(branch)
                    samples[contender.name].append(now_ns() - start)
            convstore_median, floor_median = median_ns(samples["convstore"]), median_ns(samples["floor"])
            results.append(
                {
                    "method": method,
                    "steps": size,
                    "runs": repeats,
                    "convstore_median_ns": convstore_median,
                    "floor_median_ns": floor_median,
                    "ratio": convstore_median / floor_median,
                    "samples_ns": samples,
                }
            )
    run.results["history"] = results


def run_forks(run: BackendRun, forks: int) -> None:
    samples: dict[str, list[int]] = {c.name: [] for c in run.contenders}
    middle = {name: ids[len(ids) // 2] for name, ids in run.node_ids.items()}
    before = {c.name: c.count_rows() for c in run.contenders}
    gc.collect()
    for index in range(forks):
        for contender in _pair(index, run.contenders):
            start = now_ns()
            contender.fork(middle[contender.name], f"fork-{index:05d}")
            samples[contender.name].append(now_ns() - start)
    after = {c.name: c.count_rows() for c in run.contenders}
    result: dict[str, Any] = {"forks": forks, "at_depth": len(run.node_ids["convstore"]) // 2}
    for name, values in samples.items():
        branch_rows = after[name][0] - before[name][0]
        node_rows = after[name][1] - before[name][1]
        if branch_rows != forks or node_rows != 0:
            raise AssertionError(f"{name}: {forks} forks added {branch_rows} branches and {node_rows} nodes")
        result[name] = {
            "median_ns": median_ns(values),
            "p95_ns": percentile_ns(values, 95),
            "branch_rows_per_fork": branch_rows / forks,
            "node_rows_per_fork": node_rows / forks,
            "samples_ns": values,
        }
    result["ratio"] = result["convstore"]["median_ns"] / result["floor"]["median_ns"]
    run.results["fork"] = result


DELETE_EXCHANGES = 10  # exchanges in each conversation deleted (about 30 steps)


def run_deletes(run: BackendRun, deletes: int, exchanges: Exchanges) -> None:
    ours = next(c for c in run.contenders if isinstance(c, ConvstoreContender))
    contenders: list[Any] = [*run.contenders, TransactionOnlyDelete(ours)]

    def batch(i: int) -> list[list[dict[str, Any]]]:
        return [exchanges[(i * DELETE_EXCHANGES + j) % len(exchanges)] for j in range(DELETE_EXCHANGES)]

    doomed = {c.name: [c.seed_conversation(batch(i)) for i in range(deletes)] for c in contenders}
    run.backend.before_reads()
    samples: dict[str, list[int]] = {c.name: [] for c in contenders}
    gc.collect()
    for index in range(deletes):
        order = contenders[index % len(contenders) :] + contenders[: index % len(contenders)]
        for contender in order:
            start = now_ns()
            contender.delete(doomed[contender.name][index])
            samples[contender.name].append(now_ns() - start)
    floor = median_ns(samples["floor"])
    run.results["delete"] = {
        "deletes": deletes,
        "steps_each": sum(len(e) for e in exchanges[:DELETE_EXCHANGES]),
        **{
            name: {
                "median_ns": median_ns(values),
                "p95_ns": percentile_ns(values, 95),
                "ratio_to_floor": median_ns(values) / floor,
                "samples_ns": values,
            }
            for name, values in samples.items()
        },
    }


def run_backend(backend: Backend, config: Config, exchanges: Exchanges) -> dict[str, Any]:
    run = BackendRun(backend)
    started = time.monotonic()
    run_appends(run, exchanges, config.size_points)
    backend.before_reads()
    run_history(run, config.history_sizes, config.history_runs)
    run_forks(run, config.forks)
    run_deletes(run, config.deletes, exchanges)
    run.results["seconds"] = round(time.monotonic() - started, 1)
    return run.results


# The databases.


def _nothing() -> None:
    return None


@dataclass
class Backend:
    contenders: list[Contender]
    before_reads: Callable[[], None] = _nothing
    # PostgreSQL: (auto)vacuum/analyze counts of each contender's convstore_nodes, sampled at the size points.
    nodes_stats: Callable[[], dict[str, Any]] | None = None


@contextmanager
def open_backend(name: str, postgres_url: str) -> Iterator[Backend]:
    """A fresh database for each contender, both built by convstore's migrations; removed on exit."""
    with ExitStack() as stack:
        if name == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="convstore-bench-")))
            ours = common.SqliteFile(directory / "convstore.db")
            theirs = common.SqliteFile(directory / "floor.db")
            convstore.Store(theirs.url).close()
            backend = Backend(
                [ConvstoreContender(ours.url, ours.size_bytes), SqliteFloor(theirs.path, theirs.size_bytes)]
            )
        else:
            ours_pg = stack.enter_context(common.postgres_schema(postgres_url))
            theirs_pg = stack.enter_context(common.postgres_schema(postgres_url))
            convstore.Store(theirs_pg.url).close()
            schemas = {"convstore": ours_pg, "floor": theirs_pg}

            def before_reads() -> None:
                # Planner statistics for both schemas alike, as autovacuum gathers them in service. This also
                # makes every backend re-plan its cached foreign-key check queries (see the module notes).
                for schema in schemas.values():
                    with schema.connect() as conn:
                        for table in TABLES:
                            conn.execute(f"ANALYZE {table}")

            def nodes_stats() -> dict[str, Any]:
                stats = {name: schema.table_stats("convstore_nodes") for name, schema in schemas.items()}
                return stats | {"other_sessions": ours_pg.other_sessions()}

            backend = Backend(
                [
                    ConvstoreContender(ours_pg.url, lambda: sum(ours_pg.table_sizes().values())),
                    PostgresFloor(theirs_pg, lambda: sum(theirs_pg.table_sizes().values())),
                ],
                before_reads,
                nodes_stats,
            )
        for contender in backend.contenders:
            stack.callback(contender.close)
        yield backend


# Reports.


def _target(ok: bool, value: float, limit: float) -> str:
    return "PASS" if ok else f"MISS (+{(value / limit - 1) * 100:.0f}%)"


def tables_for(backend: str, results: dict[str, Any], mean_step_bytes: float) -> list[TableData]:
    tables = []
    append = results["append"]
    ours, floor = append["convstore"], append["floor"]
    steps = results["size"][-1]["steps"] if results["size"] else None
    rows = []
    for name, data in (("convstore", ours), ("floor", floor)):
        growth = data["growth_last_over_first"]
        rows.append(
            [
                name,
                fmt_ns(data["median_ns"]),
                fmt_ns(data["p95_ns"]),
                fmt_ns(data["first_10pct_median_ns"]),
                fmt_ns(data["last_10pct_median_ns"]),
                fmt_ratio(growth),
                _target(growth <= APPEND_GROWTH_TARGET, growth, APPEND_GROWTH_TARGET),
            ]
        )
    tables.append(
        TableData(
            f"{backend}: append one exchange (2-4 steps) a transaction, {ours['appends']:,} appends to "
            f"{steps:,} steps",
            ["", "median", "p95", "first 10% median", "last 10% median", "last/first", "target <= 1.2"],
            rows,
            f"convstore/floor, median append: {fmt_ratio(ours['median_ns'] / floor['median_ns'])}",
        )
    )
    stats = [point.get("nodes_stats") for point in results["size"]]
    if any(stats):
        counts = {
            name: "/".join(str(point[name].get("autoanalyze_count", "?")) for point in stats if point)
            for name in ("convstore", "floor")
        }
        others = "/".join(str(point.get("other_sessions", "?")) for point in stats if point)
        tables[-1].note += (
            "\nAt each size point: autoanalyze runs on convstore_nodes so far, "
            f"convstore {counts['convstore']}, floor {counts['floor']}; "
            f"other sessions in the database {others}. An ANALYZE, or DDL such as another session's "
            "CREATE/DROP SCHEMA, makes every connection re-plan its foreign-key checks."
        )
    tables.append(
        TableData(
            f"{backend}: append latency over the run, median of each tenth of the appends",
            ["", *(f"{i * 10}-{i * 10 + 10}%" for i in range(10))],
            [
                [name, *(fmt_ns(v) for v in data["decile_medians_ns"])]
                for name, data in (("convstore", ours), ("floor", floor))
            ],
        )
    )
    rows = []
    for entry in results["history"]:
        ratio = entry["ratio"]
        rows.append(
            [
                f"{entry['method']}()",
                f"{entry['steps']:,}",
                str(entry["runs"]),
                fmt_ns(entry["convstore_median_ns"]),
                fmt_ns(entry["floor_median_ns"]),
                fmt_ratio(ratio),
                _target(ratio <= HISTORY_RATIO_TARGET, ratio, HISTORY_RATIO_TARGET),
            ]
        )
    tables.append(
        TableData(
            f"{backend}: history of one branch (median of N runs after a warm-up)",
            ["", "steps", "N", "convstore", "floor", "convstore/floor", "target <= 3x"],
            rows,
            "floor: the same recursive CTE via the raw driver; history() = one json.loads of the spliced "
            "payloads, history_json() = the spliced text",
        )
    )
    fork = results["fork"]
    rows = [
        [
            name,
            fmt_ns(fork[name]["median_ns"]),
            fmt_ns(fork[name]["p95_ns"]),
            f"{fork[name]['branch_rows_per_fork']:g}",
            f"{fork[name]['node_rows_per_fork']:g}",
        ]
        for name in ("convstore", "floor")
    ]
    tables.append(
        TableData(
            f"{backend}: {fork['forks']} forks at depth {fork['at_depth']:,}",
            ["", "median", "p95", "branch rows/fork", "node rows/fork"],
            rows,
            f"convstore/floor, median fork: {fmt_ratio(fork['ratio'])}; floor = one INSERT of a branch row",
        )
    )
    delete = results["delete"]
    rows = [
        [
            name,
            fmt_ns(delete[name]["median_ns"]),
            fmt_ns(delete[name]["p95_ns"]),
            fmt_ratio(delete[name]["ratio_to_floor"]),
        ]
        for name in ("floor", "convstore, transaction only", "convstore")
    ]
    after_over_before = delete["convstore"]["median_ns"] / delete["convstore, transaction only"]["median_ns"]
    tables.append(
        TableData(
            f"{backend}: delete a conversation of {delete['steps_each']} steps, {delete['deletes']} deletes",
            ["", "median", "p95", "/floor"],
            rows,
            "convstore = delete_conversation: the conversation row locked first, then key and rows"
            + (", then the WAL checkpointed and truncated" if backend == "sqlite" else "")
            + "; transaction only = the same delete transaction without what follows it (the cost of a "
            f"delete before the WAL was truncated); delete_conversation / transaction only: "
            f"{fmt_ratio(after_over_before)}",
        )
    )
    rows = []
    previous: dict[str, Any] | None = None
    for point in results["size"]:
        marginal = (
            (point["convstore"] - previous["convstore"]) / (point["steps"] - previous["steps"])
            if previous is not None
            else None
        )
        rows.append(
            [
                f"{point['steps']:,}",
                fmt_bytes(point["convstore"]),
                f"{point['convstore'] / point['steps']:,.0f}",
                "" if marginal is None else f"{marginal:,.0f}",
                fmt_bytes(point["floor"]),
                f"{point['floor'] / point['steps']:,.0f}",
            ]
        )
        previous = point
    measure = (
        "file size after PRAGMA wal_checkpoint(TRUNCATE)"
        if backend == "sqlite"
        else "sum of pg_total_relation_size of the convstore_* tables"
    )
    tables.append(
        TableData(
            f"{backend}: database size ({measure})",
            ["steps", "convstore", "bytes/step", "marginal bytes/step", "floor", "floor bytes/step"],
            rows,
            f"step JSON averages {mean_step_bytes:,.0f} bytes",
        )
    )
    return tables


def write_reports(out: Path, stem: str, report: dict[str, Any], tables: list[TableData]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    lines = [
        *common.report_opening(
            "convstore store benchmarks: convstore against the raw driver (the floor)", report
        ),
        f"Workload: {report['workload']['steps']:,} steps in {report['workload']['exchanges']:,} exchanges "
        f"(seed {report['workload']['seed']}), step JSON {report['workload']['mean_step_bytes']:,.0f} bytes "
        "on average. Each contender has a fresh database built by convstore's migrations; the floor writes "
        "its own conversation into those tables with sqlite3 / psycopg and hand-written SQL, with the same "
        "durability settings, one transaction per exchange. Operations alternate between the two.",
        "",
        *(common.render_markdown(table) for table in tables),
    ]
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return md_path, json_path


def main(argv: Sequence[str] | None = None) -> int:
    args, backends = common.store_args(__doc__, argv)
    config = QUICK if args.quick else FULL

    exchanges = common.conversation_exchanges(config.total_steps, seed=args.seed)
    mean_bytes = common.mean_step_bytes(exchanges)
    report: dict[str, Any] = {
        **common.report_head("bench_store.py", argv, args, backends),
        "config": asdict(config) | {"quick": args.quick},
        "workload": {
            "seed": args.seed,
            "steps": config.total_steps,
            "exchanges": len(exchanges),
            "mean_step_bytes": round(mean_bytes, 1),
        },
        "targets": {
            "append_growth_last_over_first": APPEND_GROWTH_TARGET,
            "history_ratio": HISTORY_RATIO_TARGET,
        },
        "backends": {},
    }
    tables: list[TableData] = []
    for name in backends:
        print(
            f"{name}: {config.total_steps:,} steps, {len(exchanges):,} exchanges", file=sys.stderr, flush=True
        )
        with open_backend(name, args.postgres_url) as backend:
            results = run_backend(backend, config, exchanges)
        report["backends"][name] = results
        backend_tables = tables_for(name, results, mean_bytes)
        tables += backend_tables
        print(f"{name}: done in {results['seconds']} s", file=sys.stderr, flush=True)
        for table in backend_tables:
            print(common.render_text(table))
    md_path, json_path = write_reports(args.out, "store-quick" if args.quick else "store", report, tables)
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
