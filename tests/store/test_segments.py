"""Segments (``_reads``): flat reads agree with a parent-pointer walk, windows with their definition and with
the recursive query they replaced, and concurrent appends after one tip keep the segments whole."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import model, user
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.sql import Select
from strategies import examples

import convstore
from convstore._ids import canonical_id
from convstore.errors import ConflictError, ConversationNotFoundError, CorruptionError, StoreBusyError
from convstore.store import _engine, _reads, _statements, _windows, _writes
from convstore.store._engine import Exec, Op, _fastpath, _runner, run
from convstore.store._schema import branches as b
from convstore.store._schema import nodes as n

# An operation on a branch chosen by index: append an exchange of this many steps; fork at a position of
# its path (a fork at its head, the tip, when the position is past the end); edit the first message (an
# empty branch, whose first append is a second root); or append on a fork of the branch's head made now,
# after the branch itself appends (the fork's head is then no longer a tip: another branch continued it).
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 7), st.integers(1, 4)),
        st.tuples(st.just("fork"), st.integers(0, 7), st.integers(0, 60)),
        st.tuples(st.just("edit"), st.integers(0, 7), st.just(1)),
        st.tuples(st.just("behind"), st.integers(0, 7), st.integers(1, 3)),
    ),
    min_size=1,
    max_size=16,
)


def steps(tag: str, count: int) -> list[dict]:
    return [user(tag)] + [model(f"{tag}.{i}" * (i + 1)) for i in range(count - 1)]


def walk(by_id: dict, node_id: str | None) -> list[str]:
    """The root-to-node path by parent pointers, in Python."""
    found = []
    while node_id is not None:
        found.append(node_id)
        node_id = by_id[node_id].parent_id
    return found[::-1]


def _old_window() -> Select:
    """The recursive WINDOW statement the flat window replaced (from the branch head upwards while a step's
    prefix total is at least ``threshold``), kept here as the reference."""
    columns = (n.c.id, n.c.parent_id, n.c.depth, n.c.token_count, n.c.total_tokens)
    anchor = (
        sa.select(*columns)
        .select_from(n.join(b, sa.and_(b.c.conversation_id == n.c.conversation_id, b.c.head_id == n.c.id)))
        .where(b.c.conversation_id == sa.bindparam("conversation_id"), b.c.name == sa.bindparam("branch"))
        .cte("window", recursive=True)
    )
    parent = n.alias("parent")
    window = anchor.union_all(
        sa.select(*(parent.c[col.name] for col in columns)).where(
            parent.c.conversation_id == sa.bindparam("conversation_id"),
            parent.c.id == anchor.c.parent_id,
            anchor.c.total_tokens - anchor.c.token_count >= sa.bindparam("threshold", type_=sa.BigInteger()),
        )
    )
    return sa.select(window).order_by(window.c.depth)


OLD_WINDOW = _old_window()


def _flat_window(conversation_id: str, branch: str, thresholds: list[int]) -> Op[list[list[str]]]:
    """The flat window's rows for each threshold, in turn (lower thresholds read on from the last)."""
    out = []
    rows: list[Any] = []
    for threshold in thresholds:
        if not rows:  # the first walk, from the head: told the tokens available above the threshold
            head = (yield from _reads.segments(conversation_id, branch))[-1]
            rows = yield from _windows.walk(conversation_id, branch, head.total - threshold)
        else:
            rows = yield from _windows.walk_on(conversation_id, rows, threshold)
        # the head, and every row at or above the threshold
        out.append([canonical_id(row.id) for row in rows if row.total_tokens >= threshold or row is rows[-1]])
    return out


def _old(conversation_id: str, branch: str, threshold: int) -> Op[list[str]]:
    params = {"conversation_id": conversation_id, "branch": branch, "threshold": threshold}
    return [str(row.id) for row in (yield Exec(OLD_WINDOW, params))]


def check_everything(store: convstore.Store, conv: convstore.Conversation, data: st.DataObject) -> None:
    report = store.check()
    assert report.ok, report.lines()
    tree = conv.tree()
    by_id = {node.id: node for node in tree.nodes}
    for node in tree.nodes:  # the flat path from any node is the parent-pointer walk
        assert [x.id for x in conv.path(node.id)] == walk(by_id, node.id)
    for branch in tree.branches:
        view = store.conversation(conv.id, branch.name)
        expected = walk(by_id, branch.head_id)
        assert [x.id for x in view.nodes()] == expected
        assert view.history() == [by_id[i].data for i in expected]
        if not expected:
            continue
        totals = [by_id[i].total_tokens for i in expected]
        # Thresholds around the path's totals, lowest last (as a calibrated window reads on).
        chosen = sorted(
            data.draw(st.lists(st.sampled_from([0, *totals, totals[-1] + 1]), min_size=1, max_size=3)),
            reverse=True,
        )
        flat = run(store.engine, _flat_window(conv.id, branch.name, chosen), write=False)
        for threshold, rows in zip(chosen, flat, strict=True):
            defined = [i for i in expected if by_id[i].total_tokens >= threshold]
            if expected[-1] not in defined:
                defined.append(expected[-1])
            assert rows == defined
            assert rows == run(store.engine, _old(conv.id, branch.name, threshold), write=False)


@settings(max_examples=examples(25))
@given(ops=operations, data=st.data())
def test_flat_reads_agree_with_the_tree_whatever_its_shape(db_url, ops, data):
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        names = ["main"]
        for number, (kind, index, size) in enumerate(ops):
            name = names[index % len(names)]
            view = store.conversation(conv.id, name)
            new = f"b{number}"
            if kind == "append":
                view.append(steps(f"{number}", size))
            elif kind == "edit":
                view._fork(None, new).append([user(f"edit {number}")])
                names.append(new)
            elif kind == "fork":
                path = view.nodes()
                view.fork(at=path[size].id if size < len(path) else None, branch=new)
                names.append(new)
            elif view.head_id is not None:  # "behind": a fork of the head, appended after the branch moved on
                fork = view.fork(branch=new)
                view.append(steps(f"{number}", size))
                fork.append(steps(f"{number}f", size))
                names.append(new)
        check_everything(store, conv, data)


def test_a_read_of_a_broken_segment_says_corruption(db_url):
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        first = conv.append([user("one"), model("a")])
        conv.append([user("two"), model("b")])
        other = conv._fork(None, "edit")
        root = other.append([user("edited")])[0]
        engine = sa.create_engine(db_url)
        try:
            with engine.begin() as connection:
                connection.execute(sa.update(n).where(n.c.id == first[1].id).values(segment_id=root.id))
        finally:
            engine.dispose()
        with pytest.raises(CorruptionError, match="segment"):
            store.conversation(conv.id).history()


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_conversation_deleted_between_the_statements_of_a_read_is_not_found(db_url):
    """PostgreSQL (READ COMMITTED): each statement of a read sees what committed before it."""
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        conv.append([user("one"), model("a")])
        conv.fork(at=conv.nodes()[0].id, branch="side").append([user("two"), model("b")])
        op = _reads.history(conv.id, "side")

        def run(step: Any) -> object:
            if step.rows:  # a scan, read as the driver's rows
                return _fastpath._driver_rows(connection, step)
            return connection.execute(step.statement, step.params)

        def finish(result: object) -> None:
            while True:
                result = run(op.send(result))

        with store.engine.connect() as connection, connection.begin():
            result = run(next(op))  # the head's segment (it starts below the fork)
            store.delete_conversation(conv.id)
            with pytest.raises(ConversationNotFoundError):
                finish(result)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_appends_after_one_tip_on_two_branches_keep_the_segments_whole(db_url):
    """Released together by a barrier, a few dozen times: at most one continues the tip's segment, both
    are written (two branches: no compare-and-swap between them), and every invariant holds."""
    with convstore.Store(db_url) as store:
        errors: list[BaseException] = []

        def write(barrier: threading.Barrier, view: convstore.Conversation, tag: str) -> None:
            barrier.wait()
            try:
                view.append([user(tag), model(tag)])
            except ConflictError:
                pass  # the documented outcome of losing a race (its history then tells); nothing else
            except BaseException as error:
                errors.append(error)

        for round_ in range(30):
            conv = store.create_conversation()
            conv.append([user("base"), model("base")])
            views = [conv, conv.fork(branch="other")]
            barrier = threading.Barrier(2)
            threads = [
                threading.Thread(target=write, args=(barrier, view, f"{round_}.{i}"))
                for i, view in enumerate(views)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            with store.engine.connect() as connection:
                continued = connection.execute(
                    sa.select(sa.func.count())
                    .select_from(n)
                    .where(n.c.conversation_id == conv.id, n.c.depth == 2, n.c.segment_id != n.c.id)
                ).scalar_one()
            assert continued == 1  # one of the two continued the tip's segment, the other started one
            for i, name in enumerate(["main", "other"]):
                history = store.conversation(conv.id, name).history()
                assert history == [user("base"), model("base"), user(f"{round_}.{i}"), model(f"{round_}.{i}")]
        report = store.check()
        assert report.ok, report.lines()


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_the_append_that_loses_a_tip_to_another_branch_is_written_in_a_segment_of_its_own(
    db_url, monkeypatch
):
    """The race forced every round: both appends have seen the tip free (their first statement ran) before
    either inserts, so both try to continue its segment; the unique index stops the second, which is then
    written again at once in a new segment. Both turns are kept, nothing raises, the invariants hold."""
    lost: list[int] = []

    class Counted(_writes.SegmentTaken):
        def __init__(self) -> None:
            super().__init__()
            lost.append(1)

    monkeypatch.setattr(_writes, "SegmentTaken", Counted)
    with convstore.Store(db_url) as store:
        gate = threading.Barrier(2, timeout=30)
        racing = threading.Event()

        first = threading.local()  # the first node insert of each racing append waits; its retry does not

        def hold_inserts(conn, cursor, statement, parameters, context, executemany):
            if racing.is_set() and statement.startswith("INSERT INTO convstore_nodes") and not first.done:
                first.done = True
                gate.wait()  # until the other append has seen the tip free too

        sa.event.listen(store.engine, "before_cursor_execute", hold_inserts)
        run_batch = _runner.run_batch

        def hold_batches(conn, batch):  # on PostgreSQL a batch goes to psycopg, past the engine's events
            if any(step.statement is _statements.INSERT_NODES for step in batch.statements):
                hold_inserts(conn, None, "INSERT INTO convstore_nodes", None, None, True)
            return run_batch(conn, batch)

        monkeypatch.setattr(_runner, "run_batch", hold_batches)
        errors: list[BaseException] = []

        def write(view: convstore.Conversation, tag: str) -> None:
            first.done = False
            try:
                view.append([user(tag), model(tag)])
            except BaseException as error:
                errors.append(error)
                gate.abort()

        for round_ in range(5):
            conv = store.create_conversation()
            conv.append([user("base"), model("base")])
            views = [conv, conv.fork(branch="other")]
            gate.reset()
            racing.set()
            threads = [
                threading.Thread(target=write, args=(view, f"{round_}.{i}")) for i, view in enumerate(views)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            racing.clear()
            assert errors == []
            for i, name in enumerate(["main", "other"]):
                history = store.conversation(conv.id, name).history()
                assert history == [user("base"), model("base"), user(f"{round_}.{i}"), model(f"{round_}.{i}")]
            with store.engine.connect() as connection:
                starts = connection.execute(
                    sa.select(sa.func.count())
                    .select_from(n)
                    .where(n.c.conversation_id == conv.id, n.c.depth == 2, n.c.segment_id == n.c.id)
                ).scalar_one()
            assert starts == 1  # the loser started a segment; the winner continued the tip's
            assert len(lost) == round_ + 1  # the loser's first try was refused by the index, once
        report = store.check()
        assert report.ok, report.lines()


@given(st.uuids())
def test_raw_ids_from_either_driver_become_the_canonical_form(value):
    assert canonical_id(value.hex) == str(value)  # SQLite: 32 hex digits
    assert canonical_id(value) == str(value)  # psycopg: a uuid.UUID
    assert canonical_id(str(value)) == str(value)
    assert canonical_id(value.hex.upper()) == str(value)  # not the fast path, still right


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_lock_timeout_in_the_drivers_scan_is_a_store_busy_error(db_url):
    """The branch scan goes to psycopg directly (binary results): its errors still come out as SQLAlchemy's,
    so the store's translation names a lock timeout ``StoreBusyError``."""
    with convstore.Store(db_url) as store:
        conv = store.create_conversation()
        conv.append([user("one"), model("a")])
        step = next(_reads.history(conv.id, "main"))  # the head's segment, the whole path here
        assert step.rows
        with store.engine.connect() as locker, locker.begin():
            locker.exec_driver_sql("LOCK TABLE convstore_nodes IN ACCESS EXCLUSIVE MODE")
            with store.engine.connect() as connection, connection.begin():
                connection.exec_driver_sql("SET LOCAL lock_timeout = '100ms'")
                with pytest.raises(sa.exc.DBAPIError) as raised:
                    _fastpath._driver_rows(connection, step)
                assert isinstance(_engine.translate(raised.value), StoreBusyError)
        assert store.conversation(conv.id).history() == [user("one"), model("a")]  # nothing left behind
