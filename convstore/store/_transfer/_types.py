"""The export format's name and version, its errors and ``ConversationDump``."""

from __future__ import annotations

from typing import Any

import attrs

from convstore.errors import ConversationExistsError, TransferFormatError
from convstore.store._crypto import WrappedKey

# The format's errors live in convstore.errors (public); named here too for the package's modules.
__all__ = [
    "BATCH_BYTES",
    "CHUNK",
    "FORMAT",
    "VERSION",
    "ConversationDump",
    "ConversationExistsError",
    "TransferFormatError",
]

FORMAT = "convstore-export"
# 2: sealed conversations (key and media lines); 3: the end line, and a sealed one's seal line; 4: file lines
# (the Files API uris of a conversation) and the bytes of its uploaded files (media lines, plaintext too)
VERSION = 4
CHUNK = 500  # rows an INSERT carries (and how often import_ops reports progress)
BATCH_BYTES = 4 * 1024 * 1024  # ... or fewer, so a streamed import holds at most about this much of payloads


@attrs.frozen(kw_only=True)
class ConversationDump:
    """Every row of one conversation, as column -> value dicts (datetimes aware UTC, ids canonical text).

    Attributes:
        conversation: The conversation row.
        nodes: Node rows, parents before children (by depth, creation time, id).
        summaries: Summary rows (empty when the schema has none).
        branches: Branch rows, by creation time and name.
        exchanges: Exchange rows, by creation time and exchange id.
        media: Media rows (``conversation_id``, ``hash``, ``data``): a sealed conversation's sealed media
            strings, those its nodes and its files name; a plaintext one's uploaded files' bytes (their
            base64 text, by its SHA-256), those its files name: its inline media travel in its payloads.
        files: The Files API uris its history names or it uploaded (``convstore_files`` rows: ``uri``, the
            ``hash`` of its bytes among ``media`` or None when convstore never had them, ``mime_type``,
            ``expires_at``, and the newest re-upload ``live_uri`` with ``live_expires_at``), by uri: what a
            replay needs to upload the bytes again once the Files API forgot them.
        key: A sealed conversation's wrapped data key (None for a plaintext one).
        seal: A sealed conversation's structure authenticated (``structure_mac``: the HMAC of every row,
            with a key derived from its data key); None for a plaintext one, or one exported without its
            keyring.
    """

    conversation: dict[str, Any] = attrs.field(repr=False)
    nodes: list[dict[str, Any]] = attrs.field(repr=lambda rows: f"<{len(rows)}>")
    summaries: list[dict[str, Any]] = attrs.field(factory=list, repr=lambda rows: f"<{len(rows)}>")
    branches: list[dict[str, Any]] = attrs.field(factory=list, repr=lambda rows: f"<{len(rows)}>")
    exchanges: list[dict[str, Any]] = attrs.field(factory=list, repr=lambda rows: f"<{len(rows)}>")
    media: list[dict[str, Any]] = attrs.field(factory=list, repr=lambda rows: f"<{len(rows)}>")
    files: list[dict[str, Any]] = attrs.field(factory=list, repr=lambda rows: f"<{len(rows)}>")
    key: WrappedKey | None = None
    seal: bytes | None = attrs.field(default=None, repr=False)

    @property
    def id(self) -> str:
        return str(self.conversation["id"])

    @property
    def sealed(self) -> bool:
        """Whether the rows are an encrypted conversation's ciphertexts (see the module docstring)."""
        return self.conversation.get("encryption") is not None

    @property
    def row_count(self) -> int:
        """Rows in the dump, the conversation row included (what a progress bar counts)."""
        rows = (self.nodes, self.summaries, self.branches, self.exchanges, self.media, self.files)
        return 1 + sum(map(len, rows)) + (self.key is not None)
