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
"""

from __future__ import annotations

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
    seal_settings,
    stale_conversations,
    unreadable,
    visible,
    withheld_info,
)
from convstore.store._forks import fork
from convstore.store._keys import encrypted_conversations, rewrap
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
from convstore.store._windows import Window
from convstore.store._writes import Appended, append, build_node_rows, store_summary

__all__ = [
    "DELETED",
    "EMPTY_HEAD",
    "KEPT",
    "KEY_WAL_BUSY",
    "SETTINGS",
    "Appended",
    "Head",
    "Loaded",
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
    "list_branches",
    "list_conversations",
    "load",
    "node",
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
