"""The integrity check: a clean store passes; each kind of corruption, made by raw SQL, is named by its id.

The corruptions bypass the database's own guards (SQLite: a plain connection, foreign keys off; PostgreSQL:
``session_replication_role = replica``, which skips foreign-key triggers; on Citus that setting is sent on
to the workers, where the shards' triggers run), as a buggy tool or a torn restore would.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from conftest import model, user

import convstore
from convstore._ids import new_id
from convstore.errors import CorruptionError
from convstore.store import DEFAULT_CHECKS, SqlCheck
from convstore.store._check import NIL_SEGMENT
from convstore.store._schema import branches, conversations, exchanges, nodes, summaries


def corrupt(db_url: str, *statements: sa.Executable) -> None:
    engine = sa.create_engine(db_url)  # no convstore settings: SQLite's foreign keys stay off
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                if conn.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'citus'").first():
                    conn.exec_driver_sql("SET LOCAL citus.propagate_set_commands = 'local'")
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            for statement in statements:
                conn.execute(statement)
    finally:
        engine.dispose()


def three_step(tag: str) -> list[dict]:
    return [user(tag), {"type": "thought", "signature": f"sig-{tag}"}, model(f"re {tag}")]


@pytest.fixture
def built(store, client):
    """Two conversations: exchanges, a recorded turn, a fork, an edit (a sibling root) and an empty branch."""
    conv = store.create_conversation(model="gemini-3-flash-preview")
    first = conv.append(three_step("one"))
    second = conv.append(three_step("two"))
    fork = conv.fork(at=first[-1].id, branch="side")
    fork.append(three_step("side"))
    conv._fork(None, "edit").append([user("edited first message")])  # a second root
    conv.fork(at=None, branch="empty")
    other = store.create_conversation(model="gemini-3-flash-preview")
    other.append(three_step("other"))
    other.send("three", client=client)
    return {"conv": conv, "first": first, "second": second, "other": other, "fork": fork}


def found(store) -> set[tuple[str, str]]:
    return {(p.kind, p.id) for p in store.check().problems}


def test_a_clean_store_passes(store, built):
    report = store.check()
    assert report.ok, report.lines()
    assert report.problems == ()
    assert report.conversations == 2
    assert report.nodes == len(built["conv"].tree().nodes) + len(built["other"].tree().nodes)
    assert report.exchanges == 1
    assert report.branches == 5
    assert report.checks == tuple(check.name for check in DEFAULT_CHECKS)


def test_an_empty_store_passes(store):
    assert store.check().ok


def test_a_missing_parent_is_reported(store, db_url, built):
    node = built["second"][1]
    corrupt(db_url, sa.update(nodes).where(nodes.c.id == node.id).values(parent_id=new_id()))
    assert ("missing_parent", node.id) in found(store)


def test_a_parent_in_another_conversation_is_reported(store, db_url, built):
    node = built["second"][0]
    elsewhere = built["other"].nodes()[-1].id
    corrupt(db_url, sa.update(nodes).where(nodes.c.id == node.id).values(parent_id=elsewhere))
    problems = store.check().problems
    mine = [p for p in problems if p.id == node.id]
    assert [p.kind for p in mine] == ["parent_in_other_conversation"]
    assert mine[0].conversation_id == built["conv"].id
    assert mine[0].subject == "node"


def test_a_wrong_depth_is_reported(store, db_url, built):
    node = built["second"][1]
    corrupt(db_url, sa.update(nodes).where(nodes.c.id == node.id).values(depth=nodes.c.depth + 5))
    report = store.check()
    assert ("bad_depth", node.id) in {(p.kind, p.id) for p in report.problems}
    (problem,) = [p for p in report.problems if p.id == node.id and p.kind == "bad_depth"]
    assert problem.detail == "depth 9, expected 4"


def test_a_root_of_nonzero_depth_is_reported(store, db_url, built):
    root = built["first"][0]
    # Not depth 1: its child holds that depth in its segment, and the unique index refuses a second one.
    corrupt(db_url, sa.update(nodes).where(nodes.c.id == root.id).values(depth=50))
    assert ("bad_depth", root.id) in found(store)


def test_a_wrong_running_total_is_reported(store, db_url, built):
    leaf = built["fork"].nodes()[-1]
    corrupt(
        db_url, sa.update(nodes).where(nodes.c.id == leaf.id).values(total_tokens=nodes.c.total_tokens + 1)
    )
    assert found(store) == {("bad_total", leaf.id)}


def test_a_negative_token_count_is_reported(store, db_url, built):
    leaf = built["other"].nodes()[-1]
    corrupt(db_url, sa.update(nodes).where(nodes.c.id == leaf.id).values(token_count=-1))
    assert ("bad_token_count", leaf.id) in found(store)


def test_a_missing_branch_head_is_reported(store, db_url, built):
    corrupt(db_url, sa.update(branches).where(branches.c.name == "side").values(head_id=new_id()))
    problems = [p for p in store.check().problems if p.kind == "missing_head"]
    assert [(p.conversation_id, p.subject, p.id) for p in problems] == [(built["conv"].id, "branch", "side")]


def test_a_torn_exchange_is_reported(store, db_url, built):
    middle = built["second"][1]
    corrupt(db_url, sa.update(nodes).where(nodes.c.id == middle.id).values(exchange_id=new_id()))
    assert ("broken_exchange", built["second"][0].exchange_id) in found(store)


def test_an_exchange_that_branches_is_reported(store, db_url, built):
    """A sibling carrying the same exchange id: one start, but not one chain."""
    last = built["second"][-1]
    sibling = {
        "conversation_id": built["conv"].id,
        "id": new_id(),
        "parent_id": last.parent_id,
        "depth": last.depth,
        "exchange_id": last.exchange_id,
        "type": "model_output",
        "token_count": last.token_count,
        "total_tokens": last.total_tokens,
        "created_at": last.created_at,
        "payload": '{"type":"model_output"}',
    }
    sibling["segment_id"] = sibling["id"]  # a sibling starts a segment of its own
    corrupt(db_url, sa.insert(nodes).values(sibling))
    report = store.check()
    assert {(p.kind, p.id) for p in report.problems} == {("broken_exchange", last.exchange_id)}
    assert report.problems[0].detail == "4 nodes, 1 starts, depths span 3"


def test_an_exchange_record_without_its_steps_is_reported(store, db_url, built):
    orphan = new_id()
    corrupt(
        db_url,
        sa.insert(exchanges).values(
            conversation_id=built["conv"].id,
            exchange_id=orphan,
            stored=False,
            created_at=built["first"][0].created_at,
        ),
    )
    assert found(store) == {("exchange_without_nodes", orphan)}


def test_deleted_steps_of_a_recorded_exchange_are_reported(store, db_url, built):
    conv = built["other"]
    (recorded,) = conv.exchanges()
    corrupt(
        db_url,
        sa.update(branches).where(branches.c.conversation_id == conv.id).values(head_id=conv.nodes()[2].id),
        sa.delete(nodes).where(nodes.c.exchange_id == recorded.exchange_id),
    )
    assert found(store) == {("exchange_without_nodes", recorded.exchange_id)}


def test_a_summary_of_a_missing_node_is_reported(store, db_url, built):
    ghost = new_id()
    corrupt(
        db_url,
        sa.insert(summaries).values(
            conversation_id=built["conv"].id,
            node_id=ghost,
            payload="[]",
            token_count=0,
            created_at=built["first"][0].created_at,
        ),
    )
    assert found(store) == {("summary_without_node", ghost)}


def test_rows_of_a_missing_conversation_are_reported(store, db_url, built):
    conv = built["other"]
    corrupt(db_url, sa.delete(conversations).where(conversations.c.id == conv.id))
    report = store.check()
    assert {(p.kind, p.subject) for p in report.problems} == {
        ("missing_conversation", "node"),
        ("missing_conversation", "branch"),
        ("missing_conversation", "exchange"),
    }
    assert {p.conversation_id for p in report.problems} == {conv.id}
    assert len(report.problems) == len(conv.tree().nodes) + 1 + 1


def test_problems_name_ids_never_content(store, db_url, built):
    node = built["second"][1]
    corrupt(db_url, sa.update(nodes).where(nodes.c.id == node.id).values(parent_id=new_id(), depth=99))
    text = "\n".join(store.check().lines())
    assert node.id in text
    assert "two" not in text
    assert "sig-" not in text


def test_a_check_of_ones_own_runs_beside_the_defaults(store, built):
    short = SqlCheck(
        "short payloads",
        "node",
        sa.select(nodes.c.conversation_id, nodes.c.id).where(sa.func.length(nodes.c.payload) < 60),
        lambda _row: "short_payload",
    )
    report = store.check(checks=[*DEFAULT_CHECKS, short])
    assert report.checks[-1] == "short payloads"
    assert report.kinds() == {"short_payload"}


def test_a_store_bound_to_an_owner_refuses_to_check(make_store):
    with pytest.raises(ValueError, match="without an owner"):
        make_store(owner="alice").check()


@pytest.mark.parametrize(
    "size", [pytest.param(2_000, id="default"), pytest.param(100_000, marks=pytest.mark.slow)]
)
def test_check_of_many_nodes_takes_seconds(db_url, size):
    """Bulk-built: 100 conversations of ``size / 100`` nodes, in exchanges of 10 steps."""
    with convstore.Store(db_url) as store:
        per = size // 100
        for _ in range(100):
            conv = store.create_conversation()
            for e in range(per // 10):
                conv.append([user(f"{e}-{i}") for i in range(10)])
        started = time.perf_counter()
        report = store.check()
        elapsed = time.perf_counter() - started
        assert report.ok
        assert report.nodes == size
        print(f"check of {size} nodes: {elapsed:.2f} s")
        assert elapsed < 10


def test_db_check_command_exit_status_and_lines(db_url, tmp_path):
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        made = conv.append(three_step("x"))
    command = [sys.executable, "-m", "convstore.cli", "db", "check", db_url]
    clean = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert clean.returncode == 0, clean.stderr
    assert ": ok (1 conversation, 3 nodes, 1 branch, 0 exchanges;" in clean.stdout
    corrupt(
        db_url,
        sa.update(nodes).where(nodes.c.id == made[2].id).values(total_tokens=0),
        sa.update(branches).where(branches.c.name == "main").values(head_id=new_id()),
    )
    broken = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert broken.returncode == 1
    assert "Traceback" not in broken.stderr
    lines = broken.stdout.strip().splitlines()
    assert lines == [
        f"bad_total: conversation {conv.id} node {made[2].id} (total 0, expected {made[2].total_tokens})",
        f"missing_head: conversation {conv.id} branch main",
    ]
    assert "2 problems" in broken.stderr


# -- encrypted conversations: every sealed value decrypts ------------------------------------------------


def _encrypted(make_store):
    pytest.importorskip("cryptography")
    keyring = convstore.Keyring({"k1": bytes(range(32))}, active="k1")
    store = make_store(keyring=keyring)
    conv = store.create_conversation(system_instruction="private")
    conv.append(three_step("a"))
    conv.append([{"type": "user_input", "content": [{"type": "image", "data": "QUJD" * 400}]}])
    return store, conv, keyring


def test_with_a_keyring_every_sealed_value_is_decrypted(make_store, db_url):
    store, conv, _ = _encrypted(make_store)
    report = store.check()
    assert report.ok, report.lines()
    assert (report.encrypted, report.unopened) == (1, 0)
    first, second = conv.nodes()[:2]
    with store.engine.connect() as conn:
        sealed = conn.execute(sa.select(nodes.c.payload).where(nodes.c.id == first.id)).scalar_one()
    corrupt(
        db_url,
        sa.update(nodes).where(nodes.c.id == second.id).values(payload=sealed),  # moved to another node
        sa.text("UPDATE convstore_media SET data = 'enc1:AAAA'"),
        sa.update(conversations).where(conversations.c.id == conv.id).values(tools=sealed),
    )
    found = {
        (p.kind, p.subject, p.detail if p.subject == "conversation" else p.id) for p in store.check().problems
    }
    media_hash = next(p.id for p in store.check().problems if p.subject == "media")
    assert found == {
        ("undecryptable", "node", second.id),
        ("undecryptable", "media", media_hash),
        ("undecryptable", "conversation", "tools"),
    }


def test_a_lost_data_key_or_application_key_is_reported(make_store, db_url):
    store, conv, _ = _encrypted(make_store)
    other = make_store(keyring=convstore.Keyring({"k2": bytes(32)}, active="k2"))
    assert [(p.kind, p.detail) for p in other.check().problems] == [("unknown_key", "key k1")]
    corrupt(db_url, sa.text("DELETE FROM convstore_keys"))
    assert [(p.kind, p.id) for p in store.check().problems] == [("missing_data_key", conv.id)]


def test_without_a_keyring_encrypted_conversations_are_counted_as_unopened(make_store):
    _encrypted(make_store)
    plain = make_store()
    plain.create_conversation().append(three_step("b"))
    report = plain.check()
    assert report.ok
    assert (report.encrypted, report.unopened) == (1, 1)


def test_a_node_without_a_segment_is_reported(store, db_url, built):
    node = built["second"][0]
    corrupt(db_url, sa.update(nodes).where(nodes.c.id == node.id).values(segment_id=NIL_SEGMENT))
    assert ("missing_segment", node.id) in found(store)


def test_a_node_outside_its_parents_segment_is_reported(store, db_url, built):
    """Moved into the segment of the edited root, whose only node is at depth 0: its parent is not there."""
    node = built["second"][-1]
    roots = [n for n in built["conv"].tree().nodes if n.parent_id is None]
    edited = next(n for n in roots if n.id != built["first"][0].id)
    corrupt(db_url, sa.update(nodes).where(nodes.c.id == node.id).values(segment_id=edited.id))
    report = store.check()
    assert {(p.kind, p.id) for p in report.problems} == {("broken_segment", node.id)}
    with pytest.raises(CorruptionError, match="segment"):
        built["conv"].history()


def test_a_root_that_does_not_start_its_segment_is_reported(store, db_url, built):
    root = built["other"].nodes()[0]
    starts = built["first"][0].id  # a segment start of another conversation: not one of this one's nodes
    corrupt(db_url, sa.update(nodes).where(nodes.c.id == root.id).values(segment_id=starts))
    assert ("missing_segment_start", root.id) in found(store)


def test_a_segment_named_by_no_node_is_reported(store, db_url, built):
    node = built["fork"].nodes()[-1]
    corrupt(db_url, sa.update(nodes).where(nodes.c.id == node.id).values(segment_id=new_id()))
    assert found(store) == {("missing_segment_start", node.id)}
