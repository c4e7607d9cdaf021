"""Every SQL statement of the store, built once with bound parameters.

Built at import, so SQLAlchemy compiles each once per dialect and caches it; sync and async stores execute
these same objects. Every value reaches SQL as a bound parameter, and every statement names its conversation.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import Select

from convstore.store._engine import compile_once
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
    "APPEND_GUARD",
    "APPEND_GUARD_FOR_EXCHANGE",
    "BRANCH_EXISTS",
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
    "FORGET_ERASED",
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
    "STALE_CONVERSATION",
    "STALE_CONVERSATIONS",
    "SUMMARY",
    "TREE_NODES",
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

# An append's guard when it is sent with its commit (``Batch.guard``, ``_engine._committed``): divides by
# zero, refusing the commit, unless the compare-and-swap moved the branch to the new head (``new_head`` is
# a new node's id: no other writer can have set it). The other guesses of a batched append need no guard:
# a segment continued by another writer fails the nodes' insert (unique index), a conversation deleted
# under it the foreign keys.
_MOVED = (
    b.c.conversation_id == sa.bindparam("in_conversation"),
    b.c.name == sa.bindparam("branch"),
    b.c.head_id == sa.bindparam("new_head", type_=b.c.head_id.type),
)
APPEND_GUARD = sa.select(sa.literal_column("1") / sa.func.count()).select_from(b).where(*_MOVED)
# The same for an append that names its exchange: also that no other step of that exchange was stored
# before (an append sent again after an unknown outcome), which without an exchange row to insert nothing
# else would refuse. ``steps``: how many the append writes.
APPEND_GUARD_FOR_EXCHANGE = (
    sa.select(sa.literal_column("1") / sa.func.count())
    .select_from(b)
    .where(
        *_MOVED,
        sa.select(sa.func.count())
        .where(
            n.c.conversation_id == sa.bindparam("in_conversation"),
            n.c.exchange_id == sa.bindparam("exchange_id", type_=n.c.exchange_id.type),
        )
        .scalar_subquery()
        == sa.bindparam("steps", type_=sa.Integer()),
    )
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


def list_conversations(*, after: bool) -> Select[tuple[object, ...]]:
    """Newest first, keyset-paginated on (created_at, id); ``after`` adds the cursor condition. Read as the
    driver's tuples (``_conversations.list_conversations``): the id as text, cast by the server (psycopg
    would build a ``uuid.UUID`` for each)."""
    query = sa.select(
        sa.cast(c.c.id, sa.String()).label("id"),
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


SUMMARY = sa.select(sm.c.payload, sm.c.token_count).where(
    sm.c.conversation_id == sa.bindparam("conversation_id"), sm.c.node_id == sa.bindparam("node_id")
)
INSERT_SUMMARY = sa.insert(sm)


compile_once(globals())  # every statement above goes to the driver directly (see _engine._fastpath)
