"""Stream reassembly (reference §7 "Reassembly"): typed events in, the steps a non-streamed call returns out.

Per event:

1. ``step.start``: ``steps[index] = copy(step)``;
2. ``step.delta`` on ``steps[index]``: ``text`` appends to the last content item if it is text, else pushes a
   text item; media deltas push a content item; ``text_annotation_delta`` extends the last text item's
   ``annotations``; ``thought_summary`` pushes onto ``summary``; ``thought_signature`` sets ``signature``;
   ``arguments_delta`` fragments are concatenated; any other type copies its fields but ``type`` onto the
   step;
3. ``step.stop``: collected ``arguments`` fragments are parsed with ``json.loads``;
4. at the end the steps are returned sorted by ``index``.

Text is gathered in lists and joined once per item, so a long answer in many deltas costs linear time.

A turn may span several hops (continuation, §8). ``TurnAssembler`` keys steps by (hop, index), remembers the
newest checkpoint token with a snapshot of the steps at that point (a resume discards what came after it),
and the last ``event_id`` (a stored interaction's events can be replayed after it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from convstore._limits import loads
from convstore.client._events import (
    ErrorEvent,
    InteractionCompleted,
    InteractionCreated,
    InteractionStatusUpdate,
    StepDelta,
    StepStart,
    StepStop,
    StreamEvent,
)
from convstore.client._payloads import error_from_payload
from convstore.errors import CodecError, StreamError

__all__ = ["HopAssembler", "TurnAssembler"]

JSONObject = dict[str, Any]

_MEDIA_DELTAS: Final = frozenset({"image", "audio", "video", "document"})


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (strings are immutable and shared)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class _StepBuilder:
    """One step under construction: the step dict plus text and argument fragments not yet joined."""

    __slots__ = ("fragments", "step", "text_item", "text_parts")

    def __init__(self, step: JSONObject) -> None:
        self.step = step
        self.text_item: JSONObject | None = None  # the content item ``text_parts`` belongs to
        self.text_parts: list[str] = []
        self.fragments: list[str] | None = None

    def flush_text(self) -> None:
        if self.text_item is not None:
            self.text_item["text"] = "".join(self.text_parts)
            self.text_item = None
            self.text_parts = []

    def content(self) -> list[Any]:
        content = self.step.get("content")
        if not isinstance(content, list):
            content = self.step["content"] = []
        return content

    def add_text(self, delta: Mapping[str, Any]) -> None:
        text = delta.get("text")
        text = text if isinstance(text, str) else ""
        if self.text_item is not None:
            self.text_parts.append(text)
        else:
            content = self.content()
            last = content[-1] if content else None
            if isinstance(last, dict) and last.get("type") == "text":
                previous = last.get("text")
                self.text_parts = [previous if isinstance(previous, str) else "", text]
            else:
                last = {k: v for k, v in delta.items() if k != "annotations"}
                last["text"] = text
                content.append(last)
                self.text_parts = [text]
            self.text_item = last
        annotations = delta.get("annotations")
        if isinstance(annotations, list):
            self._annotate(annotations)

    def _annotate(self, annotations: list[Any]) -> None:
        content = self.content()
        target = self.text_item
        if target is None:
            texts = [c for c in content if isinstance(c, dict) and c.get("type") == "text"]
            target = texts[-1] if texts else None
        if target is None:  # annotations before any text: keep them on an empty text item, never drop them
            target = {"type": "text", "text": ""}
            content.append(target)
        existing = target.get("annotations")
        if isinstance(existing, list):
            existing.extend(_copy(annotations))
        else:
            target["annotations"] = _copy(annotations)

    def apply(self, delta: Mapping[str, Any]) -> None:
        kind = delta.get("type")
        if kind == "text":
            self.add_text(delta)
            return
        if kind == "text_annotation_delta":
            annotations = delta.get("annotations")
            if isinstance(annotations, list):
                self._annotate(annotations)
            return
        self.flush_text()
        if kind in _MEDIA_DELTAS:
            self.content().append(_copy(dict(delta)))
        elif kind == "thought_summary":
            summary = self.step.get("summary")
            if not isinstance(summary, list):
                summary = self.step["summary"] = []
            summary.append(_copy(delta.get("content")))
        elif kind == "thought_signature":
            self.step["signature"] = delta.get("signature")
        elif kind == "arguments_delta":
            if self.fragments is None:
                self.fragments = []
            fragment = delta.get("arguments")
            self.fragments.append(fragment if isinstance(fragment, str) else "")
        else:
            for key, value in delta.items():
                if key != "type":
                    self.step[key] = _copy(value)

    def finish(self, index: int) -> JSONObject:
        self.flush_text()
        if self.fragments is not None:
            try:
                self.step["arguments"] = loads("".join(self.fragments), path=f"step {index}.arguments")
            except CodecError as exc:
                raise StreamError(f"arguments fragments are not valid JSON: {exc}") from None
            self.fragments = None
        return self.step

    def snapshot(self) -> JSONObject:
        self.flush_text()
        step: JSONObject = _copy(self.step)
        return step


class HopAssembler:
    """Reassembles the events of one hop (one interaction) into its steps."""

    def __init__(self) -> None:
        self._builders: dict[int, _StepBuilder] = {}
        self.created: JSONObject = {}
        self.completed: JSONObject | None = None
        self.interaction_id: str | None = None
        self.status: str | None = None

    def feed(self, event: StreamEvent) -> None:
        """Applies one event.

        Raises:
            APIError: The event is an ``error`` event.
            StreamError: A delta or stop names a step that never started, or arguments are not JSON.
        """
        if isinstance(event, StepDelta):
            builder = self._builders.get(event.index)
            if builder is None:
                raise StreamError(f"step.delta for step {event.index} before its step.start")
            builder.apply(event.delta)
        elif isinstance(event, StepStart):
            self._builders[event.index] = _StepBuilder(_copy(event.step))
        elif isinstance(event, StepStop):
            builder = self._builders.get(event.index)
            if builder is None:
                raise StreamError(f"step.stop for step {event.index} before its step.start")
            builder.finish(event.index)
        elif isinstance(event, InteractionStatusUpdate):
            self.interaction_id = event.interaction_id
            self.status = event.status
        elif isinstance(event, InteractionCreated):
            self.created = event.interaction
            self.interaction_id = event.interaction["id"]
            self.status = event.interaction["status"]
        elif isinstance(event, InteractionCompleted):
            self.completed = event.interaction
            self.interaction_id = event.interaction["id"]
            self.status = event.interaction["status"]
        elif isinstance(event, ErrorEvent):
            raise error_from_payload(event.error)

    def steps(self) -> list[JSONObject]:
        """The steps assembled so far, sorted by ``index`` (finishing any open step)."""
        return [self._builders[i].finish(i) for i in sorted(self._builders)]

    def snapshot(self) -> list[JSONObject]:
        """A deep copy of the steps as they are now, open steps included (for a checkpoint)."""
        return [self._builders[i].snapshot() for i in sorted(self._builders)]

    def result(self) -> JSONObject:
        """The hop as a non-streamed response body: the final interaction with the assembled steps.

        Raises:
            StreamError: No ``interaction.completed`` arrived.
        """
        if self.completed is None:
            raise StreamError(
                f"the stream of interaction {self.interaction_id!r} ended before interaction.completed"
            )
        body: JSONObject = {**self.created, **self.completed}
        steps = self.steps()
        if steps or not body.get("steps"):
            body["steps"] = steps
        return body


class _Checkpoint:
    __slots__ = ("hop_id", "steps", "token", "usage")

    def __init__(
        self, token: str, hop_id: str | None, steps: list[JSONObject], usage: JSONObject | None
    ) -> None:
        self.token = token
        self.hop_id = hop_id  # the interaction that issued the token
        self.steps = steps
        self.usage = usage


class TurnAssembler:
    """Reassembles one turn across hops; tracks the resume points of reference §7-§8.

    Attributes:
        hops: The finished hops' response bodies, in order.
        current: The hop being received.
        last_event_id: The newest ``event_id`` seen in the current hop.
    """

    def __init__(self) -> None:
        self.hops: list[JSONObject] = []
        self.current = HopAssembler()
        self.last_event_id: str | None = None
        self._checkpoint: _Checkpoint | None = None

    @property
    def checkpoint_token(self) -> str | None:
        """The newest continuation token of the current hop (a resume point), if any."""
        return self._checkpoint.token if self._checkpoint else None

    @property
    def checkpoint_owner(self) -> str | None:
        """The id of the interaction that issued ``checkpoint_token``."""
        return self._checkpoint.hop_id if self._checkpoint else None

    def feed(self, event: StreamEvent) -> None:
        """Applies one event of the current hop (see ``HopAssembler.feed``)."""
        self.current.feed(event)
        event_id = getattr(event, "event_id", None)
        if event_id:
            self.last_event_id = event_id
        token = None
        usage = None
        if isinstance(event, InteractionStatusUpdate):
            token, usage = event.continuation_token, event.usage
        elif isinstance(event, InteractionCreated):
            token = event.interaction.get("continuation_token") or None
        if isinstance(token, str) and token:
            self._checkpoint = _Checkpoint(token, self.current.interaction_id, self.current.snapshot(), usage)

    def finish_hop(self) -> JSONObject:
        """Closes the current hop after its ``interaction.completed`` and starts a new one.

        Returns:
            The finished hop's response body.
        """
        body = self.current.result()
        self.hops.append(body)
        self._start_hop()
        return body

    def rewind_to_checkpoint(self) -> tuple[str, str | None]:
        """Cuts the broken current hop back to its newest checkpoint, and starts a new hop.

        Output received after the checkpoint is discarded: the next hop generates it again.

        Returns:
            ``(token, owner_id)`` to continue from.

        Raises:
            StreamError: There is no checkpoint.
        """
        checkpoint = self._checkpoint
        if checkpoint is None:
            raise StreamError("the stream broke before any checkpoint")
        hop: JSONObject = {**self.current.created}
        if checkpoint.hop_id is not None:
            hop["id"] = checkpoint.hop_id
        hop["status"] = "requires_continuation"
        hop["continuation_token"] = checkpoint.token
        hop["steps"] = checkpoint.steps
        if checkpoint.usage is not None:
            hop["usage"] = checkpoint.usage
        else:
            hop.pop("usage", None)
        self.hops.append(hop)
        self._start_hop()
        return checkpoint.token, checkpoint.hop_id

    def steps(self) -> list[JSONObject]:
        """Every step of the turn so far: finished hops, then the current hop's (open steps included)."""
        out: list[JSONObject] = []
        for hop in self.hops:
            out.extend(hop.get("steps") or [])
        out.extend(self.current.snapshot())
        return out

    def _start_hop(self) -> None:
        self.current = HopAssembler()
        self.last_event_id = None
        self._checkpoint = None
