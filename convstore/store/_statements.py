"""Every SQL statement of the store, built once with bound parameters.

Built at import, so SQLAlchemy compiles each once per dialect and caches it; sync and async stores execute
these same objects. Every value reaches SQL as a bound parameter, and every statement names its conversation.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Select
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from convstore.store._schema import branches as b
from convstore.store._schema import conversations as c
from convstore.store._schema import erased as er
from convstore.store._schema import exchanges as x
from convstore.store._schema import files as fl
from convstore.store._schema import media as m
from convstore.store._schema import nodes as n
from convstore.store._schema import search as se
from convstore.store._schema import summaries as sm

__all__ = [
    "BRANCHES_THROUGH",
    "BRANCHES_THROUGH_MANY",
    "BRANCH_EXISTS",
    "CALIBRATION",
    "CONVERSATION_EXISTS",
    "CONVERSATION_VISIBLE",
    "DELETE_BRANCHES",
    "DELETE_CONVERSATION",
    "DELETE_EXCHANGES",
    "DELETE_FILES",
    "DELETE_MEDIA",
    "DELETE_NODES",
    "DELETE_SEARCH",
    "DELETE_SUMMARIES",
    "ENCRYPTED_CONVERSATIONS",
    "ERASED",
    "EXCHANGE",
    "EXCHANGES",
    "EXCHANGE_CONTINUES",
    "EXCHANGE_NODES",
    "FIRST_EXCHANGE_NODES",
    "FORGET_ERASED",
    "HISTORY_BYTES_SCAN",
    "HISTORY_SCAN",
    "HOLD_AT_TIP",
    "HOLD_AT_TIP_FOR_EXCHANGE",
    "HOLD_CONVERSATION",
    "HOLD_FOR_FORK",
    "INSERT_BRANCH",
    "INSERT_CONVERSATION",
    "INSERT_ERASED",
    "INSERT_EXCHANGE",
    "INSERT_MEDIA",
    "INSERT_NODES",
    "INSERT_SEARCH",
    "INSERT_SUMMARY",
    "LIST_BRANCHES",
    "LOAD_CONVERSATION",
    "LOCK_CONVERSATION",
    "MEDIA",
    "MEDIA_STORED",
    "MOVE_HEAD",
    "NODE",
    "NODE_COLUMNS",
    "OWNED_BY",
    "PATH_EXCHANGES_SCAN",
    "PATH_FILES_SCAN",
    "PATH_SCAN",
    "SEGMENTS_FROM_BRANCH",
    "SEGMENTS_FROM_NODE",
    "STALE_CONVERSATION",
    "STALE_CONVERSATIONS",
    "SUMMARY",
    "TREE_NODES",
    "WINDOW_SCAN",
    "list_conversations",
]

NODE_COLUMNS = (
    n.c.id,
    n.c.parent_id,
    n.c.depth,
    n.c.exchange_id,
    n.c.type,
    n.c.token_count,
    n.c.total_tokens,
    n.c.created_at,
    n.c.payload,
    n.c.media,
)

INSERT_CONVERSATION = sa.insert(c)
INSERT_ERASED = sa.insert(er)
ERASED = sa.select(er.c.conversation_id).where(er.c.conversation_id == sa.bindparam("conversation_id"))
FORGET_ERASED = sa.delete(er).where(er.c.conversation_id == sa.bindparam("conversation_id"))
INSERT_BRANCH = sa.insert(b)
INSERT_NODES = sa.insert(n)

CONVERSATION_EXISTS = sa.select(c.c.id).where(c.c.id == sa.bindparam("conversation_id"))

# The owner filter every entry point applies: a store bound to an owner passes it; an unbound store passes
# None and sees every conversation.
_OWNER = sa.bindparam("owner", type_=sa.String(255))
OWNED_BY = sa.or_(_OWNER.is_(None), c.c.owner == _OWNER)

# A conversation, if it exists and the store's owner may see it.
CONVERSATION_VISIBLE = sa.select(c.c.id, c.c.encryption).where(
    c.c.id == sa.bindparam("conversation_id"), OWNED_BY
)

# The encrypted conversations an owner (None: anyone) may see, for key rotation.
ENCRYPTED_CONVERSATIONS = (
    sa.select(c.c.id).where(OWNED_BY, c.c.encryption.is_not(None)).order_by(c.c.created_at, c.c.id)
)

# What a delete takes first, before any other row of the conversation: the conversation row itself, FOR
# UPDATE on PostgreSQL (SQLite's BEGIN IMMEDIATE holds the whole database already). Every write to a
# conversation (nodes, media, exchanges, branches) checks its foreign key to this row, which takes a KEY SHARE
# lock on it that FOR UPDATE waits for and then blocks: a delete and the appends to its conversation are
# ordered by this one row, in the same order in both, so they never deadlock, and an append that comes
# after the delete finds the conversation gone.
LOCK_CONVERSATION = CONVERSATION_VISIBLE.with_for_update()
# What every write to a conversation takes first: FOR KEY SHARE, the lock its foreign-key checks take anyway,
# taken before any other row so that writes and deletes lock in one order (SQLite: a plain lookup).
HOLD_CONVERSATION = CONVERSATION_EXISTS.with_for_update(read=True, key_share=True)
# A fork's first statement: HOLD_CONVERSATION, and in the same statement the node it forks at (immutable, so
# read before the insert): its depth, running total, exchange and segment, NULL when there is no such node.
HOLD_FOR_FORK = (
    sa.select(c.c.id, n.c.id.label("node_id"), n.c.depth, n.c.total_tokens, n.c.exchange_id, n.c.segment_id)
    .select_from(
        c.outerjoin(
            n, sa.and_(n.c.conversation_id == c.c.id, n.c.id == sa.bindparam("at", type_=n.c.id.type))
        )
    )
    .where(c.c.id == sa.bindparam("conversation_id"))
    .with_for_update(read=True, key_share=True, of=c)
)

# Whether a node follows ``depth`` in a segment: an append after the node at ``depth`` continues the segment
# only when none does (the node is its segment's last). Unique index (segment_id, conversation_id, depth).
_SUCCESSOR = sa.and_(
    n.c.segment_id == sa.bindparam("segment_id"),
    n.c.conversation_id == sa.bindparam("conversation_id"),
    n.c.depth == sa.bindparam("depth", type_=sa.Integer()) + 1,
)
# An append's first statement: HOLD_CONVERSATION, and in the same statement whether the head already has a
# successor in its segment. Final on SQLite, whose writers are serialised (BEGIN IMMEDIATE); on PostgreSQL a
# concurrent appender may continue the segment first, which the unique index then tells (``SegmentTaken``).
HOLD_AT_TIP = (
    sa.select(c.c.id, sa.exists().where(_SUCCESSOR).label("continued"))
    .where(c.c.id == sa.bindparam("conversation_id"))
    .with_for_update(read=True, key_share=True, of=c)
)
# The same, for an append that names its exchange: whether that exchange is stored already (a retry after
# an unknown outcome), in the same statement and under the same lock.
_DONE = sa.exists().where(
    n.c.conversation_id == sa.bindparam("conversation_id"),
    n.c.exchange_id == sa.bindparam("exchange_id", type_=n.c.exchange_id.type),
)
HOLD_AT_TIP_FOR_EXCHANGE = (
    sa.select(c.c.id, sa.exists().where(_SUCCESSOR).label("continued"), _DONE.label("done"))
    .where(c.c.id == sa.bindparam("conversation_id"))
    .with_for_update(read=True, key_share=True, of=c)
)
EXCHANGE_NODES = (
    sa.select(*NODE_COLUMNS, n.c.segment_id)
    .where(
        n.c.conversation_id == sa.bindparam("conversation_id"), n.c.exchange_id == sa.bindparam("exchange_id")
    )
    .order_by(n.c.depth)
)
# Conversations untouched since a cutoff: created before it, no branch moved after it.
_STALE = sa.and_(
    c.c.created_at < sa.bindparam("cutoff", type_=c.c.created_at.type),
    ~sa.exists().where(
        b.c.conversation_id == c.c.id, b.c.updated_at >= sa.bindparam("cutoff", type_=b.c.updated_at.type)
    ),
)
STALE_CONVERSATIONS = sa.select(c.c.id).where(OWNED_BY, _STALE)
# The same test for one conversation, inside the transaction that deletes it (after LOCK_CONVERSATION).
STALE_CONVERSATION = sa.select(c.c.id).where(c.c.id == sa.bindparam("conversation_id"), _STALE)

BRANCH_EXISTS = sa.select(b.c.head_id).where(
    b.c.conversation_id == sa.bindparam("conversation_id"), b.c.name == sa.bindparam("branch")
)

# The conversation's record, and the branch's head with the head's depth and running total (NULLs for an
# empty branch; branch name NULL when there is no such branch).
LOAD_CONVERSATION = (
    sa.select(
        c.c.id,
        c.c.created_at,
        c.c.model,
        c.c.system_instruction,
        c.c.generation_config,
        c.c.tools,
        c.c.metadata,
        c.c.encryption,
        b.c.name,
        b.c.head_id,
        n.c.depth,
        n.c.total_tokens,
        n.c.exchange_id,
        n.c.segment_id,
    )
    .select_from(
        c.outerjoin(b, sa.and_(b.c.conversation_id == c.c.id, b.c.name == sa.bindparam("branch"))).outerjoin(
            n, sa.and_(n.c.conversation_id == b.c.conversation_id, n.c.id == b.c.head_id)
        )
    )
    .where(c.c.id == sa.bindparam("conversation_id"), OWNED_BY)
)

# Compare-and-swap of a branch head: moves only if the head is still where this writer last saw it.
MOVE_HEAD = (
    sa.update(b)
    .where(
        # Not "conversation_id": an UPDATE reserves its columns' names for its SET clause.
        b.c.conversation_id == sa.bindparam("in_conversation"),
        b.c.name == sa.bindparam("branch"),
        b.c.head_id.is_not_distinct_from(sa.bindparam("expected_head", type_=b.c.head_id.type)),
    )
    .values(head_id=sa.bindparam("new_head"), updated_at=sa.bindparam("now"))
)


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


LIST_BRANCHES = (
    sa.select(b.c.name, b.c.head_id, b.c.created_at, b.c.updated_at)
    .where(b.c.conversation_id == sa.bindparam("conversation_id"))
    .order_by(b.c.created_at, b.c.name)
)

NODE = sa.select(*NODE_COLUMNS).where(
    n.c.conversation_id == sa.bindparam("conversation_id"), n.c.id == sa.bindparam("node_id")
)

TREE_NODES = (
    sa.select(*NODE_COLUMNS)
    .where(n.c.conversation_id == sa.bindparam("conversation_id"))
    .order_by(n.c.depth, n.c.created_at, n.c.id)
)

INSERT_EXCHANGE = sa.insert(x)

EXCHANGE = sa.select(x).where(
    x.c.conversation_id == sa.bindparam("conversation_id"), x.c.exchange_id == sa.bindparam("exchange_id")
)

# The exchanges along a path, for usage totals: one row per recorded exchange.
EXCHANGES = (
    sa.select(x)
    .where(x.c.conversation_id == sa.bindparam("conversation_id"))
    .where(x.c.exchange_id.in_(sa.bindparam("exchange_ids", expanding=True)))
    .order_by(x.c.created_at)
)

# Whether a node is followed, inside its own exchange, by another step: then it is not the exchange's end.
EXCHANGE_CONTINUES = (
    sa.select(n.c.id)
    .where(
        n.c.conversation_id == sa.bindparam("conversation_id"),
        n.c.parent_id == sa.bindparam("node_id"),
        n.c.exchange_id == sa.bindparam("exchange_id"),
    )
    .limit(1)
)

# Media strings (``_media``): which of some hashes a conversation holds already, their texts, and an insert
# that leaves one a concurrent writer stored first as it is. ON CONFLICT DO NOTHING is the same SQL on SQLite
# and PostgreSQL, and PostgreSQL's construct of it compiles for both.
_MEDIA_NAMED = sa.and_(
    m.c.conversation_id == sa.bindparam("conversation_id"),
    m.c.hash.in_(sa.bindparam("hashes", expanding=True)),
)
MEDIA_STORED = sa.select(m.c.hash).where(_MEDIA_NAMED)
MEDIA = sa.select(m.c.hash, m.c.data).where(_MEDIA_NAMED)
INSERT_MEDIA = postgresql.insert(m).on_conflict_do_nothing(index_elements=[m.c.conversation_id, m.c.hash])

DELETE_MEDIA = sa.delete(m).where(m.c.conversation_id == sa.bindparam("conversation_id"))
DELETE_FILES = sa.delete(fl).where(fl.c.conversation_id == sa.bindparam("conversation_id"))
DELETE_SUMMARIES = sa.delete(sm).where(sm.c.conversation_id == sa.bindparam("conversation_id"))
DELETE_EXCHANGES = sa.delete(x).where(x.c.conversation_id == sa.bindparam("conversation_id"))
DELETE_BRANCHES = sa.delete(b).where(b.c.conversation_id == sa.bindparam("conversation_id"))
# The full-text index (``_search``): on SQLite, triggers keep the FTS5 table in step with these two.
INSERT_SEARCH = sa.insert(se)
DELETE_SEARCH = sa.delete(se).where(se.c.conversation_id == sa.bindparam("conversation_id"))
DELETE_NODES = sa.delete(n).where(n.c.conversation_id == sa.bindparam("conversation_id"))
DELETE_CONVERSATION = sa.delete(c).where(c.c.id == sa.bindparam("conversation_id"))


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


def _branches_through(*, many: bool) -> Select[tuple[object, ...]]:
    """Which branches lead through each of some nodes: ``(conversation id, node id, branch)`` rows, each
    conversation's branches oldest first. The segments of every branch's path (as ``_segments`` walks them,
    a hop per fork point), each joined to the given nodes that lie in it at or above the depth where the
    path leaves it.

    ``many``: the branches of several conversations (``conversation_ids``) in one statement, the
    conversation carried through the recursion; otherwise of one (``conversation_id``), which Citus routes
    to its shard (it runs a recursive query on one shard only).
    """
    where: ColumnElement[bool]
    where_nodes: ColumnElement[bool]
    if many:
        where = b.c.conversation_id.in_(sa.bindparam("conversation_ids", expanding=True))
        where_nodes = n.c.conversation_id.in_(sa.bindparam("conversation_ids", expanding=True))
    else:
        where = b.c.conversation_id == sa.bindparam("conversation_id")
        where_nodes = n.c.conversation_id == sa.bindparam("conversation_id")
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
        .where(n.c.id.in_(sa.bindparam("node_ids", expanding=True)), where_nodes)
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


_AT_TOP = n.c.depth == sa.bindparam("top", type_=sa.Integer())
# history() of a plaintext branch, the request's bytes: each payload as UTF-8 bytes (what the request sends,
# joined without a decode or an encode) and its media column. Only the segment's last node names its ids
# (the head, when it is the path's last segment), and a node with media its own (for an error that names
# it): the others are never used. Read as the driver's rows (``Exec(rows=True)``): on PostgreSQL with binary
# results, as a bytea in text would be sent as hex.
HISTORY_BYTES_SCAN = (
    sa.select(
        _only_where(sa.or_(_AT_TOP, n.c.media.is_not(None), n.c.files.is_not(None)), n.c.id).label("id"),
        _only_where(_AT_TOP, n.c.exchange_id).label("exchange_id"),
        _Utf8(n.c.payload).label("payload"),
        n.c.media,
        n.c.files,
        _FILES_FRESH,
    )
    .where(_IN_SEGMENT)
    .order_by(n.c.depth)
)
PATH_SCAN = sa.select(*NODE_COLUMNS).where(_IN_SEGMENT).order_by(n.c.depth)
PATH_EXCHANGES_SCAN = sa.select(n.c.exchange_id).where(_IN_SEGMENT).order_by(n.c.depth)
# The Files API uris a path names (``Conversation.files``): each node's id and ``files`` column, no payload
# and no media (a branch of big images is read without them).
PATH_FILES_SCAN = (
    sa.select(sa.cast(n.c.id, _RAW).label("id"), n.c.files).where(_IN_SEGMENT).order_by(n.c.depth)
)


def list_conversations(*, after: bool) -> Select[tuple[object, ...]]:
    """Newest first, keyset-paginated on (created_at, id); ``after`` adds the cursor condition."""
    query = sa.select(
        c.c.id,
        c.c.created_at,
        c.c.model,
        c.c.system_instruction,
        c.c.generation_config,
        c.c.tools,
        c.c.metadata,
        c.c.encryption,
    ).where(OWNED_BY)
    if after:
        query = query.where(
            sa.tuple_(c.c.created_at, c.c.id)
            < sa.tuple_(
                sa.bindparam("cursor_created_at", type_=c.c.created_at.type),
                sa.bindparam("cursor_id", type_=c.c.id.type),
            )
        )
    return query.order_by(c.c.created_at.desc(), c.c.id.desc()).limit(sa.bindparam("limit"))


LIST_FIRST = list_conversations(after=False)
LIST_AFTER = list_conversations(after=True)


# Ids as the driver gives them (see HISTORY_SCAN): a window reads hundreds of rows and uses the ids of a few
# (``_windows`` converts those); converting every row's three ids was half the time of a budgeted turn.
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

# A budget window is read from the head down, a batch at a time: the ``limit`` nodes of a segment at and
# below ``top``, newest first (the same index, scanned backwards).
WINDOW_SCAN = (
    sa.select(*_WINDOW_COLUMNS)
    .where(_IN_SEGMENT)
    .order_by(n.c.depth.desc())
    .limit(sa.bindparam("limit", type_=sa.Integer()))
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

SUMMARY = sa.select(sm.c.payload, sm.c.token_count).where(
    sm.c.conversation_id == sa.bindparam("conversation_id"), sm.c.node_id == sa.bindparam("node_id")
)
INSERT_SUMMARY = sa.insert(sm)

# The newest measured exchange among a window's exchanges: its measured/estimated ratio calibrates budgets.
CALIBRATION = (
    sa.select(x.c.input_tokens, x.c.estimated_input_tokens)
    .where(
        x.c.conversation_id == sa.bindparam("conversation_id"),
        x.c.exchange_id.in_(sa.bindparam("exchange_ids", expanding=True)),
        x.c.input_tokens.is_not(None),
        x.c.estimated_input_tokens.is_not(None),
    )
    .order_by(x.c.created_at.desc())
    .limit(1)
)
