"""Many conversations at once: convstore's AsyncStore against the sync Store and the raw async driver.

    python benchmarks/bench_async.py [--backend sqlite|postgres|all] [--quick] [--out benchmarks/results]

The workload: C conversations (50; 20 with ``--quick``), each written by its own asyncio task (or thread job),
E exchanges each (40; 10), one transaction per exchange, all tasks at once; then ``history()`` of every
conversation, R times each (4; 2), all at once. Exchanges come from the shared seeded generator (a different
seed for each conversation, the same for every contender) and every history read is checked against what was
written, after the timing.

Contenders, each with a fresh database built by convstore's migrations (a SQLite file in a temporary
directory, or a new PostgreSQL schema, dropped at the end):

- ``AsyncStore``: ``convstore.AsyncStore(url)`` (SQLite through ``aiosqlite``; PostgreSQL through psycopg 3's
  async connection), one task per conversation, ``await conv.append(exchange)``, ``await conv.history()``.
  Its engine's pool is SQLAlchemy's default (5 kept, 10 more on demand), so at most 15 tasks hold a
  connection at a time.
- ``AsyncStore, pool_size=15`` (a diagnostic of that default): ``AsyncStore(engine)`` on an engine whose
  pool keeps 15 connections and opens no others, so no connection is opened or closed during the timing.
- ``Store, sequential``: the sync ``convstore.Store`` doing the same work in one thread (round robin over the
  conversations).
- ``Store, 8 threads``: the sync ``Store`` with a ``ThreadPoolExecutor(8)``, one job per conversation.
- ``floor, pool 15`` (the reference for the ratios): the raw async driver (``aiosqlite`` /
  ``psycopg.AsyncConnection``) with hand-written SQL, one task per conversation, connections taken from a
  fixed pool of 15 (AsyncStore's cap), opened before the timing. A write is ``BEGIN IMMEDIATE`` (SQLite) /
  ``BEGIN``, the node rows by ``executemany``, a compare-and-swap ``UPDATE`` of the branch head, ``COMMIT``;
  a read is convstore's HISTORY recursive CTE written by hand, then one ``json.loads`` of the spliced
  payloads.
- ``floor, conn per task``: the same with one connection per task (C connections).
- SQLite only, ``floor, pool 15 + write lock``: the pool-15 floor with an ``asyncio.Lock`` around each write
  transaction, so writers queue in-process instead of in SQLite's busy handler (a diagnostic: what
  serialising writers in the application would give).

SQLite: every connection gets convstore's settings (WAL, ``synchronous=FULL``, ``foreign_keys=ON``,
``busy_timeout`` 30 s). SQLite lets one writer in at a time: concurrency cannot add write throughput there,
it can only add lock waits; what concurrency buys on SQLite is reads beside the writer and overlap of the
Python work. On PostgreSQL, concurrent commits share WAL flushes, so more connections can mean more commits a
second.

The whole workload runs ``--rounds`` times (3; 1), on fresh conversations in the same databases, the
contenders in a rotating order; the tables report the median round. Also reported: per-append latency
(median, p95, over every append of every round) and, for convstore's engines, how many new database
connections each phase opened (SQLAlchemy's pool closes overflow connections when they come back), and the
process's CPU time per operation. Last, one extra round of AsyncStore and the pool-15 floor runs under
cProfile (outside the timings): the event loop's time by package, and AsyncStore's top functions.

PostgreSQL: ``CONVSTORE_TEST_POSTGRES_URL`` or ``--postgres-url`` (default the local ``test`` database).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import json
import math
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import _common as common
import aiosqlite
import psycopg
import sqlalchemy as sa
from _common import TableData, fmt_ns, fmt_ratio, median_ns, now_ns, percentile_ns

import convstore

MODEL = "gemini-3-flash-preview"
FLOOR = "floor, pool 15"
POOL_SIZE = 15  # SQLAlchemy's default pool: pool_size 5 + max_overflow 10
THREADS = 8

Work = list[list[list[dict[str, Any]]]]  # conversation -> exchanges -> steps


@dataclass(frozen=True)
class Config:
    conversations: int
    exchanges: int
    read_rounds: int  # history() calls per conversation in the read phase
    rounds: int  # repetitions of the whole workload, on fresh conversations


FULL = Config(conversations=50, exchanges=40, read_rounds=4, rounds=3)
QUICK = Config(conversations=20, exchanges=10, read_rounds=2, rounds=1)


def make_work(config: Config, seed: int) -> Work:
    """E exchanges for each of C conversations; conversation i uses seed + i."""
    return [
        common.conversation_exchanges(4 * config.exchanges, seed=seed + i)[: config.exchanges]
        for i in range(config.conversations)
    ]


# The floor's SQL: as convstore's statements, written by hand (SQLite parameter style; see common.to_pg).

_INSERT_CONVERSATION = "INSERT INTO convstore_conversations (id, created_at, model) VALUES (?, ?, ?)"
_INSERT_BRANCH = (
    "INSERT INTO convstore_branches (conversation_id, name, head_id, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
_INSERT_NODES = (
    "INSERT INTO convstore_nodes (conversation_id, id, parent_id, depth, exchange_id, type, token_count, "
    "total_tokens, created_at, payload, segment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MOVE_HEAD = (
    "UPDATE convstore_branches SET head_id = ?, updated_at = ? "
    "WHERE conversation_id = ? AND name = ? AND head_id IS ?"
)


def new_id() -> str:
    """A UUIDv7 as 32 hex digits: SQLAlchemy's Uuid text in SQLite, and valid ``uuid`` input for PG."""
    value = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76
    value = value & ~(0x3 << 62) | 0x2 << 62
    return f"{value:032x}"


class ConflictError(RuntimeError):
    pass


@dataclass
class FloorConversation:
    id: str
    head: tuple[Any, int, int, Any] = (None, -1, 0, None)  # head id, depth, token total (the CAS), segment


def node_rows(conv: FloorConversation, steps: list[dict[str, Any]], now: Any) -> list[tuple[Any, ...]]:
    """One exchange's rows, as convstore builds them (ids, parent chain, depths, token counts)."""
    exchange_id = new_id()
    parent, depth, total, segment = conv.head
    rows = []
    for step in steps:
        payload = json.dumps(step, ensure_ascii=False, separators=(",", ":"))
        node_id = new_id()
        count = max(1, math.ceil(len(payload) / 4))
        depth += 1
        total += count
        segment = segment or node_id  # one branch, appended at its tip: one segment, the root's
        row = (conv.id, node_id, parent, depth, exchange_id, step["type"], count, total, now, payload)
        rows.append((*row, segment))
        parent = node_id
    return rows


def splice(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return json.loads("[" + ",".join([row[5] for row in rows]) + "]")  # type: ignore[no-any-return]


# The floor's connections: SQLite through aiosqlite, PostgreSQL through psycopg's AsyncConnection.


class SqliteDriver:
    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def now() -> str:
        # SQLAlchemy's SQLite DATETIME text: naive UTC, microseconds always written.
        return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")

    async def connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in (
            "busy_timeout = 30000",
            "foreign_keys = ON",
            "journal_mode = WAL",
            "synchronous = FULL",
        ):
            await conn.execute(f"PRAGMA {pragma}")
        return conn

    async def create(self, conn: aiosqlite.Connection) -> FloorConversation:
        conv = FloorConversation(new_id())
        now = self.now()
        await conn.execute("BEGIN IMMEDIATE")
        await conn.execute(_INSERT_CONVERSATION, (conv.id, now, MODEL))
        await conn.execute(_INSERT_BRANCH, (conv.id, "main", None, now, now))
        await conn.execute("COMMIT")
        return conv

    async def append(self, conn: aiosqlite.Connection, conv: FloorConversation, steps: list[dict]) -> None:
        now = self.now()
        rows = node_rows(conv, steps, now)
        last = rows[-1]
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.executemany(_INSERT_NODES, rows)
            cursor = await conn.execute(_MOVE_HEAD, (last[1], now, conv.id, "main", conv.head[0]))
            moved = cursor.rowcount
            await cursor.close()
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        if moved != 1:
            await conn.execute("ROLLBACK")
            raise ConflictError(conv.id)
        await conn.execute("COMMIT")
        conv.head = (last[1], last[3], last[7], last[10])

    async def history(self, conn: aiosqlite.Connection, conv: FloorConversation) -> list[dict[str, Any]]:
        return splice(await conn.execute_fetchall(common.FLOOR_HISTORY, (conv.id, "main", conv.id)))

    async def close(self, conn: aiosqlite.Connection) -> None:
        await conn.close()


class PostgresDriver:
    def __init__(self, schema: common.PostgresSchema) -> None:
        self.schema = schema
        self.insert_conversation = common.to_pg(_INSERT_CONVERSATION)
        self.insert_branch = common.to_pg(_INSERT_BRANCH)
        self.insert_nodes = common.to_pg(_INSERT_NODES)
        self.move_head = common.to_pg(_MOVE_HEAD)
        self.history_sql = common.to_pg(common.FLOOR_HISTORY)

    @staticmethod
    def now() -> datetime:
        return datetime.now(timezone.utc)

    async def connect(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(
            self.schema.conninfo, autocommit=True, options=f"-csearch_path={self.schema.schema}"
        )

    async def create(self, conn: psycopg.AsyncConnection) -> FloorConversation:
        conv = FloorConversation(new_id())
        now = self.now()
        async with conn.transaction():
            await conn.execute(self.insert_conversation, (conv.id, now, MODEL))
            await conn.execute(self.insert_branch, (conv.id, "main", None, now, now))
        return conv

    async def append(self, conn: psycopg.AsyncConnection, conv: FloorConversation, steps: list[dict]) -> None:
        now = self.now()
        rows = node_rows(conv, steps, now)
        last = rows[-1]
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(self.insert_nodes, rows)  # pipelined by psycopg: one round trip
            await cur.execute(self.move_head, (last[1], now, conv.id, "main", conv.head[0]))
            if cur.rowcount != 1:
                raise ConflictError(conv.id)
        conv.head = (last[1], last[3], last[7], last[10])

    async def history(self, conn: psycopg.AsyncConnection, conv: FloorConversation) -> list[dict[str, Any]]:
        async with conn.cursor() as cur:
            await cur.execute(self.history_sql, (conv.id, "main", conv.id))
            return splice(await cur.fetchall())

    async def close(self, conn: psycopg.AsyncConnection) -> None:
        await conn.close()


Driver = SqliteDriver | PostgresDriver


# The contenders. Each runs a round as: setup (create the conversations, untimed), the write phase and the
# read phase (timed), teardown (untimed).


@dataclass
class Phase:
    seconds: float
    latencies_ns: list[int] = field(default_factory=list)  # per append (write phase only)
    connects: int | None = None  # new connections opened by convstore's engine during the phase
    histories: list[list[dict[str, Any]]] | None = None  # the last read of each conversation
    cpu_seconds: float = 0.0  # process CPU time (every thread: the driver's and the pool's too)


class Contender:
    name: str

    async def setup(self, count: int) -> list[Any]:
        raise NotImplementedError

    async def write(self, convs: list[Any], work: Work) -> Phase:
        raise NotImplementedError

    async def read(self, convs: list[Any], rounds: int) -> Phase:
        raise NotImplementedError

    async def teardown(self) -> None:
        return None

    async def close(self) -> None:
        return None


class _Connects:
    """Counts the connections an engine opens (an event listener on the benchmark's own engine)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "connect", self._on_connect)

    def _on_connect(self, _dbapi_connection: Any, _record: Any) -> None:
        self.count += 1


class AsyncStoreContender(Contender):
    """``AsyncStore(url)``; with ``pool_size``, ``AsyncStore(engine)`` on an engine whose pool keeps that many
    connections and opens no others (a diagnostic of the default pool)."""

    def __init__(self, url: str, pool_size: int | None = None) -> None:
        self.engine = None
        if pool_size is None:
            self.name = "AsyncStore"
            self.store = convstore.AsyncStore(url)
        else:
            from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

            self.name = f"AsyncStore, pool_size={pool_size}"
            parsed = sa.make_url(url)
            if parsed.drivername == "sqlite":
                parsed = parsed.set(drivername="sqlite+aiosqlite")
            self.engine = create_async_engine(parsed, pool_size=pool_size, max_overflow=0)
            self.store = convstore.AsyncStore(self.engine)
        self.connects = _Connects(self.store.engine.sync_engine)

    async def setup(self, count: int) -> list[Any]:
        # Concurrently, which also opens the pool's connections before the timing.
        return list(
            await asyncio.gather(*(self.store.create_conversation(model=MODEL) for _ in range(count)))
        )

    async def write(self, convs: list[Any], work: Work) -> Phase:
        latencies: list[int] = []

        async def task(conv: Any, exchanges: list[list[dict[str, Any]]]) -> None:
            for steps in exchanges:
                start = now_ns()
                await conv.append(steps)
                latencies.append(now_ns() - start)

        before = self.connects.count
        start = now_ns()
        await asyncio.gather(*(task(conv, exchanges) for conv, exchanges in zip(convs, work, strict=True)))
        seconds = (now_ns() - start) / 1e9
        return Phase(seconds, latencies, self.connects.count - before)

    async def read(self, convs: list[Any], rounds: int) -> Phase:
        async def task(conv: Any) -> list[dict[str, Any]]:
            for _ in range(rounds - 1):
                await common.cold(conv).history()
            return await common.cold(conv).history()  # type: ignore[no-any-return]

        before = self.connects.count
        start = now_ns()
        histories = await asyncio.gather(*(task(conv) for conv in convs))
        seconds = (now_ns() - start) / 1e9
        return Phase(seconds, connects=self.connects.count - before, histories=list(histories))

    async def close(self) -> None:
        await self.store.aclose()
        if self.engine is not None:
            await self.engine.dispose()


class SyncStoreContender(Contender):
    """The sync Store, in this thread (``threads`` 0) or on a thread pool; blocking the event loop is fine
    here, nothing else runs while it works."""

    def __init__(self, url: str, threads: int) -> None:
        self.name = f"Store, {threads} threads" if threads else "Store, sequential"
        self.store = convstore.Store(url)
        self.connects = _Connects(self.store.engine)
        self.executor = ThreadPoolExecutor(threads) if threads else None

    def _map(self, function: Callable[..., Any], *iterables: Any) -> list[Any]:
        if self.executor is None:
            return list(map(function, *iterables))
        return list(self.executor.map(function, *iterables))

    async def setup(self, count: int) -> list[Any]:
        return self._map(lambda _: self.store.create_conversation(model=MODEL), range(count))

    async def write(self, convs: list[Any], work: Work) -> Phase:
        latencies: list[int] = []

        def append(conv: Any, steps: list[dict[str, Any]]) -> None:
            start = now_ns()
            conv.append(steps)
            latencies.append(now_ns() - start)  # list.append is atomic under the GIL

        def job(conv: Any, exchanges: list[list[dict[str, Any]]]) -> None:
            for steps in exchanges:
                append(conv, steps)

        before = self.connects.count
        start = now_ns()
        if self.executor is None:
            for index in range(len(work[0])):  # round robin, as the tasks interleave
                for conv, exchanges in zip(convs, work, strict=True):
                    append(conv, exchanges[index])
        else:
            self._map(job, convs, work)
        seconds = (now_ns() - start) / 1e9
        return Phase(seconds, latencies, self.connects.count - before)

    async def read(self, convs: list[Any], rounds: int) -> Phase:
        def job(conv: Any) -> list[dict[str, Any]]:
            for _ in range(rounds - 1):
                conv.history()
            return conv.history()  # type: ignore[no-any-return]

        before = self.connects.count
        start = now_ns()
        if self.executor is None:
            histories: list[Any] = [None] * len(convs)
            for _ in range(rounds):
                histories = [conv.history() for conv in convs]
        else:
            histories = self._map(job, convs)
        seconds = (now_ns() - start) / 1e9
        return Phase(seconds, connects=self.connects.count - before, histories=histories)

    async def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()
        self.store.close()


class FloorContender(Contender):
    """The raw async driver: a fixed pool of ``pool_size`` connections, or one per task (``pool_size``
    None); ``write_lock`` serialises write transactions in-process."""

    def __init__(self, driver: Driver, pool_size: int | None, *, write_lock: bool = False) -> None:
        self.driver = driver
        self.pool_size = pool_size
        self.write_lock = asyncio.Lock() if write_lock else None
        if pool_size is None:
            self.name = "floor, conn per task"
        else:
            self.name = f"floor, pool {pool_size}" + (" + write lock" if write_lock else "")
        self.conns: list[Any] = []
        self.pool: asyncio.Queue[Any] = asyncio.Queue()

    @asynccontextmanager
    async def connection(self, index: int) -> AsyncIterator[Any]:
        if self.pool_size is None:
            yield self.conns[index]
            return
        conn = await self.pool.get()
        try:
            yield conn
        finally:
            self.pool.put_nowait(conn)

    async def setup(self, count: int) -> list[Any]:
        size = count if self.pool_size is None else self.pool_size
        self.conns = list(await asyncio.gather(*(self.driver.connect() for _ in range(size))))
        for conn in self.conns:
            self.pool.put_nowait(conn)
        convs = []
        for _ in range(count):
            convs.append(await self.driver.create(self.conns[0]))
        return convs

    async def write(self, convs: list[Any], work: Work) -> Phase:
        latencies: list[int] = []
        lock = self.write_lock

        async def task(index: int, conv: FloorConversation, exchanges: list[list[dict[str, Any]]]) -> None:
            for steps in exchanges:
                start = now_ns()
                async with self.connection(index) as conn:
                    if lock is None:
                        await self.driver.append(conn, conv, steps)
                    else:
                        async with lock:
                            await self.driver.append(conn, conv, steps)
                latencies.append(now_ns() - start)

        start = now_ns()
        await asyncio.gather(
            *(task(i, conv, exchanges) for i, (conv, exchanges) in enumerate(zip(convs, work, strict=True)))
        )
        return Phase((now_ns() - start) / 1e9, latencies)

    async def read(self, convs: list[Any], rounds: int) -> Phase:
        async def task(index: int, conv: FloorConversation) -> list[dict[str, Any]]:
            history: list[dict[str, Any]] = []
            for _ in range(rounds):
                async with self.connection(index) as conn:
                    history = await self.driver.history(conn, conv)
            return history

        start = now_ns()
        histories = await asyncio.gather(*(task(i, conv) for i, conv in enumerate(convs)))
        return Phase((now_ns() - start) / 1e9, histories=list(histories))

    async def teardown(self) -> None:
        for conn in self.conns:
            await self.driver.close(conn)
        self.conns = []
        self.pool = asyncio.Queue()


# The databases: a fresh one for each contender.


@contextmanager
def databases(backend: str, postgres_url: str, count: int) -> Iterator[list[tuple[str, Driver]]]:
    """``count`` fresh databases, each built by convstore's migrations: (convstore URL, floor driver)."""
    with ExitStack() as stack:
        out: list[tuple[str, Driver]] = []
        if backend == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="convstore-bench-")))
            for index in range(count):
                path = directory / f"async-{index}.db"
                url = f"sqlite:///{path}"
                convstore.Store(url).close()
                out.append((url, SqliteDriver(path)))
        else:
            for _ in range(count):
                schema = stack.enter_context(common.postgres_schema(postgres_url))
                convstore.Store(schema.url).close()
                out.append((schema.url, PostgresDriver(schema)))
        yield out


def contenders_for(backend: str, dbs: list[tuple[str, Driver]]) -> list[Contender]:
    made: list[Contender] = [
        AsyncStoreContender(dbs[0][0]),
        AsyncStoreContender(dbs[1][0], POOL_SIZE),
        SyncStoreContender(dbs[2][0], 0),
        SyncStoreContender(dbs[3][0], THREADS),
        FloorContender(dbs[4][1], POOL_SIZE),
        FloorContender(dbs[5][1], None),
    ]
    if backend == "sqlite":
        made.append(FloorContender(dbs[6][1], POOL_SIZE, write_lock=True))
    return made


def contender_count(backend: str) -> int:
    return 7 if backend == "sqlite" else 6


# The run.


def _check(name: str, histories: list[list[dict[str, Any]]] | None, work: Work) -> None:
    if histories is None or len(histories) != len(work):
        raise AssertionError(f"{name}: read {0 if histories is None else len(histories)} conversations")
    for index, (history, exchanges) in enumerate(zip(histories, work, strict=True)):
        if history != [step for steps in exchanges for step in steps]:
            raise AssertionError(f"{name}: conversation {index}'s history differs from what was written")


async def run_round(contender: Contender, config: Config, work: Work) -> tuple[Phase, Phase]:
    convs = await contender.setup(config.conversations)
    gc.collect()
    cpu = time.process_time()
    write = await contender.write(convs, work)
    write.cpu_seconds = time.process_time() - cpu
    gc.collect()
    cpu = time.process_time()
    read = await contender.read(convs, config.read_rounds)
    read.cpu_seconds = time.process_time() - cpu
    await contender.teardown()
    _check(contender.name, read.histories, work)
    return write, read


# Where the event loop's time goes: cProfile's own time per function (the main thread only: aiosqlite's and
# the thread pools' threads are not seen), summed by package.

_PACKAGES = (
    ("/convstore/", "convstore"),
    ("/sqlalchemy/", "sqlalchemy"),
    ("/psycopg/", "psycopg"),
    ("/aiosqlite/", "aiosqlite"),
    ("/asyncio/", "asyncio"),
    ("/json/", "json"),
    ("/cattrs/", "cattrs"),
    ("/attr/", "attrs"),
    ("bench_async.py", "the floor's code"),
)
IDLE = "(idle: waiting in epoll)"


def _package(filename: str, function: str) -> str:
    if filename == "~":  # a C function
        if "epoll" in function:
            return IDLE
        if "greenlet" in function:
            return "greenlet"
        return "(C functions, other)"
    path = filename.replace("\\", "/")
    return next((name for marker, name in _PACKAGES if marker in path), "(stdlib, other)")


def _by_package(profile: cProfile.Profile, per: int) -> dict[str, float]:
    """Own time in ms per operation (exchange or history), summed by package."""
    totals: dict[str, float] = {}
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        package = _package(filename, function)
        totals[package] = totals.get(package, 0.0) + tottime * 1e3 / per
    return totals


def _where(filename: str, line: int, function: str) -> str:
    """A profile entry's name with a short path: ``sqlalchemy/engine/base.py:1813(_execute_context)``."""
    if filename == "~":
        return function
    path = filename.replace("\\", "/")
    for marker in ("site-packages/", "/lib/python3.", str(common.REPO) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3.":
                path = path.split("/", 1)[1]
            break
    return f"{path}:{line}({function})"


def _top(profile: cProfile.Profile, per: int, packages: set[str] | None, limit: int) -> str:
    """The functions with the most own time (ms per operation), of ``packages`` only when given.

    (Cumulative times mean nothing for coroutines, which cProfile sees return at every ``await``.)
    """
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    entries = [
        (nc, tottime, _where(*key))
        for key, (_cc, nc, tottime, _ct, _callers) in stats.items()
        if packages is None or _package(key[0], key[2]) in packages
    ]
    entries.sort(key=lambda entry: entry[1], reverse=True)
    lines = [f"{'calls':>8} {'ms/op':>8}  function"]
    lines += [f"{nc:>8} {own * 1e3 / per:>8.3f}  {name}" for nc, own, name in entries[:limit]]
    return "\n".join(lines)


async def profile_round(contenders: list[Contender], config: Config, work: Work) -> dict[str, Any]:
    """One more round of AsyncStore and the floor under cProfile (not in the timings above)."""
    out: dict[str, Any] = {}
    exchanges = config.conversations * config.exchanges
    histories = config.conversations * config.read_rounds
    for contender in contenders:
        if contender.name not in ("AsyncStore", FLOOR):
            continue
        convs = await contender.setup(config.conversations)
        gc.collect()
        write_profile = cProfile.Profile()
        write_profile.enable()
        await contender.write(convs, work)
        write_profile.disable()
        gc.collect()
        read_profile = cProfile.Profile()
        read_profile.enable()
        read = await contender.read(convs, config.read_rounds)
        read_profile.disable()
        await contender.teardown()
        _check(contender.name, read.histories, work)
        out[contender.name] = {
            "write_ms_per_exchange": _by_package(write_profile, exchanges),
            "read_ms_per_history": _by_package(read_profile, histories),
        }
        if contender.name == "AsyncStore":
            packages = {"convstore", "sqlalchemy", "cattrs", "attrs"}
            out["asyncstore_write_top"] = _top(write_profile, exchanges, packages, 16)
            out["asyncstore_read_top"] = _top(read_profile, histories, None, 16)
    return out


async def run_backend(
    backend: str, dbs: list[tuple[str, Driver]], config: Config, work: Work
) -> dict[str, Any]:
    started = time.monotonic()
    contenders = contenders_for(backend, dbs)
    rounds: list[dict[str, Any]] = []
    latencies: dict[str, list[int]] = {c.name: [] for c in contenders}
    try:
        for round_index in range(config.rounds):
            shift = round_index % len(contenders)
            order = contenders[shift:] + contenders[:shift]
            result: dict[str, Any] = {"order": [c.name for c in order]}
            for contender in order:
                write, read = await run_round(contender, config, work)
                latencies[contender.name] += write.latencies_ns
                result[contender.name] = {
                    "write_seconds": write.seconds,
                    "read_seconds": read.seconds,
                    "write_cpu_seconds": write.cpu_seconds,
                    "read_cpu_seconds": read.cpu_seconds,
                    "write_connects": write.connects,
                    "read_connects": read.connects,
                }
                print(
                    f"{backend}: round {round_index + 1}, {contender.name}: write {write.seconds:.2f} s, "
                    f"read {read.seconds:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
            rounds.append(result)
        profile = await profile_round(contenders, config, work)
    finally:
        for contender in contenders:
            await contender.close()
    exchanges = config.conversations * config.exchanges
    histories = config.conversations * config.read_rounds
    summary: dict[str, Any] = {}
    for contender in contenders:
        per_round = [r[contender.name] for r in rounds]
        write_s = statistics.median(r["write_seconds"] for r in per_round)
        read_s = statistics.median(r["read_seconds"] for r in per_round)
        summary[contender.name] = {
            "write_median_seconds": write_s,
            "read_median_seconds": read_s,
            "exchanges_per_second": exchanges / write_s,
            "histories_per_second": histories / read_s,
            "write_cpu_ms_per_exchange": statistics.median(r["write_cpu_seconds"] for r in per_round)
            * 1e3
            / exchanges,
            "read_cpu_ms_per_history": statistics.median(r["read_cpu_seconds"] for r in per_round)
            * 1e3
            / histories,
            "append_median_ns": median_ns(latencies[contender.name]),
            "append_p95_ns": percentile_ns(latencies[contender.name], 95),
            "append_max_ns": float(max(latencies[contender.name])),
            "write_connects_per_round": [r["write_connects"] for r in per_round],
            "read_connects_per_round": [r["read_connects"] for r in per_round],
        }
    for data in summary.values():
        data["write_time_vs_floor"] = data["write_median_seconds"] / summary[FLOOR]["write_median_seconds"]
        data["read_time_vs_floor"] = data["read_median_seconds"] / summary[FLOOR]["read_median_seconds"]
    return {
        "rounds": rounds,
        "summary": summary,
        "profile": profile,
        "seconds": round(time.monotonic() - started, 1),
    }


# Reports.


def _connects(values: list[int | None]) -> str:
    return "" if all(v is None for v in values) else "/".join(str(v) for v in values)


def tables_for(backend: str, results: dict[str, Any], config: Config) -> list[TableData]:
    summary = results["summary"]
    exchanges = config.conversations * config.exchanges
    histories = config.conversations * config.read_rounds
    writes = TableData(
        f"{backend}: {config.conversations} conversations x {config.exchanges} exchanges written at once "
        f"({exchanges:,} transactions; median of {config.rounds} round(s))",
        [
            "",
            "wall",
            "exchanges/s",
            "time vs floor",
            "CPU/exchange",
            "append median",
            "append p95",
            "append max",
            "new conns",
        ],
        [
            [
                name,
                f"{data['write_median_seconds']:.2f} s",
                f"{data['exchanges_per_second']:,.0f}",
                fmt_ratio(data["write_time_vs_floor"]),
                f"{data['write_cpu_ms_per_exchange']:.2f} ms",
                fmt_ns(data["append_median_ns"]),
                fmt_ns(data["append_p95_ns"]),
                fmt_ns(data["append_max_ns"]),
                _connects(data["write_connects_per_round"]),
            ]
            for name, data in summary.items()
        ],
        f"time vs floor = wall time / the wall time of '{FLOOR}' (the same work through the raw async driver "
        "and a fixed pool of 15 connections, AsyncStore's cap); CPU = this process's CPU time (all threads) "
        "over the phase, per exchange; append latency over every append of every round, waiting for a "
        "connection or the lock included; new conns = connections convstore's engine opened during the "
        "phase, per round",
    )
    reads = TableData(
        f"{backend}: history() of every conversation, {config.read_rounds} times each, at once "
        f"({histories:,} reads of ~{3 * config.exchanges} steps; median of {config.rounds} round(s))",
        ["", "wall", "histories/s", "time vs floor", "CPU/history", "new conns"],
        [
            [
                name,
                f"{data['read_median_seconds']:.2f} s",
                f"{data['histories_per_second']:,.0f}",
                fmt_ratio(data["read_time_vs_floor"]),
                f"{data['read_cpu_ms_per_history']:.2f} ms",
                _connects(data["read_connects_per_round"]),
            ]
            for name, data in summary.items()
        ],
        "floor read = convstore's HISTORY recursive CTE, hand-written, + one json.loads of the spliced "
        "payloads; every read checked against what was written",
    )
    profile = results["profile"]
    ours, floor = profile["AsyncStore"], profile[FLOOR]
    packages = sorted(
        set(ours["write_ms_per_exchange"]) | set(floor["write_ms_per_exchange"]),
        key=lambda name: (name == IDLE, -ours["write_ms_per_exchange"].get(name, 0.0)),
    )

    def cell(data: dict[str, float], name: str) -> str:
        return f"{data.get(name, 0.0):.3f}"

    rows = [
        [
            name,
            cell(ours["write_ms_per_exchange"], name),
            cell(floor["write_ms_per_exchange"], name),
            cell(ours["read_ms_per_history"], name),
            cell(floor["read_ms_per_history"], name),
        ]
        for name in packages
    ]
    busy = [
        sum(v for k, v in data.items() if k != IDLE)
        for data in (
            ours["write_ms_per_exchange"],
            floor["write_ms_per_exchange"],
            ours["read_ms_per_history"],
            floor["read_ms_per_history"],
        )
    ]
    rows.append(["busy total (idle excluded)", *(f"{v:.3f}" for v in busy)])
    profile_table = TableData(
        f"{backend}: the event loop's time by package, ms per operation (cProfile own time, one extra round)",
        ["", "AsyncStore write", "floor write", "AsyncStore read", "floor read"],
        rows,
        "main thread only (aiosqlite's threads, where SQLite itself runs, are not seen); cProfile's overhead "
        "inflates call-heavy code",
    )
    return [writes, reads, profile_table]


def profile_markdown(backend: str, results: dict[str, Any]) -> str:
    profile = results["profile"]
    return "\n".join(
        [
            f"### {backend}: AsyncStore under cProfile (the extra round)",
            "",
            "Write phase, convstore / SQLAlchemy / cattrs / attrs functions by own time, ms per exchange:",
            "",
            "```",
            profile["asyncstore_write_top"],
            "```",
            "",
            "Read phase, all functions by own time, ms per history:",
            "",
            "```",
            profile["asyncstore_read_top"],
            "```",
            "",
        ]
    )


def write_reports(
    out: Path, stem: str, report: dict[str, Any], tables: list[tuple[str, list[TableData]]]
) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    workload = report["workload"]
    lines = [
        *common.report_opening(
            "convstore async benchmarks: many conversations at once, against the raw async driver "
            "(the floor)",
            report,
        ),
        f"Workload: {workload['conversations']} conversations, {workload['exchanges']} exchanges each "
        f"({workload['steps']:,} steps, step JSON {workload['mean_step_bytes']:,.0f} bytes on average; "
        f"seeds {workload['seed']} + conversation index), one transaction per exchange, written by "
        f"{workload['conversations']} concurrent tasks (or by one thread, or {THREADS} threads, for the "
        "sync Store); then every conversation's history read "
        f"{workload['read_rounds']} times, all at once. Each contender has a fresh database built by "
        "convstore's migrations; SQLite connections all run WAL, synchronous=FULL, foreign_keys=ON.",
        "",
        "SQLite admits one writer at a time, so on SQLite the write numbers measure how well each contender "
        "queues for that one lock (and how long SQLite's busy handler sleeps between retries), not parallel "
        "writing; reads run beside the writer under WAL. On PostgreSQL concurrent commits share WAL flushes.",
        "",
    ]
    for backend, backend_tables in tables:
        lines += [common.render_markdown(table) for table in backend_tables]
        lines.append(profile_markdown(backend, report["backends"][backend]))
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return md_path, json_path


def main(argv: Sequence[str] | None = None) -> int:
    args, backends = common.store_args(__doc__, argv)
    config = QUICK if args.quick else FULL

    work = make_work(config, args.seed)
    report: dict[str, Any] = {
        **common.report_head(
            "bench_async.py", argv, args, backends, aiosqlite=common.package_version("aiosqlite")
        ),
        "config": asdict(config) | {"quick": args.quick, "threads": THREADS, "floor_pool": POOL_SIZE},
        "workload": {
            "seed": args.seed,
            "conversations": config.conversations,
            "exchanges": config.exchanges,
            "read_rounds": config.read_rounds,
            "steps": sum(len(steps) for exchanges in work for steps in exchanges),
            "mean_step_bytes": round(common.mean_step_bytes([s for ex in work for s in ex]), 1),
        },
        "backends": {},
    }
    tables: list[tuple[str, list[TableData]]] = []
    for name in backends:
        print(
            f"{name}: {config.conversations} conversations x {config.exchanges} exchanges, "
            f"{config.rounds} round(s)",
            file=sys.stderr,
            flush=True,
        )
        with databases(name, args.postgres_url, contender_count(name)) as dbs:
            results = asyncio.run(run_backend(name, dbs, config, work))
        report["backends"][name] = results
        backend_tables = tables_for(name, results, config)
        tables.append((name, backend_tables))
        print(f"{name}: done in {results['seconds']} s", file=sys.stderr, flush=True)
        for table in backend_tables:
            print(common.render_text(table))
    md_path, json_path = write_reports(args.out, "async-quick" if args.quick else "async", report, tables)
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
