"""Encryption at rest: application keys, per-conversation data keys, and sealed values (pure, no I/O).

Envelope encryption, as KMSs do it. Each encrypted conversation has its own random 256-bit data key; every
value of it that can hold user text (step payloads, summaries, system instruction, generation config, tools,
metadata) is sealed with AES-256-GCM under that key. The data key itself is stored only wrapped (AES-256-GCM
again) by one of the application's keys, and the wrapped key records which one (its ``key_id``), so
application keys can rotate: re-wrapping a data key with a new application key leaves every payload as it
is. Destroying a conversation's wrapped data key destroys the conversation, in every copy and backup of its
rows (crypto-shredding).

Associated data binds each ciphertext to where it belongs: the data key to its conversation and application
key id; a payload to its conversation and node id (and to the kind of row); a setting to its conversation and
field name. A value copied to another conversation, node or field then fails authentication instead of
decrypting into the wrong place.

A sealed value is stored as text: ``MARKER`` then base64 of nonce (12 random bytes) + ciphertext + tag.
Plaintext values are JSON text, which never starts with that marker, so the two cannot be confused; the
conversation row records the scheme as well (``ENCRYPTION``), so a conversation with nothing in it yet is
still known to be encrypted.

Built on the ``cryptography`` package (the ``crypto`` extra): its ``AESGCM`` is OpenSSL's constant-time,
hardware-accelerated AES-GCM, maintained by the Python Cryptographic Authority. It is imported only when a
``Keyring`` is made, so a store without encryption never loads it.
"""

from __future__ import annotations

import binascii
import hmac
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from convstore._extras import require
from convstore.errors import DecryptionError, KeyNotFoundError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "ENCRYPTION",
    "MARKER",
    "DataCipher",
    "Keyring",
    "WrappedKey",
    "is_sealed",
]

ENCRYPTION = "aes-256-gcm/1"  # the scheme recorded on an encrypted conversation's row
MARKER = "enc1:"
KEY_BYTES = 32
NONCE_BYTES = 12
MAX_KEY_ID = 255


def _aesgcm() -> type[AESGCM]:
    aead = require("cryptography.hazmat.primitives.ciphers.aead")  # the crypto extra
    aesgcm: type[AESGCM] = aead.AESGCM
    return aesgcm


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag  # noqa: PLC0415 -- optional extra

    return InvalidTag


def is_sealed(value: str | None) -> bool:
    return value is not None and value.startswith(MARKER)


@attrs.frozen(kw_only=True)
class WrappedKey:
    """A conversation's data key, wrapped by an application key: what a key store keeps.

    Attributes:
        key_id: The application key that wrapped it.
        wrapped: Nonce + AES-256-GCM ciphertext + tag of the data key (60 bytes); useless without that key.
    """

    key_id: str
    wrapped: bytes = attrs.field(repr=lambda value: f"<{len(value)} bytes>")


class Keyring:
    """The application's keys: 32-byte AES-256 keys by id, one of them active for wrapping new data keys.

    Keep the key bytes out of the database (a secrets manager, an environment variable, a KMS). Every key
    that wrapped a data key still in use must stay in the keyring until ``rotate_keys()`` has re-wrapped
    those data keys with the active one.

    Args:
        keys: ``{key_id: 32 key bytes}``. Key ids are short names (``"2026-12"``), stored beside each
            wrapped data key; they may appear in error messages, so they must not be secret.
        active: The id of the key that wraps data keys from now on.

    Raises:
        ValueError: a key is not 32 bytes, a key id is empty or too long, or ``active`` is not in ``keys``.

    Example:
        >>> Keyring({"k1": os.urandom(32)}, active="k1")
        Keyring(key_ids=['k1'], active='k1')
    """

    __slots__ = ("_active", "_keys")

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        aesgcm = _aesgcm()
        checked: dict[str, Any] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not key_id or len(key_id) > MAX_KEY_ID or "\x00" in key_id:
                raise ValueError(f"a key id is a non-empty string of at most {MAX_KEY_ID} characters")
            if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
                raise ValueError(f"application key {key_id!r}: expected {KEY_BYTES} bytes (AES-256)")
            checked[key_id] = aesgcm(bytes(key))
        if active not in checked:
            raise ValueError(f"the active key {active!r} is not among the keys")
        self._keys = checked
        self._active = active

    @property
    def active(self) -> str:
        """The id of the key that wraps new data keys (and re-wraps old ones in ``rotate_keys``)."""
        return self._active

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def __repr__(self) -> str:
        return f"Keyring(key_ids={self.key_ids!r}, active={self._active!r})"

    @staticmethod
    def _aad(conversation_id: str, key_id: str) -> bytes:
        return f"convstore/data-key\x00{conversation_id}\x00{key_id}".encode()

    def new_data_key(self, conversation_id: str) -> tuple[DataCipher, WrappedKey]:
        """A fresh random data key for a new conversation: its cipher, and the key wrapped by the active
        key."""
        data_key = os.urandom(KEY_BYTES)
        return DataCipher(conversation_id, data_key), self.wrap(conversation_id, data_key)

    def wrap(self, conversation_id: str, data_key: bytes) -> WrappedKey:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self._active].encrypt(nonce, data_key, self._aad(conversation_id, self._active))
        return WrappedKey(key_id=self._active, wrapped=nonce + sealed)

    def unwrap(self, conversation_id: str, wrapped: WrappedKey) -> bytes:
        """The data key.

        Raises:
            KeyNotFoundError: the keyring has no key of ``wrapped.key_id``.
            DecryptionError: that key does not unwrap it (wrong key bytes, or a key of another conversation).
        """
        aes = self._keys.get(wrapped.key_id)
        if aes is None:
            raise KeyNotFoundError(conversation_id, wrapped.key_id)
        raw = wrapped.wrapped
        try:
            return bytes(
                aes.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad(conversation_id, wrapped.key_id))
            )
        except _invalid_tag():
            raise DecryptionError(conversation_id, "data key", key_id=wrapped.key_id) from None

    def rewrap(self, conversation_id: str, wrapped: WrappedKey) -> WrappedKey | None:
        """``wrapped`` re-wrapped by the active key; None when the active key wrapped it already."""
        if wrapped.key_id == self._active:
            return None
        return self.wrap(conversation_id, self.unwrap(conversation_id, wrapped))

    def cipher(self, conversation_id: str, wrapped: WrappedKey) -> DataCipher:
        return DataCipher(conversation_id, self.unwrap(conversation_id, wrapped))


class DataCipher:
    """Seals and opens the values of one conversation with its data key (AES-256-GCM, random nonces)."""

    __slots__ = ("_aes", "_mac_key", "_prefix", "_structure_key", "conversation_id")

    def __init__(self, conversation_id: str, data_key: bytes) -> None:
        self.conversation_id = conversation_id
        self._aes = _aesgcm()(data_key)
        self._prefix = f"convstore/v1\x00{conversation_id}\x00".encode()
        # A key of its own for naming media strings, derived from the data key (HMAC as a PRF, the
        # extract-free half of HKDF): the hash of a file never serves to recognise it.
        self._mac_key = hmac.digest(data_key, b"convstore/v1 media names", "sha256")
        self._structure_key = hmac.digest(data_key, b"convstore/v1 export structure", "sha256")

    def __repr__(self) -> str:
        return f"DataCipher(conversation_id={self.conversation_id!r})"

    def _aad(self, kind: str, where: str) -> bytes:
        return self._prefix + f"{kind}\x00{where}".encode()

    def structure_mac(self, structure: bytes) -> bytes:
        """The HMAC-SHA256 of an exported conversation's structure, with a key derived from the data key
        (see ``_transfer``): only a holder of the data key can make one that matches."""
        return hmac.digest(self._structure_key, self._prefix + structure, "sha256")

    def seal(self, kind: str, where: str, text: str) -> str:
        """``text`` sealed for one place: ``kind`` (``node``, ``summary``, ``media``, ``conversation``) and
        ``where`` (a node id, a media hash, or a field name)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aes.encrypt(nonce, text.encode("utf-8", "surrogatepass"), self._aad(kind, where))
        return MARKER + binascii.b2a_base64(nonce + sealed, newline=False).decode("ascii")

    def open(self, kind: str, where: str, value: str) -> str:
        """The plaintext of a value sealed for that place.

        Raises:
            DecryptionError: the value is not sealed, was altered, or was sealed for another place.
        """
        label = where if kind == "conversation" else f"{kind} {where}"
        if not value.startswith(MARKER):
            raise DecryptionError(self.conversation_id, label)  # plaintext where a sealed value belongs
        try:
            # No validation of the base64 alphabet (a regex pass as long as the decoding): the GCM tag
            # authenticates every byte that comes out.
            raw = binascii.a2b_base64(value[len(MARKER) :])
            plain = self._aes.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad(kind, where))
        except (ValueError, binascii.Error, _invalid_tag()):
            raise DecryptionError(self.conversation_id, label) from None
        return plain.decode("utf-8", "surrogatepass")

    def media_digest(self, content: str) -> str:
        """The name of a media string in this conversation: HMAC-SHA256 under a key derived from the data
        key (hex), so equal strings share one row here and nothing with any other conversation."""
        return hmac.new(self._mac_key, content.encode("utf-8", "surrogatepass"), "sha256").hexdigest()

    def seal_or_none(self, kind: str, where: str, text: str | None) -> str | None:
        return None if text is None else self.seal(kind, where, text)

    def open_or_none(self, kind: str, where: str, value: str | None) -> str | None:
        return None if value is None else self.open(kind, where, value)

    def open_nodes(self, rows: Iterable[Any]) -> list[str]:
        """The payload texts of node rows (anything with ``id`` and ``payload``): ``open`` for each, with
        the lookups hoisted out of the loop (a replay opens every step of the branch)."""
        decrypt, a2b, prefix, skip = (
            self._aes.decrypt,
            binascii.a2b_base64,
            self._aad("node", ""),
            len(MARKER),
        )
        texts = []
        for row in rows:
            value = row.payload
            if not value.startswith(MARKER):  # plaintext where a sealed value belongs
                raise DecryptionError(self.conversation_id, f"node {row.id}")
            try:
                raw = a2b(value[skip:])
                plain = decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], prefix + row.id.encode())
            except (ValueError, binascii.Error, _invalid_tag()):
                raise DecryptionError(self.conversation_id, f"node {row.id}") from None
            texts.append(plain.decode("utf-8", "surrogatepass"))
        return texts
