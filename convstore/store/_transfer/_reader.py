"""Reading an export: the header, then each conversation's lines, checked as they come."""

from __future__ import annotations

import base64
import binascii
import hashlib
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from convstore._limits import DEFAULT_LIMITS, Limits, loads
from convstore.budget import HeuristicCounter, TokenCounter
from convstore.errors import CodecError, UnverifiedExportWarning
from convstore.store._crypto import ENCRYPTION, WrappedKey
from convstore.store._transfer._checks import _TreeCheck
from convstore.store._transfer._lines import KINDS, _decode_key, _decode_row
from convstore.store._transfer._tables import _PLURAL
from convstore.store._transfer._types import FORMAT, VERSION, ConversationDump, TransferFormatError


def _check_header(number: int, obj: Mapping[str, Any]) -> int:
    if obj.get("kind") != "header" or obj.get("format") != FORMAT:
        raise TransferFormatError(f"expected the {FORMAT} header line first", line=number)
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TransferFormatError("expected an integer", line=number, where="header", field="version")
    if version > VERSION:
        raise TransferFormatError(
            f"format version {version} is newer than this convstore reads ({VERSION})",
            line=number,
            where="header",
            field="version",
        )
    return version


_ORDER = ("key", *KINDS, "seal")
_MAC_BYTES = 32


class _Pending:
    """A conversation being read: the checks of its tree, its key, and where in the order of kinds it is."""

    def __init__(
        self,
        line: int,
        conversation: dict[str, Any],
        limits: Limits = DEFAULT_LIMITS,
        counter: TokenCounter | None = None,
    ) -> None:
        self.line = line
        self.conversation = conversation
        self.check = _TreeCheck(conversation["id"])
        self.sealed = conversation.get("encryption") is not None
        self.key: WrappedKey | None = None
        self.seal: bytes | None = None
        self.order = 0  # index in _ORDER of the last kind seen: kinds come in that order
        self._limits = limits
        self._counter = counter

    def add(self, number: int, kind: str, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """The row of a line, checked (not kept: the caller keeps it or writes it); None for the key line,
        whose wrapped key is kept as ``key``."""
        position = _ORDER.index(kind)
        if position < self.order:
            raise TransferFormatError(
                f"out of order: {kind} lines come before {_ORDER[self.order]} lines",
                line=number,
                where=kind,
            )
        self.order = position
        if kind in {"key", "seal"} and not self.sealed:
            raise TransferFormatError(
                "belongs to sealed (encrypted) conversations only", line=number, where=kind
            )
        if kind == "key":
            if self.key is not None:
                raise TransferFormatError("a second key line for one conversation", line=number, where=kind)
            self.key, problem = _decode_key(self.conversation["id"], obj)
            if problem is not None:
                raise TransferFormatError(problem[1], line=number, where=kind, field=problem[0])
            return None
        if kind == "seal":
            if self.seal is not None:
                raise TransferFormatError("a second seal line for one conversation", line=number, where=kind)
            self.seal = _decode_seal(self.conversation["id"], number, obj)
            return None
        row, problem = _decode_row(kind, obj, self.sealed, self._limits, self._counter)
        if problem is None:
            problem = self.check.add(kind, row)
        if problem is not None:
            raise TransferFormatError(problem[1], line=number, where=kind, field=problem[0])
        return row

    def finish(self) -> None:
        problem = self.check.finish()
        if problem is not None:
            raise TransferFormatError(problem[1], line=self.line, where="conversation")
        if self.sealed and self.key is None:
            raise TransferFormatError(
                "a sealed conversation needs its key line", line=self.line, where="conversation"
            )


def _decode_seal(conversation_id: str, number: int, obj: Mapping[str, Any]) -> bytes:
    if obj.get("conversation_id") != conversation_id:
        raise TransferFormatError(
            "names another conversation", line=number, where="seal", field="conversation_id"
        )
    text = obj.get("mac")
    try:
        mac = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
    except binascii.Error:
        mac = b""
    if len(mac) != _MAC_BYTES or set(obj) != {"kind", "conversation_id", "mac"}:
        raise TransferFormatError(
            f"expected the base64 of a {_MAC_BYTES}-byte seal", line=number, where="seal"
        )
    return mac


def _parse(number: int, text: str, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """One line as a JSON object, strictly (no NaN, no key twice) and within the limits."""
    try:
        obj = loads(
            text,
            path=f"line {number}",
            limits=limits,
            max_bytes=limits.max_import_line_bytes,
            limit_name="max_import_line_bytes",
        )
    except CodecError as error:
        field = error.path.removeprefix(f"line {number}").lstrip(".")
        raise TransferFormatError(error.problems[0][1], line=number, field=field) from None
    if not isinstance(obj, dict):
        raise TransferFormatError("expected a JSON object", line=number)
    return obj


def _start(
    number: int,
    obj: Mapping[str, Any],
    seen: set[str],
    limits: Limits = DEFAULT_LIMITS,
    counter: TokenCounter | None = None,
) -> _Pending:
    encryption = obj.get("encryption")
    if encryption is not None and encryption != ENCRYPTION:
        raise TransferFormatError(
            "an encryption scheme this convstore does not know",
            line=number,
            where="conversation",
            field="encryption",
        )
    row, problem = _decode_row("conversation", obj, encryption is not None, limits)
    if problem is not None:
        raise TransferFormatError(problem[1], line=number, where="conversation", field=problem[0])
    if row["id"] in seen:
        raise TransferFormatError("a second conversation with this id", line=number, where="conversation")
    seen.add(row["id"])
    return _Pending(number, row, limits, counter)


class _Lines:
    """The non-blank lines of a file, parsed one at a time, with one line of look-ahead."""

    def __init__(self, lines: Iterable[str], limits: Limits) -> None:
        self._lines = enumerate(lines, start=1)
        self._limits = limits
        self._back: tuple[int, dict[str, Any]] | None = None
        self.number = 0
        # The digest and count of the lines before the last one read (what an end line states).
        self.digest = hashlib.sha256()
        self.count = 0
        self._last: bytes | None = None

    def next(self) -> tuple[int, dict[str, Any]] | None:
        if self._back is not None:
            item, self._back = self._back, None
            return item
        for number, text in self._lines:
            self.number = number
            if text.strip():
                if self._last is not None:
                    self.digest.update(self._last)
                    self.count += 1
                self._last = text.rstrip("\r\n").encode("utf-8", "surrogatepass") + b"\n"
                return number, _parse(number, text, self._limits)
        return None

    def push(self, item: tuple[int, dict[str, Any]]) -> None:
        self._back = item


class ConversationRows:
    """One conversation of an import file, read lazily: ``rows()`` parses and checks its lines one at a
    time as it is iterated, so a conversation of any size is never held whole.

    A sealed (encrypted) conversation is read the same way, but it is imported whole: ``dump()`` gathers
    its rows into a ``ConversationDump`` for ``open_sealed`` to verify before anything is written.

    Attributes:
        line: The number of its ``conversation`` line.
        conversation: The conversation row.
        sealed: Whether it is a sealed conversation (its rows ciphertexts, a ``key`` line after it).
        row_count: Rows read so far, the conversation row and a key line included (all of them once
            ``rows()`` ended).
    """

    def __init__(self, reader: _Lines, pending: _Pending) -> None:
        self._reader = reader
        self._pending = pending
        self.line = pending.line
        self.conversation = pending.conversation
        self.sealed = pending.sealed
        self.row_count = 1
        self.started = False
        self.done = False

    @property
    def id(self) -> str:
        return str(self.conversation["id"])

    @property
    def key(self) -> WrappedKey | None:
        """A sealed conversation's wrapped data key, once its key line was read (None before, and for a
        plaintext conversation)."""
        return self._pending.key

    def rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(kind, row)`` of each of its lines but the key line, in file order.

        Raises:
            TransferFormatError: the first line that is not right (after the rows before it were yielded).
        """
        self.started = True
        reader = self._reader
        while not self.done:
            item = reader.next()
            if item is None or item[1].get("kind") == "conversation" or item[1].get("kind") == "end":
                if item is not None:
                    reader.push(item)
                self._pending.finish()
                self.done = True
                return
            number, obj = item
            kind = obj.get("kind")
            if not isinstance(kind, str) or kind not in _ORDER:
                raise TransferFormatError("unknown kind", line=number, field="kind")
            row = self._pending.add(number, kind, obj)
            self.row_count += 1
            if row is not None:
                yield kind, row

    def dump(self) -> ConversationDump:
        """Every row of it, read and checked, held whole (what a sealed conversation's import needs).

        Raises:
            TransferFormatError: as ``rows()``; or its rows were read already.
        """
        if self.started:
            raise TransferFormatError("its rows were read already", line=self.line, where="conversation")
        rows: dict[str, list[dict[str, Any]]] = {_PLURAL[kind]: [] for kind in _ORDER if kind in _PLURAL}
        for kind, row in self.rows():
            rows[_PLURAL[kind]].append(row)
        return ConversationDump(conversation=self.conversation, key=self.key, seal=self._pending.seal, **rows)


def read_conversations(
    lines: Iterable[str], *, limits: Limits = DEFAULT_LIMITS, counter: TokenCounter | None = None
) -> Iterator[ConversationRows]:
    """Parse and check an export one conversation at a time, and each conversation one line at a time.

    Each line is checked as ``append`` checks what it writes: strict JSON (no NaN or Infinity, no key given
    twice) within ``limits``, every step payload by the codec, and every node's ``token_count`` against
    ``counter``'s count of its payload (``HeuristicCounter`` when None, as ``Store`` counts by default). A
    sealed conversation's lines are parsed as strictly and within the same limits, but its payloads are
    ciphertexts: they are checked once opened, by ``open_sealed``.

    Args:
        lines: The file's lines (with or without newlines); blank lines are ignored.
        limits: Bounds on a line (``max_import_line_bytes``), a payload and nesting.
        counter: The importing store's token counter.

    Yields:
        One ``ConversationRows`` for each conversation, in file order. Rows its caller did not read are read
        (and checked) before the next one is yielded.

    Raises:
        TransferFormatError: the first line that is not right, by number and field.
        LimitExceededError: a line longer than ``limits.max_import_line_bytes`` (named by number).
    """
    counter = counter if counter is not None else HeuristicCounter()
    reader = _Lines(lines, limits)
    seen: set[str] = set()
    first = reader.next()
    if first is None:
        raise TransferFormatError(f"empty: expected the {FORMAT} header line", line=reader.number + 1)
    version = _check_header(*first)
    ended = False
    while (item := reader.next()) is not None:
        number, obj = item
        kind = obj.get("kind")
        if ended:
            raise TransferFormatError("a line after the end line", line=number)
        if kind == "end":
            _check_end(number, obj, reader, len(seen))
            ended = True
        elif kind == "conversation":
            conversation = ConversationRows(reader, _start(number, obj, seen, limits, counter))
            yield conversation
            for _ in conversation.rows():
                pass
        elif not isinstance(kind, str) or kind not in _ORDER:
            raise TransferFormatError("unknown kind", line=number, field="kind")
        else:
            raise TransferFormatError("comes before any conversation line", line=number, where=kind)
    if not ended:
        if version >= _END_SINCE:
            raise TransferFormatError(
                "the file ends without its end line: it was cut short (or its export did not finish)",
                line=reader.number + 1,
            )
        warnings.warn(
            UnverifiedExportWarning(
                f"format version {version} has no end line: a file cut short at a line boundary cannot be "
                "told from a whole one, and a sealed conversation's structure is not authenticated"
            ),
            stacklevel=2,
        )


_END_SINCE = 3  # the format version that ends every file with an end line


def _check_end(number: int, obj: Mapping[str, Any], reader: _Lines, conversations: int) -> None:
    """The end line: as many conversations and lines as it says, and their digest."""
    stated = (obj.get("conversations"), obj.get("lines"), obj.get("sha256"))
    found = (conversations, reader.count, reader.digest.hexdigest())
    for field, said, real in zip(("conversations", "lines", "sha256"), stated, found, strict=True):
        if said != real:
            raise TransferFormatError(
                f"the end line says {said!r}, the file has {real!r}: lines were removed, added or changed",
                line=number,
                where="end",
                field=field,
            )


def read_dumps(
    lines: Iterable[str], *, limits: Limits = DEFAULT_LIMITS, counter: TokenCounter | None = None
) -> Iterator[tuple[int, ConversationDump]]:
    """Parse and check an export, one conversation at a time, each held whole (see ``read_conversations``
    for the checks, and for reading a plaintext conversation without holding it).

    Yields:
        ``(line number of the conversation line, dump)`` for each conversation, in file order.

    Raises:
        TransferFormatError: the first line that is not right, by number and field.
    """
    for conversation in read_conversations(lines, limits=limits, counter=counter):
        yield conversation.line, conversation.dump()
