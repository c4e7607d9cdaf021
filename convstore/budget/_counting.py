"""Token counting: how many input tokens a step will cost when it is replayed.

Counts are estimates until the API says otherwise: every node stores its estimated count (and the running
total from the root) when it is written, and a reply's ``usage.total_input_tokens`` (exact, for a stateless
request: it is the cost of everything that was sent) calibrates them at request time; see ``_window.py``.

``HeuristicCounter`` (the default) counts text at a fixed number of characters per token and media at the
API's documented per-item costs. It is fast (one pass over the step's JSON, no tokenizer) and deliberately
simple; its error against Gemini's own tokenizer is not measured here (that tokenizer cannot be had
offline), which is what calibration is for. ``SentencePieceCounter`` counts text with a SentencePiece
model file you supply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from convstore._extras import require

__all__ = ["HeuristicCounter", "MediaCosts", "SentencePieceCounter", "TokenCounter"]


@runtime_checkable
class TokenCounter(Protocol):
    """Anything that estimates the input tokens of a step (wire JSON) and of plain text."""

    def count_step(self, step: Mapping[str, Any]) -> int: ...

    def count_text(self, text: str) -> int: ...


@attrs.frozen(kw_only=True)
class MediaCosts:
    """Per-item token costs of media, from the Gemini API's documentation (configurable).

    The wire format carries no duration or page count, so each kind has one flat cost; set it to what
    your media usually are (the documented rates: 32 tokens a second of audio, 263 a second of video, 258 a
    PDF page; the defaults assume a minute of audio or video and a ten-page document). Calibration from
    reported usage corrects what remains.

    Attributes:
        image: Tokens per image (258 for an image up to 384 px a side; larger ones are tiled).
        audio, video, document: Tokens per item.
        unknown: A media item of a type this version does not know.
    """

    image: int = 258
    audio: int = 32 * 60
    video: int = 263 * 60
    document: int = 258 * 10
    unknown: int = 258

    def cost(self, item: Mapping[str, Any]) -> int:
        return {
            "image": self.image,
            "audio": self.audio,
            "video": self.video,
            "document": self.document,
        }.get(str(item.get("type")), self.unknown)


_MEDIA = frozenset({"image", "audio", "video", "document"})
# Keys whose values are never sent to the model as text, or are opaque: signatures are replayed but the API
# does not bill them as text; inline data is billed as media, not as its base64 length.
_OPAQUE = frozenset({"signature", "data", "mime_type", "uri", "resolution", "type"})


def text_and_media(step: Mapping[str, Any], media: MediaCosts) -> tuple[list[str], int]:
    """The strings of a step the model reads as text, and the cost of its media items.

    Signatures, inline data, URIs and MIME types are not text to the model; media is priced per item.
    Iterative: steps can nest deeply.
    """
    texts: list[str] = []
    media_cost = 0
    stack: list[Any] = [step]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            kind = value.get("type")
            if value is not step and isinstance(kind, str) and kind in _MEDIA:  # unknown fields: any JSON
                media_cost += media.cost(value)
            for key, item in value.items():
                if key in _OPAQUE:
                    continue
                if isinstance(item, str):
                    texts.append(item)
                elif isinstance(item, (Mapping, list)):
                    stack.append(item)
                elif item is not None:
                    texts.append(str(item))
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            texts.append(value)
    return texts, media_cost


@attrs.frozen(kw_only=True)
class HeuristicCounter:
    """Text at ``chars_per_token`` characters a token, media at ``MediaCosts``, a small cost a step.

    Attributes:
        chars_per_token: 4.0 is the rule of thumb Google documents for Gemini on English text.
        per_step: Framing tokens each step adds (role and type markers).
        media: Per-item media costs.
    """

    chars_per_token: float = 4.0
    per_step: int = 4
    media: MediaCosts = attrs.field(factory=MediaCosts)

    def count_text(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token) if text else 0

    def count_step(self, step: Mapping[str, Any]) -> int:
        texts, media_cost = text_and_media(step, self.media)
        return self.per_step + math.ceil(sum(map(len, texts)) / self.chars_per_token) + media_cost


class SentencePieceCounter:
    """Text counted by a SentencePiece model (``pip install "convstore[sentencepiece]"``); media and the
    per-step framing as ``HeuristicCounter``.

    Args:
        model_file: Path to a ``.model`` file (Gemma's tokenizer, say, which Gemini's is closely related to).
        media: Per-item media costs.
        per_step: Framing tokens each step adds.
    """

    def __init__(self, model_file: str, *, media: MediaCosts | None = None, per_step: int = 4) -> None:
        sentencepiece = require("sentencepiece", needed_by="SentencePieceCounter")  # the sentencepiece extra
        processor = sentencepiece.SentencePieceProcessor(model_file=model_file)
        self._encode: Callable[[str], list[int]] = processor.encode
        self._media = media or MediaCosts()
        self._per_step = per_step

    def count_text(self, text: str) -> int:
        return len(self._encode(text)) if text else 0

    def count_step(self, step: Mapping[str, Any]) -> int:
        texts, media_cost = text_and_media(step, self._media)
        return self._per_step + sum(self.count_text(t) for t in texts) + media_cost
