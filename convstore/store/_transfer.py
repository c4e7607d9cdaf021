"""Export and import of whole conversations, every row with its ids, so a conversation moves between stores
(SQLite -> PostgreSQL -> SQLite) unchanged: the same ids, times, token counts and exact payload texts.

Two halves, pure except through the runner:

- **Operations**, in the pattern of ``_ops`` (generators that yield ``Exec`` statements): ``export_ops`` reads
  one conversation's rows into a ``ConversationDump``; ``import_ops`` writes a dump back, ids and all, in one
  transaction. Run them like every store operation::

      from convstore.store._engine import run        # run_async for an AsyncEngine
      dump = run(store.engine, export_ops(conversation_id), write=False)
      imported = run(store.engine, import_ops(dump, skip_existing=False), write=True)

- **The JSONL format**: ``header_line()``, ``dump_lines(dump)`` and ``read_dumps(lines)``, which checks every
  line and raises ``TransferFormatError`` naming the line and the field, never the content.

Format, version 1: UTF-8, one JSON object a line, each with a ``"kind"``. Line 1 is the header
(``{"kind": "header", "format": "convstore-export", "version": 1, ...}``). Then, for each conversation, its
``conversation`` line, its ``node`` lines (parents first), its ``summary`` lines, its ``branch`` lines and its
``exchange`` lines. The other keys of a line are the columns of that kind's table, named as the columns and
written as the database holds them: ids as canonical UUID text, times as ISO 8601 UTC with microseconds, JSON
settings and step payloads as their exact stored text (nothing is decoded and re-encoded). The columns are
read from the tables in ``_schema``, so a column a migration adds is exported without changes here. On
import, a key for a column the target does not have is refused (its data would be lost); a missing key for a
nullable column (an export from an older schema) imports as NULL.

Consistency: SQLite reads one snapshot. On PostgreSQL (READ COMMITTED) the reads are ordered so that a turn
appended during the export is wholly in it or wholly out of it: branches are read before nodes (nodes are
append-only, so every head read is among the nodes read), and exchange and summary rows are kept only for
nodes that were read.
"""

from __future__ import annotations

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
    ConversationNotFoundError,
    ConvstoreError,
    LimitExceededError,
    StoreError,
)
from convstore.store import _schema
from convstore.store._engine import Exec, Op
from convstore.store._ops import payload_texts, stored_rows, write_media
from convstore.store._prepare import column_text_problem

__all__ = [
    "FORMAT",
    "VERSION",
    "ConversationDump",
    "ConversationEncryptedError",
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
    "read_conversations",
    "read_dumps",
]

FORMAT = "convstore-export"
VERSION = 1
CHUNK = 500  # rows an INSERT carries (and how often import_ops reports progress)
BATCH_BYTES = 4 * 1024 * 1024  # ... or fewer, so a streamed import holds at most about this much of payloads


class TransferFormatError(ConvstoreError, ValueError):
    """An export that cannot be imported. Names where (line number, kind, field), never the content.

    Attributes:
        line: The 1-based line number (None when a ``ConversationDump`` was checked without a file).
        where: The kind of the line, or a path in a dump (``nodes[3]``).
        field: The key at fault ("" for the line as a whole).
        problem: What is wrong.
    """

    def __init__(self, problem: str, *, line: int | None = None, where: str = "", field: str = "") -> None:
        self.line = line
        self.where = where
        self.field = field
        self.problem = problem
        place = [f"line {line}" if line is not None else "", f"({where})" if where else ""]
        prefix = " ".join(part for part in place if part)
        target = f"{field}: " if field else ""
        super().__init__(f"{prefix}: {target}{problem}" if prefix else f"{target}{problem}")


class ConversationExistsError(StoreError, ValueError):
    """An imported conversation's id is already in the target store (nothing of it was written)."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"conversation {conversation_id!r} already exists in the target store")


class ConversationEncryptedError(StoreError, ValueError):
    """The conversation is encrypted at rest: export refuses it.

    Its rows are ciphertext whose data key lives in this store's key store, so an export of them could not be
    read anywhere else, and an export of the plaintext would be the very copy encryption exists to prevent.
    """

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(
            f"conversation {conversation_id!r} is encrypted at rest; export refuses encrypted conversations "
            "(their data key stays in this store's key store)"
        )


@attrs.frozen(kw_only=True)
class ConversationDump:
    """Every row of one conversation, as column -> value dicts (datetimes aware UTC, ids canonical text).

    Attributes:
        conversation: The conversation row.
        nodes: Node rows, parents before children (by depth, creation time, id).
        summaries: Summary rows (empty when the schema has none).
        branches: Branch rows, by creation time and name.
        exchanges: Exchange rows, by creation time and exchange id.
    """

    conversation: dict[str, Any] = attrs.field(repr=False)
    nodes: list[dict[str, Any]] = attrs.field(repr=lambda rows: f"<{len(rows)}>")
    summaries: list[dict[str, Any]] = attrs.field(factory=list, repr=lambda rows: f"<{len(rows)}>")
    branches: list[dict[str, Any]] = attrs.field(factory=list, repr=lambda rows: f"<{len(rows)}>")
    exchanges: list[dict[str, Any]] = attrs.field(factory=list, repr=lambda rows: f"<{len(rows)}>")

    @property
    def id(self) -> str:
        return str(self.conversation["id"])

    @property
    def row_count(self) -> int:
        """Rows in the dump, the conversation row included (what a progress bar counts)."""
        return 1 + len(self.nodes) + len(self.summaries) + len(self.branches) + len(self.exchanges)


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
_INTERNAL = {("node", "media")}


def columns(kind: str) -> list[sa.Column[Any]]:
    """The columns of a kind's rows in a dump."""
    return [column for column in TABLES[kind].columns if (kind, column.name) not in _INTERNAL]


_PLURAL = {"node": "nodes", "summary": "summaries", "branch": "branches", "exchange": "exchanges"}

# Text columns that hold JSON, and the JSON type each must be.
_JSON_COLUMNS: dict[tuple[str, str], type] = {
    ("conversation", "system_instruction"): str,  # the user's text as a JSON string (it may hold NUL)
    ("conversation", "generation_config"): dict,
    ("conversation", "tools"): list,
    ("conversation", "metadata"): dict,
    ("node", "payload"): dict,
    ("summary", "payload"): list,
    ("exchange", "usage"): dict,
}
_NON_NEGATIVE = {"depth", "token_count", "total_tokens"}


def _owner(table: sa.Table) -> sa.ColumnElement[bool]:
    column = table.c.id if table is _schema.conversations else table.c.conversation_id
    return column == sa.bindparam("conversation_id")


SELECT = {kind: sa.select(table).where(_owner(table)) for kind, table in TABLES.items()}
INSERT = {kind: sa.insert(table) for kind, table in TABLES.items()}
CONVERSATION_EXISTS = sa.select(_schema.conversations.c.id).where(_owner(_schema.conversations))


# -- operations ------------------------------------------------------------------------------------------


def _row(kind: str, found: Any) -> dict[str, Any]:
    mapping = found._mapping
    return {column.name: mapping[column.name] for column in columns(kind)}


def _sort_key(kind: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    if kind == "node":
        return lambda r: (r["depth"], r["created_at"], r["id"])
    if kind == "summary":
        return lambda r: (r["node_id"],)
    if kind == "branch":
        return lambda r: (r["created_at"], r["name"])
    return lambda r: (r["created_at"], r["exchange_id"])


def conversation_exists(conversation_id: str) -> Op[bool]:
    """Whether the store holds a conversation of this id."""
    if not is_id(conversation_id):
        return False
    return (yield Exec(CONVERSATION_EXISTS, {"conversation_id": conversation_id})).first() is not None


def export_ops(conversation_id: str) -> Op[ConversationDump]:
    """Read every row of one conversation (see the module docstring on consistency).

    Raises:
        ConversationNotFoundError.
        ConversationEncryptedError: the conversation is encrypted at rest (nothing of it is exported).
    """
    if not is_id(conversation_id):
        raise ConversationNotFoundError(str(conversation_id))
    params = {"conversation_id": conversation_id}
    found = (yield Exec(SELECT["conversation"], params)).first()
    if found is None:
        raise ConversationNotFoundError(conversation_id)
    if getattr(found, "encryption", None) is not None:
        raise ConversationEncryptedError(conversation_id)
    rows: dict[str, list[dict[str, Any]]] = {}
    for kind in ("branch", "node", "summary", "exchange"):  # branches before nodes: every head is read
        if kind in TABLES:
            result = (yield Exec(SELECT[kind], params)).all()
            if kind == "node":
                texts = yield from payload_texts(conversation_id, result, None)
                rows[kind] = [
                    {**_row(kind, r), "payload": text} for r, text in zip(result, texts, strict=True)
                ]
                rows[kind].sort(key=_sort_key(kind))
            else:
                rows[kind] = sorted((_row(kind, r) for r in result), key=_sort_key(kind))
    if not rows["branch"]:
        raise ConversationNotFoundError(conversation_id)  # deleted while it was read
    node_ids = {r["id"] for r in rows["node"]}
    exchange_ids = {r["exchange_id"] for r in rows["node"]}
    return ConversationDump(
        conversation=_row("conversation", found),
        nodes=rows["node"],
        summaries=[r for r in rows.get("summary", []) if r["node_id"] in node_ids],
        branches=rows["branch"],
        exchanges=[r for r in rows["exchange"] if r["exchange_id"] in exchange_ids],
    )


def import_ops(
    dump: ConversationDump,
    *,
    skip_existing: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Op[bool]:
    """Write a dump with its ids, all or nothing (run it with ``write=True``: one transaction).

    Args:
        dump: From ``export_ops`` or ``read_dumps``; its tree is checked first (``check_dump``).
        skip_existing: When the conversation id exists already, write nothing and return False instead of
            raising.
        progress: Called with the number of rows written after each batch.

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
    if progress is not None:
        progress(1)
    for kind in ("node", "summary", "branch", "exchange"):
        rows: list[dict[str, Any]] = getattr(dump, _PLURAL[kind])
        if kind == "node":
            rows, blobs = stored_rows([{**row, "media": None} for row in rows], None)
            yield from write_media(dump.id, blobs, None)
        if rows and kind not in TABLES:
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
    """``import_ops`` for a conversation read lazily (``read_conversations``): its rows are read, checked
    and written a batch at a time inside the one transaction, so memory stays bounded by a batch whatever
    the conversation's size. A line that fails its check raises and rolls the whole conversation back.

    Returns:
        True when written, False when skipped (its rows are still read, so the file can go on).

    Raises:
        ConversationExistsError: the id exists already (and ``skip_existing`` is false).
        TransferFormatError: a line breaks a rule (nothing of the conversation is written).
    """
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
    for kind, row in conversation.rows():
        if batch and (kind != batch_kind or len(batch) >= CHUNK or batch_bytes >= BATCH_BYTES):
            yield from _write_batch(conversation.id, batch_kind, batch, progress)
            batch, batch_bytes = [], 0
        batch_kind = kind
        batch.append(row)
        payload = row.get("payload")
        batch_bytes += len(payload) if isinstance(payload, str) else 0
    if batch:
        yield from _write_batch(conversation.id, batch_kind, batch, progress)
    return True


def _write_batch(
    conversation_id: str, kind: str, rows: list[dict[str, Any]], progress: Callable[[int], None] | None
) -> Op[None]:
    if kind == "node":
        rows, blobs = stored_rows([{**row, "media": None} for row in rows], None)
        yield from write_media(conversation_id, blobs, None)
    try:
        yield Exec(INSERT[kind], rows)
    except exc.IntegrityError:
        raise TransferFormatError(
            "the database refused these rows (a reference or a key is wrong)", where=_PLURAL[kind]
        ) from None
    if progress is not None:
        progress(len(rows))


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
        self.seen: dict[str, set[Any]] = {"summary": set(), "branch": set(), "exchange": set()}

    def add(self, kind: str, row: Mapping[str, Any]) -> tuple[str, str] | None:
        """``(field, problem)`` when ``row`` breaks a rule, else None (and the row is remembered)."""
        if row.get("conversation_id") != self.conversation_id:
            return "conversation_id", "does not match the conversation line it follows"
        if kind == "node":
            return self._node(row)
        key = {"summary": "node_id", "branch": "name", "exchange": "exchange_id"}[kind]
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

    def finish(self) -> tuple[str, str] | None:
        """``(where, problem)`` when the rows as a whole break a rule, else None."""
        for exchange_id, (size, starts, least, greatest) in self.exchanges.items():
            # One chain: one start, and as many levels as nodes (what Store.check() verifies too).
            if starts != 1 or greatest - least + 1 != size:
                return "nodes", f"the nodes of exchange {exchange_id} do not form one chain"
        for exchange_id in self.seen["exchange"] - self.exchange_ids:
            return "exchanges", f"exchange {exchange_id} names no exchange of this conversation's nodes"
        return None if self.seen["branch"] else ("branches", "a conversation needs at least one branch")


def check_dump(dump: ConversationDump) -> None:
    """Check the rules of the tree (references, parents first, depths, one branch at least).

    Raises:
        TransferFormatError: naming the row by its place in the dump.
    """
    if dump.conversation.get("encryption") is not None:
        raise TransferFormatError(
            "an encrypted conversation cannot be imported (export writes plaintext conversations only)",
            where="conversation",
            field="encryption",
        )
    check = _TreeCheck(dump.id)
    for kind in ("node", "summary", "branch", "exchange"):
        for index, row in enumerate(getattr(dump, _PLURAL[kind])):
            missing = [c.name for c in columns(kind) if c.name not in row] if kind in TABLES else []
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
    for kind in ("node", "summary", "branch", "exchange"):
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
    token count against the store's counter."""
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


def _decode_row(
    kind: str,
    obj: Mapping[str, Any],
    limits: Limits = DEFAULT_LIMITS,
    counter: TokenCounter | None = None,
) -> tuple[dict[str, Any], tuple[str, str] | None]:
    names = columns(kind)
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
        value, problem = _field_value(kind, column, obj[column.name], limits)
        if problem is not None:
            return {}, (column.name, problem)
        row[column.name] = value
    if kind in ("node", "summary"):
        found = _payload_problem(kind, row, limits, counter)
        if found is not None:
            return {}, found
    return row, None


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


_ORDER = ("node", "summary", "branch", "exchange")


class _Pending:
    """A conversation being read: the checks of its tree, and where in the order of kinds it is."""

    def __init__(
        self, line: int, conversation: dict[str, Any], limits: Limits, counter: TokenCounter | None
    ) -> None:
        self.line = line
        self.conversation = conversation
        self.check = _TreeCheck(conversation["id"])
        self.order = 0  # index in _ORDER of the last kind seen: kinds come in that order
        self._limits = limits
        self._counter = counter

    def add(self, number: int, kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The row of a line, checked (not kept: the caller keeps it or writes it)."""
        position = _ORDER.index(kind)
        if position < self.order:
            raise TransferFormatError(
                f"out of order: {_PLURAL[kind]} come before {_PLURAL[_ORDER[self.order]]}",
                line=number,
                where=kind,
            )
        self.order = position
        row, problem = _decode_row(kind, obj, self._limits, self._counter)
        if problem is None:
            problem = self.check.add(kind, row)
        if problem is not None:
            raise TransferFormatError(problem[1], line=number, where=kind, field=problem[0])
        return row

    def finish(self) -> None:
        problem = self.check.finish()
        if problem is not None:
            raise TransferFormatError(problem[1], line=self.line, where="conversation")


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
    number: int, obj: Mapping[str, Any], seen: set[str], limits: Limits, counter: TokenCounter | None
) -> _Pending:
    row, problem = _decode_row("conversation", obj, limits)
    if problem is not None:
        raise TransferFormatError(problem[1], line=number, where="conversation", field=problem[0])
    if row.get("encryption") is not None:
        raise TransferFormatError(
            "an encrypted conversation cannot be imported",
            line=number,
            where="conversation",
            field="encryption",
        )
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

    Attributes:
        line: The number of its ``conversation`` line.
        conversation: The conversation row.
        row_count: Rows read so far, the conversation row included (all of them once ``rows()`` ended).
    """

    def __init__(self, reader: _Lines, pending: _Pending) -> None:
        self._reader = reader
        self._pending = pending
        self.line = pending.line
        self.conversation = pending.conversation
        self.row_count = 1
        self.done = False

    @property
    def id(self) -> str:
        return str(self.conversation["id"])

    def rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(kind, row)`` of each of its lines, in file order.

        Raises:
            TransferFormatError: the first line that is not right (after the rows before it were yielded).
        """
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
            if not isinstance(kind, str) or kind not in TABLES or kind == "conversation":
                raise TransferFormatError("unknown kind", line=number, field="kind")
            row = self._pending.add(number, kind, obj)
            self.row_count += 1
            yield kind, row


def read_conversations(
    lines: Iterable[str], *, limits: Limits = DEFAULT_LIMITS, counter: TokenCounter | None = None
) -> Iterator[ConversationRows]:
    """Parse and check an export one conversation at a time, and each conversation one line at a time.

    Each line is checked as ``append`` checks what it writes: strict JSON (no NaN or Infinity, no key given
    twice) within ``limits``, every step payload by the codec, and every node's ``token_count`` against
    ``counter``'s count of its payload (``HeuristicCounter`` when None, as ``Store`` counts by default).

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
        elif not isinstance(kind, str) or kind not in TABLES:
            raise TransferFormatError("unknown kind", line=number, field="kind")
        else:
            raise TransferFormatError("comes before any conversation line", line=number, where=kind)


def read_dumps(
    lines: Iterable[str], *, limits: Limits = DEFAULT_LIMITS, counter: TokenCounter | None = None
) -> Iterator[tuple[int, ConversationDump]]:
    """Parse and check an export, one conversation at a time, each held whole (see ``read_conversations``
    for the checks, and for reading a conversation without holding it).

    Yields:
        ``(line number of the conversation line, dump)`` for each conversation, in file order.

    Raises:
        TransferFormatError: the first line that is not right, by number and field.
    """
    for conversation in read_conversations(lines, limits=limits, counter=counter):
        rows: dict[str, list[dict[str, Any]]] = {_PLURAL[kind]: [] for kind in _ORDER}
        for kind, row in conversation.rows():
            rows[_PLURAL[kind]].append(row)
        yield conversation.line, ConversationDump(conversation=conversation.conversation, **rows)
