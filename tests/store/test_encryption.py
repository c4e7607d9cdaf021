"""Encryption at rest and crypto-shredding, on both backends and both flavours, against the raw rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import model, user
from helpers import K1, K2, WRONG, ring
from hypothesis import given, settings
from hypothesis import strategies as hst
from strategies import examples, exchanges

import convstore
from convstore import (
    ConversationNotFoundError,
    DataKeyNotFoundError,
    DecryptionError,
    EncryptionError,
    KeyNotFoundError,
    Keyring,
    KeyringRequiredError,
    SQLKeyStore,
    TokenBudget,
)
from convstore.store._engine import run
from convstore.store._transfer import (
    TransferFormatError,
    dump_lines,
    export_lines,
    export_ops,
    read_dumps,
)

pytest.importorskip("cryptography")

SECRET = "my diagnosis is stage two"
TABLES = ("conversations", "nodes", "branches", "exchanges", "summaries", "keys", "media", "files")


def raw_text(engine: sa.Engine, db_url: str) -> bytes:
    """Everything the database holds: the SQLite file and its WAL, or every row of every table as text."""
    if db_url.startswith("sqlite"):
        path = Path(sa.make_url(db_url).database or "")
        files = [path, path.with_name(path.name + "-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    with engine.connect() as db:
        return "\n".join(
            str(row[0])
            for table in TABLES
            for row in db.execute(sa.text(f"SELECT t::text FROM convstore_{table} AS t"))
        ).encode()


def settings_with_secret() -> dict:
    return {
        "model": "m",
        "system_instruction": SECRET,
        "generation_config": {"note": SECRET},
        "tools": [{"type": "function", "name": "f", "description": SECRET}],
        "metadata": {"topic": SECRET},
    }


def test_an_encrypted_conversation_reads_back_and_no_plaintext_reaches_the_database(make_store, db_url):
    store = make_store(keyring=ring("k1"))
    conv = store.create_conversation(**settings_with_secret())
    assert conv.encrypted
    steps = [user(SECRET), model(f"I am sorry: {SECRET}")]
    nodes = conv.append(steps)
    assert [n.data for n in nodes] == steps
    fork = conv.fork(at=nodes[0].id, branch="alt")
    fork.append([model("another answer")])
    # A store opened afresh reads everything back: settings, history, nodes, tree, listings.
    again = make_store(keyring=ring("k1")).conversation(conv.id)
    expected = settings_with_secret()
    got = {key: getattr(again, key) for key in expected}
    assert got == expected
    assert again.history() == steps
    assert again.history_json() == conv.history_json()
    assert [n.data for n in again.nodes()] == steps
    assert again.node(nodes[1].id).data == steps[1]
    assert [n.data for n in again.path(nodes[0].id)] == steps[:1]
    assert len(again.tree().nodes) == 3
    assert again.checkout("alt").history() == [user(SECRET), model("another answer")]
    (listed,) = make_store(keyring=ring("k1")).conversations().items
    assert listed.metadata == {"topic": SECRET}
    # Token counts, types and structure stay clear; the content does not.
    with store.engine.connect() as db:
        row = db.execute(
            sa.text("SELECT type, token_count, payload FROM convstore_nodes ORDER BY depth")
        ).first()
    assert row.type == "user_input"
    assert row.token_count == nodes[0].token_count > 0
    assert row.payload.startswith("enc1:")
    raw = raw_text(store.engine, db_url)
    assert SECRET.encode() not in raw
    assert b"another answer" not in raw
    # The scan does see content: a plaintext conversation in the same database shows up in it.
    make_store().create_conversation().append([user("plain words here")])
    assert b"plain words here" in raw_text(store.engine, db_url)


def test_an_encrypted_conversation_without_a_keyring_is_refused(make_store):
    encrypted = make_store(keyring=ring("k1"))
    empty = encrypted.create_conversation()  # nothing in it yet: still known to be encrypted
    full = encrypted.create_conversation(system_instruction=SECRET)
    full.append([user(SECRET)])
    plain = make_store()
    for conv in (empty, full):
        with pytest.raises(KeyringRequiredError) as raised:
            plain.conversation(conv.id)
        assert conv.id in str(raised.value)
        assert raised.value.conversation_id == conv.id
        assert SECRET not in str(raised.value)
    # Listing works without the keyring: the encrypted ones come with their settings withheld.
    listed = {info.id: info for info in plain.conversations().items}
    for conv in (empty, full):
        info = listed[conv.id]
        shown = (info.encrypted, info.withheld, info.system_instruction, info.metadata)
        assert shown == (True, True, None, None)
    opened = {info.id: info for info in encrypted.conversations().items}
    assert (opened[full.id].encrypted, opened[full.id].withheld) == (True, False)
    assert opened[full.id].system_instruction == SECRET
    # A plaintext conversation in the same database stays readable by both stores.
    open_conv = plain.create_conversation(system_instruction="hello")
    open_conv.append([user("plain")])
    assert not open_conv.encrypted
    assert encrypted.conversation(open_conv.id).history() == [user("plain")]
    # Deleting needs no key: an administrator without the keyring can still shred a conversation.
    plain.delete_conversation(full.id)
    with pytest.raises(ConversationNotFoundError):
        encrypted.conversation(full.id)


def test_a_wrong_or_missing_application_key_raises_naming_the_key_id(make_store):
    conv = make_store(keyring=ring("k1")).create_conversation(metadata={"x": SECRET})
    conv.append([user(SECRET)])
    wrong = make_store(keyring=Keyring({"k1": WRONG}, active="k1"))
    with pytest.raises(DecryptionError) as raised:
        wrong.conversation(conv.id)
    assert raised.value.key_id == "k1"
    assert "'k1'" in str(raised.value)
    assert conv.id in str(raised.value)
    missing = make_store(keyring=ring("k2"))
    with pytest.raises(KeyNotFoundError) as lookup:
        missing.conversation(conv.id)
    assert (lookup.value.key_id, lookup.value.conversation_id) == ("k1", conv.id)
    assert isinstance(lookup.value, LookupError)
    for error in (raised.value, lookup.value):
        assert isinstance(error, EncryptionError)
        assert SECRET not in str(error)
        assert K1.hex() not in str(error)


def test_rotation_rewraps_data_keys_without_touching_payloads(make_store):
    old = make_store(keyring=ring("k1"))
    conv = old.create_conversation(system_instruction=SECRET)
    conv.append([user(SECRET), model("answer")])
    empty = old.create_conversation()  # encrypted too, with nothing in it yet
    plain_store = make_store()
    other = plain_store.create_conversation()  # and one made without a keyring
    with old.engine.connect() as db:
        before = db.execute(sa.text("SELECT id, payload FROM convstore_nodes ORDER BY id")).all()
        assert db.execute(sa.text("SELECT key_id FROM convstore_keys")).scalars().all() == ["k1", "k1"]
    both = make_store(keyring=ring("k1", "k2", active="k2"))
    assert both.rotate_keys() == 2  # conv and the empty one; the plaintext conversation has no key
    assert both.rotate_keys() == 0  # already wrapped by k2
    with old.engine.connect() as db:
        after = db.execute(sa.text("SELECT id, payload FROM convstore_nodes ORDER BY id")).all()
        assert db.execute(sa.text("SELECT key_id FROM convstore_keys")).scalars().all() == ["k2", "k2"]
    assert after == before  # payloads untouched
    only_new = make_store(keyring=ring("k2"))
    reopened = only_new.conversation(conv.id)
    assert reopened.history() == [user(SECRET), model("answer")]
    assert reopened.system_instruction == SECRET
    assert only_new.conversation(empty.id).history() == []
    assert only_new.conversation(other.id).history() == []
    with pytest.raises(KeyNotFoundError, match="'k2'"):
        make_store(keyring=ring("k1")).conversation(conv.id)
    with pytest.raises(ValueError, match="keyring"):
        plain_store.rotate_keys()


def _copy_payload(engine: sa.Engine, source_depth: int, target_depth: int) -> None:
    """Overwrite one node's stored payload with another's, as someone with write access to the rows would."""
    with engine.begin() as db:
        rows = {
            row.depth: row for row in db.execute(sa.text("SELECT id, depth, payload FROM convstore_nodes"))
        }
        db.execute(
            sa.text("UPDATE convstore_nodes SET payload = :payload WHERE id = :id"),
            {"payload": rows[source_depth].payload, "id": rows[target_depth].id},
        )


def test_a_value_copied_to_another_node_or_field_fails_to_decrypt(make_store):
    store = make_store(keyring=ring("k1"))
    conv = store.create_conversation(system_instruction=SECRET, metadata={"a": 1})
    first, second = conv.append([user(SECRET), model("fine")])
    _copy_payload(store.engine, 0, 1)
    reopened = store.conversation(conv.id)
    with pytest.raises(DecryptionError) as raised:
        reopened.history()
    assert second.id in str(raised.value)
    assert raised.value.where == f"node {second.id}"
    assert SECRET not in str(raised.value)
    assert reopened.node(first.id).data == user(SECRET)  # the original is fine
    # A payload copied into another conversation (another data key, another node id) is refused too.
    other = store.create_conversation()
    (victim,) = other.append([user("mine")])
    with store.engine.begin() as db:
        sealed = db.execute(
            sa.text("SELECT payload FROM convstore_nodes WHERE depth = 0 ORDER BY created_at LIMIT 1")
        ).scalar_one()
        db.execute(
            sa.text("UPDATE convstore_nodes SET payload = :p WHERE depth = 0 AND payload <> :p"),
            {"p": sealed},
        )
    with pytest.raises(DecryptionError, match=victim.id):
        store.conversation(other.id).history()
    # A setting moved into another field is refused as well.
    with store.engine.begin() as db:
        db.execute(sa.text("UPDATE convstore_conversations SET metadata = system_instruction"))
    with pytest.raises(DecryptionError, match="metadata"):
        store.conversation(conv.id)


def test_delete_and_purge_destroy_the_data_key_first(make_store):
    from datetime import datetime, timezone  # noqa: PLC0415

    store = make_store(keyring=ring("k1"))
    doomed, old = store.create_conversation(), store.create_conversation()
    doomed.append([user(SECRET)])

    def key_rows() -> set[str]:
        with store.engine.connect() as db:
            return {
                str(r) for r in db.execute(sa.text("SELECT conversation_id FROM convstore_keys")).scalars()
            }

    assert len(key_rows()) == 2
    store.delete_conversation(doomed.id)
    assert len(key_rows()) == 1
    assert store.purge(older_than=datetime.now(timezone.utc)) == 1
    assert key_rows() == set()
    with pytest.raises(ConversationNotFoundError):
        store.conversation(old.id)


def test_a_separate_key_store_keeps_keys_out_of_the_data_and_shreds_backups(make_store, db_url, tmp_path):
    keys = SQLKeyStore(f"sqlite:///{tmp_path / 'keys.db'}")
    try:
        store = make_store(keyring=ring("k1"), key_store=keys)
        conv = store.create_conversation(system_instruction=SECRET)
        conv.append([user(SECRET)])
        kept = store.create_conversation()
        with store.engine.connect() as db:
            assert db.execute(sa.text("SELECT count(*) FROM convstore_keys")).scalar_one() == 0
        assert keys.get_key(conv.id) is not None
        assert "k1" in repr(keys.get_key(conv.id))
        assert make_store(keyring=ring("k1"), key_store=keys).conversation(conv.id).history() == [
            user(SECRET)
        ]
        # Rotation goes through the key store too.
        assert make_store(keyring=ring("k1", "k2"), key_store=keys).rotate_keys() == 2
        assert keys.get_key(conv.id).key_id == "k2"
        backup = None
        if db_url.startswith("sqlite"):
            # A file copy of the data taken before the delete: readable while the key exists...
            source = Path(sa.make_url(db_url).database or "")
            backup = tmp_path / "backup.db"
            for suffix in ("", "-wal"):
                if Path(f"{source}{suffix}").exists():
                    shutil.copyfile(f"{source}{suffix}", f"{backup}{suffix}")
            with convstore.Store(f"sqlite:///{backup}", keyring=ring("k2"), key_store=keys) as copy:
                assert copy.conversation(conv.id).history() == [user(SECRET)]
        store.delete_conversation(conv.id)
        assert keys.get_key(conv.id) is None
        assert keys.get_key(kept.id) is not None
        if backup is not None:
            # ... and unreadable for good once it is destroyed, with the same keyring.
            with convstore.Store(f"sqlite:///{backup}", keyring=ring("k1", "k2"), key_store=keys) as copy:
                with pytest.raises(DataKeyNotFoundError) as raised:
                    copy.conversation(conv.id)
                assert raised.value.conversation_id == conv.id
                assert copy.conversation(kept.id).history() == []
    finally:
        keys.close()


def test_budget_windows_and_compaction_summaries_are_encrypted(make_store, db_url):
    store = make_store(keyring=ring("k1"))

    def summarise(dropped: list[dict]) -> list[dict]:
        return [user(f"Summary {SECRET} of {len(dropped)}."), {"type": "model_output", "content": []}]

    conv = store.create_conversation()
    for i in range(20):
        conv.append([user(f"question {i} " * 10), {"type": "model_output", "content": []}])
    budget = TokenBudget(max_input_tokens=300, compact=summarise, summary_tokens=40)
    first = conv.history(budget=budget)
    assert first[0]["content"][0]["text"].startswith(f"Summary {SECRET}")
    again = make_store(keyring=ring("k1")).conversation(conv.id).history(budget=budget)
    assert again == first
    assert SECRET.encode() not in raw_text(store.engine, db_url)
    with store.engine.connect() as db:
        assert db.execute(sa.text("SELECT payload FROM convstore_summaries")).scalar_one().startswith("enc1:")


def test_export_writes_an_encrypted_conversation_sealed(make_store):
    """Sealed transfer is tested in full in ``test_sealed_transfer.py``; here, the store's operation."""
    store = make_store(keyring=ring("k1"))
    conv = store.create_conversation()
    conv.append([user(SECRET)])
    dump = run(store.engine, export_ops(conv.id, inline_key=True), write=False)
    assert dump.sealed
    assert dump.key is not None
    assert dump.key.key_id == "k1"
    assert SECRET not in "\n".join(dump_lines(dump))
    with store.engine.begin() as db:
        db.execute(sa.text("DELETE FROM convstore_keys"))
    with pytest.raises(DataKeyNotFoundError):  # the key store holds no key: nothing to export sealed
        run(store.engine, export_ops(conv.id, inline_key=True), write=False)
    plain = make_store().create_conversation()
    plain.append([user("plain")])
    dump = run(store.engine, export_ops(plain.id), write=False)
    assert dump.conversation["encryption"] is None
    assert [n["type"] for n in dump.nodes] == ["user_input"]
    # An export line claiming an encrypted conversation with plaintext rows is refused, naming the field.
    lines = list(export_lines([dump]))
    lines[1] = lines[1].replace('"encryption": null', '"encryption": "aes-256-gcm/1"')
    with pytest.raises(TransferFormatError) as refused:
        list(read_dumps(lines))
    assert (refused.value.line, refused.value.field) == (3, "payload")


def test_keyring_checks_its_keys_and_never_shows_them():
    keyring = Keyring({"k1": K1, "k2": K2}, active="k2")
    assert repr(keyring) == "Keyring(key_ids=['k1', 'k2'], active='k2')"
    assert (keyring.active, keyring.key_ids) == ("k2", ["k1", "k2"])
    cipher, wrapped = keyring.new_data_key("c")
    for text in (repr(keyring), repr(cipher), repr(wrapped)):
        assert K1.hex() not in text
        assert K2.hex() not in text
        assert repr(K1) not in text
    with pytest.raises(ValueError, match="32 bytes"):
        Keyring({"k1": b"short"}, active="k1")
    with pytest.raises(ValueError, match="active"):
        Keyring({"k1": K1}, active="k9")
    with pytest.raises(ValueError, match="key id"):
        Keyring({"": K1}, active="")
    with pytest.raises(TypeError, match="keyring"):
        convstore.Store("sqlite://", keyring={"k1": K1})  # type: ignore[arg-type]


def test_random_steps_round_trip_through_an_encrypted_store(make_store):
    # Two stores for every example (a writer, and another store that reads it back), not two an example:
    # those stay open until the test ends, and 50 pools exhausted a Citus coordinator's connections.
    store, reader = make_store(keyring=ring("k1")), make_store(keyring=ring("k1"))

    @settings(max_examples=examples(25))
    @given(exchange_list=hst.lists(exchanges, min_size=1, max_size=4))
    def round_trip(exchange_list: list[list[dict[str, object]]]) -> None:
        conv = store.create_conversation()
        for exchange in exchange_list:
            conv.append(exchange)
        expected = [step for exchange in exchange_list for step in exchange]
        assert conv.history() == expected
        reopened = reader.conversation(conv.id)
        assert reopened.history() == expected
        assert [n.data for n in reopened.nodes()] == expected

    round_trip()


def test_no_content_or_key_bytes_in_logs_with_encryption(make_store, caplog):
    import logging  # noqa: PLC0415

    caplog.set_level(logging.DEBUG)
    names = ("sqlalchemy.engine", "convstore", "aiosqlite", "alembic")
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        store = make_store(keyring=ring("k1"))
        conv = store.create_conversation(system_instruction=SECRET)
        conv.append([user(SECRET)])
        store.conversation(conv.id).history()
        with pytest.raises(KeyNotFoundError) as raised:
            make_store(keyring=ring("k2")).conversation(conv.id)
        store.delete_conversation(conv.id)
        for text in (caplog.text, repr(store), repr(conv), str(raised.value)):
            assert SECRET not in text
            assert K1.hex() not in text
    finally:
        for name in names:
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_send_through_the_api_client_on_an_encrypted_store(make_store, client, db_url):
    store = make_store(keyring=ring("k1"))
    conv = store.create_conversation(model="gemini-3-flash-preview", system_instruction=SECRET)
    reply = conv.send(f"echo this: {SECRET}", client=client)
    body = conv.request("and again")
    assert body["system_instruction"] == SECRET
    assert body["input"][: len(conv.history())] == conv.history()
    assert [step["type"] for step in body["input"]][-1] == "user_input"
    assert reply.steps
    assert SECRET.encode() not in raw_text(store.engine, db_url)


def test_a_plaintext_store_never_loads_cryptography():
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "import sys, convstore\n"
        "store = convstore.Store('sqlite://')\n"
        "conv = store.create_conversation()\n"
        "conv.append([{'type': 'user_input', 'content': [{'type': 'text', 'text': 'hi'}]}])\n"
        "assert conv.history() and not conv.encrypted\n"
        "store.close()\n"
        "print('cryptography' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
