"""Building request bodies and reading replies: pure functions shared by the sync and async conversations.

A stateless request is the conversation's settings (model, system instruction, generation config, tools:
the API keeps none of them between requests, so every body carries them again), ``store: false``, and
``input`` = the branch's history followed by the new steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from convstore import codec
from convstore._limits import DEFAULT_LIMITS, Limits, check_value
from convstore._wire import SplicedInput
from convstore.errors import CodecError
from convstore.model import ConversationInfo
from convstore.model._content import KNOWN_CONTENT_TYPES
from convstore.model._sdk import is_sdk_object, sdk_json
from convstore.model._steps import KNOWN_STEP_TYPES
from convstore.store._rows import Head

if TYPE_CHECKING:
    from convstore.conversation._turn import Turn

__all__ = [
    "REQUEST_FIELDS",
    "RequestBody",
    "RequestSettings",
    "StreamClient",
    "build_body",
    "new_input_steps",
    "request_settings",
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


class RequestSettings(TypedDict, total=False):
    """The request settings a turn may override (``conv.send(..., model="...", generation_config={...})``).

    A value replaces the conversation's setting for this call only; None removes it. A mapping laid over
    the conversation's mapping (``generation_config={"temperature": 0.2}``) changes only the keys it
    names; a key set to None removes that key. Fields are the API's (see its reference), JSON as there.
    ``input``, ``store``, ``stream`` and the continuation fields are convstore's to set.
    """

    model: str | None
    agent: str | None
    agent_config: Mapping[str, Any] | None
    system_instruction: str | None
    generation_config: Mapping[str, Any] | None
    tools: Sequence[Mapping[str, Any]] | None
    response_format: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
    response_modalities: Sequence[str] | None
    background: bool | None
    safety_settings: Sequence[Mapping[str, Any]] | None
    service_tier: str | None
    cached_content: str | None
    labels: Mapping[str, str] | None
    webhook_config: Mapping[str, Any] | None
    environment: Any


class StreamClient(Protocol):
    """What ``Conversation.stream`` (and ``AsyncConversation.stream``) calls: ``InteractionsClient``,
    ``GenAIClient``, their async twins, or any object with this ``stream``."""

    def stream(self, body: Mapping[str, Any]) -> Any:
        """A context manager over the events of ``body``'s streamed call, which also has
        ``get_final_interaction()`` once they are read (as ``convstore.Stream`` has)."""


def _kind(item: Any) -> str:
    tag = item.get("type") if isinstance(item, Mapping) else None
    if tag in KNOWN_CONTENT_TYPES:
        return "content"
    if tag in KNOWN_STEP_TYPES:
        return "step"
    return "unknown"


def new_input_steps(value: Any, limits: Limits = DEFAULT_LIMITS) -> list[dict[str, Any]]:
    """The steps a new turn adds, from what a caller passes as ``input``, each bounded by ``limits``.

    - a string: one ``user_input`` step with one text content;
    - a content item, or a list of them: one ``user_input`` step holding them;
    - a step, or a list of steps (function results, for instance): those steps.

    Items may be wire JSON, convstore's model objects or the official SDK's objects (``TextContent``,
    ``FunctionResultStep``, ...). Every step returned has been through ``check_value`` with ``limits``
    once (``prepare_wires(..., checked=True)`` relies on it).

    Raises:
        CodecError: a malformed item, or a list mixing contents and steps (the API refuses that too).
        LimitExceededError: a step nested deeper than ``limits.max_depth`` or (estimated) longer than
            ``limits.max_step_bytes``.
    """
    if isinstance(value, str):
        return [_bounded({"type": "user_input", "content": [{"type": "text", "text": value}]}, limits)]
    if isinstance(value, Mapping) or not isinstance(value, Sequence):
        value = [value]
    value = [sdk_json(v) if is_sdk_object(v) else v for v in value]  # the official SDK's steps and contents
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
        return [_bounded({"type": "user_input", "content": contents}, limits)]
    return codec.normalize_steps(items, prefix="input", limits=limits)


def _bounded(step: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """``step`` (built here from the caller's text or contents) once its nesting and size are bounded and
    its text is text UTF-8 can carry (a lone surrogate is refused here, as in any other step)."""
    check_value(step, path="steps[0]", limits=limits, max_bytes=limits.max_step_bytes)
    problems = codec.text_problems(step, "input")
    if problems:
        raise CodecError(problems)
    return step


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


def request_settings(info: ConversationInfo, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of one turn's body: the conversation's, with the per-request ``overrides`` laid over.

    A value replaces the conversation's setting, except that a mapping laid over a mapping
    (``generation_config``) changes only the keys it names, a key set to None removing that key; a value of
    None removes the setting whole.

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
    settings: dict[str, Any] = {
        "model": info.model,
        "system_instruction": info.system_instruction,
        "generation_config": info.generation_config,
        "tools": info.tools,
    }
    for key, value in overrides.items():
        settings[key] = _overlay(settings.get(key), value)
    body = {key: _plain(value) for key, value in settings.items() if value is not None}
    if "model" not in body and "agent" not in body:
        raise ValueError("no model: pass model= to create_conversation() or to this call")
    return body


def build_body(
    settings: Mapping[str, Any],
    input_steps: list[dict[str, Any]] | SplicedInput,
    *,
    store: bool = False,
    previous_interaction_id: str | None = None,
) -> dict[str, Any]:
    """The create body for one turn.

    Args:
        settings: The turn's settings (``request_settings``).
        input_steps: The full ``input``: replayed history and the new steps (wire JSON, or spliced from the
            stored texts for convstore's own clients).
        store: The API's ``store`` flag (False: stateless, the API keeps nothing).
        previous_interaction_id: Chain on a stored interaction instead of replaying (``store`` must be True).
    """
    body = dict(settings)
    body["store"] = store
    if previous_interaction_id is not None:
        body["previous_interaction_id"] = previous_interaction_id
    body["input"] = input_steps
    return body


class RequestBody(dict[str, Any]):
    """A create body built by a conversation: a plain ``dict`` to everything that sends it (the official
    SDK's ``client.interactions.create(**body)``, ``json.dumps``, ``InteractionsClient.create``), which also
    knows where it was built.

    ``record(body, reply)`` writes the steps of ``input`` after its ``history_length`` history steps, and
    only if the branch is still at the head the body was built on: a reply the model produced without
    seeing another writer's turn is never stored after that turn, whatever the conversation read since.
    A copy (``dict(body)``, ``{**body}``) is a plain dict again; ``record`` then checks it against the
    branch's history instead.

    Attributes:
        conversation_id: The conversation it was built for.
        branch: The branch it was built for.
        history_length: How many leading steps of ``input`` are the branch's history (0 for a body that
            chains on ``previous_interaction_id``).
        estimated_input_tokens: The estimated tokens of the body's input, stored with the exchange.
    """

    def __init__(
        self,
        fields: Mapping[str, Any],
        *,
        conversation_id: str,
        branch: str,
        head: Head,
        history_length: int,
        estimated_input_tokens: int | None = None,
        turn: Turn | None = None,
    ) -> None:
        super().__init__(fields)
        self.conversation_id = conversation_id
        self.branch = branch
        self.history_length = history_length
        self.estimated_input_tokens = estimated_input_tokens
        self._built_on = head
        self._turn = turn  # the input checked at the door, for record() to write

    @property
    def head_id(self) -> str | None:
        """The branch head the body was built on (None: the branch was empty)."""
        return self._built_on.node_id


def _overlay(setting: Any, override: Any) -> Any:
    """A per-request override laid over the conversation's setting.

    A mapping over a mapping changes the keys it names and keeps the others (one level deep: a nested
    value is replaced whole); a key set to None removes that key, and a mapping left empty is no setting.
    Anything else replaces the setting; None removes it.
    """
    if not isinstance(override, Mapping):
        return override
    merged = dict(setting) if isinstance(setting, Mapping) else {}
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged or None


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a setting (settings loaded from the store are plain already)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
