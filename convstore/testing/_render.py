"""How the emulator writes an interaction: the JSON body, and the SSE events of reference §7.

The stream has the documented shape: ``interaction.created``, an ``interaction.status_update``, then per
step ``step.start`` / ``step.delta``... / ``step.stop``, then ``interaction.completed`` carrying ``usage``,
and ``event: done`` + ``data: [DONE]``. Text arrives in several ``text`` deltas, function call arguments in
several ``arguments_delta`` fragments, thoughts as ``thought_summary`` then ``thought_signature`` deltas.
``event_id`` is set on deltas, checkpoint status updates and ``interaction.completed``, numbered by the
event's position (``evt_000004`` is the 4th event), like the fixtures.

Reassembling the stream gives back the steps exactly, except that adjacent text items of one
``model_output`` merge into one (the reassembly rule appends text to a preceding text item).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

__all__ = ["DONE_EVENT", "encode_event", "hop_events", "number_events", "split_text"]

JSONObject = dict[str, Any]

DONE_EVENT: Final = b"event: done\ndata: [DONE]\n\n"

_CHUNK: Final = 24


def split_text(text: str, pieces: int = 0) -> list[str]:
    """Splits ``text`` into delta-sized pieces: at least two when it has two characters or more.

    Args:
        text: The text.
        pieces: Exactly this many pieces (``0``: chunks of 24 characters).
    """
    if len(text) < 2:
        return [text]
    size = -(-len(text) // pieces) if pieces else min(_CHUNK, -(-len(text) // 2))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _deltas(step: JSONObject) -> tuple[JSONObject, list[JSONObject]]:
    """The partial step of ``step.start`` and the deltas that complete it."""
    kind = step.get("type")
    if kind == "thought":
        start = {k: v for k, v in step.items() if k not in ("summary", "signature")}
        deltas = [{"type": "thought_summary", "content": item} for item in step.get("summary") or []]
        if "signature" in step:
            deltas.append({"type": "thought_signature", "signature": step["signature"]})
        return start, deltas
    if kind == "model_output":
        start = {k: v for k, v in step.items() if k != "content"}
        deltas = []
        for item in step.get("content") or []:
            if isinstance(item, dict) and item.get("type") == "text":
                deltas.extend({"type": "text", "text": piece} for piece in split_text(item.get("text", "")))
                if item.get("annotations"):
                    deltas.append({"type": "text_annotation_delta", "annotations": item["annotations"]})
            else:
                deltas.append(item)
        return start, deltas
    if kind == "function_call":
        start = {**step, "arguments": {}}
        fragments = split_text(json.dumps(step.get("arguments", {})), 3)
        return start, [{"type": "arguments_delta", "arguments": fragment} for fragment in fragments]
    return dict(step), []


def hop_events(
    interaction: JSONObject,
    steps: Sequence[JSONObject],
    *,
    checkpoint: Callable[[int], str] | None = None,
) -> list[JSONObject]:
    """The events of one hop, without ``event_id`` (see ``number_events``).

    Args:
        interaction: The final interaction JSON (without ``steps``).
        steps: The hop's steps.
        checkpoint: Called with ``i + 1`` after step ``i`` stops; returns a checkpoint token to announce
            in an ``interaction.status_update``.
    """
    head = {k: interaction[k] for k in ("id", "object", "model", "created") if k in interaction}
    interaction_id = interaction["id"]
    events: list[JSONObject] = [
        {"event_type": "interaction.created", "interaction": {**head, "status": "in_progress"}},
        {
            "event_type": "interaction.status_update",
            "interaction_id": interaction_id,
            "status": "in_progress",
        },
    ]
    for index, step in enumerate(steps):
        start, deltas = _deltas(step)
        events.append({"event_type": "step.start", "index": index, "step": start})
        events.extend({"event_type": "step.delta", "index": index, "delta": delta} for delta in deltas)
        events.append({"event_type": "step.stop", "index": index})
        if checkpoint is not None:
            events.append(
                {
                    "event_type": "interaction.status_update",
                    "interaction_id": interaction_id,
                    "status": "in_progress",
                    "continuation_token": checkpoint(index + 1),
                }
            )
    events.append({"event_type": "interaction.completed", "interaction": interaction})
    return events


def number_events(events: Sequence[JSONObject]) -> list[JSONObject]:
    """Sets ``event_id`` on deltas, checkpoints and the completion, from each event's 1-based position."""
    out = []
    for position, event in enumerate(events, start=1):
        kind = event["event_type"]
        if kind in ("step.delta", "interaction.completed", "error") or "continuation_token" in event:
            out.append({"event_type": kind, "event_id": f"evt_{position:06d}", **event})
        else:
            out.append(event)
    return out


def encode_event(event: JSONObject) -> bytes:
    """One SSE event: an ``event:`` line with the ``event_type`` and a ``data:`` line with the JSON."""
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event['event_type']}\ndata: {data}\n\n".encode()


def iter_chunks(events: Sequence[JSONObject], *, done: bool) -> Iterator[bytes]:
    """Encoded events, then ``[DONE]`` if ``done``."""
    for event in events:
        yield encode_event(event)
    if done:
        yield DONE_EVENT
