"""The cold stateless turn: open the conversation, build the request, POST it, record the reply.

    python benchmarks/bench_turn.py [--backend sqlite|postgres|all] [--quick] [--out benchmarks/results]

What a stateless web service does on every request, through convstore's public API only, beside a peer and
a floor, in one run. Nothing reaches the network: every system POSTs its request body through an
``httpx.MockTransport`` whose handler returns a canned reply (a completed interaction with one
``model_output`` step; for the peer the same text as a Responses-API response), about the size of a generator
exchange together with the new user input.

- convstore: one ``Store(url)`` per process (its engine and pool kept, as a service keeps them), and each
  turn ``store.conversation(id)`` opened anew (nothing cached from the last turn), then
  ``conv.send(text, client=client)`` with ``client = InteractionsClient(api_key=..., http_client=httpx.Client(
  transport=MockTransport(handler)))``. The turn = open + send (body built, POSTed, reply read and recorded).
  Also with ``budget=TokenBudget(max_input_tokens=32000)``.
- openai-agents (when ``agents`` imports; ``pip install -e ".[bench]"``): SQLite ``agents.SQLiteSession``,
  PostgreSQL ``agents.extensions.memory.SQLAlchemySession`` on a ``postgresql+psycopg`` async engine. A turn:
  ``get_items()``, ``json.dumps`` of ``{"model", "input": items + [new item]}``, the POST through an
  ``httpx.AsyncClient`` on the same kind of mock transport, ``json.loads`` of the reply, ``add_items`` of the
  new user item and the reply's output items. The session objects are kept between turns (they cache no
  items). Seeded with the same steps mapped to Responses-API items as ``_peers.openai_items`` maps them. The
  peer has no token budget (its workaround, a full load trimmed in Python, costs at least the unbudgeted
  turn), so it is not in the budgeted table.
- floor: ``sqlite3`` / ``psycopg`` 3 with hand-written SQL on a minimal table of its own
  (``conversation_id, seq`` primary key, the step's token totals, the payload as bytes): one indexed scan of
  the payloads, the request bytes spliced from them without decoding the history, the same POST through
  ``httpx.Client`` on the same mock, ``json.loads`` of the reply, and one insert transaction (``executemany``)
  for the new user step and the reply's steps. Same durability as convstore on SQLite (WAL,
  ``synchronous=FULL``). Budgeted: the first exchange start whose tokens-before fits, found through an index
  on the running token total, then the scan from there (tokens = payload bytes / 4).

History: ``_common.conversation_exchanges`` (seeded), N turns = 2N steps (10, 1,000 and 10,000 turns; 10 and
200 with ``--quick``); budgeted: 1,000, 10,000 and 100,000 steps (1,000 and 5,000). convstore is seeded
through ``conv.append`` with a few thousand steps an exchange (the history's last few hundred steps are
appended as the generator's own exchanges, so a 32k window never reaches a bulk exchange); the peer with one
``add_items`` and the floor with one ``executemany``. Each measured turn adds 2 steps: a size gets as many
identical conversations as keep that growth under about 2% (one a repeat at 10 turns), used in turn. The
systems alternate within each repeat (rotating who goes first), after one warm-up turn each.

On PostgreSQL every table of each system's schema is ANALYZEd after each seeding (autovacuum may be off, as
on the development server): without it, convstore's cold turn at 20,000 steps, after the smaller sizes had
run on the same pool, once sat in its history query for minutes (killed; not root-caused: the same query
EXPLAINed afresh on those tables, statistics or none, walks the primary key).

Also: the SQL statements, transactions and connection checkouts of one convstore cold turn (SQLAlchemy
engine events, counted after the timings), and on SQLite a cProfile of convstore's cold turn.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import json
import math
import pstats
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import _common as common
import httpx
import sqlalchemy as sa
from _common import TableData, fmt_ns, fmt_ratio, median_ns, now_ns, percentile_ns

import convstore
from convstore.store._engine import _fastpath, _runner

MODEL = "gemini-3-flash-preview"
BUDGET_TOKENS = 32_000
INTERACTIONS_URL = "https://generativelanguage.googleapis.com/v1beta/interactions"
RESPONSES_URL = "https://api.openai.com/v1/responses"
BULK_STEPS = 4_000  # steps an append when seeding convstore
TAIL_STEPS = 600  # the history's newest steps, appended as the generator's exchanges (a 32k window is ~130)
MAX_GROWTH = 0.02  # the most the measured turns may grow a conversation (fraction of its steps)
COLD_VS_PEER_TARGET = 3.0  # convstore at least this many times faster than openai-agents, at 1,000 turns
COLD_VS_FLOOR_TARGET = 2.0  # convstore at most this many times the floor, at 1,000 turns
BUDGET_GROWTH_TARGET = 1.5  # budgeted turn at the largest size over the same at 1,000 steps
TARGET_TURNS = 1_000
PEER = "openai-agents"


@dataclass(frozen=True)
class Config:
    turn_sizes: tuple[int, ...]  # turns of history, 2 steps each
    turn_repeats: tuple[int, ...]  # timed turns for each size
    budget_sizes: tuple[int, ...]  # steps of history
    budget_repeats: int
    profile_turns: int  # convstore's cProfile on SQLite: the conversation size in turns
    profile_repeats: int = 10


FULL = Config((10, 1_000, 10_000), (51, 31, 11), (1_000, 10_000, 100_000), 31, 1_000)
QUICK = Config((10, 200), (7, 5), (1_000, 5_000), 5, 200, 3)


# The wire: one canned reply per API, the request sizes seen.


class Wire:
    """The mock API: a completed interaction (Interactions API) or response (Responses API) of the same
    text, the same bytes every time; remembers the size of the last request body of each system.

    The replies carry no ``usage``: a canned ``total_input_tokens`` would not be the size of what was sent,
    and convstore calibrates its token estimates from it (a fixed 1,000 made the next 32k window about
    three times too big).
    """

    def __init__(self, seed: int) -> None:
        exchanges = common.conversation_exchanges(40, seed=seed + 1)
        user = next(s for e in exchanges for s in e if s["type"] == "user_input")
        self.user_text: str = user["content"][0]["text"]
        texts = [s["content"][0]["text"] for e in exchanges for s in e if s["type"] == "model_output"]
        reply_text = " ".join(texts)[:2_000]
        self.interaction = json.dumps(
            {
                "id": "v1_bench",
                "object": "interaction",
                "model": MODEL,
                "status": "completed",
                "created": "2026-06-02T10:15:30Z",
                "updated": "2026-06-02T10:15:33Z",
                "steps": [{"type": "model_output", "content": [{"type": "text", "text": reply_text}]}],
            },
            ensure_ascii=False,
        ).encode()
        self.response = json.dumps(
            {
                "id": "resp_bench",
                "object": "response",
                "model": MODEL,
                "status": "completed",
                "output": [
                    {
                        "type": "message",
                        "id": "msg_bench",
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": reply_text, "annotations": []}],
                    }
                ],
            },
            ensure_ascii=False,
        ).encode()
        self.request_bytes: dict[str, int] = {}

    def handler(self, who: str) -> Callable[[httpx.Request], httpx.Response]:
        headers = {"content-type": "application/json"}

        def handle(request: httpx.Request) -> httpx.Response:
            self.request_bytes[who] = len(request.content)
            body = self.response if request.url.path.endswith("/responses") else self.interaction
            return httpx.Response(200, content=body, headers=headers)

        return handle


def dumps_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# The systems.


class System(Protocol):
    name: str

    def seed(self, exchanges: Sequence[list[dict[str, Any]]]) -> Any:
        """Untimed: a new conversation holding ``exchanges``; its key for ``turn``."""

    def turn(self, key: Any, text: str, budgeted: bool) -> None: ...

    def close(self) -> None: ...


class Convstore:
    name = "convstore"

    def __init__(self, url: str, wire: Wire) -> None:
        self.store = convstore.Store(url)
        self.http = httpx.Client(transport=httpx.MockTransport(wire.handler(self.name)))
        self.client = convstore.InteractionsClient(api_key="bench", http_client=self.http)
        self.budget = convstore.TokenBudget(max_input_tokens=BUDGET_TOKENS)

    def seed(self, exchanges: Sequence[list[dict[str, Any]]]) -> str:
        conv = self.store.create_conversation(model=MODEL)
        total = sum(len(e) for e in exchanges)
        chunk: list[dict[str, Any]] = []
        done = 0
        for exchange in exchanges:
            if done >= total - TAIL_STEPS:
                if chunk:
                    conv.append(chunk)
                    chunk = []
                conv.append(exchange)
            else:
                chunk += exchange
                if len(chunk) >= BULK_STEPS:
                    conv.append(chunk)
                    chunk = []
            done += len(exchange)
        if chunk:
            conv.append(chunk)
        return conv.id

    def turn(self, key: str, text: str, budgeted: bool) -> None:
        conv = self.store.conversation(key)
        conv.send(text, client=self.client, budget=self.budget if budgeted else None)

    def close(self) -> None:
        self.store.close()
        self.http.close()


# The floor: a minimal table of its own. ``total_before`` is the running token total before the step,
# ``total`` after it, ``starts`` 1 on a user_input that opens an exchange (where a window may begin).
_FLOOR_DDL = (
    "CREATE TABLE floor_steps (conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, starts INTEGER NOT NULL, "
    "total_before INTEGER NOT NULL, total INTEGER NOT NULL, payload {blob} NOT NULL, "
    "PRIMARY KEY (conversation_id, seq))",
    "CREATE INDEX floor_steps_window ON floor_steps (conversation_id, total_before, starts, seq)",
)
_FLOOR_SCAN = "SELECT seq, total, payload FROM floor_steps WHERE conversation_id = ? ORDER BY seq"
# total_before grows with seq: the smallest total_before that fits is the earliest exchange start that does.
_FLOOR_WINDOW = """
SELECT seq, total, payload FROM floor_steps WHERE conversation_id = ? AND seq >= (
    SELECT seq FROM floor_steps WHERE conversation_id = ? AND starts = 1 AND total_before >= (
        SELECT total FROM floor_steps WHERE conversation_id = ? ORDER BY seq DESC LIMIT 1
    ) - ? ORDER BY total_before LIMIT 1
) ORDER BY seq
"""
_FLOOR_INSERT = (
    "INSERT INTO floor_steps (conversation_id, seq, starts, total_before, total, payload) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def floor_tokens(payload: bytes) -> int:
    return len(payload) // 4 + 1


def floor_rows(
    cid: str, seq: int, total: int, payloads: Sequence[tuple[bytes, bool]]
) -> list[tuple[Any, ...]]:
    """Rows after the row ``seq`` whose running total is ``total``; ``payloads``: (JSON, starts)."""
    rows = []
    for payload, starts in payloads:
        seq += 1
        after = total + floor_tokens(payload)
        rows.append((cid, seq, int(starts), total, after, payload))
        total = after
    return rows


class _Floor:
    name = "floor"
    conn: Any

    def __init__(self, wire: Wire) -> None:
        self.http = httpx.Client(transport=httpx.MockTransport(wire.handler(self.name)))
        self.headers = {"x-goog-api-key": "bench", "content-type": "application/json"}
        self.head = b'{"model":"' + MODEL.encode() + b'","store":false,"input":['
        self.count = 0
        self.sql_scan, self.sql_window, self.sql_insert = _FLOOR_SCAN, _FLOOR_WINDOW, _FLOOR_INSERT

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def seed(self, exchanges: Sequence[list[dict[str, Any]]]) -> str:
        self.count += 1
        cid = f"floor-{self.count:06d}"
        payloads = [
            (dumps_bytes(step), i == 0 and step["type"] == "user_input")
            for exchange in exchanges
            for i, step in enumerate(exchange)
        ]
        self.insert(floor_rows(cid, -1, 0, payloads))
        return cid

    def turn(self, key: str, text: str, budgeted: bool) -> None:
        user = dumps_bytes({"type": "user_input", "content": [{"type": "text", "text": text}]})
        if budgeted:
            room = BUDGET_TOKENS - floor_tokens(user)
            rows = self.execute(self.sql_window, (key, key, key, room))
        else:
            rows = self.execute(self.sql_scan, (key,))
        seq, total, _ = rows[-1]
        body = b"".join((self.head, b",".join([*(row[2] for row in rows), user]), b"]}"))
        response = self.http.post(INTERACTIONS_URL, content=body, headers=self.headers)
        response.raise_for_status()
        reply = json.loads(response.content)
        if reply["status"] != "completed":
            raise RuntimeError(reply["status"])
        new = [(user, True), *((dumps_bytes(step), False) for step in reply["steps"])]
        self.insert(floor_rows(key, seq, total, new))

    def close(self) -> None:
        self.conn.close()
        self.http.close()


class SqliteFloor(_Floor):
    def __init__(self, path: Path, wire: Wire) -> None:
        super().__init__(wire)
        self.conn = sqlite3.connect(path, isolation_level=None)  # autocommit: explicit transactions
        for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = FULL"):
            self.conn.execute(f"PRAGMA {pragma}")
        for ddl in _FLOOR_DDL:
            self.conn.execute(ddl.format(blob="BLOB"))

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(self.sql_insert, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


class PostgresFloor(_Floor):
    def __init__(self, schema: common.PostgresSchema, wire: Wire) -> None:
        super().__init__(wire)
        self.conn = schema.connect(autocommit=True)
        for ddl in _FLOOR_DDL:
            self.conn.execute(ddl.format(blob="BYTEA"))
        self.sql_scan, self.sql_window, self.sql_insert = (
            common.to_pg(sql) for sql in (_FLOOR_SCAN, _FLOOR_WINDOW, _FLOOR_INSERT)
        )

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        # Binary results: the bytea payloads arrive as bytes, not hex text.
        with self.conn.cursor(binary=True) as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(self.sql_insert, rows)  # pipelined by psycopg


class OpenAIAgents:
    """openai-agents: SQLiteSession on SQLite, SQLAlchemySession (async psycopg engine) on PostgreSQL."""

    name = PEER

    def __init__(self, backend: str, where: Any, wire: Wire) -> None:
        import _peers  # noqa: PLC0415 -- only when the peer runs

        self.openai_items = _peers.openai_items
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(wire.handler(self.name)))
        self.headers = {"authorization": "Bearer bench", "content-type": "application/json"}
        self.backend = backend
        self.where = where  # the SQLite file, or the async engine
        self.sessions: list[Any] = []
        self.counter = [0]
        if backend == "postgres":
            from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

            self.where = create_async_engine(where.url)

    def _session(self, session_id: str) -> Any:
        if self.backend == "sqlite":
            from agents import SQLiteSession  # noqa: PLC0415

            return SQLiteSession(session_id, self.where)
        from agents.extensions.memory import SQLAlchemySession  # noqa: PLC0415

        return SQLAlchemySession(session_id, engine=self.where, create_tables=True)

    def seed(self, exchanges: Sequence[list[dict[str, Any]]]) -> Any:
        session = self._session(f"s{len(self.sessions):06d}")
        self.sessions.append(session)
        items = self.openai_items([step for exchange in exchanges for step in exchange], self.counter)
        self.loop.run_until_complete(session.add_items(items))
        return session

    async def _turn(self, session: Any, text: str) -> None:
        new = {"role": "user", "content": text}
        items = await session.get_items()
        body = json.dumps({"model": MODEL, "input": [*items, new]}, ensure_ascii=False).encode()
        response = await self.http.post(RESPONSES_URL, content=body, headers=self.headers)
        response.raise_for_status()
        reply = json.loads(response.content)
        if reply["status"] != "completed":
            raise RuntimeError(reply["status"])
        await session.add_items([new, *reply["output"]])

    def turn(self, key: Any, text: str, budgeted: bool) -> None:
        if budgeted:
            raise NotImplementedError("openai-agents has no token budget")
        self.loop.run_until_complete(self._turn(key, text))

    def close(self) -> None:
        loop = self.loop
        for session in self.sessions:
            close = getattr(session, "close", None)
            if close is not None:
                result = close()
                if asyncio.iscoroutine(result):
                    loop.run_until_complete(result)
        if self.backend == "postgres":
            loop.run_until_complete(self.where.dispose())
        loop.run_until_complete(self.http.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def peer_available() -> bool:
    try:
        import agents  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


# The databases.


def _nothing() -> None:
    return None


@dataclass
class Backend:
    name: str
    systems: list[Any]
    # After seeding, before the timings: PostgreSQL's planner statistics gathered (ANALYZE), as autovacuum
    # does in service (see the module notes).
    after_seed: Callable[[], None] = _nothing

    @property
    def ours(self) -> Convstore:
        return next(s for s in self.systems if isinstance(s, Convstore))


@contextmanager
def open_backend(name: str, postgres_url: str, wire: Wire, with_peer: bool) -> Iterator[Backend]:
    """Each system in a database of its own (SQLite files in a temporary directory, or new PostgreSQL
    schemas), removed on exit."""
    with ExitStack() as stack:
        systems: list[Any] = []
        schemas: list[common.PostgresSchema] = []
        if name == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="convstore-turn-")))
            systems.append(Convstore(common.SqliteFile(directory / "convstore.db").url, wire))
            if with_peer:
                systems.append(OpenAIAgents(name, directory / "openai_agents.db", wire))
            systems.append(SqliteFloor(directory / "floor.db", wire))
        else:
            ours = stack.enter_context(common.postgres_schema(postgres_url, "turn"))
            systems.append(Convstore(ours.url, wire))
            if with_peer:
                theirs = stack.enter_context(common.postgres_schema(postgres_url, "turn"))
                systems.append(OpenAIAgents(name, theirs, wire))
            floor = stack.enter_context(common.postgres_schema(postgres_url, "turn"))
            systems.append(PostgresFloor(floor, wire))
            schemas = [ours, *([theirs] if with_peer else []), floor]
        for system in systems:
            stack.callback(system.close)
        yield Backend(name, systems, (lambda: analyze(schemas)) if schemas else _nothing)


def analyze(schemas: Sequence[common.PostgresSchema]) -> None:
    """ANALYZE every table of each schema (only these: other schemas of the database are others' work)."""
    for schema in schemas:
        with schema.connect() as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema.schema,)
            ).fetchall()
            for (table,) in tables:
                conn.execute(f'ANALYZE "{table}"')


# The measurements.


def conversations_for(steps: int, repeats: int) -> int:
    """Identical conversations for one size, so the measured turns (2 steps each) grow each one by at most
    about ``MAX_GROWTH``."""
    return max(1, min(repeats, math.ceil(2 * repeats / (MAX_GROWTH * steps))))


def measure(
    backend: Backend,
    systems: Sequence[Any],
    exchanges: Sequence[list[dict[str, Any]]],
    repeats: int,
    wire: Wire,
    budgeted: bool,
) -> dict[str, Any]:
    steps = sum(len(e) for e in exchanges)
    count = conversations_for(steps, repeats)
    started = time.monotonic()
    keys = {s.name: [s.seed(exchanges) for _ in range(count)] for s in systems}
    seed_seconds = time.monotonic() - started
    backend.after_seed()
    for system in systems:  # warm-up, untimed
        system.turn(keys[system.name][0], wire.user_text, budgeted)
    samples: dict[str, list[int]] = {s.name: [] for s in systems}
    request_bytes: dict[str, int] = {}
    gc.collect()
    for index in range(repeats):
        shift = index % len(systems)
        for system in [*systems[shift:], *systems[:shift]]:
            key = keys[system.name][index % count]
            start = now_ns()
            system.turn(key, wire.user_text, budgeted)
            samples[system.name].append(now_ns() - start)
            request_bytes[system.name] = wire.request_bytes[system.name]
    result: dict[str, Any] = {
        "steps": steps,
        "conversations": count,
        "repeats": repeats,
        "seed_seconds": round(seed_seconds, 2),
    }
    for name, values in samples.items():
        result[name] = {
            "median_ns": median_ns(values),
            "p90_ns": percentile_ns(values, 90),
            "request_bytes": request_bytes[name],
            "samples_ns": values,
        }
    ours = result["convstore"]["median_ns"]
    for name in samples:
        if name != "convstore":
            result[f"convstore_over_{name}"] = ours / result[name]["median_ns"]
    return result


def count_statements(ours: Convstore, key: str, wire: Wire, budgeted: bool) -> dict[str, Any]:
    """The SQL statements, transactions and connection checkouts of one cold turn (engine events)."""
    engine = ours.store.engine
    statements: list[str] = []
    counts = {"begin": 0, "commit": 0, "rollback": 0, "checkout": 0}

    def on_statement(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(" ".join(statement.split()))

    def counting(kind: str) -> Callable[..., None]:
        def on_event(*args: Any) -> None:
            counts[kind] += 1

        return on_event

    listeners: list[tuple[Any, str, Callable[..., None]]] = [
        (engine, "before_cursor_execute", on_statement),
        *((engine, kind, counting(kind)) for kind in ("begin", "commit", "rollback")),
        (engine.pool, "checkout", counting("checkout")),
    ]
    # The branch scan goes to psycopg directly on PostgreSQL (binary results), past the engine's events:
    # counted where convstore builds its SQL.
    to_psycopg = _fastpath._psycopg_sql

    def counted_psycopg_sql(conn: Any, step: Any) -> tuple[str, Any]:
        sql, params = to_psycopg(conn, step)
        statements.append("(psycopg, binary) " + " ".join(sql.split()))
        return sql, params

    # A batch goes to psycopg in one pipeline on PostgreSQL (one round trip), past the engine's events too.
    run_batch = _runner.run_batch
    batches = [0]

    def counted_batch(conn: Any, batch: Any) -> Any:
        batches[0] += 1
        if conn.dialect.name == "postgresql":
            statements.extend(f"(pipeline) {type(step.statement).__name__}" for step in batch.statements)
        return run_batch(conn, batch)

    for target, name, fn in listeners:
        sa.event.listen(target, name, fn)
    _fastpath._psycopg_sql = counted_psycopg_sql
    _runner.run_batch = counted_batch
    try:
        ours.turn(key, wire.user_text, budgeted)
    finally:
        _runner.run_batch = run_batch
        _fastpath._psycopg_sql = to_psycopg
        for target, name, fn in listeners:
            sa.event.remove(target, name, fn)
    return {
        "statements": len(statements),
        "batches": batches[0],
        **counts,
        "sql": [s[:160] for s in statements],
    }


def profile_turn(ours: Convstore, key: str, wire: Wire, repeats: int) -> str:
    """cProfile of ``repeats`` cold turns: the top 15 entries by cumulative time."""
    ours.turn(key, wire.user_text, False)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        ours.turn(key, wire.user_text, False)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(15)
    text = out.getvalue()
    return text[text.index("ncalls") :] if "ncalls" in text else text


def run_backend(backend: Backend, config: Config, wire: Wire, seed: int) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {"systems": [s.name for s in backend.systems], "cold": [], "budgeted": []}
    ours = backend.ours
    for turns, repeats in zip(config.turn_sizes, config.turn_repeats, strict=True):
        exchanges = common.conversation_exchanges(2 * turns, seed=seed)
        print(
            f"{backend.name}: cold turn at {turns:,} turns ({2 * turns:,} steps)", file=sys.stderr, flush=True
        )
        entry = measure(backend, backend.systems, exchanges, repeats, wire, budgeted=False)
        entry["turns"] = turns
        if turns == config.profile_turns or turns == max(config.turn_sizes):
            key = ours.seed(exchanges)
            backend.after_seed()
            entry["sql"] = count_statements(ours, key, wire, budgeted=False)
            if turns == config.profile_turns and backend.name == "sqlite":
                results["profile"] = {
                    "turns": turns,
                    "repeats": config.profile_repeats,
                    "top15_cumulative": profile_turn(ours, key, wire, config.profile_repeats),
                }
        results["cold"].append(entry)
    budget_systems = [s for s in backend.systems if s.name != PEER]
    for steps in config.budget_sizes:
        exchanges = common.conversation_exchanges(steps, seed=seed)
        print(f"{backend.name}: budgeted turn at {steps:,} steps", file=sys.stderr, flush=True)
        entry = measure(backend, budget_systems, exchanges, config.budget_repeats, wire, budgeted=True)
        if steps == max(config.budget_sizes):
            key = ours.seed(exchanges)
            backend.after_seed()
            entry["sql"] = count_statements(ours, key, wire, budgeted=True)
        results["budgeted"].append(entry)
        del exchanges
    first, last = results["budgeted"][0], results["budgeted"][-1]
    results["budget_growth"] = {
        "from_steps": first["steps"],
        "to_steps": last["steps"],
        "ratio": last["convstore"]["median_ns"] / first["convstore"]["median_ns"],
    }
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


# Reports.


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _kib(value: float) -> str:
    return f"{value / 1024:,.0f}"


def targets_for(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    at = next((e for e in results["cold"] if e["turns"] == TARGET_TURNS), None)
    if at is not None:
        ours = at["convstore"]["median_ns"]
        where = f"cold turn at {TARGET_TURNS:,} turns"
        speedup = at[PEER]["median_ns"] / ours if PEER in at else None
        out.append(
            {
                "target": f"{where}: {PEER}/convstore >= {COLD_VS_PEER_TARGET:g}",
                "value": speedup,
                "met": None if speedup is None else speedup >= COLD_VS_PEER_TARGET,
            }
        )
        ratio = ours / at["floor"]["median_ns"]
        out.append(
            {
                "target": f"{where}: convstore/floor <= {COLD_VS_FLOOR_TARGET:g}",
                "value": ratio,
                "met": ratio <= COLD_VS_FLOOR_TARGET,
            }
        )
    growth = results["budget_growth"]
    out.append(
        {
            "target": f"budgeted turn: {growth['to_steps']:,} steps / {growth['from_steps']:,} steps "
            f"<= {BUDGET_GROWTH_TARGET:g}",
            "value": growth["ratio"],
            "met": growth["ratio"] <= BUDGET_GROWTH_TARGET,
        }
    )
    return out


def tables_for(backend: str, results: dict[str, Any], quick: bool) -> list[TableData]:
    names = results["systems"]
    has_peer = PEER in names
    tables = []
    headers = ["turns", "steps"]
    for name in names:
        headers += [f"{name} median", f"{name} p90"]
    headers += [*([f"convstore/{PEER}"] if has_peer else []), "convstore/floor"]
    headers += [f"request KiB ({'/'.join(names)})"]
    rows = []
    for entry in results["cold"]:
        row = [f"{entry['turns']:,}", f"{entry['steps']:,}"]
        for name in names:
            row += [fmt_ns(entry[name]["median_ns"]), fmt_ns(entry[name]["p90_ns"])]
        if has_peer:
            row.append(fmt_ratio(entry[f"convstore_over_{PEER}"]))
        row.append(fmt_ratio(entry["convstore_over_floor"]))
        row.append("/".join(_kib(entry[name]["request_bytes"]) for name in names))
        rows.append(row)
    peer_note = (
        f"{PEER}: {'SQLiteSession' if backend == 'sqlite' else 'SQLAlchemySession (async psycopg)'}. "
        if has_peer
        else f'{PEER} skipped: not installed (pip install -e ".[bench]"). '
    )
    repeats = ", ".join(f"{e['repeats']} at {e['turns']:,} turns" for e in results["cold"])
    tables.append(
        TableData(
            f"{backend}: cold stateless turn (open the conversation + build the body + POST + record)",
            headers,
            rows,
            f"Timed turns: {repeats}, after a warm-up. {peer_note}convstore/X < 1: convstore is faster.",
        )
    )
    names_b = [n for n in names if n != PEER]
    headers = ["steps"]
    for name in names_b:
        headers += [f"{name} median", f"{name} p90"]
    headers += ["convstore/floor", f"request KiB ({'/'.join(names_b)})"]
    rows = []
    for entry in results["budgeted"]:
        row = [f"{entry['steps']:,}"]
        for name in names_b:
            row += [fmt_ns(entry[name]["median_ns"]), fmt_ns(entry[name]["p90_ns"])]
        row.append(fmt_ratio(entry["convstore_over_floor"]))
        row.append("/".join(_kib(entry[name]["request_bytes"]) for name in names_b))
        rows.append(row)
    growth = results["budget_growth"]
    tables.append(
        TableData(
            f"{backend}: cold turn with a 32k-token budget (TokenBudget(max_input_tokens=32000))",
            headers,
            rows,
            f"convstore {growth['to_steps']:,} steps / {growth['from_steps']:,} steps: "
            f"{fmt_ratio(growth['ratio'])}. {results['budgeted'][0]['repeats']} timed turns a size. Floor "
            "window: payload bytes / 4 tokens, the earliest exchange start that fits (convstore's default "
            f"'stable' policy keeps a window between its low watermark and the budget). {PEER} has no "
            "token budget: not measured here.",
        )
    )
    rows = [
        [
            t["target"],
            "n/a" if t["value"] is None else fmt_ratio(t["value"]),
            "skipped (peer not installed)" if t["met"] is None else _verdict(t["met"]),
        ]
        for t in targets_for(results)
    ]
    tables.append(
        TableData(
            f"{backend}: targets" + (" (quick sizes: indicative only)" if quick else ""),
            ["target", "value", "verdict"],
            rows,
        )
    )
    rows = []
    for label, entries in (("cold", results["cold"]), ("budgeted", results["budgeted"])):
        for entry in entries:
            sql = entry.get("sql")
            if sql is None:
                continue
            rows.append(
                [
                    f"{label}, {entry['steps']:,} steps",
                    str(sql["statements"]),
                    str(sql.get("batches", 0)),
                    str(sql["begin"]),
                    str(sql["commit"]),
                    str(sql["rollback"]),
                    str(sql["checkout"]),
                ]
            )
    tables.append(
        TableData(
            f"{backend}: what one convstore cold turn runs",
            ["turn", "SQL statements", "batches", "begin", "commit", "rollback", "connection checkouts"],
            rows,
            "statements: before_cursor_execute (BEGIN/COMMIT sent as SQL included), with the scans sent "
            "to psycopg directly and the statements of each batch (on PostgreSQL one psycopg pipeline: "
            "one round trip for the batch); begin/commit/rollback: the engine's transaction events (on "
            "PostgreSQL a read runs in autocommit: its begin and rollback are SQLAlchemy's bookkeeping, "
            "nothing is sent); checkouts: the pool's.",
        )
    )
    return tables


def statements_markdown(backend: str, results: dict[str, Any]) -> list[str]:
    out = []
    for label, entries in (("cold", results["cold"]), ("budgeted", results["budgeted"])):
        for entry in entries:
            sql = entry.get("sql")
            if sql is not None:
                out += [
                    f"#### {backend}: the statements of one {label} turn at {entry['steps']:,} steps",
                    "",
                    *(f"{i}. `{s}`" for i, s in enumerate(sql["sql"], 1)),
                    "",
                ]
    return out


def write_reports(out: Path, stem: str, report: dict[str, Any], tables: list[TableData]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    workload = report["workload"]
    lines = [
        *common.report_opening(
            "convstore cold stateless turn: convstore, openai-agents and the floor",
            report,
            more={"openai-agents": report["peer_version"] or "not installed"},
        ),
        f"History: `_common.conversation_exchanges` (seed {workload['seed']}), step JSON "
        f"{workload['mean_step_bytes']:,.0f} bytes on average; the new user input {workload['user_bytes']:,} "
        f"bytes, the reply's model_output {workload['reply_bytes']:,} bytes. Each system POSTs through an "
        "httpx.MockTransport returning a canned reply; see the script's docstring for each system's turn.",
        "",
        *(common.render_markdown(table) for table in tables),
    ]
    for backend, results in report["backends"].items():
        lines += statements_markdown(backend, results)
        profile = results.get("profile")
        if profile:
            lines += [
                f"#### {backend}: cProfile of {profile['repeats']} convstore cold turns at "
                f"{profile['turns']:,} turns, top 15 by cumulative time",
                "",
                "```text",
                profile["top15_cumulative"].rstrip(),
                "```",
                "",
            ]
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return md_path, json_path


def main(argv: Sequence[str] | None = None) -> int:
    args, backends = common.store_args(__doc__, argv)
    config = QUICK if args.quick else FULL
    wire = Wire(args.seed)
    with_peer = peer_available()
    if not with_peer:
        print(
            f'{PEER} is not installed: the peer is skipped (install it with pip install -e ".[bench]")',
            file=sys.stderr,
            flush=True,
        )
    sample = common.conversation_exchanges(2_000, seed=args.seed)
    reply_step = json.loads(wire.interaction)["steps"][0]
    report: dict[str, Any] = {
        **common.report_head("bench_turn.py", argv, args, backends),
        "peer_version": common.package_version("openai-agents") if with_peer else None,
        "config": asdict(config) | {"quick": args.quick},
        "workload": {
            "seed": args.seed,
            "mean_step_bytes": round(common.mean_step_bytes(sample), 1),
            "user_bytes": len(wire.user_text.encode()),
            "reply_bytes": len(dumps_bytes(reply_step)),
        },
        "targets": {
            "cold_peer_over_convstore_min": COLD_VS_PEER_TARGET,
            "cold_convstore_over_floor_max": COLD_VS_FLOOR_TARGET,
            "budget_growth_max": BUDGET_GROWTH_TARGET,
        },
        "backends": {},
    }
    started = time.monotonic()
    tables: list[TableData] = []
    for name in backends:
        with open_backend(name, args.postgres_url, wire, with_peer) as backend:
            results = run_backend(backend, config, wire, args.seed)
        results["targets"] = targets_for(results)
        report["backends"][name] = results
        backend_tables = tables_for(name, results, args.quick)
        tables += backend_tables
        print(f"{name}: done in {results['seconds']} s", file=sys.stderr, flush=True)
        for table in backend_tables:
            print(common.render_text(table))
        profile = results.get("profile")
        if profile:
            print(f"{name}: cProfile of {profile['repeats']} cold turns at {profile['turns']:,} turns")
            print(profile["top15_cumulative"])
    report["seconds"] = round(time.monotonic() - started, 1)
    md_path, json_path = write_reports(args.out, "turn-quick" if args.quick else "turn", report, tables)
    print(f"wrote {md_path} and {json_path} ({report['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
