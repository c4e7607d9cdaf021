"""When a request is retried and how long to wait before it (reference §1): pure functions of a status,
a response's headers and an attempt's number, used by ``_http.RetryState``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

__all__ = ["backoff_delay", "is_retryable_status", "retry_after"]


def is_retryable_status(status_code: int) -> bool:
    """408, 409, 429 and every 5xx are retried (reference §1)."""
    return status_code in (408, 409, 429) or 500 <= status_code <= 599


def retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """The wait the server asked for, in seconds: ``retry-after-ms`` first, then ``Retry-After``.

    Args:
        headers: Response headers (case-insensitive mapping).
        now: The current time, for an HTTP-date ``Retry-After``.

    Returns:
        Seconds (``> 0``), or ``None`` when absent, invalid or not positive.
    """
    value = headers.get("retry-after-ms")
    if value:
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if 0 < ms < float("inf"):
            return ms / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return seconds if 0 < seconds < float("inf") else None


def backoff_delay(retry: int, *, rand: float) -> float:
    """``0.5 s * 2**retry`` capped at 8 s, minus ``rand * 25 %`` (``rand`` in ``[0, 1)``)."""
    return min(0.5 * 2.0**retry, 8.0) * (1 - 0.25 * rand)
