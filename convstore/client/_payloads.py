"""What the API's JSON says, read without HTTP: the error object of a response or a stream event, a file's
expiration. Kept apart from ``_http`` and ``_files`` so that the store and the conversation layer, which read
these, do not import httpx (``import convstore`` loads the HTTP client only when it is first used).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from convstore.errors import APIError

__all__ = ["error_from_payload", "file_expiration"]


def error_from_payload(error: Any, *, status_code: int | None = None) -> APIError:
    """An ``APIError`` from the ``error`` object of a response body or an ``error`` stream event.

    Args:
        error: ``{"code", "message", "status"?}``: ``code`` an int (Google's shape) or a string (the SDK's).
        status_code: The HTTP status, ``None`` inside a stream.

    Returns:
        The error (not raised).
    """
    if not isinstance(error, Mapping):
        error = {}
    code = error.get("code")
    if isinstance(code, bool) or not isinstance(code, (int, str)):
        code = None
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = "the service returned an error without a message"
    status = error.get("status")
    return APIError(
        message, status_code=status_code, code=code, status=status if isinstance(status, str) else None
    )


def file_expiration(file: Mapping[str, Any]) -> datetime | None:
    """The ``expiration_time`` of a file (RFC 3339; a ``datetime`` from the SDK), as an aware datetime."""
    value = file.get("expiration_time")
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:  # Python < 3.11 parses at most 6 fractional digits: keep 6
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6]:0<6}{tail[len(digits) :]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
