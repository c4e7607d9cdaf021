"""What front ends list: conversation summaries, ids a person can type, and a database's schema status.

Pure records and operations (``Op``) for the store's ``summaries``, ``short_ids``, ``resolve_id`` and
``stale_conversations``, and ``schema_status``, which looks at a database without opening a store: it reads
the catalog only, so it never builds tables or changes a setting of a database that is not convstore's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import attrs
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.pool import NullPool

from convstore._ids import MIN_ENDING, is_id
from convstore.errors import (
    AmbiguousIdError,
    BranchExistsError,
    BranchNotFoundError,
    ConversationNotFoundError,
    DatabaseError,
    SchemaUnknownError,
)
from convstore.model import ConversationInfo
from convstore.store._engine import Exec, Op
from convstore.store._migrate import _scripts, current_revision
from convstore.store._schema import PREFIX
from convstore.store._schema import branches as b
from convstore.store._schema import conversations as c
from convstore.store._schema import exchanges as x
from convstore.store._schema import media as m
from convstore.store._schema import nodes as n
from convstore.store._statements import OWNED_BY
from convstore.store._writes import hold_conversation

__all__ = [
    "ConversationSummary",
    "SchemaState",
    "SchemaStatus",
    "all_ids",
    "analyze",
    "counts",
    "created_at",
    "first_roots",
    "match_ending",
    "media_piece",
    "message_text",
    "rename_branch",
    "schema_status",
    "sqlite_media_pieces",
]

SchemaState = Literal["missing", "empty", "foreign", "current", "outdated", "newer", "broken"]


@attrs.frozen(kw_only=True)
class SchemaStatus:
    """What a database holds, as far as convstore is concerned (from ``schema_status``).

    Attributes:
        state: ``"missing"``: no such SQLite file; ``"empty"``: no tables at all; ``"foreign"``: tables, none
            of them convstore's (another application's database); ``"current"``: convstore's schema at this
            version's revision; ``"outdated"``: an older revision (``convstore db upgrade`` upgrades it);
            ``"newer"``: a revision this convstore does not know, written by a newer convstore;
            ``"broken"``: convstore's tables without a usable version record.
        revision: The database's revision (None unless convstore's version table holds one).
        head: The revision this convstore needs.
        detail: For ``"broken"``, what is wrong (names tables, never data).
    """

    state: SchemaState
    revision: str | None
    head: str
    detail: str = ""

    @property
    def usable(self) -> bool:
        """Whether a store can read this database as it is."""
        return self.state == "current"

    @property
    def convstore(self) -> bool:
        """Whether the database holds convstore's schema (at any revision)."""
        return self.state in {"current", "outdated", "newer", "broken"}


def _sqlite_file(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if url.database.startswith("file:"):
        return None
    return Path(url.database)


def schema_status(url: str | sa.URL) -> SchemaStatus:
    """Look at a database's schema without opening a store: nothing is created or changed in it.

    A SQLite file that does not exist is not created; an existing one is read as it is (its journal mode and
    other settings are left alone). On PostgreSQL, the catalog of the URL's database is read.

    Args:
        url: A database URL with a synchronous driver (``sqlite:///chat.db``, ``postgresql+psycopg://...``).

    Returns:
        The status; ``status.usable`` when a store can read it.

    Raises:
        DatabaseError: the database cannot be reached (the driver's own message, never data).
        IsADirectoryError: the SQLite path is a folder.
    """
    parsed = sa.make_url(url)
    head, known, _ = _scripts()
    path = _sqlite_file(parsed)
    if path is not None and not path.exists():
        return SchemaStatus(state="missing", revision=None, head=head)
    if path is not None and path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    engine = sa.create_engine(parsed, poolclass=NullPool)
    try:
        conn = engine.connect()
    except exc.DBAPIError as error:
        engine.dispose()
        reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else type(error).__name__
        raise DatabaseError(reason) from None
    try:
        with conn:
            state, revision, detail = _read_catalog(conn)
    finally:
        engine.dispose()
    if state != "current":
        return SchemaStatus(state=state, revision=revision, head=head, detail=detail)
    if revision is None:
        return SchemaStatus(state="broken", revision=None, head=head, detail="its version record is empty")
    if revision == head:
        return SchemaStatus(state="current", revision=revision, head=head)
    return SchemaStatus(state="outdated" if revision in known else "newer", revision=revision, head=head)


def _read_catalog(conn: sa.Connection) -> tuple[SchemaState, str | None, str]:
    """``(state, revision, detail)`` from the catalog; ``"current"`` stands for "convstore's, at some
    revision" until the caller compares it."""
    tables = sa.inspect(conn).get_table_names()
    if not tables:
        return "empty", None, ""
    if not any(name.startswith(PREFIX) for name in tables):
        return "foreign", None, ""
    try:
        _, revision = current_revision(conn)
    except SchemaUnknownError as error:
        return "broken", None, str(error)
    return "current", revision, ""


@attrs.frozen(kw_only=True)
class ConversationSummary:
    """One line of a conversation list: its record, how big it is, when it last moved, how it starts.

    Attributes:
        info: The conversation's record (settings withheld when the store cannot read it).
        short_id: The shortest ending of its id (at least 8 characters) that no other conversation's id the
            store sees ends in: what ``resolve_id`` takes back.
        steps: Nodes stored, every branch counted.
        branches: Branches.
        last_activity: When a branch last moved (its creation time when none did).
        first_message: The text of its first user message, cut to the preview length asked for; None when
            it has none, or when its content is withheld (encrypted, and the store cannot read it).
    """

    info: ConversationInfo
    short_id: str
    steps: int
    branches: int
    last_activity: datetime
    first_message: str | None


def all_ids(owner: str | None) -> Op[list[str]]:
    """Every conversation id ``owner`` (None: anyone) may see."""
    result = yield Exec(sa.select(c.c.id).where(OWNED_BY), {"owner": owner})
    return [row.id for row in result]


def counts(ids: Sequence[str]) -> Op[dict[str, tuple[int, int, datetime | None]]]:
    """``(steps, branches, last branch move)`` of each conversation of ``ids``: two grouped queries."""
    found: dict[str, tuple[int, int, datetime | None]] = dict.fromkeys(ids, (0, 0, None))
    if not ids:
        return found
    steps = yield Exec(
        sa.select(n.c.conversation_id, sa.func.count().label("steps"))
        .where(n.c.conversation_id.in_(ids))
        .group_by(n.c.conversation_id)
    )
    for row in steps:
        found[row.conversation_id] = (row.steps, 0, None)
    moved = yield Exec(
        sa.select(
            b.c.conversation_id, sa.func.count().label("count"), sa.func.max(b.c.updated_at).label("last")
        )
        .where(b.c.conversation_id.in_(ids))
        .group_by(b.c.conversation_id)
    )
    for row in moved:
        found[row.conversation_id] = (found[row.conversation_id][0], row.count, row.last)
    return found


def created_at(conversation_id: str) -> Op[datetime]:
    """When a conversation was created (its place in the newest-first listing)."""
    row = (yield Exec(sa.select(c.c.created_at).where(c.c.id == conversation_id))).first()
    if row is None:
        raise ConversationNotFoundError(conversation_id)
    return row.created_at  # type: ignore[no-any-return]


def message_text(step: Mapping[str, Any], chars: int) -> str | None:
    """The text parts of a user message, spaces folded, cut to ``chars`` (``…`` marks a cut); media and
    other parts as ``[type]``. None when it holds nothing."""
    parts: list[str] = []
    size = 0
    for item in step.get("content") or []:
        if not isinstance(item, Mapping):
            continue
        text = item.get("text") if item.get("type") == "text" else None
        part = " ".join(text[: chars * 2].split()) if isinstance(text, str) else f"[{item.get('type')}]"
        parts.append(part)
        size += len(part) + 1
        if size > chars:
            break
    flat = " ".join(part for part in parts if part)
    if not flat:
        return None
    return flat if len(flat) <= chars else flat[: max(0, chars - 1)] + "…"


def first_roots(ids: Sequence[str]) -> Op[dict[str, str]]:
    """The first root node of each conversation of ``ids`` whose first root is a user message."""
    if not ids:
        return {}
    result = yield Exec(
        sa.select(n.c.conversation_id, n.c.id, n.c.type)
        .where(n.c.conversation_id.in_(ids), n.c.depth == 0)
        .order_by(n.c.created_at, n.c.id)
    )
    first: dict[str, tuple[str, str]] = {}
    for row in result:
        first.setdefault(row.conversation_id, (row.id, row.type))
    return {cid: node_id for cid, (node_id, kind) in first.items() if kind == "user_input"}


def match_ending(text: str, ids: Sequence[str], what: str = "conversation") -> str:
    """The one id of ``ids`` that is ``text`` or ends in it (``MIN_ENDING`` or more characters).

    Raises:
        ConversationNotFoundError: none does (also for text that is no id ending).
        AmbiguousIdError: several do.
    """
    wanted = text.strip().lower()
    if is_id(wanted) and wanted in ids:
        return wanted
    if len(wanted) >= MIN_ENDING:
        found = [one for one in ids if one.endswith(wanted)]
        if len(found) == 1:
            return found[0]
        if found:
            raise AmbiguousIdError(wanted, len(found), what=what)
    raise ConversationNotFoundError(wanted)


def rename_branch(conversation_id: str, branch: str, new_name: str, now: datetime) -> Op[None]:
    """Give a branch another name, in the conversation's write order (its lock first).

    Raises:
        ConversationNotFoundError, BranchNotFoundError, BranchExistsError.
    """
    yield from hold_conversation(conversation_id)
    statement = (
        sa.update(b)
        .where(b.c.conversation_id == sa.bindparam("in_conversation"), b.c.name == sa.bindparam("old"))
        .values(name=sa.bindparam("new"), updated_at=sa.bindparam("now"))
    )
    params = {"in_conversation": conversation_id, "old": branch, "new": new_name, "now": now}
    try:
        result = yield Exec(statement, params)
    except exc.IntegrityError:
        raise BranchExistsError(conversation_id, new_name) from None
    if result.rowcount != 1:
        raise BranchNotFoundError(conversation_id, branch)


def sqlite_media_pieces(engine: object, conversation_id: str, digest: str, size: int) -> Iterator[str] | None:
    """A plaintext media string of a SQLite database read with incremental blob I/O, ``size`` characters
    (ASCII base64: bytes) at a time, each piece in a short read of its own; None where that is not available
    (another backend, an async engine, a driver without ``blobopen``). SQLite's ``substr`` reads the whole
    value for every piece; a blob handle reads only the pages of the piece."""
    if not isinstance(engine, sa.Engine) or engine.dialect.name != "sqlite":
        return None
    if not hasattr(sqlite3.Connection, "blobopen"):  # pragma: no cover -- Python 3.11 has it
        return None
    table = m.name
    find: sa.Select[tuple[Any]] = sa.select(sa.literal_column("rowid")).where(
        m.c.conversation_id == conversation_id, m.c.hash == digest
    )

    def pieces() -> Iterator[str]:
        start = 0
        while True:
            with engine.connect() as conn:
                row = conn.execute(find).first()
                if row is None:
                    raise LookupError(digest)
                raw = conn.connection.driver_connection
                with raw.blobopen(table, "data", row[0], readonly=True) as blob:  # type: ignore[union-attr]
                    blob.seek(start)
                    piece = blob.read(size)
            if piece:
                yield piece.decode("ascii")
            if len(piece) < size:
                return
            start += size

    return pieces()


def media_piece(conversation_id: str, digest: str, start: int, size: int | None) -> Op[str]:
    """``size`` characters of a stored media string from ``start`` (0-based; None: all of it, as stored:
    sealed in an encrypted conversation). An empty string past its end.

    Raises:
        LookupError: no such media string in the conversation.
    """
    value = m.c.data if size is None else sa.func.substr(m.c.data, start + 1, size)
    row = (
        yield Exec(
            sa.select(value.label("data")).where(m.c.conversation_id == conversation_id, m.c.hash == digest)
        )
    ).first()
    if row is None:
        raise LookupError(digest)
    return str(row.data or "")


def analyze() -> Op[None]:
    """PostgreSQL's ANALYZE of the tables a turn's queries plan on."""
    tables = ", ".join(table.name for table in (n, b, x))
    yield Exec(sa.text(f"ANALYZE {tables}"))
