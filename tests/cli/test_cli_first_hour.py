"""The command line's first hour: what a new user meets, driven through the real command in a subprocess.

Chat creates its conversation with the first recorded turn and says how to continue; ``ls`` says what is in
each conversation; ids work by their last characters everywhere, with plain errors; ``delete`` asks on a
terminal; every command's --help ends with examples that parse; trees with several roots keep their shape.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import shlex
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import model as answer
from conftest import user
from helpers import run_cli
from test_cli import COMMANDS, assert_one_line_error

import convstore
from convstore.cli import build_parser
from convstore.cli._common import CliError, match_id


@pytest.fixture
def db(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CONVSTORE_DB", raising=False)
    url = f"sqlite:///{tmp_path / 'first.db'}"
    convstore.Store(url).close()
    return url


def conversation_ids(db: str) -> list[str]:
    with convstore.Store(db) as store:
        return [info.id for info in store.iter_conversations()]


def make_conversation(db: str, first: str = "I have 2 dogs in my house.", *, keyring=None) -> str:
    with convstore.Store(db, keyring=keyring) as store:
        conv = store.create_conversation(model="gemini-3-flash-preview")
        conv.append([user(first), answer("Two dogs!")])
        conv.append([user("How many paws?"), answer("Eight.")])
        return conv.id


# -- chat: created at the first recorded turn, and how to continue ----------------------------------------


def test_chat_left_at_once_creates_nothing(db):
    result = run_cli("chat", "--offline", db=db, stdin="/quit\n")
    assert result.returncode == 0, result.stderr
    assert "nothing was recorded, so no conversation was created" in result.stdout
    assert run_cli("chat", "--offline", db=db, stdin="").returncode == 0  # end of input at once
    assert conversation_ids(db) == []


def test_chat_whose_only_turn_does_not_fit_the_budget_creates_nothing(db):
    result = run_cli("chat", "--offline", "--budget", "1", db=db, stdin="Hello there, a long first message\n")
    assert result.returncode == 1  # the turn failed: a script sees it
    assert result.stderr.strip() == "convstore: error: 1 turn failed (nothing of it was recorded)"
    assert "BudgetExceededError" in result.stdout
    assert "nothing of this turn was recorded" in result.stdout
    assert conversation_ids(db) == []


def test_chat_commands_before_the_first_turn_say_so(db):
    result = run_cli("chat", "--offline", db=db, stdin="/fork x\n/edit 1\n/branch other\n/tree\n/usage\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("nothing is recorded yet: send a message first") == 3
    assert "(no steps yet)" in result.stdout
    assert conversation_ids(db) == []


def test_chat_says_how_to_continue_and_that_command_continues(db):
    result = run_cli("chat", "--offline", db=db, stdin="Hello there\n/fork side\nOn the side\n")
    assert result.returncode == 0, result.stderr
    [conversation_id] = conversation_ids(db)
    [hint] = [line for line in result.stdout.splitlines() if line.startswith("to continue: ")]
    words = shlex.split(hint.removeprefix("to continue: "))
    assert words[:4] == ["convstore", "chat", "--conversation", conversation_id]
    assert words[4:] == ["--branch", "side", "--offline", "--db", db]
    again = run_cli(*words[1:], stdin="And more\n")
    assert again.returncode == 0, again.stderr
    assert f"conversation {conversation_id}, branch 'side'" in again.stdout
    with convstore.Store(db) as store:
        side = store.conversation(conversation_id, "side").history()
    texts = [step["content"][0]["text"] for step in side if "content" in step]
    assert texts[-2:] == ["And more", "Echo: And more"]


def test_chat_continues_by_the_last_characters_of_the_id(db):
    conversation_id = make_conversation(db)
    result = run_cli("chat", "--offline", "--conversation", conversation_id[-8:], db=db, stdin="Third\n")
    assert result.returncode == 0, result.stderr
    assert f"to continue: convstore chat --conversation {conversation_id}" in result.stdout


def test_chat_tree_with_two_roots_keeps_its_indentation(db):
    result = run_cli("chat", "--offline", db=db, stdin="First\nSecond\n/edit 1\nFirst, edited\n/tree\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    main = next(line for line in lines if line.endswith("<- main"))
    edited = next(line for line in lines if line.endswith("<- edit-1"))
    assert main.startswith("│  ")
    assert edited.startswith("   ")  # the last root's chain, under its connector (it was at column 0)
    assert any(line.startswith("└─ ") and "First, edited" in line for line in lines)


# -- ls ---------------------------------------------------------------------------------------------------


def test_ls_shows_steps_branches_activity_and_the_first_message(db):
    long_first = "Please help me plan a three-week trip through Portugal, Spain and the south of France"
    conversation_id = make_conversation(db, long_first)
    with convstore.Store(db) as store:
        conv = store.conversation(conversation_id)
        conv.fork(at=conv.nodes()[1].id, branch="alt").append([user("Other"), answer("Yes")])
    listed = run_cli("ls", db=db)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == [
        "id", "created", "(UTC)", "last", "activity", "model", "steps", "branches", "first", "message"
    ]  # fmt: skip
    assert row.split()[0] == conversation_id[-8:]  # the shortest ending that tells it apart
    assert row.split()[5:8] == ["gemini-3-flash-preview", "6", "2"]
    message = row.split("  2  ", 1)[1].strip()
    assert message.startswith("Please help me plan")
    assert message.endswith("…")
    assert len(message) == 40
    [item] = json.loads(run_cli("ls", "--json", db=db).stdout)
    assert item["id"] == conversation_id
    assert (item["steps"], item["branches"], item["encrypted"], item["withheld"]) == (6, 2, False, False)
    assert item["first_message"] == message
    assert item["last_activity"] >= item["created_at"]


def test_ls_withholds_an_encrypted_first_message_unless_a_keyring_is_given(db, tmp_path):
    key = bytes(range(32))
    keyring = convstore.Keyring({"k1": key}, active="k1")
    sealed = make_conversation(db, "my private diagnosis", keyring=keyring)
    listed = run_cli("ls", db=db)
    assert "private" not in listed.stdout
    assert "(encrypted)" in listed.stdout
    assert "--keyring" in listed.stdout
    [item] = json.loads(run_cli("ls", "--json", db=db).stdout)
    assert (item["withheld"], item["first_message"], item["steps"]) == (True, None, 4)
    keyfile = tmp_path / "keyring.json"
    keyfile.write_text(json.dumps({"active": "k1", "keys": {"k1": base64.b64encode(key).decode()}}))
    opened = run_cli("ls", "--keyring", str(keyfile), db=db)
    assert opened.returncode == 0, opened.stderr
    assert "my private diagnosis" in opened.stdout
    shown = run_cli("show", sealed[-8:], "--keyring", str(keyfile), db=db)
    assert shown.returncode == 0, shown.stderr
    assert "my private diagnosis" in shown.stdout
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"active": "k1", "keys": {"k1": "not base64!"}}')
    assert "not base64" in assert_one_line_error(run_cli("ls", "--keyring", str(wrong), db=db), 1)


def test_ls_json_of_an_empty_store_is_an_empty_array(db):
    assert json.loads(run_cli("ls", "--json", db=db).stdout) == []


# -- ids ----------------------------------------------------------------------------------------------------


def test_the_last_characters_of_a_conversation_id_work_everywhere(db, tmp_path):
    conversation_id = make_conversation(db)
    suffix = conversation_id[-12:]
    shown = run_cli("show", suffix, db=db)
    assert shown.returncode == 0, shown.stderr
    assert f"conversation {conversation_id}" in shown.stdout
    node = run_cli("show", suffix, "--json", db=db)
    first_answer = json.loads(node.stdout)["steps"][1]["id"]
    forked = run_cli("fork", conversation_id[-8:], "--at", first_answer[-8:], "--name", "b", db=db)
    assert forked.returncode == 0, forked.stderr
    exported = run_cli("export", suffix, "-o", str(tmp_path / "one.jsonl"), db=db)
    assert exported.returncode == 0, exported.stderr
    replayed = run_cli("replay", suffix, "--offline", db=db)
    assert replayed.returncode == 0, replayed.stderr
    deleted = run_cli("delete", suffix, db=db)  # stdin is not a terminal: no question
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == f"deleted conversation {conversation_id}"
    assert conversation_ids(db) == []


def _rename_conversation(path: Path, old: str, new: str) -> None:
    """Give an empty conversation another id, behind the store's back (SQLite keeps ids as 32 hex digits)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        for table, column in (("convstore_branches", "conversation_id"), ("convstore_conversations", "id")):
            rename = (uuid.UUID(new).hex, uuid.UUID(old).hex)
            conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", rename)


def test_an_ambiguous_ending_is_a_clear_error(db):
    path = Path(db.removeprefix("sqlite:///"))
    with convstore.Store(db) as store:
        first, second = store.create_conversation().id, store.create_conversation().id
    _rename_conversation(path, first, "01900000-0000-7000-8000-0000aaaabbbb")
    _rename_conversation(path, second, "01900000-0000-7000-8000-0001aaaabbbb")
    line = assert_one_line_error(run_cli("show", "aaaabbbb", db=db), 1)
    assert "'aaaabbbb' is the ending of 2 conversations: give more of the id" in line
    assert run_cli("show", "1aaaabbbb", db=db).returncode == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["show", "no-such-id"], "not a conversation id: 'no-such-id' (give the id, or its last 8 or more"),
        (["show", "abc"], "not a conversation id: 'abc'"),
        (["show", "0123456789ab"], "no conversation ends in '0123456789ab' (`convstore ls` lists them)"),
        (["delete", "x" * 40], "not a conversation id"),
        (["chat", "--offline", "--conversation", "nope"], "not a conversation id: 'nope'"),
        (["export", "nope"], "not a conversation id: 'nope'"),
    ],
)
def test_malformed_and_unknown_ids_are_plain_messages(db, args, says):
    line = assert_one_line_error(run_cli(*args, db=db), 1)
    assert says in line
    assert "withheld" not in line


def test_malformed_and_unknown_node_ids(db):
    conversation_id = make_conversation(db)
    line = assert_one_line_error(run_cli("fork", conversation_id, "--at", "zz", db=db), 1)
    assert "not a node id: 'zz'" in line
    line = assert_one_line_error(run_cli("fork", conversation_id, "--at", "0" * 12, db=db), 1)
    assert "no node ends in '000000000000'" in line


def test_match_id_rules():
    ids = ["01900000-0000-7000-8000-0000aaaabbbb", "01900000-0000-7000-8000-0001aaaabbbb"]
    assert match_id(ids[0], ids, what="node", where="x") == ids[0]
    assert match_id("1AAAABBBB ", ids, what="node", where="x") == ids[1]  # case and spaces do not matter
    wrong = (("aaaabbbb", "ending of 2 nodes"), ("aaabbbb", "not a node id"), ("zzzzzzzz", "not a"))
    for text, says in wrong:
        with pytest.raises(CliError, match=says):
            match_id(text, ids, what="node", where="x")


# -- delete asks on a terminal --------------------------------------------------------------------------


def _run_on_a_terminal(args: list[str], answer_text: str | None) -> tuple[int, str]:
    """Run the command with a pseudo-terminal as stdin and stdout; type ``answer_text`` when asked."""
    main, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in {"GEMINI_API_KEY", "CONVSTORE_DB"}}
    process = subprocess.Popen(
        [sys.executable, "-m", "convstore.cli", *args],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
        close_fds=True,
    )
    os.close(secondary)
    seen = b""
    answered = answer_text is None
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 60)
            if not ready:
                raise AssertionError(f"no output from the command; so far: {seen!r}")
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the command ended and closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(main, answer_text.encode() + b"\n")
                answered = True
    finally:
        os.close(main)
        code = process.wait(timeout=60)
    return code, seen.decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_delete_asks_on_a_terminal_and_yes_skips_the_question(db):
    conversation_id = make_conversation(db)
    code, text = _run_on_a_terminal(["delete", conversation_id[-8:], "--db", db], "n")
    assert f"delete conversation {conversation_id} (1 branch) for good? [y/N]" in text
    assert "nothing deleted" in text
    assert code == 1
    assert conversation_ids(db) == [conversation_id]
    code, text = _run_on_a_terminal(["delete", conversation_id[-8:], "--db", db], "y")
    assert code == 0, text
    assert f"deleted conversation {conversation_id}" in text
    other = make_conversation(db)
    code, text = _run_on_a_terminal(["delete", other, "--yes", "--db", db], None)
    assert code == 0, text
    assert "[y/N]" not in text
    assert conversation_ids(db) == []


# -- help ---------------------------------------------------------------------------------------------------


def _helps() -> list[list[str]]:
    actions = [["db", action] for action in ("upgrade", "current", "check")]
    return [[name] for name in COMMANDS] + actions + [[]]


@pytest.mark.parametrize("command", _helps(), ids=lambda c: " ".join(c) or "convstore")
def test_every_help_ends_with_examples_that_parse(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "\nexamples:\n" in result.stdout
    block = result.stdout.split("\nexamples:\n", 1)[1]
    examples = [line.strip() for line in block.splitlines() if line.strip()]
    assert examples
    parser = build_parser()
    for example in examples:
        pieces = [piece.strip() for part in example.split("&&") for piece in part.split("|")]
        runs = [shlex.split(piece) for piece in pieces if piece.startswith("convstore ")]
        assert runs, example
        for words in runs:
            args = parser.parse_args(words[1:])  # exits (status 2) on an example that does not parse
            assert callable(args.func), example
        if command:
            assert any(words[1 : 1 + len(command)] == command for words in runs), example
