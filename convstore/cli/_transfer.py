"""``export`` and ``import``: whole conversation trees as JSONL, ids kept, between any two stores.

The format and the store operations are in ``convstore.store._transfer``; this is the file handling: an
export is written to a temporary file and renamed when complete (``-o``), and an import reads its file twice,
first to check every line and every conversation id before anything is written, then to write each
conversation in a transaction of its own. Neither pass holds a plaintext conversation whole: lines are read
one at a time (none longer than ``Limits.max_import_line_bytes``), and the second pass writes each such
conversation in batches inside its transaction. A sealed conversation is held whole while it is verified:
``Store.import_conversation`` opens every sealed value before anything of it is written.

Encrypted conversations are exported sealed (ciphertexts and wrapped data key, readable only with the keyring
that wrote them, from ``$CONVSTORE_KEYRING``) unless ``--plaintext`` asks for their content in clear.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

import convstore
from convstore.cli._common import (
    CliError,
    add_keyring_option,
    command,
    display_url,
    load_keyring,
    open_store,
    plural,
    resolve_conversation,
    resolve_db,
)
from convstore.cli._progress import Progress
from convstore.errors import (
    ConversationErasedError,
    ConversationNotFoundError,
    EncryptionError,
    LimitExceededError,
)

__all__ = ["register"]


def register(sub: Any) -> None:
    export = command(
        sub,
        "export",
        "Write conversations (all, or the ids given) as JSONL: every node, branch and usage row, ids kept.",
        "Write conversations (all, or the ids given) as JSONL: every node, branch and usage row, ids kept.\n"
        "`convstore import` reads it back into any store, SQLite or PostgreSQL, unchanged. Encrypted\n"
        "conversations are written sealed: as stored, with their wrapped data keys, readable only with\n"
        "the keyring that wrote them.",
        examples=[
            "convstore export > all.jsonl",
            "convstore export 5f3c9a2e41d7 8d0b6e7c21aa -o two.jsonl",
            "convstore export --db chat.db | convstore import - --db postgresql+psycopg://me@db/convstore",
        ],
    )
    export.add_argument(
        "ids", nargs="*", metavar="ID", help="conversations to export, or their ids' last 8+ characters"
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    export.add_argument(
        "--plaintext",
        action="store_true",
        help="decrypt encrypted conversations and write their content in clear: anyone with the file can "
        "read them, and they import unencrypted (needs --keyring FILE or $CONVSTORE_KEYRING)",
    )
    add_keyring_option(export)
    export.set_defaults(func=cmd_export)

    imp = command(
        sub,
        "import",
        "Read a JSONL export into the store: each conversation in one transaction, with its own ids.",
        "Read a JSONL export into the store: each conversation in one transaction, with its own ids.\n"
        "Every line is checked before anything is written. A conversation whose id is already in the\n"
        "store stops the import (nothing written) unless --skip-existing. Interrupted (Ctrl-C, exit\n"
        "status 130), it says how many it imported: the same command with --skip-existing imports\n"
        "the rest. Encrypted conversations are checked to open with --keyring FILE or\n"
        "$CONVSTORE_KEYRING when one is given.",
        examples=["convstore import all.jsonl", "convstore import all.jsonl --skip-existing --db other.db"],
    )
    imp.add_argument("file", metavar="FILE", help="the export (- for stdin)")
    imp.add_argument(
        "--skip-existing", action="store_true", help="leave conversations already in the store as they are"
    )
    add_keyring_option(imp)
    imp.add_argument(
        "--allow-erased",
        action="store_true",
        help="import conversations this store deleted too (refused by default: an old export must not bring "
        "a deleted conversation back)",
    )
    imp.set_defaults(func=cmd_import)


@contextmanager
def _output(path: str | None) -> Iterator[Callable[[str], None]]:
    """A line writer: to stdout, or to a temporary file renamed to ``path`` only once complete."""
    if path is None:
        stream = sys.stdout.buffer

        def write_out(line: str) -> None:
            stream.write(line.encode("utf-8") + b"\n")

        yield write_out
        stream.flush()
        return
    target = Path(path)
    if not target.parent.is_dir():
        raise CliError(f"no such folder: {target.parent}")
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:

            def write_file(line: str) -> None:
                handle.write(line.encode("utf-8") + b"\n")

            yield write_file
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def cmd_export(args: argparse.Namespace) -> int:
    url = resolve_db(args.db)
    with open_store(url, keyring=load_keyring(args.keyring)) as store:
        ids: list[str] = list(dict.fromkeys(resolve_conversation(store, text) for text in args.ids))
        for conversation_id in ids:  # every id is checked before anything is written
            if not store.has_conversation(conversation_id):
                raise ConversationNotFoundError(conversation_id)
        if not ids:
            ids = [info.id for info in store.iter_conversations()]
        rows = 0
        with _output(args.output) as write, Progress("exporting", len(ids), unit="conversations") as bar:

            def dumps() -> Iterator[convstore.ConversationDump]:
                nonlocal rows
                for conversation_id in ids:
                    dump = store.export_conversation(conversation_id, plaintext=args.plaintext)
                    yield dump
                    rows += dump.row_count
                    bar.advance()

            for line in convstore.export_lines(
                dumps(), store.schema_revision()
            ):  # header, conversations, end line
                write(line)
    print(f"exported {plural(len(ids), 'conversation')} ({plural(rows, 'row')})", file=sys.stderr)
    return 0


def _lines(handle: IO[bytes], limit: int = convstore.Limits().max_import_line_bytes) -> Iterator[str]:
    """The file's lines as text, numbered as ``read_dumps`` numbers them; a non-UTF-8 line is an error,
    and so is a line longer than ``limit`` bytes, refused once ``limit`` bytes of it were read (a megabyte
    at a time)."""
    number = 0
    while True:
        parts: list[bytes] = []
        size = 0
        while piece := handle.readline(_PIECE):
            parts.append(piece)
            size += len(piece)
            if piece.endswith(b"\n"):
                break
            if size > limit:
                raise LimitExceededError("max_import_line_bytes", limit, path=f"line {number + 1}")
        if not parts:
            return
        number += 1
        raw = parts[0] if len(parts) == 1 else b"".join(parts)
        del parts
        if len(raw) > limit + 1:
            raise LimitExceededError("max_import_line_bytes", limit, path=f"line {number}")
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise convstore.TransferFormatError("not UTF-8 text", line=number) from None


_PIECE = 1024 * 1024


def _source(path: str, stack: ExitStack) -> Path:
    """The file to read (twice): ``path``, or stdin copied to a temporary file."""
    if path != "-":
        source = Path(path)
        if source.is_dir():
            raise CliError(f"{path} is a folder: give the export file (or - for stdin)")
        if not source.exists():
            raise CliError(f"no such file: {path}")
        if not source.is_file():
            raise CliError(f"{path} is not a regular file: give the export file (or - for stdin)")
        return source
    spool = stack.enter_context(tempfile.TemporaryDirectory(prefix="convstore-import-"))
    copy = Path(spool) / "stdin.jsonl"
    with copy.open("wb") as handle:
        shutil.copyfileobj(sys.stdin.buffer, handle)
    return copy


def _check_file(
    source: Path, name: str
) -> tuple[list[tuple[int, str, int]], dict[str, tuple[int, convstore.WrappedKey]]]:
    """The first pass: every line checked; ``(line, conversation id, rows)`` of each conversation, and the
    sealed conversations' wrapped data keys with their lines."""
    found: list[tuple[int, str, int]] = []
    keys: dict[str, tuple[int, convstore.WrappedKey]] = {}
    try:
        with source.open("rb") as handle:
            for conversation in convstore.read_conversations(_lines(handle)):
                for _ in conversation.rows():  # checked, counted and let go
                    pass
                found.append((conversation.line, conversation.id, conversation.row_count))
                if conversation.key is not None:
                    keys[conversation.id] = (conversation.line, conversation.key)
    except (convstore.TransferFormatError, LimitExceededError) as error:
        raise CliError(f"{name}: {error}; nothing was imported") from None
    return found, keys


def cmd_import(args: argparse.Namespace) -> int:
    url = resolve_db(args.db)
    with ExitStack() as stack:
        source = _source(args.file, stack)
        found, keys = _check_file(source, args.file)
        store = stack.enter_context(open_store(url, create=True, keyring=load_keyring(args.keyring)))
        if store.keyring is not None:  # a keyring that cannot open one of them: refused before any write
            for cid, (line, wrapped) in keys.items():
                try:
                    store.keyring.unwrap(cid, wrapped)
                except EncryptionError as error:
                    raise CliError(f"{args.file}: line {line}: {error}; nothing was imported") from None
        present = {cid for _, cid, _ in found if store.has_conversation(cid)}
        if present and not args.skip_existing:
            line, cid = next((line, cid) for line, cid, _ in found if cid in present)
            more = f" (and {len(present) - 1} more)" if len(present) > 1 else ""
            raise CliError(
                f"conversation {cid} (line {line}) already exists in {display_url(url)}{more}; "
                "nothing was imported (--skip-existing imports the others)"
            )
        total = sum(rows for _, cid, rows in found if cid not in present)
        imported = skipped = 0
        try:
            with source.open("rb") as handle, Progress("importing", total, unit="rows") as bar:
                for conversation in convstore.read_conversations(_lines(handle), counter=store.counter):
                    if conversation.id in present:
                        skipped += 1
                        continue
                    try:
                        done = _import_one(
                            store, conversation, args.skip_existing, bar.advance, args.allow_erased
                        )
                    except (
                        convstore.TransferFormatError,
                        LimitExceededError,
                        EncryptionError,
                        ConversationErasedError,
                    ) as error:
                        raise CliError(
                            f"{args.file}: conversation at line {conversation.line}: {error}{_kept(imported)}"
                        ) from None
                    imported += int(done)
                    skipped += int(not done)
        except KeyboardInterrupt:
            # Each conversation is written in a transaction of its own: the one under way was rolled back.
            left = len(found) - imported - skipped
            print(
                f"\ninterrupted: imported {imported} of {plural(len(found), 'conversation')} into "
                f"{display_url(url)}; {left} not imported (the same command with --skip-existing "
                "imports the rest)",
                file=sys.stderr,
            )
            return 130
        if imported:
            store.refresh_statistics()
    note = f", skipped {skipped} already in the store" if skipped else ""
    print(f"imported {plural(imported, 'conversation')} into {display_url(url)}{note}")
    return 0


def _import_one(
    store: convstore.Store,
    conversation: convstore.ConversationRows,
    skip_existing: bool,
    progress: Callable[[int], None],
    allow_erased: bool = False,
) -> bool:
    """Write one conversation of the file: a plaintext one streamed (checked and written in batches inside
    its transaction), a sealed one held whole while ``import_conversation`` verifies that every sealed value
    opens, before anything of it is written."""
    if conversation.sealed:
        dump = conversation.dump()
        return store.import_conversation(
            dump, skip_existing=skip_existing, progress=progress, allow_erased=allow_erased
        )
    return store.import_rows(
        conversation, skip_existing=skip_existing, progress=progress, allow_erased=allow_erased
    )


def _kept(imported: int) -> str:
    if not imported:
        return "; nothing was imported"
    return f"; the {plural(imported, 'conversation')} before it {'was' if imported == 1 else 'were'} imported"
