"""Building request bodies and reading replies: pure functions shared by the sync and async conversations.

A stateless request is the conversation's settings (model, system instruction, generation config, tools:
the API keeps none of them between requests, so every body carries them again), ``store: false``, and
``input`` = the branch's history followed by the new steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from convstore import codec
from convstore._limits import DEFAULT_LIMITS, Limits, check_value, loads
from convstore.errors import CodecError
from convstore.model import ConversationInfo
from convstore.model._content import KNOWN_CONTENT_TYPES
from convstore.model._interaction import Interaction
from convstore.model._steps import KNOWN_STEP_TYPES

__all__ = [
    "REQUEST_FIELDS",
    "InputSteps",
    "build_body",
    "interaction_from_reply",
    "new_input_steps",
]

# The create body's top-level fields (API reference section 2). Anything else is refused before sending.
REQUEST_FIELDS = frozenset(
    {
        "model",
        "agent",
        "agent_config",
        "input",
        "system_instruction",
        "generation_config",
        "tools",
        "response_format",
        "response_modalities",
        "store",
        "stream",
        "background",
        "previous_interaction_id",
        "continuation_token",
        "safety_settings",
        "service_tier",
        "cached_content",
        "labels",
        "webhook_config",
        "environment",
    }
)
# Fields a caller may override per request; the rest are convstore's to set.
OVERRIDABLE = REQUEST_FIELDS - {"input", "store", "stream", "previous_interaction_id", "continuation_token"}


def _kind(item: Any) -> str:
    tag = item.get("type") if isinstance(item, Mapping) else None
    if tag in KNOWN_CONTENT_TYPES:
        return "content"
    if tag in KNOWN_STEP_TYPES:
        return "step"
    return "unknown"


def new_input_steps(value: Any) -> list[dict[str, Any]]:
    """The steps a new turn adds, from what a caller passes as ``input``.

    - a string: one ``user_input`` step with one text content;
    - a content item, or a list of them: one ``user_input`` step holding them;
    - a step, or a list of steps (function results, for instance): those steps.

    Raises:
        CodecError: a malformed item, or a list mixing contents and steps (the API refuses that too).
    """
    if isinstance(value, str):
        return [{"type": "user_input", "content": [{"type": "text", "text": value}]}]
    if isinstance(value, Mapping) or not isinstance(value, Sequence):
        value = [value]
    items = [codec.encode_step(v) if not isinstance(v, Mapping) and _is_step(v) else v for v in value]
    items = [codec.encode_content(v) if not isinstance(v, Mapping) and _is_content(v) else v for v in items]
    if not items:
        raise CodecError([("input", "empty: a turn needs at least one content item or step")])
    kinds = {_kind(item) for item in items} - {"unknown"}
    if kinds == {"content", "step"}:
        raise CodecError([("input", "mixes content items and steps; pass one kind")])
    if kinds == {"content"}:
        contents = []
        problems: list[tuple[str, str]] = []
        for index, item in enumerate(items):
            try:
                codec.decode_content(item, path=f"input[{index}]")
                contents.append(dict(item))
            except CodecError as exc:
                problems.extend(exc.problems)
        if problems:
            raise CodecError(problems)
        return [{"type": "user_input", "content": contents}]
    return codec.normalize_steps(items, prefix="input")


def _is_step(value: Any) -> bool:
    from convstore.model import UnknownStep, WireObject  # noqa: PLC0415

    return isinstance(value, UnknownStep) or (
        isinstance(value, WireObject) and value.TYPE in KNOWN_STEP_TYPES
    )


def _is_content(value: Any) -> bool:
    from convstore.model import UnknownContent, WireObject  # noqa: PLC0415

    return isinstance(value, UnknownContent) or (
        isinstance(value, WireObject) and value.TYPE in KNOWN_CONTENT_TYPES
    )


def build_body(
    info: ConversationInfo,
    input_steps: list[dict[str, Any]],
    overrides: Mapping[str, Any],
    *,
    store: bool = False,
    previous_interaction_id: str | None = None,
) -> dict[str, Any]:
    """The create body for one turn.

    Args:
        info: The conversation's settings.
        input_steps: The full ``input``: replayed history and the new steps.
        overrides: Per-request settings; a value of None removes the conversation's setting.
        store: The API's ``store`` flag (False: stateless, the API keeps nothing).
        previous_interaction_id: Chain on a stored interaction instead of replaying (``store`` must be True).

    Raises:
        TypeError: an override that is not a request field, or one convstore sets itself.
        ValueError: no model, neither on the conversation nor in ``overrides``.
    """
    unknown = sorted(set(overrides) - OVERRIDABLE)
    if unknown:
        raise TypeError(
            f"not a request setting convstore lets you override: {', '.join(unknown)} "
            "(input, store, stream and continuation are set by convstore)"
        )
    body: dict[str, Any] = {}
    settings = {
        "model": info.model,
        "system_instruction": info.system_instruction,
        "generation_config": info.generation_config,
        "tools": info.tools,
        **overrides,
    }
    for key, value in settings.items():
        if value is not None:
            body[key] = _plain(value)
    if "model" not in body and "agent" not in body:
        raise ValueError("no model: pass model= to create_conversation() or to this call")
    body["store"] = store
    if previous_interaction_id is not None:
        body["previous_interaction_id"] = previous_interaction_id
    body["input"] = InputSteps(input_steps)
    return body


class InputSteps(list[Any]):
    """The ``input`` list of a body ``request()`` built: a plain list that can be referenced weakly.

    ``record()`` recognises the bodies its conversation built by this list's identity, to know which of its
    steps were history without reading the branch again. The conversation holds it weakly: a body the
    caller dropped is freed, however long the history it carried.
    """

    __slots__ = ("__weakref__",)


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a setting (settings loaded from the store are plain already)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def interaction_from_reply(reply: Any, limits: Limits = DEFAULT_LIMITS) -> Interaction:
    """Our ``Interaction`` from a reply given as ours, as API JSON (a dict or its text), or as an object
    of the official ``google-genai`` SDK (anything with pydantic's ``model_dump``).

    Raises:
        CodecError: the reply is none of these, is not strict JSON, or has no ``steps`` list.
        LimitExceededError: the reply is nested deeper than ``limits.max_depth`` or longer than
            ``limits.max_reply_bytes``.
    """
    if isinstance(reply, Interaction):
        return reply
    if isinstance(reply, (str, bytes)):
        reply = loads(
            reply,
            path="interaction",
            limits=limits,
            max_bytes=limits.max_reply_bytes,
            limit_name="max_reply_bytes",
        )
    elif isinstance(reply, Mapping):
        check_value(
            reply,
            path="interaction",
            limits=limits,
            max_bytes=limits.max_reply_bytes,
            limit_name="max_reply_bytes",
        )
    elif not isinstance(reply, Mapping) and hasattr(reply, "model_dump"):
        reply = reply.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if not isinstance(reply, Mapping):
        raise CodecError([("interaction", f"expected an interaction, got {type(reply).__name__}")])
    steps = reply.get("steps", [])
    if not isinstance(steps, list):
        raise CodecError([("interaction.steps", "expected an array")])
    return Interaction.from_json(reply)
