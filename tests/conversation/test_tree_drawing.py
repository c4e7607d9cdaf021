"""``Tree.render()`` over random trees: the drawing can be read back into exactly the tree it draws.

A drawing's line is ``prefix + label``; the prefix is made of three-character cells: ``├─ `` or ``└─ `` (a
connector, last cell only), ``│  `` (a sibling further down) or blanks. The reading rule: a line whose prefix
ends in a connector hangs under the nearest line above it whose label starts three columns to its left (or
is a root when there is none); any other line continues the chain of the line just above it, in the same
column. Chains stay in one column by design (a branch of 100,000 steps must not drift right); where a node
has several children, or the conversation several roots, each is indented one cell deeper than its parent's
line, under its own connector.
"""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

import convstore

_T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
_CELLS = ("├─ ", "└─ ", "│  ", "   ")


@st.composite
def trees(draw: st.DrawFn) -> convstore.Tree:
    """A random forest: each node's parent is None (another root) or any earlier node; random branch heads."""
    count = draw(st.integers(0, 40))
    parents: list[int | None] = []
    for i in range(count):
        parents.append(None if i == 0 else draw(st.one_of(st.none(), st.integers(0, i - 1))))
    depth: list[int] = []
    for parent in parents:
        depth.append(0 if parent is None else depth[parent] + 1)
    ids = [f"n{i:03d}" for i in range(count)]
    nodes = [
        convstore.Node(
            id=ids[i],
            conversation_id="c",
            parent_id=None if parents[i] is None else ids[parents[i]],  # type: ignore[index]
            depth=depth[i],
            exchange_id=f"x{i}",
            type="user_input",
            token_count=1,
            total_tokens=depth[i] + 1,
            created_at=_T0,
            raw_json="{}",
        )
        for i in range(count)
    ]
    nodes.sort(key=lambda node: (node.depth, node.id))  # as the store returns them
    heads = draw(st.lists(st.sampled_from(ids), max_size=4)) if ids else []
    branches = [
        convstore.Branch(conversation_id="c", name=f"b{k}", head_id=head, created_at=_T0, updated_at=_T0)
        for k, head in enumerate(heads)
    ]
    return convstore.Tree(conversation_id="c", nodes=nodes, branches=branches)


def read_back(drawing: str) -> list[tuple[str, str | None, int]]:
    """(label, parent label, label column) of every line, by the reading rule above."""
    read: list[tuple[str, str | None, int]] = []
    for line in drawing.splitlines() if drawing else []:
        column = 0
        while line[column : column + 3] in _CELLS:
            column += 3
        prefix, label = line[:column], line[column:]
        assert label, line
        assert all(prefix[i : i + 3] in {"│  ", "   "} for i in range(0, column - 3, 3)), line
        if prefix.endswith(("├─ ", "└─ ")):
            above = [item for item in read if item[2] == column - 3]
            parent = above[-1][0] if above else None
        else:
            assert read or column == 0, line
            parent = read[-1][0] if read else None
            assert not read or read[-1][2] == column, line  # a chain continues in its column
        read.append((label, parent, column))
    return read


def _labels(tree: convstore.Tree) -> dict[str, str]:
    heads = tree.heads()
    return {
        node.id: node.id + (f"  <- {', '.join(sorted(heads[node.id]))}" if node.id in heads else "")
        for node in tree.nodes
    }


@given(trees())
def test_every_node_is_drawn_once_under_its_parent(tree):
    drawing = tree.render(label=lambda node: node.id)
    labels = _labels(tree)
    by_label = {text: node_id for node_id, text in labels.items()}
    read = read_back(drawing)
    # Every node exactly once.
    assert sorted(by_label[label] for label, _, _ in read) == sorted(node.id for node in tree.nodes)
    parent_of = {node.id: node.parent_id for node in tree.nodes}
    line_of = {by_label[label]: i for i, (label, _, _) in enumerate(read)}
    column_of = {by_label[label]: column for label, _, column in read}
    for label, parent_label, column in read:
        node_id = by_label[label]
        parent = None if parent_label is None else by_label[parent_label]
        # Read back, the drawing names each node's real parent...
        assert parent == parent_of[node_id], drawing
        if parent is None:
            assert column == (0 if len(tree.roots) == 1 else 3), drawing
            continue
        # ...drawn after it, and indented deeper than it wherever it is not its parent's only child.
        assert line_of[node_id] > line_of[parent]
        siblings = tree.children(parent)
        assert column == column_of[parent] + (0 if len(siblings) == 1 else 3), drawing
    # Siblings keep their order (oldest first), and a subtree's lines are contiguous below its node.
    below: dict[str, list[str]] = {}
    for node in reversed(tree.nodes):  # children before parents
        below[node.id] = [node.id] + [n for kid in tree.children(node.id) for n in below[kid.id]]
    for node in tree.nodes:
        kids = [kid.id for kid in tree.children(node.id)]
        assert [line_of[k] for k in kids] == sorted(line_of[k] for k in kids)
        rows = sorted(line_of[n] for n in below[node.id])
        assert rows == list(range(line_of[node.id], line_of[node.id] + len(rows)))


@given(trees())
def test_the_last_root_indents_like_the_others(tree):
    drawing = tree.render(label=lambda node: node.id)
    if len(tree.roots) < 2:
        return
    # No line but a lone root's sits at column 0 when there are several roots (the old bug: the last root's
    # chain was drawn at column 0).
    assert all(line.startswith(_CELLS) for line in drawing.splitlines()), drawing


def test_two_roots_after_editing_the_first_message():
    store = convstore.Store("sqlite://")
    try:
        conv = store.create_conversation()
        ask = {"type": "user_input", "content": [{"type": "text", "text": "hi"}]}
        say = {"type": "model_output", "content": [{"type": "text", "text": "hello"}]}
        first = conv.append([ask, say])
        conv.append([ask, say])
        edited = conv.edit(first[0].id, branch="edit")
        edited.append([ask, say])
        edited.append([ask, say])
        drawing = conv.tree().render(label=lambda node: node.type)
    finally:
        store.close()
    assert drawing.splitlines() == [
        "├─ user_input",
        "│  model_output",
        "│  user_input",
        "│  model_output  <- main",
        "└─ user_input",
        "   model_output",
        "   user_input",
        "   model_output  <- edit",
    ]
