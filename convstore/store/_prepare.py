"""Argument checks and input preparation shared by the sync and async stores (pure, no I/O)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from convstore import codec
from convstore._ids import is_id, new_id
from convstore._limits import DEFAULT_LIMITS, Limits, check_value, text_bytes
from convstore.budget import TokenCounter
from convstore.errors import CodecError, InvalidExchangeError, LimitExceededError
from convstore.model import ConversationInfo, Step
from convstore.model._sdk import is_sdk_object

if TYPE_CHECKING:
    from convstore.store._windows import Window

__all__ = [
    "Redactor",
    "call",
    "call_async",
    "check_branch_name",
    "check_owner",
    "column_text_problem",
    "conversation_row",
    "decode_cursor",
    "encode_cursor",
    "exchange_row",
    "prepare_exchange",
    "prepare_wires",
    "resolve",
    "resolve_async",
    "settings_tokens",
    "utcnow",
    "valid_id",
    "window_json",
    "window_length",
    "window_parts",
]

MAX_BRANCH_NAME = 255
MAX_STEP_TYPE = 64  # the nodes.type column
_MAX_INT32 = 2**31 - 1  # the exchanges table's token columns


def column_text_problem(value: str, max_length: int | None = None) -> str | None:
    """Why ``value`` cannot go into a text column as it is (drivers raise raw errors on these), or None."""
    if "\x00" in value:
        return "contains a NUL character (PostgreSQL cannot store it)"
    if max_length is not None and len(value) > max_length:
        return f"longer than {max_length} characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid Unicode (a lone surrogate)"
    return None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def valid_id(value: object) -> bool:
    """Whether ``value`` can be an id at all; anything else is treated as an id that does not exist."""
    return is_id(value)


def check_branch_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"branch: expected a string, got {type(name).__name__}")
    if not name or column_text_problem(name, MAX_BRANCH_NAME) is not None:
        raise CodecError(
            [
                (
                    "branch",
                    f"a branch name is a non-empty string of at most {MAX_BRANCH_NAME} characters, "
                    "without NUL or lone surrogates",
                )
            ]
        )
    return name


def _json_text(value: Any, field: str, limits: Limits = DEFAULT_LIMITS) -> str | None:
    if value is None:
        return None
    check_value(value, path=field, limits=limits, max_bytes=limits.max_step_bytes)
    try:
        return codec.dumps(value)
    except CodecError:
        raise CodecError([(field, "not representable as JSON")]) from None


def conversation_row(
    *,
    model: str | None,
    system_instruction: str | None,
    generation_config: Mapping[str, Any] | None,
    tools: Sequence[Mapping[str, Any]] | None,
    metadata: Mapping[str, Any] | None,
    now: datetime,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """The row of a new conversation; checks the settings' JSON types and names any that is wrong.

    Raises:
        CodecError: a setting of the wrong JSON type, or not representable as JSON.
        LimitExceededError: a setting nested deeper than ``limits.max_depth`` or longer than
            ``limits.max_step_bytes``.
    """
    problems = []
    if model is not None and not isinstance(model, str):
        problems.append(("model", "expected a string"))
    elif model is not None and (problem := column_text_problem(model)) is not None:
        problems.append(("model", problem))
    if system_instruction is not None and not isinstance(system_instruction, str):
        problems.append(("system_instruction", "expected a string"))
    if generation_config is not None and not isinstance(generation_config, Mapping):
        problems.append(("generation_config", "expected an object"))
    if tools is not None and (isinstance(tools, (str, Mapping)) or not isinstance(tools, Sequence)):
        problems.append(("tools", "expected an array"))
    if metadata is not None and not isinstance(metadata, Mapping):
        problems.append(("metadata", "expected an object"))
    if problems:
        raise CodecError(problems)
    return {
        "id": new_id(),
        "created_at": now,
        "model": model,
        # JSON text like the other settings: it is the user's text, which may hold anything, NUL included
        # (PostgreSQL text cannot; a JSON string escapes it).
        "system_instruction": _json_text(system_instruction, "system_instruction", limits),
        "generation_config": _json_text(
            None if generation_config is None else dict(generation_config), "generation_config", limits
        ),
        "tools": _json_text(_tools(tools), "tools", limits),
        "metadata": _json_text(None if metadata is None else dict(metadata), "metadata", limits),
        "encryption": None,  # plaintext; the store seals the settings of an encrypted conversation
    }


def _tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    problems = [
        (f"tools[{i}]", "expected an object") for i, tool in enumerate(tools) if not isinstance(tool, Mapping)
    ]
    if problems:
        raise CodecError(problems)
    return [dict(tool) for tool in tools]


Redactor = Callable[[dict[str, Any]], Mapping[str, Any]]
"""A hook run on every step before it is written; returns the step to store."""


def check_owner(owner: object) -> str | None:
    if owner is not None and not isinstance(owner, str):
        raise TypeError(f"owner: expected a string or None, got {type(owner).__name__}")
    if owner is not None and (not isinstance(owner, str) or not owner or column_text_problem(owner, 255)):
        raise CodecError(
            [
                (
                    "owner",
                    "an owner is a non-empty string of at most 255 characters, without NUL or lone "
                    "surrogates",
                )
            ]
        )
    return owner


def prepare_exchange(
    steps: Iterable[Step | Mapping[str, Any]],
    counter: TokenCounter,
    redact: Redactor | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> list[tuple[str, str, int]]:
    """Validate an exchange; return ``(type, JSON text, tokens)`` for each step, before anything is written.

    Raises:
        InvalidExchangeError: ``steps`` is a single step rather than a list of them, or is empty.
        CodecError: a step is malformed; the paths name each problem (``steps[1].content[0].text``).
        LimitExceededError: a step or the exchange is beyond ``limits`` (named in the error).
    """
    if isinstance(steps, (Mapping, str, bytes)) or not isinstance(steps, Iterable) or is_sdk_object(steps):
        raise InvalidExchangeError(
            f"append takes a list of steps (one exchange), not a {type(steps).__name__}; wrap a single step "
            "in a list"
        )
    wires = codec.normalize_steps(steps, limits=limits)
    if not wires:
        raise InvalidExchangeError("an exchange needs at least one step")
    return prepare_wires(wires, counter, redact, limits, checked=True)


def prepare_wires(
    wires: list[dict[str, Any]],
    counter: TokenCounter,
    redact: Redactor | None = None,
    limits: Limits = DEFAULT_LIMITS,
    *,
    checked: bool = False,
    first: int = 0,
    total: int = 0,
) -> list[tuple[str, str, int]]:
    """``(type, JSON text, tokens)`` of validated wire steps, after the redaction hook.

    Each step's nesting and size are bounded by ``limits`` before it is encoded (unless ``checked``: the
    codec bounded them already, with the same ``limits``), its exact encoded length after, and the
    exchange's total as it grows.

    Args:
        wires: The steps, validated wire JSON.
        counter: Counts each step's tokens (once).
        redact: The store's redaction hook; its results are validated and bounded again.
        limits: The store's limits.
        checked: Every step of ``wires`` went through ``codec.normalize_steps`` with ``limits``.
        first: The index of the first step in its exchange (the errors' paths name it).
        total: The encoded bytes of the exchange's steps before these.

    Raises:
        CodecError: a step is malformed or its type is text no database can store.
        LimitExceededError: a step or the exchange is beyond ``limits``.
    """
    if redact is not None:
        wires = codec.normalize_steps(
            [redact(dict(wire)) for wire in wires], prefix="redacted", limits=limits, start=first
        )
        checked = True
    prepared = []
    for index, wire in enumerate(wires, first):
        path = f"steps[{index}]"
        if not checked:
            check_value(wire, path=path, limits=limits, max_bytes=limits.max_step_bytes)
        problem = column_text_problem(wire["type"], MAX_STEP_TYPE)
        if problem is not None:
            raise CodecError([(f"{path}.type", problem)])
        try:
            text = codec.dumps(wire)
        except CodecError:
            raise CodecError([(path, "not representable as JSON")]) from None
        size = text_bytes(text)
        if size > limits.max_step_bytes:
            raise LimitExceededError("max_step_bytes", limits.max_step_bytes, path=path, actual=size)
        total += size
        if total > limits.max_exchange_bytes:
            raise LimitExceededError("max_exchange_bytes", limits.max_exchange_bytes, path=path, actual=total)
        prepared.append((wire["type"], text, counter.count_step(wire)))
    return prepared


_USAGE_COLUMNS = {
    "input_tokens": "total_input_tokens",
    "output_tokens": "total_output_tokens",
    "thought_tokens": "total_thought_tokens",
    "cached_tokens": "total_cached_tokens",
    "tool_use_tokens": "total_tool_use_tokens",
    "total_tokens": "total_tokens",
}


def exchange_row(
    *,
    estimated_input_tokens: int | None = None,
    interaction_id: str | None,
    stored: bool,
    model: str | None,
    status: str | None,
    usage: Mapping[str, Any] | None,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """The exchanges-table row of a recorded turn (keys and time are added by the operation).

    Raises:
        CodecError: the reply's id, model or status is text no database can store (NUL, a lone surrogate).
    """
    problems = [
        (field, problem)
        for field, value in (("id", interaction_id), ("model", model), ("status", status))
        if isinstance(value, str) and (problem := column_text_problem(value)) is not None
    ]
    if problems:
        raise CodecError(problems)
    row: dict[str, Any] = {
        "interaction_id": interaction_id,
        "stored": bool(stored),
        "model": model,
        "status": status,
        "usage": None if usage is None else _json_text(dict(usage), "usage", limits),
        "estimated_input_tokens": estimated_input_tokens,
    }
    for column, field in _USAGE_COLUMNS.items():
        value = usage.get(field) if usage is not None else None
        counted = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_INT32
        row[column] = value if counted else None  # an absurd count stays in the usage JSON only
    return row


def encode_cursor(cursor: tuple[datetime, str] | None) -> str | None:
    if cursor is None:
        return None
    created_at, conversation_id = cursor
    raw = f"{created_at.isoformat()}|{conversation_id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """A ``Page.next_cursor`` back to its position.

    Raises:
        TypeError: ``cursor`` is not a string. ValueError: not a cursor this store gave out.
    """
    if cursor is None:
        return None
    if not isinstance(cursor, str):
        raise TypeError(
            f"cursor: expected a string (a Page.next_cursor) or None, got {type(cursor).__name__}"
        )
    try:
        created, conversation_id = base64.urlsafe_b64decode(cursor.encode("ascii")).decode().split("|")
        created_at = datetime.fromisoformat(created)
    except (ValueError, UnicodeError, binascii.Error):
        raise CodecError([("cursor", "not a cursor: pass back a Page.next_cursor unchanged")]) from None
    if created_at.tzinfo is None or not is_id(conversation_id):
        raise CodecError([("cursor", "not a cursor: pass back a Page.next_cursor unchanged")])
    return created_at, conversation_id


def settings_tokens(info: ConversationInfo, counter: TokenCounter) -> int:
    """Estimated tokens of what every request carries besides ``input``: system instruction and tools."""
    tokens = counter.count_text(info.system_instruction or "")
    if info.tools:
        tokens += counter.count_text(codec.dumps([dict(tool) for tool in info.tools]))
    return tokens


def window_parts(window: Window) -> list[str]:
    """A window's steps as stored JSON texts, in order: pinned, summary (its steps comma-joined), kept."""
    parts = [row.payload for row in window.pinned]
    if window.summary is not None and window.summary[0] != "[]":
        parts.append(window.summary[0][1:-1])
    parts.extend(row.payload for row in window.rows)
    return parts


def window_length(window: Window) -> int:
    """How many steps ``window_parts`` holds (a summary's steps decoded to be counted: a few at most)."""
    summary = 0 if window.summary is None else len(json.loads(window.summary[0]))
    return len(window.pinned) + summary + len(window.rows)


def window_json(window: Window) -> str:
    """A window's steps as one JSON array text, spliced from the stored texts: pinned, summary, kept."""
    return "[" + ",".join(window_parts(window)) + "]"


T = TypeVar("T")


async def call_async(function: Callable[..., T], *args: Any) -> T:
    """A blocking call (a user's ``KeyStore``) from async code: run in a worker thread."""
    return await asyncio.to_thread(function, *args)


def call(function: Callable[..., T], *args: Any) -> T:
    """``call_async`` for the sync store: a plain call."""
    return function(*args)


async def resolve_async(value: Any) -> Any:
    """A hook's result, awaited when it is awaitable (async conversations take async hooks)."""
    return await value if inspect.isawaitable(value) else value


def resolve(value: Any) -> Any:
    """A hook's result in a sync conversation, which cannot wait for a coroutine."""
    if inspect.isawaitable(value):
        raise TypeError("a sync Conversation needs a sync hook; use AsyncConversation for an async one")
    return value
