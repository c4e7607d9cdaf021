"""Encrypted conversations can move: sealed exports, attacked from outside, on both backends.

An encrypted conversation is exported sealed (its ciphertexts and wrapped data key, nothing in clear): the
file is grepped for every secret the conversation holds. A store with the same keyring imports it and reads
it byte for byte as the source does; a store with another keyring refuses it with a typed error and writes
nothing. Plaintext comes out only when asked for. Old (version 1) files still import.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest
import sqlalchemy as sa
from conftest import _pg_schema_url, model, postgres_base_url, user
from helpers import K1, K2, WRONG

import convstore
from convstore import (
    DecryptionError,
    KeyNotFoundError,
    Keyring,
    KeyringRequiredError,
    SQLKeyStore,
    TokenBudget,
)
from convstore.store._crypto import WrappedKey
from convstore.store._engine import run
from convstore.store._transfer import (
    ConversationExistsError,
    ExportEnd,
    TransferFormatError,
    dump_lines,
    export_lines,
    header_line,
    import_rows_ops,
    read_conversations,
    read_dumps,
)

pytest.importorskip("cryptography")

SECRETS = ("my diagnosis is stage two", "Be my doctor", "patient-7731", "get_dosage")
PICTURE = base64.b64encode(b"an x-ray of the left lung " * 200).decode()  # a media string, kept apart


def ring(**keys: bytes) -> Keyring:
    return Keyring(keys, active=list(keys)[-1])


@pytest.fixture
def other_url(db_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A second empty database on the same backend as ``db_url``."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'target.db'}"
    else:
        yield from _pg_schema_url(request.getfixturevalue("_postgres_admin"), postgres_base_url())


def build(store: Any) -> str:
    """An encrypted conversation with everything that is sealed: settings, payloads, media, a summary."""
    conv = store.create_conversation(
        model="gemini-3-flash-preview",
        system_instruction=SECRETS[1],
        tools=[{"type": "function", "name": SECRETS[3], "parameters": {"type": "object"}}],
        metadata={"patient": SECRETS[2]},
    )
    image = {"type": "image", "data": PICTURE, "mime_type": "image/png"}
    conv.append(
        [{"type": "user_input", "content": [{"type": "text", "text": SECRETS[0]}, image]}, model("ok")]
    )
    for n in range(12):
        conv.append([user(f"question {n} " + "words " * 40), model(f"answer {n}")])
    conv.fork(branch="alt").append([user("another way"), model("sure")])
    budget = TokenBudget(
        max_input_tokens=1500,
        reserve_output_tokens=0,
        compact=lambda dropped: [model(f"summary of {len(dropped)}")],
    )
    conv.history(budget=budget)  # stores a sealed summary
    with store.engine.connect() as db:
        assert db.execute(sa.text("SELECT count(*) FROM convstore_summaries")).scalar_one() == 1
    return conv.id


def sealed_lines(store: Any, conversation_id: str, **options: Any) -> list[str]:
    dump = store.export_conversation(conversation_id, **options)
    return list(export_lines([dump], store.schema_revision()))


def readings(store: Any, conversation_id: str) -> dict[str, Any]:
    """What a reader gets back, as text: every branch's history, the tree, the settings."""
    conv = store.conversation(conversation_id)
    branches = sorted(branch.name for branch in conv.branches())
    return {
        "histories": {name: conv.checkout(name).history_json() for name in branches},
        "nodes": [node.raw_json for node in conv.tree().nodes],
        "info": (conv.system_instruction, conv.tools, conv.metadata, conv.model),
        "encrypted": conv.encrypted,
    }


def reended(lines: list[str]) -> list[str]:
    """Lines edited by a test, with the end line recomputed (as anyone editing a file can)."""
    end = ExportEnd()
    return [end.add(line) for line in lines[:-1]] + [end.line()]


def import_lines(store: Any, lines: list[str], **options: Any) -> list[bool]:
    return [store.import_conversation(dump, **options) for _, dump in read_dumps(lines)]


def test_a_sealed_export_holds_no_plaintext_and_imports_byte_for_byte(make_store, other_url):
    source = make_store(keyring=ring(k1=K1))
    conversation_id = build(source)
    lines = sealed_lines(source, conversation_id)
    text = "\n".join(lines)
    for secret in (*SECRETS, PICTURE[:64], "summary of", "question 3"):
        assert secret not in text
    assert base64.b64encode(K1).decode() not in text
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds[:3] == ["header", "conversation", "key"]
    assert "media" in kinds
    assert "summary" in kinds
    assert json.loads(lines[2])["key_id"] == "k1"

    with convstore.Store(other_url, keyring=ring(k1=K1)) as target:
        assert import_lines(target, lines) == [True]
        assert readings(target, conversation_id) == readings(source, conversation_id)
        assert readings(target, conversation_id)["encrypted"] is True
        # The ciphertexts moved unchanged: the target's export is the source's, byte for byte.
        assert sealed_lines(target, conversation_id) == lines
        assert target.check().ok
        with pytest.raises(ConversationExistsError):
            import_lines(target, lines)
        assert import_lines(target, lines, skip_existing=True) == [False]


@pytest.mark.parametrize(
    ("keys", "error"),
    [({"k1": WRONG}, DecryptionError), ({"k2": K2}, KeyNotFoundError)],
    ids=["wrong-key-bytes", "key-not-in-keyring"],
)
def test_another_keyring_refuses_a_sealed_import_and_writes_nothing(make_store, other_url, keys, error):
    source = make_store(keyring=ring(k1=K1))
    lines = sealed_lines(source, build(source))
    with convstore.Store(other_url, keyring=ring(**keys)) as target:
        with pytest.raises(error) as raised:
            import_lines(target, lines)
        assert isinstance(raised.value, convstore.EncryptionError)
        assert list(target.iter_conversations()) == []
        with target.engine.connect() as db:
            assert db.execute(sa.text("SELECT count(*) FROM convstore_keys")).scalar_one() == 0


def test_an_altered_sealed_export_is_refused(make_store, other_url):
    source = make_store(keyring=ring(k1=K1))
    lines = sealed_lines(source, build(source))
    at = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "node")
    row = json.loads(lines[at])
    row["payload"] = row["payload"][:-3] + ("AAA" if row["payload"][-3:] != "AAA" else "BBB")
    altered = reended([*lines[:at], json.dumps(row), *lines[at + 1 :]])
    with convstore.Store(other_url, keyring=ring(k1=K1)) as target:
        with pytest.raises(DecryptionError, match=row["id"]):
            import_lines(target, altered)
        assert list(target.iter_conversations()) == []


def test_plaintext_comes_out_only_when_asked_for(make_store, other_url):
    source = make_store(keyring=ring(k1=K1))
    conversation_id = build(source)
    assert "key" in [json.loads(line)["kind"] for line in sealed_lines(source, conversation_id)]
    clear = sealed_lines(source, conversation_id, plaintext=True)
    text = "\n".join(clear)
    assert all(secret in text for secret in SECRETS)
    assert PICTURE in text  # media put back in the payload, as plaintext exports hold them
    assert json.loads(clear[1])["encryption"] is None
    assert "key" not in [json.loads(line)["kind"] for line in clear]
    with convstore.Store(other_url) as target:  # no keyring needed: it is a plaintext conversation now
        import_lines(target, clear)
        mine, theirs = readings(target, conversation_id), readings(source, conversation_id)
        assert mine["encrypted"] is False
        assert (mine["histories"], mine["nodes"], mine["info"]) == (
            theirs["histories"],
            theirs["nodes"],
            theirs["info"],
        )
    with pytest.raises(KeyringRequiredError):
        make_store().export_conversation(conversation_id, plaintext=True)

    # Exported without a keyring, it is sealed (a backup operator needs no key), though without the seal
    # over its structure, which needs the data key.
    def rows(lines: list[str]) -> list[str]:
        return [line for line in lines if json.loads(line)["kind"] not in {"seal", "end"}]

    keyless = sealed_lines(make_store(), conversation_id)
    assert "seal" not in [json.loads(line)["kind"] for line in keyless]
    assert rows(keyless) == rows(sealed_lines(source, conversation_id))


def test_a_sealed_import_rewraps_its_key_for_the_target_and_its_key_store(make_store, other_url, tmp_path):
    keys_a = SQLKeyStore(f"sqlite:///{tmp_path / 'keys-a.db'}")
    keys_b = SQLKeyStore(f"sqlite:///{tmp_path / 'keys-b.db'}")
    try:
        source = make_store(keyring=ring(k1=K1), key_store=keys_a)
        conversation_id = build(source)
        lines = sealed_lines(source, conversation_id)
        assert json.loads(lines[2])["key_id"] == "k1"
        rotating = Keyring({"k1": K1, "k2": K2}, active="k2")
        with convstore.Store(other_url, keyring=rotating, key_store=keys_b) as target:
            import_lines(target, lines)
            wrapped = keys_b.get_key(conversation_id)
            assert wrapped is not None
            assert wrapped.key_id == "k2"  # re-wrapped by the target's active key
            with target.engine.connect() as db:  # the target's own key table is not used
                assert db.execute(sa.text("SELECT count(*) FROM convstore_keys")).scalar_one() == 0
        with convstore.Store(other_url, keyring=ring(k2=K2), key_store=keys_b) as newest:
            assert readings(newest, conversation_id) == readings(source, conversation_id)
    finally:
        keys_a.close()
        keys_b.close()


def test_an_owner_store_exports_and_imports_only_its_own(make_store, other_url):
    source = make_store(keyring=ring(k1=K1), owner="ana")
    conversation_id = build(source)
    with pytest.raises(convstore.ConversationNotFoundError):
        make_store(keyring=ring(k1=K1), owner="ben").export_conversation(conversation_id)
    lines = sealed_lines(source, conversation_id)
    with convstore.Store(other_url, keyring=ring(k1=K1)) as target:
        with pytest.raises(ValueError, match="another owner"):
            import_lines(target.for_owner("ben"), lines)
        import_lines(target.for_owner("ana"), lines)
        assert [info.id for info in target.for_owner("ana").iter_conversations()] == [conversation_id]


def test_sealed_lines_are_checked_like_any_line(make_store):
    source = make_store(keyring=ring(k1=K1))
    lines = sealed_lines(source, build(source))
    without_key = [line for line in lines if json.loads(line)["kind"] != "key"]
    with pytest.raises(TransferFormatError, match="key line"):
        list(read_dumps(without_key))
    bad_key = json.loads(lines[2])
    bad_key["wrapped"] = "AAAA"
    with pytest.raises(TransferFormatError) as raised:
        list(read_dumps([*lines[:2], json.dumps(bad_key), *lines[3:]]))
    assert (raised.value.line, raised.value.field) == (3, "wrapped")
    without_media = [line for line in lines if json.loads(line)["kind"] != "media"]
    with pytest.raises(TransferFormatError, match="media strings"):
        list(read_dumps(without_media))
    # A plaintext conversation line claiming encryption, with plaintext rows, is refused at the first row.
    plain = make_store().create_conversation()
    plain.append([user("in clear")])
    claimed = list(export_lines([make_store().export_conversation(plain.id)]))
    claimed[1] = claimed[1].replace('"encryption": null', '"encryption": "aes-256-gcm/1"')
    with pytest.raises(TransferFormatError) as refused:
        list(read_dumps(claimed))
    assert (refused.value.line, refused.value.field) == (3, "payload")


def test_a_version_1_export_still_imports(make_store, other_url):
    plain = make_store()
    conv = plain.create_conversation(system_instruction="v1")
    conv.append([user("old file"), model("still reads")])
    lines = [header_line(), *dump_lines(plain.export_conversation(conv.id))]  # no end line, as version 1
    header = json.loads(lines[0])
    assert header["version"] == 4
    lines[0] = json.dumps({**header, "version": 1})
    with convstore.Store(other_url) as target:
        with pytest.warns(convstore.UnverifiedExportWarning, match="no end line"):
            assert import_lines(target, lines) == [True]
        assert target.conversation(conv.id).history() == conv.history()


def run_cli(*args: str, db: str, keyring: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {} if keyring is None else {"CONVSTORE_KEYRING": keyring}
    return helpers.run_cli(*args, db=db, env=env, text=False)


def test_the_command_exports_sealed_and_plaintext_only_with_its_flag(db_url, other_url, tmp_path):
    with convstore.Store(db_url, keyring=ring(k1=K1)) as source:
        conversation_id = build(source)
        expected = readings(source, conversation_id)
    k1 = f"k1={base64.b64encode(K1).decode()}"
    sealed = tmp_path / "sealed.jsonl"
    done = run_cli("export", "-o", str(sealed), db=db_url)  # no keyring: written sealed
    assert done.returncode == 0, done.stderr
    text = sealed.read_text(encoding="utf-8")
    assert not any(secret in text for secret in SECRETS)
    refused = run_cli("export", "--plaintext", conversation_id, db=db_url)
    assert refused.returncode == 1
    assert b"is encrypted: pass --keyring FILE or set $CONVSTORE_KEYRING" in refused.stderr
    assert not any(secret.encode() in refused.stdout + refused.stderr for secret in SECRETS)
    clear = run_cli("export", "--plaintext", conversation_id, db=db_url, keyring=k1)
    assert clear.returncode == 0, clear.stderr
    assert all(secret.encode() in clear.stdout for secret in SECRETS)
    assert "--plaintext" in run_cli("export", "--help", db=db_url).stdout.decode()

    wrong = run_cli("import", str(sealed), db=other_url, keyring=f"k1={base64.b64encode(WRONG).decode()}")
    assert wrong.returncode == 1
    assert b"DecryptionError" in wrong.stderr or b"cannot decrypt" in wrong.stderr
    assert b"nothing was imported" in wrong.stderr
    imported = run_cli("import", str(sealed), db=other_url, keyring=k1)
    assert imported.returncode == 0, imported.stderr
    with convstore.Store(other_url, keyring=ring(k1=K1)) as target:
        assert readings(target, conversation_id) == expected


# -- with the import as strict as append (issue 15): what can be checked of a sealed conversation is -------


def _resealed(lines: list[str], edit: Any, keyring: Keyring) -> list[str]:
    """The lines with the last node's payload opened, changed by ``edit`` (text -> text) and sealed again
    with the conversation's own data key: an export that authenticates, made by someone holding the key."""
    key = json.loads(lines[2])
    wrapped = WrappedKey(key_id=key["key_id"], wrapped=base64.b64decode(key["wrapped"]))
    cipher = keyring.cipher(key["conversation_id"], wrapped)
    at = max(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "node")
    row = json.loads(lines[at])
    row["payload"] = cipher.seal("node", row["id"], edit(cipher.open("node", row["id"], row["payload"])))
    return reended([*lines[:at], json.dumps(row), *lines[at + 1 :]])


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda text: text[:-1] + ', "type": "model_output"}', "a key twice"),
        (lambda text: text.replace('"sure"', "NaN"), "payload: expected JSON text"),
        (lambda text: json.dumps({**json.loads(text), "content": "str"}), "refused by the codec"),
        (lambda text: json.dumps(model("sure " * 400)), "token_count"),
    ],
    ids=["key-twice", "nan", "codec", "token-count"],
)
def test_a_sealed_payload_is_checked_as_strictly_once_opened(make_store, other_url, edit, says):
    keyring = ring(k1=K1)
    source = make_store(keyring=keyring)
    lines = _resealed(sealed_lines(source, build(source)), edit, keyring)
    ((_, dump),) = read_dumps(lines)  # ciphertexts: nothing to see before they are opened
    with convstore.Store(other_url, keyring=ring(k1=K1)) as target:
        with pytest.raises(TransferFormatError, match=says) as raised:
            target.import_conversation(dump)
        assert raised.value.where.startswith("nodes[")
        assert list(target.iter_conversations()) == []
        with target.engine.connect() as db:
            assert db.execute(sa.text("SELECT count(*) FROM convstore_keys")).scalar_one() == 0


def test_sealed_lines_are_parsed_strictly_and_within_the_line_limit(make_store):
    source = make_store(keyring=ring(k1=K1))
    lines = sealed_lines(source, build(source))
    twice = [*lines[:2], lines[2][:-1] + ', "key_id": "k1"}', *lines[3:]]
    with pytest.raises(TransferFormatError, match="line 3: key_id: an object gives a key twice"):
        list(read_dumps(twice))
    media = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "media")
    small = convstore.Limits(max_import_line_bytes=len(lines[media]) - 1)
    with pytest.raises(convstore.LimitExceededError, match="max_import_line_bytes") as raised:
        list(read_dumps(lines, limits=small))
    assert raised.value.path == f"line {media + 1}"


def test_a_sealed_conversation_is_not_streamed(make_store, other_url):
    source = make_store(keyring=ring(k1=K1))
    lines = sealed_lines(source, build(source))
    with convstore.Store(other_url, keyring=ring(k1=K1)) as target:
        for conversation in read_conversations(lines):
            assert conversation.sealed
            with pytest.raises(TransferFormatError, match="verified whole"):
                run(target.engine, import_rows_ops(conversation), write=True)
        assert list(target.iter_conversations()) == []


def test_the_command_imports_plaintext_and_sealed_conversations_of_one_file(db_url, other_url, tmp_path):
    with convstore.Store(db_url, keyring=ring(k1=K1)) as source:
        sealed_id = build(source)
        with convstore.Store(db_url) as plain:  # no keyring: its conversations are plaintext
            conv = plain.create_conversation(model="m")
            conv.append([user("in clear"), model("yes")])
            expected = readings(source, sealed_id), conv.history()
    path = tmp_path / "both.jsonl"
    done = run_cli("export", "-o", str(path), db=db_url)
    assert done.returncode == 0, done.stderr
    kinds = [json.loads(line)["kind"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert kinds.count("conversation") == 2
    assert "key" in kinds
    imported = run_cli("import", str(path), db=other_url, keyring=f"k1={base64.b64encode(K1).decode()}")
    assert imported.returncode == 0, imported.stderr
    assert b"imported 2 conversations" in imported.stdout
    with convstore.Store(other_url, keyring=ring(k1=K1)) as target:
        assert (readings(target, sealed_id), target.conversation(conv.id).history()) == expected
        assert target.check().ok
