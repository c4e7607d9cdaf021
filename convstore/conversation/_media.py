"""Adapting a request's history to what the Files API still holds (pure, no I/O).

The stored steps never change; a request is adapted instead. ``plan_media`` decides, for each Files API uri
the history names, what goes in its place (nothing: it is alive; a fresh upload's uri; the stored bytes
inline), and which files must be uploaded first. ``adapt_history`` applies the replacements to the history's
stored texts (only to those that name a file: the rest are passed through as they are, so a replay without
files, or with live ones only, does no more work than before). The conversation layer runs the uploads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final, Literal

import attrs

from convstore._uris import FilePosition, file_uris_of, rewrite_uris, uri_pair
from convstore.errors import MediaError, MediaNotHeldError
from convstore.store._files import FileRecord

__all__ = [
    "INLINE_LIMIT",
    "FileStatus",
    "MediaPlan",
    "MediaPolicy",
    "RemoteDeletion",
    "adapt_history",
    "file_positions",
    "plan_media",
    "uris_at",
]

MediaPolicy = Literal["upload", "inline"]
# The API's request size limit for inline data (Files API guide): 100 MB, 50 MB when a PDF is inline.
INLINE_LIMIT: Final = 100_000_000
INLINE_PDF_LIMIT: Final = 50_000_000


@attrs.frozen(kw_only=True)
class RemoteDeletion:
    """What ``delete_remote`` did.

    Attributes:
        deleted: Interaction ids deleted on the server (or found gone there already).
        failed: ``(interaction id, reason)`` of those whose deletion failed; run it again later.
    """

    deleted: list[str]
    failed: list[tuple[str, str]]


@attrs.frozen(kw_only=True)
class FileStatus:
    """A Files API uri the branch's history names, and what convstore holds of it.

    Attributes:
        uri: The uri the stored steps name.
        node_id: The first node naming it.
        held: Whether convstore keeps the file's bytes (False: only the uri, which the API forgets).
        mime_type: Its MIME type, when recorded.
        expires_at: When the API forgets ``uri`` (None: unknown).
        live_uri: The newest re-upload of its bytes, sent in its place (None: none yet).
    """

    uri: str
    node_id: str | None
    held: bool
    mime_type: str | None = None
    expires_at: datetime | None = None
    live_uri: str | None = None


@attrs.frozen(kw_only=True)
class MediaPlan:
    """What a request needs: ``replacements`` (uri -> the JSON pair sent in its place) once ``uploads``
    (records whose bytes must be uploaded again) are done and their fresh uris added."""

    replacements: dict[str, bytes]
    uploads: list[FileRecord]


def file_positions(texts: Sequence[bytes]) -> list[FilePosition]:
    """Positions of the texts naming a Files API uri, found by reading them (a budget window's texts)."""
    found = ((index, file_uris_of([text])) for index, text in enumerate(texts) if b"/files/" in text)
    return [(index, None, tuple(uris)) for index, uris in found if uris]


def uris_at(positions: Sequence[FilePosition]) -> dict[str, str | None]:
    """Each uri the positions name, once, with the first node naming it."""
    found: dict[str, str | None] = {}
    for _, node, uris in positions:
        for uri in uris:
            found.setdefault(uri, node)
    return found


def plan_media(
    uris: Sequence[str],
    records: Mapping[str, FileRecord],
    *,
    now: datetime,
    margin: timedelta,
    policy: MediaPolicy,
    inline: Mapping[str, str],
    force: frozenset[str] = frozenset(),
    conversation_id: str,
    node_of: Mapping[str, str | None],
) -> MediaPlan:
    """Decide each uri's fate (see the module docstring).

    Args:
        uris: The Files API uris the history names.
        records: What the store knows of them.
        now: The current time; margin: the time a file must still live after ``now`` to be sent.
        policy: ``upload``: send live uris, uploading again what expires; ``inline``: send the bytes.
        inline: The base64 text of each uri's bytes (``inline`` policy only).
        force: Uris the API said are gone: uploaded again whatever their recorded expiry.
        conversation_id: For errors; node_of: the node naming each uri, for errors.

    Raises:
        MediaNotHeldError: a uri that must be replaced, whose bytes convstore does not hold.
        MediaError: inline data beyond the API's request size limit.
    """
    replacements: dict[str, bytes] = {}
    uploads: list[FileRecord] = []
    inlined = 0
    pdf = False
    for uri in uris:
        record = records.get(uri)
        if policy == "inline":
            if record is None or record.digest is None or uri not in inline:
                raise MediaNotHeldError(conversation_id, node_of.get(uri), uri)
            data = inline[uri]
            inlined += len(data)
            pdf = pdf or record.mime_type == "application/pdf"
            replacements[uri] = uri_pair(data=data)
            continue
        usable = None if record is None or uri in force else record.usable_uri(now, margin)
        if usable is not None:
            if usable != uri:
                replacements[uri] = uri_pair(uri=usable)
            continue
        if record is None and uri not in force:
            continue  # not convstore's file, not known to be gone: sent as it is
        if record is None or record.digest is None:
            raise MediaNotHeldError(conversation_id, node_of.get(uri), uri)
        uploads.append(record)
    limit = INLINE_PDF_LIMIT if pdf else INLINE_LIMIT
    if inlined > limit:
        raise MediaError(
            f"inline media of {inlined} bytes exceed the API's request size limit of {limit} bytes: "
            'send them with media="upload"',
            conversation_id,
        )
    return MediaPlan(replacements=replacements, uploads=uploads)


def adapt_history(
    texts: Sequence[bytes], positions: Sequence[FilePosition], replacements: Mapping[str, bytes]
) -> list[bytes]:
    """The history's texts with the replacements applied to those at ``positions`` (a new list; the
    others are the same objects, unchanged)."""
    adapted = list(texts)
    if not replacements:
        return adapted
    for index, _, _ in positions:
        adapted[index] = rewrite_uris(adapted[index], replacements)
    return adapted
