"""A missing extra is named with the ``pip install "convstore[...]"`` that brings it, wherever it is missed.

Each case runs in a subprocess that hides one optional module (``sys.modules[name] = None``, which makes
``import name`` fail as if it were not installed) and then does what a user does: open an ``AsyncStore``,
a PostgreSQL URL, a ``Keyring``, a ``SentencePieceCounter``, or the command line.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from convstore._extras import EXTRAS, MissingExtraError, missing_extra


def run_without(module: str, code: str) -> subprocess.CompletedProcess[str]:
    script = f"import sys\nsys.modules[{module!r}] = None\n" + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )


REPORT = """
try:
    {action}
except Exception as error:
    print(type(error).__name__, isinstance(error, ModuleNotFoundError), error.name, error.extra, sep="|")
    print(error)
else:
    print("no error")
"""

ASYNC_OPEN = """
import asyncio, convstore
async def main():
    async with convstore.AsyncStore({url!r}) as store:
        await store.conversations()
asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("module", "extra", "action"),
    [
        ("greenlet", "async", ASYNC_OPEN.format(url="sqlite:///{tmp}/a.db")),
        ("aiosqlite", "async", ASYNC_OPEN.format(url="sqlite:///{tmp}/a.db")),
        ("psycopg", "postgres", ASYNC_OPEN.format(url="postgresql+psycopg://u@127.0.0.1:1/x")),
        ("psycopg", "postgres", "import convstore; convstore.Store('postgresql+psycopg://u@127.0.0.1:1/x')"),
        ("cryptography", "crypto", "import convstore; convstore.Keyring({'k': bytes(32)}, active='k')"),
        ("sentencepiece", "sentencepiece", "import convstore; convstore.SentencePieceCounter('x.model')"),
    ],
    ids=["greenlet", "aiosqlite", "psycopg-async", "psycopg", "cryptography", "sentencepiece"],
)
def test_the_library_names_the_extra(tmp_path, module, extra, action):
    action = action.replace("{tmp}", str(tmp_path))
    code = REPORT.replace("{action}", textwrap.indent(textwrap.dedent(action), "    ").strip())
    result = run_without(module, code)
    assert result.returncode == 0, result.stderr
    header, message = result.stdout.strip().splitlines()
    assert header == f"MissingExtraError|True|{module}|{extra}"
    assert f'pip install "convstore[{extra}]"' in message
    assert module in message


def test_a_driver_convstore_does_not_use_points_to_psycopg():
    code = REPORT.replace(
        "{action}", "import convstore; convstore.Store('postgresql+psycopg2://u@127.0.0.1:1/x')"
    )
    result = run_without("psycopg2", code)
    header, message = result.stdout.strip().splitlines()
    assert header == "MissingExtraError|True|psycopg2|postgres"
    assert "postgresql+psycopg://" in message
    assert 'pip install "convstore[postgres]"' in message


def test_the_command_line_says_it_in_one_line(tmp_path):
    code = """
    from convstore.cli import main
    raise SystemExit(main(["--db", "postgresql+psycopg://u:hunter2@127.0.0.1:1/x", "ls"]))
    """
    result = run_without("psycopg", code)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("convstore: error: ")
    assert 'pip install "convstore[postgres]"' in line
    assert "hunter2" not in line


def test_without_rich_the_help_says_how_to_get_it_and_commands_print_plain_text(tmp_path):
    db = tmp_path / "plain.db"
    code = f"""
    from convstore.cli import main
    main(["--db", {str(db)!r}, "db", "upgrade"])
    main(["--db", {str(db)!r}, "ls"])
    main(["--help"])
    """
    result = run_without("rich", code)
    assert result.returncode == 0, result.stderr
    assert 'pip install "convstore[cli]"' in " ".join(result.stdout.split())
    assert "no conversations yet" in result.stdout


def test_every_extra_of_the_package_is_known():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    named = {extra for extra, _ in EXTRAS.values()}
    assert named == set(extras) - {"bench", "test", "docs"}


def test_other_import_errors_are_left_alone():
    assert missing_extra(ImportError("no", name="frobnicate")) is None
    assert missing_extra(ImportError("cannot import name x")) is None
    found = missing_extra(ModuleNotFoundError("no", name="rich.console"))
    assert isinstance(found, MissingExtraError)
    assert found.extra == "cli"
