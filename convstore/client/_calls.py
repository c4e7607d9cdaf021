"""The state machines of one ``create`` and one ``stream`` call, shared by the sync and async clients.

A call is a sequence of HTTP requests: the first one, then continuation hops (reference §8) and, for a
stream, resumes after a broken connection (§7-§8). These classes decide every request and interpret every
response; the clients only send what ``next_request`` returns and hand back what they received. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

import httpx

from convstore.client._events import EventDecoder, StreamEvent, StreamResumed
from convstore.client._http import (
    ClientConfig,
    ReplySize,
    build_create_request,
    build_get_request,
    continuation_body,
    parse_json_body,
)
from convstore.client._stream import TurnAssembler
from convstore.errors import StreamError
from convstore.model._interaction import Interaction

__all__ = ["MAX_HOPS", "StreamCall", "UnaryCall"]

JSONObject = dict[str, Any]

_SLICE: Final = 65536

MAX_HOPS: Final = 64
"""Continuation hops followed in one call at most, a guard against a service handing out tokens forever."""


def _check_body(body: Mapping[str, Any]) -> JSONObject:
    if not isinstance(body, Mapping):
        raise TypeError(f"body must be a mapping, got {type(body).__name__}")
    return dict(body)


def _next_token(hop: Mapping[str, Any], sent_token: str | None) -> str | None:
    """The token to continue from after ``hop``, or ``None``: stop (§8: also when it is the token sent)."""
    if hop.get("status") != "requires_continuation":
        return None
    token = hop.get("continuation_token")
    if not isinstance(token, str) or not token or token == sent_token:
        return None
    return token


def _hop_id(hop: Mapping[str, Any]) -> str | None:
    value = hop.get("id")
    return value if isinstance(value, str) and value else None


class UnaryCall:
    """One non-streamed ``create``, following continuation hops when asked to.

    Usage by an executor::

        call = UnaryCall(config, body, auto_continue=None)
        while (request := call.next_request()) is not None:
            call.on_response(send(request))  # a 2xx response, body read
        interaction = call.result()
    """

    def __init__(self, config: ClientConfig, body: Mapping[str, Any], *, auto_continue: bool | None) -> None:
        self._config = config
        self._body = _check_body(body)
        if self._body.get("stream"):
            raise ValueError("the body asks for a stream: use stream() instead of create()")
        self._auto = config.auto_continue if auto_continue is None else auto_continue
        token = self._body.get("continuation_token")
        self._sent_token: str | None = token if isinstance(token, str) and token else None
        self._hops: list[JSONObject] = []
        self._first: Interaction | None = None
        self._next: httpx.Request | None = build_create_request(config, self._body, stream=False)

    def next_request(self) -> httpx.Request | None:
        """The request to send next, or ``None`` when the call is complete."""
        request, self._next = self._next, None
        return request

    def on_response(self, response: httpx.Response, content: bytes | None = None) -> None:
        """Takes the successful (2xx) response to the last request, and its body.

        Args:
            response: The response, read unless ``content`` is given.
            content: Its (decoded) body, read by the executor (``None``: ``response.content``).

        Raises:
            APIError: The body is not a JSON object.
            CodecError: The body is not an interaction (no ``status``).
        """
        hop = parse_json_body(response, self._config.limits, content=content)
        interaction = Interaction.from_json(hop)  # validate now, where the failing hop is known
        if not self._hops:
            self._first = interaction  # the result of a call of one hop
        self._hops.append(hop)
        token = _next_token(hop, self._sent_token) if self._auto and len(self._hops) < MAX_HOPS else None
        if token is not None:
            self._sent_token = token
            body = continuation_body(self._body, token, _hop_id(hop))
            self._next = build_create_request(self._config, body, stream=False)

    def result(self) -> Interaction:
        """The interaction, merged over its hops."""
        if not self._hops:
            raise RuntimeError("the call has not received a response yet")
        if len(self._hops) == 1 and self._first is not None:
            return self._first  # what ``from_hops`` makes of one hop: ``from_json`` of it
        return Interaction.from_hops(self._hops)


class StreamCall:
    """One streamed ``create``: decoding, reassembly, continuation hops and resumes after a broken connection.

    Usage by an executor::

        call = StreamCall(config, body, auto_continue=None)
        while (request := call.next_request()) is not None:
            response = send(request)  # a 2xx response, body not read
            yield from call.open(response)
            try:
                for chunk in response.iter_bytes():
                    yield from call.feed(chunk)
                    if call.response_done:
                        break
            except httpx.TransportError as exc:
                call.broken(exc)
            else:
                call.end_of_body()
        interaction = call.interaction

    Resume after a broken connection (at most ``max_retries`` times in a row without progress): a stored
    interaction (``store`` not false) whose events carried an ``event_id`` is replayed with ``GET
    .../interactions/{id}?stream=true&last_event_id=...`` (nothing is generated or billed again); otherwise
    the decode continues from the newest checkpoint token (§8), discarding what arrived after it; with
    neither, ``StreamError``.

    Attributes:
        turn: The reassembly state (steps so far, last event id, checkpoint).
        interaction: The final interaction, once ``next_request`` returned ``None``.
    """

    def __init__(self, config: ClientConfig, body: Mapping[str, Any], *, auto_continue: bool | None) -> None:
        self._config = config
        self._body = _check_body(body)
        self._auto = config.auto_continue if auto_continue is None else auto_continue
        self._stored = self._body.get("store") is not False
        token = self._body.get("continuation_token")
        self._sent_token: str | None = token if isinstance(token, str) and token else None
        self.turn = TurnAssembler()
        self._decoder = EventDecoder(config.limits)
        self._size: ReplySize | None = None
        self._next: httpx.Request | None = build_create_request(config, self._body, stream=True)
        self._marker: StreamResumed | None = None
        self._failed_resumes = 0
        self._completed_hops = 0
        self._progress_at_break: tuple[Any, ...] | None = None
        self.interaction: Interaction | None = None

    def next_request(self) -> httpx.Request | None:
        """The request to open next, or ``None`` when the turn is complete (``interaction`` is then set)."""
        request, self._next = self._next, None
        if request is None and self.interaction is None and self.turn.hops:
            self.interaction = Interaction.from_hops(self.turn.hops)
        return request

    def open(self, response: httpx.Response) -> list[StreamEvent]:
        """Starts decoding a successful response.

        Returns:
            Events to yield first: a ``StreamResumed`` marker when this response carries on the turn.

        Raises:
            StreamError: The response is not an event stream.
        """
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise StreamError(f"expected text/event-stream, got {content_type or 'no content type'!r}")
        self._decoder = EventDecoder(self._config.limits)
        self._size = ReplySize(response.request, self._config.limits, response.headers)
        marker, self._marker = self._marker, None
        return [marker] if marker is not None else []

    def feed(self, chunk: bytes) -> Iterator[StreamEvent]:
        """Decodes and reassembles one chunk, yielding its events one by one.

        Raises:
            APIError: An ``error`` event arrived.
            StreamError: The stream is malformed.
            LimitExceededError: The response, a line or an event of it is beyond ``Limits``.
        """
        # Large chunks (a buffered body) are decoded in slices: the events of one slice are built together,
        # and a few hundred at a time keeps memory flat and the garbage collector quiet.
        if self._size is not None:
            self._size.add(len(chunk))
        for start in range(0, len(chunk), _SLICE):
            for event in self._decoder.feed(chunk[start : start + _SLICE]):
                self.turn.feed(event)
                yield event

    @property
    def response_done(self) -> bool:
        """``data: [DONE]`` arrived: stop reading this response."""
        return self._decoder.done

    def end_of_body(self) -> None:
        """The response ended (EOF or ``[DONE]``): finish the hop and plan a continuation hop if needed.

        Raises:
            StreamError: The hop ended without ``interaction.completed``.
        """
        truncated = self._decoder.end()
        if self.turn.current.completed is None:
            where = " inside an event" if truncated else ""
            raise StreamError(
                f"the stream of interaction {self.turn.current.interaction_id!r} ended{where} "
                "before interaction.completed"
            )
        hop = self.turn.finish_hop()
        self._completed_hops += 1
        self._failed_resumes = 0
        token = _next_token(hop, self._sent_token) if self._auto and len(self.turn.hops) < MAX_HOPS else None
        if token is not None:
            self._sent_token = token
            self._plan_create(token, _hop_id(hop), reason="continuation")

    def broken(self, exc: Exception) -> None:
        """The connection broke while reading: plan a resume.

        Args:
            exc: The transport error (chained to a ``StreamError`` if the stream cannot resume).

        Raises:
            StreamError: No way to resume, or too many resumes without progress.
        """
        turn = self.turn
        if turn.current.completed is not None:  # everything arrived but the end of the body
            self.end_of_body()
            return
        # Progress = a hop completed, a newer event id, or a newer checkpoint since the last break. Rewinds
        # add hops too, so they are not counted.
        progress = (self._completed_hops, turn.last_event_id, turn.checkpoint_token)
        self._failed_resumes = self._failed_resumes + 1 if progress == self._progress_at_break else 1
        self._progress_at_break = progress
        hop_id = turn.current.interaction_id
        if self._failed_resumes > self._config.max_retries or len(turn.hops) >= MAX_HOPS:
            raise StreamError(
                f"the stream of interaction {hop_id!r} broke {self._failed_resumes} time(s) without progress "
                f"({len(turn.hops)} hop(s) so far)"
            ) from exc
        if self._stored and hop_id and turn.last_event_id:
            last_event_id = turn.last_event_id
            self._next = build_get_request(self._config, hop_id, stream=True, last_event_id=last_event_id)
            self._marker = StreamResumed(reason="replay", hop=len(turn.hops))
        elif turn.checkpoint_token:
            token, owner = turn.rewind_to_checkpoint()
            self._sent_token = token
            self._plan_create(token, owner, reason="checkpoint")
        else:
            raise StreamError(
                f"the stream of interaction {hop_id!r} broke ({type(exc).__name__}) with no checkpoint token"
                + (" or event id" if self._stored else "")
                + " to resume from"
            ) from exc

    def _plan_create(self, token: str, owner: str | None, *, reason: Any) -> None:
        body = continuation_body(self._body, token, owner)
        self._next = build_create_request(self._config, body, stream=True)
        self._marker = StreamResumed(reason=reason, hop=len(self.turn.hops))
