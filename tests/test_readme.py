"""The README's Python examples run as written: each block on its own, in a fresh folder and namespace, as a
reader would paste it, except a block whose first line says it ``# continues`` the example above, which runs
after that one, in its namespace. Offline: the examples talk to convstore's emulator."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

import convstore

CONTINUES = "# continues"

# A snippet of a block -> what its group of blocks prints.
EXPECTED = {
    'for step in body["input"]]': "['user_input', 'thought', 'model_output', 'user_input']",
    "print(answer.text)": "Take an umbrella.\ncompleted 9\n",
    "TokenBudget(max_input_tokens=2_000": "user_input True\nTrue\n",
    "async def main()": "6\n",
    "rotate_keys()": "True Mail me at [email]\n1\n1\nNone 0\n",
    'conv.request("Which number?", store=True)': "1 True\n",  # the SDK's stateful turn chains
    # The google-genai SDK doing the HTTP, every example of the API guide.
    "convstore.GenAIClient(sdk)": (
        "Echo: Tell me a short joke about programming.\n['thought', 'model_output']\n"
    ),
    "Explain quantum entanglement": "Echo: Describe the image.\nEcho: Explain quantum entanglement in simple",
    "Stateless multi-turn": "6 [True, True]\n6 [False, False]\n",
    "InMemorySpanExporter()": (
        "record gemini-3-flash-preview True True\nchat gemini-3-flash-preview True True\n"
    ),
    "app_store.for_owner(user_id)": "20 40\n",  # one engine, many users
}


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)


def groups() -> list[list[str]]:
    """The blocks, each with the blocks that continue it."""
    found: list[list[str]] = []
    for block in python_blocks():
        if block.startswith(CONTINUES):
            assert found, "the README's first example cannot continue another"
            found[-1].append(block)
        else:
            found.append([block])
    return found


def test_the_readme_has_examples_and_each_output_is_checked():
    assert len(python_blocks()) >= 4
    everything = "".join(python_blocks())
    assert all(snippet in everything for snippet in EXPECTED)


@pytest.mark.parametrize("group", groups(), ids=lambda group: group[0].splitlines()[0][:40])
def test_each_readme_example_runs_on_its_own(group, tmp_path, monkeypatch, capsys):
    pytest.importorskip("google.genai")
    pytest.importorskip("opentelemetry.sdk")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    try:
        for block in group:
            exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 -- the README is ours
    finally:
        for value in namespace.values():
            if isinstance(value, convstore.Store):
                value.close()
            elif type(value).__name__ == "TracerProvider":  # the OpenTelemetry example's
                value.shutdown()
    out = capsys.readouterr().out
    text = "".join(group)
    for snippet, printed in EXPECTED.items():
        if snippet in text:
            assert printed in out


def test_the_quickstart_the_readme_names_runs(tmp_path):
    # `python examples/quickstart.py`, from a folder of its own (it may leave a database behind).
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    script = REPO / "examples" / "quickstart.py"
    assert f"python {script.relative_to(REPO)}" in (REPO / "README.md").read_text(encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "<- main" in result.stdout
