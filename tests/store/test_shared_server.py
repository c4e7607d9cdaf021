"""A PostgreSQL server shared with other work may run out of connections: the tests' fixtures wait for one,
and a test that still meets "too many clients" is reported as skipped, saying why, never as a failure of
convstore (conftest.py)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from conftest import _waiting_for_connections, out_of_connections


def refusal() -> sa.exc.OperationalError:
    driver = Exception("connection failed: FATAL:  sorry, too many clients already")
    return sa.exc.OperationalError("SELECT 1", {}, driver)


def test_the_refusal_is_recognised_through_wrapping_errors():
    outer = RuntimeError("while opening the store")
    outer.__cause__ = refusal()
    assert out_of_connections(outer)
    assert not out_of_connections(sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused")))
    assert not out_of_connections(None)


def test_the_fixtures_wait_for_a_connection(monkeypatch):
    monkeypatch.setattr("conftest.time.sleep", lambda _: None)
    attempts = []

    def connect() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise refusal()
        return "connected"

    assert _waiting_for_connections(connect) == "connected"
    assert len(attempts) == 3
    with pytest.raises(ValueError, match="other"):
        _waiting_for_connections(lambda: (_ for _ in ()).throw(ValueError("other")))


def test_a_test_that_meets_the_refusal_is_skipped_saying_why(pytester: pytest.Pytester):
    # The hook of conftest.py, in an inner session of its own.
    from pathlib import Path  # noqa: PLC0415

    import conftest  # noqa: PLC0415

    source = Path(conftest.__file__).read_text(encoding="utf-8")
    hook = source[source.index("OUT_OF_CONNECTIONS = ") : source.index("def _admin_engine")]
    pytester.makeconftest(
        "import os, random, time\nfrom collections.abc import Callable, Iterator\n"
        "from typing import TypeVar\nimport pytest\nT = TypeVar('T')\n" + hook
    )
    pytester.makepyfile(
        test_shared_server_refusal="""  # a name no module of tests/ has (pytester imports it)
def test_busy():
    raise RuntimeError("FATAL:  sorry, too many clients already")

def test_broken():
    raise RuntimeError("something else")
"""
    )
    result = pytester.runpytest("-rs", "-p", "no:xdist")
    result.assert_outcomes(skipped=1, failed=1)
    result.stdout.fnmatch_lines(["*ran out of connections (too many clients)*"])
