"""``import convstore``, and opening a store whose schema is at head, import no Alembic (about 0.3 s of
imports a process, most of what ``import convstore`` cost; every CLI command paid it): the revision chain
is read from the migration files, and Alembic is imported to change a schema only. Nor do they, or the
commands that only read and write the store, import httpx and the emulator (about a fifth of what was
left): the HTTP clients are imported when first used."""

from __future__ import annotations

import subprocess
import sys

from alembic.config import Config
from alembic.script import ScriptDirectory

import convstore
from convstore.store import _migrate


def run(code: str, cwd) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def test_the_chain_read_from_the_files_is_alembics():
    config = Config()
    config.set_main_option("script_location", str(_migrate.migrations_dir()))
    scripts = ScriptDirectory.from_config(config)
    walked = tuple(revision.revision for revision in reversed(list(scripts.walk_revisions())))
    assert _migrate._chain() == list(walked)
    assert _migrate._scripts() == (scripts.get_heads()[0], frozenset(walked), walked)


def test_a_graph_that_is_not_one_line_is_left_to_alembic(tmp_path, monkeypatch):
    versions = tmp_path / "versions"
    versions.mkdir()
    for name, text in {
        "a.py": 'revision = "a"\ndown_revision = None\n',
        "b.py": 'revision: str = "b"\ndown_revision: str | None = "a"\n',
    }.items():
        (versions / name).write_text(text, encoding="utf-8")
    monkeypatch.setattr(_migrate, "migrations_dir", lambda: tmp_path)
    assert _migrate._chain() == ["a", "b"]  # annotated assignments, as newer Alembic templates write them
    (versions / "c.py").write_text('revision = "c"\ndown_revision = "a"\n', encoding="utf-8")
    assert _migrate._chain() is None  # two heads
    (versions / "c.py").write_text('revision = "c"\ndown_revision = ("a", "b")\n', encoding="utf-8")
    assert _migrate._chain() is None  # a merge


def test_import_and_open_at_head_import_no_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    convstore.Store(url).close()  # built: Alembic ran here, in this process
    code = (
        "import sys, convstore\n"
        "print('alembic' in sys.modules)\n"
        f"store = convstore.Store({url!r})\n"
        "store.create_conversation(model='m')\n"
        "print('alembic' in sys.modules)\n"
        "store.close()\n"
    )
    assert run(code, tmp_path) == "False\nFalse"


def test_a_new_database_is_still_built_by_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    code = f"import sys, convstore\nconvstore.Store({url!r}).close()\nprint('alembic' in sys.modules)\n"
    assert run(code, tmp_path) == "True"
    with convstore.Store(url) as store:
        assert store.schema_revision() == _migrate.head_revision()


def test_the_store_and_its_commands_import_no_http_client(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with convstore.Store(url) as store:
        conv = store.create_conversation(model="m")
        conv.append(
            [
                {"type": "user_input", "content": [{"type": "text", "text": "pelican"}]},
                {"type": "model_output", "content": [{"type": "text", "text": "a bird"}]},
            ]
        )
    code = (
        "import sys, convstore\n"
        "from convstore.cli import main\n"
        f"with convstore.Store({url!r}) as store:\n"
        f"    store.conversation({conv.id!r}).history()\n"
        "    assert store.search('pelican').hits\n"
        f"for command in (['ls'], ['search', 'pelican'], ['show', {conv.id!r}]):\n"
        f"    assert main(['--db', {url!r}, *command]) == 0\n"
        "heavy = ('httpx', 'convstore.testing', 'convstore.client._http')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    assert run(code, tmp_path).splitlines()[-1] == "[]"


def test_the_clients_are_imported_when_first_used(tmp_path):
    code = (
        "import sys, convstore\n"
        "print('httpx' in sys.modules)\n"
        "client = convstore.InteractionsClient\n"
        "from convstore.client import DEFAULT_BASE_URL, AsyncGenAIClient\n"
        "print('httpx' in sys.modules, client.__module__, AsyncGenAIClient is convstore.AsyncGenAIClient)\n"
        "listed = {'InteractionsClient', 'AsyncStream'} <= set(dir(convstore))\n"
        "print(listed, DEFAULT_BASE_URL.startswith('https'))\n"
    )
    assert run(code, tmp_path).splitlines() == ["False", "True convstore True", "True True"]
