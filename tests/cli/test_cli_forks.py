"""``run_cli`` runs a command in a fork of a process that imported the command line (tests/helpers.py): it
prints, reads and exits exactly as a fresh ``python -m convstore.cli`` does."""

from __future__ import annotations

import pytest
from conftest import user
from helpers import run_cli

import convstore


@pytest.fixture
def db(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with convstore.Store(url) as store:
        conv = store.create_conversation(model="m")
        conv.append([user("hello"), {"type": "model_output", "content": [{"type": "text", "text": "hi"}]}])
    return url


def both(*args: str, **options) -> tuple:
    forked, fresh = run_cli(*args, **options), run_cli(*args, fresh=True, **options)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    return forked.returncode, forked.stdout, forked.stderr


def test_output_errors_and_exit_status_are_a_fresh_interpreters(db, tmp_path, monkeypatch):
    assert both("ls", "--json", db=db)[0] == 0
    # The help names the default store, read from the environment as the command line loads: the server
    # started (above, or in an earlier test) under another XDG_DATA_HOME.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "elsewhere"))
    assert str(tmp_path / "elsewhere") in "".join(both("--help")[1].split())
    code, _, err = both("show", "nope", db=db)
    assert code != 0
    assert err.startswith("convstore: error:")
    assert both("no-such-command")[0] == 2
    assert both("ls", db=db, text=False)[1].endswith(b"\n")


def test_stdin_the_environment_and_the_working_folder_are_the_callers(db, tmp_path, monkeypatch):
    exported = run_cli("export", db=db).stdout
    for n, given in enumerate([exported, exported.encode()]):
        target = f"sqlite:///{tmp_path / f'target{n}.db'}"
        imported = run_cli("import", "-", db=target, stdin=given, text=isinstance(given, str))
        assert imported.returncode == 0, imported.stderr
        listed = run_cli("ls", "--json", env={"CONVSTORE_DB": target})
        assert (listed.returncode, listed.stdout) == (0, run_cli("ls", "--json", db=db).stdout)
    monkeypatch.chdir(tmp_path)
    relative = run_cli("ls", "--json", db="sqlite:///cli.db")
    assert (relative.returncode, relative.stdout) == (0, run_cli("ls", "--json", db=db).stdout)
