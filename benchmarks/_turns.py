"""The cold turn's systems, shared by ``bench_turn.py`` and ``bench_throughput.py``: the payload shapes, the
mock API (``Wire``), convstore's turn, the raw-driver floor's and OpenAI Agents'.

A turn, for every system: read the conversation's history, build the request body (the model, the shape's
system instruction, ``store: false`` and the whole history as ``input``), POST it through an
``httpx.MockTransport`` whose handler returns a canned reply, and record the new user step and the reply's
steps. See ``bench_turn.py``'s docstring for each system's turn in detail.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import _common as common
import httpx

import convstore

MODEL = "gemini-3-flash-preview"
BUDGET_TOKENS = 32_000
INTERACTIONS_URL = "https://generativelanguage.googleapis.com/v1beta/interactions"
RESPONSES_URL = "https://api.openai.com/v1/responses"
BULK_STEPS = 4_000  # steps an append when seeding convstore
TAIL_STEPS = 600  # the history's newest steps, appended as the generator's exchanges (a 32k window is ~130)
PEER = "openai-agents"
REPLY_CHARS = 2_000  # the canned reply's text at scale 1

# The ASCII shape's system instruction (about 500 bytes), sent by every system in its body.
SYSTEM_INSTRUCTION = (
    "You are a careful, concise assistant for an engineering team. Answer in plain English, in short "
    "paragraphs. When a question is about code, name the file and the function, show the smallest change "
    "that solves it, and say how to test it. When you call a tool, say why first. When you are unsure, say "
    "so and ask one precise question instead of guessing. Never repeat the question back. Never invent a "
    "reference, a version number or a command-line option. Keep every answer under three hundred words."
)


@dataclass(frozen=True)
class Shape:
    """A payload shape: how the generator's steps are drawn, and the system instruction every turn sends."""

    key: str
    title: str
    ascii_only: bool
    scale: float
    system_instruction: str | None

    def exchanges(self, total_steps: int, seed: int) -> list[list[dict[str, Any]]]:
        return common.conversation_exchanges(
            total_steps, seed=seed, ascii_only=self.ascii_only, scale=self.scale
        )


UNICODE_1K = Shape("unicode-1k", "non-ASCII ~1 KB steps, no system instruction", False, 1.0, None)
ASCII_500 = Shape(
    "ascii-500", "ASCII ~500 B steps, with a system instruction", True, 0.47, SYSTEM_INSTRUCTION
)
SHAPES = {shape.key: shape for shape in (UNICODE_1K, ASCII_500)}


# The wire: one canned reply per API, the request sizes seen.


class Wire:
    """The mock API: a completed interaction (Interactions API) or response (Responses API) of the same
    text, the same bytes every time; remembers the size of the last request body of each system.

    The replies carry no ``usage``: a canned ``total_input_tokens`` would not be the size of what was sent,
    and convstore calibrates its token estimates from it (a fixed 1,000 made the next 32k window about
    three times too big).
    """

    def __init__(self, seed: int, shape: Shape = UNICODE_1K) -> None:
        self.shape = shape
        exchanges = shape.exchanges(40, seed + 1)
        user = next(s for e in exchanges for s in e if s["type"] == "user_input")
        self.user_text: str = user["content"][0]["text"]
        texts = [s["content"][0]["text"] for e in exchanges for s in e if s["type"] == "model_output"]
        reply_text = " ".join(texts)[: round(REPLY_CHARS * shape.scale)]
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
    """``Store(url)`` (or a ``Store`` on an engine of the caller's), the turn ``store.conversation(id)`` +
    ``conv.send``; the shape's system instruction is the conversation's (``create_conversation``).
    ``search_index=False``: the store keeps no full-text index (``Store(search_index=False)``)."""

    name = "convstore"

    def __init__(self, url_or_engine: Any, wire: Wire, *, search_index: bool = True) -> None:
        self.store = convstore.Store(url_or_engine, search_index=search_index)
        self.system_instruction = wire.shape.system_instruction
        self.http = httpx.Client(transport=httpx.MockTransport(wire.handler(self.name)))
        self.client = convstore.InteractionsClient(api_key="bench", http_client=self.http)
        self.budget = convstore.TokenBudget(max_input_tokens=BUDGET_TOKENS)

    def seed(self, exchanges: Sequence[list[dict[str, Any]]]) -> str:
        conv = self.store.create_conversation(model=MODEL, system_instruction=self.system_instruction)
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


def floor_head(shape: Shape) -> bytes:
    """The body's bytes before the history: the model, the shape's system instruction, ``store: false``."""
    settings: dict[str, Any] = {"model": MODEL}
    if shape.system_instruction is not None:
        settings["system_instruction"] = shape.system_instruction
    return dumps_bytes(settings)[:-1] + b',"store":false,"input":['


class FloorTurn:
    """The floor's turn without its I/O: the new user step, the request body, the rows to insert."""

    name = "floor"

    def __init__(self, wire: Wire) -> None:
        self.headers = {"x-goog-api-key": "bench", "content-type": "application/json"}
        self.head = floor_head(wire.shape)

    @staticmethod
    def user(text: str) -> bytes:
        return dumps_bytes({"type": "user_input", "content": [{"type": "text", "text": text}]})

    def body(self, rows: Sequence[tuple[Any, ...]], user: bytes) -> bytes:
        """The request: the history's payloads spliced as they are stored, then the new user step."""
        return b"".join((self.head, b",".join([*(row[2] for row in rows), user]), b"]}"))

    @staticmethod
    def new_rows(
        key: str, rows: Sequence[tuple[Any, ...]], user: bytes, reply: bytes
    ) -> list[tuple[Any, ...]]:
        """The rows of the new user step and the reply's steps, after the history's last row."""
        seq, total, _ = rows[-1]
        answer = json.loads(reply)
        if answer["status"] != "completed":
            raise RuntimeError(answer["status"])
        new = [(user, True), *((dumps_bytes(step), False) for step in answer["steps"])]
        return floor_rows(key, seq, total, new)


class _Floor(FloorTurn):
    conn: Any

    def __init__(self, wire: Wire) -> None:
        super().__init__(wire)
        self.http = httpx.Client(transport=httpx.MockTransport(wire.handler(self.name)))
        self.count = 0
        self.prefix = "floor"  # of the conversation ids this floor's seed makes
        self.sql_scan, self.sql_window, self.sql_insert = _FLOOR_SCAN, _FLOOR_WINDOW, _FLOOR_INSERT

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def seed(self, exchanges: Sequence[list[dict[str, Any]]]) -> str:
        self.count += 1
        cid = f"{self.prefix}-{self.count:06d}"
        payloads = [
            (dumps_bytes(step), i == 0 and step["type"] == "user_input")
            for exchange in exchanges
            for i, step in enumerate(exchange)
        ]
        self.insert(floor_rows(cid, -1, 0, payloads))
        return cid

    def turn(self, key: str, text: str, budgeted: bool) -> None:
        user = self.user(text)
        if budgeted:
            room = BUDGET_TOKENS - floor_tokens(user)
            rows = self.execute(self.sql_window, (key, key, key, room))
        else:
            rows = self.execute(self.sql_scan, (key,))
        response = self.http.post(INTERACTIONS_URL, content=self.body(rows, user), headers=self.headers)
        response.raise_for_status()
        self.insert(self.new_rows(key, rows, user, response.content))

    def close(self) -> None:
        self.conn.close()
        self.http.close()


SQLITE_PRAGMAS = ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = FULL")


class SqliteFloor(_Floor):
    """``sqlite3`` in autocommit, explicit write transactions; ``create``: make the table (the first
    connection to the file)."""

    def __init__(self, path: Path, wire: Wire, *, create: bool = True) -> None:
        super().__init__(wire)
        # autocommit: explicit transactions; any thread (a benchmark's client thread may not be its maker)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in SQLITE_PRAGMAS:
            self.conn.execute(f"PRAGMA {pragma}")
        if create:
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


PG_SCAN, PG_WINDOW, PG_INSERT = (common.to_pg(sql) for sql in (_FLOOR_SCAN, _FLOOR_WINDOW, _FLOOR_INSERT))
SQLITE_SCAN, SQLITE_INSERT = _FLOOR_SCAN, _FLOOR_INSERT


class PostgresFloor(_Floor):
    """psycopg 3 in autocommit, binary results, the insert pipelined in a transaction; ``create``: make the
    table."""

    def __init__(self, schema: common.PostgresSchema, wire: Wire, *, create: bool = True) -> None:
        super().__init__(wire)
        self.conn = schema.connect(autocommit=True)
        if create:
            for ddl in _FLOOR_DDL:
                self.conn.execute(ddl.format(blob="BYTEA"))
        self.sql_scan, self.sql_window, self.sql_insert = PG_SCAN, PG_WINDOW, PG_INSERT

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
        self.settings: dict[str, Any] = {"model": MODEL}
        if wire.shape.system_instruction is not None:  # the Responses API's field for it
            self.settings["instructions"] = wire.shape.system_instruction
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
        body = json.dumps({**self.settings, "input": [*items, new]}, ensure_ascii=False).encode()
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
