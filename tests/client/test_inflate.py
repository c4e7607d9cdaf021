"""Decompressed reply bytes are counted against ``max_reply_bytes`` as they are inflated: a small gzip
reply that inflates to 256 MiB, against a 1 MiB limit, is refused with peak memory far below what it
inflates to (measured with tracemalloc); a gzip or deflate reply within the limit reads as before."""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

import convstore
from convstore.errors import LimitExceededError

MiB = 1024 * 1024
BODY = {"model": "m", "input": "hello", "store": False}
REPLY = {"id": "i1", "status": "completed", "steps": [{"type": "model_output", "content": []}]}


def bomb(inflated: int) -> bytes:
    """gzip of a JSON object padded with ``inflated`` bytes of spaces, made a MiB at a time."""
    packer = zlib.compressobj(9, wbits=31)
    parts = [packer.compress(b'{"id": "i1", "status": "completed", "steps": [], "pad": "')]
    for _ in range(inflated // MiB):
        parts.append(packer.compress(b" " * MiB))
    parts.append(packer.compress(b'"}'))
    parts.append(packer.flush())
    return b"".join(parts)


class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """The body as a network delivers it: 64 KiB at a time, never held decoded."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self._content), 65536):
            yield self._content[start : start + 65536]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


def transport(content: bytes, encoding: str) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/json", "content-encoding": encoding}
        return httpx.Response(200, headers=headers, stream=Chunks(content))

    return httpx.MockTransport(answer)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_an_inflating_reply_is_refused_with_bounded_memory(flavour):
    compressed = bomb(256 * MiB)
    assert len(compressed) < 2 * MiB
    limits = convstore.Limits(max_reply_bytes=MiB)

    async def async_call() -> None:
        async with httpx.AsyncClient(transport=transport(compressed, "gzip")) as http:
            await convstore.AsyncInteractionsClient("key", http_client=http, limits=limits).create(BODY)

    def call() -> None:
        if flavour == "sync":
            http = httpx.Client(transport=transport(compressed, "gzip"))
            convstore.InteractionsClient("key", http_client=http, limits=limits).create(BODY)
        else:
            asyncio.run(async_call())

    tracemalloc.start()
    try:
        with pytest.raises(LimitExceededError, match="max_reply_bytes"):
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, peak  # the reply inflates to 256 MiB


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw deflate"])
def test_a_compressed_reply_within_the_limit_reads_as_before(encoding):
    text = json.dumps(REPLY).encode()
    if encoding == "gzip":
        content, header = gzip.compress(text), "gzip"
    elif encoding == "deflate":
        content, header = zlib.compress(text), "deflate"
    else:
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        content, header = packer.compress(text) + packer.flush(), "deflate"
    http = httpx.Client(transport=transport(content, header))
    interaction = convstore.InteractionsClient("key", http_client=http).create(BODY)
    assert interaction.id == "i1"
