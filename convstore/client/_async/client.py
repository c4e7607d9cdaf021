"""The client: a thin executor of the pure call logic in ``_calls`` and ``_http``.

Written once, for asyncio, in ``client/_async/``; ``scripts/unasync.py`` generates its blocking twin in
``client/_sync/``, and a test fails when the two drift apart. Keep everything but sending and sleeping in the
pure modules.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from types import TracebackType
from typing import IO, Any, Protocol

import httpx

from convstore._limits import Limits
from convstore.client._calls import StreamCall, UnaryCall
from convstore.client._deadline import Deadline
from convstore.client._events import StreamEvent
from convstore.client._files import (
    UPLOAD_CHUNK,
    build_delete_request,
    build_upload_chunk,
    build_upload_start,
    file_json,
    outcome_unknown,
    stored_create,
    upload_url,
)
from convstore.client._http import (
    DEFAULT_API_REVISION,
    DEFAULT_API_VERSION,
    ReplySize,
    RetryState,
    build_get_request,
    connection_error,
    make_config,
    parse_json_body,
    read_response,
)
from convstore.client._inflate import Inflater, inflatable
from convstore.client._sleep import AsyncSleep, default_sleep_async
from convstore.errors import APIConnectionError
from convstore.model._interaction import Interaction

__all__ = ["AsyncInteractionsClient", "AsyncStream"]

logger = logging.getLogger("convstore.client")


class _Sends(Protocol):
    """What a stream needs of its client: send a request, get the 2xx response (``GenAIClient`` too)."""

    async def _send(self, request: httpx.Request, *, stream: bool) -> httpx.Response: ...


def _body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The decoded body, a piece at a time: ``gzip`` and ``deflate`` inflated here at most ``PIECE`` bytes
    at a time (so the caller counts them as they come), other encodings by httpx."""
    encoding = inflatable(response.headers)
    if encoding is None or response.is_stream_consumed:  # a transport that read it whole already
        return response.aiter_bytes()
    return _inflated(response, encoding)


async def _inflated(response: httpx.Response, encoding: str) -> AsyncIterator[bytes]:
    inflater = Inflater(encoding)
    try:
        async for raw in response.aiter_raw():
            inflater.push(raw)
            while piece := inflater.piece():
                yield piece
    except zlib.error as exc:
        raise httpx.DecodingError(f"not valid {encoding} ({exc})", request=response.request) from None


class AsyncInteractionsClient:
    """A client of the Gemini Interactions API (``POST /interactions``) for client-side conversations.

    Args:
        api_key: The API key; ``None`` reads ``GEMINI_API_KEY``. It is sent as ``x-goog-api-key`` and
            never appears in reprs, logs or exception messages.
        base_url: Scheme and host (``https://generativelanguage.googleapis.com`` by default).
        api_version: Path prefix, ``v1beta`` by default.
        api_revision: The ``Api-Revision`` header (``None`` to omit it).
        http_client: An ``httpx`` client to send with (its transport, proxies and limits are used; this
            client's ``timeout`` is applied per request). Not closed by ``aclose()``.
        timeout: Seconds per HTTP request (each read of a reply, each connect); ``None`` waits forever.
        deadline: Seconds for a whole call: every attempt, every wait between retries and every read of
            its reply, streamed or not (``APIConnectionError`` once it passed). ``None`` (default): no bound
            but ``timeout`` per read, which a server sending a byte a second never trips. Per call too.
        max_retries: Retries of opening a request (408, 409, 429, 5xx, transport errors), and resumes of
            a broken stream without progress.
        auto_continue: Follow ``requires_continuation`` and return the merged turn (per call too).
        sleep: The sleep used between retries, seconds in (tests pass a recorder).
        limits: Bounds on what is read (``convstore.Limits``): the bytes of a reply body, of an event
            stream's lines and events, JSON nesting, and the longest ``Retry-After`` that is slept.

    Raises:
        ValueError: No API key was given or found.
        TypeError: ``limits`` is not a ``convstore.Limits``.
    """

    # conv.send and conv.stream may hand this client a body whose input is spliced (``convstore._wire``).
    _takes_spliced_input = True

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        api_revision: str | None = DEFAULT_API_REVISION,
        http_client: httpx.AsyncClient | None = None,
        timeout: float | None = 60.0,
        max_retries: int = 4,
        auto_continue: bool = True,
        sleep: AsyncSleep | None = None,
        limits: Limits | None = None,
        deadline: float | None = None,
    ) -> None:
        self._config = make_config(
            api_key,
            os.environ,
            base_url=base_url,
            api_version=api_version,
            api_revision=api_revision,
            timeout=timeout,
            max_retries=max_retries,
            auto_continue=auto_continue,
            limits=limits,
            deadline=deadline,
        )
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self._sleep = sleep if sleep is not None else default_sleep_async

    def __repr__(self) -> str:
        config = self._config
        return f"{type(self).__name__}(base_url={config.base_url!r}, api_version={config.api_version!r})"

    async def create(
        self, body: Mapping[str, Any], *, auto_continue: bool | None = None, deadline: float | None = None
    ) -> Interaction:
        """Creates an interaction and returns it, following continuation hops.

        Args:
            body: The create body (reference §2), e.g. ``{"model", "store": False, "input": [...]}``.
            auto_continue: Override the client's ``auto_continue`` for this call.
            deadline: Seconds for this whole call, hops and retries included (the client's by default).

        Returns:
            The interaction (merged over its continuation hops).

        Raises:
            APIError: The service answered with an error (after retries).
            APIConnectionError: No answer (after retries), or the deadline passed.
            ValueError: The body asks for a stream.
        """
        call = UnaryCall(self._config, body, auto_continue=auto_continue)
        bound = Deadline(deadline if deadline is not None else self._config.deadline)
        while (request := call.next_request()) is not None:
            call.on_response(*await self._attempts(request, stream=False, deadline=bound))
        return call.result()

    def stream(
        self, body: Mapping[str, Any], *, auto_continue: bool | None = None, deadline: float | None = None
    ) -> AsyncStream:
        """Creates an interaction with a streamed response.

        Nothing is sent until the stream is iterated::

            async with client.stream(body) as stream:
                async for event in stream:
                    print(event)
            interaction = stream.interaction

        Args:
            body: The create body (``stream`` is set for you).
            auto_continue: Override the client's ``auto_continue`` for this call.
            deadline: Seconds for the whole stream, from its first request to its last event (the
                client's by default); then ``APIConnectionError``.

        Returns:
            The stream of typed events.
        """
        bound = Deadline(deadline if deadline is not None else self._config.deadline)
        return AsyncStream(self, StreamCall(self._config, body, auto_continue=auto_continue), bound)

    async def upload_file(
        self,
        source: bytes | IO[bytes],
        *,
        mime_type: str,
        size: int | None = None,
        display_name: str | None = None,
    ) -> dict[str, Any]:
        """Uploads a file through the Files API's resumable protocol, in chunks of 8 MiB.

        Args:
            source: The bytes, or a binary file object read from its current position (one chunk in
                memory at a time).
            mime_type: The file's MIME type (``image/png``, ``application/pdf``, ...).
            size: The bytes left to read from ``source`` (a file object's remaining length by default).
            display_name: A name the service shows.

        Returns:
            The ``File`` (snake_case keys): ``name``, ``uri``, ``mime_type``, ``expiration_time``, ...

        Raises:
            APIError: The service refused a request (after retries).
        """
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            size = len(data)
            reader: IO[bytes] | None = None
        else:
            data, reader = b"", source
            if size is None:
                start = source.tell()
                size = source.seek(0, os.SEEK_END) - start
                source.seek(start)
        start_request = build_upload_start(
            self._config, size=size, mime_type=mime_type, display_name=display_name
        )
        url = upload_url(await self._send(start_request, stream=False))
        offset = 0
        while True:
            chunk = reader.read(UPLOAD_CHUNK) if reader is not None else data[offset : offset + UPLOAD_CHUNK]
            final = offset + len(chunk) >= size or not chunk
            response = await self._send(
                build_upload_chunk(self._config, url, chunk, offset=offset, final=final), stream=False
            )
            offset += len(chunk)
            if final:
                return file_json(parse_json_body(response, self._config.limits))

    async def get(self, interaction_id: str) -> dict[str, Any]:
        """The stored interaction ``interaction_id`` (its whole timeline in ``steps``), as wire JSON.

        Raises:
            APIError: Not found (404: never stored, deleted or past its retention), or another refusal.
        """
        response = await self._send(
            build_get_request(self._config, interaction_id, stream=False), stream=False
        )
        return parse_json_body(response, self._config.limits)

    async def delete(self, interaction_id: str) -> None:
        """Deletes the stored interaction ``interaction_id`` on the server.

        Raises:
            APIError: Not found (404), or another refusal.
        """
        await self._send(build_delete_request(self._config, interaction_id), stream=False)

    async def _read(
        self, response: httpx.Response, *, strict: bool, deadline: Deadline | None = None
    ) -> bytes:
        """The body, read a chunk at a time against ``max_reply_bytes``; closes the response.

        ``strict``: beyond the limit raise ``LimitExceededError``; else (an error body) keep what fit.
        """
        chunks: list[bytes] = []
        try:
            size = ReplySize(response.request, self._config.limits, response.headers if strict else None)
            async for chunk in _body(response):
                if deadline is not None:
                    deadline.check(response.request)
                if not strict and size.count + len(chunk) > size.maximum:
                    break
                size.add(len(chunk))
                chunks.append(chunk)
        finally:
            await response.aclose()
        return b"".join(chunks)

    async def _send(
        self, request: httpx.Request, *, stream: bool, deadline: Deadline | None = None
    ) -> httpx.Response:
        """Sends with retries; returns a 2xx response (read unless ``stream``) or raises ``APIError``.

        Bodies are read incrementally, never beyond ``Limits.max_reply_bytes``, and, with a ``deadline``,
        never past it (each attempt's timeouts cut to the time left, its body checked at each chunk).
        """
        response, content = await self._attempts(request, stream=stream, deadline=deadline)
        return response if content is None else read_response(response, content)

    async def _attempts(
        self, request: httpx.Request, *, stream: bool, deadline: Deadline | None = None
    ) -> tuple[httpx.Response, bytes | None]:
        """``_send``'s attempts: the 2xx response and, unless ``stream``, its body, read (the response
        closed)."""
        limits = self._config.limits
        retry = RetryState(self._config.max_retries, max_wait=limits.max_retry_wait)
        bound = deadline if deadline is not None else Deadline(None)
        stored = stored_create(request)
        while True:
            bound.check(request)
            try:
                response = await self._http.send(bound.bound(request), stream=True)
                if response.is_success:
                    if stream:
                        return response, None
                    return response, await self._read(response, strict=True, deadline=bound)
                content = await self._read(response, strict=False, deadline=bound)
            except httpx.TransportError as exc:
                unknown = outcome_unknown(stored, exc, None, retry.attempts + 1)
                if unknown is not None:
                    raise unknown from exc
                bound.check(request)  # a timeout cut to the deadline: say so
                delay = retry.after_transport_error()
                if delay is None:
                    raise connection_error(request, exc, retry.attempts) from exc
                reason = type(exc).__name__
            else:
                unknown = outcome_unknown(stored, None, response.status_code, retry.attempts + 1)
                if unknown is not None:
                    raise unknown from retry.error(response.status_code, content)
                delay = retry.after_status(response.status_code, response.headers)
                if delay is None:
                    raise retry.error(response.status_code, content)
                reason = f"HTTP {response.status_code}"
            logger.info(
                "retrying %s %s after %s in %.2f s (attempt %d)",
                request.method,
                request.url.path,
                reason,
                delay,
                retry.attempts + 1,
            )
            if not bound.allows(delay):
                raise APIConnectionError(
                    f"{request.method} {request.url.path}: the next attempt would start after the call's "
                    f"deadline of {bound.seconds:g} s"
                )
            await self._sleep(delay)

    async def aclose(self) -> None:
        """Closes the HTTP client if this client created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncInteractionsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncStream:
    """The events of one streamed turn, and the interaction they assemble into.

    Iterate it once; events are typed per ``event_type`` (``StepDelta``, ...) plus a
    ``StreamResumed`` marker when the turn carries on in a new request. After the last event,
    ``interaction`` holds the assembled (and, over hops, merged) interaction.

    Attributes:
        interaction: The final interaction, or ``None`` until the stream is exhausted.
    """

    def __init__(self, client: _Sends, call: StreamCall, deadline: Deadline | None = None) -> None:
        self._client = client
        self._call = call
        self._deadline = deadline if deadline is not None else Deadline(None)
        self._events = self._iterate()

    @property
    def interaction(self) -> Interaction | None:
        """The assembled interaction once the stream is exhausted, else ``None``."""
        return self._call.interaction

    def current_steps(self) -> list[dict[str, Any]]:
        """A copy of the steps assembled so far (for redrawing after a ``StreamResumed``)."""
        return self._call.turn.steps()

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events

    async def get_final_interaction(self) -> Interaction:
        """Consumes the remaining events and returns the interaction.

        Raises:
            APIError: An error response or ``error`` event.
            StreamError: The stream broke beyond repair or is malformed.
        """
        async for _ in self._events:
            pass
        interaction = self._call.interaction
        if interaction is None:
            raise RuntimeError("the stream was closed before it completed")
        return interaction

    async def _iterate(self) -> AsyncGenerator[StreamEvent, None]:
        call = self._call
        while (request := call.next_request()) is not None:
            self._deadline.check(request)
            response = await self._client._send(self._deadline.bound(request), stream=True)
            try:
                for event in call.open(response):
                    yield event
                try:
                    async for chunk in response.aiter_bytes():
                        self._deadline.check(request)
                        for event in call.feed(chunk):
                            yield event
                        if call.response_done:
                            break
                except httpx.TransportError as exc:
                    call.broken(exc)
                else:
                    call.end_of_body()
            finally:
                await response.aclose()

    async def aclose(self) -> None:
        """Stops the stream and releases its connection."""
        await self._events.aclose()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
