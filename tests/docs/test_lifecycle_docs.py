"""The python examples of docs/guides/lifecycle.md run offline as they are and print what the page says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "lifecycle.md"
_BLOCK = re.compile(r"```python\n(.*?)```(?:\s*```text\n(.*?)```)?", re.S)


@pytest.mark.parametrize("number", range(len(_BLOCK.findall(PAGE.read_text(encoding="utf-8")))))
def test_each_python_block_runs_and_prints_what_follows_it(number, tmp_path):
    code, printed = _BLOCK.findall(PAGE.read_text(encoding="utf-8"))[number]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == printed
