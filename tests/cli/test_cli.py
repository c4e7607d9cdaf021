"""The ``convstore`` command, driven as a user drives it: in a process of its own (``run_cli``).

Each test points ``--db`` at a temporary SQLite file (and ``XDG_DATA_HOME`` at a temporary folder, so the
default store is never the real one), checks what is printed and the exit status, and checks the store
itself through the library. Export and import are in ``test_transfer.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import model as answer
from conftest import user
from helpers import run_cli

import convstore
from convstore.cli._common import default_db_path, parse_duration, resolve_db
from convstore.cli._progress import Progress
from convstore.store import _migrate
from convstore.store import _schema as schema

COMMANDS = ["demo", "chat", "ls", "show", "fork", "delete", "purge", "export", "import", "replay", "db"]


def assert_one_line_error(result, code: int | None = None) -> str:
    """A user's mistake: non-zero, one line on stderr, ``convstore: error: ...``, never a traceback."""
    assert result.returncode != 0
    if code is not None:
        assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("convstore: error: ")
    return lines[0]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """XDG_DATA_HOME in a temporary folder, for these tests and the subprocesses they start."""
    data = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.delenv("CONVSTORE_DB", raising=False)
    return data


@pytest.fixture
def db(tmp_path, home) -> str:
    """An empty store, built (commands that only read refuse a database file that does not exist)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    convstore.Store(url).close()
    return url


def convstore_now() -> datetime:
    return datetime.now(timezone.utc)


# -- the script and its help -----------------------------------------------------------------------------


def test_the_installed_console_script_runs():
    script = shutil.which("convstore", path=str(Path(sys.executable).parent))
    assert script is not None, "pip install -e . installs the `convstore` script beside the interpreter"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s", result.stdout, re.MULTILINE), name


def test_the_console_script_and_python_m_convstore_are_installed():
    script = Path(sys.executable).with_name("convstore")
    assert script.exists(), "the convstore console script is not installed next to this Python"
    for command in ([str(script), "--version"], [sys.executable, "-m", "convstore", "--version"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"convstore {convstore.__version__}"


@pytest.mark.parametrize("command", [*COMMANDS, "db upgrade", "db current"])
def test_every_command_has_help_with_a_sentence(command):
    result = run_cli(*command.split(), "--help")
    assert result.returncode == 0
    description = result.stdout.split("\n\n")[1]  # after the usage block
    assert description[0].isupper(), description
    assert "." in description, description


def test_default_store_is_in_the_user_data_folder(home):
    assert default_db_path() == home / "convstore" / "convstore.db"
    result = run_cli("ls")
    assert result.returncode == 0, result.stderr
    assert "no conversations yet" in result.stdout
    assert not (home / "convstore" / "convstore.db").exists()  # listing nothing makes nothing


@pytest.mark.parametrize(
    "args",
    [
        ["ls"],
        ["show", "01a21405-8db3-7b7a-af47-2eb734a127bd"],
        ["delete", "01a21405-8db3-7b7a-af47-2eb734a127bd"],
        ["purge", "--older-than", "1d"],
        ["export", "01a21405-8db3-7b7a-af47-2eb734a127bd"],
        ["db", "check"],
        ["db", "current"],
    ],
)
def test_a_command_that_reads_refuses_a_missing_sqlite_file_and_makes_none(tmp_path, home, args):
    typo = tmp_path / "chta.db"
    line = assert_one_line_error(run_cli(*args, db=str(typo)), 1)
    assert f"no database at {typo}" in line
    assert not typo.exists()


def test_db_option_and_environment_and_plain_paths(tmp_path, home, monkeypatch):
    assert resolve_db("sqlite:///x.db") == "sqlite:///x.db"
    assert resolve_db(str(tmp_path / "p.db")) == f"sqlite:///{tmp_path / 'p.db'}"
    monkeypatch.setenv("CONVSTORE_DB", "sqlite:///from-env.db")
    assert resolve_db(None) == "sqlite:///from-env.db"
    # --db after the command works as well as before it.
    result = run_cli("db", "upgrade", "--db", str(tmp_path / "after.db"))
    assert result.returncode == 0
    assert (tmp_path / "after.db").is_file()
    assert run_cli("ls", "--db", str(tmp_path / "after.db")).returncode == 0


# -- demo ------------------------------------------------------------------------------------------------


def _last_json_block(text: str) -> list:
    lines = text.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "[")
    end = next(i for i in range(start, len(lines)) if lines[i] == "]")
    return json.loads("\n".join(lines[start : end + 1]))


def test_demo_runs_offline_and_ends_with_the_exact_input_json(home):
    secret = "AIza-not-a-real-key-0123456789"
    result = run_cli("demo", env={"GEMINI_API_KEY": secret})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert secret not in out + result.stderr
    sent = _last_json_block(out)
    assert [step["type"] for step in sent][-1] == "user_input"
    assert sent[-1]["content"][0]["text"] == "Thanks! Any tip for tomorrow?"
    calls = [step for step in sent if step["type"] == "function_call"]
    results = [step for step in sent if step["type"] == "function_result"]
    assert calls
    assert results
    assert results[0]["call_id"] == calls[0]["id"]
    assert all("signature" in step for step in sent if step["type"] == "thought")
    assert "<- main" in out
    assert "<- ears" in out
    match = re.search(r"sent (\d+) of (\d+) steps", out)
    if hasattr(convstore, "TokenBudget"):
        assert match is not None
        assert int(match.group(1)) == len(sent) < int(match.group(2))
    else:
        assert match is None
        assert "skipped" in out
        assert sent[0]["content"][0]["text"] == "I have 2 dogs in my house."
    temporary = re.search(r"store: sqlite:///(\S+) \(temporary", out)
    assert temporary is not None
    assert not Path(temporary.group(1)).exists()


def test_demo_with_db_keeps_its_conversation(db):
    assert run_cli("demo", db=db).returncode == 0
    with convstore.Store(db) as store:
        [info] = store.conversations().items
        conv = store.conversation(info.id)
        assert {b.name for b in conv.branches()} == {"main", "ears"}
        assert len(conv.exchanges()) == 5


# -- ls, show, fork, delete ------------------------------------------------------------------------------


def _conversation(db: str) -> str:
    with convstore.Store(db) as store:
        conv = store.create_conversation(model="gemini-3-flash-preview", system_instruction="Be brief.")
        conv.append([user("I have 2 dogs in my house."), answer("Two dogs!")])
        conv.append([user("How many paws are in my house?"), answer("Eight.")])
        return conv.id


def test_ls_show_fork_delete_round_trip(db):
    conversation_id = _conversation(db)
    listed = run_cli("ls", db=db)
    assert listed.returncode == 0
    # The shortest ending of the id that tells it apart (8 characters here): what `show` takes.
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(conversation_id[-8:])]
    assert row.split()[0] == conversation_id[-8:]
    assert row.split()[5:9] == ["gemini-3-flash-preview", "4", "1", "I"]  # model, steps, branches, message

    shown = run_cli("show", conversation_id, db=db)
    assert shown.returncode == 0
    steps = [line for line in shown.stdout.splitlines() if re.match(r"^[0-9a-f-]{36}  ", line)]
    assert [line.split()[1] for line in steps] == ["user_input", "model_output"] * 2
    assert "How many paws are in my house?" in steps[2]
    first_answer = steps[1].split()[0]

    forked = run_cli("fork", conversation_id[-8:], "--at", first_answer[-8:], "--name", "alt", db=db)
    assert forked.returncode == 0, forked.stderr
    assert "alt" in forked.stdout
    [listed_json] = json.loads(run_cli("ls", "--json", db=db).stdout)
    assert (listed_json["steps"], listed_json["branches"]) == (4, 2)

    tree = run_cli("show", conversation_id, "--tree", db=db)
    assert tree.returncode == 0
    assert re.search(rf"(?m)^\S*{first_answer[-8:]}\s+model_output\s+Two dogs!\s+<- alt", tree.stdout)
    assert re.search(r"model_output\s+Eight\.\s+<- main", tree.stdout)
    assert re.search(r"^main\s+4\s", tree.stdout, re.MULTILINE)  # per-branch usage table
    assert re.search(r"^alt\s+2\s", tree.stdout, re.MULTILINE)

    as_json = json.loads(run_cli("show", conversation_id, "--branch", "alt", "--json", db=db).stdout)
    assert as_json["branch"] == "alt"
    assert [s["step"] for s in as_json["steps"]] == [user("I have 2 dogs in my house."), answer("Two dogs!")]

    deleted = run_cli("delete", conversation_id, db=db)
    assert deleted.returncode == 0
    gone = run_cli("show", conversation_id, db=db)
    assert "not found" in assert_one_line_error(gone, 1)
    assert "no conversations yet" in run_cli("ls", db=db).stdout


def test_ls_limit(db):
    for _ in range(3):
        _conversation(db)
    listed = run_cli("ls", "--limit", "2", db=db)
    assert len([line for line in listed.stdout.splitlines() if re.match(r"^[0-9a-f]{8}  ", line)]) == 2
    assert "--before" in listed.stdout


def test_ls_lists_encrypted_conversations_and_show_says_a_keyring_is_needed(db):
    plain_id = _conversation(db)
    keyring = convstore.Keyring({"k1": bytes(range(32))}, active="k1")
    with convstore.Store(db, keyring=keyring) as store:
        sealed = store.create_conversation(model="gemini-3-flash-preview", system_instruction="private")
        sealed.append([user("private words"), answer("yes")])
    listed = run_cli("ls", db=db)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split()[-1] for line in listed.stdout.splitlines() if line[:1].isalnum()}
    assert (rows[plain_id[-8:]], rows[sealed.id[-8:]]) == ("house.", "(encrypted)")
    assert "private" not in listed.stdout
    refused = assert_one_line_error(run_cli("show", sealed.id, db=db), 1)
    assert "--keyring FILE" in refused  # the flag and the variable, in a shell user's words
    assert "$CONVSTORE_KEYRING" in refused
    assert "convstore.Keyring" not in refused
    assert sealed.id in refused


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["show", "01a21405-8db3-7b7a-af47-2eb734a127bd"], 1, "not found"),
        (["show", "no-such-id"], 1, "not a conversation id"),
        (["fork", "01a21405-8db3-7b7a-af47-2eb734a127bd", "--at", "x"], 1, "not found"),
        (["delete", "01a21405-8db3-7b7a-af47-2eb734a127bd"], 1, "not found"),
        (["--db", "nosuchdriver://x/y", "ls"], 1, "no database driver"),
        (["--db", "sqlite:////no/such/folder/x.db", "ls"], 1, "no database at /no/such/folder/x.db"),
        (["--db", "sqlite:////no/such/folder/x.db", "db", "upgrade"], 1, "cannot use the database"),
        (["--db", "postgresql+psycopg://u:hunter2@127.0.0.1:1/db", "ls"], 1, "cannot use the database"),
        (["import", "/no/such/file.jsonl"], 1, "no such file"),
        (["purge", "--older-than", "30x"], 2, "not a duration"),
        (["purge"], 2, "--older-than"),
        (["ls", "--limit", "0"], 2, "at least 1"),
        (["frobnicate"], 2, "invalid choice"),
        (["chat", "--budget", "-3", "--offline"], 2, "at least 1"),
    ],
)
def test_user_mistakes_are_one_line(db, args, code, says):
    result = run_cli(*args, db=None if "--db" in args else db)
    line = assert_one_line_error(result, code)
    assert says in line
    assert "hunter2" not in line  # a password in a URL is never shown


def test_fork_errors(db):
    conversation_id = _conversation(db)
    node = run_cli("show", conversation_id, db=db).stdout.split("user_input")[0].split()[-1]
    assert "no node" in assert_one_line_error(run_cli("fork", conversation_id, "--at", "0" * 12, db=db), 1)
    assert run_cli("fork", conversation_id, "--at", node, "--name", "b", db=db).returncode == 0
    again = run_cli("fork", conversation_id, "--at", node, "--name", "b", db=db)
    assert "already exists" in assert_one_line_error(again, 1)


def test_outdated_schema_is_refused_until_db_upgrade(tmp_path, home):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    _migrate.upgrade(engine, "0001")
    engine.dispose()
    refused = run_cli("ls", db=url)
    assert "convstore db upgrade" in assert_one_line_error(refused, 1)
    current = run_cli("db", "current", url)
    assert current.returncode == 0
    assert current.stdout.startswith("0001")
    assert "upgrade" in current.stdout
    upgraded = run_cli("db", "upgrade", url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"from revision 0001 to {_migrate.head_revision()}" in upgraded.stdout
    assert run_cli("db", "current", url).stdout.startswith(_migrate.head_revision())
    assert run_cli("ls", db=url).returncode == 0


def test_purge_parses_durations_and_deletes_only_what_is_older(db):
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("", "30", "d", "0d", "-1d", "1.5h", "30 days"):
        with pytest.raises(Exception, match="not a duration"):
            parse_duration(bad)
    with convstore.Store(db) as store:
        old = store.create_conversation()
        old.append([user("old"), answer("yes")])
        recent = store.create_conversation()
        recent.append([user("recent"), answer("yes")])
        with store.engine.begin() as conn:  # age the first one by 40 days, as if untouched since
            then = convstore_now() - timedelta(days=40)
            # Through the tables, so the timestamps are stored in the schema's own format.
            conversations, branches = schema.conversations, schema.branches
            conn.execute(conversations.update().where(conversations.c.id == old.id).values(created_at=then))
            of_old = branches.c.conversation_id == old.id
            conn.execute(branches.update().where(of_old).values(updated_at=then))
    result = run_cli("purge", "--older-than", "30d", "--yes", db=db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "purged 1 conversation"
    with convstore.Store(db) as store:
        assert [info.id for info in store.conversations().items] == [recent.id]
    assert "not a duration" in assert_one_line_error(run_cli("purge", "--older-than", "soon", db=db), 2)


# -- chat ------------------------------------------------------------------------------------------------


def _histories(db: str) -> dict[str, list[str]]:
    """Branch name -> the texts of its steps, of the store's one conversation."""
    with convstore.Store(db) as store:
        [info] = store.conversations().items
        conv = store.conversation(info.id)
        found = {}
        for branch in conv.branches():
            steps = conv.checkout(branch.name).history()
            found[branch.name] = [
                item.get("text", "") for step in steps for item in step.get("content") or [] if "text" in item
            ]
        return found


def test_chat_offline_through_stdin(db):
    lines = [
        "Hello there",
        "What is the weather in Porto?",
        "/fork side",
        "A side question",
        "/tree",
        "/branch main",
        "/edit 1",
        "Hello, edited",
        "/usage",
        "/help",
        "/quit",
        "never sent",
    ]
    result = run_cli("chat", "--offline", db=db, stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "model> Echo: Hello there" in out
    assert 'model> calls get_weather({"city": "Porto"})' in out
    assert "local> get_weather -> " in out
    assert re.search(r"model> \w[\w ]* in Porto today", out)
    assert "<- main" in out
    assert "<- side" in out
    assert re.search(r"^all\s+\d+", out, re.MULTILINE)  # /usage totals
    assert "/edit N" in out  # /help
    histories = _histories(db)
    assert set(histories) == {"main", "side", "edit-1"}
    assert histories["main"][0] == "Hello there"
    assert len(histories["main"]) == 4
    assert histories["side"][-2:] == ["A side question", "Echo: A side question"]
    assert histories["edit-1"] == ["Hello, edited", "Echo: Hello, edited"]
    assert not any("never sent" in text for texts in histories.values() for text in texts)


def test_chat_continues_a_conversation_on_a_branch(db):
    conversation_id = _conversation(db)
    result = run_cli(
        "chat", "--offline", "--conversation", conversation_id, "--branch", "main", db=db, stdin="Third\n"
    )
    assert result.returncode == 0, result.stderr
    assert conversation_id in result.stdout
    assert _histories(db)["main"][-2:] == ["Third", "Echo: Third"]


def test_chat_without_a_key_is_one_line_and_exit_2(db):
    result = run_cli("chat", db=db, stdin="hello\n")
    assert "GEMINI_API_KEY" in assert_one_line_error(result, 2)
    with convstore.Store(db) as store:
        assert not store.conversations().items  # nothing created


def test_chat_with_a_budget(db):
    result = run_cli("chat", "--offline", "--budget", "100000", db=db, stdin="One\nTwo\n")
    if not hasattr(convstore, "TokenBudget"):
        assert "not available" in assert_one_line_error(result, 2)
        return
    assert result.returncode == 0, result.stderr
    assert "Echo: Two" in result.stdout
    assert _histories(db)["main"] == ["One", "Echo: One", "Two", "Echo: Two"]


# -- replay ----------------------------------------------------------------------------------------------


def test_replay_offline_writes_a_new_branch_and_summarises_the_difference(db):
    assert run_cli("demo", db=db).returncode == 0
    with convstore.Store(db) as store:
        conversation_id = store.conversations().items[0].id
        old = store.conversation(conversation_id).history()
    result = run_cli(
        "replay", conversation_id, "--branch", "main", "--model", "gemini-2.5-flash", "--offline", db=db
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "replayed 5 of 5 exchanges of branch 'main' onto new branch 'main@gemini-2.5-flash'" in out
    # The demo's scripted text answers differ from the emulator's echo; the weather call and the answer to its
    # result come from the same local function, so those two are the same.
    assert "first difference: exchange 1 of 5" in out
    assert "model outputs that differ: 3 of 5" in out
    with convstore.Store(db) as store:
        new = store.conversation(conversation_id, "main@gemini-2.5-flash")
        steps = new.history()
        assert [s for s in steps if s["type"] == "user_input"] == [
            s for s in old if s["type"] == "user_input"
        ]
        [call] = [s for s in steps if s["type"] == "function_call"]
        [result_step] = [s for s in steps if s["type"] == "function_result"]
        assert result_step["call_id"] == call["id"]  # remapped to the new call
        assert {x.model for x in new.exchanges()} == {"gemini-2.5-flash"}
        assert new.nodes()[0].parent_id is None  # beside the old branch, from the root
    again = run_cli("replay", conversation_id, "--offline", "--model", "gemini-2.5-flash", db=db)
    assert "'main@gemini-2.5-flash-2'" in again.stdout
    taken = run_cli("replay", conversation_id, "--offline", "--name", "main", db=db)
    assert "already exists" in assert_one_line_error(taken, 1)


def test_replay_of_an_unknown_branch(db):
    conversation_id = _conversation(db)
    result = run_cli("replay", conversation_id, "--branch", "nope", "--offline", db=db)
    assert "branch 'nope' not found" in assert_one_line_error(result, 1)


# -- progress --------------------------------------------------------------------------------------------


class _Terminal:
    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


class _Pipe(_Terminal):
    def isatty(self) -> bool:
        return False


def test_progress_is_a_plain_counter_without_rich_and_silent_off_a_terminal(monkeypatch):
    from convstore.cli import _progress  # noqa: PLC0415

    monkeypatch.setattr(_progress, "HAVE_RICH", False)
    terminal = _Terminal()
    with Progress("importing", 3, unit="rows", stream=terminal) as bar:  # type: ignore[arg-type]
        bar.advance(2)
        bar.advance()
    assert terminal.text == "\rimporting 0/3 rows\rimporting 2/3 rows\rimporting 3/3 rows\n"
    pipe = _Pipe()
    with Progress("importing", 3, stream=pipe) as bar:  # type: ignore[arg-type]
        bar.advance(3)
    assert pipe.text == ""
