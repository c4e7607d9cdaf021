"""The store's operations, written once for the sync and the async store.

Each operation is a generator: it yields ``Exec`` statements, receives each one's result, and returns a value.
A database error on a statement is thrown back in at that ``yield``, so the operation decides what it means
(an insert that breaks a foreign key means the conversation is gone, for instance). Everything else here is
pure: building rows, mapping rows to model objects, the tree rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
from sqlalchemy import exc

from convstore._ids import new_id
from convstore.errors import (
    BranchExistsError,
    BranchNotFoundError,
    ConflictError,
    ConversationNotFoundError,
    CorruptionError,
    DataKeyNotFoundError,
    DecryptionError,
    EncryptionError,
    KeyNotFoundError,
    KeyringRequiredError,
    NodeNotFoundError,
    ShredPendingError,
)
from convstore.model import Branch, ConversationInfo, Exchange, Node, Tree, Unreadable
from convstore.store import _keys, _reads
from convstore.store import _statements as st
from convstore.store._crypto import ENCRYPTION, DataCipher, Keyring, WrappedKey
from convstore.store._engine import Call, Exec, Op
from convstore.store._media import plain_digest, refs_json, split_media
from convstore.store._rows import (
    EMPTY_HEAD,
    Head,
    Row,
    missing_branch_or_conversation,
    node_from_row,
    nodes_of,
    payload_texts,
    put_back_media,
)

__all__ = [
    "EMPTY_HEAD",
    "Appended",
    "Head",
    "Loaded",
    "append",
    "chain_point",
    "create_conversation",
    "delete_conversation",
    "encrypted_conversations",
    "exchange",
    "exchanges_of_branch",
    "fork",
    "list_branches",
    "list_conversations",
    "load",
    "payload_texts",
    "put_back_media",
    "rewrap",
    "seal_settings",
    "stale_conversations",
    "store_summary",
    "tree",
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


def _json_or_none(text: str | None, conversation_id: str = "", field: str = "") -> Any:
    """A stored setting's JSON text; text that is not JSON (ciphertext of a row whose ``encryption`` was
    cleared, say) is a ``CorruptionError`` naming the field, never the text."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise CorruptionError(
            f"the stored {field} setting is not JSON text (sealed, with the row's encryption cleared?)",
            conversation_id,
        ) from None


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
    encrypted = getattr(row, "encryption", None) is not None
    if cipher is None:
        values = [row.system_instruction, row.generation_config, row.tools, row.metadata]
    else:
        values = [cipher.open_or_none("conversation", field, getattr(row, field)) for field in SETTINGS]
    system_instruction, generation_config, tools, metadata = values
    return ConversationInfo(
        id=row.id,
        created_at=row.created_at,
        model=row.model,
        system_instruction=_json_or_none(system_instruction, row.id, "system_instruction"),
        generation_config=_json_or_none(generation_config, row.id, "generation_config"),
        tools=_json_or_none(tools, row.id, "tools"),
        metadata=_json_or_none(metadata, row.id, "metadata"),
        encrypted=encrypted,
    )


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


def stored_rows(
    rows: Sequence[dict[str, Any]], cipher: DataCipher | None
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Node rows as they are written, and the media strings they name by hash (see ``_media``): each
    payload with its large media strings cut out, then sealed when ``cipher`` is given."""
    stored = []
    blobs: dict[str, str] = {}
    digest = plain_digest if cipher is None else cipher.media_digest
    for row in rows:
        text, found = split_media(row["payload"])
        if not found and cipher is None:
            stored.append(row)
            continue
        refs = None
        if found:
            hashes = [digest(content) for _, content in found]
            blobs.update(zip(hashes, (content for _, content in found), strict=True))
            refs = refs_json([offset for offset, _ in found], hashes)
        payload = text if cipher is None else cipher.seal("node", row["id"], text)
        stored.append({**row, "payload": payload, "media": refs})
    return stored, blobs


def write_media(conversation_id: str, blobs: Mapping[str, str], cipher: DataCipher | None) -> Op[None]:
    """Store the media strings the conversation does not hold yet (one concurrent writer's copy wins)."""
    if not blobs:
        return
    params = {"conversation_id": conversation_id, "hashes": list(blobs)}
    held = {row.hash for row in (yield Exec(st.MEDIA_STORED, params))}
    missing = [
        {
            "conversation_id": conversation_id,
            "hash": digest,
            "data": content if cipher is None else cipher.seal("media", digest, content),
        }
        for digest, content in blobs.items()
        if digest not in held
    ]
    if missing:
        yield Exec(st.INSERT_MEDIA, missing)


def branch_from_row(conversation_id: str, row: Any) -> Branch:
    return Branch(
        conversation_id=conversation_id,
        name=row.name,
        head_id=row.head_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def build_node_rows(
    conversation_id: str,
    head: Head,
    steps: Sequence[tuple[str, str, int]],
    now: datetime,
    *,
    continues: bool = False,
) -> list[dict[str, Any]]:
    """Rows for one exchange appended after ``head``: a chain of parent pointers, depths, running totals and
    one segment (see ``_reads``).

    Args:
        steps: ``(type, payload JSON text, token count)`` for each step, in order.
        continues: The head is its segment's last node (no node follows it there): the first row continues
            ``head.segment_id``. Otherwise (an empty branch, a head something follows already: a fork or
            edit point) the first row starts a segment of its own. The exchange's later rows continue it.
    """
    exchange_id = new_id()
    rows = []
    parent, depth, total = head.node_id, head.depth, head.total_tokens
    segment = head.segment_id if continues and head.node_id is not None else None
    for step_type, payload, count in steps:
        node_id = new_id()
        depth += 1
        total += count
        segment = segment or node_id
        rows.append(
            {
                "conversation_id": conversation_id,
                "id": node_id,
                "parent_id": parent,
                "depth": depth,
                "exchange_id": exchange_id,
                "type": step_type,
                "token_count": count,
                "total_tokens": total,
                "created_at": now,
                "payload": payload,
                "media": None,
                "segment_id": segment,
            }
        )
        parent = node_id
    return rows


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
    row = result.first()
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


def hold_conversation(conversation_id: str) -> Op[None]:
    """A write's first statement: a KEY SHARE lock on the conversation row (PostgreSQL), which a delete's
    FOR UPDATE waits for and which waits for a delete. Taken first, before any row the write touches (a
    parent node, a branch), so a write and a delete lock in the same order and never deadlock; the foreign
    key checks take the same lock again later, but in an order PostgreSQL does not promise.

    Raises:
        ConversationNotFoundError: it was deleted.
    """
    found = yield Exec(st.HOLD_CONVERSATION, {"conversation_id": conversation_id})
    if found.first() is None:
        raise ConversationNotFoundError(conversation_id)


def _at_tip(conversation_id: str, head: Head) -> Op[bool]:
    """Take the write's locks (``hold_conversation``'s first) and say whether ``head`` is still its
    segment's last node, so that an exchange appended after it continues the segment.

    SQLite serialises writers (BEGIN IMMEDIATE), so the test in the first statement is final. On PostgreSQL
    two transactions appending after one tip on two branches must not both continue it: a successor seen is
    final (nodes are immutable), but "none" is confirmed after locking the head row FOR NO KEY UPDATE,
    which serialises the appenders after that node, by a statement of its own, which (READ COMMITTED) sees
    a successor that the lock's previous holder committed.

    Raises:
        ConversationNotFoundError: it was deleted.
    """
    params = {
        "conversation_id": conversation_id,
        "segment_id": head.segment_id,
        "depth": head.depth,
    }
    found = yield Exec(st.HOLD_AT_TIP, params)
    row = found.first()
    if row is None:
        raise ConversationNotFoundError(conversation_id)
    if head.node_id is None or head.segment_id is None or row.continued:
        return False
    if found.context.dialect.name == "sqlite":
        return True
    locked = yield Exec(st.LOCK_HEAD, {"conversation_id": conversation_id, "node_id": head.node_id})
    if locked.first() is None:
        # The head node is not there: the conversation was deleted (the insert's foreign key says so).
        return False
    successor = yield Exec(st.SUCCESSOR, params)
    return successor.first() is None


@attrs.frozen
class Appended:
    """What an append wrote: the new nodes, and the branch's new head (the last of them)."""

    nodes: list[Node]
    head: Head


def append(  # noqa: PLR0917 -- an internal operation; every caller passes all six
    conversation_id: str,
    branch: str,
    head: Head,
    steps: Sequence[tuple[str, str, int]],
    now: datetime,
    exchange: Mapping[str, Any] | None = None,
    cipher: DataCipher | None = None,
) -> Op[Appended]:
    """Write one exchange after ``head`` and move the branch to its last step, all or nothing.

    Statements: ``HOLD_AT_TIP``, (PostgreSQL, after a tip: ``LOCK_HEAD`` and ``SUCCESSOR``), the media
    strings not stored yet (two, when there are any), the nodes (one executemany), the exchange record (when
    given) and the compare-and-swap of the branch head.

    Args:
        exchange: The exchange's row (interaction id, usage...) without its keys; None writes no row.
        cipher: Seals the payloads of an encrypted conversation (each bound to its node id).
    """
    continues = yield from _at_tip(conversation_id, head)
    rows = build_node_rows(conversation_id, head, steps, now, continues=continues)
    stored, blobs = stored_rows(rows, cipher)
    try:
        yield from write_media(conversation_id, blobs, cipher)
        yield Exec(st.INSERT_NODES, stored)
        if exchange is not None:
            yield Exec(
                st.INSERT_EXCHANGE,
                {
                    **exchange,
                    "conversation_id": conversation_id,
                    "exchange_id": rows[0]["exchange_id"],
                    "created_at": now,
                },
            )
    except exc.IntegrityError as error:
        if "segment_id" in str(error.orig):
            # Another writer continued the head's segment first (the locks above make this unreachable;
            # should it happen, it is that writer's win, as a moved branch head is).
            raise ConflictError(conversation_id, branch, head.node_id) from None
        # The conversation (and so the head node) was deleted under us.
        raise ConversationNotFoundError(conversation_id) from None
    moved = yield Exec(
        st.MOVE_HEAD,
        {
            "in_conversation": conversation_id,
            "branch": branch,
            "expected_head": head.node_id,
            "new_head": rows[-1]["id"],
            "now": now,
        },
    )
    if moved.rowcount != 1:
        check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        if check.first() is None:
            raise (yield from missing_branch_or_conversation(conversation_id, branch))
        raise ConflictError(conversation_id, branch, head.node_id)
    last = rows[-1]
    return Appended(
        [node_from_row(conversation_id, Row(row), row["payload"]) for row in rows],
        Head(last["id"], last["depth"], last["total_tokens"], last["exchange_id"], last["segment_id"]),
    )


def node(conversation_id: str, node_id: str, cipher: DataCipher | None = None) -> Op[Node]:
    result = yield Exec(st.NODE, {"conversation_id": conversation_id, "node_id": node_id})
    row = result.first()
    if row is None:
        check = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
        if check.first() is None:
            raise ConversationNotFoundError(conversation_id)
        raise NodeNotFoundError(conversation_id, node_id)
    return (yield from nodes_of(conversation_id, [row], cipher))[0]


def fork(conversation_id: str, at: str | None, name: str, now: datetime) -> Op[Head]:
    """One new branch row at ``at`` (None: an empty branch), and the new branch's head. Nothing is copied."""
    params = {"conversation_id": conversation_id, "branch": name, "at": at, "now": now}
    yield from hold_conversation(conversation_id)
    try:
        result = yield Exec(st.FORK_EMPTY if at is None else st.FORK_AT_NODE, params)
    except exc.IntegrityError:
        raise BranchExistsError(conversation_id, name) from None
    if result.rowcount != 1:
        if at is None:
            raise ConversationNotFoundError(conversation_id)
        check = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
        if check.first() is None:
            raise ConversationNotFoundError(conversation_id)
        raise NodeNotFoundError(conversation_id, at)
    if at is None:
        return EMPTY_HEAD
    # In the same transaction: the new head's depth and running total, for the returned conversation.
    row = (yield Exec(st.NODE_HEAD, {"conversation_id": conversation_id, "node_id": at})).one()
    return Head(at, row.depth, row.total_tokens, row.exchange_id, row.segment_id)


def list_branches(conversation_id: str) -> Op[list[Branch]]:
    result = yield Exec(st.LIST_BRANCHES, {"conversation_id": conversation_id})
    found = [branch_from_row(conversation_id, row) for row in result]
    if not found:
        check = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
        if check.first() is None:
            raise ConversationNotFoundError(conversation_id)
    return found


def tree(conversation_id: str, cipher: DataCipher | None = None) -> Op[Tree]:
    result = yield Exec(st.TREE_NODES, {"conversation_id": conversation_id})
    found = yield from nodes_of(conversation_id, result.all(), cipher)
    branch_list = yield from list_branches(conversation_id)
    return Tree(conversation_id=conversation_id, nodes=found, branches=branch_list)


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
    yield Exec(st.DELETE_SUMMARIES, params)
    yield Exec(st.DELETE_EXCHANGES, params)
    yield Exec(st.DELETE_BRANCHES, params)
    yield Exec(st.DELETE_NODES, params)
    yield Exec(st.DELETE_MEDIA, params)
    result = yield Exec(st.DELETE_CONVERSATION, params)
    if result.rowcount != 1:
        raise ConversationNotFoundError(conversation_id)
    return outcome


def list_conversations(
    limit: int, cursor: tuple[datetime, str] | None, owner: str | None = None
) -> Op[tuple[list[Any], tuple[datetime, str] | None]]:
    """One page of conversation rows (map them with ``info_from_row``) and the next page's cursor."""
    if cursor is None:
        result = yield Exec(st.LIST_FIRST, {"limit": limit + 1, "owner": owner})
    else:
        result = yield Exec(
            st.LIST_AFTER,
            {"limit": limit + 1, "cursor_created_at": cursor[0], "cursor_id": cursor[1], "owner": owner},
        )
    rows = list(result)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = (rows[-1].created_at, rows[-1].id)
    return rows, next_cursor


def exchange_from_row(row: Any) -> Exchange:
    return Exchange(
        conversation_id=row.conversation_id,
        exchange_id=row.exchange_id,
        interaction_id=row.interaction_id,
        stored=bool(row.stored),
        model=row.model,
        status=row.status,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        thought_tokens=row.thought_tokens,
        cached_tokens=row.cached_tokens,
        tool_use_tokens=row.tool_use_tokens,
        total_tokens=row.total_tokens,
        usage=_json_or_none(row.usage),
        created_at=row.created_at,
        estimated_input_tokens=row.estimated_input_tokens,
    )


def exchange(conversation_id: str, exchange_id: str) -> Op[Exchange | None]:
    result = yield Exec(st.EXCHANGE, {"conversation_id": conversation_id, "exchange_id": exchange_id})
    row = result.first()
    return None if row is None else exchange_from_row(row)


def chain_point(conversation_id: str, head: Head) -> Op[str | None]:
    """The interaction a stateful request may chain on from ``head``, if any.

    The API's timeline of a stored interaction is the path from the root to the last step of its exchange
    (a chained interaction's timeline is its predecessor's plus its own, by induction), so chaining is right
    exactly when the head is the last step of an exchange recorded with ``store: true``.
    """
    if head.node_id is None or head.exchange_id is None:
        return None
    found = yield from exchange(conversation_id, head.exchange_id)
    if found is None or not found.stored or found.interaction_id is None:
        return None
    params = {"conversation_id": conversation_id, "node_id": head.node_id, "exchange_id": head.exchange_id}
    continues = yield Exec(st.EXCHANGE_CONTINUES, params)
    return None if continues.first() is not None else found.interaction_id


def exchanges_of_branch(conversation_id: str, branch: str) -> Op[list[Exchange]]:
    """The recorded exchanges along a branch, oldest first."""
    ids = yield from _reads.path_exchange_ids(conversation_id, branch)
    if not ids:
        return []
    found = yield Exec(st.EXCHANGES, {"conversation_id": conversation_id, "exchange_ids": ids})
    by_id = {row.exchange_id: exchange_from_row(row) for row in found}
    return [by_id[i] for i in ids if i in by_id]


def store_summary(  # noqa: PLR0917 -- an internal operation; every caller passes all of it
    conversation_id: str,
    node_id: str,
    payload: str,
    token_count: int,
    now: datetime,
    cipher: DataCipher | None = None,
) -> Op[None]:
    """Keep a compaction summary for a window start; a concurrent writer's identical key wins quietly."""
    row = {
        "conversation_id": conversation_id,
        "node_id": node_id,
        "payload": payload if cipher is None else cipher.seal("summary", node_id, payload),
        "token_count": token_count,
        "created_at": now,
    }
    yield from hold_conversation(conversation_id)
    try:
        yield Exec(st.INSERT_SUMMARY, row)
    except exc.IntegrityError:
        return


def stale_conversations(cutoff: datetime, owner: str | None) -> Op[list[str]]:
    """Conversations (of ``owner``) created before ``cutoff`` with no branch moved since."""
    result = yield Exec(st.STALE_CONVERSATIONS, {"cutoff": cutoff, "owner": owner})
    return [row.id for row in result]


def encrypted_conversations(owner: str | None) -> Op[list[str]]:
    """The ids of the encrypted conversations ``owner`` (None: anyone) may see, oldest first."""
    result = yield Exec(st.ENCRYPTED_CONVERSATIONS, {"owner": owner})
    return [row.id for row in result]


def rewrap(conversation_id: str, keyring: Keyring) -> Op[bool]:
    """Re-wrap a conversation's data key (default key store) with the keyring's active key, if another key
    wrapped it. Payloads are untouched. Returns whether it was re-wrapped: not when the key was deleted (or
    re-wrapped) by another transaction meanwhile: the compare-and-swap finds it and leaves it as it is."""
    wrapped = yield from _keys.get_op(conversation_id)
    if wrapped is None:
        return False
    rewrapped = keyring.rewrap(conversation_id, wrapped)
    if rewrapped is None:
        return False
    return (yield from _keys.replace_op(conversation_id, wrapped, rewrapped))
