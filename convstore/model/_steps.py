"""Steps (``step.py`` of the API, revision 2026-05-20): the items of an interaction's ``steps`` and of a
stateless request's ``input``.

One class a ``type``. Required fields (``*`` in the reference) have no default; optional ones default to
``UNSET``. A step of a type this version does not know becomes ``UnknownStep`` and is replayed unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Union

import attrs

from convstore.model._base import UNSET, Unset, WireObject
from convstore.model._content import Content

__all__ = [
    "CALL_STEP_TYPES",
    "KNOWN_STEP_TYPES",
    "RESULT_STEP_TYPES",
    "CodeExecutionCallStep",
    "CodeExecutionResultStep",
    "FileSearchCallStep",
    "FileSearchResultStep",
    "FunctionCallStep",
    "FunctionResultStep",
    "GoogleMapsCallStep",
    "GoogleMapsResultStep",
    "GoogleSearchCallStep",
    "GoogleSearchResultStep",
    "McpServerToolCallStep",
    "McpServerToolResultStep",
    "ModelOutputStep",
    "ProcessingCallStep",
    "ProcessingResultStep",
    "RetrievalCallStep",
    "RetrievalResultStep",
    "Step",
    "ThoughtStep",
    "UnknownStep",
    "UrlContextCallStep",
    "UrlContextResultStep",
    "UserInputStep",
]

JSONObject = dict[str, Any]


@attrs.frozen(kw_only=True, repr=False)
class UserInputStep(WireObject):
    """What the user sent: ``{"type": "user_input", "content": [...]}``."""

    TYPE: ClassVar[str] = "user_input"
    content: list[Content] | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class ModelOutputStep(WireObject):
    """What the model answered; ``error`` is ``{code, message, details}`` when generation failed."""

    TYPE: ClassVar[str] = "model_output"
    content: list[Content] | Unset | None = UNSET
    error: JSONObject | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class ThoughtStep(WireObject):
    """The model's reasoning. ``signature`` is opaque and must be replayed byte-identical."""

    TYPE: ClassVar[str] = "thought"
    signature: str | Unset | None = UNSET
    summary: list[Content] | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class FunctionCallStep(WireObject):
    """A call the client must run; answer it with a ``FunctionResultStep`` of the same ``call_id``."""

    TYPE: ClassVar[str] = "function_call"
    id: str
    name: str
    arguments: JSONObject


@attrs.frozen(kw_only=True, repr=False)
class FunctionResultStep(WireObject):
    """The client's answer to a ``FunctionCallStep``; ``result`` is a string, a content list or an object."""

    TYPE: ClassVar[str] = "function_result"
    call_id: str
    result: str | list[Content] | JSONObject
    name: str | Unset | None = UNSET
    is_error: bool | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class CodeExecutionCallStep(WireObject):
    TYPE: ClassVar[str] = "code_execution_call"
    id: str
    arguments: JSONObject
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class CodeExecutionResultStep(WireObject):
    TYPE: ClassVar[str] = "code_execution_result"
    call_id: str
    result: str | list[Content]
    is_error: bool | Unset | None = UNSET
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class UrlContextCallStep(WireObject):
    TYPE: ClassVar[str] = "url_context_call"
    id: str
    arguments: JSONObject
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class UrlContextResultStep(WireObject):
    TYPE: ClassVar[str] = "url_context_result"
    call_id: str
    result: list[JSONObject]
    is_error: bool | Unset | None = UNSET
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class GoogleSearchCallStep(WireObject):
    TYPE: ClassVar[str] = "google_search_call"
    id: str
    arguments: JSONObject
    search_type: str | Unset | None = UNSET
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class GoogleSearchResultStep(WireObject):
    TYPE: ClassVar[str] = "google_search_result"
    call_id: str
    result: list[JSONObject]
    is_error: bool | Unset | None = UNSET
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class GoogleMapsCallStep(WireObject):
    TYPE: ClassVar[str] = "google_maps_call"
    id: str
    arguments: JSONObject | Unset | None = UNSET
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class GoogleMapsResultStep(WireObject):
    TYPE: ClassVar[str] = "google_maps_result"
    call_id: str
    result: list[JSONObject]
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class FileSearchCallStep(WireObject):
    TYPE: ClassVar[str] = "file_search_call"
    id: str
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class FileSearchResultStep(WireObject):
    TYPE: ClassVar[str] = "file_search_result"
    call_id: str
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class McpServerToolCallStep(WireObject):
    TYPE: ClassVar[str] = "mcp_server_tool_call"
    id: str
    name: str
    server_name: str
    arguments: JSONObject


@attrs.frozen(kw_only=True, repr=False)
class McpServerToolResultStep(WireObject):
    TYPE: ClassVar[str] = "mcp_server_tool_result"
    call_id: str
    result: Any
    name: str | Unset | None = UNSET
    server_name: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class RetrievalCallStep(WireObject):
    TYPE: ClassVar[str] = "retrieval_call"
    id: str
    arguments: JSONObject
    retrieval_type: str | Unset | None = UNSET
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class RetrievalResultStep(WireObject):
    TYPE: ClassVar[str] = "retrieval_result"
    call_id: str
    is_error: bool | Unset | None = UNSET
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class ProcessingCallStep(WireObject):
    TYPE: ClassVar[str] = "processing_call"
    id: str
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class ProcessingResultStep(WireObject):
    TYPE: ClassVar[str] = "processing_result"
    call_id: str
    signature: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class UnknownStep:
    """A step of a type this version does not know; ``raw`` is replayed unchanged, in place."""

    raw: Mapping[str, Any] = attrs.field(repr=False)

    @property
    def type(self) -> str:
        value = self.raw.get("type")
        return value if isinstance(value, str) else ""

    def __repr__(self) -> str:
        return f"UnknownStep(type={self.type!r})"


_KNOWN = (
    UserInputStep,
    ModelOutputStep,
    ThoughtStep,
    FunctionCallStep,
    FunctionResultStep,
    CodeExecutionCallStep,
    CodeExecutionResultStep,
    UrlContextCallStep,
    UrlContextResultStep,
    GoogleSearchCallStep,
    GoogleSearchResultStep,
    GoogleMapsCallStep,
    GoogleMapsResultStep,
    FileSearchCallStep,
    FileSearchResultStep,
    McpServerToolCallStep,
    McpServerToolResultStep,
    RetrievalCallStep,
    RetrievalResultStep,
    ProcessingCallStep,
    ProcessingResultStep,
)

Step = Union[  # noqa: UP007 -- a runtime alias cattrs dispatches on
    UserInputStep,
    ModelOutputStep,
    ThoughtStep,
    FunctionCallStep,
    FunctionResultStep,
    CodeExecutionCallStep,
    CodeExecutionResultStep,
    UrlContextCallStep,
    UrlContextResultStep,
    GoogleSearchCallStep,
    GoogleSearchResultStep,
    GoogleMapsCallStep,
    GoogleMapsResultStep,
    FileSearchCallStep,
    FileSearchResultStep,
    McpServerToolCallStep,
    McpServerToolResultStep,
    RetrievalCallStep,
    RetrievalResultStep,
    ProcessingCallStep,
    ProcessingResultStep,
    UnknownStep,
]
"""Any step."""

KNOWN_STEP_TYPES: Mapping[str, type[WireObject]] = {cls.TYPE: cls for cls in _KNOWN}
CALL_STEP_TYPES: frozenset[str] = frozenset(t for t in KNOWN_STEP_TYPES if t.endswith("_call"))
RESULT_STEP_TYPES: frozenset[str] = frozenset(t for t in KNOWN_STEP_TYPES if t.endswith("_result"))
