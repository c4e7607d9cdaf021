"""The emulator as an ``httpx`` transport, for ``httpx.Client`` and ``httpx.AsyncClient`` alike.

A broken stream (``Reply.break_after``) raises ``httpx.ReadError`` after its last chunk, as a dropped
connection does in a real transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from convstore.testing._emulator import Emulator, EmulatorResponse

__all__ = ["EmulatorTransport"]


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that is both a sync and an async byte stream."""

    def __init__(self, response: EmulatorResponse) -> None:
        self._chunks = response.chunks
        self._broken = response.broken

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks
        if self._broken:
            raise httpx.ReadError("emulated connection drop")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
        if self._broken:
            raise httpx.ReadError("emulated connection drop")


class EmulatorTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Serves requests from an ``Emulator`` without a network.

    Example::

        emulator = Emulator()
        with httpx.Client(transport=emulator.transport()) as http:
            client = InteractionsClient("key", http_client=http)
    """

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def _respond(self, request: httpx.Request, body: bytes) -> httpx.Response:
        query = dict(request.url.params.multi_items())
        base_url = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"
        response = self.emulator.handle(
            request.method, request.url.path, query, dict(request.headers), body, base_url=base_url
        )
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_Body(response), request=request
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Serves one request of a sync client."""
        return self._respond(request, request.read())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Serves one request of an async client."""
        return self._respond(request, await request.aread())
