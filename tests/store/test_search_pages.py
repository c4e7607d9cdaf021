"""Search pages: a page ranks the newest ``candidates`` matches only (bounded work whatever the query), and
its cursor keeps the same candidates across pages: no hit twice, none skipped, later appends not mixed in."""

from __future__ import annotations

import pytest
from conftest import model, user
from test_search import word

import convstore
from convstore import SearchQueryError


def pages(store, query: str, **arguments) -> list[list[convstore.SearchHit]]:
    """Every page of a search, first to last."""
    found, cursor = [], None
    while True:
        page = store.search(query, cursor=cursor, **arguments)
        found.append(list(page))
        cursor = page.next_cursor
        if cursor is None:
            return found


def test_a_search_ranks_the_newest_candidates_and_pages_through_them_once(store):
    needle = word()
    conv = store.create_conversation()
    written = []
    for index in range(10):  # one step an append: each newer than the one before, on both backends
        # Some steps say the word twice: they rank above their neighbours, so rank order != time order.
        text = f"{needle} {needle} step {index}" if index % 3 == 0 else f"{needle} step {index} of many"
        written += [node.id for node in conv.append([user(text)])]
    newest = set(written[-7:])

    everything = pages(store, needle, limit=3, candidates=7)
    seen = [hit.node_id for page in everything for hit in page]
    assert [len(page) for page in everything] == [3, 3, 1]
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == newest  # the three oldest matches are past the candidates
    ranks = [hit.rank for page in everything for hit in page]
    assert ranks == sorted(ranks, reverse=True)  # best first across pages
    assert ranks[0] > ranks[-1]
    # The default ranks 1,000: all ten; and one page of them holds the same hits.
    assert {hit.node_id for hit in store.search(needle, limit=100)} == set(written)
    assert [hit.node_id for hit in store.search(needle, limit=7, candidates=7)] == seen


def test_steps_written_between_pages_are_not_mixed_into_the_pages(store):
    needle = word()
    conv = store.create_conversation()
    written = []
    for index in range(6):
        written += [node.id for node in conv.append([user(f"{needle} first {index}")])]
    first = store.search(needle, limit=2, candidates=4)
    assert first.next_cursor is not None
    later = [node.id for node in conv.append([user(f"{needle} later")])]
    seen = [hit.node_id for hit in first]
    cursor = first.next_cursor
    while cursor is not None:
        page = store.search(needle, limit=2, cursor=cursor)
        seen += [hit.node_id for hit in page]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 4
    assert set(seen) == set(written[-4:])
    # A new search starts from the newest match again.
    assert later[0] in {hit.node_id for hit in store.search(needle, candidates=4)}


def test_another_owners_newer_matches_do_not_crowd_out_ones_own(make_store):
    needle = word()
    alice, bob = make_store(owner="alice"), make_store(owner="bob")
    mine = alice.create_conversation()
    ours = [node.id for node in mine.append([user(f"{needle} alice {index}") for index in range(3)])]
    theirs = bob.create_conversation()
    for index in range(5):
        theirs.append([user(f"{needle} bob {index}")])
    # The owner is a condition of the candidates' statement: alice's three are her newest three.
    assert {hit.node_id for hit in alice.search(needle, candidates=3)} == set(ours)
    # Filters too: the step type filter picks the candidates, not a page of them afterwards.
    theirs.append([model(f"{needle} a reply")])
    assert {hit.type for hit in bob.search(needle, candidates=1, step_types=["user_input"])} == {"user_input"}


@pytest.mark.parametrize("candidates", [0, -1, True, 100_001, "5", 2.0])
def test_candidates_out_of_range_name_themselves(store, candidates):
    with pytest.raises(SearchQueryError) as seen:
        store.search("word", candidates=candidates)
    assert seen.value.field == "candidates"


def test_a_cursor_keeps_its_candidates(store):
    needle = word()
    conv = store.create_conversation()
    for index in range(5):
        conv.append([user(f"{needle} {index}")])
    cursor = store.search(needle, limit=2, candidates=4).next_cursor
    assert cursor is not None
    assert len(store.search(needle, limit=2, cursor=cursor)) == 2  # the cursor's 4, not the default
    assert store.search(needle, limit=2, cursor=cursor).next_cursor is None
    assert len(store.search(needle, limit=2, cursor=cursor, candidates=4)) == 2
    with pytest.raises(SearchQueryError) as seen:
        store.search(needle, limit=2, cursor=cursor, candidates=5)
    assert seen.value.field == "candidates"


def test_a_conversation_deleted_while_a_search_runs_is_a_hit_without_branches(db_url, monkeypatch):
    """A search's statements each see their own snapshot (no transaction around them, on SQLite too):
    another store deletes a conversation between the hits and the branches through them. The page still
    comes back whole, the deleted conversation's hit listing no branch, every other hit as it was; the
    next search does not find it."""
    from convstore.store._engine import _runner, _trips  # noqa: PLC0415 -- the seams the slow fake takes
    from convstore.store._paths import BRANCHES_THROUGH, BRANCHES_THROUGH_MANY  # noqa: PLC0415

    needle = word()
    with convstore.Store(db_url) as store, convstore.Store(db_url) as other:
        gone = store.create_conversation()
        gone.append([user(f"{needle} in the one to delete"), model("ok")])
        kept = store.create_conversation()
        kept.append([user(f"{needle} in the one kept"), model("ok")])
        kept.fork(branch="side")
        deleted: list[str] = []

        def delete_first(step):
            if step.statement in (BRANCHES_THROUGH_MANY, BRANCHES_THROUGH) and not deleted:
                other.delete_conversation(gone.id)  # after the hits were read, before their branches
                deleted.append(gone.id)

        # A statement runs through the runner (PostgreSQL) or on the sqlite3 driver in place (SQLite).
        execute, in_place = _runner.execute, _trips._execute

        def slow(conn, step, *, watched=None):
            delete_first(step)
            return execute(conn, step, watched=watched)

        def slow_in_place(trip, raw, step, bound):
            delete_first(step)
            return in_place(trip, raw, step, bound)

        monkeypatch.setattr(_runner, "execute", slow)
        monkeypatch.setattr(_trips, "_execute", slow_in_place)
        page = store.search(needle)
        monkeypatch.undo()
        assert deleted == [gone.id]
        branches = {hit.conversation_id: hit.branches for hit in page}
        assert branches == {gone.id: (), kept.id: ("main", "side")}
        assert [hit.conversation_id for hit in store.search(needle)] == [kept.id]
        assert store.check().ok
