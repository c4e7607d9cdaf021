"""The examples of docs/guides/failures.md run as they are, each in a fresh folder, and print what the page
says they print."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "failures.md"
_BLOCK = re.compile(r"```python\n(.*?)```(?:\n\n```text\n(.*?)```)?", re.DOTALL)


def examples() -> list[tuple[str, str | None]]:
    return [(code, printed) for code, printed in _BLOCK.findall(PAGE.read_text()) if code.strip()]


@pytest.mark.parametrize("index", range(len(examples())))
def test_an_example_of_the_failures_page_runs_and_prints_what_it_says(index, tmp_path, monkeypatch):
    code, printed = examples()[index]
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"{PAGE.name}[{index}]", "exec"), {"__name__": "__doc_example__"})  # noqa: S102
    assert out.getvalue() == (printed or "")
    assert all(not Path(name).is_absolute() for name in os.listdir(tmp_path))
