"""A conversation's tree as a picture: an SVG graph drawn on the server, like ``git log --graph`` drawn.

One node a chain of steps (``_views.segments`` folds every run of steps without a fork or a branch head into
one row, so a 10,000-step conversation is a few rows a branch), one row a node, top to bottom in the order of
the text rows. Lanes are given as git gives them: a chain that simply goes on stays in its lane; at a fork the
parent's lane runs down as a spine as far as its last child, and each child starts in the nearest lane free
at its row, joined to the spine by an elbow. A lane is free again once its chain and spine end, so a fork of
1,000 replayed branches is two lanes wide, not 1,000.

No script and no style attribute (the page's Content-Security-Policy allows neither): shapes carry classes
that the stylesheet colours. Every text from the store is escaped here (``markupsafe.escape``); the result is
``Markup`` for the template. The picture is ``aria-hidden``: the text rows beside it say the same to a screen
reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
from markupsafe import Markup, escape

from convstore.web._views import SegmentRow

__all__ = ["Graph", "layout", "render_svg"]

ROW = 26  # pixels a row
LANE = 18  # pixels a lane
PAD = 12
RADIUS = 5
LABEL_GAP = 14
PREVIEW = 64  # characters of a preview in the picture (the text rows show more)


@attrs.frozen(kw_only=True)
class Graph:
    """Where each row's node goes: its lane, its parent's row (None for a root), and how far down the
    spine below it runs (its last child's row), for the picture and for tests of its shape."""

    lanes: tuple[int, ...]
    parents: tuple[int | None, ...]
    spines: tuple[int, ...]

    @property
    def width(self) -> int:
        """Lanes used."""
        return max(self.lanes, default=-1) + 1


def layout(rows: Sequence[SegmentRow]) -> Graph:
    """Lanes for the rows (as ``segments`` orders them: each row after its parent, depth first)."""
    row_of_last = {row.last.id: i for i, row in enumerate(rows)}
    parents: list[int | None] = [
        row_of_last.get(row.first.parent_id) if row.first.parent_id is not None else None for row in rows
    ]
    children: list[list[int]] = [[] for _ in rows]
    for i, parent in enumerate(parents):
        if parent is not None:
            children[parent].append(i)
    spines = [max(kids, default=i) for i, kids in enumerate(children)]
    lanes: list[int] = []
    busy: list[int] = []  # the last row each lane is taken to
    for i, parent in enumerate(parents):
        if parent is not None and len(children[parent]) == 1:
            lane = lanes[parent]  # the chain goes on
        else:
            start = lanes[parent] + 1 if parent is not None else 0
            free = [n for n in range(start, len(busy)) if busy[n] < i] or [
                n for n in range(len(busy)) if busy[n] < i
            ]
            lane = free[0] if free else len(busy)
        if lane == len(busy):
            busy.append(-1)
        busy[lane] = max(busy[lane], spines[i])
        lanes.append(lane)
    return Graph(lanes=tuple(lanes), parents=tuple(parents), spines=tuple(spines))


def _x(lane: int) -> int:
    return PAD + lane * LANE


def _y(row: int) -> int:
    return PAD + row * ROW


def _cut(text: str, width: int = PREVIEW) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_svg(
    rows: Sequence[SegmentRow], links: Mapping[str, str], fallback: str, *, id_chars: int = 12
) -> Markup:
    """The picture of ``rows``: nodes, fork spines and elbows, named heads, each node a link.

    Args:
        rows: From ``_views.segments``.
        links: Branch name to the URL of its page (a node links to a branch that holds it).
        fallback: The link of a node no branch holds.
        id_chars: How many last characters of a node id the labels show.
    """
    graph = layout(rows)
    label_x = _x(max(graph.width, 1)) + LABEL_GAP
    height = _y(len(rows)) + PAD
    widest = 0  # characters of the longest label, for the picture's width (its box scrolls)
    lines: list[str] = []
    nodes: list[str] = []
    for i, row in enumerate(rows):
        x, y = _x(graph.lanes[i]), _y(i)
        if graph.spines[i] > i:  # the spine down to the last child
            lines.append(f'<line class="edge" x1="{x}" y1="{y}" x2="{x}" y2="{_y(graph.spines[i])}"/>')
        parent = graph.parents[i]
        if parent is not None and graph.lanes[parent] != graph.lanes[i]:
            px = _x(graph.lanes[parent])
            if px != x:  # an elbow from the parent's spine
                curve = f"M{px},{y - ROW // 2} Q{px},{y} {px + (x - px) // 2},{y} L{x},{y}"
                lines.append(f'<path class="edge" d="{curve}"/>')
        kind = "head" if row.heads else "fork" if row.forks else "node"
        href = escape(links.get(row.branch, fallback) if row.branch is not None else fallback)
        title = escape(f"{row.first.id}: {row.steps} steps ({row.types})")
        folded = (
            f'<rect class="chain" x="{x - RADIUS}" y="{y - RADIUS - 3}" width="{2 * RADIUS}" '
            f'height="{2 * RADIUS + 6}" rx="{RADIUS}"/>'
            if row.steps > 1
            else f'<circle class="dot" cx="{x}" cy="{y}" r="{RADIUS}"/>'
        )
        parts = [("id", row.first.id[-id_chars:]), ("type", row.first.type)]
        if row.steps > 1:
            parts.append(("count", f"+{row.steps - 1} steps"))
        if row.first_preview:
            parts.append(("preview", _cut(row.first_preview, 48)))
        if row.last_preview:
            parts += [("type", "…"), ("preview", _cut(row.last_preview, 40))]
        parts += [("headname", f"● {_cut(name, 40)}") for name in row.heads]
        if row.forks:
            parts.append(("forks", f"fork: {row.forks} ways"))
        label = " ".join(f'<tspan class="{kind_}">{escape(text)}</tspan>' for kind_, text in parts)
        widest = max(widest, sum(len(text) + 1 for _, text in parts))
        nodes.append(
            f'<a href="{href}#n-{escape(row.first.id)}" class="g-{kind}"><title>{title}</title>{folded}'
            f'<text x="{label_x}" y="{y + 4}">{label}</text></a>'
        )
    width = label_x + max(600, int(widest * 7.5))  # 12.5px text: about 7 pixels a character
    svg = (
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-hidden="true" focusable="false">'
        f'<g class="edges">{"".join(lines)}</g><g class="nodes">{"".join(nodes)}</g></svg>'
    )
    return Markup(svg)  # noqa: S704 -- every value from the store above went through escape()
