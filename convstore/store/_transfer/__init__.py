"""Export and import of whole conversations, every row with its ids, so a conversation moves between stores
(SQLite -> PostgreSQL -> SQLite) unchanged: the same ids, times, token counts and exact payload texts.

Two halves, pure except through the runner:

- **Operations**, in the pattern of ``_ops`` (generators that yield ``Exec`` statements): ``export_ops`` reads
  one conversation's rows into a ``ConversationDump``; ``import_ops`` writes a dump back, ids and all, in one
  transaction; ``import_rows_ops`` writes a plaintext conversation read lazily (``read_conversations``) in
  batches inside its one transaction. Run them like every store operation::

      from convstore.store._engine import run        # run_async for an AsyncEngine
      dump = run(store.engine, export_ops(conversation_id), write=False)
      imported = run(store.engine, import_ops(dump, skip_existing=False), write=True)

- **The JSONL format**: ``header_line()``, ``dump_lines(dump)``, ``read_conversations(lines)`` (one
  ``ConversationRows`` a conversation, its lines parsed and checked as they are read) and
  ``read_dumps(lines)`` (each conversation held whole, as a ``ConversationDump``). Every line is checked
  as ``append`` checks what it writes (strict JSON within ``Limits``, payloads by the codec, token counts
  by the store's counter), and ``TransferFormatError`` names the line and the field, never the content.

Format, version 2: UTF-8, one JSON object a line, each with a ``"kind"``. Line 1 is the header
(``{"kind": "header", "format": "convstore-export", "version": 2, ...}``). Then, for each conversation, its
``conversation`` line, its ``node`` lines (parents first), its ``summary`` lines, its ``branch`` lines and its
``exchange`` lines. The other keys of a line are the columns of that kind's table, named as the columns and
written as the database holds them: ids as canonical UUID text, times as ISO 8601 UTC with microseconds, JSON
settings and step payloads as their exact stored text (nothing is decoded and re-encoded). The columns are
read from the tables in ``_schema``, so a column a migration adds is exported without changes here. On
import, a key for a column the target does not have is refused (its data would be lost); a missing key for a
nullable column (an export from an older schema) imports as NULL.

Sealed conversations (version 2; version 1 files hold plaintext ones only and still import): an encrypted
conversation is exported as it is stored, never decrypted. Its ``conversation`` line keeps ``encryption`` and
its sealed settings; a ``key`` line follows it (``conversation_id``, ``key_id``: the application key that
wrapped the data key, ``wrapped``: the wrapped data key in base64); its node lines carry their sealed payloads
and their ``media`` column, and its sealed media strings come as ``media`` lines after the nodes (``hash``,
``data``). Without the application key named by ``key_id``, nothing of it can be read; a store with a keyring
that holds that key imports it (``open_sealed`` checks every sealed value first, and, once opened, every
payload and setting by the same rules as a plaintext line's). The plaintext of an encrypted conversation is
exported only when asked for (``export_ops(..., cipher=...)``): it is then written as a plaintext
conversation.

Uploaded files (version 4; older files have none and still import): a conversation's Files API uris come
as ``file`` lines after its ``media`` lines (the columns of ``convstore_files``: ``uri``, ``hash``,
``mime_type``, ``expires_at``, ``live_uri``, ``live_expires_at``), and the bytes each one's ``hash`` names
as ``media`` lines: sealed in a sealed conversation (with its nodes' media strings, all under its seal),
their base64 in clear named by its SHA-256 in a plaintext one (whose inline media travel in its payloads).
A file line names bytes of an earlier media line or none (``hash`` null: convstore never had them), its
uris are Files API uris; a media line no node or file names is refused. A plaintext node's ``files``
column (the uris its payload names) is derived from the payload on import, whatever the line says.

Memory: a plaintext conversation is never held whole on import (``read_conversations`` and
``import_rows_ops``: a line at a time, a batch of at most ``CHUNK`` rows or ``BATCH_BYTES`` of payloads). A
sealed one is held whole while it is verified (``ConversationRows.dump()``): its media lines come after its
nodes, and nothing of it is written before every sealed value opened.

Consistency: SQLite reads one snapshot. On PostgreSQL (READ COMMITTED) the reads are ordered so that a turn
appended during the export is wholly in it or wholly out of it: branches are read before nodes (nodes are
append-only, so every head read is among the nodes read), and exchange and summary rows are kept only for
nodes that were read.

The parts, by concern: ``_types`` (the format's name and version, its errors, ``ConversationDump``),
``_tables`` (tables and statements), ``_operations`` (export and import), ``_checks`` (the tree's rules),
``_lines`` (writing lines, decoding a line's fields) and ``_reader`` (reading an export).
"""

from __future__ import annotations

from convstore.store._transfer._checks import check_dump, check_seal, structure_bytes
from convstore.store._transfer._lines import ExportEnd, dump_lines, export_lines, header_line
from convstore.store._transfer._operations import (
    conversation_exists,
    export_ops,
    import_ops,
    import_rows_ops,
    open_sealed,
)
from convstore.store._transfer._reader import ConversationRows, read_conversations, read_dumps
from convstore.store._transfer._types import (
    FORMAT,
    VERSION,
    ConversationDump,
    ConversationExistsError,
    TransferFormatError,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "ConversationDump",
    "ConversationExistsError",
    "ConversationRows",
    "ExportEnd",
    "TransferFormatError",
    "check_dump",
    "check_seal",
    "conversation_exists",
    "dump_lines",
    "export_lines",
    "export_ops",
    "header_line",
    "import_ops",
    "import_rows_ops",
    "open_sealed",
    "read_conversations",
    "read_dumps",
    "structure_bytes",
]
