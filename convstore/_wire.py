"""Request bodies whose ``input`` is spliced from the stored step texts: the hot path of a stateless turn.

A stored step's payload is the compact JSON text of its wire JSON (``codec.dumps``: no spaces, UTF-8 kept as
is), exactly what ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))`` writes for it inside a
request body. So the request bytes of a turn can be joined from those texts without decoding the history
and encoding it again: ``conv.send`` and ``conv.stream`` put a ``SplicedInput`` in the body they hand to
convstore's own clients, and ``body_bytes`` writes the same bytes the dict path would have written.

A body with a ``SplicedInput`` never reaches other code: a client that does not declare it takes one
(``takes_spliced_input``) gets a plain body with the history decoded, as ``request()`` returns it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SplicedInput", "body_bytes", "json_array", "plain_input", "takes_spliced_input"]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def json_array(texts: Sequence[bytes]) -> bytes:
    """The JSON array of the UTF-8 JSON ``texts`` (each one or more comma-joined elements)."""
    return b"".join((b"[", b",".join(texts), b"]"))


class SplicedInput:
    """A body's ``input``: the history as stored step texts, then the turn's new steps (wire JSON).

    The history is the UTF-8 bytes of each stored text (a branch read whole) or the texts themselves (a
    budget window); either way each is one or more comma-joined array elements (a step, a summary's steps).

    Attributes:
        steps: The new steps of the turn, as ``record`` writes them.
    """

    __slots__ = ("_history", "steps")

    def __init__(self, history: Sequence[bytes] | Sequence[str], steps: Sequence[Mapping[str, Any]]) -> None:
        self._history = history
        self.steps = list(steps)

    def _history_bytes(self) -> bytes:
        """The history's elements comma-joined, as UTF-8: one join of the stored bytes, no encode."""
        history = self._history
        if history and isinstance(history[0], str):
            return ",".join(history).encode()  # type: ignore[arg-type]
        return b",".join(history)  # type: ignore[arg-type]

    def _pieces(self, into: list[bytes]) -> None:
        """Append the pieces of the input's JSON array to ``into`` (joined once, by the caller)."""
        into.append(b"[")
        history = self._history
        if history:
            into.append(self._history_bytes())
        for index, step in enumerate(self.steps):
            if index or history:
                into.append(b",")
            into.append(_dumps(step).encode())
        into.append(b"]")

    def decode(self) -> list[Any]:
        """The whole input as wire JSON (a fresh list: decodes the history)."""
        history: list[Any] = json.loads(b"".join((b"[", self._history_bytes(), b"]")))
        return [*history, *self.steps]

    def __repr__(self) -> str:  # no content: only sizes
        return f"SplicedInput(history_parts={len(self._history)}, new_steps={len(self.steps)})"


def plain_input(value: Any) -> Any:
    """``value`` with a ``SplicedInput`` decoded (for code that reads a body's ``input`` as JSON)."""
    return value.decode() if isinstance(value, SplicedInput) else value


def body_bytes(body: Mapping[str, Any]) -> bytes:
    """The UTF-8 compact JSON of a create body: ``json.dumps(body, ensure_ascii=False, separators=(",",
    ":")).encode()``, with a ``SplicedInput`` written from its stored bytes: the same bytes, without a
    decode or an encode of the history, joined once (a history of megabytes is copied twice, no more)."""
    pieces: list[bytes] = []
    separator = b"{"
    for key, value in body.items():
        pieces.append(separator)
        separator = b","
        pieces.append(_dumps(key).encode())
        pieces.append(b":")
        if isinstance(value, SplicedInput):
            value._pieces(pieces)
        else:
            pieces.append(_dumps(value).encode())
    pieces.append(b"}" if pieces else b"{}")
    return b"".join(pieces)


def takes_spliced_input(client: Any) -> bool:
    """Whether ``client`` sends bodies through ``body_bytes`` (convstore's own clients say so)."""
    return getattr(type(client), "_takes_spliced_input", False) is True
