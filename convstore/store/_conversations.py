"""A conversation's record: create, open, list, purge and delete (operations: see ``_ops``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

import attrs

from convstore._ids import canonical_id
from convstore.errors import (
    BranchNotFoundError,
    ConversationNotFoundError,
    DataKeyNotFoundError,
    DecryptionError,
    EncryptionError,
    KeyNotFoundError,
    KeyringRequiredError,
    ShredPendingError,
)
from convstore.model import ConversationInfo, Unreadable
from convstore.store import _keys
from convstore.store import _statements as st
from convstore.store._crypto import ENCRYPTION, DataCipher, WrappedKey
from convstore.store._engine import Call, Exec, Op
from convstore.store._rows import (
    EMPTY_HEAD,
    Head,
    json_or_none,
)

__all__ = [
    "DELETED",
    "KEPT",
    "KEY_WAL_BUSY",
    "SETTINGS",
    "Listed",
    "Loaded",
    "create_conversation",
    "delete_conversation",
    "info_from_row",
    "list_conversations",
    "load",
    "loaded",
    "seal_settings",
    "stale_conversations",
    "unreadable",
    "visible",
    "withheld_info",
]


@attrs.frozen
class Loaded:
    """A conversation's row (settings still sealed when it is encrypted), the branch head, and the wrapped
    data key when it was read in the same transaction (the default key store)."""

    row: Any
    head: Head
    wrapped: WrappedKey | None = None


# The conversation's settings that can hold user text, sealed when the conversation is encrypted (its model
# name stays clear: the store and the request builder need it, and it is the app's choice, not the user's).
SETTINGS = ("system_instruction", "generation_config", "tools", "metadata")


def seal_settings(row: Mapping[str, Any], cipher: DataCipher) -> dict[str, Any]:
    """A new conversation's row with its settings sealed and its encryption scheme recorded."""
    sealed = dict(row)
    for field in SETTINGS:
        sealed[field] = cipher.seal_or_none("conversation", field, row[field])
    sealed["encryption"] = ENCRYPTION
    return sealed


def info_from_row(row: Any, cipher: DataCipher | None = None) -> ConversationInfo:
    """The record of a conversation row; ``cipher`` opens the settings of an encrypted one."""
    conversation_id = row.id
    if cipher is None:
        system_instruction, generation_config, tools, metadata = (
            row.system_instruction,
            row.generation_config,
            row.tools,
            row.metadata,
        )
    else:
        system_instruction, generation_config, tools, metadata = (
            cipher.open_or_none("conversation", field, getattr(row, field)) for field in SETTINGS
        )
    settings = (system_instruction, generation_config, tools, metadata)
    encrypted = getattr(row, "encryption", None) is not None
    return info_of(conversation_id, row.created_at, row.model, settings, encrypted=encrypted)


def withheld_info(row: Any, why: Unreadable = "keyring_required") -> ConversationInfo:
    """The record of an encrypted conversation listed by a store that cannot open it: no settings."""
    return ConversationInfo(
        id=row.id,
        created_at=row.created_at,
        model=row.model,
        system_instruction=None,
        generation_config=None,
        tools=None,
        metadata=None,
        encrypted=True,
        unreadable=why,
    )


def unreadable(error: EncryptionError) -> Unreadable:
    """Why a conversation whose opening raised ``error`` cannot be read (``ConversationInfo.unreadable``)."""
    if isinstance(error, KeyringRequiredError):
        return "keyring_required"
    if isinstance(error, DataKeyNotFoundError):
        return "key_missing"
    if isinstance(error, KeyNotFoundError):
        return "key_unknown"
    if isinstance(error, DecryptionError):
        return "key_undecryptable" if error.where == "data key" else "settings_undecryptable"
    return "scheme_unknown"


def create_conversation(
    row: Mapping[str, Any], branch: str, now: datetime, wrapped: WrappedKey | None = None
) -> Op[None]:
    """Insert a conversation and its first branch; ``wrapped``: its data key, for the default key store,
    written first in the same transaction."""
    if wrapped is not None:
        yield from _keys.put_op(row["id"], wrapped)
    yield Exec(st.INSERT_CONVERSATION, row)
    yield Exec(
        st.INSERT_BRANCH,
        {"conversation_id": row["id"], "name": branch, "head_id": None, "created_at": now, "updated_at": now},
    )


def load(
    conversation_id: str, branch: str, owner: str | None = None, *, inline_keys: bool = False
) -> Op[Loaded]:
    """The conversation's row and branch head; with ``inline_keys``, an encrypted one's wrapped data key
    from the default key store (the same database) too."""
    params = {"conversation_id": conversation_id, "branch": branch, "owner": owner}
    result = yield Exec(st.LOAD_CONVERSATION, params)
    return (yield from loaded(conversation_id, branch, result.first(), inline_keys=inline_keys))


def loaded(conversation_id: str, branch: str, row: Any, *, inline_keys: bool = False) -> Op[Loaded]:
    """``load``'s value from the row ``LOAD_CONVERSATION`` read (None: no such conversation)."""
    if row is None:
        raise ConversationNotFoundError(conversation_id)
    if row.name is None:
        raise BranchNotFoundError(conversation_id, branch)
    head = (
        EMPTY_HEAD
        if row.head_id is None
        else Head(row.head_id, row.depth, row.total_tokens, row.exchange_id, row.segment_id)
    )
    wrapped = None
    if inline_keys and row.encryption is not None:
        wrapped = yield from _keys.get_op(conversation_id)
    return Loaded(row, head, wrapped)


def visible(conversation_id: str, owner: str | None = None) -> Op[str | None]:
    """The conversation's encryption scheme (None: plaintext), if ``owner`` may see it.

    Raises:
        ConversationNotFoundError: it does not exist, or belongs to another owner.
    """
    found = (
        yield Exec(st.CONVERSATION_VISIBLE, {"conversation_id": conversation_id, "owner": owner})
    ).first()
    if found is None:
        raise ConversationNotFoundError(conversation_id)
    return found.encryption  # type: ignore[no-any-return]


KEPT, DELETED, KEY_WAL_BUSY = "kept", "deleted", "key_wal_busy"  # what a delete did


def delete_conversation(
    conversation_id: str,
    owner: str | None = None,
    *,
    inline_keys: bool = True,
    stale_before: datetime | None = None,
    delete_key: Callable[[str], None] | None = None,
) -> Op[str]:
    """Delete every row of a conversation, in one transaction that holds the conversation row first.

    Args:
        inline_keys: The data key is in this database (the default key store): it goes first, in the
            same transaction (crypto-shredding, then the rows).
        stale_before: Purge: delete only if the conversation is still untouched since this cutoff, tested
            in this transaction after the lock, so a turn that committed before it is seen (and kept).
        delete_key: A key store's ``delete_key``, called inside this transaction, after the lock (so no turn
            can be written meanwhile) and before the rows go.

    Returns:
        ``KEPT`` (touched since ``stale_before``: nothing deleted), ``DELETED``, or ``KEY_WAL_BUSY``
        (deleted, but the key store's ``ShredPendingError`` said its WAL still holds the key).

    Raises:
        ConversationNotFoundError: it does not exist (or belongs to another owner).
    """
    params = {"conversation_id": conversation_id}
    found = (yield Exec(st.LOCK_CONVERSATION, {**params, "owner": owner})).first()
    if found is None:
        raise ConversationNotFoundError(conversation_id)
    if stale_before is not None:
        stale = yield Exec(st.STALE_CONVERSATION, {**params, "cutoff": stale_before})
        if stale.first() is None:
            return KEPT
    outcome = DELETED
    if found.encryption is not None:
        if inline_keys:
            yield from _keys.delete_op(conversation_id)
        elif delete_key is not None:
            try:
                yield Call(delete_key, (conversation_id,))
            except ShredPendingError:
                outcome = KEY_WAL_BUSY  # the key is deleted; its WAL is not empty yet
    yield Exec(st.DELETE_SEARCH, params)  # first: its rows refer to the nodes
    yield Exec(st.DELETE_SUMMARIES, params)
    yield Exec(st.DELETE_EXCHANGES, params)
    yield Exec(st.DELETE_BRANCHES, params)
    yield Exec(st.DELETE_NODES, params)
    yield Exec(st.DELETE_MEDIA, params)
    yield Exec(st.DELETE_FILES, params)
    result = yield Exec(st.DELETE_CONVERSATION, params)
    if result.rowcount != 1:
        raise ConversationNotFoundError(conversation_id)
    # Its id, kept so that an old export cannot bring it back unasked (a delete of an id imported back
    # after an earlier delete: the record is already there).
    erased = yield Exec(st.ERASED, params)
    if erased.first() is None:
        yield Exec(st.INSERT_ERASED, {**params, "erased_at": datetime.now(timezone.utc)})
    return outcome


class Listed(NamedTuple):
    """A listed conversation's row (``LIST_FIRST``), its id canonical and its time aware UTC."""

    id: str
    created_at: datetime
    model: str | None
    system_instruction: str | None
    generation_config: str | None
    tools: str | None
    metadata: str | None
    encryption: str | None


_UTC = timezone.utc
_SQLITE_TIME = len("2026-01-02 03:04:05.678901")  # SQLAlchemy's text of a naive time on SQLite
# json's C scanner, without ``loads``'s layers of Python around it (set by JSONDecoder's __init__: no stub)
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _json(text: str) -> Any:
    """The value of a JSON text stored as convstore writes it (no space around it): one call of json's
    scanner instead of ``json.loads`` (four times the cost). ValueError for anything else (text with space
    around it too: the caller then decodes it the general way)."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON text") from None
    if end != len(text):
        raise ValueError("not JSON text")
    return value


def _listed(row: Sequence[Any]) -> ConversationInfo | Listed:
    """A listing's driver tuple as the conversation's record, or as ``Listed`` when it is encrypted (the
    store opens its settings): what SQLAlchemy's result processing would have made of its id and time,
    done for the two values that need it (a UUID and a time read raw cost more than the rest of a page).
    A page builds 50 to 1,000 of these, so the common row (canonical id or SQLite's hex, SQLite's time text,
    plaintext JSON settings) takes the shortest way; anything else goes the general one (``info_of``),
    which names a setting that is not JSON."""
    raw, created, model, system_instruction, generation_config, tools, metadata, encryption = row
    if len(raw) == 36:
        conversation_id = raw
    elif len(raw) == 32 and raw.isalnum() and raw.islower():  # SQLite's 32 hex digits (``canonical_id``)
        conversation_id = f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
    else:
        conversation_id = canonical_id(raw)
    if created.__class__ is str:  # SQLite's text, naive UTC
        if len(created) == _SQLITE_TIME and created[19] == ".":  # no offset of its own in it
            created = datetime.fromisoformat(created + "+00:00")  # cheaper than .replace(tzinfo=)
        else:
            created = datetime.fromisoformat(created).replace(tzinfo=_UTC)
    elif created.tzinfo is None:
        created = created.replace(tzinfo=_UTC)
    elif created.utcoffset():
        created = created.astimezone(_UTC)
    if encryption is not None:
        return Listed(conversation_id, created, *row[2:])
    try:
        return ConversationInfo(
            id=conversation_id,
            created_at=created,
            model=model,
            system_instruction=None if system_instruction is None else _json(system_instruction),
            generation_config=None if generation_config is None else _json(generation_config),
            tools=None if tools is None else _json(tools),
            metadata=None if metadata is None else _json(metadata),
        )
    except (ValueError, RecursionError):  # space around a text, or no JSON: ``info_of`` names the setting
        return info_of(conversation_id, created, model, row[3:7])


def list_conversations(
    limit: int, cursor: tuple[datetime, str] | None, owner: str | None = None
) -> Op[tuple[list[ConversationInfo | Listed], tuple[datetime, str] | None]]:
    """One page of conversations, each its record or, encrypted, its row (``Listed``: the store opens its
    settings with ``info_from_row``), and the next page's cursor."""
    if cursor is None:
        found = yield Exec(st.LIST_FIRST, {"limit": limit + 1, "owner": owner}, rows=True)
    else:
        params = {"limit": limit + 1, "cursor_created_at": cursor[0], "cursor_id": cursor[1], "owner": owner}
        found = yield Exec(st.LIST_AFTER, params, rows=True)
    rows = [_listed(row) for row in found[:limit]]
    next_cursor = (rows[-1].created_at, rows[-1].id) if len(found) > limit else None  # (time, id) both
    return rows, next_cursor


def stale_conversations(cutoff: datetime, owner: str | None) -> Op[list[str]]:
    """Conversations (of ``owner``) created before ``cutoff`` with no branch moved since."""
    result = yield Exec(st.STALE_CONVERSATIONS, {"cutoff": cutoff, "owner": owner})
    return [row.id for row in result]


def info_of(
    conversation_id: str,
    created_at: Any,
    model: str | None,
    settings: Sequence[str | None],
    *,
    encrypted: bool = False,
) -> ConversationInfo:
    """A conversation's record from its columns, its settings (system instruction, generation config,
    tools, metadata: JSON texts, opened) decoded."""
    decoded = [
        None if text is None else json_or_none(text, conversation_id, field)
        for field, text in zip(SETTINGS, settings, strict=True)
    ]
    system_instruction, generation_config, tools, metadata = decoded
    return ConversationInfo(
        id=conversation_id,
        created_at=created_at,
        model=model,
        system_instruction=system_instruction,
        generation_config=generation_config,
        tools=tools,
        metadata=metadata,
        encrypted=encrypted,
    )
