"""Search across conversations: found with the right branches, owner-scoped, gone with its conversation (from
every file on disk too, on SQLite), never an encrypted conversation, hostile queries only typed errors."""

from __future__ import annotations

import contextlib
import re
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from conftest import model, user
from helpers import K1
from hypothesis import given
from hypothesis import strategies as hs

import convstore
from convstore import Keyring, SearchQueryError
from convstore.store import _migrate
from convstore.store._citus import has_citus
from convstore.store._schema import PREFIX, branches, conversations


def word() -> str:
    """A word no other test writes (letters only, so every engine sees it as one word)."""
    return "w" + "".join(chr(ord("a") + int(ch, 16)) for ch in uuid.uuid4().hex[:12])


def index_state(engine: sa.Engine) -> tuple[Any, ...]:
    """What a search must not change: the index rows and the nodes, counted and summed by id."""
    with engine.connect() as db:
        return tuple(
            db.execute(sa.text(f"SELECT count(*) FROM {PREFIX}{table}")).scalar_one()
            for table in ("search", "nodes", "conversations", "branches")
        )


def files(database: Path) -> dict[str, bytes]:
    return {
        Path(f"{database}{suffix}").name: Path(f"{database}{suffix}").read_bytes()
        for suffix in ("", "-wal", "-shm", "-journal")
        if Path(f"{database}{suffix}").exists()
    }


def sqlite_path(db_url: str) -> Path | None:
    return Path(sa.make_url(db_url).database or "") if db_url.startswith("sqlite") else None


def test_a_word_is_found_with_the_branches_that_lead_through_it(store):
    needle = word()
    conv = store.create_conversation(model="m1")
    first = conv.append([user(f"tell me about {needle} please"), model("a bird")])
    side = conv.fork(at=first[1].id, branch="side")
    later = conv.append([user("and then?"), model(f"More on {needle.upper()}: it flies")])
    side.append([user("something else")])
    store.create_conversation().append([user("nothing to see"), model("here")])

    page = store.search(needle)
    assert [(hit.node_id, hit.branches) for hit in page] == sorted(
        [(first[0].id, ("main", "side")), (later[1].id, ("main",))],
        key=lambda pair: [hit.node_id for hit in page].index(pair[0]),
    )
    assert {hit.node_id for hit in page} == {first[0].id, later[1].id}
    by_node = {hit.node_id: hit for hit in page}
    assert by_node[first[0].id].branches == ("main", "side")
    assert by_node[later[1].id].branches == ("main",)  # the fork does not contain it
    assert by_node[first[0].id].type == "user_input"
    assert by_node[later[1].id].type == "model_output"
    for hit in page:
        assert hit.conversation_id == conv.id
        assert hit.matches
        for start, end in hit.matches:
            assert hit.snippet[start:end].casefold() == needle
        assert "<" not in hit.snippet
    assert page.next_cursor is None
    assert page.encrypted_conversations == 0
    # The node a hit names is on each branch it lists, where path() finds it.
    for hit in page:
        for branch in hit.branches:
            path = store.conversation(conv.id, branch).path(hit.node_id)
            assert path[-1].id == hit.node_id


def test_filters_and_pages(store):
    needle = word()
    one = store.create_conversation(model="m1")
    for index in range(5):
        one.append([user(f"{needle} question {index}"), model(f"{needle} answer {index}")])
    two = store.create_conversation(model="m2")
    two.append([user(f"{needle} elsewhere")])
    assert len(store.search(needle, limit=100)) == 11
    seen: list[str] = []
    cursor = None
    while True:
        page = store.search(needle, limit=4, cursor=cursor)
        seen += [hit.node_id for hit in page]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 11
    assert {hit.conversation_id for hit in store.search(needle, model="m2")} == {two.id}
    assert {hit.conversation_id for hit in store.search(needle, conversation_id=one.id, limit=100)} == {
        one.id
    }
    assert {hit.type for hit in store.search(needle, step_types=["model_output"], limit=100)} == {
        "model_output"
    }
    now = datetime.now(timezone.utc)
    assert len(store.search(needle, since=now + timedelta(hours=1))) == 0
    assert len(store.search(needle, until=now - timedelta(hours=1))) == 0
    assert len(store.search(needle, since=now - timedelta(hours=1), limit=100)) == 11
    # Every word is required.
    assert len(store.search(f"{needle} elsewhere")) == 1


def test_another_owner_finds_nothing(make_store):
    needle = word()
    alice, bob, admin = make_store(owner="alice"), make_store(owner="bob"), make_store()
    mine = alice.create_conversation()
    mine.append([user(f"alice's {needle}")])
    assert [hit.conversation_id for hit in alice.search(needle)] == [mine.id]
    assert list(bob.search(needle)) == []
    assert list(bob.search(needle, conversation_id=mine.id)) == []
    assert list(admin.for_owner("bob").search(needle)) == []
    assert [hit.conversation_id for hit in admin.search(needle)] == [mine.id]


def test_the_statement_scopes_the_owner_in_sql():
    from convstore.store import _search_sql  # noqa: PLC0415

    owned = _search_sql.Filters(owner=True)
    for dialect in ("sqlite", "postgresql"):
        more = _search_sql.Filters(owner=True, model=True, typed=True, bound=True, listed=True)
        for filters in (owned, more):
            text = str(_search_sql.statement(dialect, filters))
            assert "convstore_conversations.owner = " in text
        counted = str(_search_sql.encrypted_count(owner=True, model=False, conversation=False))
        assert "convstore_conversations.owner = " in counted
        # A search of every owner with no model filter reads the index alone.
        assert "convstore_conversations" not in str(_search_sql.statement(dialect, _search_sql.Filters()))


def test_a_postgresql_search_is_planned_for_its_own_values_every_time(db_url):
    """The driver prepares a statement whose text it has run five times, and PostgreSQL may then plan it once
    for any values: each run of a search has a text of its own, so that it never is."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite plans every statement for its values")
    needle = word()
    with convstore.Store(db_url) as store:
        store.create_conversation().append([user(f"a {needle}"), model("ok")])
        texts: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if "ts_rank" in statement:
                texts.append(statement)

        sa.event.listen(store.engine, "before_cursor_execute", seen)
        pages = [[hit.node_id for hit in store.search(needle)] for _ in range(12)]
        sa.event.remove(store.engine, "before_cursor_execute", seen)
        with store.engine.connect() as db:
            prepared = db.execute(
                sa.text("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%ts_rank%'")
            ).scalar_one()
    assert len(pages[0]) == 1
    assert all(page == pages[0] for page in pages)
    assert len(texts) == 12
    assert len(set(texts)) == 12
    assert prepared == 0


def test_redacted_text_is_not_findable_and_indexing_can_be_turned_off(make_store):
    secret, kept, quiet = word(), word(), word()

    def scrub(step: dict) -> dict:
        for item in step.get("content") or []:
            if item.get("type") == "text":
                item["text"] = item["text"].replace(secret, "[redacted]")
        return step

    store = make_store(redact=scrub)
    store.create_conversation().append([user(f"{secret} and {kept}")])
    assert list(store.search(secret)) == []
    assert len(store.search(kept)) == 1
    off = make_store(search_index=False)
    conv = off.create_conversation()
    conv.append([user(f"{quiet} is not indexed")])
    assert list(off.search(quiet)) == []
    assert conv.history() == [user(f"{quiet} is not indexed")]


def test_what_is_indexed_is_user_and_model_text():
    from convstore.store import _search  # noqa: PLC0415

    assert {"user_input", "model_output"} == _search.INDEXED_TYPES
    assert _search.step_text('{"type":"user_input","content":[{"type":"text","text":"a\\u0000b"}]}') == "a b"


def test_after_delete_and_purge_nothing_is_found_and_no_file_holds_the_text(store, db_url):
    doomed_word, purged_word, kept_word = word(), word(), word()
    doomed = store.create_conversation()
    for index in range(30):
        doomed.append([user(f"{doomed_word} {index} " + "filler " * 50), model(f"{doomed_word} reply")])
    purged = store.create_conversation()
    purged.append([user(f"{purged_word} old")])
    kept = store.create_conversation()
    kept.append([user(f"{kept_word} stays")])
    for index in range(40):  # later FTS5 segments, so that the doomed words sit in merged older ones
        kept.append([user(f"other words {index} " * 20)])
    assert len(store.search(doomed_word, limit=100)) == 60
    store.delete_conversation(doomed.id)
    assert list(store.search(doomed_word)) == []
    then = datetime(2020, 1, 1, tzinfo=timezone.utc)
    with store.engine.begin() as db:  # untouched since 2020
        db.execute(sa.update(conversations).where(conversations.c.id == purged.id).values(created_at=then))
        db.execute(sa.update(branches).where(branches.c.conversation_id == purged.id).values(updated_at=then))
    assert store.purge(older_than=timedelta(days=365)) == 1
    assert list(store.search(purged_word)) == []
    assert len(store.search(kept_word)) == 1
    with store.engine.connect() as db:
        left = db.execute(sa.text(f"SELECT count(*) FROM {PREFIX}search")).scalar_one()
    assert left == 41
    database = sqlite_path(db_url)
    if database is None:
        return  # PostgreSQL keeps deleted rows in its files until VACUUM (README, Privacy)
    on_disk = files(database)
    assert f"{PREFIX}search_fts" in "".join(str(name) for name in sa.inspect(store.engine).get_table_names())
    leaks = sorted(name for name, content in on_disk.items() if doomed_word.encode() in content)
    assert leaks == []
    leaks = sorted(name for name, content in on_disk.items() if purged_word.encode() in content)
    assert leaks == []
    assert any(kept_word.encode() in content for content in on_disk.values())  # the check can see text


def test_an_encrypted_conversation_is_never_found_nor_its_plaintext_on_disk(make_store, db_url):
    pytest.importorskip("cryptography")
    needle = word()
    sealed_store = make_store(keyring=Keyring({"k1": K1}, active="k1"))
    sealed = sealed_store.create_conversation()
    sealed.append([user(f"my {needle} is private"), model(f"your {needle} stays private")])
    plain = make_store()
    assert list(sealed_store.search(needle)) == []
    assert sealed_store.search(needle).encrypted_conversations == 1
    assert plain.search(needle).encrypted_conversations == 1
    with sealed_store.engine.connect() as db:
        assert db.execute(sa.text(f"SELECT count(*) FROM {PREFIX}search")).scalar_one() == 0
    database = sqlite_path(db_url)
    if database is not None:
        sealed_store.checkpoint()
        assert not any(needle.encode() in content for content in files(database).values())
    sealed_store.delete_conversation(sealed.id)
    assert plain.search(needle).encrypted_conversations == 0


HOSTILE = [
    "",
    "   ",
    "!!! ??? ...",
    "NEAR(a b)",
    "a AND b OR NOT c",
    '"unbalanced',
    "*",
    "pre*",
    "^start",
    "text:col",
    "col : x",
    "a\x00b",
    "bell\x07",
    "lone \ud800 surrogate",
    "x" * 1001,
    "x" * (1 << 20),
    " ".join(f"w{i}" for i in range(40)),
    "'; DROP TABLE convstore_search; --",
    "%(owner)s",
    "\\' OR 1=1 --",
    "))) (((",
    "-minus +plus",
    "{col1 col2}: x",
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_queries_raise_only_typed_errors_and_change_nothing(store, query):
    store.create_conversation().append([user("a b c text col start pre minus plus x"), model("ok")])
    before = index_state(store.engine)
    error: SearchQueryError | None = None
    try:
        page = store.search(query)
    except SearchQueryError as caught:
        error = caught
    if error is None:
        assert isinstance(page, convstore.SearchPage)
    else:
        assert error.field == "query"
        assert error.reason in {"empty", "too_long", "too_many_words", "control_character", "invalid_text"}
        assert query.strip()[:20] not in str(error) or len(query.strip()) < 3  # the text is not echoed
    assert index_state(store.engine) == before


@given(query=hs.text(max_size=80))
def test_any_text_is_a_page_or_a_typed_error(tmp_path_factory, query):
    path = tmp_path_factory.getbasetemp() / "hypothesis-search.db"
    with convstore.Store(f"sqlite:///{path}") as store:
        if not store.search("seeded", limit=1).hits:
            store.create_conversation().append([user("seeded text with NEAR and OR words")])
        with contextlib.suppress(SearchQueryError):
            store.search(query)


def test_hypothesis_queries_on_every_backend(store):
    store.create_conversation().append([user("seeded text with NEAR and OR words")])
    before = index_state(store.engine)

    @given(query=hs.text(max_size=60))
    def run(query: str) -> None:
        with contextlib.suppress(SearchQueryError):
            store.search(query, limit=5)

    run()
    assert index_state(store.engine) == before


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": True}, "limit"),
        ({"cursor": "nonsense"}, "cursor"),
        ({"cursor": 3}, "cursor"),
        ({"since": datetime(2020, 1, 1)}, "since"),
        ({"until": "yesterday"}, "until"),
        ({"conversation_id": "not-an-id"}, "conversation_id"),
        ({"step_types": "user_input"}, "step_types"),
        ({"step_types": ["user input; --"]}, "step_types"),
        ({"model": 5}, "model"),
    ],
)
def test_bad_arguments_name_themselves(store, arguments, field):
    with pytest.raises(SearchQueryError) as seen:
        store.search("word", **arguments)
    assert seen.value.field == field
    assert isinstance(seen.value, convstore.ConvstoreError)


def test_operators_are_plain_words(store):
    needle = word()
    store.create_conversation().append([user(f"{needle} NEAR the end")])
    assert len(store.search(f'"{needle}" NEAR')) == 1
    assert len(store.search(f"{needle}*")) == 1
    assert len(store.search(f"{needle}:")) == 1
    assert list(store.search(f"{needle} OR nothingelse")) == []  # OR is a word the step lacks


def test_an_imported_conversation_is_searchable(make_store):
    needle = word()
    source = make_store()
    conv = source.create_conversation()
    conv.append([user(f"{needle} travels")])
    dump = source.export_conversation(conv.id)
    source.delete_conversation(conv.id)
    target = make_store()
    assert list(target.search(needle)) == []
    target.import_conversation(dump, allow_erased=True)  # the same database remembers the delete
    assert [hit.conversation_id for hit in target.search(needle)] == [conv.id]


def _previous_revision() -> str:
    """The revision before the one that builds the search index (found by its file's name)."""
    scripts = ScriptDirectory.from_config(_migrate.alembic_config())
    (search,) = [script for script in scripts.walk_revisions() if script.path.endswith("_search.py")]
    assert isinstance(search.down_revision, str)
    return search.down_revision


def test_the_migration_indexes_a_populated_store_of_the_previous_revision(db_url):
    pytest.importorskip("cryptography")
    needles = [word() for _ in range(3)]
    keyring = Keyring({"k1": K1}, active="k1")
    with convstore.Store(db_url) as store, convstore.Store(db_url, keyring=keyring) as sealed_store:
        ids = []
        for index in range(250):  # more than one batch of conversations
            conv = store.create_conversation()
            conv.append([user(f"{needles[index % 3]} number {index}"), model(f"reply {index}")])
            ids.append(conv.id)
        forked = store.conversation(ids[0]).fork(branch="side")
        forked.append([user("on the side")])
        sealed = sealed_store.create_conversation()
        sealed.append([user(f"{needles[0]} sealed")])
        _migrate.downgrade(store.engine, _previous_revision())
    engine = sa.create_engine(db_url)
    with engine.connect() as db:
        assert f"{PREFIX}search" not in sa.inspect(db).get_table_names()
    engine.dispose()
    told: list[tuple[str, int, int]] = []
    with convstore.Store(db_url, check_schema=False) as old:
        old.upgrade(progress=lambda what, done, total: told.append((what, done, total)))
    backfill = [entry for entry in told if entry[0] == "indexing conversations for search"]
    assert backfill[-1][1] == backfill[-1][2] == 250
    assert len(backfill) >= 2
    by_owner = [entry for entry in told if entry[0] == "indexing search rows by owner"]
    if db_url.startswith("sqlite"):  # 0013: SQLite's index rebuilt with the owners' tokens
        assert by_owner[-1][1] == by_owner[-1][2] == 501
    else:
        assert by_owner == []
    with convstore.Store(db_url) as store:
        assert store.check().ok
        hits = list(store.search(needles[0], limit=100))
        assert len(hits) == 84  # 0, 3, ..., 249: every third, none of the sealed one
        assert {hit.type for hit in hits} == {"user_input"}
        assert store.search(needles[0]).encrypted_conversations == 1
        first = next(hit for hit in hits if hit.conversation_id == ids[0])
        assert first.branches == ("main", "side")
        # New turns are indexed as before.
        store.conversation(ids[1]).append([user(f"{needles[2]} later")])
        assert len(store.search(needles[2], limit=100)) == 84


def test_the_index_is_distributed_on_citus(store):
    with store.engine.connect() as db:
        if not has_citus(db):
            pytest.skip("Citus only")
        placed = {
            row.name: (row.partmethod, row.colocationid)
            for row in db.execute(
                sa.text(
                    "SELECT CAST(logicalrelid AS text) AS name, partmethod, colocationid "
                    "FROM pg_dist_partition"
                )
            )
        }
    assert placed[f"{PREFIX}search"] == placed[f"{PREFIX}conversations"]  # hashed, colocated
    assert placed[f"{PREFIX}search"][0] == "h"
    needle = word()
    conv = store.create_conversation()
    conv.append([user(f"{needle} on a shard")])
    assert [hit.branches for hit in store.search(needle)] == [("main",)]
    store.delete_conversation(conv.id)
    assert list(store.search(needle)) == []


def test_snippets_are_plain_text_with_offsets():
    from convstore.store import _search  # noqa: PLC0415

    text = "<b>not markup</b> " + "lead " * 60 + "the Wörld is here " + "tail " * 60
    snippet, matches = _search.make_snippet(text, ["WORLD"])
    assert snippet.startswith("…")
    assert snippet.endswith("…")
    assert [snippet[start:end] for start, end in matches] == ["Wörld"]
    assert re.search(r"<b>", _search.make_snippet(text, ["markup"])[0])  # text, as it is: escape it to show


def _located_by_expression(text: str, words: list[str]) -> list[tuple[int, int]]:
    """Where a case-insensitive expression of the words finds them as whole words (what ``_located``
    finds without compiling one for ASCII words)."""
    from convstore.store import _search  # noqa: PLC0415

    pattern = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    return [
        (m.start(), m.end())
        for m in re.finditer(pattern, text, re.IGNORECASE)
        if _search._whole(text, m.start(), m.end())
    ]


@given(
    hs.text(alphabet="aAbBkKsSiI .,-'\n\u00e9\u00df\u0130\u0131\u017f\u212a\u00c9", max_size=40),
    hs.lists(hs.text(alphabet="aAbBkKsSiI\u00e9", min_size=1, max_size=3), min_size=1, max_size=3),
)
def test_words_are_located_as_an_expression_finds_them(text, words):
    from convstore.store import _search  # noqa: PLC0415

    assert _search._located(text, words) == _located_by_expression(text, words)


@given(hs.text(alphabet=hs.characters(max_codepoint=127), max_size=60))
def test_an_ascii_query_has_the_words_of_any_query(query):
    """The ASCII short way of ``words_of`` (no Unicode lookup a character) reads a query as the general
    way does: the same words, or the same error."""
    from convstore.store import _search  # noqa: PLC0415

    def read(function: Any) -> Any:
        try:
            return function(query)
        except SearchQueryError as error:
            return error.field, error.reason, str(error)

    assert read(_search.words_of) == read(_search._unicode_words)


# convstore search and the search page of convstore serve.


def test_the_command_prints_ids_show_accepts(tmp_path, capsys):
    from convstore.cli import main  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    needle = word()
    with convstore.Store(url) as store:
        conv = store.create_conversation()
        nodes = conv.append([user(f"about {needle}"), model("fine")])
        conv.fork(at=nodes[0].id, branch="retry")
    assert main(["--db", url, "search", needle]) == 0
    shown = capsys.readouterr().out
    assert f"{conv.id}  {nodes[0].id}" in shown
    assert "branches: main, retry" in shown
    assert main(["--db", url, "search", needle, "--json"]) == 0
    document = __import__("json").loads(capsys.readouterr().out)
    assert [(hit["conversation_id"], hit["node_id"]) for hit in document["hits"]] == [(conv.id, nodes[0].id)]
    assert main(["--db", url, "show", document["hits"][0]["conversation_id"], "--branch", "retry"]) == 0
    assert nodes[0].id in capsys.readouterr().out
    assert main(["--db", url, "search", "a\x00b"]) == 1
    assert "SearchQueryError" in capsys.readouterr().err


def test_the_search_page_links_each_hit_to_its_branch_at_the_node(tmp_path):
    from tests.web.test_web import XSS, assert_inert, make_client  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'web.db'}"
    needle = word()
    with convstore.Store(url) as store:
        conv = store.create_conversation()
        for index in range(30):
            conv.append([user(f"turn {index}"), model(f"reply {index}")])
        nodes = conv.append([user(f"{needle} {XSS[0]}"), model("ok")])
        conv.fork(at=nodes[0].id, branch="side")
    with make_client(url) as client:
        page = client.get("/search", params={"q": needle})
        assert page.status_code == 200
        assert_inert(page.text)
        assert XSS[0] not in page.text
        assert f"<mark>{needle}</mark>" in page.text
        assert f"/c/{conv.id}/branch?b=main&amp;start=58#n-{nodes[0].id}" in page.text
        assert f"/c/{conv.id}/branch?b=side&amp;start=58#n-{nodes[0].id}" in page.text
        opened = client.get(f"/c/{conv.id}/branch", params={"b": "side", "start": 58})
        assert f'id="n-{nodes[0].id}"' in opened.text
        refused = client.get("/search", params={"q": "\x07"})
        assert refused.status_code == 400
        assert "control character" in refused.text
        assert 'action="/search"' in client.get("/").text  # the box on every page


# The guide's examples run as they are.

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "search.md"


def guide_examples() -> list[tuple[str, str | None]]:
    """Each ```python block of the guide, with the ```text block right after it (what it prints), if any."""
    blocks = re.findall(r"```(\w+)\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.DOTALL)
    examples = []
    for index, (kind, body) in enumerate(blocks):
        if kind == "python":
            after = blocks[index + 1] if index + 1 < len(blocks) else None
            examples.append((body, after[1] if after is not None and after[0] == "text" else None))
    return examples


@pytest.mark.parametrize("number", range(len(guide_examples())))
def test_the_guide_examples_run_and_print_what_it_says(number, tmp_path, monkeypatch):
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415

    code, expected = guide_examples()[number]
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"{GUIDE.name} example {number + 1}", "exec"), {"__name__": "__main__"})  # noqa: S102
    if expected is not None:
        assert printed.getvalue() == expected


def test_db_upgrade_draws_the_backfill_progress(tmp_path, capsys):
    import io  # noqa: PLC0415

    from convstore.cli import main  # noqa: PLC0415
    from convstore.cli._db import _UpgradeProgress  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with convstore.Store(url) as store:
        for index in range(3):
            store.create_conversation().append([user(f"old {index}")])
        _migrate.downgrade(store.engine, _previous_revision())
    assert main(["--db", url, "db", "upgrade"]) == 0
    assert f"from revision {_previous_revision()} to {_migrate.head_revision()}" in capsys.readouterr().out

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown = Terminal()
    bar = _UpgradeProgress(shown)
    bar("indexing conversations for search", 200, 250)
    bar("indexing conversations for search", 250, 250)
    bar.close()
    assert "250/250" in shown.getvalue()
    # Revision 0013 counts indexed steps, not conversations.
    bar = _UpgradeProgress(Terminal())
    bar("indexing conversations for search", 1, 2)
    bar("indexing search rows by owner", 1, 20_000)
    units = {what: drawn.unit for what, drawn in bar._bars.items()}
    bar.close()
    assert units == {
        "indexing conversations for search": "conversations",
        "indexing search rows by owner": "steps",
    }
