"""Pure HTTP logic of the client: configuration, requests, responses, errors and the retry policy.

Nothing here sends anything. ``httpx.Request`` and ``httpx.Response`` are used as plain data; the sync and
async clients only execute what these functions decide, so both flavours behave identically.

Errors (reference §1, E6): ``{"error": {"code", "message", ...}}`` where ``code`` is Google's int with a
``status`` name, or the SDK's string. Retries: statuses 408, 409, 429 and 5xx and transport errors, at most
``max_retries`` times, waiting ``0.5 s * 2**n`` capped at 8 s minus 0-25 % jitter, unless ``retry-after-ms``
or ``Retry-After`` (seconds or an HTTP date) says otherwise. A server wait beyond ``Limits.max_retry_wait``
is not slept: the error is raised at once, with the wait it asked for (``APIError.retry_after``).

Bodies are read incrementally against ``Limits.max_reply_bytes`` (``ReplySize``); nothing beyond the bound is
held, and a ``Content-Length`` beyond it is refused before the body is read.

The API key lives in ``ClientConfig.api_key`` (hidden from its repr) and in the ``x-goog-api-key`` header;
no message built here contains it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any, Final
from urllib.parse import quote

import attrs
import httpx

from convstore._limits import DEFAULT_LIMITS, Limits, check_value, checked_limits, loads
from convstore._wire import SplicedInput, body_bytes
from convstore.client._backoff import backoff_delay, is_retryable_status, retry_after
from convstore.client._payloads import error_from_payload
from convstore.errors import APIConnectionError, APIError, CodecError, LimitExceededError

__all__ = [
    "DEFAULT_API_REVISION",
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "ClientConfig",
    "ReplySize",
    "RetryState",
    "backoff_delay",
    "build_create_request",
    "build_get_request",
    "connection_error",
    "continuation_body",
    "error_from_payload",
    "error_from_response",
    "is_retryable_status",
    "make_config",
    "parse_json_body",
    "read_response",
    "retry_after",
]

DEFAULT_BASE_URL: Final = "https://generativelanguage.googleapis.com"
DEFAULT_API_VERSION: Final = "v1beta"
DEFAULT_API_REVISION: Final = "2026-05-20"
API_KEY_ENV: Final = "GEMINI_API_KEY"

JSONObject = dict[str, Any]


def _version() -> str:
    try:
        return metadata.version("convstore")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


USER_AGENT: Final = f"convstore/{_version()}"


@attrs.frozen(kw_only=True, repr=False)
class ClientConfig:
    """Everything a request needs besides its body.

    Attributes:
        api_key: Sent as ``x-goog-api-key``; never shown.
        base_url: Scheme and host, without a trailing slash.
        api_version: Path prefix, ``v1beta`` by default.
        api_revision: Sent as ``Api-Revision`` (``None``: not sent).
        timeout: Seconds per request (connect, read, write, pool); ``None`` waits forever.
        deadline: Seconds for a whole call (every attempt, every wait between them, every read of its
            reply); ``None``: no bound but ``timeout`` per read.
        max_retries: Retries after the first attempt of opening a request.
        auto_continue: Follow ``requires_continuation`` by default.
        limits: Bounds on what is read: reply and event sizes, nesting, the longest server wait slept.
    """

    api_key: str
    base_url: str = DEFAULT_BASE_URL
    api_version: str = DEFAULT_API_VERSION
    api_revision: str | None = DEFAULT_API_REVISION
    timeout: float | None = 60.0
    deadline: float | None = None
    max_retries: int = 4
    auto_continue: bool = True
    limits: Limits = DEFAULT_LIMITS
    # What every create request of this configuration shares (``_create_parts``), built at the first.
    _parts: dict[bool, _CreateParts] = attrs.field(init=False, factory=dict, eq=False, repr=False)

    def __repr__(self) -> str:
        return (
            f"ClientConfig(base_url={self.base_url!r}, api_version={self.api_version!r}, "
            f"api_revision={self.api_revision!r}, timeout={self.timeout!r}, "
            f"max_retries={self.max_retries!r}, auto_continue={self.auto_continue!r})"
        )


def make_config(
    api_key: str | None,
    environ: Mapping[str, str],
    *,
    base_url: str | None = None,
    api_version: str = DEFAULT_API_VERSION,
    api_revision: str | None = DEFAULT_API_REVISION,
    timeout: float | None = 60.0,
    max_retries: int = 4,
    auto_continue: bool = True,
    limits: Limits | None = None,
    deadline: float | None = None,
) -> ClientConfig:
    """Validates the client's arguments into a ``ClientConfig``.

    Args:
        api_key: The key, or ``None`` to read ``GEMINI_API_KEY`` from ``environ``.
        environ: The environment (``os.environ``).
        base_url: Scheme and host; the public endpoint by default.
        api_version: Path prefix.
        api_revision: ``Api-Revision`` header value, or ``None``.
        timeout: Seconds per request.
        max_retries: Retries after the first attempt, ``>= 0``.
        auto_continue: Default for following ``requires_continuation``.
        limits: Bounds on what is read (``convstore.Limits``; the defaults when ``None``).
        deadline: Seconds for a whole call, retries included (``None``: unbounded).

    Returns:
        The configuration.

    Raises:
        ValueError: No API key was given or found, or ``max_retries`` is negative.
        TypeError: ``limits`` is not a ``Limits``.
    """
    key = api_key if api_key is not None else environ.get(API_KEY_ENV)
    if not key:
        raise ValueError(f"no API key: pass api_key=... or set the {API_KEY_ENV} environment variable")
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    if deadline is not None and not deadline > 0:
        raise ValueError("deadline must be a positive number of seconds (or None)")
    return ClientConfig(
        api_key=key,
        base_url=(base_url or DEFAULT_BASE_URL).rstrip("/"),
        api_version=api_version.strip("/"),
        api_revision=api_revision,
        timeout=timeout,
        max_retries=max_retries,
        auto_continue=auto_continue,
        limits=checked_limits(limits),
        deadline=deadline,
    )


def _headers(config: ClientConfig, *, stream: bool, has_body: bool) -> dict[str, str]:
    headers = {
        "x-goog-api-key": config.api_key,
        "accept": "text/event-stream" if stream else "application/json",
        "user-agent": USER_AGENT,
    }
    if has_body:
        headers["content-type"] = "application/json"
    if config.api_revision:
        headers["Api-Revision"] = config.api_revision
    return headers


def _url(config: ClientConfig, interaction_id: str | None = None) -> str:
    url = f"{config.base_url}/{config.api_version}/interactions"
    return url if interaction_id is None else f"{url}/{quote(interaction_id, safe='')}"


def _extensions(config: ClientConfig) -> dict[str, Any]:
    return {"timeout": httpx.Timeout(config.timeout).as_dict()}


class _CreateParts:
    """The parts of a create request that do not depend on its body: the URL parsed once, the headers
    encoded once (``Host`` first and ``Content-Length`` last, where httpx puts them for ``content=``), the
    timeouts."""

    __slots__ = ("headers", "timeout", "url")

    def __init__(self, config: ClientConfig, *, stream: bool) -> None:
        self.url = httpx.URL(_url(config))
        host = [(b"Host", self.url.netloc)] if self.url.host else []
        self.headers = host + httpx.Headers(_headers(config, stream=stream, has_body=True)).raw
        self.timeout: dict[str, Any] = _extensions(config)["timeout"]


def _create_parts(config: ClientConfig, *, stream: bool) -> _CreateParts:
    parts = config._parts.get(stream)
    if parts is None:  # the first create of this configuration (its errors raised here, as for every one)
        parts = config._parts[stream] = _CreateParts(config, stream=stream)
    return parts


def build_create_request(config: ClientConfig, body: Mapping[str, Any], *, stream: bool) -> httpx.Request:
    """``POST {base_url}/{api_version}/interactions`` with ``body`` (``stream`` set to match).

    Args:
        config: The client configuration.
        body: The create body (reference §2).
        stream: Ask for ``text/event-stream``.

    Returns:
        The request, ready to send (and to re-send on retry).

    Raises:
        LimitExceededError: The body is nested deeper than ``config.limits.max_depth``.
    """
    payload = dict(body)
    if stream:
        payload["stream"] = True
    else:
        payload.pop("stream", None)
    spliced = payload.get("input")
    if isinstance(spliced, SplicedInput):
        # The history's stored texts were bounded when they were written; the rest is checked here.
        rest = {**payload, "input": spliced.steps}
        check_value(rest, path="body", limits=config.limits)
        content = body_bytes(payload)
    else:
        check_value(payload, path="body", limits=config.limits)  # json.dumps recurses: bound the depth first
        content = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    parts = _create_parts(config, stream=stream)
    extensions: dict[str, Any] = {"timeout": dict(parts.timeout)}
    if payload.get("store") is not False:  # the server's default is true
        extensions[STORED] = True
    # What ``httpx.Request(..., content=content)`` builds, from the parts parsed and encoded once: the same
    # URL, the same headers in the same order, the same body (read, as ``content=`` reads it).
    request = httpx.Request(
        "POST",
        parts.url,
        headers=[*parts.headers, (b"Content-Length", str(len(content)).encode())],
        stream=httpx.ByteStream(content),
        extensions=extensions,
    )
    request.read()
    return request


STORED: Final = "convstore.stored_create"  # extension marking a store: true create (``_files``)


def build_get_request(
    config: ClientConfig, interaction_id: str, *, stream: bool, last_event_id: str | None = None
) -> httpx.Request:
    """``GET .../interactions/{id}?stream=...[&last_event_id=...]`` (reference §1, §7 "Resume").

    Args:
        config: The client configuration.
        interaction_id: A stored interaction's id.
        stream: Replay its events as SSE.
        last_event_id: Replay from the event after this one (with ``stream`` only).

    Returns:
        The request.
    """
    params: dict[str, str] = {"stream": "true" if stream else "false"}
    if stream and last_event_id:
        params["last_event_id"] = last_event_id
    return httpx.Request(
        "GET",
        _url(config, interaction_id),
        params=params,
        headers=_headers(config, stream=stream, has_body=False),
        extensions=_extensions(config),
    )


def continuation_body(body: Mapping[str, Any], token: str, token_owner_id: str | None) -> JSONObject:
    """The body of a continuation hop (reference §8).

    With ``store: false`` the same body and ``input`` plus ``continuation_token`` (no
    ``previous_interaction_id``). With ``store`` true or absent, ``previous_interaction_id`` set to the
    interaction that issued the token, and no ``input``. Without an owner id the body is resent with the
    token only.

    Args:
        body: The turn's original create body.
        token: The continuation token to resume from.
        token_owner_id: The id of the interaction that issued ``token``.

    Returns:
        A new body.
    """
    new_body: JSONObject = {**body, "continuation_token": token}
    if body.get("store") is False:
        new_body.pop("previous_interaction_id", None)
    elif token_owner_id:
        new_body["previous_interaction_id"] = token_owner_id
        new_body.pop("input", None)
    return new_body




def error_from_response(status_code: int, content: bytes) -> APIError:
    """An ``APIError`` from an HTTP error response.

    Args:
        status_code: The HTTP status.
        content: The (read) body.

    Returns:
        The error (not raised). A body that is not the service's error shape gives a generic message (the
        body itself is never quoted).
    """
    try:
        body = loads(content)
    except (CodecError, LimitExceededError):
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        return error_from_payload(body["error"], status_code=status_code)
    return APIError(
        f"unexpected error response ({len(content)} bytes, not an error object)", status_code=status_code
    )


def parse_json_body(
    response: httpx.Response, limits: Limits = DEFAULT_LIMITS, *, content: bytes | None = None
) -> JSONObject:
    """The JSON object of a successful, read response.

    Args:
        response: The response (read, unless ``content`` is given).
        limits: The bounds on the body.
        content: The (decoded) body read from ``response`` (``None``: ``response.content``).

    Raises:
        APIError: The body is not a JSON object (or not strict JSON: NaN, a key given twice).
        LimitExceededError: The body is longer than ``limits.max_reply_bytes`` or nested deeper than
            ``limits.max_depth``.
    """
    try:
        body = loads(
            response.content if content is None else content,
            path="reply",
            limits=limits,
            max_bytes=limits.max_reply_bytes,
            limit_name="max_reply_bytes",
        )
    except CodecError:
        body = None
    if not isinstance(body, dict):
        raise APIError(
            f"expected a JSON object from {response.request.method} {response.request.url.path}",
            status_code=response.status_code,
        )
    return body


def connection_error(request: httpx.Request, exc: Exception, attempts: int) -> APIConnectionError:
    """The error raised when a request got no answer after ``attempts`` attempts."""
    return APIConnectionError(
        f"{request.method} {request.url.path} failed after {attempts} attempt(s): {type(exc).__name__}"
    )


_BODY_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def read_response(response: httpx.Response, content: bytes) -> httpx.Response:
    """A copy of a streamed ``response`` holding its (decoded) ``content``, read within the limits."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
    return httpx.Response(response.status_code, headers=headers, content=content, request=response.request)


class RetryState:
    """Counts the attempts of one request and decides whether (and when) to try again.

    Attributes:
        attempts: Attempts made so far.
        refused_wait: A server wait (seconds) beyond ``max_wait`` that made it give up, else ``None``.
    """

    def __init__(
        self,
        max_retries: int,
        *,
        rand: Callable[[], float] = random.random,
        max_wait: float = DEFAULT_LIMITS.max_retry_wait,
    ) -> None:
        self._max_retries = max_retries
        self._rand = rand
        self._max_wait = max_wait
        self.attempts = 0
        self.refused_wait: float | None = None

    def _next(self, server_wait: float | None) -> float | None:
        retry = self.attempts
        self.attempts += 1
        if retry >= self._max_retries:
            return None
        if server_wait is not None and server_wait > self._max_wait:
            self.refused_wait = server_wait
            return None
        return server_wait if server_wait is not None else backoff_delay(retry, rand=self._rand())

    def error(self, status_code: int, content: bytes) -> APIError:
        """The error to raise for the last response, saying so when its wait was beyond ``max_wait``."""
        error = error_from_response(status_code, content)
        if self.refused_wait is not None:
            error = APIError(
                f"{error.message} (not retried: the server asked to wait {self.refused_wait:g} s, more than "
                f"max_retry_wait={self._max_wait:g})",
                status_code=error.status_code,
                code=error.code,
                status=error.status,
                retry_after=self.refused_wait,
            )
        return error

    def after_transport_error(self) -> float | None:
        """The wait before the next attempt after a network failure or timeout, or ``None`` to give up."""
        return self._next(None)

    def after_status(self, status_code: int, headers: Mapping[str, str]) -> float | None:
        """The wait before retrying an error status, or ``None`` (not retryable, or out of retries)."""
        if not is_retryable_status(status_code):
            self.attempts += 1
            return None
        return self._next(retry_after(headers))


class ReplySize:
    """Counts the bytes of one response body as it is read, against ``limits.max_reply_bytes``.

    Usage by an executor: ``size = ReplySize(request, limits, response.headers)`` (refuses a too-long
    ``Content-Length`` at once), then ``size.add(len(chunk))`` for each chunk read.
    """

    def __init__(
        self, request: httpx.Request, limits: Limits, headers: Mapping[str, str] | None = None
    ) -> None:
        self.maximum = limits.max_reply_bytes
        self.count = 0
        self._where = f"reply of {request.method} {request.url.path}"
        declared = (headers or {}).get("content-length", "")
        if declared.isdigit() and int(declared) > self.maximum and "content-encoding" not in (headers or {}):
            raise LimitExceededError("max_reply_bytes", self.maximum, path=self._where, actual=int(declared))

    def add(self, size: int) -> None:
        """Counts ``size`` more bytes.

        Raises:
            LimitExceededError: The body is now longer than the limit.
        """
        self.count += size
        if self.count > self.maximum:
            raise LimitExceededError("max_reply_bytes", self.maximum, path=self._where)

    @property
    def exceeded(self) -> bool:
        return self.count > self.maximum
