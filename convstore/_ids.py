"""Identifiers: UUIDv7 (RFC 9562), generated on the client.

Time-ordered, so new rows land at the end of indexes; random in their low 74 bits, so ids from many processes
never collide; made locally, so a whole exchange is inserted without a round trip to learn its ids.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable

__all__ = ["MIN_ENDING", "canonical_id", "is_id", "new_id", "shortest_endings"]

MIN_ENDING = 8  # the fewest last characters of an id a person may type for it


def new_id() -> str:
    """A new UUIDv7 in its canonical text form."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | rand & ((1 << 80) - 1)
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def is_id(value: object) -> bool:
    """Whether ``value`` is a string in the canonical UUID form convstore uses for ids."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def canonical_id(raw: object) -> str:
    """An id as a driver returns it for a column read without SQLAlchemy's UUID conversion (32 hex digits
    from SQLite, a ``uuid.UUID`` from psycopg), in its canonical text form."""
    if isinstance(raw, str):
        if len(raw) == 36:
            return raw
        if len(raw) == 32 and raw.isalnum() and raw.islower():  # SQLite's form, as SQLAlchemy writes it
            return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
    return str(raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw)))


def shortest_endings(
    ids: Iterable[str], among: Iterable[str] = (), minimum: int = MIN_ENDING
) -> dict[str, str]:
    """Each id's shortest ending (at least ``minimum`` characters) that no other id of ``ids`` or ``among``
    ends in: what a person types for it. An ending never stops just after a ``-`` (a hyphen at its start
    reads as an option); an id that is the ending of another is given whole.
    """
    wanted = list(dict.fromkeys(ids))
    groups: dict[str, set[str]] = {}  # ids by their last ``minimum`` characters: only these can collide
    for one in (*wanted, *among):
        groups.setdefault(one[-minimum:], set()).add(one)
    endings: dict[str, str] = {}
    for full in wanted:
        others = [other for other in groups[full[-minimum:]] if other != full]
        size = min(minimum, len(full))
        while size < len(full):
            ending = full[-size:]
            if not ending.startswith("-") and not any(other.endswith(ending) for other in others):
                break
            size += 1
        endings[full] = full[-size:]
    return endings
