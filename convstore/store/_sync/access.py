# Generated from convstore/store/_async/access.py by scripts/unasync.py: do not edit.
"""What the conversation layer uses of the store's objects beyond their public API: the package-internal
interface between the store layer and ``convstore.conversation``, whose public ``Store`` and
``Conversation`` extend this package's ``_StoreBase`` and ``_ConversationBase`` with the API
calls. Written once, for asyncio; ``scripts/unasync.py`` generates the blocking twin in ``store/_sync/``.

The conversation layer reads no underscore member of a store object (tests/architecture checks it): what it
needs besides the public methods and properties is here, by name. A conversation's state stays the store's
to keep (the head it compares and swaps against, the history it replays, its cipher); these functions hand
it out, or run the store's own steps, and say what each is for.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from convstore.budget import TokenBudget
from convstore.model import Node
from convstore.store import _ops, _reads, _windows
from convstore.store._crypto import DataCipher
from convstore.store._engine import Op
from convstore.store._sync.conversation import _ConversationBase
from convstore.store._sync.core import _StoreCore
from convstore.store._sync.store import _StoreBase

__all__ = [
    "append",
    "cipher",
    "files_sent",
    "fork",
    "head",
    "history_texts",
    "replay",
    "run",
    "store_of",
    "window",
]

T = TypeVar("T")
CB = TypeVar("CB", bound=_ConversationBase)


def store_of(conversation: _ConversationBase) -> _StoreBase[Any]:
    """The store a conversation was opened from (its settings: ``limits``, ``counter``, ``lifecycle``...)."""
    return conversation._store


def run(target: _StoreCore | _ConversationBase, op: Op[T], *, write: bool = False) -> T:
    """Run one store operation (from ``_ops``, ``_files``, ``_reads``...) in one transaction of the store
    (``target``, or the store of the conversation ``target``); ``write`` for one that writes."""
    store = target._store if isinstance(target, _ConversationBase) else target
    return store._run(op, write=write)


def head(conversation: _ConversationBase) -> _ops.Head:
    """The branch head the conversation last saw: what a turn goes after, and the next append compares and
    swaps against (``head.total_tokens``: the history's tokens)."""
    return conversation._head


def cipher(conversation: _ConversationBase) -> DataCipher | None:
    """The conversation's cipher (its data key), to seal what is stored for it; None for plaintext."""
    return conversation._cipher


def replay(conversation: _ConversationBase) -> _reads.Replay | None:
    """The branch's stored step texts as last read or written (with the Files API uris they name), or None:
    kept for the next read while the head has not moved."""
    return conversation._replay


def files_sent(conversation: _ConversationBase) -> dict[str, tuple[bytes | None, datetime]]:
    """The Files API uris of the history the conversation sent lately: for each, the pair sent in its place
    (None: itself) and until when that lives. The conversation layer keeps it (reads, adds, forgets)."""
    return conversation._files


def history_texts(conversation: _ConversationBase) -> list[bytes]:
    """The branch's stored step texts, root first, as UTF-8 bytes (kept with their head for the next read)."""
    return conversation._history_texts()


def window(
    conversation: _ConversationBase, budget: TokenBudget, *, fixed_tokens: int, require_history: bool
) -> _windows.Window:
    """The part of the branch's history that fits ``budget`` besides ``fixed_tokens`` (summarised with the
    budget's hook when it asks for it); the conversation's head moves to the one read."""
    return conversation._window(budget, fixed_tokens=fixed_tokens, require_history=require_history)


def append(
    conversation: _ConversationBase,
    prepared: list[tuple[str, str, int]],
    exchange: Mapping[str, Any] | None,
    head: _ops.Head | None = None,
    *,
    exchange_id: str | None = None,
) -> list[Node]:
    """Write prepared steps (and the exchange's record) after ``head`` (default: the head last seen), by
    compare-and-swap: ``append`` of steps already checked and counted (see ``_ConversationBase``)."""
    return conversation._append(prepared, exchange, head, exchange_id=exchange_id)


def fork(conversation: CB, at: str | None, branch: str | None, *, before: bool = False) -> CB:
    """The conversation on a new branch at node ``at`` (None: an empty branch; ``before``: at its parent),
    named ``branch`` or a new name."""
    return conversation._fork(at, branch, before=before)
