"""Progress on stderr for long exports, imports and replays.

A rich progress bar when rich is installed; a plain counter (``importing 120/4000``) when it is not; nothing
at all when stderr is not a terminal, so logs and pipes stay clean.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, TextIO

from typing_extensions import Self

__all__ = ["Progress"]

try:
    import rich.console
    import rich.progress

    HAVE_RICH = True
except ImportError:  # pragma: no cover -- the cli extra is part of the test extra
    HAVE_RICH = False


class Progress:
    """A context manager: ``advance(n)`` as work is done; the bar goes away at the end.

    Args:
        label: What is being done ("exporting").
        total: How much there is (None: a counter without an end).
        unit: What is counted, for the plain counter.
        stream: Where to draw (stderr).
    """

    def __init__(
        self, label: str, total: int | None, *, unit: str = "", stream: TextIO | None = None
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.enabled = self.stream.isatty()
        self._rich: Any = None
        self._task: Any = None

    def __enter__(self) -> Self:
        if self.enabled and HAVE_RICH:
            console = rich.console.Console(file=self.stream)
            self._rich = rich.progress.Progress(
                rich.progress.TextColumn("{task.description}"),
                rich.progress.BarColumn(),
                rich.progress.MofNCompleteColumn(),
                rich.progress.TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self._rich.__enter__()
            self._task = self._rich.add_task(self.label, total=self.total)
        self._draw()
        return self

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        if self._rich is not None:
            self._rich.update(self._task, advance=amount)
        else:
            self._draw()

    def _draw(self) -> None:
        if not self.enabled or self._rich is not None:
            return
        of = f"/{self.total}" if self.total is not None else ""
        unit = f" {self.unit}" if self.unit else ""
        self.stream.write(f"\r{self.label} {self.done}{of}{unit}")
        self.stream.flush()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._rich is not None:
            self._rich.__exit__(exc_type, exc, tb)
        elif self.enabled:
            self.stream.write("\n")
            self.stream.flush()
