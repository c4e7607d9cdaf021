"""The export format's name and version, its errors and ``ConversationDump``."""

from __future__ import annotations

from typing import Any

import attrs

from convstore.errors import (
    ConvstoreError,
    StoreError,
)
from convstore.store._crypto import WrappedKey

FORMAT = "convstore-export"
VERSION = 3  # 2: sealed conversations (key and media lines); 3: the end line, and a sealed one's seal line
CHUNK = 500  # rows an INSERT carries (and how often import_ops reports progress)
BATCH_BYTES = 4 * 1024 * 1024  # ... or fewer, so a streamed import holds at most about this much of payloads


class TransferFormatError(ConvstoreError, ValueError):
    """An export that cannot be imported. Names where (line number, kind, field), never the content.

    Attributes:
        line: The 1-based line number (None when a ``ConversationDump`` was checked without a file).
        where: The kind of the line, or a path in a dump (``nodes[3]``).
        field: The key at fault ("" for the line as a whole).
        problem: What is wrong.
    """

    def __init__(self, problem: str, *, line: int | None = None, where: str = "", field: str = "") -> None:
        self.line = line
        self.where = where
        self.field = field
        self.problem = problem
        place = [f"line {line}" if line is not None else "", f"({where})" if where else ""]
        prefix = " ".join(part for part in place if part)
        target = f"{field}: " if field else ""
        super().__init__(f"{prefix}: {target}{problem}" if prefix else f"{target}{problem}")


class ConversationExistsError(StoreError, ValueError):
    """An imported conversation's id is already in the target store (nothing of it was written)."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"conversation {conversation_id!r} already exists in the target store")


@attrs.frozen(kw_only=True)
class ConversationDump:
    """Every row of one conversation, as column -> value dicts (datetimes aware UTC, ids canonical text).

    Attributes:
        conversation: The conversation row.
        nodes: Node rows, parents before children (by depth, creation time, id).
        summaries: Summary rows (empty when the schema has none).
        branches: Branch rows, by creation time and name.
        exchanges: Exchange rows, by creation time and exchange id.
        media: A sealed conversation's media rows (sealed media strings by hash); empty for a plaintext one,
            whose payloads hold their media.
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
        rows = (self.nodes, self.summaries, self.branches, self.exchanges, self.media)
        return 1 + sum(map(len, rows)) + (self.key is not None)
