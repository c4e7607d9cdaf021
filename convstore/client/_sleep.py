"""The clients' default sleeps and their types (injectable, so tests never wait)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["AsyncSleep", "Sleep", "default_sleep", "default_sleep_async"]

Sleep = Callable[[float], None]
"""A blocking sleep taking seconds, like ``time.sleep``."""

AsyncSleep = Callable[[float], Awaitable[None]]
"""An awaitable sleep taking seconds, like ``anyio.sleep``."""


def default_sleep(seconds: float) -> None:
    """Blocks for ``seconds``."""
    time.sleep(seconds)


async def default_sleep_async(seconds: float) -> None:
    """Waits ``seconds`` on whichever event loop runs (asyncio or trio, through anyio)."""
    await anyio.sleep(seconds)
