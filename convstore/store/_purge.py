"""Purge in batches: many untouched conversations deleted in one transaction, each with every guarantee of
``delete_conversation`` (operations: see ``_ops``).

A batch locks its conversations (FOR UPDATE, in id order, so two purges never deadlock), then tests again,
in a new statement and so a new snapshot, which are still untouched: a turn that committed before the lock
is seen and its conversation kept; a turn that comes after waits for the lock and then finds its
conversation gone. The kept ones' data keys go first (crypto-shredding), then every row of theirs, table by
table (``conversation_id IN (...)``, one statement a table), then their ids join the erasure list. A failure
rolls the whole batch back: none of its conversations is deleted, and the store reports the batches before
it as done (``PurgeIncompleteError``).

Batches are used where a rollback undoes everything: plaintext conversations and those whose keys are in
the store's own database. A conversation whose key lives in a ``key_store`` is deleted alone (the key
store's ``delete_key`` is outside the transaction, and cannot be rolled back with it), as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import sqlalchemy as sa

from convstore.store import _statements as st
from convstore.store._engine import Exec, Op
from convstore.store._schema import branches as b
from convstore.store._schema import conversations as c
from convstore.store._schema import erased as er
from convstore.store._schema import exchanges as x
from convstore.store._schema import files as fl
from convstore.store._schema import keys as k
from convstore.store._schema import media as m
from convstore.store._schema import nodes as n
from convstore.store._schema import search as se
from convstore.store._schema import summaries as sm

__all__ = ["BATCH", "batches", "delete_batch", "report"]

BATCH = 256  # the most conversations a transaction: well inside every driver's parameter limit

_IDS: sa.BindParameter[object] = sa.bindparam("ids", expanding=True)
_OWNER = sa.bindparam("owner", type_=sa.String(255))
_CUTOFF = sa.bindparam("cutoff", type_=c.c.created_at.type)
# The batch's conversations that still exist (and are the owner's), locked, in id order.
LOCK_MANY = (
    sa.select(c.c.id)
    .where(c.c.id.in_(_IDS), sa.or_(_OWNER.is_(None), c.c.owner == _OWNER))
    .order_by(c.c.id)
    .with_for_update(of=c)
)
# Those still untouched since the cutoff (``_statements._STALE``), with their encryption scheme.
STALE_MANY = sa.select(c.c.id, c.c.encryption).where(
    c.c.id.in_(_IDS),
    c.c.created_at < _CUTOFF,
    ~sa.exists().where(b.c.conversation_id == c.c.id, b.c.updated_at >= _CUTOFF),
)
# Children first: search rows refer to nodes; nodes, branches and the rest to the conversation.
DELETE_MANY = tuple(
    sa.delete(table).where(table.c.conversation_id.in_(_IDS)) for table in (se, sm, x, b, n, m, fl)
)
DELETE_CONVERSATIONS = sa.delete(c).where(c.c.id.in_(_IDS))
DELETE_KEYS = sa.delete(k).where(k.c.conversation_id.in_(_IDS))
ERASED_MANY = sa.select(er.c.conversation_id).where(er.c.conversation_id.in_(_IDS))


def batches(ids: Sequence[str], *, together: bool) -> list[list[str]]:
    """``ids`` in batches (``together``) of 1, 2, 4 ... up to ``BATCH`` conversations, or one by one: a
    purge of a few is reported (and interrupted) about conversation by conversation, a large one costs a
    transaction (a commit, an fsync) per ``BATCH``."""
    out: list[list[str]] = []
    size, start = 1, 0
    while start < len(ids):
        out.append(list(ids[start : start + size]))
        start += size
        if together:
            size = min(size * 2, BATCH)
    return out


def report(done: Sequence[str], on_deleted: Callable[[str], None]) -> None:
    """Tell ``on_deleted`` of each conversation a committed batch deleted, every one of them even if a
    call is interrupted (Ctrl-C in a command's progress callback): the first exception is raised after the
    last call, so an interrupted purge has still told every delete that committed."""
    raised: BaseException | None = None
    for conversation_id in done:
        try:
            on_deleted(conversation_id)
        except BaseException as error:  # raised again below, after the other reports
            raised = raised or error
    if raised is not None:
        raise raised


def delete_batch(
    ids: Sequence[str], cutoff: datetime, owner: str | None = None, *, inline_keys: bool = True
) -> Op[list[str]]:
    """Delete those of ``ids`` that are still untouched since ``cutoff`` (and ``owner``'s), in one
    transaction; the ids deleted, in id order. ``inline_keys``: data keys are kept in this database (none of
    these conversations has its key in a ``key_store``: the caller deletes those one at a time).
    """
    locked = [row.id for row in (yield Exec(LOCK_MANY, {"ids": list(ids), "owner": owner}))]
    if not locked:
        return []
    stale = (yield Exec(STALE_MANY, {"ids": locked, "cutoff": cutoff})).all()
    doomed = sorted(row.id for row in stale)
    if not doomed:
        return []
    params = {"ids": doomed}
    if inline_keys and any(row.encryption is not None for row in stale):
        yield Exec(DELETE_KEYS, params)  # first: crypto-shredding, then the rows
    for statement in DELETE_MANY:
        yield Exec(statement, params)
    yield Exec(DELETE_CONVERSATIONS, params)
    # Their ids, kept so that an old export cannot bring them back unasked (an id imported back after an
    # earlier delete has its record already).
    known = {row.conversation_id for row in (yield Exec(ERASED_MANY, params))}
    now = datetime.now(timezone.utc)
    missing = [{"conversation_id": cid, "erased_at": now} for cid in doomed if cid not in known]
    if missing:
        yield Exec(st.INSERT_ERASED, missing)
    return doomed
