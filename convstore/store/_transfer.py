"""Export and import of whole conversations, every row with its ids, so a conversation moves between stores
(SQLite -> PostgreSQL -> SQLite) unchanged: the same ids, times, token counts and exact payload texts.

Two halves, pure except through the runner:

- **Operations**, in the pattern of ``_ops`` (generators that yield ``Exec`` statements): ``export_ops`` reads
  one conversation's rows into a ``ConversationDump``; ``import_ops`` writes a dump back, ids and all, in one
  transaction; ``import_rows_ops`` writes a plaintext conversation read lazily (``read_conversations``) in
  batches inside its one transaction. Run them like every store operation::

      from convstore.store._engine import run        # run_async for an AsyncEngine
      dump = run(store.engine, export_ops(conversation_id), write=False)
      imported = run(store.engine, import_ops(dump, skip_existing=False), write=True)

- **The JSONL format**: ``header_line()``, ``dump_lines(dump)``, ``read_conversations(lines)`` (one
  ``ConversationRows`` a conversation, its lines parsed and checked as they are read) and
  ``read_dumps(lines)`` (each conversation held whole, as a ``ConversationDump``). Every line is checked
  as ``append`` checks what it writes (strict JSON within ``Limits``, payloads by the codec, token counts
  by the store's counter), and ``TransferFormatError`` names the line and the field, never the content.

Format, version 2: UTF-8, one JSON object a line, each with a ``"kind"``. Line 1 is the header
(``{"kind": "header", "format": "convstore-export", "version": 2, ...}``). Then, for each conversation, its
``conversation`` line, its ``node`` lines (parents first), its ``summary`` lines, its ``branch`` lines and its
``exchange`` lines. The other keys of a line are the columns of that kind's table, named as the columns and
written as the database holds them: ids as canonical UUID text, times as ISO 8601 UTC with microseconds, JSON
settings and step payloads as their exact stored text (nothing is decoded and re-encoded). The columns are
read from the tables in ``_schema``, so a column a migration adds is exported without changes here. On
import, a key for a column the target does not have is refused (its data would be lost); a missing key for a
nullable column (an export from an older schema) imports as NULL.

Sealed conversations (version 2; version 1 files hold plaintext ones only and still import): an encrypted
conversation is exported as it is stored, never decrypted. Its ``conversation`` line keeps ``encryption`` and
its sealed settings; a ``key`` line follows it (``conversation_id``, ``key_id``: the application key that
wrapped the data key, ``wrapped``: the wrapped data key in base64); its node lines carry their sealed payloads
and their ``media`` column, and its sealed media strings come as ``media`` lines after the nodes (``hash``,
``data``). Without the application key named by ``key_id``, nothing of it can be read; a store with a keyring
that holds that key imports it (``open_sealed`` checks every sealed value first, and, once opened, every
payload and setting by the same rules as a plaintext line's). The plaintext of an encrypted conversation is
exported only when asked for (``export_ops(..., cipher=...)``): it is then written as a plaintext
conversation.

Memory: a plaintext conversation is never held whole on import (``read_conversations`` and
``import_rows_ops``: a line at a time, a batch of at most ``CHUNK`` rows or ``BATCH_BYTES`` of payloads). A
sealed one is held whole while it is verified (``ConversationRows.dump()``): its media lines come after its
nodes, and nothing of it is written before every sealed value opened.

Consistency: SQLite reads one snapshot. On PostgreSQL (READ COMMITTED) the reads are ordered so that a turn
appended during the export is wholly in it or wholly out of it: branches are read before nodes (nodes are
append-only, so every head read is among the nodes read), and exchange and summary rows are kept only for
nodes that were read.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy import exc

from convstore import codec
from convstore._ids import is_id
from convstore._limits import DEFAULT_LIMITS, Limits, loads
from convstore.budget import HeuristicCounter, TokenCounter
from convstore.errors import (
    CodecError,
    ConversationExistsError,
    ConversationNotFoundError,
    DataKeyNotFoundError,
    LimitExceededError,
    TransferFormatError,
)
from convstore.store import _keys, _schema
from convstore.store._conversations import SETTINGS
from convstore.store._crypto import ENCRYPTION, MAX_KEY_ID, DataCipher, WrappedKey, is_sealed
from convstore.store._engine import Exec, Op
from convstore.store._media import join_media, stored_hashes
from convstore.store._prepare import column_text_problem, utcnow
from convstore.store._rows import payload_texts
from convstore.store._writes import stored_rows, write_media

__all__ = [
    "FORMAT",
    "VERSION",
    "ConversationDump",
    "ConversationExistsError",
    "ConversationRows",
    "TransferFormatError",
    "check_dump",
    "conversation_exists",
    "dump_lines",
    "export_ops",
    "header_line",
    "import_ops",
    "import_rows_ops",
    "open_sealed",
    "read_conversations",
    "read_dumps",
]

FORMAT = "convstore-export"
VERSION = 2  # 2: sealed conversations (key and media lines)
CHUNK = 500  # rows an INSERT carries (and how often import_ops reports progress)
BATCH_BYTES = 4 * 1024 * 1024  # ... or fewer, so a streamed import holds at most about this much of payloads


@attrs.frozen(kw_only=True)
class ConversationDump:
    """Every row of one conversation, as column -> value dicts (datetimes aware UTC, ids canonical text).

    Attributes:
        conversation: The conversation row.
        nodes: Node rows, parents before children (by depth, creation time, id).
        summaries: Summary rows (empty when the schema has none).
        branches: Branch rows, by creation time and name.
        exchanges: Exchange rows, by creation time and exchange id.
        media: A sealed conversation's media rows (sealed media strings by hash); empty for a plaintext one,
            whose payloads hold their media.
        key: A sealed conversation's wrapped data key (None for a plaintext one).
    """

    conversation: dict[str, Any] = attrs.field(repr=False)
    nodes: list[dict[str, Any]] = attrs.field(repr=lambda rows: f"<{len(rows)}>")
    summaries: list[dict[str, Any]] = attrs.field(factory=list, repr=lambda rows: f"<{len(rows)}>")
    branches: list[dict[str, Any]] = attrs.field(factory=list, repr=lambda rows: f"<{len(rows)}>")
    exchanges: list[dict[str, Any]] = attrs.field(factory=list, repr=lambda rows: f"<{len(rows)}>")
    media: list[dict[str, Any]] = attrs.field(factory=list, repr=lambda rows: f"<{len(rows)}>")
    key: WrappedKey | None = None

    @property
    def id(self) -> str:
        return str(self.conversation["id"])

    @property
    def sealed(self) -> bool:
        """Whether the rows are an encrypted conversation's ciphertexts (see the module docstring)."""
        return self.conversation.get("encryption") is not None

    @property
    def row_count(self) -> int:
        """Rows in the dump, the conversation row included (what a progress bar counts)."""
        rows = (self.nodes, self.summaries, self.branches, self.exchanges, self.media)
        return 1 + sum(map(len, rows)) + (self.key is not None)


# -- tables and statements ---------------------------------------------------------------------------------

_SUMMARIES: sa.Table | None = getattr(_schema, "summaries", None)  # arrives with token budgets (0003)

# Kind -> table, in the order a conversation's lines are written and its rows inserted (parents first).
TABLES: dict[str, sa.Table] = {
    "conversation": _schema.conversations,
    "node": _schema.nodes,
    **({"summary": _SUMMARIES} if _SUMMARIES is not None else {}),
    "branch": _schema.branches,
    "exchange": _schema.exchanges,
}
# Columns of how a store keeps rows, not of what they hold: a dump carries each payload whole (its media
# strings put back, see ``_media``), and an import keeps them apart again as the target store does.
_INTERNAL = {("node", "media"), ("node", "segment_id")}
# How a store lays out its tree for reading (``_reads``): never in a dump, sealed or not; an import gives
# the rows segments of its own (``Segments``).
_LAYOUT = {("node", "segment_id")}


# A sealed conversation's rows travel as stored: its nodes keep their media column, its media rows come too.
_SEALED_TABLES: dict[str, sa.Table] = {**TABLES, "media": _schema.media}
# Columns that hold sealed text in a sealed conversation.
_SEALED = {("conversation", field) for field in SETTINGS} | {
    ("node", "payload"),
    ("summary", "payload"),
    ("media", "data"),
}


def columns(kind: str, sealed: bool = False) -> list[sa.Column[Any]]:
    """The columns of a kind's rows in a dump (of a sealed conversation: every column, as stored)."""
    if sealed:
        return [column for column in _SEALED_TABLES[kind].columns if (kind, column.name) not in _LAYOUT]
    return [column for column in TABLES[kind].columns if (kind, column.name) not in _INTERNAL]


_PLURAL = {
    "node": "nodes",
    "media": "media",
    "summary": "summaries",
    "branch": "branches",
    "exchange": "exchanges",
}

# Text columns that hold JSON, and the JSON type each must be.
_JSON_COLUMNS: dict[tuple[str, str], type] = {
    ("conversation", "system_instruction"): str,  # the user's text as a JSON string (it may hold NUL)
    ("conversation", "generation_config"): dict,
    ("conversation", "tools"): list,
    ("conversation", "metadata"): dict,
    ("node", "payload"): dict,
    ("summary", "payload"): list,
    ("exchange", "usage"): dict,
    ("node", "media"): list,  # a sealed node's media references
}
_NON_NEGATIVE = {"depth", "token_count", "total_tokens"}


def _owner(table: sa.Table) -> sa.ColumnElement[bool]:
    column = table.c.id if table is _schema.conversations else table.c.conversation_id
    return column == sa.bindparam("conversation_id")


SELECT = {kind: sa.select(table).where(_owner(table)) for kind, table in _SEALED_TABLES.items()}
INSERT = {kind: sa.insert(table) for kind, table in _SEALED_TABLES.items()}
INSERT_KEY = sa.insert(_schema.keys)
CONVERSATION_EXISTS = sa.select(_schema.conversations.c.id).where(_owner(_schema.conversations))


class Segments:
    """Segment ids for node rows imported parents first (see ``_reads``), by the rule migration 0008 applies
    to existing rows: a root starts a segment; a node continues its parent's segment when it is the first of
    the parent's children to come, and starts one of its own otherwise. Kept across the batches of one
    conversation (one id and one flag a node, like the checks of its tree)."""

    def __init__(self) -> None:
        self._segment: dict[str, str] = {}
        self._continued: set[str] = set()

    def assign(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` with their ``segment_id``."""
        out = []
        for row in rows:
            parent = row["parent_id"]
            if parent is not None and parent in self._segment and parent not in self._continued:
                self._continued.add(parent)
                segment = self._segment[parent]
            else:
                segment = row["id"]
            self._segment[row["id"]] = segment
            out.append({**row, "segment_id": segment})
        return out


# -- operations ------------------------------------------------------------------------------------------


def _row(kind: str, found: Any, sealed: bool = False) -> dict[str, Any]:
    mapping = found._mapping
    return {column.name: mapping[column.name] for column in columns(kind, sealed)}


def _sort_key(kind: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    if kind == "node":
        return lambda r: (r["depth"], r["created_at"], r["id"])
    if kind == "summary":
        return lambda r: (r["node_id"],)
    if kind == "media":
        return lambda r: (r["hash"],)
    if kind == "branch":
        return lambda r: (r["created_at"], r["name"])
    return lambda r: (r["created_at"], r["exchange_id"])


def conversation_exists(conversation_id: str) -> Op[bool]:
    """Whether the store holds a conversation of this id."""
    if not is_id(conversation_id):
        return False
    return (yield Exec(CONVERSATION_EXISTS, {"conversation_id": conversation_id})).first() is not None


def export_ops(
    conversation_id: str,
    *,
    owner: str | None = None,
    cipher: DataCipher | None = None,
    inline_key: bool = False,
) -> Op[ConversationDump]:
    """Read every row of one conversation (see the module docstring on consistency).

    A plaintext conversation's payloads come whole (media put back). An encrypted one comes sealed, as
    stored, unless ``cipher`` (its data key) is given: then it is decrypted into a plaintext conversation.

    Args:
        owner: Only a conversation of this owner (another's is not found).
        cipher: Decrypt an encrypted conversation with it (the plaintext export, for a store that asks).
        inline_key: A sealed conversation's wrapped data key is read from this database's key table, in
            the same transaction (the default key store); otherwise ``dump.key`` is None for the caller to
            fill in from its key store.

    Raises:
        ConversationNotFoundError.
        DataKeyNotFoundError: ``inline_key`` and the key table holds no key for it (it is shredded).
    """
    if not is_id(conversation_id):
        raise ConversationNotFoundError(str(conversation_id))
    params = {"conversation_id": conversation_id}
    found = (yield Exec(SELECT["conversation"], params)).first()
    if found is None or (owner is not None and found.owner != owner):
        raise ConversationNotFoundError(conversation_id)
    encrypted = getattr(found, "encryption", None) is not None
    cipher = cipher if encrypted else None
    sealed = encrypted and cipher is None
    rows: dict[str, list[dict[str, Any]]] = {}
    for kind in ("branch", "node", "summary", "exchange"):  # branches before nodes: every head is read
        if kind in TABLES:
            result = (yield Exec(SELECT[kind], params)).all()
            if kind == "node" and not sealed:
                texts = yield from payload_texts(conversation_id, result, cipher)
                rows[kind] = [
                    {**_row(kind, r), "payload": text} for r, text in zip(result, texts, strict=True)
                ]
            elif kind == "summary" and cipher is not None:
                rows[kind] = [
                    {**_row(kind, r), "payload": cipher.open("summary", r.node_id, r.payload)} for r in result
                ]
            else:
                rows[kind] = [_row(kind, r, sealed) for r in result]
            rows[kind].sort(key=_sort_key(kind))
    if not rows["branch"]:
        raise ConversationNotFoundError(conversation_id)  # deleted while it was read
    node_ids = {r["id"] for r in rows["node"]}
    exchange_ids = {r["exchange_id"] for r in rows["node"]}
    conversation = _row("conversation", found)
    media: list[dict[str, Any]] = []
    key = None
    if sealed:
        # Media rows after the nodes (written with them, never removed): every one a node names is read.
        named = {h for r in rows["node"] if r["media"] is not None for h in stored_hashes(r["media"])}
        result = (yield Exec(SELECT["media"], params)).all()
        media = sorted((_row("media", r, True) for r in result if r.hash in named), key=_sort_key("media"))
        if inline_key:
            key = yield from _keys.get_op(conversation_id)
            if key is None:
                raise DataKeyNotFoundError(conversation_id)
    elif cipher is not None:
        opened = {
            field: cipher.open_or_none("conversation", field, conversation[field]) for field in SETTINGS
        }
        conversation = {**conversation, **opened, "encryption": None}
    return ConversationDump(
        conversation=conversation,
        nodes=rows["node"],
        summaries=[r for r in rows.get("summary", []) if r["node_id"] in node_ids],
        branches=rows["branch"],
        exchanges=[r for r in rows["exchange"] if r["exchange_id"] in exchange_ids],
        media=media,
        key=key,
    )


def import_ops(
    dump: ConversationDump,
    *,
    skip_existing: bool = False,
    progress: Callable[[int], None] | None = None,
    key: WrappedKey | None = None,
) -> Op[bool]:
    """Write a dump with its ids, all or nothing (run it with ``write=True``: one transaction).

    Args:
        dump: From ``export_ops`` or ``read_dumps``; its tree is checked first (``check_dump``).
        skip_existing: When the conversation id exists already, write nothing and return False instead of
            raising.
        progress: Called with the number of rows written after each batch.
        key: A sealed conversation's wrapped data key, to write into this database's key table in the same
            transaction (the default key store). None when the caller keeps keys in a key store apart.

    Returns:
        True when written, False when skipped.

    Raises:
        ConversationExistsError: the id exists already (and ``skip_existing`` is false).
        TransferFormatError: the dump breaks a rule of the tree.
    """
    check_dump(dump)
    params = {"conversation_id": dump.id}
    if (yield Exec(CONVERSATION_EXISTS, params)).first() is not None:
        if skip_existing:
            return False
        raise ConversationExistsError(dump.id)
    try:
        yield Exec(INSERT["conversation"], dump.conversation)
    except exc.IntegrityError:
        raise ConversationExistsError(dump.id) from None  # written by someone else meanwhile
    if key is not None:
        yield Exec(
            INSERT_KEY,
            {
                "conversation_id": dump.id,
                "key_id": key.key_id,
                "wrapped": key.wrapped,
                "created_at": utcnow(),
            },
        )
    if progress is not None:
        progress(1 + (dump.key is not None))
    for kind in ("node", "media", "summary", "branch", "exchange"):
        rows: list[dict[str, Any]] = getattr(dump, _PLURAL[kind])
        if kind == "node":
            rows = Segments().assign(rows)
        if kind == "node" and not dump.sealed:  # kept apart as this store keeps media
            rows, blobs = stored_rows([{**row, "media": None} for row in rows], None)
            yield from write_media(dump.id, blobs, None)
        if rows and kind not in _SEALED_TABLES:
            raise TransferFormatError(f"this store has no table for {kind} rows", where=_PLURAL[kind])
        for start in range(0, len(rows), CHUNK):
            batch = rows[start : start + CHUNK]
            try:
                yield Exec(INSERT[kind], batch)
            except exc.IntegrityError:
                raise TransferFormatError(
                    "the database refused these rows (a reference or a key is wrong)", where=_PLURAL[kind]
                ) from None
            if progress is not None:
                progress(len(batch))
    return True


def import_rows_ops(
    conversation: ConversationRows,
    *,
    skip_existing: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Op[bool]:
    """``import_ops`` for a plaintext conversation read lazily (``read_conversations``): its rows are read,
    checked and written a batch at a time inside the one transaction, so memory stays bounded by a batch
    whatever the conversation's size. A line that fails its check raises and rolls the whole conversation
    back.

    A sealed conversation is refused before anything is written: its sealed values are verified whole
    before it is written (``conversation.dump()``, then ``open_sealed`` and ``import_ops``, as
    ``Store.import_conversation`` does).

    Returns:
        True when written, False when skipped (its rows are still read, so the file can go on).

    Raises:
        ConversationExistsError: the id exists already (and ``skip_existing`` is false).
        TransferFormatError: a line breaks a rule (nothing of the conversation is written), or the
            conversation is sealed.
    """
    if conversation.sealed:
        raise TransferFormatError(
            "a sealed conversation is verified whole before it is written (import its dump())",
            line=conversation.line,
            where="conversation",
            field="encryption",
        )
    params = {"conversation_id": conversation.id}
    if (yield Exec(CONVERSATION_EXISTS, params)).first() is not None:
        if skip_existing:
            return False
        raise ConversationExistsError(conversation.id)
    try:
        yield Exec(INSERT["conversation"], conversation.conversation)
    except exc.IntegrityError:
        raise ConversationExistsError(conversation.id) from None
    if progress is not None:
        progress(1)
    batch: list[dict[str, Any]] = []
    batch_kind = ""
    batch_bytes = 0
    segments = Segments()
    for kind, row in conversation.rows():
        if batch and (kind != batch_kind or len(batch) >= CHUNK or batch_bytes >= BATCH_BYTES):
            yield from _write_batch(conversation.id, batch_kind, batch, progress, segments)
            batch, batch_bytes = [], 0
        batch_kind = kind
        batch.append(row)
        payload = row.get("payload")
        batch_bytes += len(payload) if isinstance(payload, str) else 0
    if batch:
        yield from _write_batch(conversation.id, batch_kind, batch, progress, segments)
    return True


def _write_batch(
    conversation_id: str,
    kind: str,
    rows: list[dict[str, Any]],
    progress: Callable[[int], None] | None,
    segments: Segments,
) -> Op[None]:
    if kind == "node":
        rows, blobs = stored_rows([{**row, "media": None} for row in segments.assign(rows)], None)
        yield from write_media(conversation_id, blobs, None)
    if kind not in TABLES:
        raise TransferFormatError(f"this store has no table for {kind} rows", where=_PLURAL[kind])
    try:
        yield Exec(INSERT[kind], rows)
    except exc.IntegrityError:
        raise TransferFormatError(
            "the database refused these rows (a reference or a key is wrong)", where=_PLURAL[kind]
        ) from None
    if progress is not None:
        progress(len(rows))


def open_sealed(
    dump: ConversationDump,
    cipher: DataCipher,
    *,
    limits: Limits = DEFAULT_LIMITS,
    counter: TokenCounter | None = None,
) -> None:
    """Check that every sealed value of a sealed dump opens with its data key, before it is imported:
    settings, payloads (with their media put back), summaries, media (named by their keyed hash). Pure: no
    I/O.

    What was opened is then checked as a plaintext line's values are (``read_conversations``): settings as
    strict JSON of their type, payloads by the codec and of their node's type within ``limits``, and each
    node's ``token_count`` against ``counter`` (not checked when None).

    Raises:
        DecryptionError: a value fails authentication (named by field, node or media hash).
        TransferFormatError: an opened value breaks a rule, or a node names media the dump does not hold.
    """
    for field in SETTINGS:
        text = cipher.open_or_none("conversation", field, dump.conversation.get(field))
        problem = (
            None if text is None else _json_problem(text, _JSON_COLUMNS[("conversation", field)], limits)
        )
        if problem is not None:
            raise TransferFormatError(problem, where="conversation", field=field)
    blobs = {}
    for index, row in enumerate(dump.media):
        content = cipher.open("media", row["hash"], row["data"])
        if cipher.media_digest(content) != row["hash"]:
            raise TransferFormatError(
                "is not the hash of its media string", where=f"media[{index}]", field="hash"
            )
        blobs[row["hash"]] = content
    for index, row in enumerate(dump.nodes):
        text = cipher.open("node", row["id"], row["payload"])
        if row.get("media") is not None:
            try:
                text = join_media(text, row["media"], blobs.__getitem__)
            except (KeyError, ValueError, TypeError):
                raise TransferFormatError(
                    "names media strings the export does not hold", where=f"nodes[{index}]", field="media"
                ) from None
        found = _payload_problem("node", {**row, "payload": text}, limits, counter)
        if found is not None:
            raise TransferFormatError(found[1], where=f"nodes[{index}]", field=found[0])
    for index, row in enumerate(dump.summaries):
        text = cipher.open("summary", row["node_id"], row["payload"])
        found = _payload_problem("summary", {**row, "payload": text}, limits, counter)
        if found is not None:
            raise TransferFormatError(found[1], where=f"summaries[{index}]", field=found[0])


# -- checks ----------------------------------------------------------------------------------------------


class _TreeCheck:
    """The rules that tie a conversation's rows together, checked row by row in file order."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        self.depths: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.exchange_of: dict[str, str] = {}
        # Per exchange: [nodes, nodes whose parent is outside it, least depth, greatest depth].
        self.exchanges: dict[str, list[int]] = {}
        self.exchange_ids: set[str] = set()
        self.seen: dict[str, set[Any]] = {
            "summary": set(),
            "branch": set(),
            "exchange": set(),
            "media": set(),
        }
        self.media_named: set[str] = set()  # the media hashes sealed nodes name

    def add(self, kind: str, row: Mapping[str, Any]) -> tuple[str, str] | None:
        """``(field, problem)`` when ``row`` breaks a rule, else None (and the row is remembered)."""
        if row.get("conversation_id") != self.conversation_id:
            return "conversation_id", "does not match the conversation line it follows"
        if kind == "node":
            return self._media(row) or self._node(row)
        key = {"summary": "node_id", "branch": "name", "exchange": "exchange_id", "media": "hash"}[kind]
        if row[key] in self.seen[kind]:
            return key, f"a second {kind} with this {key} in one conversation"
        if kind == "summary" and row["node_id"] not in self.depths:
            return "node_id", "names no earlier node of this conversation"
        if kind == "branch" and row["head_id"] is not None and row["head_id"] not in self.depths:
            return "head_id", "names no earlier node of this conversation"
        self.seen[kind].add(row[key])
        return None

    def _node(self, row: Mapping[str, Any]) -> tuple[str, str] | None:
        if row["id"] in self.depths:
            return "id", "a second node with this id in one conversation"
        parent = row["parent_id"]
        if parent is None:
            if row["depth"] != 0:
                return "depth", "a node without a parent has depth 0"
        elif parent not in self.depths:
            return "parent_id", "names no earlier node of this conversation (parents come first)"
        elif row["depth"] != self.depths[parent] + 1:
            return "depth", "is not its parent's depth + 1"
        if row["total_tokens"] != row["token_count"] + (0 if parent is None else self.totals[parent]):
            return "total_tokens", "is not its parent's total_tokens + its token_count"
        self.depths[row["id"]] = row["depth"]
        self.totals[row["id"]] = row["total_tokens"]
        exchange_id = row["exchange_id"]
        self.exchange_of[row["id"]] = exchange_id
        self.exchange_ids.add(exchange_id)
        starts = parent is None or self.exchange_of[parent] != exchange_id
        tally = self.exchanges.setdefault(exchange_id, [0, 0, row["depth"], row["depth"]])
        tally[0] += 1
        tally[1] += starts
        tally[2] = min(tally[2], row["depth"])
        tally[3] = max(tally[3], row["depth"])
        return None

    def _media(self, row: Mapping[str, Any]) -> tuple[str, str] | None:
        """Remember the hashes a sealed node's media column names (a problem when it is malformed)."""
        if row.get("media") is not None:
            try:
                self.media_named.update(stored_hashes(row["media"]))
            except (ValueError, TypeError, AttributeError):
                return "media", "expected the JSON of [[offset, hash], ...]"
        return None

    def finish(self) -> tuple[str, str] | None:
        """``(where, problem)`` when the rows as a whole break a rule, else None."""
        for exchange_id, (size, starts, least, greatest) in self.exchanges.items():
            # One chain: one start, and as many levels as nodes (what Store.check() verifies too).
            if starts != 1 or greatest - least + 1 != size:
                return "nodes", f"the nodes of exchange {exchange_id} do not form one chain"
        for exchange_id in self.seen["exchange"] - self.exchange_ids:
            return "exchanges", f"exchange {exchange_id} names no exchange of this conversation's nodes"
        if self.media_named - self.seen["media"]:
            return "media", "nodes name media strings the export does not hold"
        return None if self.seen["branch"] else ("branches", "a conversation needs at least one branch")


def check_dump(dump: ConversationDump) -> None:
    """Check the rules of the tree (references, parents first, depths, one branch at least).

    Raises:
        TransferFormatError: naming the row by its place in the dump.
    """
    sealed = dump.sealed
    if sealed and dump.conversation["encryption"] != ENCRYPTION:
        raise TransferFormatError("an encryption scheme this convstore does not know", where="conversation")
    if sealed and dump.key is None:
        raise TransferFormatError("a sealed conversation needs its wrapped data key", where="key")
    if not sealed and (dump.media or dump.key is not None):
        raise TransferFormatError("a plaintext conversation has no key or media rows", where="media")
    check = _TreeCheck(dump.id)
    for kind in ("node", "media", "summary", "branch", "exchange"):
        for index, row in enumerate(getattr(dump, _PLURAL[kind])):
            known = kind in TABLES or sealed
            missing = [c.name for c in columns(kind, sealed) if c.name not in row] if known else []
            if missing:
                raise TransferFormatError("missing", where=f"{_PLURAL[kind]}[{index}]", field=missing[0])
            problem = check.add(kind, row)
            if problem is not None:
                raise TransferFormatError(problem[1], where=f"{_PLURAL[kind]}[{index}]", field=problem[0])
    last = check.finish()
    if last is not None:
        raise TransferFormatError(last[1], where=last[0])


# -- the JSONL format ------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return value


def _line(kind: str, row: Mapping[str, Any]) -> str:
    return json.dumps({"kind": kind, **{k: _encode(v) for k, v in row.items()}}, ensure_ascii=False)


def header_line(schema_revision: str | None = None) -> str:
    """The first line of an export (no newline). Nothing time- or host-dependent, so exports compare."""
    header: dict[str, Any] = {"kind": "header", "format": FORMAT, "version": VERSION}
    if schema_revision is not None:
        header["schema_revision"] = schema_revision
    return json.dumps(header)


def dump_lines(dump: ConversationDump) -> Iterator[str]:
    """The lines of one conversation (no newlines), in the format's order."""
    yield _line("conversation", dump.conversation)
    if dump.key is not None:
        wrapped = binascii.b2a_base64(dump.key.wrapped, newline=False).decode("ascii")
        yield _line("key", {"conversation_id": dump.id, "key_id": dump.key.key_id, "wrapped": wrapped})
    for kind in ("node", "media", "summary", "branch", "exchange"):
        for row in getattr(dump, _PLURAL[kind]):
            yield _line(kind, row)


def _field_value(
    kind: str, column: sa.Column[Any], value: Any, limits: Limits = DEFAULT_LIMITS
) -> tuple[Any, str | None]:
    """The column value for a JSON value, or a problem."""
    if value is None:
        return None, (None if column.nullable else "must not be null")
    column_type = column.type
    if isinstance(column_type, _schema.UTCDateTime):
        return _time_value(value)
    if isinstance(column_type, sa.Uuid):
        return value, (None if is_id(value) else "expected an id (a canonical lowercase UUID)")
    if isinstance(column_type, sa.Boolean):
        return value, (None if isinstance(value, bool) else "expected true or false")
    if isinstance(column_type, sa.Integer):
        return value, _int_problem(column, value)
    return value, _text_problem(kind, column, value, limits)


def _time_value(value: Any) -> tuple[Any, str | None]:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        return None, "expected an ISO 8601 time"
    if parsed.tzinfo is None:
        return None, "expected a time with its UTC offset"
    try:
        return parsed.astimezone(timezone.utc), None
    except OverflowError:  # year 9999 at an offset west of UTC, say: no UTC time to store
        return None, "a time out of range in UTC"


def _int_problem(column: sa.Column[Any], value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return "expected an integer"
    limit = 2**63 if isinstance(column.type, sa.BigInteger) else 2**31
    if not -limit <= value < limit or (column.name in _NON_NEGATIVE and value < 0):
        return "integer out of range"
    return None


_NON_EMPTY = {("branch", "name"), ("conversation", "owner")}  # as Store refuses them: check_branch_name


def _text_problem(kind: str, column: sa.Column[Any], value: Any, limits: Limits) -> str | None:
    if not isinstance(value, str):
        return "expected a string"
    problem = column_text_problem(value, getattr(column.type, "length", None))
    if problem is not None:
        return problem
    if not value and (kind, column.name) in _NON_EMPTY:
        return "must not be empty (the store cannot open it)"
    expected = _JSON_COLUMNS.get((kind, column.name))
    if expected is None or column.name == "payload":  # payloads: by the codec, in _payload_problem
        return None
    return _json_problem(value, expected, limits)


_JSON_NAMES: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}


def _json_problem(value: str, expected: type, limits: Limits = DEFAULT_LIMITS) -> str | None:
    return _strict_json(value, expected, limits)[1]


def _strict_json(value: str, expected: type, limits: Limits) -> tuple[Any, str | None]:
    """The value of a JSON column's text, by the rules of ``append``: strict JSON (no NaN, no key twice),
    within ``max_depth`` and ``max_step_bytes``."""
    if len(value) > limits.max_step_bytes:
        return None, f"longer than max_step_bytes={limits.max_step_bytes}"
    try:
        decoded = loads(value, limits=limits)
    except LimitExceededError as error:
        return None, f"nested deeper than {error.limit}={error.maximum}"
    except CodecError as error:
        where = f" at {error.path}" if error.path else ""
        return None, f"expected JSON text, strict ({error.problems[0][1]}{where})"
    if not isinstance(decoded, expected):
        return None, f"expected the JSON text of {_JSON_NAMES[expected]}"
    return decoded, None


def _payload_problem(
    kind: str, row: Mapping[str, Any], limits: Limits, counter: TokenCounter | None
) -> tuple[str, str] | None:
    """A node's or summary's payload checked as ``append`` checks a step: by the codec, its type and its
    token count against the store's counter (a plaintext line's as it is read, a sealed one's once
    ``open_sealed`` opened it)."""
    decoded, problem = _strict_json(row["payload"], dict if kind == "node" else list, limits)
    if problem is not None:
        return "payload", problem
    steps = [decoded] if kind == "node" else decoded
    try:
        codec.normalize_steps(steps, prefix="payload", limits=limits)
    except CodecError as error:
        return error.path or "payload", f"refused by the codec: {error.problems[0][1]}"
    except LimitExceededError as error:
        return "payload", f"beyond {error.limit}={error.maximum}"
    if kind == "node":
        if decoded.get("type") != row["type"]:
            return "type", "differs from the payload's type"
        if counter is not None and row["token_count"] != (expected := counter.count_step(decoded)):
            return "token_count", f"is not the payload's count ({expected} by this store's token counter)"
    return None


def _sealed_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return "expected a string"
    return (
        None if is_sealed(value) and column_text_problem(value, None) is None else "expected a sealed value"
    )


def _decode_row(
    kind: str,
    obj: Mapping[str, Any],
    sealed: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    counter: TokenCounter | None = None,
) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """A line's row, or ``(field, problem)``. A sealed conversation's sealed columns are only checked to be
    sealed values here (their plaintext is checked by ``open_sealed``)."""
    names = columns(kind, sealed)
    unknown = sorted(set(obj) - {"kind"} - {column.name for column in names})
    if unknown:
        return {}, (unknown[0], "no such column in this store (importing it would lose it)")
    row: dict[str, Any] = {}
    for column in names:
        if column.name not in obj:
            if not column.nullable:
                return {}, (column.name, "missing")
            row[column.name] = None
            continue
        if sealed and (kind, column.name) in _SEALED and obj[column.name] is not None:
            value, problem = obj[column.name], _sealed_problem(obj[column.name])
        else:
            value, problem = _field_value(kind, column, obj[column.name], limits)
        if problem is not None:
            return {}, (column.name, problem)
        row[column.name] = value
    if kind in ("node", "summary") and not sealed:
        found = _payload_problem(kind, row, limits, counter)
        if found is not None:
            return {}, found
    return row, None


_WRAPPED_BYTES = 60  # nonce (12) + the data key (32) + the tag (16)


def _decode_key(
    conversation_id: str, obj: Mapping[str, Any]
) -> tuple[WrappedKey | None, tuple[str, str] | None]:
    unknown = sorted(set(obj) - {"kind", "conversation_id", "key_id", "wrapped"})
    if unknown:
        return None, (unknown[0], "no such field in a key line")
    if obj.get("conversation_id") != conversation_id:
        return None, ("conversation_id", "does not match the conversation line it follows")
    key_id = obj.get("key_id")
    if (
        not isinstance(key_id, str)
        or not key_id
        or len(key_id) > MAX_KEY_ID
        or column_text_problem(key_id, None)
    ):
        return None, ("key_id", f"expected a key id (a string of 1 to {MAX_KEY_ID} characters)")
    text = obj.get("wrapped")
    try:
        wrapped = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
    except binascii.Error:
        wrapped = b""
    if len(wrapped) != _WRAPPED_BYTES:
        return None, ("wrapped", f"expected the base64 of a wrapped data key ({_WRAPPED_BYTES} bytes)")
    return WrappedKey(key_id=key_id, wrapped=wrapped), None


def _check_header(number: int, obj: Mapping[str, Any]) -> None:
    if obj.get("kind") != "header" or obj.get("format") != FORMAT:
        raise TransferFormatError(f"expected the {FORMAT} header line first", line=number)
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TransferFormatError("expected an integer", line=number, where="header", field="version")
    if version > VERSION:
        raise TransferFormatError(
            f"format version {version} is newer than this convstore reads ({VERSION})",
            line=number,
            where="header",
            field="version",
        )


_ORDER = ("key", "node", "media", "summary", "branch", "exchange")


class _Pending:
    """A conversation being read: the checks of its tree, its key, and where in the order of kinds it is."""

    def __init__(
        self,
        line: int,
        conversation: dict[str, Any],
        limits: Limits = DEFAULT_LIMITS,
        counter: TokenCounter | None = None,
    ) -> None:
        self.line = line
        self.conversation = conversation
        self.check = _TreeCheck(conversation["id"])
        self.sealed = conversation.get("encryption") is not None
        self.key: WrappedKey | None = None
        self.order = 0  # index in _ORDER of the last kind seen: kinds come in that order
        self._limits = limits
        self._counter = counter

    def add(self, number: int, kind: str, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """The row of a line, checked (not kept: the caller keeps it or writes it); None for the key line,
        whose wrapped key is kept as ``key``."""
        position = _ORDER.index(kind)
        if position < self.order:
            raise TransferFormatError(
                f"out of order: {_PLURAL[kind]} come before {_PLURAL[_ORDER[self.order]]}",
                line=number,
                where=kind,
            )
        self.order = position
        if kind in {"key", "media"} and not self.sealed:
            raise TransferFormatError(
                "belongs to sealed (encrypted) conversations only", line=number, where=kind
            )
        if kind == "key":
            if self.key is not None:
                raise TransferFormatError("a second key line for one conversation", line=number, where=kind)
            self.key, problem = _decode_key(self.conversation["id"], obj)
            if problem is not None:
                raise TransferFormatError(problem[1], line=number, where=kind, field=problem[0])
            return None
        row, problem = _decode_row(kind, obj, self.sealed, self._limits, self._counter)
        if problem is None:
            problem = self.check.add(kind, row)
        if problem is not None:
            raise TransferFormatError(problem[1], line=number, where=kind, field=problem[0])
        return row

    def finish(self) -> None:
        problem = self.check.finish()
        if problem is not None:
            raise TransferFormatError(problem[1], line=self.line, where="conversation")
        if self.sealed and self.key is None:
            raise TransferFormatError(
                "a sealed conversation needs its key line", line=self.line, where="conversation"
            )


def _parse(number: int, text: str, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """One line as a JSON object, strictly (no NaN, no key twice) and within the limits."""
    try:
        obj = loads(
            text,
            path=f"line {number}",
            limits=limits,
            max_bytes=limits.max_import_line_bytes,
            limit_name="max_import_line_bytes",
        )
    except CodecError as error:
        field = error.path.removeprefix(f"line {number}").lstrip(".")
        raise TransferFormatError(error.problems[0][1], line=number, field=field) from None
    if not isinstance(obj, dict):
        raise TransferFormatError("expected a JSON object", line=number)
    return obj


def _start(
    number: int,
    obj: Mapping[str, Any],
    seen: set[str],
    limits: Limits = DEFAULT_LIMITS,
    counter: TokenCounter | None = None,
) -> _Pending:
    encryption = obj.get("encryption")
    if encryption is not None and encryption != ENCRYPTION:
        raise TransferFormatError(
            "an encryption scheme this convstore does not know",
            line=number,
            where="conversation",
            field="encryption",
        )
    row, problem = _decode_row("conversation", obj, encryption is not None, limits)
    if problem is not None:
        raise TransferFormatError(problem[1], line=number, where="conversation", field=problem[0])
    if row["id"] in seen:
        raise TransferFormatError("a second conversation with this id", line=number, where="conversation")
    seen.add(row["id"])
    return _Pending(number, row, limits, counter)


class _Lines:
    """The non-blank lines of a file, parsed one at a time, with one line of look-ahead."""

    def __init__(self, lines: Iterable[str], limits: Limits) -> None:
        self._lines = enumerate(lines, start=1)
        self._limits = limits
        self._back: tuple[int, dict[str, Any]] | None = None
        self.number = 0

    def next(self) -> tuple[int, dict[str, Any]] | None:
        if self._back is not None:
            item, self._back = self._back, None
            return item
        for number, text in self._lines:
            self.number = number
            if text.strip():
                return number, _parse(number, text, self._limits)
        return None

    def push(self, item: tuple[int, dict[str, Any]]) -> None:
        self._back = item


class ConversationRows:
    """One conversation of an import file, read lazily: ``rows()`` parses and checks its lines one at a
    time as it is iterated, so a conversation of any size is never held whole.

    A sealed (encrypted) conversation is read the same way, but it is imported whole: ``dump()`` gathers
    its rows into a ``ConversationDump`` for ``open_sealed`` to verify before anything is written.

    Attributes:
        line: The number of its ``conversation`` line.
        conversation: The conversation row.
        sealed: Whether it is a sealed conversation (its rows ciphertexts, a ``key`` line after it).
        row_count: Rows read so far, the conversation row and a key line included (all of them once
            ``rows()`` ended).
    """

    def __init__(self, reader: _Lines, pending: _Pending) -> None:
        self._reader = reader
        self._pending = pending
        self.line = pending.line
        self.conversation = pending.conversation
        self.sealed = pending.sealed
        self.row_count = 1
        self.started = False
        self.done = False

    @property
    def id(self) -> str:
        return str(self.conversation["id"])

    @property
    def key(self) -> WrappedKey | None:
        """A sealed conversation's wrapped data key, once its key line was read (None before, and for a
        plaintext conversation)."""
        return self._pending.key

    def rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(kind, row)`` of each of its lines but the key line, in file order.

        Raises:
            TransferFormatError: the first line that is not right (after the rows before it were yielded).
        """
        self.started = True
        reader = self._reader
        while not self.done:
            item = reader.next()
            if item is None or item[1].get("kind") == "conversation":
                if item is not None:
                    reader.push(item)
                self._pending.finish()
                self.done = True
                return
            number, obj = item
            kind = obj.get("kind")
            if not isinstance(kind, str) or kind not in _ORDER:
                raise TransferFormatError("unknown kind", line=number, field="kind")
            row = self._pending.add(number, kind, obj)
            self.row_count += 1
            if row is not None:
                yield kind, row

    def dump(self) -> ConversationDump:
        """Every row of it, read and checked, held whole (what a sealed conversation's import needs).

        Raises:
            TransferFormatError: as ``rows()``; or its rows were read already.
        """
        if self.started:
            raise TransferFormatError("its rows were read already", line=self.line, where="conversation")
        rows: dict[str, list[dict[str, Any]]] = {_PLURAL[kind]: [] for kind in _ORDER if kind != "key"}
        for kind, row in self.rows():
            rows[_PLURAL[kind]].append(row)
        return ConversationDump(conversation=self.conversation, key=self.key, **rows)


def read_conversations(
    lines: Iterable[str], *, limits: Limits = DEFAULT_LIMITS, counter: TokenCounter | None = None
) -> Iterator[ConversationRows]:
    """Parse and check an export one conversation at a time, and each conversation one line at a time.

    Each line is checked as ``append`` checks what it writes: strict JSON (no NaN or Infinity, no key given
    twice) within ``limits``, every step payload by the codec, and every node's ``token_count`` against
    ``counter``'s count of its payload (``HeuristicCounter`` when None, as ``Store`` counts by default). A
    sealed conversation's lines are parsed as strictly and within the same limits, but its payloads are
    ciphertexts: they are checked once opened, by ``open_sealed``.

    Args:
        lines: The file's lines (with or without newlines); blank lines are ignored.
        limits: Bounds on a line (``max_import_line_bytes``), a payload and nesting.
        counter: The importing store's token counter.

    Yields:
        One ``ConversationRows`` for each conversation, in file order. Rows its caller did not read are read
        (and checked) before the next one is yielded.

    Raises:
        TransferFormatError: the first line that is not right, by number and field.
        LimitExceededError: a line longer than ``limits.max_import_line_bytes`` (named by number).
    """
    counter = counter if counter is not None else HeuristicCounter()
    reader = _Lines(lines, limits)
    seen: set[str] = set()
    first = reader.next()
    if first is None:
        raise TransferFormatError(f"empty: expected the {FORMAT} header line", line=reader.number + 1)
    _check_header(*first)
    while (item := reader.next()) is not None:
        number, obj = item
        kind = obj.get("kind")
        if kind == "conversation":
            conversation = ConversationRows(reader, _start(number, obj, seen, limits, counter))
            yield conversation
            for _ in conversation.rows():
                pass
        elif not isinstance(kind, str) or kind not in _ORDER:
            raise TransferFormatError("unknown kind", line=number, field="kind")
        else:
            raise TransferFormatError("comes before any conversation line", line=number, where=kind)


def read_dumps(
    lines: Iterable[str], *, limits: Limits = DEFAULT_LIMITS, counter: TokenCounter | None = None
) -> Iterator[tuple[int, ConversationDump]]:
    """Parse and check an export, one conversation at a time, each held whole (see ``read_conversations``
    for the checks, and for reading a plaintext conversation without holding it).

    Yields:
        ``(line number of the conversation line, dump)`` for each conversation, in file order.

    Raises:
        TransferFormatError: the first line that is not right, by number and field.
    """
    for conversation in read_conversations(lines, limits=limits, counter=counter):
        yield conversation.line, conversation.dump()
