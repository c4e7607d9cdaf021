"""What the pages show, computed from what the store returns: pure functions, no I/O, no HTML.

The templates only lay these values out. Nothing here marks text as safe: every string that came from the
store reaches the templates as plain data and is escaped there (Jinja2 autoescape).

- ``segments`` draws a tree as rows, one per chain of steps between forks and branch heads, so a
  conversation of 10,000 steps and 1,000 branches is a few thousand rows, not 10,000.
- ``step_view`` turns one stored step into the pieces its template renders by type (text, thoughts,
  calls with their arguments, media, raw JSON for what this version does not know).
- ``compare`` (from ``convstore.conversation._frontend``, shared with ``convstore replay``) lines two
  branches up exchange by exchange past their shared steps.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

import convstore
from convstore.conversation._frontend import Comparison, ExchangePair, compare, preview

__all__ = [
    "SHORT_ID",
    "BranchRow",
    "Comparison",
    "ExchangePair",
    "SegmentRow",
    "branch_rows",
    "compare",
    "media_items",
    "media_type",
    "segments",
    "step_view",
]

SHORT_ID = 12  # a node id's last characters: random in a UUIDv7, so unique in a conversation
MAX_PREFIX = 72  # characters of tree connectors shown before a row; deeper rows show the level instead
PREVIEW = 80
RAW_MEDIA_MIN = 256  # media strings at least this long are left out of raw JSON (they are shown as media)


# The tree.


@attrs.frozen(kw_only=True)
class SegmentRow:
    """A chain of steps drawn as one row: it ends at a fork, a branch head or a leaf.

    Attributes:
        prefix: The tree connectors before the row (``├─ ``, ``│  ``...), as text.
        level: How many forks lie above the row.
        first, last: The chain's first and last nodes (the same node for a one-step chain).
        steps: Nodes in the chain.
        types: Its step types with their counts, most frequent first (``3 user_input, 2 thought``).
        heads: Branch names whose head is ``last``.
        forks: Children of ``last`` when it is a fork point (2 or more), else 0.
        branch: A branch whose history holds the chain (to open it there).
        first_preview, last_preview: One line of each end's content (the last end's only at a head or a
            leaf: a chain that ends at a fork is followed by rows that show where it went).
    """

    prefix: str
    level: int
    first: convstore.Node
    last: convstore.Node
    steps: int
    types: str
    heads: tuple[str, ...]
    forks: int
    branch: str | None
    first_preview: str
    last_preview: str


def _reachable_branch(tree: convstore.Tree, heads: Mapping[str, list[str]]) -> dict[str, str]:
    """For every node, one branch whose history holds it (None-free: nodes no branch reaches are absent)."""
    below: dict[str, str] = {}
    for node in reversed(tree.nodes):  # children before their parents
        if node.id in heads and node.id not in below:
            below[node.id] = sorted(heads[node.id])[0]
        if node.parent_id is not None and node.id in below and node.parent_id not in below:
            below[node.parent_id] = below[node.id]
    return below


def segments(tree: convstore.Tree) -> list[SegmentRow]:
    """The tree as rows of chains, drawn like ``Tree.render`` but a row a chain instead of a row a node.

    A chain stays at one indentation; where a node has several children each starts a row of its own under a
    connector. Iterative: trees may be far deeper than Python's recursion limit.
    """
    heads = tree.heads()
    reach = _reachable_branch(tree, heads)
    rows: list[SegmentRow] = []
    roots = tree.roots
    stack: list[tuple[convstore.Node, str, str, int]] = []
    many = len(roots) > 1
    for i, root in reversed(list(enumerate(roots))):
        last = i == len(roots) - 1
        first_prefix = ("└─ " if last else "├─ ") if many else ""
        rest = ("   " if last else "│  ") if many else ""
        stack.append((root, first_prefix, rest, int(many)))
    while stack:
        start, first_prefix, rest, level = stack.pop()
        chain = [start]
        while chain[-1].id not in heads:
            kids = tree.children(chain[-1].id)
            if len(kids) != 1:
                break
            chain.append(kids[0])
        end = chain[-1]
        kids = tree.children(end.id)
        counted = ", ".join(f"{n} {kind}" for kind, n in Counter(n.type for n in chain).most_common())
        rows.append(
            SegmentRow(
                prefix=_clip(first_prefix, level),
                level=level,
                first=start,
                last=end,
                steps=len(chain),
                types=counted,
                heads=tuple(sorted(heads.get(end.id, []))),
                forks=len(kids) if len(kids) > 1 else 0,
                branch=reach.get(start.id),
                first_preview=preview(start.data, PREVIEW),
                # The far end of a chain is previewed where it matters: at a branch head or a leaf.
                last_preview=preview(end.data, PREVIEW)
                if end is not start and (end.id in heads or not kids)
                else "",
            )
        )
        if len(kids) == 1:
            stack.append((kids[0], rest, rest, level))
            continue
        for i, kid in reversed(list(enumerate(kids))):
            last = i == len(kids) - 1
            stack.append(
                (kid, rest + ("└─ " if last else "├─ "), rest + ("   " if last else "│  "), level + 1)
            )
    return rows


def _clip(prefix: str, level: int) -> str:
    if len(prefix) <= MAX_PREFIX:
        return prefix
    return f"[{level}] " + prefix[-(MAX_PREFIX // 2) :]


@attrs.frozen(kw_only=True)
class BranchRow:
    """A branch in the conversation's table: its head and its token usage.

    Attributes:
        node_tokens: The head's running total (convstore's count of the history, calibrated by the API).
        exchanges, input_tokens, output_tokens, thought_tokens: What the API reported for the recorded
            exchanges along the branch (None when they were not read).
    """

    name: str
    head_id: str | None
    steps: int
    node_tokens: int
    updated_at: str
    exchanges: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    thought_tokens: int | None = None


def branch_rows(
    tree: convstore.Tree, usage: Mapping[str, Sequence[convstore.Exchange]] | None = None
) -> list[BranchRow]:
    """Every branch, most recently moved first, with its step count and token usage."""
    by_id = {node.id: node for node in tree.nodes}
    rows = []
    for branch in sorted(tree.branches, key=lambda b: (b.updated_at, b.name), reverse=True):
        head = by_id.get(branch.head_id) if branch.head_id is not None else None
        recorded = usage.get(branch.name) if usage is not None else None
        extra: dict[str, int | None] = {}
        if recorded is not None:
            extra = {
                "exchanges": len(recorded),
                "input_tokens": sum(x.input_tokens or 0 for x in recorded),
                "output_tokens": sum(x.output_tokens or 0 for x in recorded),
                "thought_tokens": sum(x.thought_tokens or 0 for x in recorded),
            }
        rows.append(
            BranchRow(
                name=branch.name,
                head_id=branch.head_id,
                steps=head.depth + 1 if head is not None else 0,
                node_tokens=head.total_tokens if head is not None else 0,
                updated_at=branch.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
                **extra,
            )
        )
    return rows


# Steps.


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object inside ``value``, depth first, in document order."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def file_counts(conv: convstore.Conversation) -> dict[str, int]:
    """How many Files API uris of the branch convstore holds the bytes of, and how many only by uri."""
    found = conv.files()
    held = sum(1 for status in found if status.held)
    return {"held": held, "uri_only": len(found) - held}


def media_items(step: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The inline media of a step (objects with a ``data`` string and a ``mime_type``), numbered in order:
    what ``/media/{node}/{n}`` serves."""
    return [
        item
        for item in _walk(step)
        if isinstance(item.get("data"), str) and isinstance(item.get("mime_type"), str)
    ]


def _elided(value: Any, media: set[int]) -> Any:
    if isinstance(value, dict):
        if id(value) in media and (
            len(value["data"]) >= RAW_MEDIA_MIN or value["data"].startswith(convstore.MEDIA_REF)
        ):
            shown = {k: _elided(v, media) for k, v in value.items() if k != "data"}
            return {**shown, "data": "[base64, shown as media]"}
        return {k: _elided(v, media) for k, v in value.items()}
    if isinstance(value, list):
        return [_elided(v, media) for v in value]
    return value


def pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


_MIME_NAME = r"[a-z0-9!#$&^_.+-]{1,64}"
_MIME = re.compile(rf"{_MIME_NAME}/{_MIME_NAME}", re.ASCII)


def media_type(value: object) -> str | None:
    """A stored ``mime_type``, lower case, when it is a bare MIME type (``type/subtype``: RFC 6838's
    characters only, no parameters, no space or control character); None for anything else, which is
    then neither shown nor echoed."""
    if not isinstance(value, str):
        return None
    lowered = value.lower()
    return lowered if _MIME.fullmatch(lowered) else None


def _media_piece(index: int, item: Mapping[str, Any]) -> dict[str, Any]:
    mime = media_type(item["mime_type"]) or "application/octet-stream"
    return {"kind": "media", "index": index, "mime": mime, "family": mime.split("/", maxsplit=1)[0]}


def step_view(node: convstore.Node) -> dict[str, Any]:
    """What the step template needs: the type's fields, content items as pieces, media numbered.

    A content piece is ``{"kind": "text" | "media" | "reference" | "raw", ...}``; media pieces carry the
    index ``media_items`` gives them and their MIME type, never the data itself.
    """
    data = node.data
    media = media_items(data)
    numbers = {id(item): n for n, item in enumerate(media)}

    def pieces(items: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in items if isinstance(items, list) else [items]:
            if not isinstance(item, dict):
                out.append({"kind": "raw", "json": pretty(item)})
            elif item.get("type") == "text" and isinstance(item.get("text"), str):
                out.append({"kind": "text", "text": item["text"]})
            elif id(item) in numbers:
                out.append(_media_piece(numbers[id(item)], item))
            elif isinstance(item.get("uri"), str):
                out.append({"kind": "reference", "type": str(item.get("type")), "uri": item["uri"]})
            else:
                out.append({"kind": "raw", "json": pretty(_elided(item, set(numbers)))})
        return out

    kind = str(data.get("type"))
    view: dict[str, Any] = {"kind": kind, "node": node, "short": node.id[-SHORT_ID:], "media": []}
    if kind in {"user_input", "model_output"} and isinstance(data.get("content", []), list):
        view["content"] = pieces(data.get("content", []))
        if "error" in data:
            view["error"] = pretty(data["error"])
    elif kind == "thought":
        view["content"] = pieces(data.get("summary", []))
        signature = data.get("signature")
        view["signature"] = len(signature) if isinstance(signature, str) else None
    elif kind == "function_call":
        view.update(name=str(data.get("name")), call_id=data.get("id"))
        view["arguments"] = pretty(data.get("arguments"))
    elif kind == "function_result":
        view.update(name=data.get("name"), call_id=data.get("call_id"))
        view["is_error"] = bool(data.get("is_error"))
        result = data.get("result")
        if isinstance(result, str):
            view["content"] = [{"kind": "text", "text": result}]
        elif isinstance(result, list) and all(isinstance(r, dict) and "type" in r for r in result):
            view["content"] = pieces(result)
        else:
            view["content"] = [{"kind": "raw", "json": pretty(_elided(result, set(numbers)))}]
    else:
        view["kind"] = "raw"
        view["type"] = kind
        view["json"] = pretty(_elided(data, set(numbers)))
        view["media"] = [_media_piece(n, item) for n, item in enumerate(media)]
    return view
