"""A reply body's ``gzip`` or ``deflate`` content-encoding, decoded a bounded piece at a time, so that the
inflated bytes are counted against ``Limits.max_reply_bytes`` as they come: a small compressed reply that
inflates to gigabytes is refused after about the limit, never held whole (httpx's decoder inflates each
received chunk at once). Pure: no I/O."""

from __future__ import annotations

import zlib
from collections.abc import Mapping

__all__ = ["PIECE", "Inflater", "inflatable"]

PIECE = 64 * 1024  # the most inflated bytes produced from input before they are counted


def inflatable(headers: Mapping[str, str]) -> str | None:
    """The body's encoding when it is one this module decodes (``gzip``, ``deflate``); else None (httpx
    decodes it: ``identity``, ``br``, ``zstd``, or a list of encodings)."""
    encoding = headers.get("content-encoding", "").strip().lower()
    return encoding if encoding in {"gzip", "x-gzip", "deflate"} else None


class Inflater:
    """Decodes one body, piece by piece."""

    def __init__(self, encoding: str) -> None:
        # gzip: its header and trailer; deflate: zlib's wrapping (RFC 9110), raw deflate tried if not.
        self._deflate = encoding == "deflate"
        self._decoder = zlib.decompressobj(31 if not self._deflate else zlib.MAX_WBITS)
        self._first = True
        self._pending = b""

    def push(self, data: bytes) -> None:
        """Take the next received bytes; ``piece()`` then inflates them."""
        if self._first and self._deflate and data:
            self._first = False
            try:
                zlib.decompressobj(zlib.MAX_WBITS).decompress(data[:2])
            except zlib.error:
                self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send
        self._pending = data

    def piece(self) -> bytes:
        """The next at most ``PIECE`` inflated bytes of what was pushed; ``b""`` when it is all out.

        Raises:
            zlib.error: The body is not what its encoding says.
        """
        while self._pending:
            out = self._decoder.decompress(self._pending, PIECE)
            self._pending = self._decoder.unconsumed_tail
            if out:
                return out
        if self._decoder.eof:
            return b""
        return self._decoder.decompress(b"", PIECE)
