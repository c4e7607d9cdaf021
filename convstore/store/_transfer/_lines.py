"""The JSONL lines: a conversation written as lines, and a line's fields decoded and checked."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from convstore import codec
from convstore._ids import is_id
from convstore._limits import DEFAULT_LIMITS, Limits, loads
from convstore._uris import is_file_uri
from convstore.budget import TokenCounter
from convstore.errors import (
    CodecError,
    LimitExceededError,
)
from convstore.store import _schema
from convstore.store._crypto import MAX_KEY_ID, WrappedKey, is_sealed
from convstore.store._media import plain_digest
from convstore.store._prepare import column_text_problem
from convstore.store._transfer._tables import _JSON_COLUMNS, _NON_NEGATIVE, _PLURAL, _SEALED, columns
from convstore.store._transfer._types import FORMAT, VERSION, ConversationDump

# -- the JSONL format ------------------------------------------------------------------------------------

# The kinds of a conversation's row lines after its conversation (and key) line, in the order written.
KINDS = ("node", "media", "file", "summary", "branch", "exchange")


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
    for kind in KINDS:
        for row in getattr(dump, _PLURAL[kind]):
            yield _line(kind, row)
    if dump.seal is not None:
        mac = binascii.b2a_base64(dump.seal, newline=False).decode("ascii")
        yield _line("seal", {"conversation_id": dump.id, "mac": mac})


class ExportEnd:
    """Counts and digests the lines of an export as they are written, for its end line (format 3): the
    number of conversations and of lines before it, and the SHA-256 of those lines (each with its newline).
    An import refuses a file whose end line is missing or does not match: one cut short, or cut and
    rearranged.

    Example:
        >>> end = ExportEnd()
        >>> lines = [end.add(header_line())]
        >>> lines.append(end.line())
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.lines = 0
        self.conversations = 0

    def add(self, line: str) -> str:
        """Count ``line`` (no newline) and return it."""
        self._digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
        self.lines += 1
        if line.startswith('{"kind": "conversation"'):
            self.conversations += 1
        return line

    def line(self) -> str:
        """The end line (no newline)."""
        end = {
            "kind": "end",
            "conversations": self.conversations,
            "lines": self.lines,
            "sha256": self._digest.hexdigest(),
        }
        return json.dumps(end)


def export_lines(dumps: Iterable[ConversationDump], schema_revision: str | None = None) -> Iterator[str]:
    """A whole export, line by line (no newlines): the header, each dump's lines, the end line."""
    end = ExportEnd()
    yield end.add(header_line(schema_revision))
    for dump in dumps:
        for line in dump_lines(dump):
            yield end.add(line)
    yield end.line()


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
    found = _content_problem(kind, row, sealed, limits, counter)
    return ({}, found) if found is not None else (row, None)


def _content_problem(
    kind: str, row: Mapping[str, Any], sealed: bool, limits: Limits, counter: TokenCounter | None
) -> tuple[str, str] | None:
    """What a row holds, checked beyond its columns' types (a sealed one's sealed values: once opened)."""
    if kind == "node" and sealed:  # a plaintext one's is recomputed from its payload on import
        problem = files_problem(row["files"], limits)
        return None if problem is None else ("files", problem)
    if kind in ("node", "summary") and not sealed:
        return _payload_problem(kind, row, limits, counter)
    if kind == "media" and not sealed:
        return media_problem(row, limits)
    return file_problem(row) if kind == "file" else None


def files_problem(value: str | None, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why a node's ``files`` column is not None or the JSON array of Files API uris (``files_json``)."""
    if value is None:
        return None
    uris, problem = _strict_json(value, list, limits)
    if problem is None and (
        not uris
        or len(set(map(str, uris))) != len(uris)
        or not all(isinstance(uri, str) and is_file_uri(uri) for uri in uris)
    ):
        problem = "expected the JSON array of the Files API uris its payload names"
    return problem


def bytes_problem(text: str, limits: Limits | None) -> str | None:
    """Why ``text`` is not the stored form of an uploaded file's bytes (strict base64 within
    ``max_step_bytes``, as ``upload`` stores them), or None. ``limits`` None: the length is not checked."""
    if limits is not None and len(text) > limits.max_step_bytes:
        return f"longer than max_step_bytes={limits.max_step_bytes}"
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return "expected the base64 of a file's bytes"
    return None


def media_problem(row: Mapping[str, Any], limits: Limits | None) -> tuple[str, str] | None:
    """A plaintext conversation's media row (an uploaded file's bytes): base64 named by its SHA-256."""
    problem = bytes_problem(row["data"], limits)
    if problem is not None:
        return "data", problem
    if plain_digest(row["data"]) != row["hash"]:
        return "hash", "is not the SHA-256 of its data"
    return None


def file_problem(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """A file row: its uris are Files API uris (as a step names one), its MIME type a type/subtype."""
    for field in ("uri", "live_uri"):
        if row[field] is not None and not is_file_uri(row[field]):
            return field, "expected a Files API uri (.../files/<id>)"
    if row["live_uri"] is None and row["live_expires_at"] is not None:
        return "live_expires_at", "set without a live_uri"
    if "/" not in row["mime_type"].strip("/"):
        return "mime_type", "expected a MIME type (type/subtype)"
    return None


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
