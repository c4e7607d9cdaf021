"""Throughput: C concurrent clients doing cold turns, convstore against a raw-driver floor doing the same.

    python benchmarks/bench_throughput.py [--backend sqlite|postgres|all] [--quick] [--out benchmarks/results]
        [--shape unicode-1k|ascii-500] [--clients 1,4,16,64]

A server answering many short conversations at once. Each of C clients (1, 4, 16 and 64; 1, 4 and 16 with
``--quick``) does cold turns on conversations of its own, one after the other, as fast as it can: N turns in
all (1,280; 96), N / C a client. A turn is ``bench_turn.py``'s cold turn (``_turns.py``): open the
conversation, build the body, POST it through an ``httpx.MockTransport`` returning a canned reply, record the
reply. Every conversation starts with 10 turns of history (20 steps of the shape, ``unicode-1k`` by default)
and takes at most 4 of the timed turns, so it stays short; a client's conversations are its own.

Systems, each run alone for each C:

- ``Store, threads``: C threads sharing one ``convstore.Store(engine)`` on
  ``sqlalchemy.create_engine(url, pool_size=C, max_overflow=0)`` and one ``InteractionsClient``; a turn is
  ``store.conversation(id)`` then ``conv.send(text, client=client)``.
- ``floor, threads``: C threads, each with its own ``sqlite3`` / ``psycopg`` connection: one indexed scan of
  the payloads, the request spliced from them, the POST, one insert transaction (``_turns.SqliteFloor`` /
  ``PostgresFloor`` on a minimal table of its own).
- ``AsyncStore, tasks``: C asyncio tasks sharing one ``convstore.AsyncStore(engine)`` on
  ``create_async_engine(url, pool_size=C, max_overflow=0)`` (``sqlite+aiosqlite``, ``postgresql+psycopg``)
  and one ``AsyncInteractionsClient``.
- ``floor, tasks``: C tasks, each with its own ``aiosqlite`` / ``psycopg.AsyncConnection``: the same SQL.

Each run: its conversations seeded (untimed; on PostgreSQL the schemas ANALYZEd), one warm-up turn per
client, all at once (the pool's connections opened), then every client starts together and the clock runs
until the last turn is recorded. Reported per C: turns per second (N / that wall time), convstore's over the
floor's, the median (p50) and p99 latency of a turn, the process's CPU time per turn (every thread counted:
the drivers' too), and the 1-minute load average at the run's start and end. The whole set of runs is done R
times (2; 1 with ``--quick``), the systems' order rotated; turns per second is the median of the rounds,
latencies pool every round's turns.

SQLite (WAL, ``synchronous=FULL`` for both): one writer at a time, so concurrency buys overlap of the
reads and the Python work, not write throughput. PostgreSQL: at 64 clients a run holds 64 connections
(plus the seeding's): the server needs ``max_connections`` above that.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _common as common
import aiosqlite
import httpx
import psycopg
import sqlalchemy as sa
from _common import TableData, fmt_ns, fmt_ratio, median_ns, now_ns, percentile_ns
from _turns import (
    INTERACTIONS_URL,
    PG_INSERT,
    PG_SCAN,
    SHAPES,
    SQLITE_INSERT,
    SQLITE_PRAGMAS,
    SQLITE_SCAN,
    UNICODE_1K,
    Convstore,
    FloorTurn,
    PostgresFloor,
    SqliteFloor,
    Wire,
)
from bench_turn import analyze, load_average

import convstore

TARGET_CLIENTS = 16
THROUGHPUT_TARGET = 0.8  # convstore's turns per second over the floor's, at TARGET_CLIENTS
ASYNC_CPU_TARGET = 1.2  # AsyncStore's CPU per turn over Store's
HISTORY_TURNS = 10
TURNS_PER_CONVERSATION = 4  # timed turns a conversation takes at most (the warm-up's besides)
SYSTEMS = ("Store, threads", "floor, threads", "AsyncStore, tasks", "floor, tasks")


@dataclass(frozen=True)
class Config:
    clients: tuple[int, ...]
    turns: int  # timed turns a run, all clients together
    rounds: int


FULL = Config((1, 4, 16, 64), 1_280, 2)
QUICK = Config((1, 4, 16), 96, 1)


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    latencies_ns: list[int]
    load: tuple[float, float]


@dataclass
class Where:
    """A backend's two databases: convstore's (URL) and the floor's (a SQLite file or a schema)."""

    name: str
    url: str
    async_url: str
    floor: Any  # Path or common.PostgresSchema
    schemas: list[common.PostgresSchema] = field(default_factory=list)

    def after_seed(self) -> None:
        if self.schemas:
            analyze(self.schemas)


@contextmanager
def databases(backend: str, postgres_url: str) -> Iterator[Where]:
    with ExitStack() as stack:
        if backend == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="convstore-tput-")))
            url = f"sqlite:///{directory / 'convstore.db'}"
            yield Where(
                backend, url, f"sqlite+aiosqlite:///{directory / 'convstore.db'}", directory / "floor.db"
            )
        else:
            ours = stack.enter_context(common.postgres_schema(postgres_url, "tput"))
            floor = stack.enter_context(common.postgres_schema(postgres_url, "tput"))
            yield Where(backend, ours.url, ours.url, floor, [ours, floor])


# The clients. Each run function takes the keys of every client's conversations and returns the Run.


def _timed(turn: Callable[[str], None], keys: Sequence[str], latencies: list[int]) -> None:
    for key in keys[1:]:
        start = now_ns()
        turn(key)
        latencies.append(now_ns() - start)  # list.append is atomic under the GIL


def run_threads(turns: Sequence[Callable[[str], None]], keys: Sequence[Sequence[str]]) -> Run:
    """One thread per client: its warm-up turn on its first key, then (all together) the rest, timed."""
    clients = len(keys)
    barrier = threading.Barrier(clients + 1)
    latencies: list[int] = []
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            turns[index](keys[index][0])
        except BaseException as error:
            errors.append(error)
            barrier.abort()
            raise
        barrier.wait()
        try:
            _timed(turns[index], keys[index], latencies)
        except BaseException as error:
            errors.append(error)
            raise

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    load_start = load_average()
    with suppress(threading.BrokenBarrierError):
        barrier.wait()
    start, cpu = now_ns(), time.process_time()
    for thread in threads:
        thread.join()
    seconds, cpu_seconds = (now_ns() - start) / 1e9, time.process_time() - cpu
    if errors:
        raise errors[0]
    return Run(seconds, cpu_seconds, latencies, (load_start, load_average()))


async def run_tasks(turns: Sequence[Callable[[str], Awaitable[None]]], keys: Sequence[Sequence[str]]) -> Run:
    """One task per client: the warm-up turns all at once, then the timed turns all at once."""
    await asyncio.gather(*(turn(k[0]) for turn, k in zip(turns, keys, strict=True)))
    latencies: list[int] = []

    async def client(turn: Callable[[str], Awaitable[None]], mine: Sequence[str]) -> None:
        for key in mine[1:]:
            start = now_ns()
            await turn(key)
            latencies.append(now_ns() - start)

    load_start = load_average()
    start, cpu = now_ns(), time.process_time()
    await asyncio.gather(*(client(turn, k) for turn, k in zip(turns, keys, strict=True)))
    seconds, cpu_seconds = (now_ns() - start) / 1e9, time.process_time() - cpu
    return Run(seconds, cpu_seconds, latencies, (load_start, load_average()))


class AsyncFloor(FloorTurn):
    """The floor's turn on the raw async driver: aiosqlite, or psycopg's AsyncConnection."""

    def __init__(self, where: Where, wire: Wire, http: httpx.AsyncClient) -> None:
        super().__init__(wire)
        self.where = where
        self.http = http
        self.text = wire.user_text
        self.conn: Any = None

    async def connect(self) -> None:
        if self.where.name == "sqlite":
            self.conn = await aiosqlite.connect(self.where.floor, isolation_level=None)
            for pragma in SQLITE_PRAGMAS:
                await self.conn.execute(f"PRAGMA {pragma}")
        else:
            schema = self.where.floor
            self.conn = await psycopg.AsyncConnection.connect(
                schema.conninfo, autocommit=True, options=f"-csearch_path={schema.schema}"
            )

    async def _scan(self, key: str) -> list[tuple[Any, ...]]:
        if self.where.name == "sqlite":
            return list(await self.conn.execute_fetchall(SQLITE_SCAN, (key,)))
        async with self.conn.cursor(binary=True) as cur:  # bytea payloads as bytes
            await cur.execute(PG_SCAN, (key,))
            return list(await cur.fetchall())

    async def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self.conn
        if self.where.name == "sqlite":
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.executemany(SQLITE_INSERT, rows)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
            return
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(PG_INSERT, rows)  # pipelined by psycopg

    async def turn(self, key: str) -> None:
        user = self.user(self.text)
        rows = await self._scan(key)
        response = await self.http.post(INTERACTIONS_URL, content=self.body(rows, user), headers=self.headers)
        response.raise_for_status()
        await self._insert(self.new_rows(key, rows, user, response.content))


def _engine_kwargs(clients: int) -> dict[str, Any]:
    return {"pool_size": clients, "max_overflow": 0}


def run_system(system: str, where: Where, wire: Wire, keys: Sequence[Sequence[str]]) -> Run:
    clients = len(keys)
    text = wire.user_text
    if system == "Store, threads":
        engine = sa.create_engine(where.url, **_engine_kwargs(clients))
        ours = Convstore(engine, wire)
        try:

            def store_turn(key: str) -> None:
                ours.store.conversation(key).send(text, client=ours.client)

            return run_threads([store_turn] * clients, keys)
        finally:
            ours.close()
            engine.dispose()
    if system == "floor, threads":
        make = (
            (lambda: SqliteFloor(where.floor, wire, create=False))
            if where.name == "sqlite"
            else (lambda: PostgresFloor(where.floor, wire, create=False))
        )
        floors = [make() for _ in range(clients)]
        try:
            return run_threads([lambda key, f=f: f.turn(key, text, False) for f in floors], keys)
        finally:
            for floor in floors:
                floor.close()
    return asyncio.run(_run_async(system, where, wire, keys))


async def _run_async(system: str, where: Where, wire: Wire, keys: Sequence[Sequence[str]]) -> Run:
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    clients = len(keys)
    text = wire.user_text
    http = httpx.AsyncClient(transport=httpx.MockTransport(wire.handler(system)))
    try:
        if system == "AsyncStore, tasks":
            engine = create_async_engine(where.async_url, **_engine_kwargs(clients))
            store = convstore.AsyncStore(engine)
            client = convstore.AsyncInteractionsClient(api_key="bench", http_client=http)
            try:

                async def store_turn(key: str) -> None:
                    conv = await store.conversation(key)
                    await conv.send(text, client=client)

                return await run_tasks([store_turn] * clients, keys)
            finally:
                await store.aclose()
                await engine.dispose()
        floors = [AsyncFloor(where, wire, http) for _ in range(clients)]
        await asyncio.gather(*(f.connect() for f in floors))
        try:
            return await run_tasks([f.turn for f in floors], keys)
        finally:
            for floor in floors:
                await floor.conn.close()
    finally:
        await http.aclose()


# The runs.


def seed(
    seeder: Any, where: Where, exchanges: list[list[dict[str, Any]]], clients: int, turns: int
) -> list[list[str]]:
    """Each client's conversations: enough for its share of ``turns`` plus its warm-up turn."""
    per_client = turns // clients
    count = 1 + -(-per_client // TURNS_PER_CONVERSATION)
    made = [[seeder.seed(exchanges) for _ in range(count)] for _ in range(clients)]
    where.after_seed()
    # The warm-up on the first; then each conversation in turn, at most TURNS_PER_CONVERSATION times.
    return [[mine[0], *(mine[1 + i % (count - 1)] for i in range(per_client))] for mine in made]


def run_backend(where: Where, config: Config, wire: Wire, seed_value: int) -> dict[str, Any]:
    exchanges = wire.shape.exchanges(2 * HISTORY_TURNS, seed_value)
    ours = Convstore(where.url, wire)
    floor = SqliteFloor(where.floor, wire) if where.name == "sqlite" else PostgresFloor(where.floor, wire)
    runs: dict[int, dict[str, list[Run]]] = {c: {s: [] for s in SYSTEMS} for c in config.clients}
    try:
        for round_index in range(config.rounds):
            for clients in config.clients:
                shift = (round_index + clients) % len(SYSTEMS)
                for system in [*SYSTEMS[shift:], *SYSTEMS[:shift]]:
                    seeder = floor if system.startswith("floor") else ours
                    keys = seed(seeder, where, exchanges, clients, config.turns)
                    print(
                        f"{where.name}: round {round_index + 1}, {clients} clients, {system}",
                        file=sys.stderr,
                        flush=True,
                    )
                    runs[clients][system].append(run_system(system, where, wire, keys))
    finally:
        ours.close()
        floor.close()
    return {"clients": {str(c): summarize(by_system, config.turns) for c, by_system in runs.items()}}


def summarize(by_system: dict[str, list[Run]], turns: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system, runs in by_system.items():
        latencies = [ns for run in runs for ns in run.latencies_ns]
        out[system] = {
            "turns_per_second": statistics.median(turns / run.seconds for run in runs),
            "rounds_turns_per_second": [round(turns / run.seconds, 1) for run in runs],
            "p50_ns": median_ns(latencies),
            "p99_ns": percentile_ns(latencies, 99),
            "cpu_ns_per_turn": statistics.median(run.cpu_seconds / turns for run in runs) * 1e9,
            "load": [run.load for run in runs],
        }
    for ours, theirs in (("Store, threads", "floor, threads"), ("AsyncStore, tasks", "floor, tasks")):
        out[f"{ours} / {theirs}"] = out[ours]["turns_per_second"] / out[theirs]["turns_per_second"]
    out["AsyncStore / Store, CPU per turn"] = (
        out["AsyncStore, tasks"]["cpu_ns_per_turn"] / out["Store, threads"]["cpu_ns_per_turn"]
    )
    return out


# Reports.


def targets_for(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    at = results["clients"].get(str(TARGET_CLIENTS))
    if at is not None:
        for pair in ("Store, threads / floor, threads", "AsyncStore, tasks / floor, tasks"):
            out.append(
                {
                    "target": f"{TARGET_CLIENTS} clients: turns/s {pair} >= {THROUGHPUT_TARGET:g}",
                    "value": at[pair],
                    "met": at[pair] >= THROUGHPUT_TARGET,
                }
            )
    for clients in ("1", str(TARGET_CLIENTS)):
        if clients in results["clients"]:
            value = results["clients"][clients]["AsyncStore / Store, CPU per turn"]
            out.append(
                {
                    "target": f"{clients} clients: CPU per turn AsyncStore / Store <= {ASYNC_CPU_TARGET:g}",
                    "value": value,
                    "met": value <= ASYNC_CPU_TARGET,
                }
            )
    return out


def _load(entry: dict[str, Any]) -> str:
    loads = [x for pair in entry["load"] for x in pair]
    return f"{min(loads):.1f}-{max(loads):.1f}"


def tables_for(backend: str, results: dict[str, Any], config: Config, quick: bool) -> list[TableData]:
    tables = []
    for ours, theirs in (("Store, threads", "floor, threads"), ("AsyncStore, tasks", "floor, tasks")):
        headers = ["clients", f"{ours} turns/s", f"{theirs} turns/s", "convstore/floor"]
        for name in (ours, theirs):
            headers += [f"{name} p50", f"{name} p99", f"{name} CPU/turn"]
        headers.append("load average")
        rows = []
        for clients, entry in results["clients"].items():
            row = [
                clients,
                f"{entry[ours]['turns_per_second']:,.0f}",
                f"{entry[theirs]['turns_per_second']:,.0f}",
                fmt_ratio(entry[f"{ours} / {theirs}"]),
            ]
            for name in (ours, theirs):
                row += [fmt_ns(entry[name][k]) for k in ("p50_ns", "p99_ns", "cpu_ns_per_turn")]
            row.append(f"{_load(entry[ours])} / {_load(entry[theirs])}")
            rows.append(row)
        tables.append(
            TableData(
                f"{backend}: throughput, {ours} against {theirs}",
                headers,
                rows,
                f"{config.turns:,} cold turns a run, {config.rounds} round(s): turns/s the median round, "
                "latencies over every round's turns; CPU/turn: the process's CPU time (all threads) over the "
                "turns; load average: the 1-minute figure at the runs' starts and ends (convstore / floor).",
            )
        )
    rows = [
        [t["target"], fmt_ratio(t["value"]), "PASS" if t["met"] else "MISS"] for t in targets_for(results)
    ]
    title = f"{backend}: targets" + (" (quick sizes: indicative only)" if quick else "")
    tables.append(TableData(title, ["target", "value", "verdict"], rows))
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.store_parser(__doc__)
    parser.add_argument("--shape", choices=tuple(SHAPES), default=UNICODE_1K.key)
    parser.add_argument("--clients", help="comma-separated client counts (default 1,4,16,64; quick 1,4,16)")
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgres") if args.backend == "all" else (args.backend,)
    config = QUICK if args.quick else FULL
    if args.clients:
        config = Config(tuple(int(c) for c in args.clients.split(",")), config.turns, config.rounds)
    if any(config.turns % c for c in config.clients):
        parser.error(f"every client count must divide the turns of a run ({config.turns})")
    shape = SHAPES[args.shape]
    wire = Wire(args.seed, shape)
    report: dict[str, Any] = {
        **common.report_head("bench_throughput.py", argv, args, backends),
        "config": asdict(config) | {"quick": args.quick, "shape": shape.key, "history_turns": HISTORY_TURNS},
        "backends": {},
    }
    tables: list[TableData] = []
    started = time.monotonic()
    for name in backends:
        backend_started = time.monotonic()
        load_start = load_average()
        print(f"{name}: 1-minute load average {load_start}", file=sys.stderr, flush=True)
        with databases(name, args.postgres_url) as where:
            results = run_backend(where, config, wire, args.seed)
        results |= {
            "load_average_start": load_start,
            "load_average_end": load_average(),
            "seconds": round(time.monotonic() - backend_started, 1),
        }
        results["targets"] = targets_for(results)
        report["backends"][name] = results
        backend_tables = tables_for(name, results, config, args.quick)
        tables += backend_tables
        for table in backend_tables:
            print(common.render_text(table))
        print(
            f"{name}: done in {results['seconds']} s; 1-minute load average {load_start} at the start, "
            f"{results['load_average_end']} at the end",
            file=sys.stderr,
            flush=True,
        )
    report["seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "throughput-quick" if args.quick else "throughput"
    json_path, md_path = args.out / f"{stem}.json", args.out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    loads = "; ".join(
        f"{n}: {r['load_average_start']} at its start, {r['load_average_end']} at its end"
        for n, r in report["backends"].items()
    )
    lines = [
        *common.report_opening("convstore throughput: concurrent clients against the floor", report),
        f"Shape `{shape.key}` ({shape.title}); {HISTORY_TURNS} turns of history a conversation, at most "
        f"{TURNS_PER_CONVERSATION} timed turns each. 1-minute load average: {loads}.",
        "",
        *(common.render_markdown(table) for table in tables),
    ]
    md_path.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {md_path} and {json_path} ({report['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
