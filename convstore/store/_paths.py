"""The statements that walk a conversation's tree: a path's segments, the nodes of each, and the branches
that lead through given nodes.

A path is read a segment at a time (a segment: the run of nodes between two fork points), so a read costs one
index range per fork point on the way up, never a scan of the conversation. Built at import, like every
statement of the store (``_statements``), and executed as they are by the sync and async stores.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Select
from sqlalchemy.sql.expression import ColumnElement, FunctionElement
from sqlalchemy.types import NullType, TypeDecorator, TypeEngine

from convstore.store._engine import compile_once
from convstore.store._schema import Id
from convstore.store._schema import branches as b
from convstore.store._schema import conversations as c
from convstore.store._schema import files as fl
from convstore.store._schema import nodes as n
from convstore.store._statements import NODE_COLUMNS, OWNED_BY

__all__ = [
    "BRANCHES_THROUGH",
    "BRANCHES_THROUGH_MANY",
    "FIRST_EXCHANGE_NODES",
    "HEAD_HISTORY_BYTES_SCAN",
    "HEAD_SEGMENT_BYTES_SCAN",
    "HISTORY_BYTES_SCAN",
    "HISTORY_SCAN",
    "PATH_EXCHANGES_SCAN",
    "PATH_FILES_SCAN",
    "PATH_SCAN",
    "SEGMENTS_FROM_BRANCH",
    "SEGMENTS_FROM_NODE",
]


def _at(column: str, node_id: sa.ColumnElement[object], conversation: Any = None) -> sa.ScalarSelect[object]:
    """One column of the node ``node_id`` of the conversation (``conversation``: a column naming it; by
    default the ``conversation_id`` parameter): a scalar subquery on the whole primary key."""
    probe = n.alias()
    if conversation is None:
        conversation = sa.bindparam("conversation_id")
    return (
        sa.select(probe.c[column])
        .where(probe.c.conversation_id == conversation, probe.c.id == node_id)
        .correlate_except(probe)  # every other table is the enclosing query's, however deep
        .scalar_subquery()
    )


def _segments(anchor: Any) -> Select[tuple[object, ...]]:
    """The segments of a path, root first: ``(segment_id, top, total)`` for each, ``top`` the depth where the
    path leaves it (the anchor's depth for the anchor's own segment) and ``total`` the running total there.
    ``anchor`` gives the first of them and ``up``, the parent of its segment's first node.

    One recursive CTE that both SQLite and PostgreSQL run, one hop a segment: from a segment's first node
    (whose id is the segment's id) to its parent, in the segment the path came from. A path has as many
    segments as fork points on the way up, not steps.

    Every lookup is a scalar subquery on the whole primary key (conversation, id), never a join: PostgreSQL
    plans a join in the recursive term from its statistics, and with none (a new table, autovacuum off) or
    for a conversation far longer than the average it scanned the conversation's nodes at every hop,
    O(steps^2): 0.4 s at 2,000 steps. A subquery on the whole key is one index probe whatever the
    statistics say.
    """
    found = anchor.cte("segments", recursive=True)
    found = found.union_all(
        sa.select(
            _at("segment_id", found.c.up),
            _at("depth", found.c.up),
            _at("total_tokens", found.c.up),
            _at("parent_id", _at("segment_id", found.c.up)),
        ).where(found.c.up.is_not(None))
    )
    return sa.select(found.c.segment_id, found.c.top, found.c.total).order_by(found.c.top)


SEGMENTS_FROM_BRANCH = _segments(
    sa.select(
        _at("segment_id", b.c.head_id).label("segment_id"),
        _at("depth", b.c.head_id).label("top"),
        _at("total_tokens", b.c.head_id).label("total"),
        _at("parent_id", _at("segment_id", b.c.head_id)).label("up"),
    ).where(
        b.c.conversation_id == sa.bindparam("conversation_id"),
        b.c.name == sa.bindparam("branch"),
        b.c.head_id.is_not(None),
    )
)
SEGMENTS_FROM_NODE = _segments(
    sa.select(
        n.c.segment_id,
        n.c.depth.label("top"),
        n.c.total_tokens.label("total"),
        _at("parent_id", n.c.segment_id).label("up"),
    ).where(n.c.conversation_id == sa.bindparam("conversation_id"), n.c.id == sa.bindparam("node_id"))
)


class _IdList(TypeDecorator[list[str]]):
    """A list of ids as one parameter (``_InIds``), so that a statement that takes a list is compiled once
    and goes to the driver directly (``compile_once``), where an ``expanding`` parameter is rendered by
    SQLAlchemy at every execution. On SQLite the JSON array of their stored forms (``json_each`` reads
    it); on PostgreSQL the list itself (psycopg sends an array, cast to ``uuid[]``)."""

    impl = sa.Text()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(sa.Text()))
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        stored = Id._cached_bind_processor(dialect)  # the id column's own conversion (SQLite: no dashes)
        return json.dumps(value if stored is None else [stored(item) for item in value])


class _InIds(FunctionElement[bool]):
    """``column`` is one of the ids of a list parameter (``_IdList``): SQLite ``column IN (SELECT value FROM
    json_each(:ids))``, PostgreSQL ``column = ANY(CAST(:ids AS UUID[]))``."""

    type = NullType()  # type: ignore[assignment]  # not Boolean: SQLite would get "... = 1", no index for IN
    inherit_cache = True
    name = "convstore_in_ids"


@compiles(_InIds, "sqlite")
def _in_ids_sqlite(element: _InIds, compiler: Any, **kw: Any) -> str:
    column, ids = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"{column} IN (SELECT value FROM json_each({ids}))"  # noqa: S608 -- compiled SQL, no value


@compiles(_InIds, "postgresql")
def _in_ids_postgresql(element: _InIds, compiler: Any, **kw: Any) -> str:
    column, ids = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"{column} = ANY(CAST({ids} AS UUID[]))"


def _in_list(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column`` among the ids of the parameter ``name`` (``_InIds``)."""
    return _InIds(column, sa.bindparam(name, type_=_IdList()))


def _branches_through(*, many: bool) -> Select[tuple[object, ...]]:
    """Which branches lead through each of some nodes: ``(conversation id, node id, branch)`` rows, each
    conversation's branches oldest first. The segments of every branch's path (as ``_segments`` walks them,
    a hop per fork point), each joined to the given nodes that lie in it at or above the depth where the
    path leaves it.

    ``many``: the branches of several conversations (``conversation_ids``) in one statement, the
    conversation carried through the recursion, the ids given as one parameter each (``_IdList``), so
    that the statement goes to the driver directly (expanded by SQLAlchemy, it went through SQLAlchemy's
    execution, which cost a search for a rare word in one owner's steps on SQLite about as much Python as
    SQLite spent running it); otherwise of one (``conversation_id``, the nodes ``node_ids`` expanded),
    which Citus routes to its shard (it runs a recursive query on one shard only).
    """
    where: ColumnElement[bool]
    where_nodes: ColumnElement[bool]
    node_ids: ColumnElement[bool]
    if many:
        where = _in_list(b.c.conversation_id, "conversation_ids")
        where_nodes = _in_list(n.c.conversation_id, "conversation_ids")
        node_ids = _in_list(n.c.id, "node_ids")
    else:
        where = b.c.conversation_id == sa.bindparam("conversation_id")
        where_nodes = n.c.conversation_id == sa.bindparam("conversation_id")
        node_ids = n.c.id.in_(sa.bindparam("node_ids", expanding=True))
    at = functools.partial(_at, conversation=b.c.conversation_id if many else None)
    anchor = sa.select(
        b.c.conversation_id,
        b.c.name.label("branch"),
        b.c.created_at.label("made"),
        at("segment_id", b.c.head_id).label("segment_id"),
        at("depth", b.c.head_id).label("top"),
        at("parent_id", at("segment_id", b.c.head_id)).label("up"),
    ).where(where, b.c.head_id.is_not(None))
    found = anchor.cte("branch_segments", recursive=True)
    hop = functools.partial(_at, conversation=found.c.conversation_id if many else None)
    found = found.union_all(
        sa.select(
            found.c.conversation_id,
            found.c.branch,
            found.c.made,
            hop("segment_id", found.c.up),
            hop("depth", found.c.up),
            hop("parent_id", hop("segment_id", found.c.up)),
        ).where(found.c.up.is_not(None))
    )
    # The nodes by their whole primary key first (a few probes), then matched to the segments: never a
    # scan of each segment's nodes up to the depth where a path leaves it.
    hits = (
        sa.select(n.c.conversation_id, n.c.id, n.c.segment_id, n.c.depth)
        .where(node_ids, where_nodes)
        .cte("hits")
        .prefix_with("MATERIALIZED")  # SQLite would fold it into the join and scan segments instead
    )
    return (
        sa.select(hits.c.conversation_id, hits.c.id, found.c.branch)
        .select_from(
            hits.join(
                found,
                sa.and_(
                    found.c.conversation_id == hits.c.conversation_id,
                    found.c.segment_id == hits.c.segment_id,
                    found.c.top >= hits.c.depth,
                ),
            )
        )
        .order_by(found.c.conversation_id, found.c.made, found.c.branch)
    )


BRANCHES_THROUGH = _branches_through(many=False)
BRANCHES_THROUGH_MANY = _branches_through(many=True)

# One segment of a path: its nodes from its first up to ``top``, served in depth order by the unique index
# (segment_id, conversation_id, depth) without a sort.
_IN_SEGMENT = sa.and_(
    n.c.segment_id == sa.bindparam("segment_id"),
    n.c.conversation_id == sa.bindparam("conversation_id"),
    n.c.depth <= sa.bindparam("top", type_=sa.Integer()),
)
_RAW = sa.String()
# On a node that names Files API uris only: the earliest expiry of the conversation's recorded files (as
# text), so a replay whose files all live on needs no query of its own for them (``_lifecycle``). The
# subquery names the conversation by its parameter, as the scan does: a distributed database routes both to
# the one shard.
_FILES_FRESH = sa.case(
    (
        n.c.files.is_not(None),
        sa.cast(
            sa.select(sa.func.min(fl.c.expires_at))
            .where(fl.c.conversation_id == sa.bindparam("conversation_id"))
            .scalar_subquery(),
            _RAW,
        ),
    ),
    else_=sa.null(),
).label("files_fresh")
# history() of an encrypted branch (each node's id opens its payload; a plaintext one is HISTORY_BYTES_SCAN).
# Its ids come back as the driver gives them (``_ids.canonical_id`` converts the few that are needed):
# converting every row's ids to UUIDs and back to text was 40% of the time of a replay.
HISTORY_SCAN = (
    sa.select(
        # Cast to text by the server: psycopg would build a uuid.UUID for each of them (one per row, two
        # columns: a third of a 20,000-step read); the path's depth and total are the segments statement's.
        sa.cast(n.c.id, _RAW).label("id"),
        sa.cast(n.c.exchange_id, _RAW).label("exchange_id"),
        n.c.payload,
        n.c.media,
        n.c.files,
        _FILES_FRESH,
    )
    .where(_IN_SEGMENT)
    .order_by(n.c.depth)
)


class _Utf8(FunctionElement[bytes]):
    """A text column's UTF-8 bytes, read without a decode: SQLite ``CAST(x AS BLOB)`` (its bytes as stored,
    UTF-8 in every convstore database), PostgreSQL ``convert_to(x, 'UTF8')`` (a ``bytea``; never a cast,
    which would read backslashes in the text as escapes). Elsewhere the text itself."""

    type = sa.LargeBinary()
    inherit_cache = True
    name = "convstore_utf8"


@compiles(_Utf8)
def _utf8_default(element: _Utf8, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)  # type: ignore[no-any-return]


@compiles(_Utf8, "sqlite")
def _utf8_sqlite(element: _Utf8, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS BLOB)"


@compiles(_Utf8, "postgresql")
def _utf8_postgresql(element: _Utf8, compiler: Any, **kw: Any) -> str:
    return f"convert_to({compiler.process(element.clauses, **kw)}, 'UTF8')"


def _only_where(condition: ColumnElement[bool], column: Any) -> Any:
    return sa.case((condition, sa.cast(column, _RAW)), else_=sa.null())


# history() of a plaintext branch, the request's bytes: each payload as UTF-8 bytes (what the request sends,
# joined without a decode or an encode) and its media column. Only the segment's last node names its ids
# (the head, when it is the path's last segment), and a node with media its own (for an error that names
# it): the others are never used. Read as the driver's rows (``Exec(rows=True)``): on PostgreSQL with binary
# results, as a bytea in text would be sent as hex.
def _history_bytes(segment_id: Any, top: Any, *also: ColumnElement[bool]) -> Select[tuple[object, ...]]:
    at_top = n.c.depth == top
    return (
        sa.select(
            _only_where(sa.or_(at_top, n.c.media.is_not(None), n.c.files.is_not(None)), n.c.id).label("id"),
            _only_where(at_top, n.c.exchange_id).label("exchange_id"),
            _Utf8(n.c.payload).label("payload"),
            n.c.media,
            n.c.files,
            _FILES_FRESH,
        )
        .where(
            n.c.segment_id == segment_id,
            n.c.conversation_id == sa.bindparam("conversation_id"),
            n.c.depth <= top,
            *also,
        )
        .order_by(n.c.depth)
    )


HISTORY_BYTES_SCAN = _history_bytes(sa.bindparam("segment_id"), sa.bindparam("top", type_=sa.Integer()))


def _of_head(column: str) -> sa.ScalarSelect[object]:
    """One column of the branch's head node (the ``conversation_id`` and ``branch`` parameters)."""
    head = n.alias()
    return (
        sa.select(head.c[column])
        .select_from(
            b.join(head, sa.and_(head.c.conversation_id == b.c.conversation_id, head.c.id == b.c.head_id))
        )
        .where(b.c.conversation_id == sa.bindparam("conversation_id"), b.c.name == sa.bindparam("branch"))
        .scalar_subquery()
    )


# What opening a short plaintext branch reads beside its record (``_reads.open_branch``):
# HISTORY_BYTES_SCAN of the head's segment up to the head, found by the head itself, when the head is less
# than ``limit`` deep and the conversation is plaintext and ``owner``'s. The whole path when the branch
# never forked above it (the segment starts at the root); else only its last segment, and the path is read
# again.
HEAD_SEGMENT_BYTES_SCAN = _history_bytes(
    _of_head("segment_id"),
    # The head's depth when it is under ``limit``, else -1: the index range's one upper bound, so that a
    # deep branch is not walked to return nothing (a condition beside it, ``depth < limit``, left SQLite
    # walking a segment of 100,000 nodes: 11 ms an open).
    sa.case((_of_head("depth") < sa.bindparam("limit", type_=sa.Integer()), _of_head("depth")), else_=-1),
    sa.exists().where(c.c.id == sa.bindparam("conversation_id"), c.c.encryption.is_(None), OWNED_BY),
)
# What ``history()`` of a plaintext branch reads first: HISTORY_BYTES_SCAN of the head's segment up to the
# head, with the head's depth, running total and segment on its row. The whole path, in one statement (one
# snapshot), when the segment starts at the root (the branch never forked above it); else the segments
# above are read after it, from the head it found.
_AT_HEAD = n.c.depth == _of_head("depth")
HEAD_HISTORY_BYTES_SCAN = _history_bytes(_of_head("segment_id"), _of_head("depth")).add_columns(
    sa.case((_AT_HEAD, n.c.depth), else_=sa.null()).label("head_depth"),
    sa.case((_AT_HEAD, n.c.total_tokens), else_=sa.null()).label("head_total"),
    _only_where(_AT_HEAD, n.c.segment_id).label("head_segment"),
)
PATH_SCAN = sa.select(*NODE_COLUMNS).where(_IN_SEGMENT).order_by(n.c.depth)
PATH_EXCHANGES_SCAN = sa.select(n.c.exchange_id).where(_IN_SEGMENT).order_by(n.c.depth)
# The Files API uris a path names (``Conversation.files``): each node's id and ``files`` column, no payload
# and no media (a branch of big images is read without them).
PATH_FILES_SCAN = (
    sa.select(sa.cast(n.c.id, _RAW).label("id"), n.c.files).where(_IN_SEGMENT).order_by(n.c.depth)
)


# Ids as the driver gives them (see HISTORY_SCAN): the first exchange's rows join a budget window's, read so
# too (``_windows``).
_WINDOW_COLUMNS = (
    sa.type_coerce(n.c.id, _RAW).label("id"),
    sa.type_coerce(n.c.parent_id, _RAW).label("parent_id"),
    n.c.depth,
    sa.type_coerce(n.c.exchange_id, _RAW).label("exchange_id"),
    n.c.type,
    n.c.token_count,
    n.c.total_tokens,
    n.c.payload,
    n.c.media,
)

# The steps of a path's first exchange, from its root node (a segment's id names its first node, so the
# root is the id of the path's first segment).
_root = n.alias("root")
_ROOT_EXCHANGE = (
    sa.select(_root.c.exchange_id)
    .where(_root.c.conversation_id == sa.bindparam("conversation_id"), _root.c.id == sa.bindparam("root_id"))
    .scalar_subquery()
)
FIRST_EXCHANGE_NODES = (
    sa.select(*_WINDOW_COLUMNS)
    .where(n.c.conversation_id == sa.bindparam("conversation_id"), n.c.exchange_id == _ROOT_EXCHANGE)
    .order_by(n.c.depth)
)


compile_once(globals())  # every statement above goes to the driver directly (see _engine._fastpath)
