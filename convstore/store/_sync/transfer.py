# Generated from convstore/store/_async/transfer.py by scripts/unasync.py: do not edit.
"""The store's export and import of whole conversations (the JSONL format: ``convstore export`` /
``convstore import``), a part of ``_StoreBase``. Written once, for asyncio; ``scripts/unasync.py``
generates the blocking twin in ``store/_sync/``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import attrs

from convstore.errors import (
    ConversationNotFoundError,
    DataKeyNotFoundError,
    EncryptionError,
    UnverifiedExportWarning,
)
from convstore.store import _ops, _transfer
from convstore.store._prepare import call, valid_id
from convstore.store._sync.core import _StoreCore
from convstore.store._transfer import ConversationDump

__all__ = ["_Transfer"]


class _Transfer(_StoreCore):
    """Export and import, a part of ``_StoreBase`` (``store.py``)."""

    def import_rows(
        self,
        conversation: _transfer.ConversationRows,
        *,
        skip_existing: bool = False,
        progress: Callable[[int], None] | None = None,
        allow_erased: bool = False,
    ) -> bool:
        """Write a plaintext conversation read lazily from an export file, in one transaction, a batch of
        rows at a time (memory bounded by a batch, whatever its size); ``import_conversation`` for a
        conversation held whole. A row that fails its check rolls the whole conversation back.

        Args:
            conversation: The conversation as ``read_conversations`` gives it.
            skip_existing: Leave a conversation whose id is here already as it is (return False).
            progress: Called with the number of rows written after each batch.
            allow_erased: Import it even though this store deleted a conversation of that id.

        Returns:
            True when written, False when skipped (``skip_existing`` and the id is here already).

        Raises:
            ConversationExistsError, TransferFormatError, LimitExceededError: as ``import_conversation``.
            ConversationErasedError: this store deleted it, and not ``allow_erased``.
            ValueError: the store is bound to an owner (an export names its own owners).
        """
        if self.owner is not None:
            raise ValueError("import_rows writes the owner the export names: use a store without an owner")
        op = _transfer.import_rows_ops(
            conversation,
            skip_existing=skip_existing,
            progress=progress,
            allow_erased=allow_erased,
            index=self._index,
        )
        return self._run(op, write=True)

    # Export and import (the JSONL format: ``convstore export`` / ``convstore import``)

    def export_conversation(self, conversation_id: str, *, plaintext: bool = False) -> ConversationDump:
        """Every row of one conversation, ids kept, for ``import_conversation`` into any store.

        An encrypted conversation is exported sealed: its ciphertexts as stored and its wrapped data key
        (which names the application key that wrapped it). Only a store whose keyring holds that key can
        read it; exporting it needs no keyring. With the keyring, its structure (ids, parents, order,
        branches, settings, usage) is also sealed (``dump.seal``, an HMAC with a key derived from its data
        key), so that an import refuses any change to it; without (or with a keyring that lacks its key),
        it is exported unsealed (``dump.seal`` is None): its content stays encrypted, but its import warns
        (``UnverifiedExportWarning``) that rows removed or rearranged in the file would go unnoticed.

        Args:
            plaintext: Decrypt an encrypted conversation and export its content in clear, as a plaintext
                conversation: whoever holds the export can then read it, and it imports unencrypted. Needs
                the keyring. Plaintext conversations are exported the same either way.

        Raises:
            ConversationNotFoundError: no such conversation (of this store's owner).
            DataKeyNotFoundError: the conversation is encrypted and its data key is gone (shredded).
            KeyringRequiredError, KeyNotFoundError, DecryptionError: ``plaintext`` and the key cannot be
                had.
        """
        if not valid_id(conversation_id):
            raise ConversationNotFoundError(str(conversation_id))
        encryption = self._run(_ops.visible(conversation_id, self.owner))
        if encryption is not None and plaintext:
            cipher = self._cipher(conversation_id, encryption)
            return self._run(_transfer.export_ops(conversation_id, owner=self.owner, cipher=cipher))
        inline = encryption is not None and self.key_store is None
        dump = self._run(_transfer.export_ops(conversation_id, owner=self.owner, inline_key=inline))
        if dump.sealed and self.key_store is not None:
            wrapped = call(self.key_store.get_key, conversation_id)
            if wrapped is None:
                raise DataKeyNotFoundError(conversation_id)
            dump = attrs.evolve(dump, key=wrapped)
        if dump.sealed and self.keyring is not None and dump.key is not None:
            with contextlib.suppress(EncryptionError):  # a key the keyring lacks: exported unsealed
                cipher = self._cipher(conversation_id, encryption, dump.key)
                if cipher is not None:
                    dump = attrs.evolve(dump, seal=cipher.structure_mac(_transfer.structure_bytes(dump)))
        return dump

    def import_conversation(
        self,
        dump: ConversationDump,
        *,
        skip_existing: bool = False,
        progress: Callable[[int], None] | None = None,
        allow_erased: bool = False,
    ) -> bool:
        """Write an exported conversation with its ids, in one transaction, all or nothing.

        A sealed (encrypted) conversation needs, with a keyring, the application key that wrapped its data
        key: every sealed value is checked to open before anything is written, and its data key is
        re-wrapped by the active key when another one wrapped it, then kept in this store's key store. What
        opens is checked as a plaintext line is read (strict JSON within this store's ``limits``, payloads
        by the codec, token counts by its counter). A store without a keyring imports it as it is, unread
        (it could not open it either).

        Args:
            dump: From ``export_conversation``, or read from an export file.
            skip_existing: When the id is in this store already, write nothing and return False.
            progress: Called with the number of rows written after each batch.
            allow_erased: Import it even though this store deleted a conversation of that id. Without it,
                a conversation deleted here (``delete_conversation``, ``purge``) is refused: an export
                taken before the delete cannot bring it back unasked.

        Returns:
            True when written, False when skipped.

        Warns:
            UnverifiedExportWarning: a sealed conversation without its seal (exported without its keyring,
                or in format 2), or imported by a store without a keyring: its structure is unverified.

        Raises:
            ConversationExistsError: the id is in this store already (and not ``skip_existing``).
            ConversationErasedError: this store deleted it, and not ``allow_erased``.
            TransferFormatError: the dump breaks a rule of the tree.
            KeyNotFoundError, DecryptionError: the keyring cannot open the sealed conversation (nothing is
                written).
            TransferFormatError: also when a sealed conversation's seal does not match its rows (one was
                changed, added, removed or moved).
            ValueError: the conversation belongs to another owner than this store's.
        """
        if self.owner is not None and dump.conversation.get("owner") != self.owner:
            raise ValueError(f"conversation {dump.id!r} belongs to another owner than this store's")
        _transfer.check_dump(dump)
        wrapped = dump.key
        if dump.sealed and wrapped is not None and self.keyring is not None:
            cipher = self.keyring.cipher(dump.id, wrapped)
            _transfer.open_sealed(dump, cipher, limits=self.limits, counter=self.counter)
            sealed = _transfer.check_seal(dump, cipher)
            wrapped = self.keyring.rewrap(dump.id, wrapped) or wrapped
        else:
            sealed = not dump.sealed
        if not sealed:
            warnings.warn(
                UnverifiedExportWarning(
                    f"conversation {dump.id} is sealed, but its structure is not verified: "
                    + (
                        "its export has no seal (exported without the keyring holding its key, or in format "
                        "2); each sealed value still opens only as itself, but rows removed, reordered or "
                        "moved to another parent would go unnoticed: export it again with its keyring to "
                        "have its structure sealed"
                        if self.keyring is not None
                        else "this store has no keyring, so nothing of it is opened or verified"
                    )
                ),
                stacklevel=2,
            )
        if not dump.sealed or wrapped is None or self.key_store is None:
            op = _transfer.import_ops(
                dump,
                skip_existing=skip_existing,
                progress=progress,
                key=wrapped,
                allow_erased=allow_erased,
                index=self._index,
            )
            return self._run(op, write=True)
        # A key store of its own: the key first, then the rows (as create_conversation does); never over
        # the key of a conversation this store holds already.
        if self._run(_transfer.conversation_exists(dump.id)):
            if skip_existing:
                return False
            raise _transfer.ConversationExistsError(dump.id)
        call(self.key_store.put_key, dump.id, wrapped)
        try:
            op = _transfer.import_ops(dump, skip_existing=False, progress=progress, allow_erased=allow_erased)
            return self._run(op, write=True)
        except BaseException:
            call(self.key_store.delete_key, dump.id)
            raise
