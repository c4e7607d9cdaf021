"""Request validation and token accounting of the emulator: pure functions over request JSON.

Rejections are ``RequestError`` (HTTP 400 ``INVALID_ARGUMENT`` unless said otherwise), with messages that
name fields, positions and ids, never content. The rules:

- the body is a JSON object whose top-level fields are all in reference §2's table, with a string
  ``model``;
- ``store: false`` excludes ``previous_interaction_id``; ``background: true`` needs ``store`` (not false);
- ``input`` is a string, one Content, a Content list or a Step list; a list never mixes Content and Step
  types, and every item is an object with a string ``type``;
- a ``function_result``'s ``call_id`` matches the ``id`` of an earlier ``function_call`` of the timeline;
- signatures: see ``SignatureBook``.

Token accounting is a documented heuristic, deterministic so budget code can calibrate against it: a prompt
is a list of *units* (the system instruction, the tools as compact JSON, then each input step as compact
JSON with sorted keys) and costs ``sum(ceil(len(unit) / 4))`` tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = [
    "ALLOWED_FIELDS",
    "CONTENT_TYPES",
    "STEP_TYPES",
    "RequestError",
    "SignatureBook",
    "canonical",
    "check_body",
    "check_function_results",
    "normalize_input",
    "prompt_units",
    "tokens",
]

JSONObject = dict[str, Any]

ALLOWED_FIELDS: Final = frozenset(
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
        "response_mime_type",
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
"""Top-level create fields of reference §2 (``agent``/``agent_config`` are named in its ``model`` row)."""

CONTENT_TYPES: Final = frozenset({"text", "image", "audio", "video", "document"})

_TOOL_FAMILIES: Final = (
    "code_execution",
    "url_context",
    "google_search",
    "google_maps",
    "file_search",
    "mcp_server_tool",
    "retrieval",
    "processing",
)

STEP_TYPES: Final = frozenset(
    {"user_input", "model_output", "thought", "function_call", "function_result"}
    | {f"{family}_{kind}" for family in _TOOL_FAMILIES for kind in ("call", "result")}
)
"""Step types of reference §4 (an unknown type in a list counts as a step, for forward compatibility)."""

CLIENT_STEP_TYPES: Final = frozenset({"user_input", "function_result"})
"""Steps the client writes; every other step belongs to a model turn."""

SIGNATURE_PREFIX: Final = "EMU"
"""Signatures the emulator issues start with this; others are foreign."""


class RequestError(Exception):
    """A request the emulated service rejects."""

    def __init__(self, message: str, *, status_code: int = 400, status: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.status = status

    def body(self) -> JSONObject:
        """The error response body in Google's shape (reference E6)."""
        return {"error": {"code": self.status_code, "message": self.message, "status": self.status}}


def canonical(value: Any) -> str:
    """Compact JSON with sorted keys: equal JSON values give equal strings."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def tokens(unit: str) -> int:
    """``ceil(len(unit) / 4)``: the emulator's token count of one prompt unit."""
    return -(-len(unit) // 4)


def prompt_units(body: Mapping[str, Any], steps: Sequence[JSONObject]) -> list[str]:
    """The units a prompt is priced and cache-matched by (see the module docstring)."""
    system = body.get("system_instruction")
    tools = body.get("tools")
    return [
        system if isinstance(system, str) else "",
        canonical(tools) if tools else "",
        *(canonical(step) for step in steps),
    ]


def check_body(body: Any) -> JSONObject:
    """Checks the top-level fields of a create body.

    Raises:
        RequestError: A rule of the module docstring is broken.
    """
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(body) - ALLOWED_FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s) in the request: {', '.join(unknown)}")
    if "model" not in body:
        raise RequestError("model is required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise RequestError("model must be a non-empty string")
    for name in ("store", "stream", "background"):
        if name in body and not isinstance(body[name], bool):
            raise RequestError(f"{name} must be a boolean")
    for name in ("previous_interaction_id", "continuation_token", "system_instruction"):
        if name in body and not isinstance(body[name], str):
            raise RequestError(f"{name} must be a string")
    if body.get("store") is False and "previous_interaction_id" in body:
        raise RequestError("previous_interaction_id cannot be used with store=false")
    if body.get("background") is True and body.get("store") is False:
        raise RequestError("background=true requires store=true")
    tools = body.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) and isinstance(t.get("type"), str) for t in tools)
    ):
        raise RequestError("tools must be a list of objects with a type")
    return body


def normalize_input(value: Any) -> list[JSONObject]:
    """The ``input`` of a create body as a list of steps.

    Raises:
        RequestError: Not one of the four input shapes, a malformed item, or Content and Step types mixed.
    """
    if isinstance(value, str):
        return [{"type": "user_input", "content": [{"type": "text", "text": value}]}]
    if isinstance(value, dict):
        if value.get("type") in CONTENT_TYPES:
            return [{"type": "user_input", "content": [value]}]
        raise RequestError("input: an object must be a Content (send steps as a list)")
    if not isinstance(value, list):
        raise RequestError("input must be a string, a Content, or a list of Contents or Steps")
    if not value:
        raise RequestError("input must not be empty")
    first_content = first_step = None
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise RequestError(f"input[{i}] must be an object")
        kind = item.get("type")
        if not isinstance(kind, str) or not kind:
            raise RequestError(f"input[{i}].type is missing")
        if kind in CONTENT_TYPES:
            first_content = i if first_content is None else first_content
        else:
            first_step = i if first_step is None else first_step
    if first_content is not None and first_step is not None:
        raise RequestError(
            f"input mixes Step and Content types (input[{first_step}] is a step, "
            f"input[{first_content}] a content)"
        )
    if first_content is not None:
        return [{"type": "user_input", "content": list(value)}]
    return list(value)


def check_function_results(steps: Sequence[JSONObject], *, offset: int = 0) -> None:
    """Every ``function_result.call_id`` must name an earlier ``function_call.id``.

    Args:
        steps: The whole timeline (stored history, then this request's input).
        offset: Index of the first input step in ``steps``, so messages point into ``input``.

    Raises:
        RequestError: A result answers no known call.
    """
    call_ids: set[str] = set()
    for i, step in enumerate(steps):
        kind = step.get("type")
        if kind == "function_call":
            call_id = step.get("id")
            if not isinstance(call_id, str) or not call_id:
                raise RequestError(f"input[{i - offset}].id is required for a function_call")
            call_ids.add(call_id)
        elif kind == "function_result":
            call_id = step.get("call_id")
            if not isinstance(call_id, str) or call_id not in call_ids:
                raise RequestError(
                    f"input[{i - offset}].call_id {call_id!r} matches no earlier function_call id"
                )


class SignatureBook:
    """Remembers the thought signatures the emulator issued and checks replayed model turns.

    When it issues a hop, every non-thought step is recorded with the thought steps that precede it in that
    hop. A replayed model turn (a run of steps between ``user_input``/``function_result`` steps) is then
    rejected when a step the emulator issued is not preceded, in the same turn, by one of its thoughts
    exactly as issued (the thought was dropped, or its signature or summary edited), or when a thought
    carries a signature with the emulator's prefix that it never issued (an altered signature). Foreign
    signatures (another prefix) are accepted: a test may replay fixture histories; they are not checked.
    """

    def __init__(self) -> None:
        self._issued: set[str] = set()
        self._thoughts_for: dict[str, set[str]] = {}

    def issue(self, signature: str) -> str:
        """Records a signature as issued and returns it."""
        self._issued.add(signature)
        return signature

    def record_hop(self, steps: Sequence[JSONObject]) -> None:
        """Records the steps of one issued hop."""
        thoughts: list[str] = []
        for step in steps:
            if step.get("type") == "thought":
                thoughts.append(canonical(step))
            elif thoughts:
                self._thoughts_for.setdefault(canonical(step), set()).update(thoughts)

    def adopt(self, steps: Sequence[JSONObject]) -> None:
        """Takes the model turns of a history as issued here (recorded against another emulator)."""
        turn: list[JSONObject] = []
        for step in [*steps, {"type": "user_input"}]:  # the sentinel ends the last turn
            if step.get("type") not in CLIENT_STEP_TYPES:
                turn.append(step)
                continue
            for thought in turn:
                signature = thought.get("signature")
                if thought.get("type") == "thought" and isinstance(signature, str):
                    self.issue(signature)
            self.record_hop(turn)
            turn = []

    def check(self, steps: Sequence[JSONObject]) -> None:
        """Checks the model turns of a request's input.

        Raises:
            RequestError: A rule of the class docstring is broken.
        """
        seen: set[str] = set()
        for i, step in enumerate(steps):
            kind = step.get("type")
            if kind in CLIENT_STEP_TYPES:
                seen = set()  # a new model turn starts after this step
                continue
            if kind == "thought":
                signature = step.get("signature")
                ours = isinstance(signature, str) and signature.startswith(SIGNATURE_PREFIX)
                if ours and signature not in self._issued:
                    raise RequestError(f"input[{i}].signature was not issued for this model turn")
                seen.add(canonical(step))
                continue
            expected = self._thoughts_for.get(canonical(step))
            if expected and not expected & seen:
                raise RequestError(
                    f"input[{i}] belongs to a model turn whose thought step is missing or altered "
                    "(replay thought steps and their signature unchanged)"
                )
