"""Resource bounds on hostile input, and the guarded JSON reading that enforces them (pure, no I/O).

Every way data comes into convstore (a step appended, the settings of a conversation, a reply body or its
text, an SSE stream, an import file) is bounded here before it is parsed, written or held whole:

- ``Limits``: the configurable bounds, accepted by ``Store``/``AsyncStore`` and the clients.
- ``loads``: strict JSON text -> value. The nesting is measured first by an iterative scan of the text's
  brackets outside strings, so no text can make ``json`` recurse past Python's limit; NaN, Infinity, numbers
  that overflow a float and objects with a key given twice are refused (the API would read only one).
- ``check_value``: an iterative walk of a Python value that bounds its nesting and its (estimated) encoded
  size before ``json.dumps`` runs on it.

Both raise ``LimitExceededError`` (a bound) or ``CodecError`` (not JSON), naming the path and the limit,
never the content.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from convstore.errors import CodecError, LimitExceededError

__all__ = ["DEFAULT_LIMITS", "MAX_DEPTH_CEILING", "Limits", "check_value", "json_depth", "loads"]

MiB: Final = 1024 * 1024
MAX_DEPTH_CEILING: Final = 200  # json and cattrs recurse once per level: stay far below recursionlimit


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name}: expected a number, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{attribute.name}: expected a positive number")


def _depth(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name}: expected an integer, got {type(value).__name__}")
    if not 1 <= value <= MAX_DEPTH_CEILING:
        raise ValueError(f"{attribute.name}: expected an integer from 1 to {MAX_DEPTH_CEILING}")


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds on what convstore accepts, so that no input can exhaust memory, recurse without end or
    make a call sleep for long. Each refusal is a ``LimitExceededError`` naming the limit.

    The defaults (see the README, "Limits") are several times what the Interactions API itself takes in
    one request (about 20 MB of inline data), so that real traffic never meets them.

    Attributes:
        max_depth: Nesting of JSON arrays and objects in one value (a step, a setting, a reply, an event).
        max_step_bytes: Encoded bytes of one step.
        max_exchange_bytes: Encoded bytes of the steps of one exchange (one ``append`` or ``record``).
        max_reply_bytes: Bytes of one (decoded) reply body of the API, read incrementally.
        max_sse_line_bytes: Characters of one line of an event stream.
        max_sse_event_bytes: Characters of the ``data`` of one event of an event stream.
        max_import_line_bytes: Characters of one line of an import file.
        max_retry_wait: Seconds a client waits when the server asks (``Retry-After``); a longer wait is
            not slept: the error is raised at once.
    """

    max_depth: int = attrs.field(default=64, validator=_depth)
    max_step_bytes: int = attrs.field(default=32 * MiB, validator=_positive)
    max_exchange_bytes: int = attrs.field(default=64 * MiB, validator=_positive)
    max_reply_bytes: int = attrs.field(default=64 * MiB, validator=_positive)
    max_sse_line_bytes: int = attrs.field(default=48 * MiB, validator=_positive)
    max_sse_event_bytes: int = attrs.field(default=64 * MiB, validator=_positive)
    max_import_line_bytes: int = attrs.field(default=80 * MiB, validator=_positive)
    max_retry_wait: float = attrs.field(default=60.0, validator=_positive)


DEFAULT_LIMITS: Final = Limits()


def checked_limits(limits: object) -> Limits:
    """``limits`` or the defaults; a ``TypeError`` naming the argument for anything else."""
    if limits is None:
        return DEFAULT_LIMITS
    if not isinstance(limits, Limits):
        raise TypeError(f"limits: expected a convstore.Limits, got {type(limits).__name__}")
    return limits


# A whole string (escapes included), a bracket, or the quote of a string that never ends.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|"', re.DOTALL)


def json_depth(text: str, max_depth: int) -> int:
    """The deepest nesting of ``text``'s arrays and objects, counted up to ``max_depth + 1`` (iterative).

    Brackets inside strings do not count. Text after a string that never ends is not scanned (it is not
    JSON, and ``json`` says so).
    """
    if text.count("[") + text.count("{") <= max_depth:
        return 0  # cannot be deeper, whatever the strings hold
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > max_depth:
                    return deepest
        elif char in "]}":
            depth -= 1
        elif match.end() - match.start() == 1:
            break  # an unterminated string: the rest is inside it
    return deepest


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _Duplicate
    return value


class _Marked(dict[str, Any]):
    """An object that had a key twice (only built to find where, after ``_Duplicate``)."""

    twice = ""


def _mark_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    marked = _Marked(value)
    seen: set[str] = set()
    marked.twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
    return marked


def _no_constant(name: str) -> Any:
    raise _NonFinite


class _NonFinite(Exception):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite
    return value


def _duplicate_path(text: str, path: str) -> str:
    marked = json.loads(
        text, object_pairs_hook=_mark_duplicates, parse_constant=_no_constant, parse_float=_finite
    )
    stack: list[tuple[Any, str]] = [(marked, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, _Marked):
            return f"{where}.{value.twice}" if where else value.twice
        if isinstance(value, dict):
            stack.extend((item, f"{where}.{key}" if where else str(key)) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{index}]") for index, item in enumerate(value))
    return path


def loads(
    text: str | bytes | bytearray,
    *,
    path: str = "",
    limits: Limits = DEFAULT_LIMITS,
    max_bytes: int | None = None,
    limit_name: str = "max_step_bytes",
) -> Any:
    """Strict JSON text to a value, bounded before it is parsed.

    Args:
        text: JSON text (bytes must be UTF-8).
        path: Where the text came from, for messages (``interaction``, ``line 7``).
        limits: The bounds; ``max_depth`` always applies.
        max_bytes: A bound on the text's length (``None``: none here, the caller bounded it).
        limit_name: The name of the limit ``max_bytes`` is, for the message.

    Raises:
        LimitExceededError: longer than ``max_bytes``, or nested deeper than ``limits.max_depth``.
        CodecError: not UTF-8, not JSON, NaN or Infinity or an overflowing number, or a key given twice in
            one object (the API would read only one of them).
    """
    if max_bytes is not None and len(text) > max_bytes:
        raise LimitExceededError(limit_name, max_bytes, path=path, actual=len(text))
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError([(path, f"not UTF-8 (byte {exc.start})")]) from None
    elif not isinstance(text, str):
        raise TypeError(f"expected JSON text (str or bytes), got {type(text).__name__}")
    if json_depth(text, limits.max_depth) > limits.max_depth:
        raise LimitExceededError("max_depth", limits.max_depth, path=path)
    try:
        return json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite
        )
    except _Duplicate:
        try:
            where = _duplicate_path(text, path)
        except (ValueError, RecursionError, _NonFinite) as exc:  # the text breaks later too: not JSON
            raise CodecError([(path, _not_json(exc))]) from None
        raise CodecError([(where, "an object gives a key twice (the API would read only one)")]) from None
    except (ValueError, RecursionError, _NonFinite) as exc:  # ValueError: an int of too many digits too
        raise CodecError([(path, _not_json(exc))]) from None


def _not_json(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if isinstance(exc, _NonFinite):
        return "NaN or an infinite number is not JSON"
    return f"not valid JSON ({type(exc).__name__})"


def _scalar_size(value: Any) -> int:
    return len(value) + 2 if isinstance(value, str) else 4


def check_value(
    value: Any,
    *,
    path: str = "",
    limits: Limits = DEFAULT_LIMITS,
    max_bytes: int | None = None,
    limit_name: str = "max_step_bytes",
) -> int:
    """Bound a Python value's nesting and estimated encoded size, without recursion and before encoding.

    The estimate is a lower bound of the compact JSON text's length (strings count their characters), so a
    value it refuses would certainly be too long; callers check the exact length of the text afterwards.
    A value that refers to itself is refused as too deep.

    Returns:
        The estimated size.

    Raises:
        LimitExceededError: deeper than ``limits.max_depth``, or estimated longer than ``max_bytes``.
    """
    max_depth = limits.max_depth
    size = 0
    stack: list[tuple[Any, int, str]] = [(value, 0, path)]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, Mapping):
            pairs: Any = item.items()
            size += 2 + 4 * len(item)  # braces, then a colon, a comma and a key's quotes each
        elif isinstance(item, (list, tuple)):
            pairs = enumerate(item)
            size += 2 + len(item)
        else:
            size += _scalar_size(item)
            pairs = ()
        if pairs != () and depth >= max_depth:
            raise LimitExceededError("max_depth", max_depth, path=where)
        is_object = isinstance(item, Mapping)
        for key, sub in pairs:
            if is_object:
                size += len(key) if isinstance(key, str) else 8
            if isinstance(sub, (Mapping, list, tuple)):
                stack.append(
                    (
                        sub,
                        depth + 1,
                        (f"{where}.{key}" if where else str(key)) if is_object else f"{where}[{key}]",
                    )
                )
            else:
                size += _scalar_size(sub)
        if max_bytes is not None and size > max_bytes:
            raise LimitExceededError(limit_name, max_bytes, path=path)
    return size


def text_bytes(text: str) -> int:
    """The UTF-8 length of ``text`` (its length when it is ASCII, the usual case, without a copy)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
