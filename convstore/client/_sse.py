"""An incremental Server-Sent Events decoder: bytes in, events out, no I/O.

It follows the WHATWG HTML "event stream interpretation" algorithm
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

- the stream is UTF-8; one leading byte order mark is dropped; invalid bytes decode to U+FFFD (the spec's
  "UTF-8 decode", so arbitrary bytes never raise here);
- lines end with CRLF, LF or CR, and a chunk may end anywhere: inside a multi-byte character, or between
  the CR and the LF of one CRLF;
- ``:`` lines are comments; ``field:value`` drops one space after the colon; a line without a colon is a
  field with an empty value; unknown fields are ignored;
- ``data`` lines are joined with ``\\n``; ``event`` sets the type (default ``message``); ``id`` sets the
  last event id unless it holds NUL, and that id persists into later events; ``retry`` is taken only when
  it is all ASCII digits;
- a blank line dispatches the event, unless no ``data`` line was seen since the last one.

At the end of the stream, an event not yet closed by a blank line is **discarded**, as the spec says (the
SDK's parser does the same). ``SSEDecoder.end`` reports whether something was discarded, so the caller can
tell a truncated stream from a clean one.

Bounds: a line longer than ``max_line`` characters, or an event whose ``data`` grows beyond ``max_event``,
raises ``LimitExceededError`` as soon as the chunk that crosses the bound arrives; nothing beyond the bound
is held.
"""

from __future__ import annotations

import codecs
import re
from typing import Final

import attrs

from convstore._limits import DEFAULT_LIMITS
from convstore.errors import LimitExceededError

__all__ = ["SSEDecoder", "ServerSentEvent"]

_LINE_END: Final = re.compile(r"\r\n|\r|\n")


def _data_repr(data: str) -> str:
    return f"<{len(data)} chars>"


@attrs.frozen(kw_only=True)
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        event: The event type (``message`` when the block had no ``event`` line).
        data: The ``data`` lines joined with ``\\n`` (hidden in the repr: it is content).
        id: The last event id at dispatch time (it persists across events, as in the spec); ``""`` if none.
        retry: The ``retry`` value given inside this event's block, if any.
    """

    event: str = "message"
    data: str = attrs.field(default="", repr=_data_repr)
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Turns byte chunks of an event stream into ``ServerSentEvent`` values.

    Example::

        decoder = SSEDecoder()
        for chunk in chunks:
            for event in decoder.feed(chunk):
                ...
        decoder.end()

    Attributes:
        retry: The reconnection time most recently given by a ``retry`` field, or ``None``.
    """

    def __init__(
        self,
        *,
        max_line: int = DEFAULT_LIMITS.max_sse_line_bytes,
        max_event: int = DEFAULT_LIMITS.max_sse_event_bytes,
    ) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max_line = max_line
        self._max_event = max_event
        self._pending: list[str] = []  # text of the current, unterminated line
        self._pending_length = 0
        self._data_length = 0  # characters in self._data
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._started = False  # the BOM check happened
        self._event = ""
        self._data: list[str] = []
        self._block_retry: int | None = None
        self._last_id = ""
        self._ended = False
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decodes one chunk.

        Args:
            chunk: The next bytes of the stream, split anywhere.

        Returns:
            The events completed by this chunk, in order.
        """
        text = self._decoder.decode(chunk)
        return self._feed_text(text) if text else []

    def end(self) -> bool:
        """Marks the end of the stream.

        Returns:
            Whether an unfinished event (or line) was discarded, i.e. the stream did not end at an event
            boundary.
        """
        if self._ended:
            return False
        self._ended = True
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._feed_text(tail)
        return bool(self._pending or self._data or self._event or self._block_retry is not None)

    def _strip_start(self, text: str) -> str:
        """Drops a leading BOM (first text only) and the LF of a CRLF split across chunks."""
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        return text

    def _feed_text(self, text: str) -> list[ServerSentEvent]:
        if not self._started or self._skip_lf:
            text = self._strip_start(text)
            if not text:
                return []
        if "\n" not in text and "\r" not in text:
            self._hold(text)
            return []
        if self._pending:
            self._pending.append(text)
            text = "".join(self._pending)
            self._pending.clear()
            self._pending_length = 0
        lines = text.split("\n") if "\r" not in text else _LINE_END.split(text)
        rest = lines.pop()
        if rest:
            self._hold(rest)
        elif text[-1] == "\r":
            self._skip_lf = True
        events: list[ServerSentEvent] = []
        data = self._data
        max_line, max_event = self._max_line, self._max_event
        for line in lines:
            if not line:
                self._dispatch(events)
                data = self._data
                continue
            if len(line) > max_line:
                raise LimitExceededError("max_sse_line_bytes", max_line, path="stream", actual=len(line))
            if line[:5] == "data:":  # the hot path: most lines are data lines
                data.append(line[6:] if line[5:6] == " " else line[5:])
                self._data_length += len(line) - 4
                if self._data_length > max_event:
                    raise LimitExceededError("max_sse_event_bytes", max_event, path="stream")
            elif line[0] != ":":
                self._field(line)
        return events

    def _hold(self, text: str) -> None:
        """Keeps the start of an unterminated line, up to the bound on a line."""
        self._pending_length += len(text)
        if self._pending_length > self._max_line:
            self._pending.clear()
            raise LimitExceededError("max_sse_line_bytes", self._max_line, path="stream")
        self._pending.append(text)

    def _field(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_length += len(value) + 1
            if self._data_length > self._max_event:
                raise LimitExceededError("max_sse_event_bytes", self._max_event, path="stream")
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._block_retry = self.retry = int(value)

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        if self._data:
            events.append(
                ServerSentEvent(
                    event=self._event or "message",
                    data="\n".join(self._data),
                    id=self._last_id,
                    retry=self._block_retry,
                )
            )
            self._data = []
        self._data_length = 0
        self._event = ""
        self._block_retry = None
