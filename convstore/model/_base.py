"""The base of every wire object: unknown fields kept, absent told from null, content kept out of reprs.

A field the API may omit is typed ``T | None | Unset`` and defaults to ``UNSET``: ``UNSET`` means the key was
absent, ``None`` means it was present with a JSON ``null``. The two round-trip differently, so both are kept.
``UNSET`` is falsy, so ``if step.signature:`` reads naturally.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Literal

import attrs

__all__ = ["UNSET", "Unset", "WireObject"]


class _UnsetType(enum.Enum):
    UNSET = "UNSET"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _UnsetType.UNSET
"""The value of an optional field whose key was absent from the wire JSON."""

Unset = Literal[_UnsetType.UNSET]
"""The type of ``UNSET``, for annotations: ``signature: str | None | Unset = UNSET``."""

_EMPTY: Mapping[str, Any] = {}

BOOKKEEPING = frozenset({"extra", "key_order"})
"""``WireObject`` attributes that are not wire fields of their own."""


@attrs.frozen(kw_only=True, repr=False)
class WireObject:
    """A JSON object of the Interactions API with a ``type`` tag.

    Attributes:
        extra: Fields this version of convstore does not know, kept so they are written back unchanged.
        key_order: The keys of the wire JSON the object was decoded from, in their order, so that encoding
            writes them back in it (JSON text equal to the original). Empty for an object built in code,
            which encodes as ``type``, its fields in declaration order, then ``extra``. Not compared: two
            objects decoded from the same JSON with its keys in another order are equal.
    """

    TYPE: ClassVar[str] = ""
    # Fields whose values are identifiers or enums, safe to show in a repr. Everything else may be content.
    SHOWN: ClassVar[frozenset[str]] = frozenset(
        {"id", "call_id", "name", "server_name", "mime_type", "is_error", "resolution", "search_type"}
    )

    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    key_order: tuple[str, ...] = attrs.field(default=(), repr=False, eq=False)

    @property
    def type(self) -> str:
        """The wire ``type`` tag."""
        return self.TYPE

    def __repr__(self) -> str:
        parts = []
        for field in attrs.fields(type(self)):
            if field.name in BOOKKEEPING:
                continue
            value = getattr(self, field.name)
            if value is UNSET:
                continue
            if field.name in self.SHOWN:
                parts.append(f"{field.name}={value!r}")
            else:
                parts.append(f"{field.name}=<redacted>")
        if self.extra:
            parts.append(f"extra=<{len(self.extra)} field(s)>")
        return f"{type(self).__name__}({', '.join(parts)})"
