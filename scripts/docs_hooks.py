"""MkDocs hooks: pages and files the site takes from the code and the benchmarks at build time.

- ``reference/cli.md`` is rendered from ``convstore.cli.build_parser()``: every command's ``--help``, as the
  command prints it, so the reference cannot drift from the parser.
- ``benchmarks/report/*.png`` (written by ``benchmarks/run_all.py``) are copied to the site's root, beside
  the performance page, which includes ``benchmarks/report/peers.md`` (pymdownx.snippets) whose image
  links name them so.
- ``CHANGELOG.md`` and ``LICENSE`` at the repository's root are included by snippets too.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mkdocs.structure.files import Files

REPO = Path(__file__).resolve().parents[1]
CLI_PAGE = "reference/cli.md"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (name, parser) under ``parser``, depth first, in the order ``--help`` lists them."""
    found: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((name, sub))
                found.extend((f"{name} {inner}", deeper) for inner, deeper in _subcommands(sub))
    return found


def cli_reference() -> str:
    """The command-line reference page: the help of ``convstore`` and of every subcommand."""
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; the page wraps at 100
    from convstore.cli import build_parser  # noqa: PLC0415 -- imported at build time, not at hook load

    parser = build_parser()
    parser.prog = "convstore"
    home = str(Path.home())
    parts = [
        "# Command-line reference",
        "",
        "Generated when the site is built, from the parser of the `convstore` command: each section is what "
        "`convstore COMMAND --help` prints. The [command-line guide](../guides/cli.md) shows them at work.",
        "",
        "## convstore",
        "",
        "```text",
        parser.format_help().replace(home, "~").rstrip(),
        "```",
    ]
    for name, sub in _subcommands(parser):
        parts += [
            "",
            f"## convstore {name}",
            "",
            "```text",
            sub.format_help().replace(home, "~").rstrip(),
            "```",
        ]
    return "\n".join(parts) + "\n"


def on_files(files: Files, config: Any) -> Files:
    from mkdocs.structure.files import File  # noqa: PLC0415 -- cli_reference() is tested without mkdocs

    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    for plot in sorted((REPO / "benchmarks" / "report").glob("*.png")):
        files.append(File.generated(config, plot.name, abs_src_path=str(plot)))
    return files
