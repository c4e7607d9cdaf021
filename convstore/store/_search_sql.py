"""The search's statements (``_search`` checks the query and makes the hits): which candidates, in which
order, and the encrypted count, built for the filters a search sets.

**Only the filters a search sets are in its statement.** One statement with every filter written as
``(:value IS NULL OR column = :value)`` cannot use an index for the filters that are set on SQLite (it
plans before it sees the values), and joins each candidate to its conversation even when neither the owner
nor the model is asked for. So the statement is built for the set of filters given (cached, a few dozen at
most): the owner, when the store has one, is ``owner = :owner`` in the SQL of every statement, as before;
a search of every owner with no model filter reads the index alone, with no join to the conversations
(for the ten-thousand-row topic query on SQLite, the join was more than the candidates' own lookup).
Which rows and which order are the same as with the single statement.

**An owner on SQLite is in the index.** FTS5 walks its matches newest first and cannot skip the ones of
other owners it is not told about: for a word in half the steps and an owner of 1% of the conversations,
it walked about 100,000 matches to keep 1,000 (90 to 190 ms). Each FTS5 row holds its owner's token in a
second column (migration 0013), and an owner's search asks for it with the words (``_OWNED_MATCH``), so
that FTS5 intersects the two lists (25 to 30 ms for the same search). The words are always asked for in
the text column, so that no word matches an owner's token.

**Which hits.** The newest ``candidates`` matches within the owner and filters (SQLite: by the index's
rowid, the order rows were indexed; PostgreSQL: by ``created_at``, then conversation and node ids), ranked
by the engine's relevance, best first (ties: the newer first). A cursor carries the newest candidate's key
(``bound``), so that later pages rank the same candidates.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from convstore.store._engine import compile_once
from convstore.store._schema import PREFIX, SEARCH_FTS, UTCDateTime
from convstore.store._schema import conversations as c
from convstore.store._schema import search as se

__all__ = [
    "CANDIDATES",
    "EPOCH",
    "LISTED_MAX",
    "Filters",
    "SearchRequest",
    "encrypted_count",
    "fts5_query",
    "owned_conversations",
    "params",
    "statement",
]

# How many of the newest matches a search ranks (``candidates``): the bound on a page's ranking work.
CANDIDATES = 1_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NO_BOUND = 2**63 - 1  # SQLite: the largest rowid (a first page's bound; a constant keeps FTS5's range scan)


@attrs.frozen
class SearchRequest:
    """A checked search: its words and filters, the page wanted."""

    words: tuple[str, ...]
    limit: int
    offset: int
    model: str | None
    since: datetime | None
    until: datetime | None
    conversation_id: str | None
    step_types: tuple[str, ...] | None
    candidates: int = CANDIDATES
    # The newest candidate's key (SQLite: its index rowid; PostgreSQL: its time in microseconds since the
    # epoch), fixed by the first page so that later pages rank the same candidates; None on a first page.
    bound: int | None = None


@attrs.frozen
class Filters:
    """Which filters a search sets: what its statements are built with."""

    owner: bool = False
    model: bool = False
    conversation: bool = False
    since: bool = False
    until: bool = False
    typed: bool = False
    bound: bool = False  # PostgreSQL: a later page's (SQLite always bounds the rowid)
    listed: bool = False  # PostgreSQL: the owner's conversations given as a list (``owned_conversations``)

    @classmethod
    def of(cls, request: SearchRequest, owner: str | None, *, listed: bool = False) -> Filters:
        return cls(
            listed=listed,
            owner=owner is not None,
            model=request.model is not None,
            conversation=request.conversation_id is not None,
            since=request.since is not None,
            until=request.until is not None,
            typed=request.step_types is not None,
            bound=request.bound is not None,
        )


_OWNER = sa.bindparam("owner", type_=sa.Text())
_fts = sa.table(SEARCH_FTS, sa.column("rowid"))
_MATCH = sa.bindparam("match", type_=sa.Text())
_FTS_MATCH = sa.literal_column(SEARCH_FTS).op("MATCH")(_MATCH)
# FTS5's BM25 of the words' column alone (weights: ``text`` 1, ``owner`` 0): the owner's token, in every row
# of the owner, adds nothing to a row's rank. Lower is better: negated, so that higher is better everywhere.
_RANK = sa.literal_column(f"-bm25({SEARCH_FTS}, 1.0, 0.0)", type_=sa.Float())
# SQLite, a store bound to an owner: FTS5 asked for the owner's token too (``owner : o<key>``, the key from
# the owner's row in ``search_owners``; none: ``o0``, which no row has), so that FTS5 intersects the word's
# rows with the owner's and stops at the ``candidates``-th (migration 0013).
_search_owners = sa.table(
    f"{PREFIX}search_owners", sa.column("id", sa.Integer()), sa.column("owner", sa.String(255))
)
_OWNER_KEY = sa.select(_search_owners.c.id).where(_search_owners.c.owner == _OWNER)
_OWNED_MATCH = (
    sa.literal_column("'owner : o'", sa.Text())
    .concat(sa.func.coalesce(_OWNER_KEY.scalar_subquery(), sa.literal_column("0")))
    .concat(sa.literal_column("' AND '", sa.Text()))
    .concat(_MATCH)
    .self_group()
)
_ROWID: sa.ColumnElement[int] = sa.literal_column(f"{se.name}.id")
_DOCUMENT = sa.literal_column(f"{se.name}.document", type_=postgresql.TSVECTOR())
_TSQUERY = sa.func.plainto_tsquery(
    # Rendered into the statement too (a configuration's name, checked by ``check_language``): a literal
    # cast to regconfig is a constant when PostgreSQL parses the statement, and the whole query then one
    # tsquery at planning. A parameter's cast is a stable function, so PostgreSQL built the tsquery again
    # for every row it tested and ranked: 37 against 23 ms for a common word in one owner's 10,000 steps.
    sa.cast(sa.bindparam("language", type_=sa.Text(), literal_execute=True), postgresql.REGCONFIG()),
    # Rendered into the statement (quoted by the dialect; the words are letters, digits and marks only):
    # a prepared statement's generic plan cannot see how rare the words are, and PostgreSQL then probed the
    # GIN index once per conversation (220 ms for a word in 100 of 1,000,000 steps, against 10 ms).
    sa.bindparam("words", type_=sa.Text(), literal_execute=True),
)
_MODEL = sa.bindparam("model", type_=sa.Text())
_CONVERSATION = sa.bindparam("conversation_id", type_=se.c.conversation_id.type)
_SINCE = sa.bindparam("since", type_=UTCDateTime())
_UNTIL = sa.bindparam("until", type_=UTCDateTime())
_BOUND = sa.bindparam("bound", type_=sa.BigInteger())
_BOUND_TIME = sa.bindparam("bound", type_=UTCDateTime())
_CANDIDATES = sa.bindparam("candidates", type_=sa.Integer())
# PostgreSQL: plan the search for its own values every time. The driver prepares a statement whose text it
# has run five times, and PostgreSQL may then reuse a generic plan, blind to which filters are unset, to the
# bound and to the owner's list: the same plan for a rare word as for a common one (a rare word's page went
# from 16 ms to 886 ms after ten runs). So each run's text is its own: the run's number is written into it,
# a column nobody reads (the words are already; this covers a search run again with the same words). It
# replaces a ``SET plan_cache_mode`` before the search and a ``RESET`` after: two round trips a search.
_RUN = sa.bindparam("run", type_=sa.Integer(), literal_execute=True)
_RUNS = itertools.count(1)


# PostgreSQL, a store bound to an owner: up to this many of the owner's conversations are listed in the
# search statement itself (``owned_conversations``). Joined to them instead, PostgreSQL planned a loop over
# the owner's conversations that scanned the GIN index again for each (it prices one scan low): 0.6 to 1 s
# for a topic word with a common one, for an owner of 100 conversations among 10,000. Given the list, it
# sees how few rows the owner has and scans the GIN index once (10 to 25 ms for the same search). An owner
# with more conversations keeps the join (a longer list costs more to pass and to test than it saves).
LISTED_MAX = 1_000


def _direct(statement: sa.Select[Any]) -> sa.Select[Any]:
    """A statement built once for a set of filters (the functions here are cached: it lives as long as the
    process), registered to go to the driver directly as the store's constant statements do
    (``_engine.compile_once``): through SQLAlchemy's execution, a search for a rare word in one owner's
    steps spent as long in Python as in SQLite. One that SQLAlchemy must expand or render at execution (a
    list of step types, PostgreSQL's words) still goes through it: the short way steps aside by itself."""
    compile_once({"statement": statement})
    return statement


@functools.cache
def owned_conversations(*, model: bool) -> sa.Select[Any]:
    """The owner's conversations (within the model filter), at most ``most`` of them: the list a search
    statement takes (``LISTED_MAX``)."""
    where = [c.c.owner == _OWNER]
    if model:
        where.append(c.c.model == _MODEL)
    return _direct(sa.select(c.c.id).where(*where).limit(sa.bindparam("most", type_=sa.Integer())))


@functools.cache
def encrypted_count(*, owner: bool, model: bool, conversation: bool) -> sa.Select[Any]:
    """The conversations a search could not look into: encrypted ones, of the owner, within its filters
    (with an owner, the owner's index finds them instead of a scan of every conversation)."""
    where: list[sa.ColumnElement[bool]] = [c.c.encryption.is_not(None)]
    if owner:
        where.append(c.c.owner == _OWNER)
    if model:
        where.append(c.c.model == _MODEL)
    if conversation:
        where.append(c.c.id == _CONVERSATION)
    return _direct(sa.select(sa.func.count()).select_from(c).where(*where))


def _conditions(filters: Filters, *, dialect: str) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    of_conversation: list[sa.ColumnElement[bool]] = []
    if filters.owner:
        of_conversation.append(c.c.owner == _OWNER)
    if filters.model:
        of_conversation.append(c.c.model == _MODEL)
    if of_conversation and dialect == "sqlite":
        # The owner's conversations listed once (from the owner's index), each candidate tested against
        # the list (a fifth faster than a join to each candidate's conversation). For the owner, FTS5 has
        # already kept only the owner's rows (``_OWNED_MATCH``): the list says so again in the SQL, as every
        # statement does, and costs no more than a millisecond for 1,000 candidates.
        where.append(se.c.conversation_id.in_(sa.select(c.c.id).where(*of_conversation)))
    else:
        where.extend(of_conversation)  # PostgreSQL: with the conversations joined (``statement``)
    if filters.listed:
        # The owner's conversations, listed: PostgreSQL sees them as a constant array (``LISTED_MAX``).
        where.append(se.c.conversation_id.in_(sa.bindparam("listed", expanding=True)))
    if filters.conversation:
        where.append(se.c.conversation_id == _CONVERSATION)
    if filters.since:
        where.append(se.c.created_at >= _SINCE)
    if filters.until:
        where.append(se.c.created_at < _UNTIL)
    if filters.typed:
        where.append(se.c.type.in_(sa.bindparam("step_types", expanding=True)))
    return where


@functools.cache
def statement(dialect: str, filters: Filters) -> sa.Select[Any]:
    """The search of one backend: the owner's matching steps within the filters, a page of them (``limit``
    + 1 rows from ``offset``) best first among the newest ``candidates`` at or before ``bound``.

    Two steps, so that a page's ranking work is bounded whatever the query: the candidates, found newest
    first (SQLite: FTS5 walks the words' doclists by descending rowid, a rowid range from ``bound``, and
    for an owner the owner token's doclist with them;
    PostgreSQL: the GIN index for rare words, or the ``created_at`` index walked backwards, each row's
    document tested, for common ones) and ranked as they are found, at most ``candidates`` of them; then
    the page, ordered by rank, its rows' text joined back. Each row carries the newest candidate's key
    (``bound``), for the next page's cursor. The conversations are read only for the owner or the model
    (PostgreSQL: joined; SQLite: the matching conversations listed once).
    """
    where = _conditions(filters, dialect=dialect)
    joined = filters.owner or filters.model
    if dialect == "sqlite":
        # The search rows are read for the candidates only when a filter needs their columns: reading each
        # candidate's row was most of the time of finding a topic word's candidates (18 of 20 ms).
        match = sa.literal_column(SEARCH_FTS).op("MATCH")(_OWNED_MATCH) if filters.owner else _FTS_MATCH
        found = (
            sa.select(_fts.c.rowid.label("id"), _RANK.label("rank"))
            .select_from(_fts.join(se, _fts.c.rowid == _ROWID) if where else _fts)
            .where(match, _fts.c.rowid <= _BOUND, *where)
            .order_by(_fts.c.rowid.desc())
            .limit(_CANDIDATES)
            .subquery("candidates")
        )
        best: tuple[str, ...] = ("rank", "id")
        page = sa.select(found, sa.func.max(found.c.id).over().label("bound"))
    else:
        if filters.bound:
            where.append(se.c.created_at <= _BOUND_TIME)
        found = (
            sa.select(
                se.c.conversation_id,
                se.c.node_id,
                se.c.created_at,
                sa.func.ts_rank(_DOCUMENT, _TSQUERY).label("rank"),
            )
            .select_from(se.join(c, c.c.id == se.c.conversation_id) if joined else se)
            .where(_DOCUMENT.op("@@")(_TSQUERY), *where)
            .order_by(se.c.created_at.desc(), se.c.conversation_id.desc(), se.c.node_id.desc())
            .limit(_CANDIDATES)
            .subquery("candidates")
        )
        best = ("rank", "created_at", "conversation_id", "node_id")
        page = sa.select(found, sa.func.max(found.c.created_at).over().label("bound"))
    # The page picked among the candidates first, then its rows' text read (never the candidates').
    paged = (
        page.order_by(*(found.c[name].desc() for name in best))
        .limit(sa.bindparam("limit", type_=sa.Integer()))
        .offset(sa.bindparam("offset", type_=sa.Integer()))
        .subquery("page")
    )
    names = ("id",) if dialect == "sqlite" else ("conversation_id", "node_id")
    key = [paged.c[name] == (_ROWID if name == "id" else se.c[name]) for name in names]
    columns = (se.c.conversation_id, se.c.node_id, se.c.type, se.c.created_at, se.c.text)
    run = [] if dialect == "sqlite" else [_RUN.label("run")]
    return _direct(
        sa.select(*columns, paged.c.rank, paged.c.bound, *run)
        .select_from(paged.join(se, sa.and_(*key)))
        .order_by(*(paged.c[name].desc() for name in best))
    )


def fts5_query(words: Sequence[str]) -> str:
    """Every word as a quoted FTS5 string (a phrase of the words the tokenizer finds in it), all required, in
    the text column (never in ``owner``, whose tokens are no one's words)."""
    return "text : (" + " ".join('"' + word.replace('"', '""') + '"' for word in words) + ")"


def params(request: SearchRequest, owner: str | None, *, dialect: str, language: str) -> dict[str, Any]:
    """The search statement's parameters (those of filters it does not set are unused)."""
    values: dict[str, Any] = {
        "owner": owner,
        "model": request.model,
        "conversation_id": request.conversation_id,
        "since": request.since,
        "until": request.until,
        "limit": request.limit + 1,
        "offset": request.offset,
        "candidates": request.candidates,
    }
    if dialect == "sqlite":
        values["match"] = fts5_query(request.words)
        values["bound"] = _NO_BOUND if request.bound is None else request.bound
    else:
        values["language"] = language
        values["run"] = next(_RUNS)
        values["words"] = " ".join(request.words)
        values["bound"] = None if request.bound is None else EPOCH + timedelta(microseconds=request.bound)
    if request.step_types is not None:
        values["step_types"] = list(request.step_types)
    return values
