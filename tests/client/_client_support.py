"""Helpers of the client tests: the wire fixtures, and one driver for both client flavours.

Not a ``conftest.py``: the repository's ``tests/conftest.py`` is imported as ``conftest`` by other tests,
and a second one here (no packages under ``tests/``) would shadow it. Test modules import from here.

``Driver`` runs the same calls through ``InteractionsClient`` or ``AsyncInteractionsClient`` (each async call
in its own ``asyncio.run``), so every contract test covers both.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from convstore.client import AsyncInteractionsClient, InteractionsClient

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "interactions"


def load(name: str) -> Any:
    """A wire fixture's JSON (bytes for ``.sse``), from ``tests/fixtures/interactions``."""
    path = FIXTURES / name
    return path.read_bytes() if name.endswith(".sse") else json.loads(path.read_text(encoding="utf-8"))


class Driver:
    """Runs client calls with one flavour against one transport, recording the retry sleeps."""

    def __init__(self, flavour: str, transport: Any, **client_kwargs: Any) -> None:
        self.flavour = flavour
        self.transport = transport
        self.sleeps: list[float] = []
        self.client_kwargs = {"api_key": "test-key", **client_kwargs}

    def _sync_client(self, http: httpx.Client) -> InteractionsClient:
        return InteractionsClient(http_client=http, sleep=self.sleeps.append, **self.client_kwargs)

    def _async_client(self, http: httpx.AsyncClient) -> AsyncInteractionsClient:
        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        return AsyncInteractionsClient(http_client=http, sleep=sleep, **self.client_kwargs)

    def create(self, body: dict[str, Any], **kwargs: Any) -> Any:
        if self.flavour == "sync":
            with httpx.Client(transport=self.transport) as http:
                return self._sync_client(http).create(body, **kwargs)

        async def run() -> Any:
            async with httpx.AsyncClient(transport=self.transport) as http:
                return await self._async_client(http).create(body, **kwargs)

        return asyncio.run(run())

    def stream(self, body: dict[str, Any], **kwargs: Any) -> tuple[list[Any], Any]:
        """All events of a stream and its final interaction; errors propagate (events so far: ``.events``)."""
        self.events: list[Any] = []
        if self.flavour == "sync":
            with (
                httpx.Client(transport=self.transport) as http,
                self._sync_client(http).stream(body, **kwargs) as s,
            ):
                for event in s:
                    self.events.append(event)
                return self.events, s.interaction

        async def run() -> Any:
            async with (
                httpx.AsyncClient(transport=self.transport) as http,
                self._async_client(http).stream(body, **kwargs) as s,
            ):
                async for event in s:
                    self.events.append(event)
                return s.interaction

        return self.events, asyncio.run(run())
