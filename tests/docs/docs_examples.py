"""Collect and run the code blocks of Markdown pages, as a reader would paste them.

Every ```python block runs on its own, in a fresh temporary folder, in a fresh interpreter (a subprocess, so
no state leaks between pages: OpenTelemetry's global tracer provider, say), offline: the examples talk to
convstore's emulator, and the environment holds no API key. A block whose first line is ``# continues``
runs after the block above it, in the same process (the blocks of one group are joined into one script).
When a ```text block follows a group's block directly, the group's stdout must equal those text blocks,
joined.

```bash blocks run the same way through ``sh`` (each line a command, ``set -e``), with the data folder and
``$CONVSTORE_DB`` pointing into the temporary folder, unless an HTML comment ``<!-- no-run: reason -->``
stands right before the block: those are collected with their reason, and the harness reports them.

Other tests import this module (``from docs_examples import collect, run``) to run their own pages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONTINUES = "# continues"
NO_RUN = re.compile(r"<!--\s*no-run:\s*(?P<reason>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*$")
# pymdownx.snippets: a line `--8<-- "path"` inside a block is the file at that path (from the repository's
# root), as the site shows it.
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^"]+)"$', re.M)


@dataclass
class Block:
    """One fenced code block: its language, text, first line number, and a no-run reason if marked."""

    lang: str
    code: str
    line: int
    no_run: str | None = None
    output: str | None = None  # the ```text block right after it, if any


@dataclass
class Example:
    """What runs as one process: a block and the blocks that continue it, and the stdout they promise."""

    page: Path
    lang: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def line(self) -> int:
        return self.blocks[0].line

    @property
    def code(self) -> str:
        return "\n".join(block.code for block in self.blocks)

    @property
    def expected(self) -> str | None:
        outputs = [block.output for block in self.blocks if block.output is not None]
        return "".join(outputs) if outputs else None

    @property
    def no_run(self) -> str | None:
        return self.blocks[0].no_run

    @property
    def name(self) -> str:
        where = self.page.relative_to(REPO) if self.page.is_relative_to(REPO) else self.page
        return f"{where}:{self.line}"


def blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown text, in order (indented fences too, e.g. inside list items)."""
    lines = text.splitlines()
    found: list[Block] = []
    index = 0
    previous_end = -1
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, lang = len(match.group("indent")), match.group("lang")
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = "\n".join(line[indent:] for line in lines[index + 1 : end]) + "\n"
        body = SNIPPET.sub(
            lambda found: (REPO / found.group("path")).read_text(encoding="utf-8").rstrip("\n"), body
        )
        between = [line for line in lines[previous_end + 1 : index] if line.strip()]
        marker = NO_RUN.match(between[-1].strip()) if between else None
        block = Block(lang, body, index + 1, marker.group("reason") if marker else None)
        if lang == "text" and found and not between and found[-1].lang in {"python", "bash"}:
            found[-1].output = body
        else:
            found.append(block)
        previous_end = end
        index = end + 1
    return found


def collect(page: Path) -> list[Example]:
    """The runnable examples of a page: its python and bash blocks, continued blocks joined."""
    examples: list[Example] = []
    for block in blocks(page.read_text(encoding="utf-8")):
        if block.lang not in {"python", "bash"}:
            continue
        if block.lang == "python" and block.code.startswith(CONTINUES):
            if not examples or examples[-1].lang != "python":
                raise ValueError(f"{page}:{block.line}: a block that continues nothing")
            examples[-1].blocks.append(block)
        else:
            examples.append(Example(page, block.lang, [block]))
    return examples


def pages() -> list[Path]:
    """The pages whose examples run: README.md and every page of the docs site."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def environment(folder: Path) -> dict[str, str]:
    """The environment an example runs in: offline, its data inside ``folder``, no user's settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GEMINI_", "GOOGLE_", "CONVSTORE_", "OTEL_"))
    }
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(folder),
        XDG_DATA_HOME=str(folder / "data"),
        CONVSTORE_DB=f"sqlite:///{folder / 'convstore.db'}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        COLUMNS="100",
        NO_COLOR="1",
    )
    return env


def run(example: Example, folder: Path, *, timeout: float = 180) -> Result:
    """Run an example in ``folder`` (which should be empty) and return what it printed."""
    if example.lang == "python":
        command = [sys.executable, "-c", example.code]
    else:
        command = ["sh", "-ec", example.code]
    done = subprocess.run(
        command,
        cwd=folder,
        env=environment(folder),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def check(example: Example, folder: Path) -> Result:
    """Run an example and assert it exits 0 and prints what its page says it prints."""
    result = run(example, folder)
    assert result.returncode == 0, f"{example.name} failed:\n{result.stderr[-3000:]}"
    if example.expected is not None:
        assert result.stdout == example.expected, (
            f"{example.name} printed\n{result.stdout}\nbut the page says\n{example.expected}"
        )
    return result
