"""bench_search.py's floor: the statements of ``store.search``, written by hand and run with the driver, with
the same strategy as convstore for the same filters (see ``_search_sql``), no snippets."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as common

LIMIT = 20
CANDIDATES = 1_000  # store.search's default: the newest matches ranked

# The floor: the same three statements as store.search, by hand, with the driver.

_FLOOR_BRANCHES = """
WITH RECURSIVE segs(conversation_id, branch, made, segment_id, top, up) AS (
    SELECT b.conversation_id, b.name, b.created_at, h.segment_id, h.depth, f.parent_id
    FROM convstore_branches b
    JOIN convstore_nodes h ON h.conversation_id = b.conversation_id AND h.id = b.head_id
    JOIN convstore_nodes f ON f.conversation_id = h.conversation_id AND f.id = h.segment_id
    WHERE b.conversation_id IN ({conversations})
    UNION ALL
    SELECT s.conversation_id, s.branch, s.made, p.segment_id, p.depth, f.parent_id
    FROM segs s
    JOIN convstore_nodes p ON p.conversation_id = s.conversation_id AND p.id = s.up
    JOIN convstore_nodes f ON f.conversation_id = p.conversation_id AND f.id = p.segment_id
)
SELECT n.conversation_id, n.id, segs.branch FROM segs
JOIN convstore_nodes n ON n.conversation_id = segs.conversation_id AND n.segment_id = segs.segment_id
    AND n.depth <= segs.top
WHERE n.id IN ({nodes})
ORDER BY segs.conversation_id, segs.made, segs.branch
"""


def _floor_encrypted(owner: str | None, placeholder: str) -> tuple[str, tuple[str, ...]]:
    """The encrypted count as convstore runs it: the owner a plain condition (its index), if any."""
    sql = "SELECT count(*) FROM convstore_conversations WHERE encryption IS NOT NULL"
    if owner is None:
        return sql, ()
    return f"{sql} AND owner = {placeholder}", (owner,)


class SqliteFloor:
    name = "floor"

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)

    def search(self, words: Sequence[str], owner: str | None) -> list[Any]:
        match = "text : (" + " ".join(f'"{word}"' for word in words) + ")"
        # As convstore: for an owner, FTS5 asked for the owner's token too (the owner's key read in the
        # statement), and the owner's conversations listed once (the search rows read for the candidates
        # only then).
        owned = (
            "JOIN convstore_search s ON s.id = f.rowid WHERE s.conversation_id IN "
            "(SELECT id FROM convstore_conversations WHERE owner = ?) AND "
            "convstore_search_fts MATCH ('owner : o' || coalesce((SELECT id FROM convstore_search_owners "
            "WHERE owner = ?), 0) || ' AND ' || ?)"
            if owner is not None
            else "WHERE convstore_search_fts MATCH ?"
        )
        self.conn.execute("BEGIN")
        rows = self.conn.execute(
            "SELECT s.conversation_id, s.node_id, s.type, s.created_at, s.text, cand.rank, "
            "max(cand.id) OVER () FROM ("
            "SELECT f.rowid AS id, -bm25(convstore_search_fts, 1.0, 0.0) AS rank "
            f"FROM convstore_search_fts f {owned} AND f.rowid <= ? "
            "ORDER BY f.rowid DESC LIMIT ?"
            ") cand JOIN convstore_search s ON s.id = cand.id "
            "ORDER BY cand.rank DESC, cand.id DESC LIMIT ?",
            (*([owner, owner] if owner is not None else []), match, 2**63 - 1, CANDIDATES, LIMIT + 1),
        ).fetchall()
        conversations = list(dict.fromkeys(row[0] for row in rows))
        if rows:
            sql = _FLOOR_BRANCHES.format(
                conversations=", ".join("?" * len(conversations)), nodes=", ".join("?" * len(rows))
            )
            self.conn.execute(sql, [*conversations, *(row[1] for row in rows)]).fetchall()
        self.conn.execute(*_floor_encrypted(owner, "?")).fetchone()
        self.conn.execute("COMMIT")
        return rows[:LIMIT]

    def close(self) -> None:
        self.conn.close()


class PostgresFloor:
    name = "floor"

    def __init__(self, schema: common.PostgresSchema) -> None:
        self.conn = schema.connect()
        # Never a server-side prepared statement: its generic plan cannot see how rare the words are.
        self.conn.prepare_threshold = None

    def search(self, words: Sequence[str], owner: str | None) -> list[Any]:
        query = " ".join(words)
        owned = "WHERE"
        listed: list[Any] = []
        if owner is not None:
            # As convstore: the owner's conversations first, listed in the search when there are at most
            # 1,000 (else only the join).
            listed = [
                row[0]
                for row in self.conn.execute(
                    "SELECT id FROM convstore_conversations WHERE owner = %s LIMIT 1001", (owner,)
                )
            ]
            owned = "JOIN convstore_conversations c ON c.id = s.conversation_id WHERE c.owner = %(o)s AND"
            if len(listed) <= 1000:
                owned += " s.conversation_id = ANY(%(ids)s) AND"
        rows = self.conn.execute(
            "SELECT s.conversation_id, s.node_id, s.type, s.created_at, s.text, cand.rank, "
            "max(cand.created_at) OVER () FROM ("
            "SELECT s.conversation_id, s.node_id, s.created_at, "
            "ts_rank(s.document, plainto_tsquery('simple', %(q)s)) AS rank "
            f"FROM convstore_search s {owned} "
            "s.document @@ plainto_tsquery('simple', %(q)s) "
            "ORDER BY s.created_at DESC, s.conversation_id DESC, s.node_id DESC LIMIT %(c)s"
            ") cand JOIN convstore_search s "
            "ON s.conversation_id = cand.conversation_id AND s.node_id = cand.node_id "
            "ORDER BY cand.rank DESC, cand.created_at DESC, cand.conversation_id DESC, cand.node_id DESC "
            "LIMIT %(n)s",
            {"q": query, "o": owner, "c": CANDIDATES, "n": LIMIT + 1, "ids": listed},
        ).fetchall()
        conversations = list(dict.fromkeys(row[0] for row in rows))
        if rows:
            sql = _FLOOR_BRANCHES.format(
                conversations=", ".join(["%s"] * len(conversations)), nodes=", ".join(["%s"] * len(rows))
            )
            self.conn.execute(sql, [*conversations, *(row[1] for row in rows)]).fetchall()
        self.conn.execute(*_floor_encrypted(owner, "%s")).fetchone()
        return rows[:LIMIT]

    def close(self) -> None:
        self.conn.close()
