"""Fixtures for the tests of apps built on convstore: a pytest plugin, loaded by its ``pytest11`` entry point
(``convstore``) wherever convstore is installed with pytest, so an app's tests just name the fixtures:

```python
from convstore.testing import text_reply

def test_my_route(convstore_store, convstore_emulator, convstore_client):
    convstore_emulator.script(text_reply("Hello!"))
    conv = convstore_store.create_conversation(model="gemini-3-flash-preview")
    assert conv.send("Hi", client=convstore_client).text == "Hello!"
```

- ``convstore_db_url``: the URL of an empty database; a SQLite file in the test's ``tmp_path`` unless
  ``--convstore-db-url`` (or ``$CONVSTORE_PYTEST_DB_URL``) names another. Override the fixture to use
  your own (a PostgreSQL schema of your test setup, say).
- ``convstore_store``: a ``convstore.Store`` on that database, closed after the test.
- ``convstore_emulator``: a fresh ``Emulator``; ``script()`` its replies, read ``requests`` afterwards.
- ``convstore_client``: an ``InteractionsClient`` bound to the emulator, which never sleeps between retries.

Nothing here reaches the network. The fixtures are function-scoped: every test starts empty. The plugin
sits above ``convstore.testing`` (whose emulator imports nothing else of convstore) and the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import convstore
from convstore.testing import Emulator

DB_URL_ENV = "CONVSTORE_PYTEST_DB_URL"

__all__ = ["convstore_client", "convstore_db_url", "convstore_emulator", "convstore_store"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--convstore-db-url`` (the database the ``convstore_store`` fixture opens)."""
    parser.getgroup("convstore").addoption(
        "--convstore-db-url",
        default=None,
        help=f"the convstore_store fixture's database (default: a SQLite file per test; or ${DB_URL_ENV})",
    )


@pytest.fixture
def convstore_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database the test's store opens: a fresh SQLite file unless the option or variable names one."""
    named: str | None = request.config.getoption("--convstore-db-url") or os.environ.get(DB_URL_ENV)
    return named or f"sqlite:///{tmp_path / 'convstore.db'}"


@pytest.fixture
def convstore_store(convstore_db_url: str) -> Iterator[convstore.Store]:
    """A ``convstore.Store`` on ``convstore_db_url``, closed when the test ends."""
    with convstore.Store(convstore_db_url) as store:
        yield store


@pytest.fixture
def convstore_emulator() -> Emulator:
    """An emulator of the Interactions API: echoes, or the replies you ``script()``."""
    return Emulator()


@pytest.fixture
def convstore_client(convstore_emulator: Emulator) -> Iterator[convstore.InteractionsClient]:
    """An ``InteractionsClient`` that talks to ``convstore_emulator`` and retries without waiting."""
    with httpx.Client(transport=convstore_emulator.transport()) as http:
        yield convstore.InteractionsClient("test-key", http_client=http, sleep=lambda _: None)
