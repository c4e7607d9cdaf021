"""Files API uris in stored step texts, and their substitution in a request (pure, no I/O).

A content item names an uploaded file by ``"uri":"https://generativelanguage.googleapis.com/v1beta/files/<id>"``.
The Files API forgets it 48 hours later, while the stored steps keep it forever (they never change). A
request is adapted instead: ``rewrite_uris`` replaces, in a step's JSON text, each ``"uri":"<old>"`` pair
that a mapping names by another pair (``"uri":"<fresh upload>"``, or ``"data":"<base64>"`` to inline the
bytes) and leaves every other byte as it was. Works on the compact JSON convstore stores (``codec.dumps``),
where a key is always ``"uri":"`` and a uri is never escaped (it holds no quote or backslash).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = [
    "FilePosition",
    "file_uris",
    "file_uris_of",
    "is_file_uri",
    "names_files",
    "rewrite_uris",
    "uri_pair",
]

# A ``uri`` key with a Files API uri (any host: the service's, an emulator's) as its string value. The key
# follows ``{`` or ``,`` (inside a JSON string every quote is escaped, so that text cannot occur there).
_PAIR = re.compile(r'(?<=[{,])"uri":"([^"\\]*/files/[a-z0-9-]{1,40})"')
_PAIR_BYTES = re.compile(_PAIR.pattern.encode())
_MARK = "/files/"
_URI = re.compile(r'[^"\\\s]*/files/[a-z0-9-]{1,40}')  # a uri the pattern above finds in a step, whole

FilePosition = tuple[int, "str | None", tuple[str, ...]]
"""A history text that names Files API uris: its index, its node's id (None: not known), the uris."""


def names_files(text: str) -> bool:
    """Whether a step's JSON text may name a Files API uri (a quick test before ``file_uris``)."""
    return _MARK in text and '"uri":"' in text


def is_file_uri(text: str) -> bool:
    """Whether ``text`` is a Files API uri as a step names one (what ``file_uris`` finds)."""
    return _URI.fullmatch(text) is not None


def file_uris(text: str) -> list[str]:
    """The Files API uris a step's JSON text names, in order, each once."""
    if not names_files(text):
        return []
    return list(dict.fromkeys(_PAIR.findall(text)))


def file_uris_of(texts: Iterable[bytes]) -> list[str]:
    """The Files API uris the UTF-8 JSON ``texts`` name, each once."""
    found: dict[str, None] = {}
    for text in texts:
        if b"/files/" in text:
            found.update(dict.fromkeys(uri.decode() for uri in _PAIR_BYTES.findall(text)))
    return list(found)


def uri_pair(*, uri: str | None = None, data: str | None = None) -> bytes:
    """The replacement of a ``"uri":"..."`` pair: another uri, or the base64 ``data`` of the bytes."""
    if (uri is None) == (data is None):
        raise ValueError("pass exactly one of uri and data")
    return f'"uri":"{uri}"'.encode() if uri is not None else f'"data":"{data}"'.encode()


def rewrite_uris(text: bytes, replacements: Mapping[str, bytes]) -> bytes:
    """``text`` (a step's UTF-8 JSON) with each ``"uri":"<u>"`` pair whose ``u`` is in ``replacements``
    replaced by ``replacements[u]`` (see ``uri_pair``); every other byte unchanged."""
    if b"/files/" not in text:
        return text

    def swap(found: re.Match[bytes]) -> bytes:
        return replacements.get(found.group(1).decode(), found.group(0))

    return _PAIR_BYTES.sub(swap, text)
