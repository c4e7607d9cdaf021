# Generated from convstore/client/_async/genai.py by scripts/unasync.py: do not edit.
"""``GenAIClient``: convstore's client with the official google-genai SDK sending the requests.

It is an ``InteractionsClient`` in everything ``conv.send`` and ``conv.stream`` see (``create(body)``
returns the merged ``Interaction``, ``stream(body)`` the same ``Stream`` of typed events), and the same
call state machines decide every request; only ``_send`` differs: the SDK's ``with_raw_response`` sends it
(see ``_genai`` for the translation and the errors). Written once, for asyncio, in ``client/_async/``;
``scripts/unasync.py`` generates its blocking twin in ``client/_sync/``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import httpx

from convstore.client import _genai
from convstore.client._calls import StreamCall, UnaryCall
from convstore.client._files import build_delete_request, file_json
from convstore.client._http import build_get_request, parse_json_body
from convstore.client._sync.client import Stream
from convstore.model._interaction import Interaction

if TYPE_CHECKING:
    from google import genai

__all__ = ["GenAIClient"]


class _Body(httpx.SyncByteStream):
    """The body of the SDK's streamed response, with its HTTP library's network errors as httpx's."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self._errors = _genai.transport_errors()

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_bytes()
        except httpx.TransportError:
            raise
        except self._errors as exc:
            raise httpx.RemoteProtocolError(f"{type(exc).__name__} in the SDK's HTTP client") from exc

    def close(self) -> None:
        self._response.close()


class GenAIClient:
    """The Interactions API through the official SDK, for ``conv.send`` and ``conv.stream``.

    ::

        sdk = genai.Client()
        client = convstore.GenAIClient(sdk)
        conv.send("Hello!", client=client)

    Continuation hops are followed and merged, and a broken stream resumed, by convstore, exactly as
    ``InteractionsClient`` does; the SDK sends each request with its own authentication, base URL,
    timeout and retries (``http_options``).

    Args:
        client: The SDK's ``genai.Client`` (the asyncio client sends with its ``.aio``, and takes a
            ``genai.Client().aio`` as well); ``None`` makes a
            ``genai.Client()`` from the environment (``GEMINI_API_KEY``), closed by ``close()``.
        auto_continue: Follow ``requires_continuation`` and return the merged turn (per call too).
        max_resumes: Resumes of a broken stream without progress (opening a request is retried by the SDK).

    Raises:
        ImportError: The google-genai SDK is not installed (the message says how to install it).
    """

    # conv.send and conv.stream may hand this client a body whose input is spliced (``convstore._wire``).
    _takes_spliced_input = True

    def __init__(
        self,
        client: genai.Client | genai.client.Client | None = None,
        *,
        auto_continue: bool = True,
        max_resumes: int = 4,
    ) -> None:
        self._config = _genai.sdk_config(auto_continue=auto_continue, max_resumes=max_resumes)
        self._owned: Any = None
        if client is None:
            client = self._owned = _genai.load_genai().Client()
        # Held: the SDK client closes its HTTP client when it is garbage-collected.
        self._sdk: Any = client
        owner = _genai.sdk_owner(client, asynchronous=False)
        self._interactions: Any = owner.interactions
        self._files: Any = owner.files

    def __repr__(self) -> str:
        return f"{type(self).__name__}(auto_continue={self._config.auto_continue!r})"

    def create(self, body: Mapping[str, Any], *, auto_continue: bool | None = None) -> Interaction:
        """Creates an interaction and returns it, following continuation hops.

        Args:
            body: The create body, e.g. from ``conv.request(...)``.
            auto_continue: Override the client's ``auto_continue`` for this call.

        Returns:
            The interaction (merged over its continuation hops).

        Raises:
            APIError: The service answered with an error (after the SDK's retries).
            APIConnectionError: No answer.
            ValueError: The body asks for a stream.
        """
        call = UnaryCall(self._config, body, auto_continue=auto_continue)
        while (request := call.next_request()) is not None:
            call.on_response(self._send(request, stream=False))
        return call.result()

    def stream(self, body: Mapping[str, Any], *, auto_continue: bool | None = None) -> Stream:
        """Creates an interaction with a streamed response; nothing is sent until it is iterated.

        Returns:
            The stream of convstore's typed events (``StepDelta``, ...), as ``InteractionsClient``
            streams them.
        """
        return Stream(self, StreamCall(self._config, body, auto_continue=auto_continue))

    def upload_file(
        self,
        source: bytes | IO[bytes],
        *,
        mime_type: str,
        size: int | None = None,
        display_name: str | None = None,
    ) -> dict[str, Any]:
        """``InteractionsClient.upload_file`` through the SDK's ``files.upload`` (which measures the file
        itself: ``size`` is not used; ``source`` must be seekable)."""
        del size
        config: dict[str, Any] = {"mime_type": mime_type}
        if display_name is not None:
            config["display_name"] = display_name
        stream = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
        try:
            uploaded = self._files.upload(file=stream, config=config)
        except Exception as exc:
            error = _genai.error_from_sdk(exc, httpx.Request("POST", "https://upload.invalid/upload/files"))
            if error is None:
                raise
            raise error from exc
        return file_json({"file": uploaded.model_dump(mode="json", exclude_none=True)})

    def get(self, interaction_id: str) -> dict[str, Any]:
        """The stored interaction ``interaction_id`` (its whole timeline in ``steps``), as wire JSON.

        Raises:
            APIError: Not found (404), or another refusal.
        """
        request = build_get_request(self._config, interaction_id, stream=False)
        return parse_json_body(self._send(request, stream=False), self._config.limits)

    def delete(self, interaction_id: str) -> None:
        """Deletes the stored interaction ``interaction_id`` on the server.

        Raises:
            APIError: Not found (404), or another refusal.
        """
        self._send(build_delete_request(self._config, interaction_id), stream=False)

    def _send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        """Sends ``request`` through the SDK; returns its successful response or raises ``APIError``."""
        call = _genai.sdk_call(request)
        try:
            raw = getattr(self._interactions.with_raw_response, call.method)(*call.args, **call.kwargs)
        except Exception as exc:
            error = _genai.error_from_sdk(exc, request)
            if error is None:
                raise
            raise error from exc
        response = raw.http_response
        # Only the content type is kept: the body is decoded already, and the executor reads nothing else.
        status, headers = response.status_code, {"content-type": response.headers.get("content-type", "")}
        if stream:
            return httpx.Response(status, headers=headers, stream=_Body(response), request=request)
        return httpx.Response(status, headers=headers, content=response.content, request=request)

    def close(self) -> None:
        """Closes the SDK client if this client made it."""
        if self._owned is not None:
            _genai.sdk_owner(self._owned, asynchronous=False).close()

    def __enter__(self) -> GenAIClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
