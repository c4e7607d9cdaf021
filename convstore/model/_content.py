"""Content items (``content.py`` of the API): what a ``user_input``, a ``model_output`` or a thought
summary holds.

Discriminated by ``type``. A type this version does not know becomes ``UnknownContent``, which keeps its JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Union

import attrs

from convstore.model._base import UNSET, Unset, WireObject

__all__ = [
    "KNOWN_CONTENT_TYPES",
    "AudioContent",
    "Content",
    "DocumentContent",
    "ImageContent",
    "TextContent",
    "UnknownContent",
    "VideoContent",
]


@attrs.frozen(kw_only=True, repr=False)
class TextContent(WireObject):
    """``{"type": "text", "text": ..., "annotations": [...]}``; annotations are kept as JSON objects."""

    TYPE: ClassVar[str] = "text"
    text: str
    annotations: list[dict[str, Any]] | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class ImageContent(WireObject):
    """An image, inline (base64 ``data``) or by ``uri``."""

    TYPE: ClassVar[str] = "image"
    data: str | Unset | None = UNSET
    uri: str | Unset | None = UNSET
    mime_type: str | Unset | None = UNSET
    resolution: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class AudioContent(WireObject):
    TYPE: ClassVar[str] = "audio"
    data: str | Unset | None = UNSET
    uri: str | Unset | None = UNSET
    mime_type: str | Unset | None = UNSET
    sample_rate: int | Unset | None = UNSET
    channels: int | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class VideoContent(WireObject):
    TYPE: ClassVar[str] = "video"
    data: str | Unset | None = UNSET
    uri: str | Unset | None = UNSET
    mime_type: str | Unset | None = UNSET
    resolution: str | Unset | None = UNSET
    name: str | Unset | None = UNSET
    processing: Any | Unset = UNSET


@attrs.frozen(kw_only=True, repr=False)
class DocumentContent(WireObject):
    TYPE: ClassVar[str] = "document"
    data: str | Unset | None = UNSET
    uri: str | Unset | None = UNSET
    mime_type: str | Unset | None = UNSET


@attrs.frozen(kw_only=True, repr=False)
class UnknownContent:
    """A content item of a type this version does not know; ``raw`` is written back unchanged."""

    raw: Mapping[str, Any] = attrs.field(repr=False)

    @property
    def type(self) -> str:
        value = self.raw.get("type")
        return value if isinstance(value, str) else ""

    def __repr__(self) -> str:
        return f"UnknownContent(type={self.type!r})"


Content = Union[  # noqa: UP007 -- a runtime alias cattrs dispatches on
    TextContent, ImageContent, AudioContent, VideoContent, DocumentContent, UnknownContent
]
"""Any content item."""

KNOWN_CONTENT_TYPES: Mapping[str, type[WireObject]] = {
    cls.TYPE: cls for cls in (TextContent, ImageContent, AudioContent, VideoContent, DocumentContent)
}
