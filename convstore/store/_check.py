"""The integrity check: every invariant of the stored trees, verified by a few bulk queries.

``Store.check()`` and ``convstore db check`` run the checks below, each one statement over whole tables (a
join on primary keys or one ``GROUP BY``), so the cost is a handful of scans whatever the number of
conversations: no per-node round trips. The report names conversations, nodes, branches and exchanges by id
and the broken rule by kind, with numbers where they help (a depth, a total); never step content.

A check is anything with a ``name``, the ``kinds`` of problem it reports and an ``op()`` operation that
yields statements and returns problems, so checks that need Python (decrypting payloads, say) fit beside the
SQL ones: pass them to ``check(checks=[*DEFAULT_CHECKS, mine])``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
import sqlalchemy as sa
from sqlalchemy.sql import Select

from convstore._ids import canonical_id
from convstore.errors import DecryptionError
from convstore.store._conversations import SETTINGS
from convstore.store._crypto import DataCipher
from convstore.store._engine import Exec, Op
from convstore.store._media import plain_digest, stored_hashes
from convstore.store._schema import branches as b
from convstore.store._schema import conversations as c
from convstore.store._schema import exchanges as x
from convstore.store._schema import keys as k
from convstore.store._schema import media as m
from convstore.store._schema import nodes as n
from convstore.store._schema import summaries as sm

__all__ = [
    "DEFAULT_CHECKS",
    "Check",
    "CheckReport",
    "MediaCheck",
    "ParentCheck",
    "Problem",
    "SqlCheck",
    "run_checks",
]


@attrs.frozen(kw_only=True)
class Problem:
    """One broken invariant.

    Attributes:
        kind: Which rule is broken (``missing_parent``, ``bad_depth``... see ``CheckReport.kinds``).
        conversation_id: The conversation it is in.
        subject: What is broken: ``node``, ``branch``, ``exchange``, ``summary``, ``media``, ``data_key`` or
            ``conversation``.
        id: The node id, branch name, exchange id or media hash (a summary: its node id).
        detail: Numbers that explain it (``depth 3, expected 2``); never content.
    """

    kind: str
    conversation_id: str
    subject: str
    id: str
    detail: str = ""

    def line(self) -> str:
        """One line for a terminal or a log."""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.kind}: conversation {self.conversation_id} {self.subject} {self.id}{extra}"


@attrs.frozen(kw_only=True)
class CheckReport:
    """What ``check()`` found.

    Attributes:
        problems: Every problem found, grouped by check, then by conversation and id.
        checks: The names of the checks that ran.
        conversations, nodes, branches, exchanges: How many rows were looked at.
        encrypted: How many conversations are encrypted at rest.
        unopened: How many of those were not decrypted, because the store has no keyring: their sealed
            values are unverified (their structure is checked like any other).
        repaired: The conversations ``check(repair=True)`` deleted: their data key was gone (a delete
            interrupted between a separate key store's commit and the rows'), so no one could read them.
    """

    problems: tuple[Problem, ...]
    checks: tuple[str, ...]
    conversations: int
    nodes: int
    branches: int
    exchanges: int
    encrypted: int = 0
    unopened: int = 0
    repaired: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def kinds(self) -> set[str]:
        """The kinds of problem found."""
        return {problem.kind for problem in self.problems}

    def lines(self) -> list[str]:
        """One line per problem."""
        return [problem.line() for problem in self.problems]


class Check(Protocol):
    """One integrity check: ``op()`` yields statements (see ``_ops``) and returns what it found."""

    @property
    def name(self) -> str: ...

    def op(self) -> Op[list[Problem]]: ...


@attrs.frozen
class SqlCheck:
    """A check that is one SELECT: each row it returns is a problem.

    The statement selects ``conversation_id`` and ``id`` and may select more columns; ``kind`` and ``detail``
    turn a row into the problem's kind and its explanation.
    """

    name: str
    subject: str
    statement: Select[Any]
    kind: Callable[[Any], str]
    detail: Callable[[Any], str] = lambda _row: ""

    def op(self) -> Op[list[Problem]]:
        result = yield Exec(self.statement)
        return [
            Problem(
                kind=self.kind(row),
                conversation_id=str(row.conversation_id),
                subject=self.subject,
                id=str(row.id),
                detail=self.detail(row),
            )
            for row in result
        ]


def _fixed(kind: str) -> Callable[[Any], str]:
    return lambda _row: kind


p = n.alias("parent")

# A node whose parent is not a node of its conversation: gone, or (where the foreign key was bypassed) a
# node of another conversation. Every join of the checks pairs rows of one conversation, so each runs shard
# by shard on a distributed database (Citus); which other conversation holds a missing parent is a second
# lookup by id, for the few nodes found.
_PARENTS = (
    sa.select(n.c.conversation_id, n.c.id, n.c.parent_id)
    .select_from(n.outerjoin(p, sa.and_(p.c.conversation_id == n.c.conversation_id, p.c.id == n.c.parent_id)))
    .where(n.c.parent_id.is_not(None), p.c.id.is_(None))
    .order_by(n.c.conversation_id, n.c.id)
)
_NODES_BY_ID = sa.select(n.c.conversation_id, n.c.id).where(n.c.id.in_(sa.bindparam("ids", expanding=True)))
_LOOKUP_CHUNK = 500


@attrs.frozen
class ParentCheck:
    """Every node's parent is a node of its own conversation (``missing_parent``), and one that is a node of
    another conversation is named so (``parent_in_other_conversation``)."""

    name: str = "parents"

    def op(self) -> Op[list[Problem]]:
        orphans = list((yield Exec(_PARENTS)))
        wanted = sorted({str(row.parent_id) for row in orphans})
        found: set[tuple[str, str]] = set()
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            rows = yield Exec(_NODES_BY_ID, {"ids": wanted[start : start + _LOOKUP_CHUNK]})
            found.update((str(row.conversation_id), str(row.id)) for row in rows)
        holders = {node_id for _, node_id in found}
        return [
            Problem(
                kind="parent_in_other_conversation" if str(row.parent_id) in holders else "missing_parent",
                conversation_id=str(row.conversation_id),
                subject="node",
                id=str(row.id),
            )
            for row in orphans
        ]


# Depth and running total: a root has depth 0 and total = its own count; any other node its parent's
# depth + 1 and its parent's total + its own count. Token counts are never negative.
_expected_depth = sa.case((n.c.parent_id.is_(None), 0), else_=p.c.depth + 1)
_expected_total = sa.case(
    (n.c.parent_id.is_(None), n.c.token_count), else_=p.c.total_tokens + n.c.token_count
)
_ARITHMETIC = (
    sa.select(
        n.c.conversation_id,
        n.c.id,
        n.c.depth,
        _expected_depth.label("expected_depth"),
        n.c.token_count,
        n.c.total_tokens,
        _expected_total.label("expected_total"),
    )
    .select_from(n.outerjoin(p, sa.and_(p.c.conversation_id == n.c.conversation_id, p.c.id == n.c.parent_id)))
    .where(
        sa.or_(n.c.parent_id.is_(None), p.c.id.is_not(None)),  # a missing parent is reported above
        sa.or_(
            n.c.depth != _expected_depth,
            n.c.total_tokens != _expected_total,
            n.c.token_count < 0,
        ),
    )
    .order_by(n.c.conversation_id, n.c.id)
)


def _arithmetic_kind(row: Any) -> str:
    if row.depth != row.expected_depth:
        return "bad_depth"
    if row.token_count < 0:
        return "bad_token_count"
    return "bad_total"


def _arithmetic_detail(row: Any) -> str:
    if row.depth != row.expected_depth:
        return f"depth {row.depth}, expected {row.expected_depth}"
    if row.token_count < 0:
        return f"token count {row.token_count}"
    return f"total {row.total_tokens}, expected {row.expected_total}"


# Segments (see ``_reads``): every node names one (NULL, or on SQLite the nil UUID its column defaults to,
# is a node written without one); a node that does not start its segment (its segment id is not its own id)
# has its parent in the same segment, one level up; and the node a segment id names, the segment's first,
# exists. One depth per segment is the unique index's to keep. Joins pair rows of one conversation.
NIL_SEGMENT = "00000000-0000-0000-0000-000000000000"
first = n.alias("first")
_no_segment = sa.or_(n.c.segment_id.is_(None), n.c.segment_id == NIL_SEGMENT)
_continues = n.c.segment_id != n.c.id
_unchained = sa.or_(
    n.c.parent_id.is_(None),  # a root that does not start its segment
    # (a missing parent is reported by the parents check)
    sa.and_(p.c.id.is_not(None), sa.or_(p.c.segment_id != n.c.segment_id, p.c.depth != n.c.depth - 1)),
)
_SEGMENTS = (
    sa.select(
        n.c.conversation_id,
        n.c.id,
        sa.case(
            (_no_segment, "missing_segment"),
            (first.c.id.is_(None), "missing_segment_start"),
            else_="broken_segment",
        ).label("kind"),
    )
    .select_from(
        n.outerjoin(
            p, sa.and_(p.c.conversation_id == n.c.conversation_id, p.c.id == n.c.parent_id)
        ).outerjoin(
            first, sa.and_(first.c.conversation_id == n.c.conversation_id, first.c.id == n.c.segment_id)
        )
    )
    .where(sa.or_(_no_segment, first.c.id.is_(None), sa.and_(_continues, _unchained)))
    .order_by(n.c.conversation_id, n.c.id)
)

# A branch head that is not a node of the branch's conversation.
_HEADS = (
    sa.select(b.c.conversation_id, b.c.name.label("id"))
    .select_from(b.outerjoin(n, sa.and_(n.c.conversation_id == b.c.conversation_id, n.c.id == b.c.head_id)))
    .where(b.c.head_id.is_not(None), n.c.id.is_(None))
    .order_by(b.c.conversation_id, b.c.name)
)

# An exchange's nodes form one chain: exactly one of them starts it (its parent is outside the exchange),
# and its depths span exactly as many levels as it has nodes. With parent pointers and consecutive depths
# (checked above) that is a single path, written in one transaction; anything else is a torn or interleaved
# exchange.
_starts = sa.func.sum(sa.case((sa.or_(p.c.id.is_(None), p.c.exchange_id != n.c.exchange_id), 1), else_=0))
_EXCHANGE_CHAINS = (
    sa.select(
        n.c.conversation_id,
        n.c.exchange_id.label("id"),
        sa.func.count().label("size"),
        _starts.label("starts"),
        (sa.func.max(n.c.depth) - sa.func.min(n.c.depth) + 1).label("span"),
    )
    .select_from(n.outerjoin(p, sa.and_(p.c.conversation_id == n.c.conversation_id, p.c.id == n.c.parent_id)))
    .group_by(n.c.conversation_id, n.c.exchange_id)
    .having(sa.or_(_starts != 1, sa.func.max(n.c.depth) - sa.func.min(n.c.depth) + 1 != sa.func.count()))
    .order_by(n.c.conversation_id, n.c.exchange_id)
)

# An exchange record (usage, interaction id) whose steps are not in the store.
_EXCHANGE_ROWS = (
    sa.select(x.c.conversation_id, x.c.exchange_id.label("id"))
    .where(~sa.exists().where(n.c.conversation_id == x.c.conversation_id, n.c.exchange_id == x.c.exchange_id))
    .order_by(x.c.conversation_id, x.c.exchange_id)
)

# A compaction summary kept for a window start that is not a node.
_SUMMARIES = (
    sa.select(sm.c.conversation_id, sm.c.node_id.label("id"))
    .where(~sa.exists().where(n.c.conversation_id == sm.c.conversation_id, n.c.id == sm.c.node_id))
    .order_by(sm.c.conversation_id, sm.c.node_id)
)


def _orphans(table: sa.Table, id_column: sa.ColumnElement[Any]) -> Select[Any]:
    """Rows of ``table`` whose conversation does not exist."""
    return (
        sa.select(table.c.conversation_id, id_column.label("id"))
        .where(~sa.exists().where(c.c.id == table.c.conversation_id))
        .order_by(table.c.conversation_id, id_column)
    )


_MEDIA_REFS = (
    sa.select(n.c.conversation_id, n.c.id, n.c.media)
    .where(n.c.media.is_not(None))
    .order_by(n.c.conversation_id, n.c.id)
)
_MEDIA_HELD = sa.select(m.c.conversation_id, m.c.hash)
# Media strings of plaintext conversations, whose hash is their SHA-256 (an encrypted one's are named by a
# keyed hash and authenticated when opened).
_PLAIN_MEDIA = (
    sa.select(m.c.conversation_id, m.c.hash.label("id"), m.c.data)
    .select_from(m.join(c, c.c.id == m.c.conversation_id))
    .where(c.c.encryption.is_(None))
    .order_by(m.c.conversation_id, m.c.hash)
)


@attrs.frozen
class MediaCheck:
    """Every media string a node names is stored in its conversation, and a plaintext one still hashes
    to its name."""

    name: str = "media"

    def op(self) -> Op[list[Problem]]:
        held = {(str(row.conversation_id), row.hash) for row in (yield Exec(_MEDIA_HELD))}
        problems = []
        for row in (yield Exec(_MEDIA_REFS)):
            conversation_id = str(row.conversation_id)
            try:
                hashes = stored_hashes(row.media)
            except (ValueError, TypeError):
                problems.append(
                    Problem(
                        kind="bad_media_refs", conversation_id=conversation_id, subject="node", id=str(row.id)
                    )
                )
                continue
            problems.extend(
                Problem(
                    kind="missing_media",
                    conversation_id=conversation_id,
                    subject="node",
                    id=str(row.id),
                    detail=f"media {digest[:16]}",
                )
                for digest in hashes
                if (conversation_id, digest) not in held
            )
        for row in (yield Exec(_PLAIN_MEDIA)):
            if plain_digest(row.data) != row.id:
                problems.append(
                    Problem(
                        kind="bad_media",
                        conversation_id=str(row.conversation_id),
                        subject="media",
                        id=row.id,
                        detail="content does not match its hash",
                    )
                )
        return problems


DEFAULT_CHECKS: tuple[Check, ...] = (
    SqlCheck("conversations of nodes", "node", _orphans(n, n.c.id), _fixed("missing_conversation")),
    SqlCheck("conversations of branches", "branch", _orphans(b, b.c.name), _fixed("missing_conversation")),
    SqlCheck(
        "conversations of exchanges", "exchange", _orphans(x, x.c.exchange_id), _fixed("missing_conversation")
    ),
    ParentCheck(),
    SqlCheck("depths and totals", "node", _ARITHMETIC, _arithmetic_kind, _arithmetic_detail),
    SqlCheck(
        "segments",
        "node",
        _SEGMENTS,
        lambda row: str(row.kind),
        lambda row: (
            "its parent is not the node before it in its segment" if row.kind == "broken_segment" else ""
        ),
    ),
    SqlCheck("branch heads", "branch", _HEADS, _fixed("missing_head")),
    SqlCheck(
        "exchange chains",
        "exchange",
        _EXCHANGE_CHAINS,
        _fixed("broken_exchange"),
        lambda row: f"{row.size} nodes, {row.starts} starts, depths span {row.span}",
    ),
    SqlCheck("exchange records", "exchange", _EXCHANGE_ROWS, _fixed("exchange_without_nodes")),
    SqlCheck("summaries", "summary", _SUMMARIES, _fixed("summary_without_node")),
    SqlCheck("conversations of media", "media", _orphans(m, m.c.hash), _fixed("missing_conversation")),
    # A data key (default key store) whose conversation is gone: a shredded key written back, which would
    # open any copy of the conversation's rows taken before its delete. Named by its application key id.
    SqlCheck(
        "conversations of data keys",
        "data_key",
        _orphans(k, k.c.key_id),
        _fixed("data_key_without_conversation"),
    ),
    MediaCheck(),
)

_COUNTS = sa.select(
    sa.select(sa.func.count()).select_from(c).scalar_subquery().label("conversations"),
    sa.select(sa.func.count()).select_from(n).scalar_subquery().label("nodes"),
    sa.select(sa.func.count()).select_from(b).scalar_subquery().label("branches"),
    sa.select(sa.func.count()).select_from(x).scalar_subquery().label("exchanges"),
    sa.select(sa.func.count())
    .select_from(c)
    .where(c.c.encryption.is_not(None))
    .scalar_subquery()
    .label("encrypted"),
)


_SEALED_NODES = sa.select(n.c.id, n.c.payload).where(n.c.conversation_id == sa.bindparam("conversation_id"))
_SEALED_SUMMARIES = sa.select(sm.c.node_id.label("id"), sm.c.payload).where(
    sm.c.conversation_id == sa.bindparam("conversation_id")
)
_SEALED_MEDIA = sa.select(m.c.hash.label("id"), m.c.data.label("payload")).where(
    m.c.conversation_id == sa.bindparam("conversation_id")
)
_SEALED_SETTINGS = sa.select(*(c.c[field] for field in SETTINGS)).where(
    c.c.id == sa.bindparam("conversation_id")
)


def sealed_problems(conversation_id: str, cipher: DataCipher) -> Op[list[Problem]]:
    """Open every sealed value of one encrypted conversation: its settings, payloads, summaries and media.
    Each that fails to authenticate (altered, moved, or sealed under another key) is an ``undecryptable``
    problem naming the row."""
    params = {"conversation_id": conversation_id}
    problems: list[Problem] = []

    def fails(kind: str, where: str, value: str | None) -> bool:
        try:
            cipher.open_or_none(kind, where, value)
        except DecryptionError:
            return True
        return False

    settings = (yield Exec(_SEALED_SETTINGS, params)).first()
    if settings is not None:
        problems.extend(
            Problem(kind="undecryptable", conversation_id=conversation_id, subject="conversation",
                    id=conversation_id, detail=field)
            for field in SETTINGS
            if fails("conversation", field, getattr(settings, field))
        )  # fmt: skip
    for statement, kind in (
        (_SEALED_NODES, "node"),
        (_SEALED_SUMMARIES, "summary"),
        (_SEALED_MEDIA, "media"),
    ):
        for row in (yield Exec(statement, params)):
            where = row.id if kind == "media" else canonical_id(row.id)
            if fails(kind, where, row.payload):
                problems.append(
                    Problem(kind="undecryptable", conversation_id=conversation_id, subject=kind, id=where)
                )
    return problems


def run_checks(checks: Sequence[Check] | None = None) -> Op[CheckReport]:
    """Run ``checks`` (default: ``DEFAULT_CHECKS``) in one read transaction and report what they found."""
    chosen = DEFAULT_CHECKS if checks is None else tuple(checks)
    counts = (yield Exec(_COUNTS)).one()
    problems: list[Problem] = []
    for check in chosen:
        problems.extend((yield from check.op()))
    return CheckReport(
        problems=tuple(problems),
        checks=tuple(check.name for check in chosen),
        conversations=counts.conversations,
        nodes=counts.nodes,
        branches=counts.branches,
        exchanges=counts.exchanges,
        encrypted=counts.encrypted,
    )
