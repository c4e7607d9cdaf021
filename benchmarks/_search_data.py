"""bench_search.py's data: the seeded store's texts and rows (the same for a seed), written in bulk with the
driver as convstore's own appends would have written them, index rows included."""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import _common as common


@dataclass(frozen=True)
class Config:
    conversations: int
    steps: int
    query_runs: int
    appends: int
    llm_runs: int


FULL = Config(conversations=10_000, steps=100, query_runs=21, appends=201, llm_runs=5)
QUICK = Config(conversations=200, steps=20, query_runs=7, appends=31, llm_runs=2)

_WORDS = common._VOCABULARY.replace("São_Paulo", "Lisbon").split()


def sample_texts(rng: random.Random, count: int, words: int) -> list[str]:
    return [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(words // 2, words * 3 // 2)))
        for _ in range(count)
    ]


def rare_tags(config: Config) -> int:
    """How many rare words there are: each in about 100 steps."""
    return max(10, config.conversations * config.steps // 100)


def step_texts(config: Config, seed: int) -> Iterator[tuple[int, int, str]]:
    """``(conversation, depth, text)`` of every step, the same for a seed: pooled sentences, a rare tag and
    a topic."""
    rng = random.Random(seed)
    users, models = sample_texts(rng, 2_000, 45), sample_texts(rng, 2_000, 110)
    tags = rare_tags(config)
    for conversation in range(config.conversations):
        for depth in range(config.steps):
            pool = users if depth % 2 == 0 else models
            tag, topic = rng.randrange(tags), rng.randrange(100)
            yield conversation, depth, f"{rng.choice(pool)} tag{tag:04d} topic{topic:02d}"


def new_id(rng: random.Random, when: datetime) -> str:
    """A UUIDv7 (its time, ``when``) as the store writes it: 32 hex digits on SQLite, a uuid on PostgreSQL."""
    value = (int(when.timestamp() * 1000) & 0xFFFF_FFFF_FFFF) << 80 | rng.getrandbits(80)
    value = value & ~(0xF << 76) | 0x7 << 76
    value = value & ~(0x3 << 62) | 0x2 << 62
    return str(uuid.UUID(int=value))


def seed_rows(config: Config, seed: int) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """Each conversation: ``(id, owner, node rows)``, the rows as convstore's append writes them."""
    rng = random.Random(seed + 1)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    current: list[dict[str, Any]] = []
    cid = owner = ""
    for conversation, depth, text in step_texts(config, seed):
        if depth == 0:
            if current:
                yield cid, owner, current
            when = base + timedelta(minutes=conversation)
            cid, owner, current = new_id(rng, when), f"user{conversation % 100:02d}", []
        when = base + timedelta(minutes=conversation, seconds=depth)
        kind = "user_input" if depth % 2 == 0 else "model_output"
        node = new_id(rng, when)
        previous = current[-1] if current else None
        tokens = len(text) // 4
        current.append(
            {
                "conversation_id": cid,
                "id": node,
                "parent_id": previous["id"] if previous else None,
                "depth": depth,
                "exchange_id": previous["exchange_id"] if previous and depth % 2 else new_id(rng, when),
                "type": kind,
                "token_count": tokens,
                "total_tokens": (previous["total_tokens"] if previous else 0) + tokens,
                "created_at": when,
                "payload": json.dumps(
                    {"type": kind, "content": [{"type": "text", "text": text}]},
                    ensure_ascii=False,
                    separators=(",", ":"),
                ),
                "segment_id": current[0]["id"] if current else node,
                "text": text,
            }
        )
    if current:
        yield cid, owner, current


# Seeding with the driver.

_NODE_COLUMNS = (
    "conversation_id",
    "id",
    "parent_id",
    "depth",
    "exchange_id",
    "type",
    "token_count",
    "total_tokens",
    "created_at",
    "payload",
    "segment_id",
)


def seed_sqlite(path: Path, config: Config, seed: int) -> int:
    """Bulk rows into a store convstore built; the FTS5 index rebuilt once (its insert trigger off)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    trigger = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'convstore_search_inserted'"
    ).fetchone()[0]
    conn.execute("DROP TRIGGER convstore_search_inserted")
    hexed = lambda value: value.replace("-", "")  # noqa: E731 -- how SQLAlchemy stores a UUID on SQLite
    stamp = lambda value: value.replace(tzinfo=None).isoformat(sep=" ")  # noqa: E731
    conn.execute("BEGIN")
    steps = 0
    for cid, owner, rows in seed_rows(config, seed):
        first = rows[0]["created_at"]
        conn.execute(
            "INSERT INTO convstore_conversations (id, created_at, model, owner) VALUES (?, ?, ?, ?)",
            (hexed(cid), stamp(first), "m1", owner),
        )
        conn.executemany(
            f"INSERT INTO convstore_nodes ({', '.join(_NODE_COLUMNS)}) VALUES ({', '.join('?' * 11)})",
            [
                (
                    hexed(r["conversation_id"]),
                    hexed(r["id"]),
                    r["parent_id"] and hexed(r["parent_id"]),
                    r["depth"],
                    hexed(r["exchange_id"]),
                    r["type"],
                    r["token_count"],
                    r["total_tokens"],
                    stamp(r["created_at"]),
                    r["payload"],
                    hexed(r["segment_id"]),
                )
                for r in rows
            ],
        )
        conn.executemany(
            "INSERT INTO convstore_search (conversation_id, node_id, type, created_at, language, text) "
            "VALUES (?, ?, ?, ?, 'simple', ?)",
            [(hexed(cid), hexed(r["id"]), r["type"], stamp(r["created_at"]), r["text"]) for r in rows],
        )
        conn.execute(
            "INSERT INTO convstore_branches (conversation_id, name, head_id, created_at, updated_at) "
            "VALUES (?, 'main', ?, ?, ?)",
            (hexed(cid), hexed(rows[-1]["id"]), stamp(first), stamp(rows[-1]["created_at"])),
        )
        steps += len(rows)
    # The owners' keys, which the insert trigger would have added, before the index reads them (0013).
    conn.execute(
        "INSERT OR IGNORE INTO convstore_search_owners (owner) "
        "SELECT DISTINCT owner FROM convstore_conversations WHERE owner IS NOT NULL"
    )
    conn.execute("INSERT INTO convstore_search_fts(convstore_search_fts) VALUES ('rebuild')")
    conn.execute(trigger)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return steps


def _copy_line(values: Sequence[Any]) -> str:
    """One row in COPY's text format."""
    cells = []
    for value in values:
        if value is None:
            cells.append("\\N")
            continue
        text = value.isoformat() if isinstance(value, datetime) else str(value)
        cells.append(
            text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        )
    return "\t".join(cells) + "\n"


def seed_postgres(schema: common.PostgresSchema, config: Config, seed: int) -> int:
    """COPY into a store convstore built: the rows made in one pass into COPY text (about 1.5 GB at full
    size), then one COPY a table with the foreign-key triggers off for the session (the rows are made
    consistent: every parent before its children); the GIN index dropped and built once after, then the
    tables vacuumed."""
    tables: dict[str, list[str]] = {"conversations": [], "nodes": [], "search": [], "branches": []}
    steps = 0
    for cid, owner, rows in seed_rows(config, seed):
        first, last = rows[0]["created_at"], rows[-1]["created_at"]
        tables["conversations"].append(_copy_line((cid, first, "m1", owner)))
        for r in rows:
            tables["nodes"].append(_copy_line([r[column] for column in _NODE_COLUMNS]))
            tables["search"].append(
                _copy_line((cid, r["id"], r["type"], r["created_at"], "simple", r["text"]))
            )
        tables["branches"].append(_copy_line((cid, "main", rows[-1]["id"], first, last)))
        steps += len(rows)
    columns = {
        "conversations": "id, created_at, model, owner",
        "nodes": ", ".join(_NODE_COLUMNS),
        "search": "conversation_id, node_id, type, created_at, language, text",
        "branches": "conversation_id, name, head_id, created_at, updated_at",
    }
    with schema.connect() as conn:
        definition = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_convstore_search_document' "
            "AND schemaname = current_schema()"
        ).fetchone()[0]
        conn.execute("DROP INDEX ix_convstore_search_document")
        conn.execute("SET session_replication_role = replica")  # no foreign-key triggers while seeding
        for table, lines in tables.items():
            with (
                conn.transaction(),
                conn.cursor().copy(f"COPY convstore_{table} ({columns[table]}) FROM STDIN") as copy,
            ):
                for start in range(0, len(lines), 10_000):
                    copy.write("".join(lines[start : start + 10_000]))
            lines.clear()
        conn.execute("SET session_replication_role = DEFAULT")
        conn.execute(definition)
        # As autovacuum leaves a store after inserts (the test server may run without it): hint bits and
        # the visibility map set, so that the first search of each word does not pay for them.
        for table in tables:
            conn.execute(f"VACUUM (ANALYZE) convstore_{table}")
    return steps
