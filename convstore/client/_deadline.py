"""The deadline of one call: a total time for every attempt, wait and read of it (besides the per-read
timeout, which a server sending a byte a second never trips). Pure but for the clock."""

from __future__ import annotations

import time

import httpx

from convstore.errors import APIConnectionError

__all__ = ["Deadline"]


class Deadline:
    """The total time of one call: every attempt, every wait between them and every read of its reply,
    whatever the per-read ``timeout`` (a server that sends a byte a second never trips a read timeout)."""

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None and not seconds > 0:
            raise ValueError("deadline must be a positive number of seconds (or None)")
        self.seconds = seconds
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        """Seconds left (``None``: no deadline)."""
        return None if self._end is None else self._end - time.monotonic()

    def check(self, request: httpx.Request) -> None:
        """Raise when the deadline passed.

        Raises:
            APIConnectionError: It did (the message names the request and the deadline).
        """
        left = self.remaining()
        if left is not None and left <= 0:
            raise APIConnectionError(
                f"{request.method} {request.url.path}: the call's deadline of {self.seconds:g} s passed"
            )

    def bound(self, request: httpx.Request) -> httpx.Request:
        """The request with each of its timeouts cut to the time left."""
        left = self.remaining()
        if left is not None:
            timeouts = dict(request.extensions.get("timeout") or {})
            for name in ("connect", "read", "write", "pool"):
                value = timeouts.get(name)
                timeouts[name] = max(min(left, value) if value is not None else left, 0.001)
            request.extensions["timeout"] = timeouts
        return request

    def allows(self, delay: float) -> bool:
        """Whether a wait of ``delay`` seconds before the next attempt ends before the deadline."""
        left = self.remaining()
        return left is None or delay < left
