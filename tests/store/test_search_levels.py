"""SQLite's FTS5 index keeps opening however many deletes a store sees. In SQLite 3.40's FTS5, each
'optimize' (which every delete runs, so that deleted words leave the index) adds a level to an index whose
segments sit on more than one level; past 2,000 levels the index no longer opens, and every append and search
of the store fails (``SQLITE_CORRUPT_VTAB``), found by the unbounded crash suite after about 2,000 deletes.
Past ``MAX_INDEX_LEVELS`` the index is rebuilt from its content instead. These tests use a real SQLite file.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import model, user
from test_search import files, word

import convstore
from convstore.store import _search
from convstore.store._schema import SEARCH_FTS


def _levels(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (block,) = conn.execute(f"SELECT block FROM {SEARCH_FTS}_data WHERE id = 10").fetchone()
        conn.execute(f"INSERT INTO {SEARCH_FTS}({SEARCH_FTS}) VALUES ('integrity-check')")
        return _search.index_levels(block)
    finally:
        conn.close()


def test_index_levels_reads_the_structure_records_varint():
    assert _search.index_levels(bytes.fromhex("00000000010a0a000a01")) == 1
    assert _search.index_levels(bytes.fromhex("000000008f52018a")) == 2002  # the record that no longer opened
    assert _search.index_levels(bytes.fromhex("00000000") + bytes([0x81, 0x80, 0x00])) == 1 << 14


def _churn(store: convstore.Store, cycles: int, seed: int) -> tuple[convstore.Conversation, list[str]]:
    """Appends to one conversation and scratch conversations made and deleted, as a long-lived store sees."""
    rng = random.Random(seed)
    kept = store.create_conversation()
    deleted = []
    for i in range(cycles):
        kept.append([user(f"kept{i}"), *(model(f"part {j}") for j in range(rng.randrange(1, 6)))])
        scratch = store.create_conversation()
        scratch.append([user(f"gone{i} scratch"), model("reply")])
        store.delete_conversation(scratch.id)
        deleted.append(f"gone{i}")
    return kept, deleted


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_many_deletes_leave_an_index_that_opens_and_finds_what_it_should(db_url, tmp_path, monkeypatch):
    monkeypatch.setattr(_search, "MAX_INDEX_LEVELS", 8)
    path = Path(db_url.removeprefix("sqlite:///"))
    with convstore.Store(db_url) as store:
        kept, deleted = _churn(store, 40, seed=1)
        assert _levels(path) <= 8  # rebuilt at least once on the way (one level a delete otherwise)
        assert [hit.conversation_id for hit in store.search("kept39")] == [kept.id]
        for word in deleted[::7]:
            assert not store.search(word).hits
        kept.append([user("after the rebuild"), model("still written")])  # appends still go through
        assert store.search("rebuild").hits
        assert store.check().ok


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_real_bound_holds_over_hundreds_of_deletes(db_url):
    """Without the bound this store's index reaches about 900 levels (SQLite 3.40), and 2,000 breaks it."""
    path = Path(db_url.removeprefix("sqlite:///"))
    with convstore.Store(db_url) as store:
        _churn(store, 600, seed=2)
        assert _levels(path) <= _search.MAX_INDEX_LEVELS
        assert store.search("kept599").hits


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_delete_that_rebuilds_the_index_leaves_its_words_in_no_file(db_url, monkeypatch):
    """The delete whose rewrite rebuilds the index (a bound of 0: every one) keeps the promise every delete
    makes: once it returns, no file of the database holds the deleted text."""
    monkeypatch.setattr(_search, "MAX_INDEX_LEVELS", 0)
    doomed_word, kept_word = word(), word()
    path = Path(db_url.removeprefix("sqlite:///"))
    with convstore.Store(db_url) as store:
        kept = store.create_conversation()
        kept.append([user(f"{kept_word} stays"), model("ok")])
        doomed = store.create_conversation()
        for index in range(20):
            doomed.append([user(f"{doomed_word} {index} " + "filler " * 40), model(f"{doomed_word} reply")])
            kept.append([user(f"other words {index} " * 10)])
        ran: list[str] = []
        sa.event.listen(store.engine, "before_cursor_execute", lambda *args: ran.append(args[2]))
        store.delete_conversation(doomed.id)
        assert any("'rebuild'" in sql for sql in ran)
        assert not store.search(doomed_word).hits
        assert store.search(kept_word).hits
        _levels(path)  # it opens, and passes FTS5's integrity-check
    on_disk = files(path)
    assert sorted(name for name, content in on_disk.items() if doomed_word.encode() in content) == []
    assert any(kept_word.encode() in content for content in on_disk.values())  # the check can see text
