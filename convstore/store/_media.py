"""Inline media stored once per content hash (pure, no I/O).

A step's inline media is a ``data`` string (base64 bytes of an image, a PDF, audio...) that may run to tens of
megabytes. Replays of a branch against another model, edits that keep an attachment, and the same file sent
again would each store another copy in their node's payload, so a step's large ``data`` strings are kept
apart instead, one row per conversation and content hash, and the payload keeps an empty string in their
place. The node's ``media`` column lists where each one goes back (``[[offset, hash], ...]``, offsets into
the stored payload, in order), and reading a node puts them back: the text that comes out is, byte for byte,
the text that went in.

The split works on the JSON text, not on the decoded value, so it is exact by construction: what is kept
apart is the string's JSON text between its quotes, cut out where it stood. A ``"data":"`` that follows
``{`` or ``,`` is always an object key with a string value (inside a JSON string every ``"`` is escaped, so
neither ``{"`` nor ``,"`` can occur there), wherever the object is: a content item of a step, a function's
result, a step type this version does not model.

Scope and privacy: media rows belong to their conversation (deleted with it; under encryption at rest sealed
with its data key, and named by a hash keyed by that key, so equal files in two conversations share nothing
and a known file cannot be recognised by its hash). Strings shorter than ``MIN_MEDIA`` characters stay
inline: a row of their own would cost more than it could save.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

from convstore._uris import file_uris

__all__ = [
    "MIN_MEDIA",
    "files_json",
    "join_media",
    "join_media_utf8",
    "plain_digest",
    "refs_json",
    "split_media",
    "stored_hashes",
]

MIN_MEDIA = 1024  # characters of a ``data`` string's JSON text; shorter ones stay in the payload

_KEY = '"data":"'


def _string_end(text: str, start: int) -> int:
    """The index of the quote that closes the JSON string whose text starts at ``start``."""
    end = text.find('"', start)
    while end != -1:
        backslashes = 0
        while text[end - 1 - backslashes] == "\\":
            backslashes += 1
        if backslashes % 2 == 0:
            return end
        end = text.find('"', end + 1)
    raise ValueError("unterminated JSON string")  # never for codec.dumps text


def split_media(text: str) -> tuple[str, list[tuple[int, str]]]:
    """The payload with its large ``data`` strings cut out, and ``(offset, string text)`` of each, offsets
    into the returned payload, in order. A payload without any is returned as it is, with an empty list."""
    if len(text) < MIN_MEDIA or _KEY not in text:
        return text, []
    parts: list[str] = []
    found: list[tuple[int, str]] = []
    kept = 0  # characters of the stripped payload so far
    done = 0  # index in text up to which it has been copied
    at = text.find(_KEY)
    while at != -1:
        start = at + len(_KEY)
        end = _string_end(text, start)
        if at > 0 and text[at - 1] in "{," and end - start >= MIN_MEDIA:
            parts.append(text[done:start])
            kept += start - done
            found.append((kept, text[start:end]))
            done = end
        at = text.find(_KEY, end + 1)
    if not found:
        return text, []
    parts.append(text[done:])
    return "".join(parts), found


def files_json(payload: str) -> str | None:
    """The ``files`` column of a node: the Files API uris its payload names (JSON), or None for none."""
    found = file_uris(payload)
    return json.dumps(found) if found else None


def plain_digest(content: str) -> str:
    """The SHA-256 of a media string of a plaintext conversation (hex)."""
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()


def refs_json(offsets: Sequence[int], hashes: Sequence[str]) -> str:
    """The ``media`` column of a node: where each media string goes back, and which one."""
    return json.dumps([[offset, digest] for offset, digest in zip(offsets, hashes, strict=True)])


def stored_hashes(refs: str) -> list[str]:
    """The hashes a ``media`` column names."""
    return [digest for _, digest in json.loads(refs)]


def join_media(stripped: str, refs: str, blob: Callable[[str], str]) -> str:
    """The payload as it was written: ``stripped`` with the media strings ``refs`` names put back.

    Args:
        blob: The media string of a hash (raises ``KeyError`` for one that is not stored).
    """
    parts: list[str] = []
    done = 0
    for offset, digest in json.loads(refs):
        parts.append(stripped[done:offset])
        parts.append(blob(digest))
        done = offset
    parts.append(stripped[done:])
    return "".join(parts)


def join_media_utf8(stripped: bytes, refs: str, blob: Callable[[str], str]) -> bytes:
    """``join_media`` on a payload read as UTF-8 bytes, giving bytes. The offsets count characters: in an
    ASCII payload (JSON escapes the rest unless it is text) they are byte offsets too, and the media strings
    (base64, ASCII) join in without a decode; other payloads are decoded, joined and encoded."""
    if not stripped.isascii():
        return join_media(stripped.decode(), refs, blob).encode()
    parts: list[bytes] = []
    done = 0
    for offset, digest in json.loads(refs):
        parts.append(stripped[done:offset])
        parts.append(blob(digest).encode())
        done = offset
    parts.append(stripped[done:])
    return b"".join(parts)
