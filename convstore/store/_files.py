"""What the store keeps so a conversation outlives the API: the bytes of uploaded files, their uris'
expiry, and which stored interactions the server still has (reference §11).

- ``convstore_files``: one row per Files API uri a conversation's history names, with the hash of its bytes
  in ``convstore_media`` (their base64 text, stored once per content hash and sealed under the conversation's
  data key like inline media), its expiry, and the newest re-upload of the same bytes (``live_uri``).
- ``convstore_exchanges.remote_deleted_at``: the server's copy of that exchange's stored interaction was
  deleted (``delete_remote``); nothing chains on it again.

Plain operations (``Op``), no HTTP: the conversation layer decides when to upload and calls these.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from convstore.errors import CodecError
from convstore.store import _statements as st
from convstore.store._crypto import DataCipher
from convstore.store._engine import Exec, Op
from convstore.store._media import plain_digest
from convstore.store._rows import Head
from convstore.store._schema import conversations as c
from convstore.store._schema import exchanges as x
from convstore.store._schema import files as fl
from convstore.store._schema import media as m
from convstore.store._writes import write_media

__all__ = [
    "FileRecord",
    "Lifecycle",
    "RemoteCopy",
    "chain_point",
    "file_records",
    "forget_interaction",
    "media_text",
    "remember_file",
    "remember_live",
    "remote_copies",
    "store_bytes",
]


def _now() -> datetime:
    return datetime.now(timezone.utc)


@attrs.frozen(kw_only=True)
class Lifecycle:
    """How a store treats what the API forgets (see ``docs/guides/lifecycle.md``).

    Attributes:
        clock: The current time (aware UTC), for expiry and retention: ``datetime.now(timezone.utc)`` by
            default; tests pass ``convstore.testing.ManualClock``.
        upload_margin: A file that expires within this margin is uploaded again before a request names it.
        retention: How long the server keeps a stored interaction (55 days on the paid tier, 1 day on the
            free one): a ``store=True`` turn never chains on one older than this, it replays instead.
    """

    clock: Callable[[], datetime] = _now
    upload_margin: timedelta = timedelta(hours=1)
    retention: timedelta = timedelta(days=55)


@attrs.frozen(kw_only=True)
class FileRecord:
    """A Files API uri of a conversation's history, as the store knows it.

    Attributes:
        uri: The uri the stored steps name.
        digest: The hash of its bytes in the media table (None: convstore never had them).
        mime_type: The file's MIME type.
        expires_at: When the service forgets ``uri`` (None: unknown).
        live_uri: The newest upload of the same bytes, sent in place of ``uri`` while it lives.
        live_expires_at: When ``live_uri`` expires.
    """

    uri: str
    digest: str | None
    mime_type: str
    expires_at: datetime | None
    live_uri: str | None = None
    live_expires_at: datetime | None = None

    def usable_uri(self, now: datetime, margin: timedelta) -> str | None:
        """The uri to send (the original or the live one) if it lives beyond ``now + margin``, else None."""
        cutoff = now + margin
        if self.live_uri is not None and self.live_expires_at is not None and self.live_expires_at > cutoff:
            return self.live_uri
        if self.expires_at is not None and self.expires_at > cutoff:
            return self.uri
        return None


@attrs.frozen(kw_only=True)
class RemoteCopy:
    """An exchange recorded with ``store: true``, whose interaction the server may still keep."""

    conversation_id: str
    exchange_id: str
    interaction_id: str
    created_at: datetime


_FILES_NAMED = sa.select(fl).where(
    fl.c.conversation_id == sa.bindparam("conversation_id"),
    fl.c.uri.in_(sa.bindparam("uris", expanding=True)),
)
_INSERT_FILE = postgresql.insert(fl).on_conflict_do_nothing(index_elements=[fl.c.conversation_id, fl.c.uri])
# Not "conversation_id" in an UPDATE's WHERE: an UPDATE reserves its columns' names for its SET clause.
_THIS_FILE = sa.and_(fl.c.conversation_id == sa.bindparam("in_conversation"), fl.c.uri == sa.bindparam("u"))
_UPDATE_FILE = (
    sa.update(fl)
    .where(_THIS_FILE)
    .values(
        hash=sa.bindparam("hash"), mime_type=sa.bindparam("mime_type"), expires_at=sa.bindparam("expires_at")
    )
)
_UPDATE_LIVE = (
    sa.update(fl)
    .where(_THIS_FILE)
    .values(live_uri=sa.bindparam("live_uri"), live_expires_at=sa.bindparam("live_expires_at"))
)
_MEDIA_TEXT = sa.select(m.c.data).where(
    m.c.conversation_id == sa.bindparam("conversation_id"), m.c.hash == sa.bindparam("hash")
)
_EXCHANGE_STATE = sa.select(x.c.stored, x.c.interaction_id, x.c.created_at, x.c.remote_deleted_at).where(
    x.c.conversation_id == sa.bindparam("conversation_id"), x.c.exchange_id == sa.bindparam("exchange_id")
)
_REMOTE = (
    sa.select(x.c.conversation_id, x.c.exchange_id, x.c.interaction_id, x.c.created_at)
    .join(c, c.c.id == x.c.conversation_id)
    .where(
        x.c.stored.is_(True),
        x.c.interaction_id.is_not(None),
        x.c.remote_deleted_at.is_(None),
        x.c.created_at <= sa.bindparam("before"),
        st.OWNED_BY,
    )
    .order_by(x.c.created_at, x.c.exchange_id)
)


def file_records(conversation_id: str, uris: Iterable[str]) -> Op[dict[str, FileRecord]]:
    """The records of those of ``uris`` the conversation has one of."""
    names = list(uris)
    if not names:
        return {}
    result = yield Exec(_FILES_NAMED, {"conversation_id": conversation_id, "uris": names})
    return {
        row.uri: FileRecord(
            uri=row.uri,
            digest=row.hash,
            mime_type=row.mime_type,
            expires_at=row.expires_at,
            live_uri=row.live_uri,
            live_expires_at=row.live_expires_at,
        )
        for row in result
    }


def store_bytes(conversation_id: str, data: bytes, cipher: DataCipher | None) -> Op[str]:
    """Keep ``data`` in the media table (its base64 text, once per content hash, sealed when encrypted);
    returns its hash."""
    text = base64.b64encode(data).decode("ascii")
    digest = plain_digest(text) if cipher is None else cipher.media_digest(text)
    yield from write_media(conversation_id, {digest: text}, cipher)
    return digest


def media_text(conversation_id: str, digest: str, cipher: DataCipher | None) -> Op[str | None]:
    """The base64 text of the bytes stored under ``digest`` (opened), or None."""
    result = yield Exec(_MEDIA_TEXT, {"conversation_id": conversation_id, "hash": digest})
    data = result.scalar_one_or_none()
    if data is None:
        return None
    return data if cipher is None else cipher.open("media", digest, data)


def decoded(text: str) -> bytes:
    """The bytes of a stored base64 text (strict: a corrupt text is an error, not garbage)."""
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise CodecError([("media", "stored file bytes are not base64")]) from exc


def remember_file(
    conversation_id: str, uri: str, *, digest: str | None, mime_type: str, expires_at: datetime | None
) -> Op[None]:
    """Record (or replace the record of) a uri: its bytes' hash, MIME type and expiry."""
    values: dict[str, Any] = {"hash": digest, "mime_type": mime_type, "expires_at": expires_at}
    yield Exec(_INSERT_FILE, {"conversation_id": conversation_id, "uri": uri, **values})
    yield Exec(_UPDATE_FILE, {"in_conversation": conversation_id, "u": uri, **values})


def remember_live(
    conversation_id: str, uri: str, live_uri: str, live_expires_at: datetime | None
) -> Op[None]:
    """Record a fresh upload of ``uri``'s bytes (the last of two concurrent ones wins; both were valid)."""
    params = {
        "in_conversation": conversation_id,
        "u": uri,
        "live_uri": live_uri,
        "live_expires_at": live_expires_at,
    }
    yield Exec(_UPDATE_LIVE, params)


def chain_point(conversation_id: str, head: Head, *, not_before: datetime) -> Op[str | None]:
    """The stored interaction a ``store=True`` turn may chain on from ``head`` (see ``_reads.chain_point``),
    unless its server copy was deleted or it was recorded before ``not_before`` (past the retention)."""
    if head.node_id is None or head.exchange_id is None:
        return None
    result = yield Exec(
        _EXCHANGE_STATE, {"conversation_id": conversation_id, "exchange_id": head.exchange_id}
    )
    row = result.first()
    if row is None or not row.stored or row.interaction_id is None or row.remote_deleted_at is not None:
        return None
    if row.created_at < not_before:
        return None
    params = {"conversation_id": conversation_id, "node_id": head.node_id, "exchange_id": head.exchange_id}
    continues = yield Exec(st.EXCHANGE_CONTINUES, params)
    return None if continues.first() is not None else str(row.interaction_id)


def remote_copies(before: datetime, owner: str | None) -> Op[list[RemoteCopy]]:
    """Exchanges recorded with ``store: true`` up to ``before`` whose server copy was not deleted yet."""
    result = yield Exec(_REMOTE, {"before": before, "owner": owner})
    return [
        RemoteCopy(
            conversation_id=str(row.conversation_id),
            exchange_id=str(row.exchange_id),
            interaction_id=row.interaction_id,
            created_at=row.created_at,
        )
        for row in result
    ]


_FORGET = (
    sa.update(x)
    .where(
        x.c.conversation_id == sa.bindparam("in_conversation"),
        x.c.interaction_id == sa.bindparam("in_interaction"),
        x.c.remote_deleted_at.is_(None),
    )
    .values(remote_deleted_at=sa.bindparam("at"))
)


def forget_interaction(conversation_id: str, interaction_id: str, at: datetime) -> Op[None]:
    """Record that the server no longer keeps ``interaction_id`` (it answered not found)."""
    yield Exec(_FORGET, {"in_conversation": conversation_id, "in_interaction": interaction_id, "at": at})
