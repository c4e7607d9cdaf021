"""Full-text search across conversations: what is indexed, how a query is read, and the search itself.

**What is indexed.** The text parts of ``user_input`` and ``model_output`` steps: what people wrote and read,
which is what someone looking for "the conversation where I asked about X" remembers. Not indexed:

- thoughts (their summaries are the model's working, hidden by most chat UIs; indexing them would find
  conversations by words nobody saw, and a hit could not be shown where the user would look);
- function calls and results, code execution, URL context and the other tool steps: names and JSON
  arguments are identifiers and machine output (ids, numbers, whole fetched pages), noise that would
  outweigh the conversation's own words and multiply the index's size;
- inline media (``data`` strings) and anything of an encrypted conversation: its plaintext never reaches
  the index (``search`` counts those conversations instead).

Each indexed step's text is taken after the redaction hook (it is the stored payload), NUL characters and
lone surrogates dropped (neither can be stored as text on PostgreSQL), and cut at ``MAX_INDEXED_CHARS``.

**How a query is read.** As plain words, never as the engine's syntax: the query is split into words
(letters, digits and combining marks; everything else separates them), and a step matches when its text has
every word. On SQLite each word is sent as a quoted FTS5 string; on PostgreSQL the words go through
``plainto_tsquery``. So ``NEAR``, ``AND``, ``OR``, ``NOT``, ``"``, ``*``, ``^``, ``:`` and parentheses are
ordinary text: a user typing them can neither break the search (a syntax error on the engine's side) nor
reach what the syntax can (column filters, prefix scans over the whole vocabulary). Queries are bounded
(``MAX_QUERY_CHARS``, ``MAX_WORDS``) and control characters refused: ``SearchQueryError``.

**Engines.** SQLite: an FTS5 table (``unicode61`` tokenizer, diacritics folded) over an external-content
table, kept in step by triggers, ranked by BM25. PostgreSQL: a stored ``tsvector`` under a GIN index, in a
text search configuration chosen per store (``simple`` by default: lower-cased words and no stemming, which
works for any language written with spaces between words), ranked by ``ts_rank``; on Citus the index table is
distributed by conversation id beside the others, so a search is one query fanned out to the shards.

**Which hits.** The newest ``candidates`` matches (``CANDIDATES`` by default) within the owner and filters,
ranked; never every match (a word in every step would rank a million rows for a page of 20). Newest is the
SQLite rowid (the order rows were indexed) and PostgreSQL's ``created_at``; a cursor carries the newest
candidate's key, so later pages rank the same candidates (the statements: ``_search_sql``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from convstore._ids import is_id
from convstore.errors import SearchQueryError, StoreBusyError
from convstore.model import SearchHit, SearchPage
from convstore.store import _paths as paths
from convstore.store import _search_sql as sql
from convstore.store._engine import Exec, Op, translate
from convstore.store._schema import SEARCH_FTS
from convstore.store._search_sql import CANDIDATES, EPOCH, SearchRequest

__all__ = [
    "CANDIDATES",
    "ERASE_DELETED_SQL",
    "INDEXED_TYPES",
    "MAX_CANDIDATES",
    "MAX_INDEXED_CHARS",
    "MAX_OFFSET",
    "MAX_QUERY_CHARS",
    "MAX_WORDS",
    "SearchRequest",
    "check_language",
    "erase_deleted",
    "index_rows",
    "make_snippet",
    "search",
    "search_request",
    "step_text",
    "words_of",
]

INDEXED_TYPES = frozenset({"user_input", "model_output"})
MAX_INDEXED_CHARS = 100_000  # of one step's text (a PostgreSQL tsvector holds at most 1 MB)
MAX_QUERY_CHARS = 1_000
MAX_WORDS = 32
MAX_OFFSET = 10_000  # how deep pages go: past it, a search is too vague to page through
MAX_CANDIDATES = 100_000
SNIPPET_CHARS = 160
_ELLIPSIS = "…"

_LANGUAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
# What neither backend can hold as text: NUL (PostgreSQL) and lone surrogates (no UTF-8 for them).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_language(language: str) -> str:
    """A PostgreSQL text search configuration's name (``simple``, ``english``, ``pg_catalog.german``).

    Raises:
        ValueError: not a configuration's name.
    """
    if not isinstance(language, str) or len(language) > 63 or not _LANGUAGE.fullmatch(language):
        raise ValueError("search_language: expected a text search configuration's name, such as 'simple'")
    return language


# Words


# What separates words: whitespace, ASCII and Latin-1 punctuation and symbols, the general punctuation,
# arrows-to-symbols, CJK punctuation, full-width punctuation and emoji blocks (what FTS5's unicode61 and
# PostgreSQL's parser split on, near enough for quoting words and marking them in snippets). Everything else
# is part of a word: letters, digits and combining marks (``\\w`` would split words at the marks of Indic
# scripts and keep ``_``).
_SEPARATORS = (
    r"\s\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f\u00a0-\u00bf\u00d7\u00f7"
    r"\u2000-\u206f\u2190-\u2bff\u3000-\u303f\uff00-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
    r"\U0001f000-\U0001faff"
)
_WORD = re.compile(f"[^{_SEPARATORS}]+")
_SEPARATOR = re.compile(f"[{_SEPARATORS}]")


def _folded(word: str) -> str:
    """A word as both engines compare it: case folded, diacritics removed."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words_of(query: object) -> list[str]:
    """The distinct words of a search query, in order.

    Raises:
        SearchQueryError: not a string, too long, a control character or lone surrogate, no word at all,
            or too many words.
    """
    if not isinstance(query, str):
        raise SearchQueryError("query", "invalid", f"expected a string, got {type(query).__name__}")
    if len(query) > MAX_QUERY_CHARS:
        raise SearchQueryError(
            "query", "too_long", f"longer than {MAX_QUERY_CHARS} characters ({len(query)})"
        )
    return _ascii_words(query) if query.isascii() else _unicode_words(query)


def _unicode_words(query: str) -> list[str]:
    for ch in query:
        category = unicodedata.category(ch)
        if category == "Cs":
            raise SearchQueryError("query", "invalid_text", "holds a lone surrogate (not valid Unicode text)")
        if category == "Cc" and ch not in "\t\n\r":
            raise SearchQueryError(
                "query", "control_character", f"holds the control character U+{ord(ch):04X}"
            )
    found: dict[str, str] = {}
    for match in _WORD.finditer(query):
        found.setdefault(_folded(match.group()), match.group())
    return _distinct(found)


# ``words_of`` of an ASCII query, the same words without a Unicode lookup a character (most queries): its
# control characters are C0 and DEL, its words runs of ASCII letters and digits, folded by ``lower``.
_ASCII_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_WORD = re.compile("[0-9A-Za-z]+")


def _ascii_words(query: str) -> list[str]:
    control = _ASCII_CONTROL.search(query)
    if control is not None:
        raise SearchQueryError(
            "query", "control_character", f"holds the control character U+{ord(control.group()):04X}"
        )
    found: dict[str, str] = {}
    for match in _ASCII_WORD.finditer(query):
        found.setdefault(match.group().lower(), match.group())
    return _distinct(found)


def _distinct(found: dict[str, str]) -> list[str]:
    if not found:
        raise SearchQueryError("query", "empty", "no word to look for (letters or digits)")
    if len(found) > MAX_WORDS:
        raise SearchQueryError(
            "query", "too_many_words", f"more than {MAX_WORDS} distinct words ({len(found)})"
        )
    return list(found.values())


# Indexing


def step_text(payload: str) -> str:
    """The text an indexed step's payload shows: its text parts, one a line, made storable and bounded."""
    try:
        content = json.loads(payload).get("content")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(content, list):
        return ""
    parts = [
        part["text"]
        for part in content
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    ]
    text = _UNSTORABLE.sub(" ", "\n".join(parts))
    return text[:MAX_INDEXED_CHARS]


def index_rows(conversation_id: str, rows: Sequence[dict[str, Any]], language: str) -> list[dict[str, Any]]:
    """The index rows of some new node rows (plaintext payloads): one per step with indexed text."""
    indexed = []
    for row in rows:
        if row["type"] not in INDEXED_TYPES:
            continue
        text = step_text(row["payload"])
        if text.strip():
            indexed.append(
                {
                    "conversation_id": conversation_id,
                    "node_id": row["id"],
                    "type": row["type"],
                    "created_at": row["created_at"],
                    "language": language,
                    "text": text,
                }
            )
    return indexed


# On SQLite < 3.42 (no FTS5 'secure-delete'), a deleted row's words stay in the FTS5 index's older segments
# until they are merged; 'optimize' merges every segment into one, without them, and ``secure_delete``
# zeroes the pages the old segments leave. Run after deletes, before the WAL is checkpointed.
ERASE_DELETED_SQL = f"INSERT INTO {SEARCH_FTS}({SEARCH_FTS}) VALUES ('optimize')"  # noqa: S608 -- a constant name
_OPTIMIZE = sa.text(ERASE_DELETED_SQL)


# FTS5 as SQLite 3.40 has it: each 'optimize' of an index whose segments sit on more than one level (new
# rows since the last one) puts the merged segment on a new level above them and leaves the lower ones empty,
# so the index gains a level with each delete; past 2,000 levels it no longer opens (SQLITE_CORRUPT_VTAB), and
# every append and search fails. Past ``MAX_INDEX_LEVELS`` the index is rebuilt from its content instead,
# which starts again at one level (deleted rows are not in the content: their words stay gone).
MAX_INDEX_LEVELS = 512
_STRUCTURE = sa.text(f"SELECT block FROM {SEARCH_FTS}_data WHERE id = 10")  # noqa: S608 -- FTS5's structure record
_REBUILD = sa.text(f"INSERT INTO {SEARCH_FTS}({SEARCH_FTS}) VALUES ('rebuild')")  # noqa: S608 -- a constant name


def index_levels(structure: bytes) -> int:
    """How many levels an FTS5 structure record lists: the varint after its 4-byte cookie (SQLite's varint:
    seven bits a byte, the high bit set on every byte but the last)."""
    levels = 0
    for byte in structure[4:13]:
        levels = (levels << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return levels


def erase_deleted() -> Op[None]:
    """SQLite: rewrite the FTS5 index without what deletes removed from it (see ``_OPTIMIZE``); rebuilt
    instead when it has gathered too many levels (``MAX_INDEX_LEVELS``)."""
    yield Exec(_OPTIMIZE)
    found = (yield Exec(_STRUCTURE)).first()
    if found is not None and index_levels(bytes(found[0])) > MAX_INDEX_LEVELS:
        yield Exec(_REBUILD)


# Searching


_CURSOR = re.compile(r"s2:([0-9]{1,6}):(-?[0-9]{1,20}):([0-9]{1,6})")


def _decode_cursor(cursor: object) -> tuple[int, int, int] | None:
    """A cursor's ``(candidates, bound, offset)``; None for no cursor."""
    if cursor is None:
        return None
    if not isinstance(cursor, str):
        raise SearchQueryError("cursor", "invalid", "expected a SearchPage.next_cursor or None")
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
    except (ValueError, UnicodeError, binascii.Error):
        raw = ""
    found = _CURSOR.fullmatch(raw)
    if found is not None:
        candidates, bound, offset = (int(part) for part in found.groups())
        if 0 < candidates <= MAX_CANDIDATES and 0 < offset <= min(MAX_OFFSET, candidates):
            return candidates, bound, offset
    raise SearchQueryError("cursor", "invalid", "not a cursor: pass back a SearchPage.next_cursor unchanged")


def _encode_cursor(candidates: int, bound: int, offset: int) -> str:
    return base64.urlsafe_b64encode(f"s2:{candidates}:{bound}:{offset}".encode("ascii")).decode("ascii")


def _check_candidates(candidates: object, cursor: tuple[int, int, int] | None) -> int:
    if candidates is None:
        return CANDIDATES if cursor is None else cursor[0]
    if (
        isinstance(candidates, bool)
        or not isinstance(candidates, int)
        or not 0 < candidates <= MAX_CANDIDATES
    ):
        raise SearchQueryError("candidates", "invalid", f"expected an integer from 1 to {MAX_CANDIDATES:,}")
    if cursor is not None and cursor[0] != candidates:
        raise SearchQueryError(
            "candidates", "invalid", "differs from the cursor's (pass the first page's, or None)"
        )
    return candidates


def _moment(name: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise SearchQueryError(name, "invalid", "expected an aware (UTC) datetime or None")
    return value


def search_request(
    query: object,
    *,
    limit: object,
    cursor: object,
    model: object,
    since: object,
    until: object,
    conversation_id: object,
    step_types: object,
    candidates: object = None,
) -> SearchRequest:
    """Check a search's arguments, before anything is read.

    Raises:
        SearchQueryError: naming the argument at fault.
    """
    words = words_of(query)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise SearchQueryError("limit", "invalid", "expected an integer from 1 to 100")
    if model is not None and (not isinstance(model, str) or _UNSTORABLE.search(model)):
        raise SearchQueryError("model", "invalid", "expected a model name or None")
    if conversation_id is not None and (not isinstance(conversation_id, str) or not is_id(conversation_id)):
        raise SearchQueryError("conversation_id", "invalid", "expected a conversation id or None")
    types: tuple[str, ...] | None = None
    if step_types is not None:
        if isinstance(step_types, str) or not isinstance(step_types, Sequence):
            raise SearchQueryError("step_types", "invalid", "expected a list of step types or None")
        types = tuple(step_types)
        if not types or not all(isinstance(t, str) and _LANGUAGE.fullmatch(t) for t in types):
            raise SearchQueryError("step_types", "invalid", "expected step type names such as 'user_input'")
    page = _decode_cursor(cursor)
    return SearchRequest(
        words=tuple(words),
        limit=limit,
        offset=0 if page is None else page[2],
        model=model,
        since=_moment("since", since),
        until=_moment("until", until),
        conversation_id=conversation_id,
        step_types=types,
        candidates=_check_candidates(candidates, page),
        bound=None if page is None else page[1],
    )


def _bound_of(value: object) -> int:
    """A candidate key as a cursor holds it: a rowid, or a time in microseconds since the epoch."""
    if isinstance(value, datetime):
        return (value - EPOCH) // timedelta(microseconds=1)
    assert isinstance(value, int)  # noqa: S101 -- SQLite's rowid
    return value


# The letters that a case-insensitive regular expression matches to ASCII ones (``İ`` also lower-cases to two
# characters): a text without them can be searched for ASCII words lower-cased, ``str.find`` alone.
_NOT_ASCII_CASE = re.compile("[\u0130\u0131\u017f\u212a]")


def _whole(text: str, start: int, end: int) -> bool:
    return (start == 0 or _SEPARATOR.match(text, start - 1) is not None) and (
        end == len(text) or _SEPARATOR.match(text, end) is not None
    )


def _located(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """Where ``words`` are in ``text`` as whole words, case-insensitively: the text lower-cased and searched
    with ``str.find`` for ASCII words (no expression compiled for each query's words: the search of a rare
    word spent a fifth of its Python time compiling one); else by a regular expression of the words. Both
    find the same: a word holds no separator, so no match hides a whole word's."""
    if all(word.isascii() for word in words) and not _NOT_ASCII_CASE.search(text):
        lowered = text.lower()  # as long as the text: İ, the one letter that lower-cases longer, is not in it
        spans = set()
        for word in {word.lower() for word in words}:
            start = lowered.find(word)
            while start >= 0:
                if _whole(text, start, start + len(word)):
                    spans.add((start, start + len(word)))
                start = lowered.find(word, start + 1)
        return sorted(spans)
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    return [
        (m.start(), m.end())
        for m in re.finditer(alternatives, text, re.IGNORECASE)
        if _whole(text, m.start(), m.end())
    ]


def _locate(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """Where ``words`` are in ``text``, as whole words: case-insensitively (``_located``), or, when that
    finds none (the text spells a word with other diacritics: ``Zurich``, ``Zürich``), word by word, folded
    as the engines fold them (slower: every word of the text is normalised)."""
    found = _located(text, words)
    if found:
        return found
    wanted = {_folded(word) for word in words}
    return [(m.start(), m.end()) for m in _WORD.finditer(text) if _folded(m.group()) in wanted]


def make_snippet(
    text: str, words: Sequence[str], width: int = SNIPPET_CHARS
) -> tuple[str, tuple[tuple[int, int], ...]]:
    """A plain-text excerpt of ``text`` around the first of ``words`` found in it, and the offsets of the
    words in the excerpt. Whitespace runs become one space; a cut shows as ``…``."""
    located = _locate(text, words)
    first = located[0][0] if located else 0
    start = max(0, first - width // 3)
    if start > 0:  # begin at a word
        space = text.find(" ", start, first)
        start = space + 1 if space >= 0 else start
    end = min(len(text), start + width)
    if end < len(text):
        space = text.rfind(" ", max(first + 1, start), end)
        end = space if space > first else end
    body = " ".join(text[start:end].split())
    snippet = (_ELLIPSIS if start > 0 else "") + body + (_ELLIPSIS if end < len(text) else "")
    return snippet, tuple(_locate(snippet, words))


_CITUS = sa.text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")


def routed() -> Op[bool]:
    """Whether the branches of each conversation must be read apart (Citus runs a recursive query only
    when it is routed to one shard); read once a store (PostgreSQL only)."""
    found = yield Exec(_CITUS)
    return found.first() is not None


def search(
    request: SearchRequest, owner: str | None, *, dialect: str, language: str, routed: bool = False
) -> Op[SearchPage]:
    """One page of hits (read-only): the matching rows, the branches through each hit (one statement; one
    a conversation when ``routed``), and the count of encrypted conversations. On PostgreSQL (not Citus),
    for a store bound to an owner, the owner's conversations are read first (``owned_conversations``).

    The statements may each see their own snapshot (PostgreSQL's reads run in autocommit; on SQLite the
    store runs a search without a transaction), and need no shared one: each names the owner itself; nodes
    are immutable, a conversation's owner and encryption are fixed when it is made, its id is never reused,
    and a branch only ever gains nodes (appends move its head down, forks add branches), so the branches
    read after the hits all lead through them. The one change between the statements a page can show is a
    conversation deleted meanwhile: its hits then list no branch.

    Raises:
        SearchQueryError: the engine rejected the query (not expected: words are quoted).
    """
    params = sql.params(request, owner, dialect=dialect, language=language)
    listed = False
    if dialect != "sqlite" and owner is not None and request.conversation_id is None and not routed:
        found = yield Exec(
            sql.owned_conversations(model=request.model is not None),
            {"owner": owner, "model": request.model, "most": sql.LISTED_MAX + 1},
        )
        owned = [conversation_id for (conversation_id,) in found]
        listed = len(owned) <= sql.LISTED_MAX
        if listed:
            params["listed"] = owned
    filters = sql.Filters.of(request, owner, listed=listed)
    statement = sql.statement(dialect, filters)
    try:
        rows = list((yield Exec(statement, params)))
    except exc.DBAPIError as error:
        translated = translate(error)
        if isinstance(translated, StoreBusyError):
            raise translated from None
        raise SearchQueryError("query", "rejected", f"the search engine refused it ({translated})") from None
    more = len(rows) > request.limit
    rows = rows[: request.limit]
    through: dict[str, list[str]] = {}
    conversation_ids = list(dict.fromkeys(row.conversation_id for row in rows))
    if rows and not routed:
        params = {"conversation_ids": conversation_ids, "node_ids": [row.node_id for row in rows]}
        for _, node_id, branch in (yield Exec(paths.BRANCHES_THROUGH_MANY, params)):
            through.setdefault(node_id, []).append(branch)
    for conversation_id in conversation_ids if routed else ():
        node_ids = [row.node_id for row in rows if row.conversation_id == conversation_id]
        found = yield Exec(paths.BRANCHES_THROUGH, {"conversation_id": conversation_id, "node_ids": node_ids})
        for _, node_id, branch in found:
            through.setdefault(node_id, []).append(branch)
    hits = []
    for row in rows:
        snippet, matches = make_snippet(row.text, request.words)
        hits.append(
            SearchHit(
                conversation_id=row.conversation_id,
                node_id=row.node_id,
                type=row.type,
                created_at=row.created_at,
                branches=tuple(through.get(row.node_id, ())),
                snippet=snippet,
                matches=matches,
                rank=float(row.rank),
            )
        )
    counted = yield Exec(
        sql.encrypted_count(owner=filters.owner, model=filters.model, conversation=filters.conversation),
        {"owner": owner, "model": request.model, "conversation_id": request.conversation_id},
    )
    next_offset = request.offset + request.limit
    next_cursor = None
    if more and next_offset <= MAX_OFFSET:
        bound = request.bound if request.bound is not None else _bound_of(rows[0].bound)
        next_cursor = _encode_cursor(request.candidates, bound, next_offset)
    return SearchPage(
        hits=hits,
        next_cursor=next_cursor,
        encrypted_conversations=int(counted.scalar_one()),
    )
