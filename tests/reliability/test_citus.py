"""convstore on a real Citus cluster: the tables distributed on upgrade, and one conversation on one worker.

The contract suite runs on Citus through the ``db_url`` fixture (its ``citus`` backend); these tests check
what is Citus's own: which tables ``upgrade`` distributes and how, that a table a later migration creates is
distributed too, that the opt-out sticks, that a local schema can be moved onto the cluster with its data,
and that every statement of a single-conversation operation is routed to one worker, in one-phase commits
(``citus.log_remote_commands`` shows each command the coordinator sends, and the server it goes to).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import citus_schema_url, model, user

import convstore
from convstore.store._schema import PREFIX

pytestmark = pytest.mark.citus

TABLES = {
    f"{PREFIX}conversations": "id",
    f"{PREFIX}nodes": "conversation_id",
    f"{PREFIX}branches": "conversation_id",
    f"{PREFIX}exchanges": "conversation_id",
    f"{PREFIX}summaries": "conversation_id",
    f"{PREFIX}media": "conversation_id",
    f"{PREFIX}files": "conversation_id",
    f"{PREFIX}keys": "conversation_id",
    f"{PREFIX}search": "conversation_id",
    f"{PREFIX}erased": "conversation_id",
}
# The tables migrations after 0006 create (media 0007, files 0009, search 0010, erased 0011).
LATER = {f"{PREFIX}{name}" for name in ("media", "files", "search", "erased")}


@pytest.fixture
def citus_url(request: pytest.FixtureRequest) -> Iterator[str]:
    admin = request.getfixturevalue("_citus_admin")
    yield from citus_schema_url(admin)


def placement(url: str) -> dict[str, tuple[str, str, int]]:
    """Each convstore table Citus knows in the URL's schema: (method, distribution column, colocation)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT c.relname AS name, p.partmethod AS method, "
                    "COALESCE(column_to_column_name(p.logicalrelid, p.partkey), '') AS column, "
                    "p.colocationid AS colocation "
                    "FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid "
                    "WHERE c.relnamespace = current_schema()::regnamespace"
                )
            ).all()
    finally:
        engine.dispose()
    return {row.name: (row.method, row.column, row.colocation) for row in rows}


def test_a_new_database_is_distributed_by_conversation_and_colocated(citus_url):
    with convstore.Store(citus_url) as store:
        store.create_conversation(model="m").append([user("hi")])
    placed = placement(citus_url)
    assert set(placed) == set(TABLES)  # the version table stays a local table on the coordinator
    assert {name: column for name, (_, column, _) in placed.items()} == TABLES
    assert {method for method, _, _ in placed.values()} == {"h"}
    assert len({colocation for _, _, colocation in placed.values()}) == 1


def test_a_table_a_later_migration_creates_is_distributed_beside_the_others(citus_url):
    with convstore.Store(citus_url, check_schema=False) as store:
        store.upgrade("0006")  # before convstore_media existed
        assert set(placement(citus_url)) == set(TABLES) - LATER
        store.upgrade()
    placed = placement(citus_url)
    assert set(placed) == set(TABLES)
    assert len({colocation for _, _, colocation in placed.values()}) == 1
    with convstore.Store(citus_url) as store:
        conv = store.create_conversation(model="m")
        conv.append([user("after 0007")])
        assert store.conversation(conv.id).history() == [user("after 0007")]
        assert store.check().ok


def test_the_opt_out_sticks_and_a_local_schema_moves_onto_the_cluster_with_its_data(citus_url):
    with convstore.Store(citus_url, check_schema=False) as store:
        store.upgrade(distribute=False)
        conv = store.create_conversation(model="m")
        conv.append([user("kept local"), model("still")])
        conv.fork(at=None, branch="empty")
        store.upgrade()  # the default follows the database: local it was chosen, local it stays
        assert placement(citus_url) == {}
        store.upgrade(distribute=True)
        placed = placement(citus_url)
        assert set(placed) == set(TABLES)
        assert store.conversation(conv.id).history() == [user("kept local"), model("still")]
        assert sorted(b.name for b in store.conversation(conv.id).branches()) == ["empty", "main"]
        report = store.check()
        assert report.ok
        assert report.nodes == 2
    engine = sa.create_engine(citus_url)
    try:
        with engine.connect() as conn:
            # The coordinator kept no copy of the rows it moved into the shards.
            # The coordinator's own (shell) table, not the shards: Citus's size functions sum the shards.
            local = conn.execute(sa.text(f"SELECT pg_relation_size('{PREFIX}nodes')")).scalar_one()
    finally:
        engine.dispose()
    assert local == 0


class RemoteCommands:
    """The commands the coordinator sends to workers, and the servers they go to, from its notices."""

    def __init__(self) -> None:
        self.recording = False
        self.commands: list[tuple[str, str]] = []

    def handle(self, diagnostic: Any) -> None:
        if not self.recording:
            return
        primary = diagnostic.message_primary or ""
        detail = diagnostic.message_detail or ""
        server = re.search(r"on server (\S+)", detail)
        if primary.startswith("issuing "):
            self.commands.append((primary[len("issuing ") :], server.group(1) if server else ""))

    def capture(self, action: Callable[[], Any]) -> list[tuple[str, str]]:
        self.commands = []
        self.recording = True
        try:
            action()
        finally:
            self.recording = False
        return list(self.commands)


@pytest.fixture
def logged(citus_url) -> Iterator[tuple[convstore.Store, RemoteCommands]]:
    url = sa.make_url(citus_url)
    options = url.query["options"]
    assert isinstance(options, str)
    engine = sa.create_engine(
        url.update_query_dict({"options": f"{options} -ccitus.log_remote_commands=on"}),
        pool_size=1,
        max_overflow=0,
    )
    remote = RemoteCommands()

    @sa.event.listens_for(engine, "connect")
    def listen(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.add_notice_handler(remote.handle)

    with convstore.Store(engine) as store:
        yield store, remote
    engine.dispose()


def test_each_single_conversation_operation_goes_to_one_worker_in_one_phase(logged, client):
    store, remote = logged
    conv = store.create_conversation(model="gemini-3-flash-preview")
    conv.append([user("warm up"), model("ok")])
    turn = conv.append([user("two"), model("three")])
    budget = convstore.TokenBudget(max_input_tokens=40)
    operations: dict[str, Callable[[], Any]] = {
        "create": lambda: store.create_conversation(model="m"),
        "append": lambda: conv.append([user("four"), model("five")]),
        "history": lambda: store.conversation(conv.id).history(),
        "window": lambda: store.conversation(conv.id).history(budget=budget),
        "fork": lambda: conv.fork(at=turn[-1].id, branch="side"),
        "edit": lambda: conv.edit(turn[0].id, branch="edited").append([user("two, edited")]),
        "send": lambda: conv.send("six", client=client),
        "tree": lambda: store.conversation(conv.id).tree(),
        "delete": lambda: store.delete_conversation(conv.id),
    }
    for name, operation in operations.items():
        commands = remote.capture(operation)
        assert commands, name  # the operation did reach the cluster
        servers = {server for _, server in commands}
        assert len(servers) == 1, (name, commands)
        assert not [text for text, _ in commands if "PREPARE TRANSACTION" in text], (name, commands)


def test_conversations_on_different_workers_list_in_order_across_shards(citus_url):
    with convstore.Store(citus_url) as store:
        made = [store.create_conversation(model=f"m{i}").id for i in range(40)]
        for conversation_id in made:
            store.conversation(conversation_id).append([user(conversation_id)])
        listed = [info.id for info in store.iter_conversations(page_size=7)]
        assert listed == list(reversed(made))
        workers = _workers_holding(citus_url, made)
        assert len(workers) == 2  # the rows are spread: the order is the coordinator's merge, not one shard's


def _workers_holding(url: str, conversation_ids: list[str]) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT DISTINCT s.nodename || ':' || s.nodeport AS node "
                    "FROM unnest(CAST(:ids AS uuid[])) AS t(id), "
                    "LATERAL (SELECT get_shard_id_for_distribution_column("
                    f"'{PREFIX}conversations', t.id) AS shard) AS sh "
                    "JOIN pg_dist_shard_placement s ON s.shardid = sh.shard"
                ),
                {"ids": conversation_ids},
            ).all()
    finally:
        engine.dispose()
    return {row.node for row in rows}


def test_the_command_line_upgrade_takes_the_same_choice(citus_url, capsys):
    from convstore.cli import main  # noqa: PLC0415

    assert main(["db", "upgrade", "--no-distribute", citus_url]) == 0
    assert placement(citus_url) == {}
    assert main(["db", "upgrade", citus_url]) == 0
    assert placement(citus_url) == {}
    assert main(["db", "upgrade", "--distribute", citus_url]) == 0
    assert set(placement(citus_url)) == set(TABLES)
    assert main(["db", "check", citus_url]) == 0
    assert "nothing to do" in capsys.readouterr().out
