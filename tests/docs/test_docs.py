"""Every code block of the README and of every docs page runs, offline, in a fresh folder, and prints what
the page says it prints (the ```text block right after it). ```bash blocks marked
``<!-- no-run: reason -->`` are not run; the last test lists them with their reasons (``pytest -rA`` shows
it), so what is not run is a decision written beside the block, never an oversight."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from docs_examples import REPO, Example, blocks, check, collect, pages

EXAMPLES = [example for page in pages() for example in collect(page)]
RUNNABLE = [example for example in EXAMPLES if example.no_run is None]
NOT_RUN = [example for example in EXAMPLES if example.no_run is not None]


def needs(example: Example) -> None:
    """Skip, saying which extra is missing, when an example imports an optional package not installed."""
    for word, module in (
        ("genai", "google.genai"),
        ("opentelemetry", "opentelemetry.sdk"),
        ("fastapi", "fastapi"),
    ):
        if (example.lang == "python" and f"import {word}" in example.code) or f"from {word}" in example.code:
            pytest.importorskip(module, reason=f"the example needs {module}")
    if example.lang == "bash" and shutil.which("sh") is None:
        pytest.skip("no sh")


@pytest.mark.parametrize("example", RUNNABLE, ids=lambda example: example.name)
def test_example_runs_and_prints_what_the_page_says(example: Example, tmp_path: Path):
    needs(example)
    check(example, tmp_path)


def test_every_page_has_its_examples_collected():
    # The harness sees the pages the site is built from, and each guide that shows code runs it.
    names = {example.page.relative_to(REPO).as_posix() for example in EXAMPLES}
    assert "README.md" in names
    assert {"docs/index.md", "docs/guides/api.md", "docs/guides/budgets.md"} <= names
    assert len(RUNNABLE) >= 15


def test_bash_blocks_not_run_say_why():
    # A bash block is run unless a `<!-- no-run: reason -->` comment stands right before it.
    for example in NOT_RUN:
        assert example.lang == "bash", f"{example.name}: only shell blocks may be skipped"
        assert len(example.no_run or "") > 10, f"{example.name}: say why it does not run"
    report = "\n".join(f"{example.name}: {example.no_run}" for example in NOT_RUN)
    print(f"{len(NOT_RUN)} shell blocks not run:\n{report}")


def test_the_harness_reads_outputs_markers_and_continuations(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n```python\nx = 2\nprint(x)\n```\n\n```text\n2\n```\n\n"
        "```python\n# continues\nprint(x + 1)\n```\n\n```text\n3\n```\n\n"
        "<!-- no-run: it would start a server -->\n```bash\nconvstore serve\n```\n\n"
        "- a list item:\n\n  ```bash\n  echo indented\n  ```\n\n  ```text\n  indented\n  ```\n",
        encoding="utf-8",
    )
    examples = collect(page)
    assert [example.lang for example in examples] == ["python", "bash", "bash"]
    first, marked, indented = examples
    assert first.code == "x = 2\nprint(x)\n\n# continues\nprint(x + 1)\n"
    assert first.expected == "2\n3\n"
    assert marked.no_run == "it would start a server"
    assert indented.code == "echo indented\n"
    assert indented.expected == "indented\n"
    folder = tmp_path / "run"
    folder.mkdir()
    check(first, folder)
    check(indented, folder)
    first.blocks[0].output = "4\n"
    with pytest.raises(AssertionError, match="but the page says"):
        check(first, folder)
    assert [block.lang for block in blocks("```\nplain\n```\n```python\npass\n```\n")] == ["", "python"]


def test_the_cli_reference_has_every_command_as_its_parser_prints_it():
    import runpy  # noqa: PLC0415

    from convstore.cli import build_parser  # noqa: PLC0415

    hooks = runpy.run_path(str(REPO / "scripts" / "docs_hooks.py"))
    page = hooks["cli_reference"]()
    commands = [name for name, _ in hooks["_subcommands"](build_parser())]
    assert {"demo", "chat", "ls", "show", "purge", "export", "import", "serve", "db upgrade"} <= set(commands)
    for name in commands:
        assert f"\n## convstore {name}\n" in page
        assert f"usage: convstore {name}" in page
    assert str(Path.home()) not in page  # the default store's path is shown as ~
