"""Pure HTTP logic of the Files API and of stored interactions: uploads, ``GET`` and ``DELETE``.

Upload (reference §11), as the official SDK speaks it: ``POST {base}/upload/{version}/files`` with
``X-Goog-Upload-Protocol: resumable`` and ``X-Goog-Upload-Command: start`` (the size and the MIME type in
``X-Goog-Upload-Header-*``, ``{"file": {"mime_type", "display_name"}}`` as body); the answer's
``x-goog-upload-url`` names the session, to which the bytes go in chunks of ``UPLOAD_CHUNK`` bytes, each a
``POST`` with ``X-Goog-Upload-Command: upload`` (``upload, finalize`` for the last) and
``X-Goog-Upload-Offset``; the last answer is ``{"file": File}``. Nothing here sends anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import httpx

from convstore.client._http import STORED, ClientConfig, _extensions, _headers, _url
from convstore.client._payloads import file_expiration
from convstore.errors import APIError, CreateOutcomeUnknownError

__all__ = [
    "UPLOAD_CHUNK",
    "build_delete_request",
    "build_upload_chunk",
    "build_upload_start",
    "file_expiration",
    "file_json",
    "outcome_unknown",
    "stored_create",
    "upload_url",
]

UPLOAD_CHUNK: Final = 8 * 1024 * 1024  # the SDK's chunk size


def build_upload_start(
    config: ClientConfig, *, size: int, mime_type: str, display_name: str | None = None
) -> httpx.Request:
    """The request that opens a resumable upload session of ``size`` bytes."""
    headers = _headers(config, stream=False, has_body=True)
    headers.update(
        {
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(size),
            "X-Goog-Upload-Header-Content-Type": mime_type,
        }
    )
    meta: dict[str, Any] = {"mime_type": mime_type}
    if display_name is not None:
        meta["display_name"] = display_name
    return httpx.Request(
        "POST",
        f"{config.base_url}/upload/{config.api_version}/files",
        headers=headers,
        json={"file": meta},
        extensions=_extensions(config),
    )


def upload_url(response: httpx.Response) -> str:
    """The session URL of an upload start's answer.

    Raises:
        APIError: The answer names none.
    """
    url = response.headers.get("x-goog-upload-url")
    if not url:
        raise APIError("the upload start answer has no x-goog-upload-url", status_code=response.status_code)
    return str(url)


def build_upload_chunk(
    config: ClientConfig, url: str, chunk: bytes, *, offset: int, final: bool
) -> httpx.Request:
    """One chunk of an upload session, at ``offset`` bytes (``final``: the last, finalizing it)."""
    headers = {
        "x-goog-api-key": config.api_key,
        "X-Goog-Upload-Command": "upload, finalize" if final else "upload",
        "X-Goog-Upload-Offset": str(offset),
        "content-type": "application/octet-stream",
    }
    return httpx.Request("POST", url, headers=headers, content=chunk, extensions=_extensions(config))


def build_delete_request(config: ClientConfig, interaction_id: str) -> httpx.Request:
    """``DELETE .../interactions/{id}``."""
    return httpx.Request(
        "DELETE",
        _url(config, interaction_id),
        headers=_headers(config, stream=False, has_body=False),
        extensions=_extensions(config),
    )


def file_json(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``File`` of an upload's final answer (``{"file": File}``), with snake_case keys.

    Raises:
        APIError: No file with a ``uri`` in it.
    """
    found = body.get("file")
    if not isinstance(found, Mapping) or not isinstance(found.get("uri"), str):
        raise APIError("the upload's final answer holds no file with a uri")
    return {_snake(key): value for key, value in found.items()}


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)




def stored_create(request: httpx.Request) -> bool:
    """Whether ``request`` creates an interaction the server keeps (``store`` true or absent)."""
    return request.extensions.get(STORED) is True


# Transport errors raised before a byte of the request was sent: retrying them never duplicates anything.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def outcome_unknown(
    stored: bool, exc: Exception | None, status_code: int | None, attempts: int
) -> CreateOutcomeUnknownError | None:
    """The error that ends a ``store: true`` create whose outcome is unknown, or None (retry as usual).

    A create the server keeps is retried only when it provably never reached the server: a connection
    that could not be opened, or a refusal before processing (408, 409, 429, 4xx). After a break once the
    connection was open (a reset, a read timeout, a broken answer) or a 5xx answer, the server may have
    stored an interaction; a retry could store a second one, so none is made.
    """
    if not stored:
        return None
    if exc is not None:
        if isinstance(exc, _NOT_SENT):
            return None
        cause = type(exc).__name__
    elif status_code is not None and 500 <= status_code <= 599:
        cause = f"HTTP {status_code}"
    else:
        return None
    return CreateOutcomeUnknownError(
        f"a store: true create may have reached the server ({cause} after {attempts} attempt(s)); "
        "not retried, since a retry could store a second interaction",
        cause=cause,
        attempts=attempts,
        status_code=status_code,
    )
