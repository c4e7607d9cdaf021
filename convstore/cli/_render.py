"""How the command line shows things: one-line previews of steps, tables, headings, tree labels.

With ``rich`` installed (``pip install "convstore[cli]"``) and a terminal on stdout, headings and tables
are drawn by rich; otherwise, and always when stdout is a pipe or a file, output is plain text, so that what
scripts and tests read never holds colour codes or wrapped lines. Content is shown here (this is the user's
own terminal), but only ever as a short single line, except where a command is asked for the JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

import convstore
from convstore._ids import shortest_endings
from convstore.conversation._frontend import preview

__all__ = ["Output", "branch_usage", "format_time", "preview", "tree_labeler"]

try:
    import rich.box
    import rich.console
    import rich.table

    HAVE_RICH = True
except ImportError:  # pragma: no cover -- the cli extra is part of the test extra
    HAVE_RICH = False


def format_time(value: datetime) -> str:
    """A UTC time to the second, as the store keeps it."""
    return value.strftime("%Y-%m-%d %H:%M:%S")


def tree_labeler(tree: convstore.Tree, width: int = 56) -> Callable[[convstore.Node], str]:
    """The label of a tree line: the shortest unique ending of the node's id (``fork --at`` and
    ``replay`` take it), its step type and a preview."""
    endings = shortest_endings(node.id for node in tree.nodes)
    size = max((len(ending) for ending in endings.values()), default=0)

    def label(node: convstore.Node) -> str:
        return f"{endings[node.id]:<{size}}  {node.type:<15} {preview(node.data, width)}".rstrip()

    return label


def branch_usage(conv: convstore.Conversation) -> list[dict[str, Any]]:
    """Per branch: steps, the head's running token total (estimated), and the API's reported usage."""
    rows = []
    for branch in conv.branches():
        on = conv.checkout(branch.name)
        nodes = on.nodes()
        exchanges = on.exchanges()
        rows.append(
            {
                "branch": branch.name,
                "head": branch.head_id,
                "steps": len(nodes),
                "node_tokens": nodes[-1].total_tokens if nodes else 0,
                "exchanges": len(exchanges),
                "input_tokens": sum(x.input_tokens or 0 for x in exchanges),
                "output_tokens": sum(x.output_tokens or 0 for x in exchanges),
            }
        )
    return rows


USAGE_COLUMNS = ("branch", "steps", "node tokens", "API input", "API output")


def usage_table_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [r["branch"], str(r["steps"]), str(r["node_tokens"]), str(r["input_tokens"]), str(r["output_tokens"])]
        for r in rows
    ]


class Output:
    """Writes to stdout: rich when it is installed and stdout is a terminal, plain text otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.fancy = HAVE_RICH and self.stream.isatty()
        self._console = rich.console.Console(file=self.stream, highlight=False) if self.fancy else None

    def line(self, text: str = "", style: str | None = None) -> None:
        if self._console is not None and style is not None:
            self._console.print(text, style=style, markup=False, soft_wrap=True)
        else:
            print(text, file=self.stream, flush=True)

    def heading(self, text: str) -> None:
        self.line()
        self.line(text, style="bold cyan")

    def note(self, text: str) -> None:
        self.line(text, style="dim")

    def write(self, text: str) -> None:
        """Text without a newline, at once (streamed replies)."""
        self.stream.write(text)
        self.stream.flush()

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> None:
        if self._console is not None:
            table = rich.table.Table(*columns, box=rich.box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
            for row in rows:
                table.add_row(*row)
            self._console.print(table)
            return
        widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
        for values in (columns, *rows):
            cells = [value.ljust(width) for value, width in zip(values, widths, strict=True)]
            self.line((indent + "  ".join(cells)).rstrip())
