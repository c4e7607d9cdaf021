"""The errors of the codec, the budget, the store and the transfer format (``convstore.errors`` exports
them)."""

from __future__ import annotations

import re
from typing import Literal


class ConvstoreError(Exception):
    """Base class of every error convstore raises on purpose."""


class CodecError(ConvstoreError, ValueError):
    """Wire JSON that does not fit the Interactions API schema.

    Attributes:
        path: Where the problem is, e.g. ``steps[1].content[0].text``; empty for the top level.
        problems: Every problem found, as ``(path, description)`` pairs; the message shows them all.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        self.path = problems[0][0] if problems else ""
        lines = [f"{path or '<root>'}: {what}" for path, what in problems]
        super().__init__("; ".join(lines) if lines else "invalid wire JSON")


class InvalidExchangeError(ConvstoreError, ValueError):
    """An exchange that cannot be written as given (for example an empty list of steps)."""


class InvalidAgeError(ConvstoreError, ValueError):
    """A retention age that would delete what is being written now: ``purge(older_than=...)`` takes a
    positive ``timedelta`` or a cutoff time in the past (an aware UTC ``datetime``)."""


class LimitExceededError(ConvstoreError, ValueError):
    """Input beyond one of the bounds of ``convstore.Limits``; nothing was written, parsed whole or slept.

    Attributes:
        limit: The name of the ``Limits`` field that was exceeded (``max_depth``, ``max_step_bytes``, ...).
        maximum: Its value.
        actual: How much the input had, when known (for a depth, the scan stops at ``maximum + 1``).
        path: Where: a field path (``steps[1].arguments``), ``line 7`` of an import, ``reply``, ``stream``.
    """

    def __init__(self, limit: str, maximum: float, *, path: str = "", actual: float | None = None) -> None:
        self.limit = limit
        self.maximum = maximum
        self.actual = actual
        self.path = path
        where = f"{path}: " if path else ""
        has = f" (got {actual})" if actual is not None else ""
        what = "nesting deeper than" if limit == "max_depth" else "more than"
        super().__init__(f"{where}{what} {limit}={maximum}{has}; raise it with convstore.Limits({limit}=...)")


class BudgetExceededError(ConvstoreError, ValueError):
    """Even the smallest valid window does not fit the token budget; nothing was sent.

    Attributes:
        max_input_tokens: The budget.
        available_tokens: Estimated tokens that were left for history after the reserve, settings and new
            input (0 when those alone exceed the budget).
        needed_tokens: Estimated tokens of the smallest window that may be sent (from the newest exchange
            that starts with a user's input), when known.
        over_by: When the reserve, the settings and the new input alone exceed the budget: by how many
            estimated tokens (None otherwise).
    """

    def __init__(
        self,
        *,
        max_input_tokens: int,
        available_tokens: int,
        needed_tokens: int | None,
        over_by: int | None = None,
    ) -> None:
        self.max_input_tokens = max_input_tokens
        self.available_tokens = available_tokens
        self.needed_tokens = needed_tokens
        self.over_by = over_by
        if over_by is not None:
            need = f"the reserve, settings and new input alone exceed it by {over_by}"
        elif needed_tokens is not None:
            need = f"the newest exchange needs {needed_tokens}"
        else:
            need = "it needs more"
        super().__init__(
            f"token budget exceeded: {available_tokens} tokens were left for history of a budget of "
            f"{max_input_tokens}, {need}; raise max_input_tokens or shorten the input"
        )


class SearchQueryError(ConvstoreError, ValueError):
    """A search that cannot run as given; nothing was read or changed. The message names what was wrong,
    never the query's text.

    Attributes:
        field: The argument at fault (``query``, ``cursor``, ``limit``, ``step_types``, ``since``...).
        reason: What was wrong: ``empty`` (no word to look for), ``too_long``, ``too_many_words``,
            ``control_character``, ``invalid_text`` (a lone surrogate), ``rejected`` (the engine refused
            it), ``invalid``.
    """

    def __init__(self, field: str, reason: str, detail: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"search {field}: {detail}")


class StoreError(ConvstoreError):
    """Base class of errors raised by the store."""


class NotFoundError(StoreError, LookupError):
    """Something named by id does not exist (or belongs to another owner)."""


_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _shown(value: str) -> str:
    """An id for a message: shown when it has an id's form, else withheld (it may be anything, text too)."""
    return repr(value) if isinstance(value, str) and _ID.fullmatch(value) else "(not an id; withheld)"


class ConversationNotFoundError(NotFoundError):
    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"conversation {_shown(conversation_id)} not found")


class BranchNotFoundError(NotFoundError):
    def __init__(self, conversation_id: str, branch: str) -> None:
        self.conversation_id = conversation_id
        self.branch = branch
        super().__init__(f"branch {branch!r} not found in conversation {conversation_id!r}")


class NodeNotFoundError(NotFoundError):
    def __init__(self, conversation_id: str, node_id: str) -> None:
        self.conversation_id = conversation_id
        self.node_id = node_id
        super().__init__(f"node {_shown(node_id)} not found in conversation {_shown(conversation_id)}")


class AmbiguousIdError(NotFoundError):
    """An id ending that several ids end in: give more of it.

    Attributes:
        ending: The ending given.
        matches: How many ids end in it.
        what: What the ids are of (``"conversation"``, ``"node"``).
    """

    def __init__(self, ending: str, matches: int, *, what: str = "conversation") -> None:
        self.ending = ending
        self.matches = matches
        self.what = what
        super().__init__(f"{ending!r} is the ending of {matches} {what} ids: give more of the id")


class ConflictError(StoreError):
    """The branch head moved since this ``Conversation`` last saw it.

    Another writer appended to (or reset) the branch. Nothing of the failed call was written. Call
    ``conv.refresh()`` (or re-read ``conv.history()``), rebuild what depended on the old history, and retry.

    Attributes:
        conversation_id, branch: where it happened.
        expected_head: the head this writer based its exchange on.
    """

    def __init__(self, conversation_id: str, branch: str, expected_head: str | None) -> None:
        self.conversation_id = conversation_id
        self.branch = branch
        self.expected_head = expected_head
        super().__init__(
            f"branch {branch!r} of conversation {conversation_id!r} moved: it is no longer at node "
            f"{expected_head!r}; refresh and retry"
        )


class ConversationErasedError(StoreError, ValueError):
    """An import of a conversation this store deleted: its id is kept after the delete (ids only), so an
    export taken before it cannot bring it back unasked. ``import_conversation(..., allow_erased=True)``
    imports it anyway.

    Attributes:
        conversation_id: The id.
    """

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(
            f"conversation {_shown(conversation_id)} was deleted from this store: importing it back needs "
            "allow_erased=True"
        )


class BranchExistsError(StoreError, ValueError):
    def __init__(self, conversation_id: str, branch: str) -> None:
        self.conversation_id = conversation_id
        self.branch = branch
        super().__init__(f"branch {branch!r} already exists in conversation {conversation_id!r}")


class StoreBusyError(StoreError, TimeoutError):
    """The database stayed locked by other writers for longer than the configured busy timeout."""


class ShredPendingError(StoreBusyError):
    """A delete committed, but its old pages are still on disk: another connection kept reading or writing
    the SQLite database (or a ``SQLKeyStore``'s) for longer than the busy timeout, or a step of the shred
    failed (a full disk), so its WAL file could not be emptied and still holds what was deleted. Which step
    is pending is ``pending``: ``"search_index"`` when the search index could not be rewritten without the
    deleted words (its old segments, and the WAL, still hold them), ``"wal"`` when the index was rewritten
    (or there is none, as in a key store) but the WAL checkpoint did not finish. The rows are gone from
    every query; the next delete, purge or ``store.checkpoint()`` finishes both once that connection is done
    (or once there is room), and so does opening the store again.

    Attributes:
        conversation_ids: The conversations deleted (whose content may still be in the WAL).
        reason: Why the step failed (its error message), or ``""`` when another connection kept the
            database busy.
        pending: ``"search_index"`` or ``"wal"``: the step that did not finish (see above).
    """

    def __init__(
        self,
        conversation_ids: list[str],
        reason: str = "",
        *,
        pending: Literal["wal", "search_index"] = "wal",
    ) -> None:
        self.conversation_ids = conversation_ids
        self.reason = reason
        self.pending = pending
        shown = ", ".join(_shown(i) for i in conversation_ids[:5])
        more = f" and {len(conversation_ids) - 5} more" if len(conversation_ids) > 5 else ""
        if pending == "search_index":
            failed = f"failed ({reason})" if reason else "was kept waiting past the busy timeout"
            why = (
                f"the search index rewrite that drops their words {failed}: the index's old segments and "
                "the -wal file still hold them"
            )
        else:
            why = (
                f"the WAL checkpoint failed ({reason})"
                if reason
                else "another connection kept the SQLite WAL busy past the busy timeout"
            )
            why += ": the deleted pages stay in the -wal file"
        super().__init__(
            f"deleted {shown}{more}, but {why} until store.checkpoint() (or the next delete, or the next "
            "open) succeeds"
        )


class PurgeIncompleteError(StoreError):
    """A purge stopped on an error after it had deleted some conversations (each delete is whole: those
    listed are gone, the others are as they were).

    Attributes:
        deleted_ids: The conversations deleted before the error.
        error: The error that stopped it (a ``DatabaseError`` naming a full disk, say); also ``__cause__``.
    """

    def __init__(self, deleted_ids: list[str], error: ConvstoreError) -> None:
        self.deleted_ids = deleted_ids
        self.error = error
        super().__init__(f"the purge deleted {len(deleted_ids)} conversations, then stopped: {error}")


class DatabaseError(StoreError):
    """A database failure convstore has no more specific error for.

    The message starts with what a person can act on (``cause``), then gives the engine's own message (its
    first line: on Citus it names the node that failed), never statement parameters or step content.

    Attributes:
        cause: What went wrong, when it is known: ``disk_full``, ``read_only``, ``permission_denied``,
            ``directory_missing``, ``database_missing``, ``connection_refused``, ``connection_lost``,
            ``authentication_failed``, ``io_error``; ``""`` otherwise.
        detail: The engine's message (its first line), or ``""``.
        sqlstate: PostgreSQL's SQLSTATE, or SQLite's error name (``SQLITE_FULL``), when there is one.
    """

    def __init__(
        self, message: str, *, cause: str = "", detail: str = "", sqlstate: str | None = None
    ) -> None:
        self.cause = cause
        self.detail = detail
        self.sqlstate = sqlstate
        super().__init__(message)


class OutcomeUnknownError(DatabaseError):
    """The connection failed while the transaction was committing (a connection lost at ``COMMIT``, a
    Citus worker that died): the write may have been committed, or not. Nothing convstore can read from
    that connection tells which.

    An append is safe to repeat: pass the same ``exchange_id`` again (``conv.append(steps,
    exchange_id=...)``; ``send``/``record`` choose one before they write) and the store returns what was
    stored instead of writing the exchange twice.
    """

    def __init__(
        self, *, cause: str = "connection_lost", detail: str = "", sqlstate: str | None = None
    ) -> None:
        engine = f" ({detail})" if detail else ""
        super().__init__(
            "the database connection failed during COMMIT: the write may have been committed or not"
            f"{engine}; repeat an append with the same exchange_id to find out without writing it twice",
            cause=cause,
            detail=detail,
            sqlstate=sqlstate,
        )


class CorruptionError(StoreError):
    """Stored rows break an invariant that reading them relies on (a node names a media string its
    conversation does not hold). ``Store.check()`` lists every such problem; the message names ids."""

    def __init__(self, message: str, conversation_id: str) -> None:
        super().__init__(f"{message} (conversation {conversation_id})")
        self.conversation_id = conversation_id


class EncryptionError(StoreError):
    """Base class of the errors of encryption at rest. Messages name key ids and conversation, node and
    field ids, never content or key bytes.

    Attributes:
        conversation_id: The conversation whose data could not be read.
    """

    def __init__(self, message: str, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(message)


class KeyringRequiredError(EncryptionError):
    """The conversation is encrypted at rest and the store was opened without a keyring."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(
            f"conversation {_shown(conversation_id)} is encrypted at rest: open the store with "
            "keyring=convstore.Keyring(...)",
            conversation_id,
        )


class KeyNotFoundError(EncryptionError, LookupError):
    """The conversation's data key was wrapped by an application key the keyring does not hold.

    Attributes:
        key_id: The id of the application key that is needed.
    """

    def __init__(self, conversation_id: str, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(
            f"the data key of conversation {_shown(conversation_id)} is wrapped by application key "
            f"{key_id!r}, which the keyring does not hold",
            conversation_id,
        )


class DataKeyNotFoundError(EncryptionError, LookupError):
    """The key store holds no data key for the conversation: it was deleted (crypto-shredded), or the
    store is pointed at the wrong key store. Its encrypted data cannot be read by anyone."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(
            f"the key store holds no data key for conversation {_shown(conversation_id)}: it was deleted "
            "(the conversation is shredded) or this is not the key store it was written with",
            conversation_id,
        )


class DecryptionError(EncryptionError):
    """A ciphertext failed authentication: the key is wrong, or the value was altered or copied from
    another conversation, node or field.

    Attributes:
        key_id: The application key that failed to unwrap the data key (None for a payload).
        where: What could not be decrypted: ``data key``, ``node <id>``, ``summary <id>``, a field name.
    """

    def __init__(self, conversation_id: str, where: str, key_id: str | None = None) -> None:
        self.key_id = key_id
        self.where = where
        by = f" with application key {key_id!r} (wrong key bytes?)" if key_id is not None else ""
        super().__init__(
            f"cannot decrypt the {where} of conversation {_shown(conversation_id)}{by}: authentication "
            "failed (a wrong key, or a value altered or copied from elsewhere)",
            conversation_id,
        )


class SchemaError(StoreError):
    """The database schema is not the one this version of convstore needs."""


class SchemaOutdatedError(SchemaError):
    """The database is at an older schema revision; upgrade it before use.

    Attributes:
        current: the database's revision (None: convstore's tables were never created or were removed).
        head: the revision this library needs.
    """

    def __init__(self, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        super().__init__(
            f"the database is at schema revision {current or 'base'}, this convstore needs {head}. "
            "Upgrade it with `convstore db upgrade URL`, or in Python with "
            "`convstore.Store(url, check_schema=False).upgrade()`"
        )


class SchemaUnknownError(SchemaError):
    """The database holds a revision this library does not know (newer convstore?) or foreign tables."""


class UnverifiedExportWarning(UserWarning):
    """An import read what it could not verify: an export of an older format (no end line, so a file cut
    short at a line boundary looks whole), or a sealed conversation without its seal (exported without its
    keyring), whose structure is then not authenticated. A warning, not an error: ``warnings`` filters turn
    it into one (``warnings.simplefilter("error", UnverifiedExportWarning)``)."""


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
