"""What the store hands back: nodes of the conversation tree, branches, conversation records, pages.

Plain data (attrs, frozen), no database types. A node's step is kept as the stored wire JSON text, which is
what a request replays; ``Node.data`` and ``Node.step`` decode it on demand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import Any, Generic, Literal, TypeVar

import attrs

from convstore.model._steps import Step

__all__ = ["Branch", "ConversationInfo", "Exchange", "Node", "Page", "Tree", "Unreadable"]

T = TypeVar("T")

Unreadable = Literal[
    "keyring_required",
    "key_missing",
    "key_unknown",
    "key_undecryptable",
    "settings_undecryptable",
    "scheme_unknown",
]
"""Why a listed encrypted conversation's settings are withheld (see ``ConversationInfo.unreadable``)."""



# The decoder of a wire step into its model class (``convstore.codec.decode_step``). The codec builds on the
# model, so the model does not import it: the package's root (``convstore/__init__``, which every import of
# a convstore module runs first) hands it over with ``use_step_decoder``.
_step_decoder: Callable[[Any], Step] | None = None


def use_step_decoder(decoder: Callable[[Any], Step]) -> None:
    """Set the decoder ``Node.step`` uses (the package's root sets ``convstore.codec.decode_step``)."""
    global _step_decoder  # noqa: PLW0603 -- the one wiring point, set once at import
    _step_decoder = decoder

@attrs.frozen(kw_only=True)
class Node:
    """One step of a conversation, at one place in its tree. Immutable: edits add siblings.

    Attributes:
        id: The node's id (unique in the store).
        conversation_id: The conversation it belongs to.
        parent_id: The node before it; None for the first step.
        depth: Steps above it (0 for the first step); ``parent.depth + 1``.
        exchange_id: Shared by the steps written together in one ``append`` (a user turn and its reply).
        type: The step's wire ``type``.
        token_count: This step's tokens (estimated or measured).
        total_tokens: Running total from the first step through this one.
        created_at: When it was written (UTC).
        raw_json: The step's wire JSON text, exactly as stored and replayed.
    """

    id: str
    conversation_id: str
    parent_id: str | None
    depth: int
    exchange_id: str
    type: str
    token_count: int
    total_tokens: int
    created_at: datetime
    raw_json: str = attrs.field(repr=False)

    @cached_property
    def data(self) -> dict[str, Any]:
        """The step as a JSON-ready dict (decoded once, then cached; do not mutate it)."""
        value: dict[str, Any] = json.loads(self.raw_json)
        return value

    @property
    def step(self) -> Step:
        """The step as a typed model object."""
        if _step_decoder is None:  # pragma: no cover -- importing convstore.model runs convstore/__init__
            raise RuntimeError("no step decoder: import convstore, which wires convstore.codec's")
        return _step_decoder(self.data)


@attrs.frozen(kw_only=True)
class Branch:
    """A named pointer to a head node. ``head_id`` is None for a branch with no steps yet."""

    conversation_id: str
    name: str
    head_id: str | None
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class ConversationInfo:
    """A conversation's record: its id, when it was made, and the request settings it carries.

    Attributes:
        encrypted: Whether the conversation is encrypted at rest.
        unreadable: None when the settings were read. Otherwise the store could not read this encrypted
            conversation, which a listing still returns, with its settings (system instruction, generation
            config, tools, metadata) as None and the reason here; opening it raises the matching error:

            - ``"keyring_required"``: the store has no keyring (``KeyringRequiredError``);
            - ``"key_missing"``: the key store holds no data key for it: shredded, or the wrong key store
              (``DataKeyNotFoundError``);
            - ``"key_unknown"``: its data key is wrapped by an application key the keyring does not hold
              (``KeyNotFoundError``);
            - ``"key_undecryptable"``: the keyring's key does not unwrap its data key: wrong key bytes, or
              an altered wrapped key (``DecryptionError``);
            - ``"settings_undecryptable"``: the data key is fine but a stored setting fails authentication
              (``DecryptionError``);
            - ``"scheme_unknown"``: encrypted by a scheme this convstore does not know (``EncryptionError``).
    """

    id: str
    created_at: datetime
    model: str | None
    system_instruction: str | None = attrs.field(repr=False)
    generation_config: Mapping[str, Any] | None = attrs.field(repr=False)
    tools: Sequence[Mapping[str, Any]] | None = attrs.field(repr=False)
    metadata: Mapping[str, Any] | None = attrs.field(repr=False)
    encrypted: bool = False
    unreadable: Unreadable | None = None

    @property
    def withheld(self) -> bool:
        """Whether the settings are withheld (``unreadable`` says why)."""
        return self.unreadable is not None


@attrs.frozen(kw_only=True)
class Exchange:
    """What the API reported for one recorded exchange (a turn written by ``record``/``send``/``stream``).

    Attributes:
        interaction_id: The API's interaction id (the last hop's for a continued turn).
        stored: Whether the API keeps the interaction (the request had ``store: true``).
        input_tokens ... total_tokens: The reply's ``usage`` totals (None where not reported). With
            ``store: false``, ``input_tokens`` is the exact cost of the input that was sent.
        usage: The whole ``usage`` object as reported.
        estimated_input_tokens: What convstore estimated the sent input would cost; with
            ``input_tokens`` it calibrates later budgets.
    """

    conversation_id: str
    exchange_id: str
    interaction_id: str | None
    stored: bool
    model: str | None
    status: str | None
    input_tokens: int | None
    output_tokens: int | None
    thought_tokens: int | None
    cached_tokens: int | None
    tool_use_tokens: int | None
    total_tokens: int | None
    usage: Mapping[str, Any] | None = attrs.field(repr=False)
    created_at: datetime
    estimated_input_tokens: int | None = None


@attrs.frozen(kw_only=True)
class Page(Generic[T]):
    """One page of a listing. Pass ``next_cursor`` back to get the next page; None means this was the last."""

    items: list[T]
    next_cursor: str | None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@attrs.frozen(kw_only=True)
class Tree:
    """A whole conversation tree, for display and inspection.

    Attributes:
        nodes: Every node, parents before children (by depth, then creation).
        branches: Every branch.
    """

    conversation_id: str
    nodes: list[Node] = attrs.field(repr=lambda nodes: f"<{len(nodes)} nodes>")
    branches: list[Branch]

    @cached_property
    def _children(self) -> dict[str | None, list[Node]]:
        children: dict[str | None, list[Node]] = {}
        for node in self.nodes:
            children.setdefault(node.parent_id, []).append(node)
        return children

    @property
    def roots(self) -> list[Node]:
        """First steps (usually one; several when the first message itself was edited)."""
        return self._children.get(None, [])

    def children(self, node_id: str) -> list[Node]:
        """The nodes whose parent is ``node_id``, oldest first."""
        return self._children.get(node_id, [])

    def heads(self) -> dict[str, list[str]]:
        """Branch names by head node id."""
        heads: dict[str, list[str]] = {}
        for branch in self.branches:
            if branch.head_id is not None:
                heads.setdefault(branch.head_id, []).append(branch.name)
        return heads

    def render(self, label: Any = None) -> str:
        """Draw the tree as indented text, one line a node, with branch names at their heads.

        Args:
            label: ``Node -> str`` for each line; defaults to the step type and node id (never content).
        """
        heads = self.heads()
        lines: list[str] = []

        def describe(node: Node) -> str:
            text = label(node) if label is not None else f"{node.type} {node.id}"
            names = heads.get(node.id)
            return f"{text}  <- {', '.join(sorted(names))}" if names else text

        # Iterative walk (trees can be far deeper than Python's recursion limit). A chain stays at one
        # indentation; only where there are several nodes (roots, or children of one node) do they indent,
        # each under its own connector. Each entry: the node, the prefix of its own line, and the prefix of
        # the lines below it (its chain and its subtree), always of the same width.
        stack: list[tuple[Node, str, str]] = []

        def push_all(nodes: list[Node], rest: str) -> None:
            if len(nodes) == 1:
                stack.append((nodes[0], rest, rest))
                return
            for i, kid in reversed(list(enumerate(nodes))):
                last = i == len(nodes) - 1
                stack.append((kid, rest + ("└─ " if last else "├─ "), rest + ("   " if last else "│  ")))

        push_all(self.roots, "")
        while stack:
            node, first, rest = stack.pop()
            lines.append(f"{first}{describe(node)}")
            push_all(self.children(node.id), rest)
        return "\n".join(lines)
