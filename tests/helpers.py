"""Helpers the test modules share, written once: the command line in a subprocess and the test keys.

The step builders (``user()``, ``model()``, ``steps_of()``) and the database fixtures are in ``conftest.py``.
Imported as ``helpers`` (``from helpers import run_cli``), as the tests import ``conftest``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import convstore

# The test keys: two distinct 32-byte keys and a wrong one.
K1, K2, WRONG = bytes(range(32)), bytes(range(32, 64)), bytes(32)

# What a command run by a test must not take from the developer's environment.
CLI_ENV_CLEARED = frozenset({"GEMINI_API_KEY", "CONVSTORE_DB", "CONVSTORE_KEYRING"})


def ring(*ids: str, active: str | None = None) -> convstore.Keyring:
    """A keyring of the test keys named by ``ids`` (``k1``: K1, ``k2``: K2; ``k1`` alone by default),
    the last one active unless ``active`` names another."""
    ids = ids or ("k1",)
    keys = {"k1": K1, "k2": K2}
    return convstore.Keyring({key_id: keys[key_id] for key_id in ids}, active=active or ids[-1])


def run_cli(
    *args: str,
    db: str | None = None,
    stdin: str | bytes | None = None,
    env: dict[str, str] | None = None,
    text: bool = True,
    stderr: Any = None,
) -> subprocess.CompletedProcess[Any]:
    """``python -m convstore.cli [--db DB] ARGS``, without an API key, a store or a keyring from the
    environment (``env`` adds variables). Text by default, bytes with ``text=False``; stdout and stderr
    are captured unless ``stderr`` says where it goes."""
    clean = {k: v for k, v in os.environ.items() if k not in CLI_ENV_CLEARED}
    clean.update(env or {})
    command = [sys.executable, "-m", "convstore.cli", *(["--db", db] if db else []), *args]
    return subprocess.run(
        command,
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr,
        text=text,
        env=clean,
        timeout=120,
        check=False,
    )
