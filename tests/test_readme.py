"""The README's Python examples run, in order, as a reader would paste them (offline, in a temp folder)."""

from __future__ import annotations

import re

import pytest
from conftest import REPO


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)


def test_the_readme_has_examples():
    assert len(python_blocks()) >= 4


def test_the_readme_examples_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("google.genai")
    pytest.importorskip("opentelemetry.sdk")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in python_blocks():
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 -- the README is ours
    out = capsys.readouterr().out
    assert "['user_input', 'thought', 'model_output', 'user_input']" in out
    assert "Take an umbrella." in out
    assert "user_input True\nTrue\n" in out  # the token budget example
    assert "1 True\n" in out  # the SDK's stateful turn chains
    # The google-genai SDK doing the HTTP, every example of the API guide.
    assert "Echo: Tell me a short joke about programming.\n['thought', 'model_output']\n" in out
    assert "Echo: Describe the image.\nEcho: Explain quantum entanglement in simple terms.\n" in out
    assert "6 [True, True]\n6 [False, False]\n" in out
    # OpenTelemetry: the README set the process's tracer provider; it records nothing after this test.
    assert "record gemini-3-flash-preview True True\nchat gemini-3-flash-preview True True\n" in out
    namespace["provider"].shutdown()  # type: ignore[attr-defined]
    assert "20 40\n" in out  # one engine, many users
    namespace["store"].close()  # type: ignore[attr-defined]
