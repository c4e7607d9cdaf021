"""The store's contract, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import FIXTURES, model, user
from hypothesis import given, settings
from hypothesis import strategies as hst
from strategies import examples, exchanges

import convstore
from convstore import (
    BranchExistsError,
    BranchNotFoundError,
    CodecError,
    ConflictError,
    ConversationNotFoundError,
    InvalidExchangeError,
    NodeNotFoundError,
)
from convstore.store import _statements as st

DOGS = [user("I have 2 dogs in my house."), model("That's nice! Two dogs must keep you busy.")]
PAWS = user("How many paws are in my house?")


def dump(store: convstore.Store) -> list[tuple]:
    """Every row of convstore's tables, in a stable order: the database's logical content."""
    with store.engine.connect() as conn:
        rows: list[tuple] = []
        for table in ("convstore_conversations", "convstore_branches", "convstore_nodes"):
            rows.extend((table, *map(str, row)) for row in conn.execute(sa.text(f"SELECT * FROM {table}")))
    return sorted(rows)


def file_digest(store: convstore.Store) -> dict[str, str]:
    database = store.engine.url.database
    if store.engine.dialect.name != "sqlite" or not database:
        return {}
    paths = [Path(database), Path(database + "-wal")]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.exists()}


def test_history_is_the_exact_input_of_the_next_request(store):
    conv = store.create_conversation(model="gemini-3-flash-preview")
    conv.append(DOGS)
    conv.append([PAWS])
    assert conv.history() == [*DOGS, PAWS]
    assert json.loads(conv.history_json()) == [*DOGS, PAWS]
    reopened = store.conversation(conv.id)
    assert reopened.history() == [*DOGS, PAWS]


def test_fixture_history_is_stored_byte_for_byte(store):
    path = FIXTURES / "stateless_function_call_history_after_turn2.json"
    history = json.loads(path.read_text())
    conv = store.create_conversation()
    conv.append(history[:3])
    conv.append(history[3:])
    assert conv.history() == history
    stored = [node.raw_json for node in conv.nodes()]
    assert stored == [json.dumps(step, ensure_ascii=False, separators=(",", ":")) for step in history]


def test_append_returns_linked_nodes_of_one_exchange(store):
    conv = store.create_conversation()
    first = conv.append(DOGS)
    second = conv.append([PAWS, model("Eight.")])
    assert [n.depth for n in first + second] == [0, 1, 2, 3]
    assert first[0].parent_id is None
    assert [n.parent_id for n in first[1:] + second] == [n.id for n in first + second[:1]]
    assert len({n.exchange_id for n in first}) == 1
    assert first[0].exchange_id != second[0].exchange_id
    assert [n.type for n in second] == ["user_input", "model_output"]
    assert all(
        n.total_tokens == sum(m.token_count for m in (first + second)[: i + 1])
        for i, n in enumerate(first + second)
    )
    assert isinstance(second[0].step, convstore.UserInputStep)
    assert second[0].data == PAWS
    assert conv.head_id == second[-1].id


def test_model_objects_and_dicts_are_both_accepted(store):
    conv = store.create_conversation()
    conv.append([convstore.UserInputStep(content=[convstore.TextContent(text="hi")]), model("hello")])
    assert conv.history() == [user("hi"), model("hello")]


def test_fork_shares_the_prefix_and_copies_nothing(store):
    conv = store.create_conversation()
    first = conv.append(DOGS)
    conv.append([PAWS, model("Eight paws.")])
    before = len([r for r in dump(store) if r[0] == "convstore_nodes"])
    alt = conv.fork(at=first[-1].id, branch="cats")
    assert len([r for r in dump(store) if r[0] == "convstore_nodes"]) == before
    assert alt.branch == "cats"
    assert alt.history() == DOGS
    alt.append([user("Actually, I have cats.")])
    assert alt.history() == [*DOGS, user("Actually, I have cats.")]
    assert conv.history() == [*DOGS, PAWS, model("Eight paws.")]
    assert {b.name for b in conv.branches()} == {"main", "cats"}


def test_fork_defaults_to_the_head_and_generates_a_name(store):
    conv = store.create_conversation()
    conv.append(DOGS)
    alt = conv.fork()
    assert alt.branch != "main"
    assert alt.history() == DOGS
    assert alt.head_id == conv.head_id


def test_fork_of_an_empty_branch_is_empty(store):
    conv = store.create_conversation()
    alt = conv.fork(branch="other")
    assert alt.history() == []
    alt.append([PAWS])
    assert conv.history() == []


def test_fork_errors(store):
    conv = store.create_conversation()
    nodes = conv.append(DOGS)
    other = store.create_conversation()
    foreign = other.append([PAWS])
    conv.fork(at=nodes[0].id, branch="b")
    with pytest.raises(BranchExistsError):
        conv.fork(at=nodes[1].id, branch="b")
    with pytest.raises(NodeNotFoundError):
        conv.fork(at=foreign[0].id)  # a node of another conversation does not exist here
    with pytest.raises(NodeNotFoundError):
        conv.fork(at="not-an-id")
    with pytest.raises(ValueError, match="branch name"):
        conv.fork(branch="")


def test_edit_a_past_message_by_forking_at_its_parent(store):
    conv = store.create_conversation()
    conv.append(DOGS)
    asked = conv.append([PAWS, model("Eight.")])
    edited = conv.fork(at=asked[0].parent_id, branch="edit-1")
    edited.append([user("How many tails are in my house?"), model("Two.")])
    tree = conv.tree()
    assert [n.id for n in tree.children(asked[0].parent_id)] == [asked[0].id, edited.nodes()[2].id]
    assert tree.heads() == {asked[-1].id: ["main"], edited.head_id: ["edit-1"]}
    drawing = tree.render()
    assert "<- main" in drawing
    assert "<- edit-1" in drawing
    assert "paws" not in drawing  # the default rendering never shows content


def test_fork_and_edit_in_one_statement_refuse_what_is_not_there(store):
    """A fork (and an edit, a fork at the node's parent) is one statement: when it inserts nothing, the
    error still says whether the node or the conversation is missing, and nothing is left behind."""
    conv = store.create_conversation()
    nodes = conv.append(DOGS)
    other = store.create_conversation()
    foreign = other.append([PAWS])
    with pytest.raises(NodeNotFoundError):
        conv.edit(foreign[0].id)  # another conversation's node
    with pytest.raises(NodeNotFoundError):
        conv.edit("not-an-id")
    with pytest.raises(NodeNotFoundError):
        store.create_conversation().edit(None)  # an empty branch's head is None: no node to edit
    with pytest.raises(BranchExistsError):
        conv.edit(nodes[1].id, branch="main")
    assert [b.name for b in conv.branches()] == ["main"]
    store.delete_conversation(conv.id)
    for make in (
        lambda: conv.fork(at=nodes[0].id),
        lambda: conv.edit(nodes[1].id),
        lambda: conv.fork(at=None),
    ):
        with pytest.raises(ConversationNotFoundError):
            make()


@pytest.mark.parametrize("single", [True, False])
def test_both_forms_of_a_fork_agree(db_url, single):
    """The one-statement fork and the two-statement one Citus runs give the same heads and errors."""
    from convstore.store import _ops, _search  # noqa: PLC0415
    from convstore.store._engine import run  # noqa: PLC0415
    from convstore.store._prepare import utcnow  # noqa: PLC0415

    with convstore.Store(db_url) as store:
        postgres = store.engine.dialect.name == "postgresql"
        if single and postgres and run(store.engine, _search.routed(), write=False):
            pytest.skip("Citus plans an INSERT ... SELECT across shards: the store runs the two statements")
        conv = store.create_conversation()
        first = conv.append(DOGS)
        asked = conv.append([PAWS, model("Eight.")])

        def fork(at, name, *, before=False, known=None):
            op = _ops.fork(conv.id, at, name, utcnow(), before=before, single=single, known=known)
            return run(store.engine, op, write=True, single=single)

        head = fork(asked[-1].id, "at")
        assert (head.node_id, head.depth, head.total_tokens) == (asked[-1].id, 3, asked[-1].total_tokens)
        assert head.exchange_id == asked[-1].exchange_id
        # The head read back is the one a reader of the branch finds (its segment too), and a fork at a
        # head the caller knows (read by no statement of its own) gives the branch that same head.
        assert head == store.conversation(conv.id, "at")._head == store.conversation(conv.id)._head
        assert fork(asked[-1].id, "known", known=head) == store.conversation(conv.id, "known")._head
        edited = fork(asked[0].id, "before", before=True)
        assert (edited.node_id, edited.depth) == (first[-1].id, first[-1].depth)
        assert fork(first[0].id, "root", before=True).node_id is None
        assert fork(None, "empty").node_id is None
        with pytest.raises(BranchExistsError):
            fork(first[0].id, "at")
        with pytest.raises(NodeNotFoundError):
            fork(str(uuid.uuid4()), "missing", before=True)
        assert store.conversation(conv.id, "before").history() == DOGS
        store.delete_conversation(conv.id)
        with pytest.raises(ConversationNotFoundError):
            fork(first[0].id, "late")


def test_a_fork_at_the_head_it_knows_starts_there_after_the_branch_moved(store):
    """A fork at the branch's head (the default) takes the head this object read, without reading the node
    again: when another writer moved the branch meanwhile, the new branch still starts at that node, with
    its depth and running total; its head then moves by compare-and-swap like any other."""
    conv = store.create_conversation()
    first = conv.append(DOGS)
    store.conversation(conv.id).append([PAWS, model("Eight.")])  # another writer moves main
    with pytest.raises(BranchExistsError):
        conv.fork(branch="main")
    forked = conv.fork(branch="side")
    assert forked.head_id == first[-1].id
    stale = store.conversation(conv.id, "side")
    assert stale.head_id == first[-1].id
    added = forked.append([user("How many tails?"), model("Two.")])
    assert added[0].parent_id == first[-1].id
    assert (added[0].depth, added[0].total_tokens) == (
        first[-1].depth + 1,
        first[-1].total_tokens + added[0].token_count,
    )
    with pytest.raises(ConflictError):
        stale.append([PAWS])  # its head moved since this object read it: refused
    assert forked.history() == [*DOGS, user("How many tails?"), model("Two.")]
    assert store.conversation(conv.id).history() == [*DOGS, PAWS, model("Eight.")]
    assert [b.name for b in conv.branches()] == ["main", "side"]


def test_an_edit_starts_at_the_parent_and_appends_after_it(store):
    conv = store.create_conversation()
    first = conv.append(DOGS)
    asked = conv.append([PAWS, model("Eight.")])
    edited = conv.edit(asked[0].id, branch="tails")
    assert edited.head_id == first[-1].id
    added = edited.append([user("How many tails?"), model("Two.")])
    assert added[0].parent_id == first[-1].id
    assert added[0].depth == first[-1].depth + 1
    assert added[0].total_tokens == first[-1].total_tokens + added[0].token_count
    assert edited.history() == [*DOGS, user("How many tails?"), model("Two.")]
    # The edit of a first message is an empty branch; its head moves by compare-and-swap like any other.
    again = conv.edit(first[0].id, branch="again")
    assert again.head_id is None
    assert again.history() == []
    stale = store.conversation(conv.id, "again")
    again.append([PAWS])
    with pytest.raises(ConflictError):
        stale.append([PAWS])
    assert [n.data for n in again.nodes()] == [PAWS]


def test_an_edit_gives_its_branch_the_head_a_reader_of_it_finds(store):
    """An edit reads the new head (the edited node's parent: its depth, running total, exchange and
    segment) in its one statement; it is the head a reader of the new branch finds, at a node in a
    segment's middle, at a segment's last node, and at the branch's own head."""
    conv = store.create_conversation()
    first = conv.append(DOGS)
    asked = conv.append([PAWS, model("Eight.")])
    for number, at in enumerate((first[-1].id, asked[0].id, conv.head_id)):
        edited = conv.edit(at, branch=f"edit-{number}")
        assert edited._head == store.conversation(conv.id, f"edit-{number}")._head
        parent = next(node for node in conv.nodes() if node.id == edited.head_id)
        assert (parent.depth, parent.total_tokens, parent.exchange_id) == (
            edited._head.depth,
            edited._head.total_tokens,
            edited._head.exchange_id,
        )


def test_a_fork_or_edit_along_the_last_append_reads_no_node(store, request, monkeypatch):
    """The object that appended knows the heads along what it wrote (and the head it wrote after): a fork
    at one of those nodes, or an edit of one, is the branch insert alone (``FORK_KNOWN``), no node read,
    and its head is the one a reader of the new branch finds. An older node is read, as before. (On Citus
    a fork is two statements, the first reading the node under the conversation's lock, known or not.)"""
    from convstore.store import _forks  # noqa: PLC0415 -- the seam: which statement the fork chose

    known: list[str | None] = []
    original = _forks._fork_known

    def spied(params, head):
        known.append(params["at"])
        return (yield from original(params, head))

    monkeypatch.setattr(_forks, "_fork_known", spied)
    conv = store.create_conversation()
    first = conv.append(DOGS)
    last = conv.append([PAWS, model("Eight."), user("And tails?")])
    known.clear()
    made = {}
    for number, node in enumerate(last):
        made[f"fork-{number}"] = conv.fork(at=node.id, branch=f"fork-{number}")
        made[f"edit-{number}"] = conv.edit(node.id, branch=f"edit-{number}")
    made["fork-before"] = conv.fork(at=first[-1].id, branch="fork-before")
    made["edit-old"] = conv.edit(first[-1].id, branch="edit-old")  # not along the last append: read
    routed = request.node.callspec.params["db_url"] == "citus"
    expected = [last[0].id, first[-1].id, last[1].id, last[0].id, last[2].id, last[1].id, first[-1].id]
    assert known == ([] if routed else expected)
    for name, forked in made.items():
        assert forked._head == store.conversation(conv.id, name)._head, name
    assert made["edit-0"].head_id == first[-1].id
    assert made["edit-2"].head_id == last[1].id
    assert made["fork-2"].head_id == last[2].id
    assert made["edit-old"].head_id == first[0].id
    added = made["edit-1"].append([model("Eight paws.")])
    assert added[0].parent_id == last[0].id
    assert made["edit-1"].history() == [*DOGS, PAWS, model("Eight paws.")]
    assert store.conversation(conv.id, "edit-1").history() == [*DOGS, PAWS, model("Eight paws.")]
    assert store.check().ok


@settings(max_examples=examples(20))
@given(
    sizes=hst.lists(hst.integers(min_value=1, max_value=4), min_size=1, max_size=4),
    pick=hst.integers(min_value=0, max_value=10),
    edit=hst.booleans(),
)
def test_a_known_fork_or_edit_starts_where_a_reader_would(store, sizes, pick, edit):
    """Whatever the appends before it, a fork or an edit along the last append (no node read) gives the
    same head, segment included, as the same fork or edit made by an object that read nothing (the node
    read from the store); and the next appends on both new branches give the same history."""
    conv = store.create_conversation()
    for index, size in enumerate(sizes):
        nodes = conv.append([user(f"u{index}-{step}") for step in range(size)])
    node = nodes[pick % len(nodes)]
    fresh = store.conversation(conv.id)
    if edit:
        mine, theirs = conv.edit(node.id, branch="mine"), fresh.edit(node.id, branch="theirs")
    else:
        mine, theirs = conv.fork(at=node.id, branch="mine"), fresh.fork(at=node.id, branch="theirs")
    assert mine._head == theirs._head
    mine.append([user("next")])
    theirs.append([user("next")])
    assert mine.history() == theirs.history() == store.conversation(conv.id, "theirs").history()
    assert store.check().ok


def test_an_edit_of_a_node_that_is_not_this_conversations_is_refused_by_its_ids(make_store):
    """A node of another conversation (another owner's too) is not a node of this one: the edit is
    refused with ``NodeNotFoundError`` naming the conversation and the node, no content, and nothing is
    written to either conversation."""
    alice, bob = make_store(owner="alice"), make_store(owner="bob")
    hers = alice.create_conversation()
    secret = hers.append([user("alice's secret question"), model("alice's secret answer")])
    his = bob.create_conversation()
    his.append([user("bob's question")])
    before = (alice.conversation(hers.id).branches(), bob.conversation(his.id).branches())
    for node in secret:
        with pytest.raises(NodeNotFoundError) as refused:
            his.edit(node.id, branch="stolen")
        assert (refused.value.conversation_id, refused.value.node_id) == (his.id, node.id)
        assert "secret" not in str(refused.value)
        assert "secret" not in repr(refused.value)
    with pytest.raises(ConversationNotFoundError):
        bob.conversation(hers.id)  # nor can bob open hers to edit it
    assert (alice.conversation(hers.id).branches(), bob.conversation(his.id).branches()) == before


def test_an_edit_racing_a_head_move_starts_where_it_was_asked_and_its_branch_moves_by_compare_and_swap(
    store,
):
    """An edit of this branch's head while another writer moves the branch: the new branch starts at the
    parent of the node edited (not of the new head). A writer that read the edited branch before another
    one appended to it is refused, and writes nothing."""
    conv = store.create_conversation()
    first = conv.append(DOGS)
    store.conversation(conv.id).append([PAWS, model("Eight.")])  # another writer moves main
    edited = conv.edit(conv.head_id, branch="edited")  # this object's head: first[-1]
    assert edited.head_id == first[0].id
    stale = store.conversation(conv.id, "edited")
    edited.append([model("Fine, two dogs.")])
    before = dump(store)
    with pytest.raises(ConflictError):
        stale.append([model("stale")])
    assert dump(store) == before
    assert store.conversation(conv.id, "edited").history() == [DOGS[0], model("Fine, two dogs.")]
    assert store.check().ok


def test_a_refused_compare_and_swap_writes_nothing_where_the_nodes_could_go(store):
    """An append to an empty branch starts a segment of its own, so its nodes' insert succeeds whatever
    another writer did: only the compare-and-swap refuses it (on PostgreSQL, the guard sent before the
    COMMIT of the write's one pipeline). Nothing of it stays."""
    conv = store.create_conversation()
    first = conv.append(DOGS)
    empty = conv.edit(first[0].id, branch="empty")
    stale = store.conversation(conv.id, "empty")
    empty.append([PAWS])
    before = dump(store)
    with pytest.raises(ConflictError) as raised:
        stale.append([user("stale")])
    assert raised.value.expected_head is None  # the head it last saw: the empty branch
    assert dump(store) == before
    assert store.check().ok


def test_path_is_the_history_at_a_node(store):
    conv = store.create_conversation()
    nodes = conv.append(DOGS) + conv.append([PAWS])
    assert [n.id for n in conv.path(nodes[1].id)] == [n.id for n in nodes[:2]]
    assert [n.id for n in conv.nodes()] == [n.id for n in nodes]
    with pytest.raises(NodeNotFoundError):
        conv.path("01a213da-0000-7000-8000-000000000000")


def test_conflicting_append_raises_and_writes_nothing(store):
    conv = store.create_conversation()
    conv.append(DOGS)
    other = store.conversation(conv.id)
    other.append([PAWS])
    before = dump(store)
    with pytest.raises(ConflictError) as raised:
        conv.append([user("stale")])
    assert raised.value.expected_head == conv.head_id
    assert dump(store) == before
    conv.refresh()
    conv.append([user("fresh")])
    assert conv.history() == [*DOGS, PAWS, user("fresh")]


def test_history_refreshes_the_head_it_appends_after(store):
    conv = store.create_conversation()
    other = store.conversation(conv.id)
    other.append(DOGS)
    assert conv.history() == DOGS
    conv.append([PAWS])
    assert other.history() == [*DOGS, PAWS]


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"type": "user_input"},
        [{"type": "user_input", "content": [{"type": "text", "text": 5}]}],
        [user("ok"), {"no_type": True}],
        [user("ok"), {"type": "function_call", "id": "x"}],
        [user("ok"), {"type": "user_input", "content": [], "n": float("nan")}],
        [user("ok"), 42],
    ],
)
def test_bad_input_is_refused_and_leaves_the_database_byte_for_byte(store, bad):
    conv = store.create_conversation()
    conv.append(DOGS)
    rows, files = dump(store), file_digest(store)
    with pytest.raises((CodecError, InvalidExchangeError)):
        conv.append(bad)
    assert dump(store) == rows
    assert file_digest(store) == files
    assert conv.history() == DOGS


def test_conversations_are_listed_newest_first_in_pages(store):
    made = [store.create_conversation(model=f"m{i}", metadata={"i": i}).id for i in range(7)]
    first = store.conversations(limit=3)
    assert [c.id for c in first] == made[::-1][:3]
    second = store.conversations(limit=3, cursor=first.next_cursor)
    third = store.conversations(limit=3, cursor=second.next_cursor)
    assert [c.id for c in second] + [c.id for c in third] == made[::-1][3:]
    assert third.next_cursor is None
    assert [c.id for c in store.iter_conversations(page_size=2)] == made[::-1]
    assert first.items[0].metadata == {"i": 6}
    with pytest.raises(ValueError, match="cursor"):
        store.conversations(cursor="garbage")


def test_a_listed_record_is_the_opened_one_and_cursors_break_ties_by_id(store):
    """Listing builds each record from the driver's row: the same record as opening the conversation
    (settings decoded, time aware UTC, id canonical); conversations made in the same microsecond are
    paged by id, none twice, none skipped."""
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    made = [
        store.create_conversation(
            model="m", system_instruction="Be brief.", tools=tools, metadata={"i": 1}
        ).id,
        store.create_conversation(generation_config={"thinking_level": "low"}).id,
    ]
    same = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    rows = [
        {"id": str(uuid.uuid4()), "created_at": same, "model": "m", "system_instruction": None}
        | {"generation_config": None, "tools": None, "metadata": None, "owner": None, "encryption": None}
        for _ in range(5)
    ]
    stamps = {"created_at": same, "updated_at": same}
    branches = [{"conversation_id": row["id"], "name": "main", "head_id": None, **stamps} for row in rows]
    with store.engine.begin() as conn:
        conn.execute(st.INSERT_CONVERSATION, rows)
        conn.execute(st.INSERT_BRANCH, branches)
    listed = list(store.iter_conversations(page_size=2))
    assert [info.id for info in listed[:2]] == made[::-1]
    assert [info.id for info in listed[2:]] == sorted((row["id"] for row in rows), reverse=True)
    for info in listed:
        assert info == store.conversation(info.id).info
        assert info.created_at.tzinfo is not None
        assert info.created_at.utcoffset() == timedelta(0)
    assert listed[-1].created_at == same


def test_conversation_settings_are_kept(store):
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    conv = store.create_conversation(
        model="gemini-3-flash-preview",
        system_instruction="Be brief.",
        generation_config={"thinking_level": "low"},
        tools=tools,
        metadata={"user": "u-1"},
    )
    again = store.conversation(conv.id)
    assert (again.model, again.system_instruction) == ("gemini-3-flash-preview", "Be brief.")
    assert again.generation_config == {"thinking_level": "low"}
    assert again.tools == tools
    assert again.metadata == {"user": "u-1"}
    assert again.info.created_at.tzinfo is not None


def test_bad_settings_are_named(store):
    with pytest.raises(CodecError) as raised:
        store.create_conversation(model=3, tools={"type": "function"})  # type: ignore[arg-type]
    assert [p for p, _ in raised.value.problems] == ["model", "tools"]
    assert store.conversations().items == []


def test_delete_removes_everything_of_one_conversation(store):
    keep = store.create_conversation()
    keep.append(DOGS)
    gone = store.create_conversation()
    nodes = gone.append(DOGS)
    gone.fork(at=nodes[0].id)
    store.delete_conversation(gone.id)
    with pytest.raises(ConversationNotFoundError):
        store.conversation(gone.id)
    with pytest.raises(ConversationNotFoundError):
        store.delete_conversation(gone.id)
    assert not [r for r in dump(store) if gone.id in r]
    assert keep.history() == DOGS


def test_operations_on_a_deleted_conversation_say_so(store):
    conv = store.create_conversation()
    conv.append(DOGS)
    store.delete_conversation(conv.id)
    with pytest.raises(ConversationNotFoundError):
        conv.append([PAWS])
    with pytest.raises(ConversationNotFoundError):
        conv.history()
    with pytest.raises(ConversationNotFoundError):
        conv.branches()
    with pytest.raises(ConversationNotFoundError):
        conv.fork(branch="x")


def test_missing_things_are_not_found_errors(store):
    conv = store.create_conversation()
    with pytest.raises(BranchNotFoundError):
        store.conversation(conv.id, branch="nope")
    for bad_id in ("nope", "", "'; DROP TABLE convstore_nodes; --", "01a213da-0000-7000-8000-000000000000"):
        with pytest.raises(ConversationNotFoundError):
            store.conversation(bad_id)
    with pytest.raises(LookupError):
        store.conversation(conv.id, branch="nope")


@settings(max_examples=examples(25))
@given(exchange_list=hst.lists(exchanges, min_size=1, max_size=4))
def test_random_steps_round_trip_through_the_store(store, exchange_list):
    conv = store.create_conversation()
    for exchange in exchange_list:
        conv.append(exchange)
    expected = [step for exchange in exchange_list for step in exchange]
    assert conv.history() == expected
    assert store.conversation(conv.id).history() == expected


def test_canonical_id_reads_every_form_a_driver_returns():
    import uuid  # noqa: PLC0415

    from convstore._ids import canonical_id, new_id  # noqa: PLC0415

    value = new_id()
    parsed = uuid.UUID(value)
    # SQLite's 32 hex digits, psycopg's UUID object, and the canonical text itself.
    assert canonical_id(parsed.hex) == canonical_id(parsed) == canonical_id(value) == value


def test_history_after_another_writer_moved_the_branch_is_the_new_one(store):
    mine = store.create_conversation()
    mine.append([user("one"), model("1")])
    assert mine.history() == [user("one"), model("1")]  # read, and kept by this object
    theirs = store.conversation(mine.id)
    theirs.append([user("two"), model("2")])
    # The head moved under it: the kept texts are not reused, the branch is read again.
    assert mine.history() == [user("one"), model("1"), user("two"), model("2")]
    mine.append([user("three"), model("3")])
    assert mine.history() == theirs.history()
    assert len(theirs.history()) == 6
    # A fork made from it starts from the shared prefix and goes its own way.
    alt = mine.fork(at=mine.nodes()[1].id, branch="alt")
    alt.append([user("other")])
    assert alt.history() == [user("one"), model("1"), user("other")]
    assert len(mine.history()) == 6


def test_history_of_an_unmoved_branch_reads_only_its_head(tmp_path, monkeypatch):
    import sqlalchemy as sa  # noqa: PLC0415

    with convstore.Store(f"sqlite:///{tmp_path / 'replay.db'}") as sync_store:
        conv = sync_store.create_conversation()
        for n in range(20):
            conv.append([user(f"q{n}"), model(f"a{n}")])
        expected = conv.history()
        statements: list[str] = []
        sa.event.listen(sync_store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        assert conv.history() == expected
        assert not [sql for sql in statements if "RECURSIVE" in sql.upper()]
        conv.append([user("q20"), model("a20")])
        assert conv.history() == [*expected, user("q20"), model("a20")]  # its own append, kept too
        assert not [sql for sql in statements if "RECURSIVE" in sql.upper()]
        # A fresh object reads the branch once, when it is opened (a short branch: with its record), and
        # builds on that for a while (an hour here: a loaded machine's clock must not decide the test).
        from convstore.store._sync import store as sync_module  # noqa: PLC0415

        monkeypatch.setattr(sync_module, "OPENED_FRESH_SECONDS", 3600.0)
        whole = conv.history()
        fresh = sync_store.conversation(conv.id)
        statements.clear()
        assert fresh.history() == whole
        assert statements == []


@pytest.mark.parametrize("made", ["create_engine", "execution_options"])
def test_a_store_on_an_engine_in_autocommit_still_writes_whole_or_not_at_all(db_url, made):
    """An engine made in autocommit (its ``begin()`` sends no ``BEGIN``): the store's writes are still
    transactions, so a stale append is refused having written nothing; the engine's own connections are
    still in autocommit afterwards."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's driver is in autocommit on every engine: the store begins its transactions")
    if made == "create_engine":
        engine = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    else:
        engine = sa.create_engine(db_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with convstore.Store(engine) as store:
            conv = store.create_conversation()
            conv.append(DOGS)
            stale = store.conversation(conv.id)
            conv.append([PAWS])
            conv.fork(branch="side")
            before = dump(store)
            with pytest.raises(ConflictError):
                stale.append([user("stale"), model("never")])
            assert dump(store) == before
        with engine.connect() as conn:
            assert conn.connection.driver_connection.autocommit is True
    finally:
        engine.dispose()


def test_an_async_store_on_an_engine_in_autocommit_still_writes_whole_or_not_at_all(db_url):
    """``test_a_store_on_an_engine_in_autocommit_still_writes_whole_or_not_at_all`` with an ``AsyncStore``."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's driver is in autocommit on every engine: the store begins its transactions")
    import asyncio  # noqa: PLC0415

    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    async def run() -> None:
        engine = create_async_engine(db_url, isolation_level="AUTOCOMMIT")
        try:
            async with convstore.AsyncStore(engine) as store:
                conv = await store.create_conversation()
                await conv.append(DOGS)
                stale = await store.conversation(conv.id)
                await conv.append([PAWS])
                with pytest.raises(ConflictError):
                    await stale.append([user("stale"), model("never")])
                assert [step["type"] for step in await (await store.conversation(conv.id)).history()] == [
                    "user_input", "model_output", "user_input"
                ]
                async with engine.connect() as conn:
                    count = (await conn.exec_driver_sql("SELECT count(*) FROM convstore_nodes")).scalar()
                assert count == 3
        finally:
            await engine.dispose()

    asyncio.run(run())
