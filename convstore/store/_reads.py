"""Branch reads by flat range scans: history, paths and budget windows.

Every node names its segment (migration 0008): a chain in which each node is the child of the one before it,
one level down, whose id is the id of its first node. A path from the root is then a short list of
(segment, top depth) pairs, one per fork point on the way up, read by one small recursive statement
(``SEGMENTS_FROM_*``); each segment is then one indexed range scan in depth order, root segment first, that
the unique index ``(segment_id, conversation_id, depth)`` serves without a sort. Nothing walks parent
pointers a step at a time, and nothing sorts the whole path.

The statements of one read may see different snapshots (PostgreSQL, READ COMMITTED). Nodes are immutable
and only whole conversations are deleted, so the only change a read can meet is its conversation's delete:
a segment that returns fewer rows than its depth range holds is that (``ConversationNotFoundError``), or,
while the conversation is still there, a broken segment (``CorruptionError``: see ``Store.check()``).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

from convstore._ids import canonical_id
from convstore._uris import FilePosition
from convstore.errors import (
    ConversationNotFoundError,
    CorruptionError,
    NodeNotFoundError,
)
from convstore.model import Branch, Exchange, Node, Tree
from convstore.store import _paths as paths
from convstore.store import _statements as st
from convstore.store._crypto import DataCipher
from convstore.store._engine import Exec, Op
from convstore.store._rows import (
    EMPTY_HEAD,
    Head,
    Replay,
    json_or_none,
    missing_branch_or_conversation,
    nodes_of,
    put_back_media,
)

__all__ = [
    "HISTORY_ID",
    "HISTORY_MEDIA",
    "Replay",
    "Segment",
    "branch_from_row",
    "chain_point",
    "exchange",
    "exchange_from_row",
    "exchanges_of_branch",
    "gone",
    "history",
    "list_branches",
    "node",
    "path",
    "path_exchange_ids",
    "path_files",
    "replay_of_bytes",
    "segments",
    "starts",
    "tree",
]


class Segment(NamedTuple):
    """One segment of a path: its id, the depth where the path leaves it, and the running total there."""

    segment_id: str
    top: int
    total: int


def segments(
    conversation_id: str, branch: str | None = None, node_id: str | None = None
) -> Op[list[Segment]]:
    """The segments of the path to ``node_id`` (or to ``branch``'s head), root first; empty when there is no
    such node (or the branch is empty or missing)."""
    if node_id is None:
        params: dict[str, object] = {"conversation_id": conversation_id, "branch": branch}
        result = yield Exec(paths.SEGMENTS_FROM_BRANCH, params)
    else:
        params = {"conversation_id": conversation_id, "node_id": node_id}
        result = yield Exec(paths.SEGMENTS_FROM_NODE, params)
    return [Segment(*row) for row in result]


def starts(found: Sequence[Segment]) -> list[int]:
    """The depth of each segment's first node on the path (the one after the previous segment's top)."""
    return [0, *(segment.top + 1 for segment in found[:-1])][: len(found)]


def gone(conversation_id: str, segment_id: str) -> Op[Exception]:
    """A segment returned fewer rows than its depth range holds: deleted meanwhile, or broken."""
    check = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
    if check.first() is None:
        return ConversationNotFoundError(conversation_id)
    return CorruptionError(
        f"segment {segment_id} of the path does not hold every depth it should (see Store.check())",
        conversation_id,
    )


def _scan(
    conversation_id: str, found: Sequence[Segment], statement: Any, *, rows: bool = False
) -> Op[list[Any]]:
    """The path's rows, root first: one range scan a segment (``rows``: the driver's tuples)."""
    scanned: list[Any] = []
    for segment, start in zip(found, starts(found), strict=True):
        params = {"conversation_id": conversation_id, "segment_id": segment.segment_id, "top": segment.top}
        result = yield Exec(statement, params, rows=rows)
        part = result if rows else result.all()
        if len(part) != segment.top - start + 1:
            raise (yield from gone(conversation_id, segment.segment_id))
        scanned += part
    return scanned


# The columns of HEAD_HISTORY_BYTES_SCAN: HISTORY_BYTES_SCAN's, then the head's depth, total and segment.
_COLUMN = {name: i for i, name in enumerate(paths.HEAD_HISTORY_BYTES_SCAN.selected_columns.keys())}
HISTORY_ID, _EXCHANGE_ID, _PAYLOAD, HISTORY_MEDIA, _FILES, _FRESH = (
    _COLUMN[name] for name in ("id", "exchange_id", "payload", "media", "files", "files_fresh")
)
_HEAD_DEPTH, _HEAD_TOTAL, _HEAD_SEGMENT = (
    _COLUMN[name] for name in ("head_depth", "head_total", "head_segment")
)
_PAYLOADS = operator.itemgetter(_PAYLOAD)
_MEDIAS = operator.itemgetter(HISTORY_MEDIA)


class _IdPayload(NamedTuple):
    id: str
    payload: str


class _IdRow(NamedTuple):  # what put_back_media names in its error
    id: Any


def _utf8(value: Any) -> bytes:
    """A payload the driver gave as bytes (or, on a driver that reads ``bytea`` otherwise, its buffer or
    text) as bytes."""
    if isinstance(value, str):
        return value.encode()
    return value if type(value) is bytes else bytes(value)


def history(
    conversation_id: str, branch: str, cipher: DataCipher | None = None, known: Replay | None = None
) -> Op[Replay]:
    """The branch's steps as the UTF-8 bytes of their stored JSON texts (opened by ``cipher`` when
    encrypted), root first, and the head they end at. ``known``: what the caller last read; reused when the
    head has not moved.

    A plaintext branch is read as bytes, as the driver's rows: no text decoded, no ``Row`` built. An
    encrypted one is read as text, opened and encoded.
    """
    if known is not None and known.head.node_id is not None:
        result = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        row = result.first()
        if row is not None and row.head_id == known.head.node_id:
            return known
    if cipher is None:
        params = {"conversation_id": conversation_id, "branch": branch}
        rows = yield Exec(paths.HEAD_HISTORY_BYTES_SCAN, params, rows=True)
        if rows:
            last = rows[-1]
            tip = Segment(canonical_id(last[_HEAD_SEGMENT]), last[_HEAD_DEPTH], last[_HEAD_TOTAL])
            head = _head_at(tip, last[HISTORY_ID], last[_EXCHANGE_ID])
            if len(rows) != tip.top + 1:  # the branch forked above its head's segment: the segments above
                above = (yield from segments(conversation_id, node_id=head.node_id))[:-1]
                rows = [
                    *(yield from _scan(conversation_id, above, paths.HISTORY_BYTES_SCAN, rows=True)),
                    *rows,
                ]
                if not above or len(rows) != tip.top + 1:
                    raise (yield from gone(conversation_id, tip.segment_id))
            return (yield from replay_of_bytes(conversation_id, head, rows))
    found = yield from segments(conversation_id, branch)
    if not found:
        check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        if check.first() is None:
            raise (yield from missing_branch_or_conversation(conversation_id, branch))
        return Replay(EMPTY_HEAD, [])
    if cipher is None:
        rows = yield from _scan(conversation_id, found, paths.HISTORY_BYTES_SCAN, rows=True)
        head = _head_at(found[-1], rows[-1][HISTORY_ID], rows[-1][_EXCHANGE_ID])
        return (yield from replay_of_bytes(conversation_id, head, rows))
    rows = yield from _scan(conversation_id, found, paths.HISTORY_SCAN)
    texts = cipher.open_nodes(_IdPayload(canonical_id(row.id), row.payload) for row in rows)
    yield from put_back_media(conversation_id, texts, [row.media for row in rows], rows, cipher)
    payloads = [text.encode() for text in texts]
    files = tuple(
        (i, canonical_id(row.id), tuple(json.loads(row.files))) for i, row in enumerate(rows) if row.files
    )
    fresh = _fresh(rows[files[0][0]].files_fresh) if files else None
    return Replay(_head_at(found[-1], rows[-1].id, rows[-1].exchange_id), payloads, files, fresh)


def replay_of_bytes(conversation_id: str, head: Head, rows: list[Any]) -> Op[Replay]:
    """The replay of a plaintext path from the driver's rows of ``HISTORY_BYTES_SCAN``, root first."""
    payloads = list(map(_PAYLOADS, rows))
    if type(payloads[0]) is not bytes:
        payloads = list(map(_utf8, payloads))
    medias = list(map(_MEDIAS, rows))
    if any(medias):
        yield from _put_back_media_bytes(conversation_id, payloads, medias, rows)
    files = tuple(
        (i, canonical_id(row[HISTORY_ID]), tuple(json.loads(row[_FILES])))
        for i, row in enumerate(rows)
        if row[_FILES] is not None
    )
    fresh = _fresh(rows[files[0][0]][_FRESH]) if files else None
    return Replay(head, payloads, files, fresh)


def _fresh(value: Any) -> datetime | None:
    """The ``files_fresh`` column (text: SQLite's naive UTC, PostgreSQL's with its offset) as a datetime."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _put_back_media_bytes(
    conversation_id: str, payloads: list[bytes], medias: list[Any], rows: Sequence[Any]
) -> Op[None]:
    """``put_back_media`` on a replay's bytes (only the rows with media carry their node's id)."""
    named = [_IdRow(row[HISTORY_ID]) for row in rows]
    yield from put_back_media(conversation_id, payloads, medias, named, None)


def path(
    conversation_id: str,
    branch: str,
    node_id: str | None,
    cipher: DataCipher | None = None,
    *,
    media: bool = True,
) -> Op[list[Node]]:
    """Nodes from the root to ``node_id`` (or to the branch head when None)."""
    found = yield from segments(conversation_id, branch, node_id)
    if not found:
        if node_id is not None:
            check = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
            if check.first() is None:
                raise ConversationNotFoundError(conversation_id)
            raise NodeNotFoundError(conversation_id, node_id)
        check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        if check.first() is None:
            raise (yield from missing_branch_or_conversation(conversation_id, branch))
        return []
    rows = yield from _scan(conversation_id, found, paths.PATH_SCAN)
    return (yield from nodes_of(conversation_id, rows, cipher, media=media))


def path_files(conversation_id: str, branch: str) -> Op[tuple[FilePosition, ...]]:
    """``(index, node id, uris)`` of each node of the branch that names Files API uris, root first: the
    nodes' ``files`` column only, never a payload or its media."""
    found = yield from segments(conversation_id, branch)
    if not found:
        check = yield Exec(st.BRANCH_EXISTS, {"conversation_id": conversation_id, "branch": branch})
        if check.first() is None:
            raise (yield from missing_branch_or_conversation(conversation_id, branch))
        return ()
    rows = yield from _scan(conversation_id, found, paths.PATH_FILES_SCAN)
    return tuple(
        (i, canonical_id(row.id), tuple(json.loads(row.files))) for i, row in enumerate(rows) if row.files
    )


def path_exchange_ids(conversation_id: str, branch: str) -> Op[list[str]]:
    """The exchange ids along a branch, oldest first, once each (empty for an empty or missing branch)."""
    found = yield from segments(conversation_id, branch)
    rows = yield from _scan(conversation_id, found, paths.PATH_EXCHANGES_SCAN)
    return list(dict.fromkeys(row.exchange_id for row in rows))


def node(
    conversation_id: str, node_id: str, cipher: DataCipher | None = None, *, media: bool = True
) -> Op[Node]:
    result = yield Exec(st.NODE, {"conversation_id": conversation_id, "node_id": node_id})
    row = result.first()
    if row is None:
        check = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
        if check.first() is None:
            raise ConversationNotFoundError(conversation_id)
        raise NodeNotFoundError(conversation_id, node_id)
    return (yield from nodes_of(conversation_id, [row], cipher, media=media))[0]


def branch_from_row(conversation_id: str, row: Any) -> Branch:
    return Branch(
        conversation_id=conversation_id,
        name=row.name,
        head_id=row.head_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def list_branches(conversation_id: str) -> Op[list[Branch]]:
    result = yield Exec(st.LIST_BRANCHES, {"conversation_id": conversation_id})
    found = [branch_from_row(conversation_id, row) for row in result]
    if not found:
        check = yield Exec(st.CONVERSATION_EXISTS, {"conversation_id": conversation_id})
        if check.first() is None:
            raise ConversationNotFoundError(conversation_id)
    return found


def tree(conversation_id: str, cipher: DataCipher | None = None, *, media: bool = True) -> Op[Tree]:
    result = yield Exec(st.TREE_NODES, {"conversation_id": conversation_id})
    found = yield from nodes_of(conversation_id, result.all(), cipher, media=media)
    branch_list = yield from list_branches(conversation_id)
    return Tree(conversation_id=conversation_id, nodes=found, branches=branch_list)


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
        usage=json_or_none(row.usage),
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
    ids = yield from path_exchange_ids(conversation_id, branch)
    if not ids:
        return []
    found = yield Exec(st.EXCHANGES, {"conversation_id": conversation_id, "exchange_ids": ids})
    by_id = {row.exchange_id: exchange_from_row(row) for row in found}
    return [by_id[i] for i in ids if i in by_id]


def _head_at(segment: Segment, node_id: Any, exchange_id: Any) -> Head:
    """The head of a path whose last segment is ``segment``, at its last node (ids as the driver gave
    them)."""
    node, exchange = canonical_id(node_id), canonical_id(exchange_id)
    return Head(node, segment.top, segment.total, exchange, segment.segment_id)
