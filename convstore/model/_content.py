"""Content items (``content.py`` of the API): what a ``user_input``, ``model_output`` or thought summary holds.

Discriminated by ``type``. A type this version does not know becomes ``UnknownContent``, which keeps its JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Union

import attrs

from convstore.model._base import UNSET, Unset, WireObject

__all__ = [
    "AudioContent",
    "Content",
    "DocumentContent",
    "ImageContent",
    "KNOWN_CONTENT_TYPES",
    "TextContent",
    "UnknownContent",
    "VideoContent",
]


@attrs.frozen(kw_only=True, repr=False)
class TextContent(WireObject):
    """``{"type": "text", "text": ..., "annotations": [...]}``; annotations are kept as JSON objects."""

    TYPE: ClassVar[str] = "text"
    text: str
    annotations: list[dict[str, Any]] | None | Unset = UNSET


@attrs.frozen(kw_only=True, repr=False)
class ImageContent(WireObject):
    """An image, inline (base64 ``data``) or by ``uri``."""

    TYPE: ClassVar[str] = "image"
    data: str | None | Unset = UNSET
    uri: str | None | Unset = UNSET
    mime_type: str | None | Unset = UNSET
    resolution: str | None | Unset = UNSET


@attrs.frozen(kw_only=True, repr=False)
class AudioContent(WireObject):
    TYPE: ClassVar[str] = "audio"
    data: str | None | Unset = UNSET
    uri: str | None | Unset = UNSET
    mime_type: str | None | Unset = UNSET
    sample_rate: int | None | Unset = UNSET
    channels: int | None | Unset = UNSET


@attrs.frozen(kw_only=True, repr=False)
class VideoContent(WireObject):
    TYPE: ClassVar[str] = "video"
    data: str | None | Unset = UNSET
    uri: str | None | Unset = UNSET
    mime_type: str | None | Unset = UNSET
    resolution: str | None | Unset = UNSET
    name: str | None | Unset = UNSET
    processing: Any | Unset = UNSET


@attrs.frozen(kw_only=True, repr=False)
class DocumentContent(WireObject):
    TYPE: ClassVar[str] = "document"
    data: str | None | Unset = UNSET
    uri: str | None | Unset = UNSET
    mime_type: str | None | Unset = UNSET


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


Content = Union[TextContent, ImageContent, AudioContent, VideoContent, DocumentContent, UnknownContent]
"""Any content item."""

KNOWN_CONTENT_TYPES: Mapping[str, type[WireObject]] = {
    cls.TYPE: cls for cls in (TextContent, ImageContent, AudioContent, VideoContent, DocumentContent)
}
