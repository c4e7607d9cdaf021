"""The Interaction the API answers with, its token Usage, and the merge of continuation hops.

An ``Interaction`` is the response body of ``POST /interactions`` (reference §3) kept close to the wire:
``steps`` is the wire JSON exactly as received (minus the leading ``user_input`` echo some create responses
carry), and ``raw`` keeps the whole response minus the SDK-only attributes, so nothing the service sent is
lost and a newer field survives a round trip. The few fields code needs to act on (``id``, ``status``,
``usage``, ``continuation_token``, ...) are lifted out as typed attributes.

``merge_continuation_hops`` is reference §8's merge: a decode that hit the per-request limit ends with
``status: requires_continuation``; each further hop is a separate interaction, and the turn to persist is
their merge (``continuation_merged_turn.json``).

Nothing here shows step content in a ``repr``: conversations are private and reprs end up in logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from convstore.errors import CodecError

__all__ = [
    "SDK_ONLY_FIELDS",
    "USAGE_INT_FIELDS",
    "USAGE_LIST_FIELDS",
    "Interaction",
    "Usage",
    "merge_continuation_hops",
    "strip_leading_user_input",
]

JSONObject = dict[str, Any]

USAGE_INT_FIELDS: Final[tuple[str, ...]] = (
    "total_input_tokens",
    "total_output_tokens",
    "total_thought_tokens",
    "total_cached_tokens",
    "total_tool_use_tokens",
    "total_tokens",
    "initial_input_tokens",
)
"""The integer fields of ``usage`` (reference §6), in the order ``Usage.to_json`` writes them."""

USAGE_LIST_FIELDS: Final[Mapping[str, tuple[str, str]]] = {
    "input_tokens_by_modality": ("modality", "tokens"),
    "output_tokens_by_modality": ("modality", "tokens"),
    "cached_tokens_by_modality": ("modality", "tokens"),
    "tool_use_tokens_by_modality": ("modality", "tokens"),
    "grounding_tool_count": ("type", "count"),
}
"""The list fields of ``usage``, each with its ``(key, value)`` names: merged hops sum values by key."""

SDK_ONLY_FIELDS: Final[frozenset[str]] = frozenset(
    {"output_text", "output_image", "output_audio", "output_video", "continuation_ids"}
)
"""Attributes the SDK adds to its Interaction objects; never on the wire, never persisted (§3)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_str(d: Mapping[str, Any], name: str) -> str | None:
    value = d.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise CodecError([(name, f"expected a string, got {type(value).__name__}")])
    return value


@attrs.frozen(kw_only=True, repr=False)
class Usage:
    """Token usage of one interaction (reference §6).

    Integer fields are ``None`` when the service did not send them. The by-modality lists are kept as the
    raw lists of ``{modality, tokens}`` (``{type, count}`` for ``grounding_tool_count``).

    Attributes:
        raw: Fields kept verbatim that the typed attributes do not represent: unknown fields, and known
            fields whose value has an unexpected type (a JSON ``null``, a string). ``to_json`` writes them
            back unchanged.
    """

    total_input_tokens: int | None = None
    total_output_tokens: int | None = None
    total_thought_tokens: int | None = None
    total_cached_tokens: int | None = None
    total_tool_use_tokens: int | None = None
    total_tokens: int | None = None
    initial_input_tokens: int | None = None
    input_tokens_by_modality: list[JSONObject] | None = None
    output_tokens_by_modality: list[JSONObject] | None = None
    cached_tokens_by_modality: list[JSONObject] | None = None
    tool_use_tokens_by_modality: list[JSONObject] | None = None
    grounding_tool_count: list[JSONObject] | None = None
    raw: JSONObject = attrs.field(factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Usage:
        """Builds a ``Usage`` from the wire ``usage`` object; never raises on odd values (they go to ``raw``).

        Args:
            d: The ``usage`` JSON object.

        Returns:
            The typed usage.
        """
        known: dict[str, Any] = {}
        raw: JSONObject = {}
        for name, value in d.items():
            typed = _is_int(value) if name in USAGE_INT_FIELDS else isinstance(value, list)
            if typed and (name in USAGE_INT_FIELDS or name in USAGE_LIST_FIELDS):
                known[name] = value
            else:
                raw[name] = value
        return cls(**known, raw=raw)

    def to_json(self) -> JSONObject:
        """The wire ``usage`` object: typed fields that are set, then ``raw``."""
        out: JSONObject = {}
        for name in (*USAGE_INT_FIELDS, *USAGE_LIST_FIELDS):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.raw)
        return out

    def __repr__(self) -> str:
        values = ((name, getattr(self, name)) for name in USAGE_INT_FIELDS)
        parts = [f"{name}={value}" for name, value in values if value is not None]
        return f"Usage({', '.join(parts)})"


def strip_leading_user_input(steps: Sequence[Any]) -> list[Any]:
    """Drops the ``user_input`` steps at the start of ``steps`` (a create response's echo of its input)."""
    start = 0
    while start < len(steps):
        step = steps[start]
        if not (isinstance(step, Mapping) and step.get("type") == "user_input"):
            break
        start += 1
    return list(steps[start:])


@attrs.frozen(kw_only=True, repr=False)
class Interaction:
    """An interaction as the API returned it (reference §3), or the merge of its continuation hops.

    Attributes:
        id: The interaction's id (with ``store: false`` it cannot be fetched later). For a merged turn, the
            last hop's id.
        status: Open enum: ``completed``, ``requires_action``, ``requires_continuation``, ``in_progress``,
            ``failed``, ``cancelled``, ``incomplete``, ``budget_exceeded``, ``queued``, or a newer value.
        steps: The generated steps as wire JSON, exactly as received (for a create response, without the
            leading ``user_input`` echo).
        usage: Token usage of this interaction (summed over hops for a merged turn).
        continuation_token: Set with ``status: requires_continuation``: resume the decode with it.
        model: The model that answered.
        created: ISO 8601 UTC creation time, as sent.
        updated: ISO 8601 UTC last update time, as sent.
        hop_ids: For a turn merged from continuation hops, every hop's id in order; empty otherwise. A
            convstore field (the merged-turn shape), not a wire field.
        raw: The whole response JSON minus the SDK-only attributes, as received.
    """

    id: str | None = None
    status: str
    steps: list[JSONObject] = attrs.field(factory=list)
    usage: Usage | None = None
    continuation_token: str | None = None
    model: str | None = None
    created: str | None = None
    updated: str | None = None
    hop_ids: list[str] = attrs.field(factory=list)
    raw: JSONObject = attrs.field(factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], *, drop_input_echo: bool = True) -> Interaction:
        """Builds an ``Interaction`` from a response body (or a merged turn).

        Args:
            d: The JSON object.
            drop_input_echo: Drop leading ``user_input`` steps, as reference §3 asks for create responses.
                Pass ``False`` for a GET, whose ``steps`` is the whole timeline.

        Returns:
            The interaction.

        Raises:
            CodecError: ``status`` is missing, or a lifted field or a step has the wrong JSON type.
        """
        if not isinstance(d, Mapping):
            raise CodecError([("", f"expected a JSON object, got {type(d).__name__}")])
        raw = {k: v for k, v in d.items() if k not in SDK_ONLY_FIELDS}
        status = raw.get("status")
        if not isinstance(status, str):
            raise CodecError([("status", "required string is missing")])
        wire_steps = raw.get("steps")
        if wire_steps is None:
            wire_steps = []
        if not isinstance(wire_steps, list):
            raise CodecError([("steps", f"expected a list, got {type(wire_steps).__name__}")])
        for i, step in enumerate(wire_steps):
            if not isinstance(step, dict):
                raise CodecError([(f"steps[{i}]", f"expected an object, got {type(step).__name__}")])
        steps = strip_leading_user_input(wire_steps) if drop_input_echo else list(wire_steps)
        usage_json = raw.get("usage")
        hop_ids = raw.pop("hop_ids", None)
        return cls(
            id=_optional_str(raw, "id"),
            status=status,
            steps=steps,
            usage=Usage.from_json(usage_json) if isinstance(usage_json, Mapping) else None,
            continuation_token=_optional_str(raw, "continuation_token"),
            model=_optional_str(raw, "model"),
            created=_optional_str(raw, "created"),
            updated=_optional_str(raw, "updated"),
            hop_ids=[h for h in hop_ids if isinstance(h, str)] if isinstance(hop_ids, list) else [],
            raw=raw,
        )

    @classmethod
    def from_hops(cls, hops: Sequence[Mapping[str, Any]]) -> Interaction:
        """Builds the interaction of a turn decoded in several continuation hops (reference §8).

        The result is the last hop (its ``id``, ``status``, ``updated``, ...) with the merged ``steps``,
        ``usage`` and ``hop_ids`` of ``merge_continuation_hops``, and ``created`` (``previous_interaction_id``
        and ``input`` too, where present) of the first hop, as the SDK does. A single hop is returned as is.

        Args:
            hops: The response bodies of the hops, in order.

        Returns:
            The merged interaction.
        """
        if len(hops) == 1:
            return cls.from_json(hops[0])
        merged = merge_continuation_hops(hops)
        body: JSONObject = {k: v for k, v in hops[-1].items() if k != "continuation_token"}
        body.update(merged)
        for name in ("created", "previous_interaction_id", "input"):
            if name in hops[0]:
                body[name] = hops[0][name]
            else:
                body.pop(name, None)
        return cls.from_json(body)

    def to_json(self) -> JSONObject:
        """The JSON object: ``raw`` with the typed attributes written over it.

        Returns:
            A new dict; ``steps`` holds the same step objects as ``self.steps``.
        """
        out: JSONObject = dict(self.raw)
        if self.id is not None:
            out["id"] = self.id
        out["status"] = self.status
        if self.steps or "steps" in out:
            out["steps"] = list(self.steps)
        if self.usage is not None:
            out["usage"] = self.usage.to_json()
        for name in ("continuation_token", "model", "created", "updated"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.hop_ids:
            out["hop_ids"] = list(self.hop_ids)
        return out

    @property
    def text(self) -> str:
        """The text of the ``model_output`` steps after the last ``user_input`` step, concatenated.

        Create responses hold no ``user_input`` (so this is all their output text); a GET timeline's last
        answer is what follows its last ``user_input``. This matches the SDK's ``output_text``.
        """
        start = 0
        for i, step in enumerate(self.steps):
            if step.get("type") == "user_input":
                start = i + 1
        parts: list[str] = []
        for step in self.steps[start:]:
            if step.get("type") != "model_output":
                continue
            for content in step.get("content") or ():
                if isinstance(content, Mapping) and content.get("type") == "text":
                    text = content.get("text")
                    if isinstance(text, str):
                        parts.append(text)
        return "".join(parts)

    @property
    def function_calls(self) -> list[JSONObject]:
        """The ``function_call`` steps the client has to answer (``status == "requires_action"``)."""
        return [step for step in self.steps if step.get("type") == "function_call"]

    def __repr__(self) -> str:
        return (
            f"Interaction(id={self.id!r}, status={self.status!r}, steps={len(self.steps)}, "
            f"usage={self.usage!r})"
        )


def _merge_usage_list(lists: Sequence[list[Any]], key_name: str, value_name: str) -> list[Any]:
    merged: dict[Any, Any] = {}
    for items in lists:
        for item in items:
            if not isinstance(item, Mapping):
                continue
            key = item.get(key_name)
            if key not in merged:
                merged[key] = dict(item)
                continue
            previous, value = merged[key].get(value_name), item.get(value_name)
            if _is_int(previous) and _is_int(value):
                merged[key][value_name] = previous + value
    return list(merged.values())


def _merge_usages(usages: Sequence[Mapping[str, Any]], first: Mapping[str, Any] | None) -> JSONObject:
    names: list[str] = []
    for usage in usages:
        names.extend(name for name in usage if name not in names)
    updates: JSONObject = {}
    for name in names:
        if name == "initial_input_tokens":
            continue
        present = [u[name] for u in usages if u.get(name) is not None]
        if not present:
            continue
        if all(_is_int(v) for v in present):
            updates[name] = sum(present)
        elif name in USAGE_LIST_FIELDS and all(isinstance(v, list) for v in present):
            updates[name] = _merge_usage_list(present, *USAGE_LIST_FIELDS[name])
    initial = None
    if first is not None:
        initial = first.get("initial_input_tokens")
        if initial is None:
            initial = first.get("total_input_tokens")
    if initial is not None or usages[-1].get("initial_input_tokens") is not None:
        updates["initial_input_tokens"] = initial
    return {**usages[-1], **updates}


def merge_continuation_hops(hops: Sequence[Mapping[str, Any]]) -> JSONObject:
    """Merges the responses of a continuation chain into the turn to persist (reference §8).

    - ``steps``: every hop's steps concatenated, without the leading ``user_input`` steps of later hops;
    - ``usage``: integer fields summed, the by-modality lists summed by ``modality`` and
      ``grounding_tool_count`` by ``type``; ``initial_input_tokens`` is the first hop's input tokens;
    - ``id`` and ``status`` from the last hop; ``hop_ids`` lists every hop's id in order;
    - ``continuation_token`` only when the last hop still carries one (the chain stopped early).

    Args:
        hops: The hops' response JSON objects, in order. A hop that is itself a merged turn contributes its
            ``hop_ids``.

    Returns:
        The merged turn, in the shape of ``continuation_merged_turn.json``.

    Raises:
        ValueError: ``hops`` is empty.
    """
    if not hops:
        raise ValueError("merge_continuation_hops needs at least one hop")
    steps: list[Any] = []
    for index, hop in enumerate(hops):
        hop_steps = hop.get("steps")
        if isinstance(hop_steps, list):
            steps.extend(strip_leading_user_input(hop_steps) if index else hop_steps)
    hop_ids: list[str] = []
    for hop in hops:
        nested = hop.get("hop_ids")
        if isinstance(nested, list):
            hop_ids.extend(h for h in nested if isinstance(h, str) and h)
        hop_id = hop.get("id")
        if isinstance(hop_id, str) and hop_id:
            hop_ids.append(hop_id)
    last = hops[-1]
    merged: JSONObject = {}
    if last.get("id") is not None:
        merged["id"] = last["id"]
    merged["status"] = last.get("status")
    merged["steps"] = steps
    usages = [hop["usage"] for hop in hops if isinstance(hop.get("usage"), Mapping)]
    if usages:
        first_usage = hops[0].get("usage")
        merged["usage"] = _merge_usages(usages, first_usage if isinstance(first_usage, Mapping) else None)
    merged["hop_ids"] = list(dict.fromkeys(hop_ids))
    if last.get("continuation_token"):
        merged["continuation_token"] = last["continuation_token"]
    return merged
