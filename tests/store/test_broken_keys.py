"""A broken key breaks only its conversation: listings go on, opening it raises the typed key error.

Attacked from outside, on both backends and both flavours: a listing of good encrypted and plaintext
conversations among which one's data key was deleted from the key store, one's wrapped key was altered, one
is wrapped by an application key the keyring no longer holds, and one has an altered setting.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import user

import convstore
from convstore import (
    DataKeyNotFoundError,
    DecryptionError,
    KeyNotFoundError,
    Keyring,
    KeyringRequiredError,
    SQLKeyStore,
)
from convstore.store import _schema

pytest.importorskip("cryptography")

OLD, NEW = bytes(range(32)), bytes(range(32, 64))
BOTH = Keyring({"old": OLD, "new": NEW}, active="new")
NEW_ONLY = Keyring({"new": NEW}, active="new")
OLD_ONLY = Keyring({"old": OLD}, active="old")


def _flip(engine: sa.Engine, table: sa.Table, column: str, conversation_id: str) -> None:
    """Alter one stored value in place: one base64 character (a setting) or one bit (a wrapped key)."""
    where = (table.c.conversation_id if "conversation_id" in table.c else table.c.id) == conversation_id
    with engine.begin() as db:
        value = db.execute(sa.select(table.c[column]).where(where)).scalar_one()
        if isinstance(value, str):
            altered: Any = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
        else:
            raw = bytearray(value)
            raw[-1] ^= 1
            altered = bytes(raw)
        db.execute(sa.update(table).where(where).values({column: altered}))


def test_a_listing_survives_broken_keys_among_good_ones(make_store):
    writer = make_store(keyring=OLD_ONLY)
    by_old = writer.create_conversation(model="m", system_instruction="old key")
    writer2 = make_store(keyring=BOTH)
    good = [writer2.create_conversation(model="m", metadata={"n": n}) for n in range(3)]
    shredded = writer2.create_conversation(model="m", system_instruction="shredded")
    altered_key = writer2.create_conversation(model="m", system_instruction="key altered")
    altered_setting = writer2.create_conversation(model="m", system_instruction="setting altered")
    plain = make_store().create_conversation(model="m", system_instruction="plain")
    for conv in [*good, shredded]:
        conv.append([user("hello")])

    engine = writer2.engine
    with engine.begin() as db:
        db.execute(sa.delete(_schema.keys).where(_schema.keys.c.conversation_id == shredded.id))
    _flip(engine, _schema.keys, "wrapped", altered_key.id)
    _flip(engine, _schema.conversations, "system_instruction", altered_setting.id)

    reader = make_store(keyring=NEW_ONLY)  # "old" is gone from the keyring
    expected = {
        by_old.id: "key_unknown",
        shredded.id: "key_missing",
        altered_key.id: "key_undecryptable",
        altered_setting.id: "settings_undecryptable",
        plain.id: None,
        **{conv.id: None for conv in good},
    }
    for listed in (
        reader.conversations(limit=1000).items,
        list(reader.iter_conversations(page_size=2)),  # across pages, a broken one on each
    ):
        assert {info.id: info.unreadable for info in listed} == expected
        for info in listed:
            assert info.withheld is (info.unreadable is not None)
            if info.unreadable is not None:
                assert info.encrypted
                assert (info.system_instruction, info.metadata, info.tools) == (None, None, None)
                assert info.model == "m"  # what is stored in clear is still shown
        shown = {info.id: info for info in listed}
        assert [shown[conv.id].metadata for conv in good] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert shown[plain.id].system_instruction == "plain"

    # Opening each broken one raises its typed error; the good ones open.
    with pytest.raises(KeyNotFoundError) as unknown:
        reader.conversation(by_old.id)
    assert unknown.value.key_id == "old"
    with pytest.raises(DataKeyNotFoundError):
        reader.conversation(shredded.id)
    with pytest.raises(DecryptionError) as bad_key:
        reader.conversation(altered_key.id)
    assert bad_key.value.where == "data key"
    with pytest.raises(DecryptionError) as bad_setting:
        reader.conversation(altered_setting.id)
    assert bad_setting.value.where == "system_instruction"
    assert [reader.conversation(conv.id).history() for conv in good] == [[user("hello")]] * 3

    # Without a keyring, every encrypted one is listed as such, whatever its key.
    blind = {info.id: info.unreadable for info in make_store().iter_conversations()}
    assert blind == {
        cid: (None if why is None and cid == plain.id else "keyring_required")
        for cid, why in expected.items()
    }
    with pytest.raises(KeyringRequiredError):
        make_store().conversation(good[0].id)


def test_a_key_deleted_from_a_separate_key_store_breaks_only_its_conversation(make_store, tmp_path):
    with SQLKeyStore(f"sqlite:///{tmp_path / 'keys.db'}") as keys:
        store = make_store(keyring=NEW_ONLY, key_store=keys)
        convs = [store.create_conversation(model="m", system_instruction=f"s{n}") for n in range(4)]
        keys.delete_key(convs[1].id)
        listed = {info.id: info for info in store.iter_conversations()}
        assert [listed[conv.id].unreadable for conv in convs] == [None, "key_missing", None, None]
        assert [listed[conv.id].system_instruction for conv in convs] == ["s0", None, "s2", "s3"]
        with pytest.raises(DataKeyNotFoundError):
            store.conversation(convs[1].id)


def test_the_command_lists_around_a_broken_key(db_url):
    with convstore.Store(db_url, keyring=NEW_ONLY) as store:
        convs = [store.create_conversation(model=f"model-{n}") for n in range(3)]
        with store.engine.begin() as db:
            db.execute(sa.delete(_schema.keys).where(_schema.keys.c.conversation_id == convs[1].id))
    env = {k: v for k, v in os.environ.items() if k not in {"CONVSTORE_DB", "CONVSTORE_KEYRING"}}
    env["CONVSTORE_KEYRING"] = f"new={base64.b64encode(NEW).decode()}"
    done = subprocess.run(
        [sys.executable, "-m", "convstore.cli", "--db", db_url, "ls"],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert all(conv.id[-8:] in out for conv in convs)  # ls prints the shortest unique endings
    assert out.count("unreadable: key missing") == 1
