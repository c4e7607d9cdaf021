"""convstore on a real Citus cluster while its shards move and a worker dies: nothing acknowledged is lost.

Writer threads append, fork and delete through the public API while the test moves shards between the
workers (``citus_move_shard_placement``, logical and ``block_writes``), rebalances them
(``rebalance_table_shards``), or stops a worker (``pg_ctl -m immediate stop``) and starts it again. Each
writer records what the store acknowledged; afterwards every conversation's history is exactly its writer's
acknowledged exchanges, in order, every acknowledged fork is there and nothing refused is, and ``check()`` is
clean. Every failure met on the way must be a ``ConvstoreError``: after ``OutcomeUnknownError`` the writer
sends the same exchange again with the same id (and the store keeps it once); after any other failure the
write counts as not made, so a failure that had in fact committed shows up as an extra exchange.

A fork waits for nothing but its own conversation: a ``block_writes`` move of another shard, held open,
stops that shard's writes (the control) and not the fork.

Each test's tables form a colocation group of their own (``colocate_with => 'none'``), so moving their shards
never touches the tables of tests running beside them in other schemas (which share Citus's ``default``
group). Stopping a worker does reach every test on the cluster: those tests are ``slow`` and CI runs the
slow Citus suites one at a time (``-n 0``, see ``.ci/run``). Sizes: ``CONVSTORE_CITUS_WRITERS`` (writer
threads), ``CONVSTORE_CITUS_MOVES`` (shard moves before the rebalance), ``CONVSTORE_CITUS_DOWN_SECONDS``
(how long the worker stays down).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import citus_schema_url, model, user

import convstore
from convstore.errors import (
    BranchExistsError,
    ConflictError,
    ConversationNotFoundError,
    ConvstoreError,
    OutcomeUnknownError,
    StoreBusyError,
)
from convstore.store._citus import CONVERSATIONS, _column_of, _convstore_tables, _in_dependency_order

pytestmark = pytest.mark.citus

WRITERS = int(os.environ.get("CONVSTORE_CITUS_WRITERS", "4"))
MOVES = int(os.environ.get("CONVSTORE_CITUS_MOVES", "8"))
DOWN_SECONDS = float(os.environ.get("CONVSTORE_CITUS_DOWN_SECONDS", "3"))
# How long a writer keeps sending an exchange whose outcome is unknown, and how long the test waits for the
# writers to make progress again: generous bounds for a loaded machine, never a measure of speed.
PATIENCE = 180.0


@pytest.fixture
def own_group(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh schema whose convstore tables are distributed by conversation in a colocation group of their
    own: its conversations table with ``colocate_with => 'none'``, the other tables colocated with it."""
    admin = request.getfixturevalue("_citus_admin")
    for url in citus_schema_url(admin):
        with convstore.Store(url, check_schema=False) as store:
            store.upgrade(distribute=False)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                for name in _in_dependency_order(conn, _convstore_tables(conn)):
                    conn.execute(
                        sa.text(
                            "SELECT create_distributed_table(CAST(:table AS regclass), :column, "
                            "colocate_with => :with)"
                        ),
                        {
                            "table": name,
                            "column": _column_of(conn, name),
                            "with": "none" if name == CONVERSATIONS else CONVERSATIONS,
                        },
                    )
        finally:
            engine.dispose()
        yield url


class Cluster:
    """The test's window on the cluster: where each shard of its colocation group is, and moving them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

    def close(self) -> None:
        self.engine.dispose()

    def workers(self) -> list[tuple[str, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT nodename, nodeport FROM pg_dist_node WHERE shouldhaveshards AND isactive "
                    "AND noderole = 'primary' AND groupid <> 0 ORDER BY nodeid"
                )
            ).all()
        return [(row.nodename, row.nodeport) for row in rows]

    def placements(self) -> dict[int, tuple[str, int]]:
        """Each shard of the conversations table (its group's shards move with it): where it is."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT s.shardid, p.nodename, p.nodeport FROM pg_dist_shard s "
                    "JOIN pg_dist_shard_placement p USING (shardid) "
                    "WHERE s.logicalrelid = CAST(:table AS regclass) ORDER BY s.shardid"
                ),
                {"table": CONVERSATIONS},
            ).all()
        return {row.shardid: (row.nodename, row.nodeport) for row in rows}

    def shard_of(self, conversation_id: str) -> int:
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT get_shard_id_for_distribution_column(CAST(:table AS regclass), CAST(:id AS uuid))"
                ),
                {"table": CONVERSATIONS, "id": conversation_id},
            ).scalar_one()
        return int(found)

    def move_statement(self, shard: int, mode: str) -> tuple[sa.TextClause, dict[str, Any]]:
        """The statement moving ``shard`` (and its group) to the other worker, in ``mode``."""
        source = self.placements()[shard]
        (target,) = [worker for worker in self.workers() if worker != source]
        statement = sa.text(
            "SELECT citus_move_shard_placement(:shard, :source_host, :source_port, :target_host, "
            ":target_port, shard_transfer_mode => CAST(:mode AS citus.shard_transfer_mode))"
        )
        params = {
            "shard": shard,
            "source_host": source[0],
            "source_port": source[1],
            "target_host": target[0],
            "target_port": target[1],
            "mode": mode,
        }
        return statement, params

    def move(self, shard: int, mode: str) -> None:
        statement, params = self.move_statement(shard, mode)
        with self.engine.connect() as conn:
            conn.execute(statement, params)
            conn.commit()

    def rebalance(self) -> None:
        """Rebalance this group only (``citus_rebalance_start()`` would move every test's shards)."""
        with self.engine.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT rebalance_table_shards(CAST(:table AS regclass), shard_transfer_mode => 'auto')"
                ),
                {"table": CONVERSATIONS},
            )
            conn.commit()


@pytest.fixture
def cluster(own_group: str) -> Iterator[Cluster]:
    opened = Cluster(own_group)
    yield opened
    opened.close()


# --- a fork waits for nothing but its own conversation ---------------------------------------------------


# Slow, so it runs alone (CI's Citus run, -n 0): the move it holds open keeps other tests' schemas from
# being colocated meanwhile ("could not acquire the lock required to colocate distributed table").
@pytest.mark.slow
def test_a_fork_does_not_wait_for_a_block_writes_move_of_another_shard(own_group, cluster):
    """Before the fork was a plain INSERT of the values read under the lock, its INSERT ... SELECT took the
    metadata lock of every shard of the branches table: it waited here, and failed with StoreBusyError."""
    with convstore.Store(own_group, busy_timeout=2) as store:
        conversations = [store.create_conversation(model="m") for _ in range(16)]
        for conv in conversations:
            conv.append([user("hi"), model("hello")])
        by_shard: dict[int, Any] = {}
        for conv in conversations:
            by_shard.setdefault(cluster.shard_of(conv.id), conv)
        assert len(by_shard) >= 2
        (moving_shard, moved), (_, other) = list(by_shard.items())[:2]
        before = cluster.placements()[moving_shard]
        statement, params = cluster.move_statement(moving_shard, "block_writes")
        with cluster.engine.connect() as mover:
            # The move, in a transaction left open: Citus holds its write block on the moved shards (and
            # only those) until the transaction ends.
            mover.execute(statement, params)
            # The control: the moving shard's writes wait for the move (and give up at the busy timeout).
            with pytest.raises(StoreBusyError):
                moved.append([user("waits")])
            with pytest.raises(StoreBusyError):
                moved.fork(at=moved.head_id, branch="waits")
            # Another shard's conversation: neither its fork nor its append waits.
            side = other.fork(at=other.head_id, branch="side")
            other.append([user("more"), model("yes")])
            mover.commit()
        assert cluster.placements()[moving_shard] != before
        assert side.history() == [user("hi"), model("hello")]
        assert sorted(branch.name for branch in store.conversation(other.id).branches()) == ["main", "side"]
        assert [branch.name for branch in store.conversation(moved.id).branches()] == ["main"]
        moved.fork(at=moved.head_id, branch="after")  # the move done, the moved shard takes writes again
        assert store.check().ok


# --- writers under movement --------------------------------------------------------------------------------


class Writer:
    """One writer thread: its own conversation, appended to, forked, and conversations made and deleted
    beside it; what the store acknowledged, what it refused (and how), and anything untyped."""

    def __init__(self, store: convstore.Store, number: int, stop: threading.Event) -> None:
        self.store = store
        self.number = number
        self.stop = stop
        self.random = random.Random(number)
        self.conv = store.create_conversation(model="m")
        self.acked: list[str] = []  # the user text of each acknowledged exchange, in order
        self.heads: list[str] = []  # the last node of each acknowledged exchange
        self.forks: dict[str, str] = {}  # acknowledged fork: branch name -> node it starts at
        self.refused_forks: list[str] = []
        self.deleted: list[str] = []
        self.kept: list[str] = []  # conversations whose delete was refused (so not deleted)
        self.failures: Counter[str] = Counter()  # typed failures met, by class name
        self.examples: dict[str, str] = {}  # a message of each class met, printed
        self.untyped: list[str] = []
        self.violations: list[str] = []
        self.thread = threading.Thread(target=self.run, name=f"writer-{number}", daemon=True)

    def run(self) -> None:
        step = 0
        while not self.stop.is_set():
            step += 1
            try:
                if step % 10 in {3, 7} and self.heads:
                    self.fork(f"f{step}")
                elif step % 10 == 9:
                    self.delete_one()
                else:
                    self.append(f"w{self.number}-{step}")
            except Exception as error:  # recorded: the test fails on it
                self.untyped.append(f"{type(error).__module__}.{type(error).__name__}")
                time.sleep(0.05)

    def failed(self, error: ConvstoreError) -> None:
        self.failures[type(error).__name__] += 1
        self.examples.setdefault(type(error).__name__, str(error))
        if not str(error) or re.search(r"w\d+-\d+|to be deleted", str(error)):
            self.violations.append(f"{type(error).__name__} message names step content or nothing")
        time.sleep(0.02 + self.random.random() * 0.05)

    def until_known(self, write: Callable[[], None], gone: type[ConvstoreError] | None) -> bool | None:
        """``write()`` until its outcome is known: True when made; False when refused with a known outcome
        (not made); after an ``OutcomeUnknownError`` the same write is sent again, any failure is retried,
        and ``gone`` (the error the write meets when it had been made: BranchExistsError for a fork,
        ConversationNotFoundError for a delete) counts as made."""
        unknown = False
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            try:
                write()
            except OutcomeUnknownError as error:
                unknown = True
                self.failed(error)
                continue
            except ConflictError:
                raise  # the caller's to judge
            except ConvstoreError as error:
                if unknown and gone is not None and isinstance(error, gone):
                    return True
                self.failed(error)
                if unknown:
                    continue
                return False
            return True
        self.violations.append("an unknown outcome never became known")
        return None

    def append(self, text: str) -> None:
        exchange_id = str(uuid.uuid4())  # chosen before the write: sending it again is safe
        stored: list[Any] = []

        def write() -> None:
            stored[:] = self.conv.append([user(text), model(f"re {text}")], exchange_id=exchange_id)

        try:
            made = self.until_known(write, None)
        except ConflictError:
            # Only this writer writes to its main branch: a write it was told had failed was made.
            self.violations.append(f"ConflictError before {text}: a refused write had been made")
            self.conv.refresh()
            return
        if made:
            assert [node.exchange_id for node in stored] == [exchange_id, exchange_id]
            self.acked.append(text)
            self.heads.append(stored[-1].id)

    def fork(self, name: str) -> None:
        at = self.random.choice(self.heads)
        made = self.until_known(lambda: self.conv.fork(at=at, branch=name), BranchExistsError)
        if made:
            self.forks[name] = at
        elif made is False:
            self.refused_forks.append(name)

    def delete_one(self) -> None:
        try:
            temporary = self.store.create_conversation(model="m")
            temporary.append([user("to be deleted"), model("ok")])
        except ConvstoreError as error:
            self.failed(error)  # nothing to delete (an unknown create may leave an empty conversation)
            return
        made = self.until_known(
            lambda: self.store.delete_conversation(temporary.id), ConversationNotFoundError
        )
        if made:
            self.deleted.append(temporary.id)
        elif made is False:
            self.kept.append(temporary.id)

    def check(self, store: convstore.Store) -> None:
        """What the store holds is what this writer was told it holds."""
        conv = store.conversation(self.conv.id)
        history = conv.history()
        texts = [step["content"][0]["text"] for step in history if step["type"] == "user_input"]
        assert texts == self.acked, f"writer {self.number}"
        assert len(conv.tree().nodes) == 2 * len(self.acked), f"writer {self.number}: unacknowledged nodes"
        branches = {branch.name: branch.head_id for branch in conv.branches()}
        assert branches == {"main": conv.head_id, **self.forks}, f"writer {self.number}"
        assert not set(self.refused_forks) & set(branches)
        for conversation_id in self.deleted:
            with pytest.raises(ConversationNotFoundError):
                store.conversation(conversation_id)
        for conversation_id in self.kept:
            store.conversation(conversation_id)


class Traffic:
    """``count`` writer threads on one store, started on entering and stopped (and joined) on leaving."""

    def __init__(self, store: convstore.Store, count: int) -> None:
        self.stop = threading.Event()
        self.writers = [Writer(store, number, self.stop) for number in range(count)]

    def __enter__(self) -> Traffic:
        for writer in self.writers:
            writer.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for writer in self.writers:
            writer.thread.join(timeout=PATIENCE + 30)
        assert not [writer.number for writer in self.writers if writer.thread.is_alive()]

    def progress(self, more: int) -> None:
        """Wait until every writer has had ``more`` exchanges acknowledged from now on."""
        marks = [len(writer.acked) for writer in self.writers]
        deadline = time.monotonic() + PATIENCE
        while any(len(w.acked) < mark + more for w, mark in zip(self.writers, marks, strict=True)):
            assert time.monotonic() < deadline, "writers made no progress"
            assert not [w.untyped for w in self.writers if w.untyped], "untyped failures"
            time.sleep(0.1)

    def check(self, store: convstore.Store) -> Counter[str]:
        """Every writer's record against the store; the typed failures met, by class, to print."""
        untyped = [name for writer in self.writers for name in writer.untyped]
        violations = [text for writer in self.writers for text in writer.violations]
        assert untyped == []
        assert violations == []
        for writer in self.writers:
            writer.check(store)
        assert store.check().ok
        failures: Counter[str] = Counter()
        for writer in self.writers:
            failures.update(writer.failures)
            for name, message in writer.examples.items():
                print(f"{name}: {message}")
        return failures

    def summary(self) -> str:
        acked = sum(len(writer.acked) for writer in self.writers)
        forks = sum(len(writer.forks) for writer in self.writers)
        deleted = sum(len(writer.deleted) for writer in self.writers)
        return f"{acked} exchanges, {forks} forks, {deleted} deletes acknowledged"


@pytest.mark.slow
def test_shards_move_and_rebalance_while_writers_append_fork_and_delete(own_group, cluster):
    with convstore.Store(own_group) as store:
        with Traffic(store, WRITERS) as traffic:
            traffic.progress(3)
            shards = sorted(cluster.placements())
            for move in range(MOVES):
                # Logical moves (writes go on while the data copies), every third one block_writes.
                cluster.move(shards[move % len(shards)], "block_writes" if move % 3 == 2 else "auto")
                traffic.progress(1)
            # Everything onto one worker, then the rebalancer spreads it again.
            first = cluster.workers()[0]
            for shard, where in cluster.placements().items():
                if where != first:
                    cluster.move(shard, "auto")
            assert set(cluster.placements().values()) == {first}
            cluster.rebalance()
            assert set(cluster.placements().values()) == set(cluster.workers())
            traffic.progress(3)
        failures = traffic.check(store)
    print(f"{MOVES} moves and a rebalance, {WRITERS} writers: {traffic.summary()}; failures {dict(failures)}")


class Worker:
    """A worker of the cluster this machine runs: stopped as a crash would stop it, and started again."""

    def __init__(self, cluster: Cluster, host: str, port: int) -> None:
        self.port = port
        url = sa.make_url(cluster.url).set(host=host, port=port)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                self.data = Path(conn.exec_driver_sql("SHOW data_directory").scalar_one())
                bindir = conn.exec_driver_sql(
                    "SELECT setting FROM pg_config WHERE name = 'BINDIR'"
                ).scalar_one()
        finally:
            engine.dispose()
        self.pg_ctl = str(Path(bindir) / "pg_ctl")
        # initdb and pg_ctl refuse root: run as the data directory's owner then.
        self.prefix = ["runuser", "-u", self.data.owner(), "--"] if os.geteuid() == 0 else []
        log = self.data.parent / f"node{port}.log"
        self.log = log if log.exists() else self.data / "convstore-test-restart.log"
        if host not in {"127.0.0.1", "localhost", "::1"} or self.ctl("status").returncode != 0:
            pytest.skip(f"the worker on {host}:{port} is not a server this test can stop and start")

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [*self.prefix, self.pg_ctl, "-D", str(self.data), *args]
        return subprocess.run(command, capture_output=True, text=True, check=False, cwd="/")

    def stop(self) -> None:
        stopped = self.ctl("-m", "immediate", "-w", "-t", "60", "stop")
        assert stopped.returncode == 0, stopped.stderr

    def start(self) -> None:
        if self.ctl("status").returncode == 0:
            return
        started = self.ctl("-l", str(self.log), "-w", "-t", "120", "start")
        assert started.returncode == 0, started.stderr


@pytest.mark.slow
def test_a_worker_stopped_and_started_again_mid_traffic(own_group, cluster):
    if shutil.which("runuser") is None and os.geteuid() == 0:
        pytest.skip("root without runuser cannot run pg_ctl as the server's owner")
    host, port = cluster.workers()[-1]
    worker = Worker(cluster, host, port)
    with convstore.Store(own_group) as store:
        with Traffic(store, WRITERS) as traffic:
            traffic.progress(3)
            try:
                worker.stop()
                time.sleep(DOWN_SECONDS)  # the writers meet a worker that is gone
            finally:
                worker.start()
            traffic.progress(5)  # the same Store recovers: every writer is acknowledged again
        failures = traffic.check(store)
    assert sum(failures.values()) > 0  # the stop did reach the traffic
    print(
        f"worker down {DOWN_SECONDS:g} s, {WRITERS} writers: {traffic.summary()}; failures {dict(failures)}"
    )
