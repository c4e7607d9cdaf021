"""What the command line and the web page share: step previews, exchanges grouped, branches compared.

Pure functions over what the store returns (``Node``s and their steps), plus ``open_default``, which opens a
conversation the way both front ends do. ``convstore replay`` and the page's comparison view line branches
up with the same rules, so they agree on what differs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from convstore.errors import BranchNotFoundError
from convstore.model import Node

if TYPE_CHECKING:
    from convstore.conversation._sync.conversation import Conversation, Store

__all__ = [
    "INPUT_TYPES",
    "Comparison",
    "ExchangePair",
    "comparable",
    "compare",
    "displayable",
    "group_exchanges",
    "input_exchanges",
    "open_default",
    "preview",
    "split_exchange",
]

INPUT_TYPES = frozenset({"user_input", "function_result"})  # the steps an exchange starts with
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def displayable(text: str) -> str:
    """``text`` with every lone surrogate (which no UTF-8 output can carry) shown as U+FFFD, the
    replacement character: stored text a terminal or a page shows rather than fails on."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text[: width * 2 + 8].split())  # a preview needs the start only
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def _content_text(items: Any) -> str:
    parts: list[str] = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping):
            kind = item.get("type")
            text = item.get("text")
            parts.append(text if kind == "text" and isinstance(text, str) else f"[{kind}]")
    return " ".join(parts)


def _compact(value: Any, width: int) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))[: width * 2]


def preview(step: Mapping[str, Any], width: int = 72) -> str:
    """One short line saying what a step holds (its text, a call and its arguments, a result)."""
    kind = step.get("type")
    if kind in {"user_input", "model_output"}:
        text = _content_text(step.get("content"))
    elif kind == "thought":
        summary = _content_text(step.get("summary"))
        text = summary or ("(signature only)" if "signature" in step else "")
    elif kind == "function_call":
        arguments = step.get("arguments", {})
        text = f"{step.get('name')}({_compact(arguments, width) if arguments else ''})"
    elif kind == "function_result":
        result = step.get("result")
        shown = result[: width * 2] if isinstance(result, str) else _compact(result, width)
        text = f"{step.get('name') or step.get('call_id')} -> {shown}"
    else:
        text = ""
    return _one_line(text, width)


def group_exchanges(nodes: Sequence[Node]) -> list[list[Node]]:
    """A path's nodes, grouped into their exchanges, in order."""
    grouped: list[list[Node]] = []
    for node in nodes:
        if grouped and grouped[-1][0].exchange_id == node.exchange_id:
            grouped[-1].append(node)
        else:
            grouped.append([node])
    return grouped


def split_exchange(steps: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any]]:
    """An exchange's steps: its leading inputs (user input, function results), and the model's output."""
    cut = next((i for i, step in enumerate(steps) if step.get("type") not in INPUT_TYPES), len(steps))
    return list(steps[:cut]), list(steps[cut:])


Exchange = tuple[str, list[dict[str, Any]], list[dict[str, Any]]]


def input_exchanges(nodes: Sequence[Node]) -> list[Exchange]:
    """``(first node id, input steps, output steps)`` of each exchange along a path that has inputs."""
    found = []
    for exchange in group_exchanges(nodes):
        inputs, outputs = split_exchange([node.data for node in exchange])
        if inputs:
            found.append((exchange[0].id, inputs, outputs))
    return found


def comparable(steps: Sequence[Mapping[str, Any]]) -> list[Any]:
    """What a model's output said, without what differs on every call (ids, signatures, thoughts)."""
    said: list[Any] = []
    for step in steps:
        kind = step.get("type")
        if kind == "thought":
            continue
        if kind == "function_call":
            said.append((kind, step.get("name"), step.get("arguments")))
        else:
            said.append({k: v for k, v in step.items() if k not in {"id", "signature", "call_id"}})
    return said


@attrs.frozen(kw_only=True)
class ExchangePair:
    """Exchange ``number`` (counted from where the branches part) of each branch; None where one has fewer.

    ``inputs_differ``/``outputs_differ`` compare what was said, leaving out what differs on every call
    (ids, signatures, thoughts); ``differing`` holds the ids of the output steps, on either side, that differ
    from the step in the same place on the other.
    """

    number: int
    left: list[Node] | None
    right: list[Node] | None
    inputs_differ: bool
    outputs_differ: bool
    differing: frozenset[str]

    @property
    def same(self) -> bool:
        return not (self.inputs_differ or self.outputs_differ)


@attrs.frozen(kw_only=True)
class Comparison:
    """Two branches lined up: the steps they share, then their exchanges side by side."""

    shared: list[Node]
    pairs: list[ExchangePair]

    @property
    def differing(self) -> list[ExchangePair]:
        return [pair for pair in self.pairs if not pair.same]


def _said(outputs: Sequence[Node]) -> list[tuple[Node, Any]]:
    """Each output step that says something (thoughts aside) with what it said, for step-level marks."""
    return [(node, said[0]) for node in outputs if (said := comparable([node.data]))]


def compare(left: Sequence[Node], right: Sequence[Node]) -> Comparison:
    """Line two branches' histories up: their shared steps, then exchange by exchange."""
    shared = 0
    while shared < min(len(left), len(right)) and left[shared].id == right[shared].id:
        shared += 1
    a, b = group_exchanges(left[shared:]), group_exchanges(right[shared:])
    pairs = []
    for number in range(max(len(a), len(b))):
        one = a[number] if number < len(a) else None
        two = b[number] if number < len(b) else None
        if one is None or two is None:
            pairs.append(
                ExchangePair(
                    number=number + 1,
                    left=one,
                    right=two,
                    inputs_differ=True,
                    outputs_differ=True,
                    differing=frozenset(),
                )
            )
            continue
        (in_a, out_a), (in_b, out_b) = (
            split_exchange([n.data for n in one]),
            split_exchange([n.data for n in two]),
        )
        said_a, said_b = _said(one[len(in_a) :]), _said(two[len(in_b) :])
        differing = {
            node.id
            for mine, theirs in ((said_a, said_b), (said_b, said_a))
            for i, (node, said) in enumerate(mine)
            if i >= len(theirs) or theirs[i][1] != said
        }
        pairs.append(
            ExchangePair(
                number=number + 1,
                left=one,
                right=two,
                inputs_differ=comparable(in_a) != comparable(in_b),
                outputs_differ=comparable(out_a) != comparable(out_b),
                differing=frozenset(differing),
            )
        )
    return Comparison(shared=list(left[:shared]), pairs=pairs)


def open_default(store: Store, conversation_id: str, branch: str | None = None) -> Conversation:
    """A conversation on ``branch``; without one, on ``main`` or else its oldest branch."""
    if branch is not None:
        return store.conversation(conversation_id, branch)
    try:
        return store.conversation(conversation_id)
    except BranchNotFoundError:
        branches = store.branches(conversation_id)
        if not branches:
            raise
        return store.conversation(conversation_id, branches[0].name)
