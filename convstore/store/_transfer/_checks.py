"""The rules that tie a conversation's rows together (parents first, heads exist, totals add up)."""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from convstore.store._crypto import ENCRYPTION, DataCipher
from convstore.store._media import stored_hashes
from convstore.store._transfer._lines import KINDS, file_problem, media_problem
from convstore.store._transfer._tables import _PLURAL, TABLES, columns
from convstore.store._transfer._types import ConversationDump, TransferFormatError

# -- checks ----------------------------------------------------------------------------------------------


class _TreeCheck:
    """The rules that tie a conversation's rows together, checked row by row in file order."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        self.depths: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.exchange_of: dict[str, str] = {}
        # Per exchange: [nodes, nodes whose parent is outside it, least depth, greatest depth].
        self.exchanges: dict[str, list[int]] = {}
        self.exchange_ids: set[str] = set()
        self.seen: dict[str, set[Any]] = {
            "summary": set(),
            "branch": set(),
            "exchange": set(),
            "media": set(),
            "file": set(),
        }
        self.media_named: set[str] = set()  # the media hashes sealed nodes and files name

    def add(self, kind: str, row: Mapping[str, Any]) -> tuple[str, str] | None:
        """``(field, problem)`` when ``row`` breaks a rule, else None (and the row is remembered)."""
        if row.get("conversation_id") != self.conversation_id:
            return "conversation_id", "does not match the conversation line it follows"
        if kind == "node":
            return self._media(row) or self._node(row)
        key = {
            "summary": "node_id",
            "branch": "name",
            "exchange": "exchange_id",
            "media": "hash",
            "file": "uri",
        }[kind]
        if row[key] in self.seen[kind]:
            return key, f"a second {kind} with this {key} in one conversation"
        problem = self._refers(kind, row)
        if problem is None:
            self.seen[kind].add(row[key])
        return problem

    def _refers(self, kind: str, row: Mapping[str, Any]) -> tuple[str, str] | None:
        """A reference of the row to an earlier row of the conversation that is not there (a file's bytes:
        remembered as named)."""
        if kind == "summary" and row["node_id"] not in self.depths:
            return "node_id", "names no earlier node of this conversation"
        if kind == "branch" and row["head_id"] is not None and row["head_id"] not in self.depths:
            return "head_id", "names no earlier node of this conversation"
        if kind == "file" and row["hash"] is not None:
            if row["hash"] not in self.seen["media"]:
                return "hash", "names bytes no earlier media line of this conversation holds"
            self.media_named.add(row["hash"])
        return None

    def _node(self, row: Mapping[str, Any]) -> tuple[str, str] | None:
        if row["id"] in self.depths:
            return "id", "a second node with this id in one conversation"
        parent = row["parent_id"]
        if parent is None:
            if row["depth"] != 0:
                return "depth", "a node without a parent has depth 0"
        elif parent not in self.depths:
            return "parent_id", "names no earlier node of this conversation (parents come first)"
        elif row["depth"] != self.depths[parent] + 1:
            return "depth", "is not its parent's depth + 1"
        if row["total_tokens"] != row["token_count"] + (0 if parent is None else self.totals[parent]):
            return "total_tokens", "is not its parent's total_tokens + its token_count"
        self.depths[row["id"]] = row["depth"]
        self.totals[row["id"]] = row["total_tokens"]
        exchange_id = row["exchange_id"]
        self.exchange_of[row["id"]] = exchange_id
        self.exchange_ids.add(exchange_id)
        starts = parent is None or self.exchange_of[parent] != exchange_id
        tally = self.exchanges.setdefault(exchange_id, [0, 0, row["depth"], row["depth"]])
        tally[0] += 1
        tally[1] += starts
        tally[2] = min(tally[2], row["depth"])
        tally[3] = max(tally[3], row["depth"])
        return None

    def _media(self, row: Mapping[str, Any]) -> tuple[str, str] | None:
        """Remember the hashes a sealed node's media column names (a problem when it is malformed)."""
        if row.get("media") is not None:
            try:
                self.media_named.update(stored_hashes(row["media"]))
            except (ValueError, TypeError, AttributeError):
                return "media", "expected the JSON of [[offset, hash], ...]"
        return None

    def finish(self) -> tuple[str, str] | None:
        """``(where, problem)`` when the rows as a whole break a rule, else None."""
        for exchange_id, (size, starts, least, greatest) in self.exchanges.items():
            # One chain: one start, and as many levels as nodes (what Store.check() verifies too).
            if starts != 1 or greatest - least + 1 != size:
                return "nodes", f"the nodes of exchange {exchange_id} do not form one chain"
        for exchange_id in self.seen["exchange"] - self.exchange_ids:
            return "exchanges", f"exchange {exchange_id} names no exchange of this conversation's nodes"
        if self.media_named - self.seen["media"]:
            return "media", "nodes name media strings the export does not hold"
        if self.seen["media"] - self.media_named:
            return "media", "media lines that no node or file of this conversation names"
        return None if self.seen["branch"] else ("branches", "a conversation needs at least one branch")


def check_dump(dump: ConversationDump) -> None:
    """Check the rules of the tree (references, parents first, depths, one branch at least).

    Raises:
        TransferFormatError: naming the row by its place in the dump.
    """
    sealed = dump.sealed
    if sealed and dump.conversation["encryption"] != ENCRYPTION:
        raise TransferFormatError("an encryption scheme this convstore does not know", where="conversation")
    if sealed and dump.key is None:
        raise TransferFormatError("a sealed conversation needs its wrapped data key", where="key")
    if not sealed and dump.key is not None:
        raise TransferFormatError("a plaintext conversation has no key", where="key")
    check = _TreeCheck(dump.id)
    for kind in KINDS:
        for index, row in enumerate(getattr(dump, _PLURAL[kind])):
            known = kind in TABLES or sealed
            missing = [c.name for c in columns(kind, sealed) if c.name not in row] if known else []
            if missing:
                raise TransferFormatError("missing", where=f"{_PLURAL[kind]}[{index}]", field=missing[0])
            problem = _row_problem(kind, row, sealed) or check.add(kind, row)
            if problem is not None:
                raise TransferFormatError(problem[1], where=f"{_PLURAL[kind]}[{index}]", field=problem[0])
    last = check.finish()
    if last is not None:
        raise TransferFormatError(last[1], where=last[0])


def _row_problem(kind: str, row: Mapping[str, Any], sealed: bool) -> tuple[str, str] | None:
    """What a line's reading checks of a media or file row and a dump made otherwise may lack (the length
    of the bytes is checked as they are read, against the reader's limits)."""
    if kind == "media" and not sealed:
        return media_problem(row, None)
    return file_problem(row) if kind == "file" else None


# -- a sealed conversation's seal ---------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return (
        value.astimezone(timezone.utc).isoformat(timespec="microseconds")
        if isinstance(value, datetime)
        else value
    )


def structure_bytes(dump: ConversationDump) -> bytes:
    """Every row of a dump but its key, canonically (kind, then the row's columns sorted by name): what a
    sealed conversation's seal authenticates. Ids, parents, depths, order, branches and their heads,
    settings, usage: any change to any of them changes these bytes."""
    parts = []
    kinds = (
        ("conversation", [dump.conversation]),
        *((kind, getattr(dump, _PLURAL[kind])) for kind in _SEALED_KINDS),
    )
    for kind, rows in kinds:
        for row in rows:
            plain = {name: _plain(value) for name, value in row.items()}
            parts.append(json.dumps([kind, plain], sort_keys=True, ensure_ascii=False))
    return "\n".join(parts).encode("utf-8", "surrogatepass")


_SEALED_KINDS = KINDS  # file rows (format 4) too: a conversation without any seals as it did before


def check_seal(dump: ConversationDump, cipher: DataCipher) -> bool:
    """Verify a sealed dump's seal with its data key.

    Returns:
        True when it matches; False when the dump carries none (exported without its keyring, or by a
        convstore before format 3): its structure is then unverified.

    Raises:
        TransferFormatError: the seal does not match: a row was changed, added, removed or moved.
    """
    if dump.seal is None:
        return False
    if not hmac.compare_digest(cipher.structure_mac(structure_bytes(dump)), dump.seal):
        raise TransferFormatError(
            "the sealed conversation's rows do not match its seal: one was changed, added, removed or moved",
            where="seal",
        )
    return True
