"""A command line that never harms a database, with ids a person can use and errors that are sentences.

Issue 28's defects, each driven through the real command in a subprocess: read and maintenance commands
pointed at another application's database (SQLite and PostgreSQL) refuse it and leave it exactly as it was;
``purge`` says how many it would delete and asks; ``ls`` prints ids that ``show`` takes and pages through any
number of conversations; ``--keyring`` and ``$CONVSTORE_KEYRING`` work on every command that reads content;
Ctrl-C in ``replay``, ``import`` and ``purge`` says what was done and can be run again.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import model as answer
from conftest import user
from helpers import K1 as KEY
from helpers import run_cli
from hypothesis import given
from hypothesis import strategies as st
from test_cli import assert_one_line_error

import convstore
from convstore._ids import shortest_endings

HERE = Path(__file__).resolve().parents[1]
INTERRUPTER = HERE / "fixtures" / "interrupted_cli.py"

# Every command that only reads or maintains a store, as a user would type it on a foreign database.
READERS = [
    ["ls"],
    ["ls", "--json"],
    ["show", "01a21405-8db3-7b7a-af47-2eb734a127bd"],
    ["export"],
    ["purge", "--older-than", "1s", "--yes"],
    ["purge", "--older-than", "1s", "--dry-run"],
    ["delete", "01a21405-8db3-7b7a-af47-2eb734a127bd", "--yes"],
    ["fork", "01a21405-8db3-7b7a-af47-2eb734a127bd", "--at", "12345678"],
    ["replay", "01a21405-8db3-7b7a-af47-2eb734a127bd", "--offline"],
    ["db", "check"],
    ["db", "current"],
    ["serve", "--port", "0"],
]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CONVSTORE_DB", raising=False)
    monkeypatch.delenv("CONVSTORE_KEYRING", raising=False)
    return tmp_path


@pytest.fixture
def db(home) -> str:
    url = f"sqlite:///{home / 'cli.db'}"
    convstore.Store(url).close()
    return url


def _tables(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return sorted(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _other_app(url: str) -> None:
    """Another application's database: one table of its own, with a row."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE app_users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.exec_driver_sql("INSERT INTO app_users (id, name) VALUES (1, 'ada')")
    engine.dispose()


def test_read_commands_refuse_another_apps_database_and_create_nothing(db_url, home):
    _other_app(db_url)
    mode_before = _journal_mode(db_url)
    for args in READERS:
        result = run_cli(*args, db=db_url)
        line = assert_one_line_error(result, 1)
        assert "is not a convstore database; `convstore db upgrade" in line, (args, line)
    assert _tables(db_url) == ["app_users"]  # before: 8 convstore tables were made by `ls`
    assert _journal_mode(db_url) == mode_before  # and SQLite's file was not switched to WAL


def _journal_mode(url: str) -> str | None:
    if not url.startswith("sqlite"):
        return None
    with sqlite3.connect(sa.make_url(url).database) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def test_an_empty_database_is_refused_by_readers_and_built_by_db_upgrade(home):
    path = home / "empty.db"
    sqlite3.connect(path).close()  # an empty file: a database without a table
    url = f"sqlite:///{path}"
    assert "is not a convstore database" in assert_one_line_error(run_cli("ls", db=url), 1)
    assert _tables(url) == []
    upgraded = run_cli("db", "upgrade", db=url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert run_cli("ls", db=url).returncode == 0


def test_a_schema_written_by_a_newer_convstore_is_a_sentence(db):
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE convstore_alembic_version SET version_num = '9999'")
    engine.dispose()
    for args in (["ls"], ["db", "upgrade"], ["db", "current"], ["chat", "--offline"]):
        line = assert_one_line_error(run_cli(*args, db=db, stdin=""), 1)
        assert "was written by a newer convstore (schema revision 9999" in line, line
        assert "unexpected" not in line


def test_a_folder_given_as_a_file_says_so(home, db):
    line = assert_one_line_error(run_cli("import", ".", db=db), 1)
    assert line == "convstore: error: . is a folder: give the export file (or - for stdin)"
    line = assert_one_line_error(run_cli("ls", db=str(home)), 1)
    assert "names a folder" in line
    line = assert_one_line_error(run_cli("ls", "--keyring", str(home), db=db), 1)
    assert "--keyring" in line
    assert "is a folder" in line


# -- purge ------------------------------------------------------------------------------------------------


def _aged(db: str, count: int, days: int = 40) -> list[str]:
    """``count`` conversations, untouched for ``days``."""
    ids = []
    with convstore.Store(db) as store:
        for n in range(count):
            conv = store.create_conversation(model="m")
            conv.append([user(f"old {n}"), answer("yes")])
            ids.append(conv.id)
        then = convstore_now() - timedelta(days=days)
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE convstore_conversations SET created_at = :t"), {"t": then})
            conn.execute(sa.text("UPDATE convstore_branches SET updated_at = :t"), {"t": then})
    return ids


def convstore_now():
    from datetime import datetime, timezone  # noqa: PLC0415

    return datetime.now(timezone.utc)


def _count(db: str) -> int:
    with convstore.Store(db) as store:
        return sum(1 for _ in store.iter_conversations())


def test_purge_in_a_script_without_yes_refuses_and_deletes_nothing(db):
    _aged(db, 3)
    line = assert_one_line_error(run_cli("purge", "--older-than", "30d", db=db, stdin=""), 1)
    assert "purge would delete 3 conversations untouched for 30 days: pass --yes" in line
    assert _count(db) == 3


def test_purge_dry_run_lists_what_it_would_delete(db):
    ids = _aged(db, 2)
    with convstore.Store(db) as store:
        store.create_conversation(model="m").append([user("new"), answer("yes")])
    result = run_cli("purge", "--older-than", "30d", "--dry-run", db=db)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(ids)
    assert "would delete 2 conversations untouched for 30 days (--dry-run: nothing deleted)" in result.stderr
    assert _count(db) == 3


def test_purge_on_a_terminal_asks_with_the_count(db):
    from test_cli_first_hour import _run_on_a_terminal  # noqa: PLC0415

    _aged(db, 2)
    code, text = _run_on_a_terminal(["purge", "--older-than", "4w", "--db", db], "n")
    assert "delete 2 conversations untouched for 4 weeks, for good? [y/N]" in text
    assert "nothing deleted" in text
    assert code == 1
    assert _count(db) == 2
    code, text = _run_on_a_terminal(["purge", "--older-than", "4w", "--db", db], "y")
    assert code == 0
    assert "purged 2 conversations" in text
    assert _count(db) == 0


@pytest.mark.parametrize("age", ["99999999d", "36501d", "9999999w"])
def test_an_absurd_age_is_refused_with_the_limit(db, age):
    line = assert_one_line_error(run_cli("purge", "--older-than", age, db=db), 2)
    assert "is longer than the longest age, 36500d (100 years)" in line
    assert "unexpected" not in line


def test_the_store_refuses_an_age_before_the_year_one(db):
    with convstore.Store(db) as store, pytest.raises(convstore.InvalidAgeError, match="oldest age"):
        store.stale_conversations(older_than=timedelta(days=999_999_999))


# -- ids and paging ---------------------------------------------------------------------------------------


@given(st.sets(st.text("0123456789abcdef-", min_size=8, max_size=16), min_size=1, max_size=30))
def test_shortest_endings_are_unique_endings_of_at_least_8(ids):
    endings = shortest_endings(ids)
    for full, ending in endings.items():
        assert full.endswith(ending)
        assert len(ending) >= min(8, len(full))
        others = [other for other in ids if other != full and other.endswith(ending)]
        assert not others or ending == full


def test_ls_prints_endings_that_show_accepts(db):
    with convstore.Store(db) as store:
        for n in range(5):
            store.create_conversation(model="m").append([user(f"hello {n}"), answer("hi")])
    listed = run_cli("ls", db=db)
    shown = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line[:1].isalnum()]
    assert len(shown) == 5
    for ending in shown:
        # The shortest ending that tells them apart (8: their last characters are random), where the full
        # id's shared time prefix filled an 80-column terminal before.
        assert len(ending) == 8
        result = run_cli("show", ending, db=db)
        assert result.returncode == 0, result.stderr


def test_ls_pages_through_more_than_the_stores_largest_page(db):
    with convstore.Store(db) as store:
        made = [store.create_conversation(model="m").id for _ in range(1005)]
    everything = run_cli("ls", "--limit", "100000", "--json", db=db)
    assert everything.returncode == 0, everything.stderr  # before: "unexpected ValueError"
    listed = json.loads(everything.stdout)
    assert sorted(item["id"] for item in listed) == sorted(made)  # --json keeps full ids
    assert all(len(item["id"]) == 36 and item["id"].endswith(item["short_id"]) for item in listed)
    first = run_cli("ls", "--limit", "600", "--json", db=db)
    hint = first.stderr.strip()
    assert hint.startswith("(more: convstore ls --before ")
    before = hint.removeprefix("(more: convstore ls --before ").rstrip(")")
    rest = run_cli("ls", "--limit", "1000", "--json", "--before", before, db=db)
    assert rest.returncode == 0, rest.stderr
    pages = [item["id"] for item in json.loads(first.stdout) + json.loads(rest.stdout)]
    assert pages == [item["id"] for item in listed]  # newest first, no gap, no overlap


def test_show_tree_prints_node_endings_that_fork_accepts(db):
    with convstore.Store(db) as store:
        conv = store.create_conversation(model="m")
        conv.append([user("one"), answer("two")])
        conv.append([user("three"), answer("four")])
    tree = run_cli("show", conv.id, "--tree", db=db)
    first_line = next(line for line in tree.stdout.splitlines() if "model_output" in line and "two" in line)
    words = first_line.split()
    ending = words[words.index("model_output") - 1]
    assert len(ending) == 8  # the shortest unique ending (12 characters were printed before)
    forked = run_cli("fork", conv.id[-8:], "--at", ending, "--name", "alt", db=db)
    assert forked.returncode == 0, forked.stderr


# -- one keyring story ------------------------------------------------------------------------------------


def _keyring_file(home: Path) -> Path:
    path = home / "keys.json"
    path.write_text(json.dumps({"active": "k1", "keys": {"k1": base64.b64encode(KEY).decode()}}))
    return path


def _sealed(db: str) -> str:
    with convstore.Store(db, keyring=convstore.Keyring({"k1": KEY}, active="k1")) as store:
        conv = store.create_conversation(model="m")
        conv.append([user("private words"), answer("kept")])
        return conv.id


def test_keyring_flag_on_every_content_command(db, home):
    sealed = _sealed(db)
    keys = str(_keyring_file(home))
    for args in (["show", sealed], ["ls"], ["export", "--plaintext", sealed], ["db", "check"]):
        refused_or_withheld = run_cli(*args, db=db)
        assert "private words" not in refused_or_withheld.stdout
        opened = run_cli(*args, "--keyring", keys, db=db)
        assert opened.returncode == 0, (args, opened.stderr)
    assert "private words" in run_cli("show", sealed, "--keyring", keys, db=db).stdout
    assert "private words" in run_cli("export", "--plaintext", sealed, "--keyring", keys, db=db).stdout
    chat = run_cli("chat", "--offline", "--conversation", sealed, "--keyring", keys, db=db, stdin="more\n")
    assert chat.returncode == 0, chat.stderr
    for command in ("chat", "export", "import", "show", "ls", "serve", "replay", "fork"):
        help_text = run_cli(command, "--help").stdout
        assert "--keyring FILE" in help_text, command
        assert "convstore.Keyring" not in help_text


def test_keyring_errors_name_the_flag_and_the_variable(db, home):
    sealed = _sealed(db)
    line = assert_one_line_error(run_cli("export", "--plaintext", sealed, db=db), 1)
    assert "--keyring FILE" in line
    assert "$CONVSTORE_KEYRING" in line
    bad = home / "bad.json"
    bad.write_text("{}")
    line = assert_one_line_error(run_cli("show", sealed, "--keyring", str(bad), db=db), 1)
    assert line.startswith("convstore: error: --keyring: ")
    line = assert_one_line_error(
        run_cli("show", sealed, db=db, env={"CONVSTORE_KEYRING": "k1=not base64!"}), 1
    )
    assert "CONVSTORE_KEYRING" in line


def test_serve_honours_the_keyring_variable(db, home):
    pytest.importorskip("starlette")
    import httpx  # noqa: PLC0415

    sealed = _sealed(db)
    env = {k: v for k, v in os.environ.items() if k not in {"GEMINI_API_KEY", "CONVSTORE_DB"}}
    env["CONVSTORE_KEYRING"] = "k1=" + base64.b64encode(KEY).decode()
    with subprocess.Popen(
        [sys.executable, "-m", "convstore", "serve", "--db", db, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None
        try:
            assert "keyring" in process.stdout.readline()
            url = process.stdout.readline().strip().removeprefix("open ")
            with httpx.Client(follow_redirects=True, timeout=30) as client:
                page = client.get(url.replace("/?token", f"/c/{sealed}/branch?token"))
            assert page.status_code == 200
            assert "private words" in page.text  # before: withheld, the variable ignored
        finally:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=30)


# -- Ctrl-C ---------------------------------------------------------------------------------------------


def _interrupted(args: list[str], db: str, tmp: Path, after: int) -> subprocess.CompletedProcess:
    """Run the command, and press Ctrl-C once its progress reached ``after`` (the command waits there)."""
    marker = tmp / f"paused-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if k not in {"GEMINI_API_KEY", "CONVSTORE_DB"}}
    env.update(CONVSTORE_TEST_PAUSE_AFTER=str(after), CONVSTORE_TEST_PAUSE_MARKER=str(marker))
    with subprocess.Popen(
        [sys.executable, str(INTERRUPTER), "--db", db, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the command never reached the point"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate("", timeout=60)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_interrupted_purge_says_how_many_and_a_rerun_finishes(db, tmp_path):
    _aged(db, 6)
    # Batches of 1, 2, 3: Ctrl-C at the second delete reported, in the second batch, which committed whole
    # and is reported whole.
    result = _interrupted(["purge", "--older-than", "30d", "--yes"], db, tmp_path, after=2)
    assert result.returncode == 130
    assert "interrupted: purged 3 of 6 conversations; the other 3 are as they were" in result.stderr
    assert "Traceback" not in result.stderr
    assert _count(db) == 3
    again = run_cli("purge", "--older-than", "30d", "--yes", db=db)
    assert again.stdout.strip() == "purged 3 conversations"
    with convstore.Store(db) as store:
        assert store.check().ok


def test_interrupted_import_says_how_many_and_skip_existing_imports_the_rest(db, home, tmp_path):
    source = f"sqlite:///{home / 'source.db'}"
    with convstore.Store(source) as store:
        for n in range(5):
            conv = store.create_conversation(model="m")
            for k in range(30):
                conv.append([user(f"c{n} turn {k}"), answer("ok")])
    export = home / "all.jsonl"
    assert run_cli("export", "-o", str(export), db=source).returncode == 0
    # 60 rows a conversation (its nodes) and more: the pause lands inside the second conversation.
    result = _interrupted(["import", str(export)], db, tmp_path, after=70)
    assert result.returncode == 130
    assert "interrupted: imported 1 of 5 conversations into" in result.stderr
    assert "4 not imported (the same command with --skip-existing imports the rest)" in result.stderr
    assert _count(db) == 1  # the conversation under way was rolled back whole
    rest = run_cli("import", str(export), "--skip-existing", db=db)
    assert rest.returncode == 0, rest.stderr
    assert "imported 4 conversations" in rest.stdout
    with convstore.Store(db) as store:
        assert store.check().ok
        assert _count(db) == 5


def test_interrupted_replay_leaves_an_unfinished_branch_that_a_rerun_continues(db, tmp_path):
    with convstore.Store(db) as store:
        conv = store.create_conversation(model="gemini-3-flash-preview")
        for k in range(6):
            conv.append([user(f"question {k}"), answer(f"answer {k}")])
    args = ["replay", conv.id, "--offline", "--model", "gemini-2.5-flash"]
    result = _interrupted(args, db, tmp_path, after=3)
    assert result.returncode == 130
    assert "interrupted: replayed 3 of 6 exchanges onto the unfinished branch" in result.stderr
    assert "'main@gemini-2.5-flash~unfinished'" in result.stderr
    with convstore.Store(db) as store:
        names = {b.name for b in store.branches(conv.id)}
    assert names == {"main", "main@gemini-2.5-flash~unfinished"}  # not named like a finished replay
    again = run_cli(*args, db=db)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "continuing the unfinished replay" in again.stdout
    assert (
        "replayed 6 of 6 exchanges of branch 'main' onto new branch 'main@gemini-2.5-flash'" in again.stdout
    )
    with convstore.Store(db) as store:
        assert {b.name for b in store.branches(conv.id)} == {"main", "main@gemini-2.5-flash"}
        replayed = store.conversation(conv.id, "main@gemini-2.5-flash").nodes()
        asked = [n.data["content"][0]["text"] for n in replayed if n.type == "user_input"]
        assert asked == [f"question {k}" for k in range(6)]  # each input once, in order


# -- text every surface can show -------------------------------------------------------------------------


def _with_a_lone_surrogate(db: str) -> str:
    """A conversation whose stored first message holds a lone surrogate (as data stored before the door
    refused them does): written through SQL, as JSON's own escape."""
    with convstore.Store(db) as store:
        conv = store.create_conversation(model="m")
        conv.append([user("before XLONEX after"), answer("ok")])
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE convstore_nodes SET payload = replace(payload, 'XLONEX', :escape)"),
            {"escape": "\\ud800"},
        )
    engine.dispose()
    return conv.id


def test_show_and_ls_print_a_lone_surrogate_as_a_replacement_character(db):
    conversation_id = _with_a_lone_surrogate(db)
    for args in (["show", conversation_id], ["show", conversation_id, "--tree"], ["ls"], ["ls", "--json"]):
        result = run_cli(*args, db=db)
        assert result.returncode == 0, (args, result.stderr)  # before: "unexpected UnicodeEncodeError"
        assert "before \ufffd after" in result.stdout or "before \\ud800 after" in result.stdout, args
