"""Objects of the official ``google-genai`` SDK as the wire JSON they came from.

The SDK parses the API's JSON into pydantic models, which forget two things convstore keeps: the order of
the keys (a model dumps its fields in its class's order, required ones first, the rest alphabetically), and
which values the service sent rather than the SDK added (``output_text``, ``continuation_ids``, and the
``usage.initial_input_tokens`` of its continuation merge, set even on a turn of one hop).

So an SDK object is written back as the wire writes it: ``type`` first, then each object's known fields in
``WIRE_ORDER`` (the order of the API's JSON and of its stream: a thought's summary arrives before its
signature, a call's id and name before its arguments), then any field the table does not list, in the
order the SDK holds it. A field the service sent as ``null`` is kept as ``null``: the SDK's serializer
leaves a declared optional field out when it is None, but the model remembers it was set
(``model_fields_set``), and that is what the wire had. What the SDK keeps as plain JSON is left as it is:
function arguments, a result object, and the raw JSON of a variant it does not know (``is_unknown``), each
already in the wire's order. The same reply then stores the same bytes whether it came through the SDK or
through convstore's client.

What the SDK cannot give back (google-genai 3.x): the order of the keys of its models as the service sent
them (a pydantic model holds its fields in its class's order and only a set of which were sent; the object
keeps no raw response). ``WIRE_ORDER`` is the order the API writes, so a reply in that order is stored byte
for byte as the wire path stores it; one whose keys came in another order is stored in ``WIRE_ORDER``.

Duck-typed: nothing here imports the SDK. An SDK object is anything with pydantic's ``model_dump`` and
``model_fields``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["WIRE_ORDER", "is_sdk_object", "sdk_interaction_json", "sdk_json"]

WIRE_ORDER: Final[tuple[str, ...]] = (
    "type",
    # what a step is and whom it answers
    "id",
    "call_id",
    "name",
    "server_name",
    # content: a step's items, a thought's summary, an item's text or media
    "content",
    "summary",
    "text",
    "mime_type",
    "resolution",
    "data",
    "uri",
    "sample_rate",
    "channels",
    "rate",
    "processing",
    "annotations",
    # annotations
    "start_index",
    "end_index",
    "url",
    "title",
    # tool calls and results
    "arguments",
    "code",
    "language",
    "queries",
    "urls",
    "function_names",
    "search_type",
    "retrieval_type",
    "result",
    "is_error",
    "status",
    "error",
    # last: a signature closes the step it signs (in a stream, its own delta after the rest)
    "signature",
)
"""The wire order of the fields of the SDK's steps, contents and their parts (see the module docstring)."""

_RANK: Final[Mapping[str, int]] = {name: rank for rank, name in enumerate(WIRE_ORDER)}


def is_sdk_object(value: object) -> bool:
    """Whether ``value`` is an object of the official SDK (a pydantic model), not wire JSON or ours."""
    return (
        not isinstance(value, Mapping)
        and hasattr(value, "model_dump")
        and isinstance(getattr(type(value), "model_fields", None), Mapping)
    )


def sdk_json(value: Any) -> Any:
    """The wire JSON of an SDK object, its keys in the wire's order (see the module docstring)."""
    dumped = value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return _ordered(value, dumped)


def _ordered(value: Any, dumped: Any) -> Any:
    """``dumped`` (the JSON of ``value``) with the keys of every SDK model in it in the wire's order, and the
    explicit nulls the service sent put back."""
    if is_sdk_object(value) and isinstance(dumped, dict):
        if getattr(value, "is_unknown", False):
            return dumped  # the raw JSON of a variant the SDK does not know, as the service sent it
        fields = type(value).model_fields
        names = {(getattr(info, "alias", None) or name): name for name, info in fields.items()}
        for name in value.model_fields_set:
            # The SDK's serializer leaves out a declared optional field the service sent as null
            # ("signature": null), though the model keeps it as set: the wire had it, so the wire JSON has it.
            key = getattr(fields.get(name), "alias", None) or name
            if key not in dumped and name in fields and getattr(value, name, ...) is None:
                dumped[key] = None
        keys = sorted(dumped, key=lambda key: _RANK.get(key, len(_RANK)))  # stable: the rest keep their order
        return {
            key: _ordered(getattr(value, names[key], None) if key in names else None, dumped[key])
            for key in keys
        }
    if isinstance(value, (list, tuple)) and isinstance(dumped, list) and len(value) == len(dumped):
        return [_ordered(item, item_json) for item, item_json in zip(value, dumped, strict=True)]
    return dumped  # plain JSON (a dict the SDK holds as a dict keeps the wire's order)


def sdk_interaction_json(value: Any) -> Any:
    """The wire JSON of an SDK ``Interaction``, without what the SDK adds on its side.

    ``usage.initial_input_tokens`` is the SDK's: its continuation merge sets it on every reply, one hop or
    many. It is kept only for a turn merged from several hops, where convstore's own merge records it too;
    those hops' ids (the SDK's ``continuation_ids``) become the merged turn's ``hop_ids``. The other SDK-only
    attributes (``output_text``, ...) are dropped by ``Interaction.from_json``.
    """
    wire = sdk_json(value)
    if not isinstance(wire, dict):
        return wire
    hops = wire.get("continuation_ids")
    merged = isinstance(hops, list) and len(hops) > 1
    usage = wire.get("usage")
    if isinstance(usage, dict) and not merged:
        wire["usage"] = {key: item for key, item in usage.items() if key != "initial_input_tokens"}
    if merged and "hop_ids" not in wire:
        wire["hop_ids"] = hops
    return wire
