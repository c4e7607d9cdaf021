"""Conversations that outlive the API: uploads whose bytes the store keeps, requests adapted to what the
Files API still holds, and the server's copies of stored interactions deleted or brought home.
``_lifecycle_sync.py`` is generated from this file by ``scripts/unasync.py``.

The clients are duck-typed: ``upload_file(source, *, mime_type, size)`` returning the ``File`` JSON,
``get(interaction_id)`` returning the interaction's JSON, ``delete(interaction_id)``
(``InteractionsClient`` and ``GenAIClient`` have them).
"""

from __future__ import annotations

import io
import mimetypes
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from convstore._uris import FilePosition, uri_pair
from convstore.client._payloads import file_expiration
from convstore.conversation._media import (
    FileStatus,
    MediaPolicy,
    RemoteDeletion,
    adapt_history,
    plan_media,
    uris_at,
)
from convstore.errors import APIError, CodecError, LimitExceededError, MediaError, MediaNotHeldError
from convstore.store import _files, _reads
from convstore.store._async import access
from convstore.store._engine import Op

if TYPE_CHECKING:
    from convstore.conversation._async.conversation import AsyncConversation, AsyncStore

__all__ = [
    "adapt",
    "attach_media",
    "delete_remote",
    "file_is_gone",
    "files_of",
    "upload",
]

FileSource = str | os.PathLike[str] | bytes | IO[bytes]


async def files_of(conversation: AsyncConversation) -> list[FileStatus]:
    """See ``AsyncConversation.files``."""
    # Which nodes name files, from their ``files`` column: no payload read, so no inline media either.
    positions = await access.run(conversation, _reads.path_files(conversation.id, conversation.branch))
    node_of = uris_at(positions)
    records = await access.run(conversation, _files.file_records(conversation.id, list(node_of)))
    found = []
    for uri, node in node_of.items():
        record = records.get(uri)
        found.append(
            FileStatus(
                uri=uri,
                node_id=node,
                held=record is not None and record.digest is not None,
                mime_type=record.mime_type if record is not None else None,
                expires_at=record.expires_at if record is not None else None,
                live_uri=record.live_uri if record is not None else None,
            )
        )
    return found


def _kind(mime_type: str) -> str:
    major = mime_type.split("/", 1)[0]
    return major if major in ("image", "audio", "video") else "document"


def _check_size(size: int, limit: int, path: str) -> None:
    """Refuse ``size`` bytes whose base64 text (what is stored, and sent inline) is beyond ``limit``."""
    encoded = 4 * ((size + 2) // 3)
    if encoded > limit:
        raise LimitExceededError("max_step_bytes", limit, path=path, actual=encoded)


def _read(file: FileSource, mime_type: str | None, limit: int) -> tuple[bytes, str]:
    """The bytes of ``file`` and its MIME type, refused beyond ``limit`` base64 characters before reading."""
    if isinstance(file, (bytes, bytearray, memoryview)):
        data = bytes(file)
        size = len(data)
    elif isinstance(file, (str, os.PathLike)):
        path = Path(file)
        size = path.stat().st_size
        mime_type = mime_type or mimetypes.guess_type(path.name)[0]
        data = b""
    else:
        start = file.tell()
        size = file.seek(0, io.SEEK_END) - start
        file.seek(start)
        data = b""
    if not mime_type:
        raise CodecError([("mime_type", "unknown: pass mime_type=")])
    _check_size(size, limit, "file")
    if isinstance(file, (str, os.PathLike)):
        data = Path(file).read_bytes()
    elif not isinstance(file, (bytes, bytearray, memoryview)):
        data = file.read(size)
    return data, mime_type


async def upload(
    conversation: AsyncConversation, file: FileSource, *, mime_type: str | None, client: Any
) -> dict[str, Any]:
    """See ``AsyncConversation.upload``."""
    store = access.store_of(conversation)
    data, mime = _read(file, mime_type, store.limits.max_step_bytes)
    uploaded = await client.upload_file(io.BytesIO(data), mime_type=mime, size=len(data))
    uri = uploaded["uri"]

    def write() -> Op[None]:
        digest = yield from _files.store_bytes(conversation.id, data, access.cipher(conversation))
        yield from _files.remember_file(
            conversation.id, uri, digest=digest, mime_type=mime, expires_at=file_expiration(uploaded)
        )

    await access.run(store, write(), write=True)
    access.files_sent(conversation).pop(uri, None)
    return {"type": _kind(mime), "uri": uri, "mime_type": mime}


async def attach_media(conversation: AsyncConversation, uri: str, data: bytes, *, mime_type: str) -> None:
    """See ``AsyncConversation.attach_media``."""
    store = access.store_of(conversation)
    _check_size(len(data), store.limits.max_step_bytes, "data")

    def write() -> Op[None]:
        found = yield from _files.file_records(conversation.id, [uri])
        expires = found[uri].expires_at if uri in found else None
        digest = yield from _files.store_bytes(conversation.id, bytes(data), access.cipher(conversation))
        yield from _files.remember_file(
            conversation.id, uri, digest=digest, mime_type=mime_type, expires_at=expires
        )

    await access.run(store, write(), write=True)
    access.files_sent(conversation).pop(uri, None)


def file_is_gone(error: APIError) -> bool:
    """Whether the API refused a request because a file it names is gone (403, reference §11)."""
    return error.status_code == 403 and "File" in error.message


async def adapt(
    conversation: AsyncConversation,
    texts: Sequence[bytes],
    positions: Sequence[FilePosition],
    *,
    client: Any,
    policy: MediaPolicy,
    force: frozenset[str] = frozenset(),
    fresh_until: datetime | None = None,
) -> list[bytes]:
    """The history's texts as the next request sends them: every Files API uri replaced by one that lives
    (uploading again what expired or expires within the margin, or ``force``d), or by the bytes inline.

    Fast path: a conversation object remembers the records it read; when every uri is one of them, alive
    beyond the margin and not re-uploaded, the texts go out unchanged without a query.
    """
    store = access.store_of(conversation)
    lifecycle = store.lifecycle
    now = lifecycle.clock()
    if not positions:
        return list(texts)
    if (
        policy == "upload"
        and not force
        and fresh_until is not None
        and fresh_until > now + lifecycle.upload_margin
    ):
        return list(texts)  # every recorded file lives on, read with the history: nothing to send instead
    cutoff = now + lifecycle.upload_margin
    node_of = uris_at(positions)
    uris = list(node_of)
    cache = access.files_sent(conversation)
    if policy == "upload" and not force and all(uri in cache and cache[uri][1] > cutoff for uri in uris):
        known = {uri: cache[uri][0] for uri in uris}
        return adapt_history(texts, positions, {uri: pair for uri, pair in known.items() if pair is not None})
    records = await access.run(store, _files.file_records(conversation.id, uris))
    inline: dict[str, str] = {}
    if policy == "inline":
        for uri, record in records.items():
            if record.digest is not None:
                text = await access.run(
                    store, _files.media_text(conversation.id, record.digest, access.cipher(conversation))
                )
                if text is not None:
                    inline[uri] = text
    plan = plan_media(
        uris,
        records,
        now=now,
        margin=lifecycle.upload_margin,
        policy=policy,
        inline=inline,
        force=force,
        conversation_id=conversation.id,
        node_of=node_of,
    )
    replacements = dict(plan.replacements)
    for record in plan.uploads:
        replacements[record.uri], until = await _upload_again(conversation, record, client)
        if until is not None:
            cache[record.uri] = (replacements[record.uri], until)
    if policy == "upload":  # remember what was sent and until when, for the next turns' fast path
        for uri, record in records.items():
            sent = record.usable_uri(now, lifecycle.upload_margin)
            until = record.live_expires_at if sent is not None and sent != uri else record.expires_at
            if record not in plan.uploads and sent is not None and until is not None:
                cache[uri] = (replacements.get(uri), until)
    return adapt_history(texts, positions, replacements)


async def _inline_texts(
    conversation: AsyncConversation, records: Mapping[str, _files.FileRecord]
) -> dict[str, str]:
    """The base64 text of each recorded file's bytes the store holds."""
    inline: dict[str, str] = {}
    for uri, record in records.items():
        if record.digest is not None:
            text = await access.run(
                conversation, _files.media_text(conversation.id, record.digest, access.cipher(conversation))
            )
            if text is not None:
                inline[uri] = text
    return inline


async def _upload_again(
    conversation: AsyncConversation, record: _files.FileRecord, client: Any
) -> tuple[bytes, datetime | None]:
    """Upload a file's stored bytes again and remember the fresh uri: the pair sent in the old uri's place,
    and until when it lives."""
    store = access.store_of(conversation)
    text = None
    if record.digest is not None:
        text = await access.run(
            store, _files.media_text(conversation.id, record.digest, access.cipher(conversation))
        )
    if text is None:
        raise MediaNotHeldError(conversation.id, None, record.uri)
    if client is None:
        raise MediaError(
            f"the file {record.uri} has expired: pass client= to upload it again, or media='inline'",
            conversation.id,
        )
    data = _files.decoded(text)
    uploaded = await client.upload_file(io.BytesIO(data), mime_type=record.mime_type, size=len(data))
    fresh, expires = uploaded["uri"], file_expiration(uploaded)
    await access.run(store, _files.remember_live(conversation.id, record.uri, fresh, expires), write=True)
    return uri_pair(uri=fresh), expires


async def delete_remote(
    store: AsyncStore, client: Any, *, older_than: timedelta | datetime | None = None
) -> RemoteDeletion:
    """See ``AsyncStore.delete_remote``."""
    now = store.lifecycle.clock()
    if older_than is None:
        before = datetime.max.replace(tzinfo=timezone.utc)
    else:
        before = now - older_than if isinstance(older_than, timedelta) else older_than
    if before.tzinfo is None:
        raise ValueError("older_than: pass an aware datetime or a timedelta")
    copies = await access.run(store, _files.remote_copies(before, store.owner))
    deleted: list[str] = []
    failed: list[tuple[str, str]] = []
    for copy in copies:
        try:
            await client.delete(copy.interaction_id)
        except APIError as exc:
            if exc.status_code != 404:  # not found: gone already, as good as deleted
                failed.append((copy.interaction_id, f"HTTP {exc.status_code} {exc.status or ''}".strip()))
                continue
        await access.run(
            store,
            _files.forget_interaction(copy.conversation_id, copy.interaction_id, datetime.now(timezone.utc)),
            write=True,
        )
        deleted.append(copy.interaction_id)
    return RemoteDeletion(deleted=deleted, failed=failed)


async def chain_of(interaction_id: str, client: Any, limit: int = 10_000) -> list[Mapping[str, Any]]:
    """The stored interactions of a server-side chain ending at ``interaction_id``, oldest first (each
    read with ``GET``, following ``previous_interaction_id``)."""
    chain: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    current: str | None = interaction_id
    while current is not None:
        if current in seen or len(chain) >= limit:
            raise CodecError(
                [("previous_interaction_id", f"the chain loops or exceeds {limit} interactions")]
            )
        seen.add(current)
        found = await client.get(current)
        chain.append(found)
        previous = found.get("previous_interaction_id")
        current = previous if isinstance(previous, str) and previous else None
    chain.reverse()
    return chain


def exchanges_of_chain(chain: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], list[Any]]]:
    """Each interaction of a chain with the steps it added to the timeline (GET returns the whole timeline:
    an interaction's own steps are what follows its predecessor's timeline)."""
    exchanges = []
    known = 0
    for interaction in chain:
        steps = interaction.get("steps")
        if not isinstance(steps, list) or len(steps) < known:
            raise CodecError([("steps", f"interaction {interaction.get('id')!r}: not the whole timeline")])
        exchanges.append((interaction, steps[known:]))
        known = len(steps)
    return exchanges
