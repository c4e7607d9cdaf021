"""Shared by the benchmarks: a deterministic conversation generator, timing statistics, backends, reports.

Run a benchmark as a script from the repository root (``python benchmarks/bench_store.py``); importing this
module puts the repository root on ``sys.path`` so ``convstore`` imports from the source tree.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

__all__ = [
    "APPLICATION_NAME",
    "DEFAULT_POSTGRES_URL",
    "DEFAULT_SEED",
    "POSTGRES_ENV",
    "REPO",
    "PostgresSchema",
    "SqliteFile",
    "TableData",
    "conversation_exchanges",
    "fmt_bytes",
    "fmt_ns",
    "fmt_ratio",
    "machine_info",
    "median_ns",
    "now_ns",
    "percentile_ns",
    "postgres_schema",
    "render_markdown",
    "render_text",
]

POSTGRES_ENV = "CONVSTORE_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_SEED = 20260520
APPLICATION_NAME = "convstore-bench"

now_ns = time.perf_counter_ns


# A deterministic conversation.

_VOCABULARY = (
    "the of and to in is that for it as with on be by this are from at or an was which can not but all "
    "function result value table index query branch history model token window stream request response "
    "latency budget cursor schema commit rollback replica shard payload thought signature summary "
    "forecast weather city temperature pressure humidity wind rain snow cloud sunny tomorrow yesterday "
    "Python SQLite PostgreSQL JSON UTF-8 ASCII café naïve résumé Zürich São_Paulo 東京 北京 Ελλάδα Київ "
    "because however therefore although meanwhile instead perhaps certainly probably usually rarely"
)
_WORDS = _VOCABULARY.split()
# The ASCII payload shape: the same vocabulary without its non-ASCII words (one byte a character).
_ASCII_WORDS = tuple(word for word in _WORDS if word.isascii())

_FUNCTIONS = ("get_weather", "search_documents", "run_sql", "read_file", "send_email")


@dataclass(frozen=True)
class _Style:
    """The payload shape: the vocabulary, and a factor on every text's and signature's length."""

    words: Sequence[str] = tuple(_WORDS)
    scale: float = 1.0

    def size(self, rng: random.Random, low: int, high: int) -> int:
        chars = rng.randint(low, high)
        return chars if self.scale == 1.0 else max(1, round(chars * self.scale))


def _text(rng: random.Random, chars: int, words: Sequence[str] = _WORDS) -> str:
    """Sentences of about ``chars`` characters from a fixed vocabulary (some of it non-ASCII)."""
    out: list[str] = []
    size = 0
    sentence = 0
    while size < chars:
        word = rng.choice(words)
        if sentence == 0:
            word = word.capitalize()
        sentence += 1
        if sentence > rng.randint(6, 18):
            word += "."
            sentence = 0
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def _signature(rng: random.Random, chars: int) -> str:
    return base64.b64encode(rng.randbytes(chars * 3 // 4)).decode("ascii")


def _user_input(rng: random.Random, style: _Style) -> dict[str, Any]:
    text = _text(rng, style.size(rng, 150, 1500), style.words)
    return {"type": "user_input", "content": [{"type": "text", "text": text}]}


def _thought(rng: random.Random, style: _Style) -> dict[str, Any]:
    return {
        "type": "thought",
        "signature": _signature(rng, style.size(rng, 200, 700)),
        "summary": [{"type": "text", "text": _text(rng, style.size(rng, 150, 600), style.words)}],
    }


def _model_output(rng: random.Random, style: _Style) -> dict[str, Any]:
    text = _text(rng, style.size(rng, 400, 2800), style.words)
    return {"type": "model_output", "content": [{"type": "text", "text": text}]}


def _function_call(rng: random.Random, call_id: str, style: _Style) -> dict[str, Any]:
    name = rng.choice(_FUNCTIONS)
    arguments: dict[str, Any] = {
        "query": _text(rng, style.size(rng, 20, 120), style.words),
        "limit": rng.randint(1, 50),
        "options": {"exact": rng.random() < 0.5, "language": rng.choice(["en", "fr", "ja"])},
    }
    return {"type": "function_call", "id": call_id, "name": name, "arguments": arguments}


def _function_result(rng: random.Random, call: dict[str, Any], style: _Style) -> dict[str, Any]:
    if rng.random() < 0.5:
        result: Any = _text(rng, style.size(rng, 200, 1500), style.words)
    else:
        result = {
            "rows": [
                {
                    "id": rng.randint(1, 10**6),
                    "title": _text(rng, 30, style.words),
                    "score": round(rng.random(), 4),
                }
                for _ in range(max(1, round(rng.randint(2, 14) * style.scale)))
            ],
            "truncated": rng.random() < 0.2,
        }
    return {"type": "function_result", "call_id": call["id"], "name": call["name"], "result": result}


def conversation_exchanges(
    total_steps: int, *, seed: int = DEFAULT_SEED, ascii_only: bool = False, scale: float = 1.0
) -> list[list[dict[str, Any]]]:
    """Exchanges of 2 to 4 steps, ``total_steps`` steps in all, the same for a given seed.

    An exchange starts with the user's turn (``user_input``, or a ``function_result`` answering the model's
    last ``function_call``) and goes on with the model's reply: an optional ``thought`` (signature and
    summary), then ``model_output`` text and/or a ``function_call``. The JSON averages about 1 KB a step,
    some of its words non-ASCII. ``ascii_only`` draws only the vocabulary's ASCII words; ``scale``
    multiplies every text's and signature's length (``ascii_only=True, scale=0.45``: ASCII steps of about
    500 bytes, ``ASCII_SMALL``).
    """
    if total_steps < 2:
        raise ValueError("a conversation needs at least 2 steps")
    style = _Style(_ASCII_WORDS, scale) if ascii_only else _Style(scale=scale)
    rng = random.Random(seed)
    exchanges: list[list[dict[str, Any]]] = []
    pending_call: dict[str, Any] | None = None
    remaining = total_steps
    calls = 0
    while remaining:
        size = remaining if remaining <= 4 else rng.choice((2, 3, 3, 4))
        if remaining - size == 1:
            size = size + 1 if size < 4 else size - 1
        first = (
            _user_input(rng, style) if pending_call is None else _function_result(rng, pending_call, style)
        )
        steps = [first]
        if size >= 3:
            steps.append(_thought(rng, style))
        ends_with_call = rng.random() < 0.3
        if size == 4 or not ends_with_call:
            steps.append(_model_output(rng, style))
        if size == 4 or ends_with_call:
            calls += 1
            steps.append(_function_call(rng, f"call_{calls:06d}", style))
        steps = steps[:size]
        pending_call = steps[-1] if steps[-1]["type"] == "function_call" else None
        exchanges.append(steps)
        remaining -= size
    return exchanges


def mean_step_bytes(exchanges: Sequence[Sequence[dict[str, Any]]]) -> float:
    """Average compact UTF-8 JSON size of a step (what convstore stores)."""
    sizes = [
        len(json.dumps(step, ensure_ascii=False, separators=(",", ":")).encode())
        for steps in exchanges
        for step in steps
    ]
    return statistics.fmean(sizes)


# Statistics and formatting.


def cold(conv: Any) -> Any:
    """``conv`` without the step texts it kept from its last read or write (the README's "Replay"), so the
    next ``history()`` reads the branch from the database: what a fresh ``store.conversation(...)`` does,
    without timing the open. Benchmarks of reads call it outside the timing."""
    conv._replay = None
    return conv


def median_ns(samples: Sequence[int]) -> float:
    return float(statistics.median(samples))


def percentile_ns(samples: Sequence[int], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return float(ordered[index])


def fmt_ns(value: float) -> str:
    if value >= 1e9:
        return f"{value / 1e9:.2f} s"
    if value >= 1e6:
        return f"{value / 1e6:.2f} ms"
    return f"{value / 1e3:.0f} µs"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def fmt_bytes(value: float) -> str:
    if value >= 1 << 20:
        return f"{value / (1 << 20):.2f} MiB"
    if value >= 1 << 10:
        return f"{value / (1 << 10):.1f} KiB"
    return f"{value:.0f} B"


@dataclass
class TableData:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def render_text(table: TableData) -> str:
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(table.headers, *table.rows, strict=True)
    ]
    line = "  ".join("-" * width for width in widths)
    out = [table.title, line, "  ".join(h.ljust(w) for h, w in zip(table.headers, widths, strict=True)), line]
    out += [
        "  ".join(
            str(c).rjust(w) if i else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table.rows
    ]
    if table.note:
        out.append(table.note)
    return "\n".join(out) + "\n"


def render_markdown(table: TableData) -> str:
    out = [f"### {table.title}", "", "| " + " | ".join(table.headers) + " |"]
    out.append("|" + "|".join([":--"] + ["--:"] * (len(table.headers) - 1)) + "|")
    out += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in table.rows]
    if table.note:
        out += ["", table.note]
    return "\n".join(out) + "\n"


# The floor's replay: convstore's HISTORY recursive CTE written by hand (``?`` placeholders; ``to_pg`` for
# psycopg). Parameters: conversation id, branch name, conversation id.
FLOOR_HISTORY = """
WITH RECURSIVE path(id, parent_id, depth, exchange_id, total_tokens, payload) AS (
    SELECT n.id, n.parent_id, n.depth, n.exchange_id, n.total_tokens, n.payload
    FROM convstore_nodes AS n
    JOIN convstore_branches AS b ON b.conversation_id = n.conversation_id AND b.head_id = n.id
    WHERE b.conversation_id = ? AND b.name = ?
    UNION ALL
    SELECT p.id, p.parent_id, p.depth, p.exchange_id, p.total_tokens, p.payload
    FROM convstore_nodes AS p, path
    WHERE p.conversation_id = ? AND p.id = path.parent_id
)
SELECT id, parent_id, depth, exchange_id, total_tokens, payload FROM path ORDER BY depth
"""


def to_pg(sql: str) -> str:
    """A ``?``-placeholder statement for psycopg (a compare-and-swap on a NULL head included)."""
    return sql.replace("?", "%s").replace("head_id IS %s", "head_id IS NOT DISTINCT FROM %s")


def store_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options the store benchmarks share: --backend, --quick, --out, --seed, --postgres-url."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n", 1)[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (CI smoke run)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES_URL),
        help=f"SQLAlchemy URL of a PostgreSQL database (default ${POSTGRES_ENV} or %(default)s)",
    )
    return parser


def store_args(doc: str | None, argv: Sequence[str] | None) -> tuple[argparse.Namespace, tuple[str, ...]]:
    """Parse a store benchmark's options; returns them and the backends to run."""
    args = store_parser(doc).parse_args(argv)
    backends = ("sqlite", "postgres") if args.backend == "all" else (args.backend,)
    return args, backends


def report_head(
    script: str,
    argv: Sequence[str] | None,
    args: argparse.Namespace,
    backends: Sequence[str],
    **versions: str | None,
) -> dict[str, Any]:
    """The ``command`` and ``machine`` entries every report starts with (``versions``: more packages)."""
    server = postgres_server_version(args.postgres_url) if "postgres" in backends else None
    return {
        "command": " ".join(["python", f"benchmarks/{script}", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(server) | versions,
    }


def report_opening(
    title: str, report: dict[str, Any], *, when: str = "", more: dict[str, Any] | None = None
) -> list[str]:
    """The first lines of every markdown report: the title, the command and date, the machine (and ``more``
    rows, package versions say) as a table."""
    rows = {**report["machine"], **(more or {})}
    return [
        f"# {title}",
        "",
        f"`{report['command']}`, {report['machine']['date']}{when}",
        "",
        "| machine | |",
        "|:--|:--|",
        *(f"| {key} | {value} |" for key, value in rows.items()),
        "",
    ]


def package_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def machine_info(postgres_server: str | None = None) -> dict[str, Any]:
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlalchemy": package_version("SQLAlchemy"),
        "psycopg": package_version("psycopg"),
        "alembic": package_version("alembic"),
        "sqlite_library": sqlite3.sqlite_version,
        "postgresql_server": postgres_server,
        "convstore_git": _git_state(),
    }


def _git_state() -> str | None:
    """The commit the benchmark ran on, and whether convstore's sources differed from it."""
    try:
        commit = subprocess.run(  # noqa: S603 -- fixed arguments
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],  # noqa: S607 -- git from PATH
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603 -- fixed arguments
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "convstore", "migrations"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit} (convstore/ or migrations/ modified or untracked)" if dirty else commit


# Backends: a fresh database (SQLite file, PostgreSQL schema) for each contender.


@dataclass
class SqliteFile:
    path: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def size_bytes(self) -> int:
        """File size after folding the WAL into it (the WAL itself then has length zero)."""
        with sqlite3.connect(self.path, isolation_level=None) as conn:
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        conn.close()
        if busy:
            raise RuntimeError("wal_checkpoint(TRUNCATE) was blocked by an open transaction")
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


@dataclass
class PostgresSchema:
    base_url: str  # SQLAlchemy URL of the database
    schema: str

    @property
    def url(self) -> str:
        """convstore's URL: the database with ``search_path`` set to the schema."""
        import sqlalchemy as sa  # noqa: PLC0415

        url = sa.make_url(self.base_url).update_query_dict(
            {"options": f"-csearch_path={self.schema}", "application_name": APPLICATION_NAME}
        )
        return url.render_as_string(hide_password=False)

    @property
    def conninfo(self) -> str:
        """A libpq URI of the database for psycopg (no driver name, no search_path)."""
        import sqlalchemy as sa  # noqa: PLC0415

        url = sa.make_url(self.base_url).set(drivername="postgresql")
        url = url.update_query_dict({"application_name": APPLICATION_NAME})
        return url.render_as_string(hide_password=False)

    def connect(self, *, autocommit: bool = True) -> Any:
        """A psycopg connection whose ``search_path`` is the schema."""
        import psycopg  # noqa: PLC0415

        conn = psycopg.connect(self.conninfo, autocommit=True)
        conn.execute(f'SET search_path TO "{self.schema}"')
        conn.autocommit = autocommit
        return conn

    def table_stats(self, table: str) -> dict[str, Any]:
        """How often (auto)vacuum and (auto)analyze have run on ``table`` (``pg_stat_user_tables``)."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT n_live_tup, vacuum_count, autovacuum_count, analyze_count, autoanalyze_count "
                "FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
                (self.schema, table),
            ).fetchone()
        keys = ("n_live_tup", "vacuum_count", "autovacuum_count", "analyze_count", "autoanalyze_count")
        return dict(zip(keys, row, strict=True)) if row else {}

    def other_sessions(self) -> int:
        """Sessions in this database other than the benchmark's own (their DDL re-plans cached plans)."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND application_name <> %s",
                (APPLICATION_NAME,),
            ).fetchone()
        return int(row[0])

    def table_sizes(self) -> dict[str, int]:
        """``pg_total_relation_size`` (heap, TOAST, indexes, free-space and visibility maps) of each of
        convstore's tables in the schema (its version table excepted)."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class AS c JOIN pg_namespace AS n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' "
                "AND c.relname LIKE 'convstore\\_%%' AND c.relname <> 'convstore_alembic_version' "
                "ORDER BY c.relname",
                (self.schema,),
            ).fetchall()
        return {name: int(size) for name, size in rows}


@contextmanager
def postgres_schema(base_url: str, prefix: str = "bench") -> Iterator[PostgresSchema]:
    """A new schema, dropped with everything in it on exit."""
    schema = PostgresSchema(base_url, f"{prefix}_{uuid.uuid4().hex[:12]}")
    with schema.connect() as conn:
        conn.execute(f'CREATE SCHEMA "{schema.schema}"')
    try:
        yield schema
    finally:
        with schema.connect() as conn:
            conn.execute(f'DROP SCHEMA "{schema.schema}" CASCADE')


def postgres_server_version(base_url: str) -> str:
    with PostgresSchema(base_url, "public").connect() as conn:
        return str(conn.execute("SELECT version()").fetchone()[0])
