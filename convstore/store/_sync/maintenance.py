# Generated from convstore/store/_async/maintenance.py by scripts/unasync.py: do not edit.
"""The store's upkeep, a part of ``_StoreBase``: the invariants checked, deletes and purges (with the
WAL emptied after them), the planner's statistics. Written once, for asyncio; ``scripts/unasync.py``
generates the blocking twin in ``store/_sync/``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import attrs

from convstore.errors import (
    ConversationNotFoundError,
    ConvstoreError,
    DatabaseError,
    DataKeyNotFoundError,
    DecryptionError,
    InvalidAgeError,
    KeyNotFoundError,
    PurgeIncompleteError,
    ShredPendingError,
    StoreBusyError,
)
from convstore.store import _check, _listing, _ops, _purge, _search
from convstore.store._crypto import ENCRYPTION
from convstore.store._engine import checkpoint
from convstore.store._prepare import utcnow, valid_id
from convstore.store._sync.core import _StoreCore

__all__ = ["_Maintenance"]


class _Maintenance(_StoreCore):
    """Checks, deletion and purge, a part of ``_StoreBase`` (``store.py``)."""

    def check(
        self, checks: Sequence[_check.Check] | None = None, *, repair: bool = False
    ) -> _check.CheckReport:
        """Verify every invariant of the stored trees, in one read transaction, by a few bulk queries.

        Parents exist in the same conversation, depths are consecutive, running token totals add up, branch
        heads exist, each exchange is one unbroken chain and its record has its steps, every media string a
        step names is stored and matches its hash. With a keyring, every sealed value of every encrypted
        conversation is decrypted too (settings, payloads, summaries, media; one read transaction per
        conversation); without one, ``report.unopened`` counts the conversations left unverified. The
        report names ids and the broken rule, never content.

        Args:
            checks: The checks to run (default: ``DEFAULT_CHECKS``); add your own beside them.
            repair: Finish the deletes that a key store outside the database got ahead of: every
                conversation reported ``missing_data_key`` (its data key deleted, its rows left, as when a
                process is killed between a ``SQLKeyStore``'s commit and the rows') is deleted, rows and
                all, and listed in ``report.repaired`` instead of ``problems``. No one could read it. Make
                sure the store is given its own key store first: pointed at another one, every encrypted
                conversation looks shredded. Needs the keyring (as finding them does).

        Returns:
            The report; ``report.ok`` when nothing is wrong.

        Raises:
            ValueError: the store is bound to an owner (the check reads every conversation).
            ShredPendingError: SQLite: repaired, but the WAL could not be emptied (see ``checkpoint``).
        """
        if self.owner is not None:
            raise ValueError("check() reads every conversation: use a store without an owner")
        report = self._run(_check.run_checks(checks))
        if self.keyring is None:
            return attrs.evolve(report, unopened=report.encrypted)
        problems = list(report.problems)
        for conversation_id in self._run(_ops.encrypted_conversations(None)):
            problems.extend(self._sealed_problems(conversation_id))
        repaired: list[str] = []
        if repair:
            for problem in problems:
                if problem.kind == "missing_data_key":
                    with contextlib.suppress(ConversationNotFoundError):
                        self._delete(problem.conversation_id)
                    repaired.append(problem.conversation_id)
            problems = [problem for problem in problems if problem.conversation_id not in repaired]
            self._shred_wal(repaired, key_wal_busy=False)
        return attrs.evolve(report, problems=tuple(problems), repaired=tuple(repaired))

    def _sealed_problems(self, conversation_id: str) -> list[_check.Problem]:
        """Decrypt everything of one encrypted conversation; what fails, as problems."""

        def problem(kind: str, detail: str = "") -> list[_check.Problem]:
            return [
                _check.Problem(
                    kind=kind,
                    conversation_id=conversation_id,
                    subject="conversation",
                    id=conversation_id,
                    detail=detail,
                )
            ]

        try:
            cipher = self._cipher(conversation_id, ENCRYPTION)
        except DataKeyNotFoundError:
            return problem("missing_data_key")
        except KeyNotFoundError as error:
            return problem("unknown_key", f"key {error.key_id}")
        except DecryptionError:
            return problem("undecryptable", "data key")
        if cipher is None:  # not reached: the scheme passed is an encrypted one
            return []
        return self._run(_check.sealed_problems(conversation_id, cipher))

    def refresh_statistics(self) -> None:
        """PostgreSQL: ``ANALYZE`` the tables, after a bulk import (before a table's first ANALYZE, the
        planner may read a long conversation's history with a hash join over all of it at every level).
        Elsewhere: nothing."""
        if self._engine.dialect.name == "postgresql":
            self._run(_listing.analyze(), write=True)

    def stale_conversations(self, *, older_than: timedelta | datetime) -> list[str]:
        """The ids of the conversations ``purge(older_than=...)`` would delete now, oldest first: created
        before the cutoff, with no branch moved since. Nothing is deleted.

        Raises:
            InvalidAgeError: as ``purge``.
        """
        return self._run(_ops.stale_conversations(_cutoff(older_than), self.owner))

    def purge(
        self, *, older_than: timedelta | datetime, on_deleted: Callable[[str], None] | None = None
    ) -> int:
        """Delete every conversation (of this store's owner) untouched for ``older_than``: created before
        the cutoff and with no branch moved since. Each is deleted as ``delete_conversation`` does, in a
        transaction that first locks it and tests again that it is still untouched: a conversation that
        receives a turn while the purge runs is kept, with the turn, and a turn that comes after its delete
        gets ``ConversationNotFoundError``. "Moved" is the time its writer stamped on the turn.

        Args:
            older_than: A positive age (``timedelta(days=30)``) or a UTC cutoff time in the past.
            on_deleted: Called with each conversation's id once its delete committed, as the purge goes
                (an interrupted purge has then told which ones it deleted).

        Returns:
            How many conversations were deleted.

        Raises:
            InvalidAgeError: ``older_than`` is zero or negative, a cutoff in the future, or a naive datetime
                (each would delete conversations being written now).
            ShredPendingError: SQLite: they were deleted, but another connection kept the WAL busy past the
                busy timeout (or the checkpoint failed: a full disk), so the ``-wal`` file still holds what
                was deleted (see ``checkpoint``).
            PurgeIncompleteError: a delete failed (a full disk, a lost connection) after others were done:
                ``error.deleted_ids`` names those, ``error.error`` the failure.
        """
        cutoff = _cutoff(older_than)
        stale = self._run(_ops.stale_conversations(cutoff, self.owner))
        deleted: list[str] = []
        key_wal_busy = False
        # In batches, one transaction each (``_purge``); one by one when a key_store holds the keys (its
        # delete_key cannot roll back), and on Citus (a batch's rows lie on several shards, which Citus
        # does not lock FOR UPDATE in one statement).
        together = self.key_store is None and not self._is_routed()
        for batch in _purge.batches(stale, together=together):
            try:
                if together:
                    done = self._run(_ops.delete_batch(batch, cutoff, self.owner), write=True)
                else:
                    outcome = self._delete(batch[0], stale_before=cutoff)
                    done = [] if outcome == _ops.KEPT else batch
                    key_wal_busy = key_wal_busy or outcome == _ops.KEY_WAL_BUSY
            except ConversationNotFoundError:
                continue  # deleted meanwhile
            except ConvstoreError as error:
                if not deleted:
                    raise
                # Say what is gone; and still empty the WAL of it, as far as that goes.
                with contextlib.suppress(ConvstoreError):
                    self._shred_wal(deleted, key_wal_busy=key_wal_busy)
                raise PurgeIncompleteError(deleted, error) from error
            deleted += done
            if on_deleted is not None:
                _purge.report(done, on_deleted)
        self._shred_wal(deleted, key_wal_busy=key_wal_busy)
        return len(deleted)

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete a conversation with all its nodes and branches.

        One transaction locks the conversation, destroys an encrypted conversation's data key
        (crypto-shredding; a ``key_store``'s ``delete_key`` is called inside it), then deletes every row. An
        append that commits first is deleted with it; one that comes after gets
        ``ConversationNotFoundError``. On SQLite the WAL is then emptied into the database file and
        truncated (``checkpoint``), and ``secure_delete`` has overwritten the deleted rows there: once this
        returns, neither file holds them (nor, for a ``SQLKeyStore``, its files the key).

        Raises:
            ConversationNotFoundError: no such conversation (or it is another owner's).
            ShredPendingError: SQLite: it was deleted, but another connection kept the database busy past
                the busy timeout, or a step failed (a full disk: ``error.reason``), so the deleted pages are
                still in a ``-wal`` file; ``error.pending`` says which step did not finish (the search
                index rewrite or the WAL checkpoint); ``checkpoint()`` or the next open finishes both.
        """
        if not valid_id(conversation_id):
            raise ConversationNotFoundError(str(conversation_id))
        outcome = self._delete(conversation_id)
        self._shred_wal([conversation_id], key_wal_busy=outcome == _ops.KEY_WAL_BUSY)

    def _delete(self, conversation_id: str, stale_before: datetime | None = None) -> str:
        return self._run(
            _ops.delete_conversation(
                conversation_id,
                self.owner,
                inline_keys=self.key_store is None,
                stale_before=stale_before,
                delete_key=None if self.key_store is None else self.key_store.delete_key,
            ),
            write=True,
        )

    def _shred_wal(self, deleted: list[str], *, key_wal_busy: bool) -> None:
        """After deletes: on SQLite, rewrite the search index without their words, then empty the WAL; or say
        that it still holds them (and why)."""
        if not deleted:
            return
        if self._engine.dialect.name == "sqlite":
            try:
                self._run(_search.erase_deleted(), write=True)
            except DatabaseError as error:
                raise ShredPendingError(deleted, str(error), pending="search_index") from error
            except StoreBusyError as error:
                raise ShredPendingError(deleted, pending="search_index") from error
        try:
            emptied = checkpoint(self._engine)
        except DatabaseError as error:
            raise ShredPendingError(deleted, str(error)) from error
        if not emptied or key_wal_busy:
            raise ShredPendingError(deleted)

    def checkpoint(self) -> None:
        """SQLite: copy every page of the WAL into the database file and truncate the WAL to zero bytes, as
        each delete does (a WAL that holds frames has the search index rewritten first, as a delete does:
        a shred left pending by ``ShredPendingError`` is finished whole); it waits up to the busy timeout
        for other connections' transactions to end.
        PostgreSQL: nothing (it keeps deleted rows until ``VACUUM``; see the README's Privacy section).

        Raises:
            StoreBusyError: another connection's transaction outlasted the busy timeout.
            DatabaseError: the checkpoint failed; ``error.cause`` says why (``disk_full``, say).
        """
        self._ready()
        # A WAL left with frames may be a delete's shred left pending: its search index rewrite comes first.
        if not checkpoint(self._engine, first=_search.ERASE_DELETED_SQL):
            raise StoreBusyError("another connection kept the SQLite WAL busy past the busy timeout")


def _cutoff(older_than: timedelta | datetime) -> datetime:
    """The purge cutoff of an age or a time: checked, in the past, aware."""
    if not isinstance(older_than, (datetime, timedelta)):
        raise TypeError(f"older_than: expected a timedelta or a datetime, got {type(older_than).__name__}")
    now = utcnow()
    if isinstance(older_than, datetime):
        if older_than.tzinfo is None:
            raise InvalidAgeError("older_than: pass an aware UTC datetime or a timedelta")
        if older_than > now:
            raise InvalidAgeError(
                "older_than: the cutoff is in the future; it would delete conversations being written now"
            )
        return older_than
    if older_than <= timedelta(0):
        raise InvalidAgeError(f"older_than must be a positive age, not {older_than}")
    try:
        return now - older_than
    except OverflowError:
        raise InvalidAgeError(
            f"older_than: {older_than.days} days reaches before the year 1; the oldest age is "
            f"{(now - datetime.min.replace(tzinfo=now.tzinfo)).days} days"
        ) from None
