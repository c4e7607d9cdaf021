"""Export and import as store operations (generators of ``Exec``, run by the runner)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import exc

from convstore._ids import is_id
from convstore._limits import DEFAULT_LIMITS, Limits
from convstore.budget import TokenCounter
from convstore.errors import (
    ConversationErasedError,
    ConversationNotFoundError,
    DataKeyNotFoundError,
)
from convstore.store import _keys
from convstore.store import _statements as st
from convstore.store._conversations import SETTINGS
from convstore.store._crypto import DataCipher, WrappedKey
from convstore.store._engine import Exec, Op
from convstore.store._media import files_json, join_media, plain_digest, stored_hashes
from convstore.store._prepare import utcnow
from convstore.store._rows import payload_texts
from convstore.store._search import index_rows
from convstore.store._statements import INSERT_SEARCH
from convstore.store._transfer._checks import check_dump
from convstore.store._transfer._lines import KINDS, _json_problem, _payload_problem, bytes_problem
from convstore.store._transfer._reader import ConversationRows
from convstore.store._transfer._tables import (
    _JSON_COLUMNS,
    _PLURAL,
    _SEALED_TABLES,
    CONVERSATION_EXISTS,
    INSERT,
    INSERT_KEY,
    SELECT,
    TABLES,
    Segments,
    columns,
)
from convstore.store._transfer._types import (
    BATCH_BYTES,
    CHUNK,
    ConversationDump,
    ConversationExistsError,
    TransferFormatError,
)
from convstore.store._writes import stored_rows, write_media

# -- operations ------------------------------------------------------------------------------------------


def _row(kind: str, found: Any, sealed: bool = False) -> dict[str, Any]:
    mapping = found._mapping
    return {column.name: mapping[column.name] for column in columns(kind, sealed)}


def _sort_key(kind: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    if kind == "node":
        return lambda r: (r["depth"], r["created_at"], r["id"])
    if kind == "summary":
        return lambda r: (r["node_id"],)
    if kind == "media":
        return lambda r: (r["hash"],)
    if kind == "file":
        return lambda r: (r["uri"],)
    if kind == "branch":
        return lambda r: (r["created_at"], r["name"])
    return lambda r: (r["created_at"], r["exchange_id"])


def conversation_exists(conversation_id: str) -> Op[bool]:
    """Whether the store holds a conversation of this id."""
    if not is_id(conversation_id):
        return False
    return (yield Exec(CONVERSATION_EXISTS, {"conversation_id": conversation_id})).first() is not None


def export_ops(
    conversation_id: str,
    *,
    owner: str | None = None,
    cipher: DataCipher | None = None,
    inline_key: bool = False,
) -> Op[ConversationDump]:
    """Read every row of one conversation (see the module docstring on consistency).

    A plaintext conversation's payloads come whole (media put back). An encrypted one comes sealed, as
    stored, unless ``cipher`` (its data key) is given: then it is decrypted into a plaintext conversation.

    Args:
        owner: Only a conversation of this owner (another's is not found).
        cipher: Decrypt an encrypted conversation with it (the plaintext export, for a store that asks).
        inline_key: A sealed conversation's wrapped data key is read from this database's key table, in
            the same transaction (the default key store); otherwise ``dump.key`` is None for the caller to
            fill in from its key store.

    Raises:
        ConversationNotFoundError.
        DataKeyNotFoundError: ``inline_key`` and the key table holds no key for it (it is shredded).
    """
    if not is_id(conversation_id):
        raise ConversationNotFoundError(str(conversation_id))
    params = {"conversation_id": conversation_id}
    found = (yield Exec(SELECT["conversation"], params)).first()
    if found is None or (owner is not None and found.owner != owner):
        raise ConversationNotFoundError(conversation_id)
    encrypted = getattr(found, "encryption", None) is not None
    cipher = cipher if encrypted else None
    sealed = encrypted and cipher is None
    rows: dict[str, list[dict[str, Any]]] = {}
    for kind in ("branch", "node", "summary", "exchange"):  # branches before nodes: every head is read
        if kind in TABLES:
            result = (yield Exec(SELECT[kind], params)).all()
            if kind == "node" and not sealed:
                texts = yield from payload_texts(conversation_id, result, cipher)
                rows[kind] = [
                    {**_row(kind, r), "payload": text} for r, text in zip(result, texts, strict=True)
                ]
            elif kind == "summary" and cipher is not None:
                rows[kind] = [
                    {**_row(kind, r), "payload": cipher.open("summary", r.node_id, r.payload)} for r in result
                ]
            else:
                rows[kind] = [_row(kind, r, sealed) for r in result]
            rows[kind].sort(key=_sort_key(kind))
    if not rows["branch"]:
        raise ConversationNotFoundError(conversation_id)  # deleted while it was read
    node_ids = {r["id"] for r in rows["node"]}
    exchange_ids = {r["exchange_id"] for r in rows["node"]}
    conversation = _row("conversation", found)
    media, files = yield from _media_and_files(conversation_id, rows["node"], sealed, cipher)
    key = None
    if sealed:
        if inline_key:
            key = yield from _keys.get_op(conversation_id)
            if key is None:
                raise DataKeyNotFoundError(conversation_id)
    elif cipher is not None:
        opened = {
            field: cipher.open_or_none("conversation", field, conversation[field]) for field in SETTINGS
        }
        conversation = {**conversation, **opened, "encryption": None}
    return ConversationDump(
        conversation=conversation,
        nodes=rows["node"],
        summaries=[r for r in rows.get("summary", []) if r["node_id"] in node_ids],
        branches=rows["branch"],
        exchanges=[r for r in rows["exchange"] if r["exchange_id"] in exchange_ids],
        media=media,
        files=files,
        key=key,
    )


def _media_and_files(
    conversation_id: str, nodes: list[dict[str, Any]], sealed: bool, cipher: DataCipher | None
) -> Op[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """The media and file rows of a dump. Read after the nodes, files before media (media rows are written
    with the rows that name them or before, never removed): every media row a node or a file names is
    read. A sealed conversation's media rows as stored; a plaintext one's, the bytes of its uploaded files
    only (no payload names them; its inline media travel in its payloads)."""
    params = {"conversation_id": conversation_id}
    files = sorted((_row("file", r) for r in (yield Exec(SELECT["file"], params))), key=_sort_key("file"))
    held = {r["hash"] for r in files if r["hash"] is not None}
    if sealed:
        named = {h for r in nodes if r["media"] is not None for h in stored_hashes(r["media"])} | held
        result = (yield Exec(SELECT["media"], params)).all()
        media = sorted((_row("media", r, True) for r in result if r.hash in named), key=_sort_key("media"))
        return media, files
    if not held:
        return [], files
    result = (yield Exec(st.MEDIA, {**params, "hashes": sorted(held)})).all()
    media, plain = _plain_media(conversation_id, result, cipher)
    return media, [{**r, "hash": plain.get(r["hash"])} if r["hash"] is not None else r for r in files]


def _plain_media(
    conversation_id: str, found: Sequence[Any], cipher: DataCipher | None
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Media rows of uploaded files' bytes as a plaintext conversation holds them (opened when ``cipher``
    is given: named by their SHA-256 then), and each stored hash's hash in the rows."""
    rows = []
    renamed = {}
    for row in found:
        data = row.data if cipher is None else cipher.open("media", row.hash, row.data)
        digest = row.hash if cipher is None else plain_digest(data)
        renamed[row.hash] = digest
        rows.append({"conversation_id": conversation_id, "hash": digest, "data": data})
    return sorted(rows, key=_sort_key("media")), renamed


def erasure(conversation_id: str, *, allow_erased: bool) -> Op[None]:
    """Refuse to import a conversation this store deleted (its id is kept: ``convstore_erased``), unless
    ``allow_erased``; then its record of the deletion goes, in the import's transaction.

    Raises:
        ConversationErasedError: deleted here, and not ``allow_erased``.
    """
    params = {"conversation_id": conversation_id}
    if (yield Exec(st.ERASED, params)).first() is None:
        return
    if not allow_erased:
        raise ConversationErasedError(conversation_id)
    yield Exec(st.FORGET_ERASED, params)


def _insert_conversation(row: dict[str, Any], skip_existing: bool, allow_erased: bool) -> Op[bool]:
    """An import's first write: the conversation row, unless its id is here already (False when
    ``skip_existing``) or was deleted here (see ``erasure``)."""
    conversation_id = str(row["id"])
    if (yield Exec(CONVERSATION_EXISTS, {"conversation_id": conversation_id})).first() is not None:
        if skip_existing:
            return False
        raise ConversationExistsError(conversation_id)
    yield from erasure(conversation_id, allow_erased=allow_erased)
    try:
        yield Exec(INSERT["conversation"], row)
    except exc.IntegrityError:
        raise ConversationExistsError(conversation_id) from None  # written by someone else meanwhile
    return True


def import_ops(
    dump: ConversationDump,
    *,
    skip_existing: bool = False,
    progress: Callable[[int], None] | None = None,
    key: WrappedKey | None = None,
    allow_erased: bool = False,
    index: str | None = None,
) -> Op[bool]:
    """Write a dump with its ids, all or nothing (run it with ``write=True``: one transaction).

    Args:
        dump: From ``export_ops`` or ``read_dumps``; its tree is checked first (``check_dump``).
        skip_existing: When the conversation id exists already, write nothing and return False instead of
            raising.
        progress: Called with the number of rows written after each batch.
        key: A sealed conversation's wrapped data key, to write into this database's key table in the same
            transaction (the default key store). None when the caller keeps keys in a key store apart.
        allow_erased: Import it even though this store deleted a conversation of that id (see
            ``erasure``); its record of the deletion goes.
        index: Index a plaintext conversation's steps for search with this text search configuration
            (``_search``); None: not indexed.

    Returns:
        True when written, False when skipped.

    Raises:
        ConversationExistsError: the id exists already (and ``skip_existing`` is false).
        ConversationErasedError: this store deleted it (and not ``allow_erased``).
        TransferFormatError: the dump breaks a rule of the tree.
    """
    check_dump(dump)
    if not (yield from _insert_conversation(dump.conversation, skip_existing, allow_erased)):
        return False
    if key is not None:
        yield Exec(
            INSERT_KEY,
            {
                "conversation_id": dump.id,
                "key_id": key.key_id,
                "wrapped": key.wrapped,
                "created_at": utcnow(),
            },
        )
    if progress is not None:
        progress(1 + (dump.key is not None))
    for kind in KINDS:
        rows: list[dict[str, Any]] = getattr(dump, _PLURAL[kind])
        if kind == "node":
            rows = Segments().assign(rows)
        indexed: list[dict[str, Any]] = []
        if kind == "node" and not dump.sealed:  # kept apart as this store keeps media
            indexed = [] if index is None else rows
            rows, blobs = stored_rows([_derived(row) for row in rows], None)
            yield from write_media(dump.id, blobs, None)
        if kind == "media" and not dump.sealed:  # an inline media string may have the same bytes
            yield from write_media(dump.id, {row["hash"]: row["data"] for row in rows}, None)
            if progress is not None and rows:
                progress(len(rows))
        else:
            yield from _insert_rows(kind, rows, progress)
        if indexed and index is not None:
            yield from _write_index(dump.id, indexed, index)
    return True


def _derived(row: dict[str, Any]) -> dict[str, Any]:
    """A plaintext node row with the columns derived from its payload as this store derives them: its media
    (kept apart by ``stored_rows``), the uris it names (whatever a line said; an older export has none)."""
    return {**row, "media": None, "files": files_json(row["payload"])}


def _insert_rows(kind: str, rows: list[dict[str, Any]], progress: Callable[[int], None] | None) -> Op[None]:
    """Rows of one kind as they are, ``CHUNK`` to an INSERT."""
    if rows and kind not in _SEALED_TABLES:
        raise TransferFormatError(f"this store has no table for {kind} rows", where=_PLURAL[kind])
    for start in range(0, len(rows), CHUNK):
        batch = rows[start : start + CHUNK]
        try:
            yield Exec(INSERT[kind], batch)
        except exc.IntegrityError:
            raise TransferFormatError(
                "the database refused these rows (a reference or a key is wrong)", where=_PLURAL[kind]
            ) from None
        if progress is not None:
            progress(len(batch))


# Characters of indexed text an INSERT of search index rows carries at most: the index rows of a batch are
# built and written a few at a time, never all of them beside the batch (a streamed import stays bounded).
INDEX_BYTES = 512 * 1024


def _write_index(conversation_id: str, rows: Sequence[dict[str, Any]], language: str) -> Op[None]:
    """The search index rows of imported node rows (written after them: they refer to the nodes), built
    from the rows' plaintext payloads a few at a time (``INDEX_BYTES``) and not kept."""
    entries: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        for entry in index_rows(conversation_id, (row,), language):
            entries.append(entry)
            size += len(entry["text"])
        if entries and (len(entries) >= CHUNK or size >= INDEX_BYTES):
            yield Exec(INSERT_SEARCH, entries)
            entries, size = [], 0
    if entries:
        yield Exec(INSERT_SEARCH, entries)


def import_rows_ops(
    conversation: ConversationRows,
    *,
    skip_existing: bool = False,
    progress: Callable[[int], None] | None = None,
    allow_erased: bool = False,
    index: str | None = None,
) -> Op[bool]:
    """``import_ops`` for a plaintext conversation read lazily (``read_conversations``): its rows are read,
    checked and written a batch at a time inside the one transaction, so memory stays bounded by a batch
    whatever the conversation's size. A line that fails its check raises and rolls the whole conversation
    back.

    A sealed conversation is refused before anything is written: its sealed values are verified whole
    before it is written (``conversation.dump()``, then ``open_sealed`` and ``import_ops``, as
    ``Store.import_conversation`` does).

    Returns:
        True when written, False when skipped (its rows are still read, so the file can go on).

    Raises:
        ConversationExistsError: the id exists already (and ``skip_existing`` is false).
        ConversationErasedError: this store deleted it (and not ``allow_erased``).
        TransferFormatError: a line breaks a rule (nothing of the conversation is written), or the
            conversation is sealed.
    """
    if conversation.sealed:
        raise TransferFormatError(
            "a sealed conversation is verified whole before it is written (import its dump())",
            line=conversation.line,
            where="conversation",
            field="encryption",
        )
    if not (yield from _insert_conversation(conversation.conversation, skip_existing, allow_erased)):
        return False
    if progress is not None:
        progress(1)
    batch: list[dict[str, Any]] = []
    batch_kind = ""
    batch_bytes = 0
    segments = Segments()
    for kind, row in conversation.rows():
        if batch and (kind != batch_kind or len(batch) >= CHUNK or batch_bytes >= BATCH_BYTES):
            yield from _write_batch(conversation.id, batch_kind, batch, progress, segments, index=index)
            batch, batch_bytes = [], 0
        batch_kind = kind
        batch.append(row)
        payload = row.get("payload", row.get("data"))  # a step's text, or a file's bytes
        batch_bytes += len(payload) if isinstance(payload, str) else 0
    if batch:
        yield from _write_batch(conversation.id, batch_kind, batch, progress, segments, index=index)
    return True


def _write_batch(
    conversation_id: str,
    kind: str,
    rows: list[dict[str, Any]],
    progress: Callable[[int], None] | None,
    segments: Segments,
    *,
    index: str | None = None,
) -> Op[None]:
    indexed: list[dict[str, Any]] = []
    if kind == "media":  # an uploaded file's bytes; an inline media string may have the same ones
        yield from write_media(conversation_id, {row["hash"]: row["data"] for row in rows}, None)
        if progress is not None:
            progress(len(rows))
        return
    if kind == "node":
        assigned = segments.assign(rows)
        indexed = [] if index is None else assigned
        rows, blobs = stored_rows([_derived(row) for row in assigned], None)
        del assigned
        yield from write_media(conversation_id, blobs, None)
        del blobs
    if kind not in TABLES:
        raise TransferFormatError(f"this store has no table for {kind} rows", where=_PLURAL[kind])
    try:
        yield Exec(INSERT[kind], rows)
    except exc.IntegrityError:
        raise TransferFormatError(
            "the database refused these rows (a reference or a key is wrong)", where=_PLURAL[kind]
        ) from None
    written = len(rows)
    del rows  # the rows as written (media cut out): not needed for the index, built from the plaintext
    if indexed and index is not None:
        yield from _write_index(conversation_id, indexed, index)
    if progress is not None:
        progress(written)


def open_sealed(
    dump: ConversationDump,
    cipher: DataCipher,
    *,
    limits: Limits = DEFAULT_LIMITS,
    counter: TokenCounter | None = None,
) -> None:
    """Check that every sealed value of a sealed dump opens with its data key, before it is imported:
    settings, payloads (with their media put back), summaries, media (named by their keyed hash). Pure: no
    I/O.

    What was opened is then checked as a plaintext line's values are (``read_conversations``): settings as
    strict JSON of their type, payloads by the codec and of their node's type within ``limits``, and each
    node's ``token_count`` against ``counter`` (not checked when None).

    Raises:
        DecryptionError: a value fails authentication (named by field, node or media hash).
        TransferFormatError: an opened value breaks a rule, or a node names media the dump does not hold.
    """
    for field in SETTINGS:
        text = cipher.open_or_none("conversation", field, dump.conversation.get(field))
        problem = (
            None if text is None else _json_problem(text, _JSON_COLUMNS[("conversation", field)], limits)
        )
        if problem is not None:
            raise TransferFormatError(problem, where="conversation", field=field)
    blobs = {}
    for index, row in enumerate(dump.media):
        content = cipher.open("media", row["hash"], row["data"])
        if cipher.media_digest(content) != row["hash"]:
            raise TransferFormatError(
                "is not the hash of its media string", where=f"media[{index}]", field="hash"
            )
        blobs[row["hash"]] = content
    _check_file_bytes(dump.files, blobs, limits)
    for index, row in enumerate(dump.nodes):
        text = cipher.open("node", row["id"], row["payload"])
        if row.get("media") is not None:
            try:
                text = join_media(text, row["media"], blobs.__getitem__)
            except (KeyError, ValueError, TypeError):
                raise TransferFormatError(
                    "names media strings the export does not hold", where=f"nodes[{index}]", field="media"
                ) from None
        found = _payload_problem("node", {**row, "payload": text}, limits, counter)
        if found is None and row.get("files") is not None and row["files"] != files_json(text):
            found = ("files", "is not the Files API uris its payload names")
        if found is not None:
            raise TransferFormatError(found[1], where=f"nodes[{index}]", field=found[0])
    for index, row in enumerate(dump.summaries):
        text = cipher.open("summary", row["node_id"], row["payload"])
        found = _payload_problem("summary", {**row, "payload": text}, limits, counter)
        if found is not None:
            raise TransferFormatError(found[1], where=f"summaries[{index}]", field=found[0])


def _check_file_bytes(files: list[dict[str, Any]], blobs: dict[str, str], limits: Limits) -> None:
    """The opened bytes each file names: base64 within ``max_step_bytes``, as ``upload`` stores them."""
    for index, row in enumerate(files):
        problem = None if row["hash"] not in blobs else bytes_problem(blobs[row["hash"]], limits)
        if problem is not None:
            raise TransferFormatError(problem, where=f"files[{index}]", field="hash")
