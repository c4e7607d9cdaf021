"""What the front ends read through the public store, on every backend: summaries, id endings, branch
renames, purge candidates, media read in pieces, and the schema status that opens nothing."""

from __future__ import annotations

import base64
import os
from datetime import timedelta

import pytest
import sqlalchemy as sa
from conftest import model as answer
from conftest import user

import convstore


def test_schema_status_reads_without_building(db_url):
    status = convstore.schema_status(db_url)
    assert status.state in {"missing", "empty"}
    assert not status.usable
    if db_url.startswith("sqlite"):
        assert not os.path.exists(sa.make_url(db_url).database)  # nothing made
    with convstore.Store(db_url):
        pass
    built = convstore.schema_status(db_url)
    assert (built.state, built.revision, built.usable) == ("current", built.head, True)


def test_summaries_page_with_counts_first_messages_and_endings(db_url):
    with convstore.Store(db_url) as store:
        made = []
        for n in range(5):
            conv = store.create_conversation(model="m")
            conv.append([user(f"message   number {n}  " + "x" * 50), answer("ok")])
            made.append(conv)
        made[0].fork(at=made[0].nodes()[0].id, branch="side")
        page = store.summaries(limit=3, preview_chars=20)
        assert [item.info.id for item in page.items] == [c.id for c in reversed(made)][:3]
        first = page.items[0]
        assert first.first_message == "message number 4 xx…"
        assert (first.steps, first.branches) == (2, 1)
        rest = store.summaries(limit=10, before=page.items[-1].short_id)
        assert [item.info.id for item in rest.items] == [made[1].id, made[0].id]
        assert rest.items[-1].branches == 2
        assert rest.next_cursor is None
        for item in [*page.items, *rest.items]:
            assert item.info.id.endswith(item.short_id)
            assert len(item.short_id) >= 8
            assert store.resolve_id(item.short_id) == item.info.id
        with pytest.raises(convstore.ConversationNotFoundError):
            store.resolve_id("ffffffffffff")
        assert store.has_conversation(made[2].id)
        assert not store.has_conversation("01a21405-8db3-7b7a-af47-2eb734a127bd")


def test_an_ending_of_several_ids_is_ambiguous():
    from convstore.store._listing import match_ending  # noqa: PLC0415 -- the rule resolve_id applies

    ids = ["01a21405-8db3-7b7a-af47-2eb734a127bd", "01a21406-0000-7b7a-af47-1eb734a127bd"]
    with pytest.raises(convstore.AmbiguousIdError, match="give more of the id") as raised:
        match_ending("eb734a127bd", ids)
    assert raised.value.matches == 2
    assert match_ending("2eb734a127bd", ids) == ids[0]
    assert match_ending(ids[1].upper(), ids) == ids[1]
    with pytest.raises(convstore.ConversationNotFoundError):
        match_ending("127bd", ids)  # fewer than 8 characters: never a match


def test_rename_branch(db_url):
    with convstore.Store(db_url) as store:
        conv = store.create_conversation(model="m")
        conv.append([user("a"), answer("b")])
        side = conv.fork(branch="work~unfinished")
        store.rename_branch(conv.id, "work~unfinished", "work")
        assert {b.name for b in store.branches(conv.id)} == {"main", "work"}
        assert store.conversation(conv.id, "work").head_id == side.head_id
        with pytest.raises(convstore.BranchExistsError):
            store.rename_branch(conv.id, "work", "main")
        with pytest.raises(convstore.BranchNotFoundError):
            store.rename_branch(conv.id, "nope", "other")


def test_stale_conversations_lists_what_purge_would_delete(db_url):
    with convstore.Store(db_url) as store:
        conv = store.create_conversation(model="m")
        assert store.stale_conversations(older_than=timedelta(days=1)) == []
        cutoff = convstore_now() + timedelta(seconds=0)
        assert store.stale_conversations(older_than=cutoff - timedelta(microseconds=1)) in ([], [conv.id])
        with pytest.raises(convstore.InvalidAgeError):
            store.stale_conversations(older_than=timedelta(0))


def convstore_now():
    from datetime import datetime, timezone  # noqa: PLC0415

    return datetime.now(timezone.utc)


@pytest.mark.parametrize("encrypted", [False, True])
def test_media_read_in_pieces(db_url, encrypted):
    keyring = convstore.Keyring({"k": bytes(32)}, active="k") if encrypted else None
    raw = os.urandom(700_001)
    with convstore.Store(db_url, keyring=keyring) as store:
        conv = store.create_conversation(model="m")
        image = {"type": "image", "data": base64.b64encode(raw).decode(), "mime_type": "image/png"}
        conv.append([user("look", image)])
        [node] = conv.nodes(media=False)
        reference = node.data["content"][1]["data"]
        assert reference.startswith(convstore.MEDIA_REF)
        pieces = list(conv.media_chunks(reference, chunk_chars=100_001))
        assert {len(piece) for piece in pieces[:-1]} == {100_000}
        assert b"".join(base64.b64decode(piece) for piece in pieces) == raw


def test_pages_of_one_owner_are_full_of_its_own_conversations(db_url):
    """The owner is filtered in the listing's SQL, before its LIMIT: with three owners' conversations
    interleaved, each page of one owner is full of its own, in order, and no other's row ever appears."""
    with convstore.Store(db_url) as admin:
        stores = {name: admin.for_owner(name) for name in ("alice", "bob", "carol")}
        made: dict[str, list[str]] = {name: [] for name in stores}
        for _ in range(5):
            for name, store in stores.items():
                made[name].append(store.create_conversation(model=name).id)
        for name, store in stores.items():
            first = store.conversations(limit=2)
            second = store.conversations(limit=2, cursor=first.next_cursor)
            third = store.conversations(limit=2, cursor=second.next_cursor)
            assert [len(first.items), len(second.items), len(third.items)] == [2, 2, 1]
            listed = [info.id for page in (first, second, third) for info in page.items]
            assert listed == made[name][::-1]
            assert {info.model for page in (first, second, third) for info in page.items} == {name}
            assert third.next_cursor is None
        assert len(list(admin.iter_conversations(page_size=4))) == 15


@pytest.mark.parametrize("setting", ["system_instruction", "generation_config", "tools", "metadata"])
def test_a_listed_setting_that_is_not_json_is_a_corruption_error_naming_it(db_url, setting):
    """A plaintext row whose setting is not JSON text (sealed text with its encryption cleared, say) is
    refused by name, the conversation and the setting, never with the text, as opening it is."""
    with convstore.Store(db_url) as store:
        conv = store.create_conversation(model="m", metadata={"a": 1})
        with store.engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE convstore_conversations SET {setting} = 'sealed:secret-text'"))
        with pytest.raises(convstore.CorruptionError, match=setting) as raised:
            store.conversations()
        assert conv.id in str(raised.value)
        assert "secret-text" not in str(raised.value)
        with pytest.raises(convstore.CorruptionError, match=setting):
            store.conversation(conv.id)


def test_a_listed_setting_with_space_around_its_json_reads_as_opened(db_url):
    """Settings written by another tool (an import, a hand edit) may have space around their JSON: the
    listing reads them as opening does."""
    with convstore.Store(db_url) as store:
        conv = store.create_conversation(model="m", system_instruction="Be brief.", metadata={"a": 1})
        with store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE convstore_conversations SET metadata = ' {\"a\": [1, 2]}\n', tools = '[] '")
            )
        (listed,) = store.conversations().items
        assert (listed.metadata, listed.tools, listed.system_instruction) == ({"a": [1, 2]}, [], "Be brief.")
        assert listed == store.conversation(conv.id).info
