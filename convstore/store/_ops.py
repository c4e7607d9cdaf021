"""The store's operations, written once for the sync and the async store, gathered from their modules.

Each operation is a generator: it yields ``Exec`` statements, receives each one's result, and returns a value.
A database error on a statement is thrown back in at that ``yield``, so the operation decides what it means
(an insert that breaks a foreign key means the conversation is gone, for instance). Everything else is pure:
building rows, mapping rows to model objects, the tree rules.

By concern, imports pointing one way (``_rows`` is shared; nothing imports this module back):

- ``_conversations``: a conversation's record: create, open, list, purge, delete;
- ``_writes``: appends and summaries;
- ``_forks``: forks and edits;
- ``_purge``: purges, many conversations deleted in one transaction;
- ``_reads``: branch paths by segments, history, nodes, the tree, branches, exchanges;
- ``_windows``: budget windows;
- ``_keys``: the data keys kept in a database, and their rotation.

One operation across concerns lives here: ``open_branch``, a conversation's record with its history.
"""

from __future__ import annotations

import attrs

from convstore._ids import canonical_id
from convstore.store import _reads
from convstore.store._conversations import (
    DELETED,
    KEPT,
    KEY_WAL_BUSY,
    SETTINGS,
    Loaded,
    create_conversation,
    delete_conversation,
    info_from_row,
    list_conversations,
    load,
    loaded,
    seal_settings,
    stale_conversations,
    unreadable,
    visible,
    withheld_info,
)
from convstore.store._engine import Batch, Exec, Op
from convstore.store._forks import fork, known_head
from convstore.store._keys import encrypted_conversations, rewrap
from convstore.store._paths import HEAD_SEGMENT_BYTES_SCAN
from convstore.store._purge import delete_batch
from convstore.store._reads import (
    branch_from_row,
    chain_point,
    exchange,
    exchange_from_row,
    exchanges_of_branch,
    list_branches,
    node,
    tree,
)
from convstore.store._rows import EMPTY_HEAD, Head, payload_texts, put_back_media
from convstore.store._statements import LOAD_CONVERSATION
from convstore.store._windows import Window
from convstore.store._writes import Appended, append, build_node_rows, store_summary

__all__ = [
    "DELETED",
    "EMPTY_HEAD",
    "KEPT",
    "KEY_WAL_BUSY",
    "PREFETCH_STEPS",
    "SETTINGS",
    "Appended",
    "Head",
    "Loaded",
    "Opened",
    "Window",
    "append",
    "branch_from_row",
    "build_node_rows",
    "chain_point",
    "create_conversation",
    "delete_batch",
    "delete_conversation",
    "encrypted_conversations",
    "exchange",
    "exchange_from_row",
    "exchanges_of_branch",
    "fork",
    "info_from_row",
    "known_head",
    "list_branches",
    "list_conversations",
    "load",
    "node",
    "open_branch",
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


# Opening a branch this deep or less reads its history too (``open_branch``).
PREFETCH_STEPS = 256


@attrs.frozen
class Opened:
    """An opened branch: the conversation's row and head (``_conversations.load``), and the branch's
    history when it was read in the same round trip (None: read it when needed)."""

    loaded: Loaded
    replay: _reads.Replay | None


def open_branch(
    conversation_id: str,
    branch: str,
    owner: str | None = None,
    *,
    inline_keys: bool = False,
    prefetch: int = PREFETCH_STEPS,
) -> Op[Opened]:
    """``_conversations.load``, and with it, for a plaintext branch of fewer than ``prefetch`` steps, its
    history: one batch (one round trip on PostgreSQL; on SQLite two statements without a transaction,
    run ``single``). A conversation opened for a turn then reads nothing more before the turn's write.

    The two statements may see different snapshots (each its own): the history is kept
    only when it ends at the head the record names and holds every step of its path, else it is left for
    the turn to read (as it is for a branch that forked above its head's segment).
    """
    params = {"conversation_id": conversation_id, "branch": branch, "owner": owner}
    scan = Exec(HEAD_SEGMENT_BYTES_SCAN, {**params, "limit": prefetch}, rows=True)
    record, rows = yield Batch((Exec(LOAD_CONVERSATION, params), scan))
    found = yield from loaded(conversation_id, branch, record.first(), inline_keys=inline_keys)
    head = found.head
    if found.row.encryption is not None:
        return Opened(found, None)
    if head.node_id is None:
        return Opened(found, _reads.Replay(EMPTY_HEAD, []))
    if len(rows) != head.depth + 1 or canonical_id(rows[-1][_reads.HISTORY_ID]) != head.node_id:
        return Opened(found, None)
    if any(row[_reads.HISTORY_MEDIA] is not None for row in rows):
        # Media are put back from their own table, image by image: an open (for a page, a tree, a list
        # of nodes) must not read them all. The turn reads them, if it comes.
        return Opened(found, None)
    return Opened(found, (yield from _reads.replay_of_bytes(conversation_id, head, rows)))
