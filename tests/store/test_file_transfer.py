"""Exports carry uploaded files (issue 23): a conversation moved to another store replays after expiry.

``conv.upload`` keeps a file's bytes in the store, the one copy that outlives the Files API's 48 hours. An
export carries them (``media`` lines: plaintext base64 for a plaintext conversation, sealed ciphertext for an
encrypted one) with the conversation's file records (``file`` lines), so that the conversation imported into
another store (a backup restored, a move to PostgreSQL) is continued 49 hours later with fresh uploads of the
same bytes. Tested on both backends and flavours, through the library and the command; the file lines are
checked as strictly as the others, covered by a sealed conversation's seal, and erased with the
conversation.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import httpx
import pytest
import sqlalchemy as sa
from conftest import _pg_schema_url, postgres_base_url, user
from flavours import SyncProxy
from helpers import K1
from test_lifecycle import MEDIA, MODEL, PDF, PNG, sent_media, upload_all

import convstore
from convstore import Keyring, Lifecycle, Limits, MediaNotHeldError
from convstore.store._schema import files, media
from convstore.store._transfer import ExportEnd, TransferFormatError, export_lines, read_dumps
from convstore.testing import Emulator, ManualClock

URI = "https://generativelanguage.googleapis.com/v1beta/files/"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Emulator:
    return Emulator(clock=clock)


@pytest.fixture
def other_url(db_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A second empty database on the same backend as ``db_url``."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'target.db'}"
    else:
        yield from _pg_schema_url(request.getfixturevalue("_postgres_admin"), postgres_base_url())


@pytest.fixture
def make_target(other_url: str, flavour: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``make_target(**options)``: a store of the test's flavour on the second database."""
    closers: list[Any] = []

    def make(**options: Any) -> Any:
        if flavour == "sync":
            opened = convstore.Store(other_url, **options)
            closers.append(opened.close)
            return opened
        portal = request.getfixturevalue("portal")
        opened_async = convstore.AsyncStore(other_url, **options)
        portal.call(opened_async.__aenter__())
        inspector = sa.create_engine(other_url)
        closers.append(lambda: portal.call(opened_async.aclose()))
        closers.append(inspector.dispose)
        return SyncProxy(opened_async, portal, engine=inspector)

    yield make
    for close in closers:
        close()


@contextlib.contextmanager
def emulated(emulator: Emulator) -> Iterator[convstore.InteractionsClient]:
    with httpx.Client(transport=emulator.transport()) as http:
        yield convstore.InteractionsClient("test-key", http_client=http, sleep=lambda _: None)


def keyring() -> Keyring:
    return Keyring({"k1": K1}, active="k1")


def options(encrypted: bool, clock: ManualClock) -> dict[str, Any]:
    return {"lifecycle": Lifecycle(clock=clock), **({"keyring": keyring()} if encrypted else {})}


def lines_of(store: Any, conversation_id: str, **export: Any) -> list[str]:
    return list(export_lines([store.export_conversation(conversation_id, **export)]))


def import_lines(store: Any, lines: list[str]) -> list[bool]:
    return [store.import_conversation(dump) for _, dump in read_dumps(lines)]


def kinds(lines: list[str]) -> list[str]:
    return [json.loads(line)["kind"] for line in lines]


def reended(lines: list[str]) -> list[str]:
    """Lines edited by a test, the end line recomputed (as anyone editing a file can)."""
    end = ExportEnd()
    return [end.add(line) for line in lines[:-1]] + [end.line()]


def held_rows(store: Any, conversation_id: str) -> tuple[int, ...]:
    """The conversation's rows in convstore_files and convstore_media."""
    with store.engine.connect() as db:
        return tuple(
            db.execute(
                sa.select(sa.func.count())
                .select_from(table)
                .where(table.c.conversation_id == conversation_id)
            ).scalar_one()
            for table in (files, media)
        )


def with_uploads(store: Any, client: Any) -> tuple[Any, list[dict[str, Any]]]:
    """A conversation that sent an uploaded image, audio and PDF (and the image inline too: its bytes are
    then both an inline media string and an uploaded file's, one media row), with a fork."""
    conv = store.create_conversation(model=MODEL)
    items = upload_all(conv, client)
    conv.send([{"type": "text", "text": "What are these?"}, *items], client=client)
    inline = {"type": "image", "data": base64.b64encode(PNG).decode(), "mime_type": "image/png"}
    conv.append([user("the image again, inline", inline)])
    conv.fork(branch="side").append([user("a fork made before the expiry")])
    return conv, items


def continued(
    conv: Any, client: Any, emulator: Emulator, items: list[dict[str, Any]], uploaded: int = 3
) -> None:
    """The next turn sends fresh uris whose bytes are the originals (``uploaded`` of them uploaded now, the
    others by an earlier turn); the stored steps are unchanged."""
    before = conv.history_json()
    uploads = emulator.files.uploads
    conv.send("And now?", client=client)
    sent = [item for item in sent_media(emulator.requests[-1].body) if "uri" in item]
    assert len(sent) == 3
    assert all(item["uri"] != original["uri"] for item, original in zip(sent, items, strict=True))
    assert [emulator.files.data(item["uri"]) for item in sent] == [data for data, _ in MEDIA]
    assert emulator.files.uploads == uploads + uploaded
    assert conv.history_json()[: len(before) - 1] == before[:-1]  # a JSON array: its steps unchanged


@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "encrypted"])
def test_an_imported_conversation_replays_its_uploads_after_they_expire(
    make_store, make_target, client, emulator, clock, encrypted
):
    if encrypted:
        pytest.importorskip("cryptography")
    source = make_store(**options(encrypted, clock))
    conv, items = with_uploads(source, client)
    histories = {name: conv.checkout(name).history_json() for name in ("main", "side")}
    lines = lines_of(source, conv.id)
    assert json.loads(lines[0])["version"] == 4
    assert kinds(lines).count("file") == 3
    assert kinds(lines).count("media") == 3  # sealed: the inline image's string is the uploaded one's
    text = "\n".join(lines)
    if encrypted:  # nothing of the bytes in clear, not even as the base64 the store keeps
        assert not any(base64.b64encode(data[:300]).decode() in text for data, _ in MEDIA)
    else:
        assert all(base64.b64encode(data).decode() in text for data, _ in MEDIA)
    (dump,) = [dump for _, dump in read_dumps(lines)]
    assert len(dump.files) == 3
    assert dump.row_count == len(lines) - 2 - ("seal" in kinds(lines))  # no header, end or seal line
    source.delete_conversation(conv.id)  # moved: the target store holds the only copy of the bytes

    target = make_target(**options(encrypted, clock))
    assert import_lines(target, lines) == [True]
    moved = target.conversation(conv.id)
    assert {name: moved.checkout(name).history_json() for name in ("main", "side")} == histories
    assert lines_of(target, conv.id) == lines  # and it exports again the same
    clock.advance(hours=49)
    continued(moved, client, emulator, items)
    continued(moved.checkout("side"), client, emulator, items, uploaded=0)  # the fresh uploads serve it
    assert target.check().ok

    assert held_rows(target, conv.id) != (0, 0)
    target.delete_conversation(conv.id)  # the imported rows are erased with it
    assert held_rows(target, conv.id) == (0, 0)


def test_a_plaintext_export_of_an_encrypted_conversation_carries_its_files_in_clear(
    make_store, make_target, client, emulator, clock
):
    pytest.importorskip("cryptography")
    source = make_store(**options(True, clock))
    conv, items = with_uploads(source, client)
    lines = lines_of(source, conv.id, plaintext=True)
    media = [json.loads(line) for line in lines if json.loads(line)["kind"] == "media"]
    stored = {base64.b64encode(data).decode() for data, _ in MEDIA}
    assert {row["data"] for row in media} == stored
    assert all(row["hash"] == hashlib.sha256(row["data"].encode()).hexdigest() for row in media)
    target = make_target(lifecycle=Lifecycle(clock=clock))
    assert import_lines(target, lines) == [True]
    moved = target.conversation(conv.id)
    assert not moved.encrypted
    clock.advance(hours=49)
    continued(moved, client, emulator, items)


def test_an_export_of_format_3_still_imports_without_the_bytes(
    make_store, make_target, client, emulator, clock
):
    source = make_store(lifecycle=Lifecycle(clock=clock))
    conv, _ = with_uploads(source, client)
    current = lines_of(source, conv.id)
    old = [line for line in current[:-1] if json.loads(line)["kind"] not in ("file", "media")]
    old[0] = json.dumps({**json.loads(old[0]), "version": 3})
    target = make_target(lifecycle=Lifecycle(clock=clock))
    assert import_lines(target, reended([*old, current[-1]])) == [True]
    moved = target.conversation(conv.id)
    assert moved.history_json() == conv.history_json()
    assert not any(status.held for status in moved.files())  # as before format 4: the bytes stayed behind
    clock.advance(hours=49)
    with pytest.raises(MediaNotHeldError):
        moved.send("And now?", client=client)


def test_the_command_carries_the_uploads(db_url, other_url, tmp_path, clock):
    emulator = Emulator(clock=clock)
    with convstore.Store(db_url, lifecycle=Lifecycle(clock=clock)) as source:
        with emulated(emulator) as client:
            conv, items = with_uploads(source, client)
        expected = conv.history_json()
    path = tmp_path / "export.jsonl"
    done = helpers.run_cli("export", "-o", str(path), db=db_url)
    assert done.returncode == 0, done.stderr
    assert kinds(path.read_text(encoding="utf-8").splitlines()).count("file") == 3
    imported = helpers.run_cli("import", str(path), db=other_url)  # streamed: import_rows
    assert imported.returncode == 0, imported.stderr
    with convstore.Store(other_url, lifecycle=Lifecycle(clock=clock)) as target:
        moved = target.conversation(conv.id)
        assert moved.history_json() == expected
        clock.advance(hours=49)
        with emulated(emulator) as client:
            continued(moved, client, emulator, items)
        assert target.check().ok


def test_the_command_carries_an_encrypted_conversations_uploads_sealed(db_url, other_url, tmp_path, clock):
    pytest.importorskip("cryptography")
    emulator = Emulator(clock=clock)
    with convstore.Store(db_url, **options(True, clock)) as source, emulated(emulator) as client:
        conv, items = with_uploads(source, client)
    path = tmp_path / "export.jsonl"
    env = {"CONVSTORE_KEYRING": f"k1={base64.b64encode(K1).decode()}"}
    assert helpers.run_cli("export", "-o", str(path), db=db_url, env=env).returncode == 0
    assert b"PNG-PLAINTEXT-MARKER" not in path.read_bytes()
    imported = helpers.run_cli("import", str(path), db=other_url, env=env)
    assert imported.returncode == 0, imported.stderr
    with convstore.Store(other_url, **options(True, clock)) as target:
        clock.advance(hours=49)
        with emulated(emulator) as client:
            continued(target.conversation(conv.id), client, emulator, items)


# -- file lines are checked like any line, and sealed with the conversation -------------------------------


@pytest.fixture(scope="module")
def plain_lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A plaintext export with two uploaded files, a third uri whose bytes convstore never had."""
    url = f"sqlite:///{tmp_path_factory.mktemp('plain') / 'store.db'}"
    emulator = Emulator()
    with convstore.Store(url) as store, emulated(emulator) as client:
        conv = store.create_conversation(model=MODEL)
        image = conv.upload(PNG, mime_type="image/png", client=client)
        document = conv.upload(PDF, mime_type="application/pdf", client=client)
        theirs = emulator.files.add(PNG[::-1], mime_type="image/png")
        other = {"type": "image", "uri": theirs["uri"], "mime_type": "image/png"}
        conv.append([user("look", image, document, other)])  # nothing recorded for theirs: 2 file lines
        return lines_of(store, conv.id)


def _at(lines: list[str], kind: str, index: int = 0) -> int:
    return [i for i, line in enumerate(lines) if json.loads(line)["kind"] == kind][index]


def _edit(kind: str, index: int = 0, **values: Any) -> Any:
    def mutate(lines: list[str]) -> tuple[list[str], int]:
        at = _at(lines, kind, index)
        lines[at] = json.dumps({**json.loads(lines[at]), **values})
        return lines, at + 1

    return mutate


def _branch_before_files(lines: list[str]) -> tuple[list[str], int]:
    file = _at(lines, "file")
    lines.insert(file, lines.pop(_at(lines, "branch")))
    return lines, file + 2  # the file line after it is out of order


def _second_file(lines: list[str]) -> tuple[list[str], int]:
    at = _at(lines, "file", 1)
    lines[at] = json.dumps({**json.loads(lines[at]), "uri": json.loads(lines[at - 1])["uri"]})
    return lines, at + 1


HOSTILE = {
    "not a files uri": (_edit("file", uri="https://example.com/elsewhere"), "uri", "Files API uri"),
    "live uri not one": (_edit("file", live_uri="file:///etc/passwd"), "live_uri", "Files API uri"),
    "bytes not held": (_edit("file", hash="0" * 64), "hash", "no earlier media line"),
    "not base64": (_edit("media", data="bm90!!"), "data", "expected the base64"),
    "wrong digest": (_edit("media", hash="0" * 64), "hash", "is not the SHA-256"),
    "no mime type": (_edit("file", mime_type="png"), "mime_type", "expected a MIME type"),
    "bad expiry": (_edit("file", expires_at="tomorrow"), "expires_at", "ISO 8601"),
    "unknown field": (_edit("file", secret_column=1), "secret_column", "no such column"),
    "second record": (_second_file, "uri", "a second file"),
    "out of order": (_branch_before_files, "", "out of order: file lines come before branch lines"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_malformed_file_line_is_refused_by_line_and_field(plain_lines, case):
    mutate, field, says = HOSTILE[case]
    lines, number = mutate(list(plain_lines))
    with pytest.raises(TransferFormatError) as refused:
        list(read_dumps(reended(lines)))
    assert refused.value.line == number
    assert (refused.value.field or "") == field
    assert says in str(refused.value)
    assert base64.b64encode(PNG[:30]).decode() not in str(refused.value)


def test_bytes_no_file_names_and_bytes_beyond_the_limit_are_refused(plain_lines):
    orphan = [line for line in plain_lines if json.loads(line)["kind"] != "file"]
    with pytest.raises(TransferFormatError, match="no node or file of this conversation names"):
        list(read_dumps(reended(orphan)))
    small = Limits(max_step_bytes=len(base64.b64encode(PDF)) - 1)
    with pytest.raises(TransferFormatError) as refused:
        list(read_dumps(plain_lines, limits=small))
    assert refused.value.field == "data"
    assert "max_step_bytes" in str(refused.value)


def test_a_cut_export_with_files_is_refused(plain_lines):
    with pytest.raises(TransferFormatError, match="end line"):
        list(read_dumps(plain_lines[:-1]))
    for kind in ("media", "file"):  # cut within them: what is left breaks a rule before the end is missed
        with pytest.raises(TransferFormatError):
            list(read_dumps(plain_lines[: _at(plain_lines, kind) + 1]))


def test_the_command_refuses_a_malformed_file_line_in_one_line_and_writes_nothing(plain_lines, tmp_path):
    lines, number = _edit("file", uri="https://example.com/x")(list(plain_lines))
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(reended(lines)) + "\n", encoding="utf-8")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = helpers.run_cli("import", str(path), db=target)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert f"line {number}" in line
    assert "nothing was imported" in line
    with convstore.Store(target) as store:
        assert list(store.iter_conversations()) == []


TAMPERING = {
    "expiry moved": lambda row: row.update(expires_at="2099-01-01T00:00:00.000000+00:00"),
    "mime type changed": lambda row: row.update(mime_type="text/plain"),
    "uri changed": lambda row: row.update(uri=URI + "someone-elses"),
    "bytes unnamed": lambda row: row.update(hash=None),
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_a_sealed_exports_file_lines_cannot_be_changed(tmp_path, emulator, clock, how):
    pytest.importorskip("cryptography")
    with convstore.Store(f"sqlite:///{tmp_path / 'source.db'}", **options(True, clock)) as source:
        with emulated(emulator) as client:
            conv, _ = with_uploads(source, client)
        lines = lines_of(source, conv.id)
    at = _at(lines, "file")
    row = json.loads(lines[at])
    TAMPERING[how](row)
    lines[at] = json.dumps(row)
    changed = reended(lines)
    with convstore.Store(f"sqlite:///{tmp_path / 'target.db'}", keyring=keyring()) as target:
        with pytest.raises(TransferFormatError, match=r"seal|no node or file"):
            import_lines(target, changed)
        assert list(target.iter_conversations()) == []


def test_sealed_bytes_that_are_no_files_are_refused_once_opened(tmp_path, emulator, clock):
    """Sealed with the conversation's own key (by someone who holds it): the bytes a file names are
    checked as a plaintext media line is, once opened."""
    pytest.importorskip("cryptography")
    with convstore.Store(f"sqlite:///{tmp_path / 'source.db'}", **options(True, clock)) as source:
        with emulated(emulator) as client:
            conv, _ = with_uploads(source, client)
        lines = lines_of(source, conv.id)
    (dump,) = [dump for _, dump in read_dumps(lines)]
    assert dump.key is not None
    cipher = keyring().cipher(conv.id, dump.key)
    at = next(i for i, line in enumerate(lines) if '"application/pdf"' in line and '"kind": "file"' in line)
    file = json.loads(lines[at])
    media_at = next(i for i, line in enumerate(lines) if file["hash"] in line and '"kind": "media"' in line)
    digest = cipher.media_digest("not the base64 of a file!")
    sealed = cipher.seal("media", digest, "not the base64 of a file!")
    lines[media_at] = json.dumps({**json.loads(lines[media_at]), "hash": digest, "data": sealed})
    lines[at] = json.dumps({**file, "hash": digest})
    with convstore.Store(f"sqlite:///{tmp_path / 'target.db'}", keyring=keyring()) as target:
        with pytest.raises(TransferFormatError) as refused:
            import_lines(target, reended(lines))
        files_at = [i for i, line in enumerate(lines) if json.loads(line)["kind"] == "file"]
        assert refused.value.where == f"files[{files_at.index(at)}]"
        assert refused.value.field == "hash"
        assert "base64" in str(refused.value)
        assert list(target.iter_conversations()) == []


@pytest.mark.parametrize(
    "value", ["", '["https://elsewhere/files/zzz"]', None], ids=["empty", "other", "absent"]
)
def test_a_plaintext_nodes_files_column_is_derived_from_its_payload(plain_lines, tmp_path, value):
    """Found by the import fuzz loop: a line's ``files`` value was stored as it came, and a read of the
    branch then failed on it. It is derived from the payload, as ``append`` derives it (an export older
    than the column has none)."""
    at = next(i for i, line in enumerate(plain_lines) if json.loads(line).get("files"))
    row = json.loads(plain_lines[at])
    expected = json.loads(row["files"])
    if value is None:
        del row["files"]
    else:
        row["files"] = value
    lines = list(plain_lines)
    lines[at] = json.dumps(row)
    with convstore.Store(f"sqlite:///{tmp_path / 'target.db'}") as target:
        assert import_lines(target, reended(lines)) == [True]
        moved = target.conversation(row["conversation_id"])
        assert [status.uri for status in moved.files()] == expected
        assert moved.history()
        assert target.check().ok


def test_a_sealed_nodes_files_column_is_checked(tmp_path, emulator, clock):
    pytest.importorskip("cryptography")
    with convstore.Store(f"sqlite:///{tmp_path / 'source.db'}", **options(True, clock)) as source:
        with emulated(emulator) as client:
            conv, _ = with_uploads(source, client)
        lines = lines_of(source, conv.id)
    at = next(i for i, line in enumerate(lines) if json.loads(line).get("files"))
    for value, where in (("[[[1]]]", "read"), (json.dumps([URI + "someone-elses"]), "opened")):
        changed = list(lines)
        changed[at] = json.dumps({**json.loads(lines[at]), "files": value})
        with convstore.Store(f"sqlite:///{tmp_path / f'{where}.db'}", keyring=keyring()) as target:
            with pytest.raises(TransferFormatError) as refused:
                import_lines(target, reended(changed))
            assert refused.value.field == "files", where
            assert list(target.iter_conversations()) == []
