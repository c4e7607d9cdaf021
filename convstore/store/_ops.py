"""The store's operations, written once for the sync and the async store.

Each operation is a generator: it yields ``Exec`` statements, receives each one's result, and returns a value.
A database error on a statement is thrown back in at that ``yield``, so the operation decides what it means
(an insert that breaks a foreign key means the conversation is gone, for instance). Everything else here is
pure: building rows, mapping rows to model objects, the tree rules.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import attrs
from sqlalchemy import exc

from convstore._ids import canonical_id, new_id
from convstore.budget._window import (
    Calibration,
    TokenBudget,
    available_tokens,
    choose_window,
    fetch_threshold,
)
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
from convstore.store import _keys
from convstore.store import _statements as st
from convstore.store._crypto import ENCRYPTION, DataCipher, Keyring, WrappedKey
from convstore.store._engine import Call, Exec, Op
from convstore.store._media import join_media, plain_digest, refs_json, split_media, stored_hashes

__all__ = [
    "Head",
    "Loaded",
    "Replay",
    "append",
    "chain_point",
    "create_conversation",
    "delete_conversation",
    "encrypted_conversations",
    "exchange",
    "exchanges_of_branch",
    "fork",
    "history",
    "list_branches",
    "list_conversations",
    "load",
    "path",
    "rewrap",
    "seal_settings",
    "stale_conversations",
    "store_summary",
    "tree",
    "unreadable",
    "visible",
    "window",
    "withheld_info",
]


@attrs.frozen
class Head:
    """Where a writer believes a branch head is: the CAS's expected value, and what new rows build on."""

    node_id: str | None
    depth: int  # -1 for an empty branch, so the first step gets depth 0
    total_tokens: int
    exchange_id: str | None = None


EMPTY_HEAD = Head(None, -1, 0)


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


def node_from_row(conversation_id: str, row: Any, text: str) -> Node:
    """The node of a row; ``text``: its payload as written (opened, media put back)."""
    return Node(
        id=row.id,
        conversation_id=conversation_id,
        parent_id=row.parent_id,
        depth=row.depth,
        exchange_id=row.exchange_id,
        type=row.type,
        token_count=row.token_count,
        total_tokens=row.total_tokens,
        created_at=row.created_at,
        raw_json=text,
    )


def payload_texts(conversation_id: str, rows: Sequence[Any], cipher: DataCipher | None) -> Op[list[str]]:
    """The payloads of node rows read, as written: opened when sealed, media put back."""
    if cipher is None:
        texts = [row.payload for row in rows]
    else:
        texts = [cipher.open("node", row.id, row.payload) for row in rows]
    yield from put_back_media(conversation_id, texts, [row.media for row in rows], rows, cipher)
    return texts


def _nodes(conversation_id: str, rows: Sequence[Any], cipher: DataCipher | None) -> Op[list[Node]]:
    texts = yield from payload_texts(conversation_id, rows, cipher)
    return [node_from_row(conversation_id, row, text) for row, text in zip(rows, texts, strict=True)]


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


_MEDIA_BATCH = 500  # hashes per lookup, well inside every driver's parameter limit


def put_back_media(
    conversation_id: str,
    texts: list[str],
    refs: Sequence[str | None],
    rows: Sequence[Any],
    cipher: DataCipher | None,
) -> Op[None]:
    """Put the media strings back into the payload ``texts`` of ``rows`` (in place), ``refs`` being their
    ``media`` columns: one lookup for all."""
    if not any(refs):
        return
    pending = [(index, ref) for index, ref in enumerate(refs) if ref is not None]
    hashes = list(dict.fromkeys(digest for _, ref in pending for digest in stored_hashes(ref)))
    found: dict[str, str] = {}
    for start in range(0, len(hashes), _MEDIA_BATCH):
        params = {"conversation_id": conversation_id, "hashes": hashes[start : start + _MEDIA_BATCH]}
        for row in (yield Exec(st.MEDIA, params)):
            found[row.hash] = row.data if cipher is None else cipher.open("media", row.hash, row.data)
    for index, ref in pending:
        try:
            texts[index] = join_media(texts[index], ref, found.__getitem__)
        except KeyError:
            raise CorruptionError(
                f"node {canonical_id(rows[index].id)} names a media string that is not stored",
                conversation_id,
            ) from None


def branch_from_row(conversation_id: str, row: Any) -> Branch:
    return Branch(
        conversation_id=conversation_id,
        name=row.name,
        head_id=row.head_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def build_node_rows(
    conversation_id: str, head: Head, steps: Sequence[tuple[str, str, int]], now: datetime
) -> list[dict[str, Any]]:
    """Rows for one exchange appended after ``head``: a chain of parent pointers, depths and running totals.

    Args:
        steps: ``(type, payload JSON text, token count)`` for each step, in order.
    """
    exchange_id = new_id()
    rows = []
    parent, depth, total = head.node_id, head.depth, head.total_tokens
    for step_type, payload, count in steps:
        node_id = new_id()
        depth += 1
        total += count
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
        EMPTY_HEAD if row.head_id is None else Head(row.head_id, row.depth, row.total_tokens, row.exchange_id)
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


def _missing_branch_or_conversation(conversation_id: str, branch: str) -> Op[Exception]:
    """After a statement matched nothing: which of the two is gone."""
    result = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
    if result.first() is None:
        return ConversationNotFoundError(conversation_id)
    return BranchNotFoundError(conversation_id, branch)


def append(  # noqa: PLR0917 -- an internal operation; every caller passes all six
    conversation_id: str,
    branch: str,
    head: Head,
    steps: Sequence[tuple[str, str, int]],
    now: datetime,
    exchange: Mapping[str, Any] | None = None,
    cipher: DataCipher | None = None,
) -> Op[list[Node]]:
    """Write one exchange after ``head`` and move the branch to its last step, all or nothing.

    Args:
        exchange: The exchange's row (interaction id, usage...) without its keys; None writes no row.
        cipher: Seals the payloads of an encrypted conversation (each bound to its node id).
    """
    rows = build_node_rows(conversation_id, head, steps, now)
    stored, blobs = stored_rows(rows, cipher)
    yield from hold_conversation(conversation_id)
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
    except exc.IntegrityError:
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
            raise (yield from _missing_branch_or_conversation(conversation_id, branch))
        raise ConflictError(conversation_id, branch, head.node_id)
    return [node_from_row(conversation_id, _Row(row), row["payload"]) for row in rows]


class _Row:
    """Attribute access over an inserted row dict, so one mapper serves rows read and rows written."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        return self._values[name]


@attrs.frozen
class Replay:
    """The step texts of a branch from its root to ``head``, as a conversation last read or wrote them.

    Nodes are immutable, so while the branch head is still ``head`` these are exactly its history: a
    conversation keeps them and the next ``history`` checks only the head (one primary-key lookup)
    instead of walking the whole branch again.
    """

    head: Head
    payloads: list[str]

    def extended(self, head: Head, payloads: Sequence[str]) -> Replay:
        return Replay(head, [*self.payloads, *payloads])


def history(
    conversation_id: str, branch: str, cipher: DataCipher | None = None, known: Replay | None = None
) -> Op[Replay]:
    """The branch's steps as stored JSON texts (opened by ``cipher`` when encrypted), root first, and the
    head they end at. ``known``: what the caller last read; reused when the head has not moved."""
    if known is not None and known.head.node_id is not None:
        result = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        row = result.first()
        if row is not None and row.head_id == known.head.node_id:
            return known
    result = yield Exec(st.HISTORY, {"conversation_id": conversation_id, "branch": branch})
    rows = result.all()
    if not rows:
        check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        if check.first() is None:
            raise (yield from _missing_branch_or_conversation(conversation_id, branch))
        return Replay(EMPTY_HEAD, [])
    last = rows[-1]
    # By position: a Row's attribute access costs ten times its index (0.7 vs 0.07 us), and a replay reads
    # every step of the branch.
    if cipher is None:
        payloads = list(map(_PAYLOAD, rows))
    else:
        payloads = cipher.open_nodes(_IdPayload(canonical_id(row.id), row.payload) for row in rows)
    yield from put_back_media(conversation_id, payloads, list(map(_MEDIA, rows)), rows, cipher)
    head = Head(canonical_id(last.id), last.depth, last.total_tokens, canonical_id(last.exchange_id))
    return Replay(head, payloads)


_HISTORY_COLUMNS = list(st.HISTORY.selected_columns.keys())
_PAYLOAD = operator.itemgetter(_HISTORY_COLUMNS.index("payload"))
_MEDIA = operator.itemgetter(_HISTORY_COLUMNS.index("media"))


class _IdPayload(NamedTuple):
    id: str
    payload: str


def path(
    conversation_id: str, branch: str, node_id: str | None, cipher: DataCipher | None = None
) -> Op[list[Node]]:
    """Nodes from the root to ``node_id`` (or to the branch head when None)."""
    if node_id is None:
        result = yield Exec(st.PATH_FROM_BRANCH, {"conversation_id": conversation_id, "branch": branch})
    else:
        result = yield Exec(st.PATH_FROM_NODE, {"conversation_id": conversation_id, "node_id": node_id})
    nodes = yield from _nodes(conversation_id, result.all(), cipher)
    if not nodes:
        if node_id is not None:
            check = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
            if check.first() is None:
                raise ConversationNotFoundError(conversation_id)
            raise NodeNotFoundError(conversation_id, node_id)
        check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        if check.first() is None:
            raise (yield from _missing_branch_or_conversation(conversation_id, branch))
    return nodes


def node(conversation_id: str, node_id: str, cipher: DataCipher | None = None) -> Op[Node]:
    result = yield Exec(st.NODE, {"conversation_id": conversation_id, "node_id": node_id})
    row = result.first()
    if row is None:
        check = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
        if check.first() is None:
            raise ConversationNotFoundError(conversation_id)
        raise NodeNotFoundError(conversation_id, node_id)
    return (yield from _nodes(conversation_id, [row], cipher))[0]


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
    return Head(at, row.depth, row.total_tokens, row.exchange_id)


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
    found = yield from _nodes(conversation_id, result.all(), cipher)
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
    result = yield Exec(st.PATH_FROM_BRANCH, {"conversation_id": conversation_id, "branch": branch})
    ids = list(dict.fromkeys(row.exchange_id for row in result))
    if not ids:
        return []
    found = yield Exec(st.EXCHANGES, {"conversation_id": conversation_id, "exchange_ids": ids})
    by_id = {row.exchange_id: exchange_from_row(row) for row in found}
    return [by_id[i] for i in ids if i in by_id]


@attrs.frozen(kw_only=True)
class Window:
    """What a budget keeps of a branch.

    Attributes:
        pinned: The first exchange's rows when pinned and not already in ``rows``.
        rows: The kept rows, oldest first (from the window's start to the head).
        summary: ``(steps JSON text, tokens)`` stored for the window's start, when compaction applies.
        needs_summary: Compaction applies but no summary is stored yet for the window's start.
        history_tokens: Estimated tokens of pinned rows, rows and summary.
        calibration: The factor the estimates were scaled by.
        head: The head the window ends at.
    """

    pinned: list[Any]
    rows: list[Any]
    summary: tuple[str, int] | None
    needs_summary: bool
    history_tokens: int
    calibration: Calibration
    head: Head

    @property
    def start_id(self) -> str | None:
        return self.rows[0].id if self.rows else None


def _fetch_window(conversation_id: str, branch: str, threshold: int) -> Op[list[Any]]:
    result = yield Exec(
        st.WINDOW, {"conversation_id": conversation_id, "branch": branch, "threshold": threshold}
    )
    return list(result.all())


def _calibration(conversation_id: str, rows: Sequence[Any]) -> Op[Calibration]:
    ids = list(dict.fromkeys(row.exchange_id for row in reversed(rows)))[:200]
    result = yield Exec(st.CALIBRATION, {"conversation_id": conversation_id, "exchange_ids": ids})
    found = result.first()
    return Calibration() if found is None else Calibration.from_measurements(*found)


def _first_exchange(conversation_id: str, rows: Sequence[Any]) -> Op[list[Any]]:
    """The rows of the path's first exchange (the path through ``rows``)."""
    if rows[0].parent_id is None:
        root_exchange = rows[0].exchange_id
    else:
        roots = (yield Exec(st.ROOTS, {"conversation_id": conversation_id})).all()
        if len(roots) == 1:
            root_exchange = roots[0].exchange_id
        else:
            # The first message was edited: find which root this path has (a walk; rare).
            walk = yield Exec(st.PATH_FROM_NODE, {"conversation_id": conversation_id, "node_id": rows[0].id})
            root_exchange = walk.first().exchange_id
    found = yield Exec(st.EXCHANGE_NODES, {"conversation_id": conversation_id, "exchange_id": root_exchange})
    return list(found.all())


def window(  # noqa: PLR0917 -- an internal operation; every caller passes all of it
    conversation_id: str,
    branch: str,
    budget: TokenBudget,
    fixed_tokens: int,
    require_history: bool,
    head_hint: Head,
    cipher: DataCipher | None = None,
) -> Op[Window]:
    """Fetch and choose the window of a branch that fits ``budget`` (see ``convstore.budget``); ``cipher``
    opens the kept payloads of an encrypted conversation."""
    plain = available_tokens(budget, Calibration(), fixed_tokens=fixed_tokens)
    threshold = fetch_threshold(head_hint.total_tokens, plain)
    rows = yield from _fetch_window(conversation_id, branch, threshold)
    if not rows:
        check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        if check.first() is None:
            raise (yield from _missing_branch_or_conversation(conversation_id, branch))
        choose_window([], budget=budget, available=plain, require_history=require_history)
        return Window(
            pinned=[],
            rows=[],
            summary=None,
            needs_summary=False,
            history_tokens=0,
            calibration=Calibration(),
            head=EMPTY_HEAD,
        )
    head_row = rows[-1]
    head = Head(head_row.id, head_row.depth, head_row.total_tokens, head_row.exchange_id)
    calibration = yield from _calibration(conversation_id, rows)
    available = available_tokens(budget, calibration, fixed_tokens=fixed_tokens)
    if rows[0].parent_id is not None and fetch_threshold(head.total_tokens, available) < threshold:
        rows = yield from _fetch_window(
            conversation_id, branch, fetch_threshold(head.total_tokens, available)
        )
    choice = choose_window(rows, budget=budget, available=available, require_history=require_history)
    kept = rows[choice.start :] if choice.start is not None else []
    pinned: list[Any] = []
    if budget.pin_first_exchange and not (kept and kept[0].parent_id is None):
        first = yield from _first_exchange(conversation_id, rows)
        pinned_tokens = sum(row.token_count for row in first)
        first_ids = {row.id for row in first}
        after = [row for row in rows if row.id not in first_ids]
        available = available_tokens(
            budget, calibration, fixed_tokens=fixed_tokens, pinned_tokens=pinned_tokens
        )
        choice = choose_window(after, budget=budget, available=available, require_history=require_history)
        kept = after[choice.start :] if choice.start is not None else []
        pinned = first
    history_tokens = sum(row.token_count for row in pinned) + choice.history_tokens
    summary = None
    needs_summary = False
    dropped_something = (
        kept and kept[0].parent_id is not None and kept[0].parent_id not in {r.id for r in pinned}
    )
    if budget.compact is not None and dropped_something:
        found = (yield Exec(st.SUMMARY, {"conversation_id": conversation_id, "node_id": kept[0].id})).first()
        if found is None:
            needs_summary = True
        else:
            text = found.payload if cipher is None else cipher.open("summary", kept[0].id, found.payload)
            summary = (text, found.token_count)
            history_tokens += found.token_count
    if cipher is not None or any(row.media is not None for row in (*pinned, *kept)):
        pinned = yield from _opened(conversation_id, pinned, cipher)
        kept = yield from _opened(conversation_id, kept, cipher)
    return Window(
        pinned=pinned,
        rows=kept,
        summary=summary,
        needs_summary=needs_summary,
        history_tokens=history_tokens,
        calibration=calibration,
        head=head,
    )


def _opened(conversation_id: str, rows: Sequence[Any], cipher: DataCipher | None) -> Op[list[Any]]:
    """Window rows with their payloads as written: opened, media put back."""
    texts = yield from payload_texts(conversation_id, rows, cipher)
    return [_Row({**row._mapping, "payload": text}) for row, text in zip(rows, texts, strict=True)]


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
