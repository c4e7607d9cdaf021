"""The emulator's Files API and its clock: uploads that expire, as the real service's do (reference §11).

``FileService`` speaks the resumable upload protocol the official SDK speaks (``POST /upload/{v}/files``
with ``X-Goog-Upload-Command: start``, then ``upload`` / ``upload, finalize`` chunks to the session URL),
answers ``GET``/``DELETE /{v}/files/{id}`` and ``GET /{v}/files``, and forgets a file once the clock passes
its ``expiration_time`` (48 hours after the upload by default). A create request that names a file it does
not hold (expired, deleted, never uploaded) is refused as the service refuses it: 403 ``PERMISSION_DENIED``.

Time comes from a clock (a callable returning an aware UTC ``datetime``): ``ManualClock`` is one a test
moves by hand, shared with convstore's own ``Lifecycle`` so both sides agree on what has expired.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from convstore.testing._validate import RequestError

__all__ = ["FILES_URI_PREFIX", "FileService", "ManualClock", "real_clock"]

FILES_URI_PREFIX = "https://generativelanguage.googleapis.com/v1beta/files/"
_FILE_ID = re.compile(r"/files/([a-z0-9-]{1,40})$")
Clock = Callable[[], datetime]


def real_clock() -> datetime:
    """The current time (UTC)."""
    return datetime.now(timezone.utc)


class ManualClock:
    """A clock that moves only when told: ``clock()`` is the time, ``clock.advance(hours=49)`` moves it.

    Args:
        start: The initial time (aware); now by default.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else real_clock()
        if self._now.tzinfo is None:
            raise ValueError("ManualClock: pass an aware datetime")

    def __call__(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | None = None, *, hours: float = 0, days: float = 0) -> None:
        """Move the clock forward by ``delta`` plus ``hours`` and ``days``."""
        self._now += (delta or timedelta()) + timedelta(hours=hours, days=days)

    def __repr__(self) -> str:
        return f"ManualClock({self._now.isoformat()})"


def _rfc3339(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.define
class _Stored:
    meta: dict[str, Any]
    data: bytes
    expires: datetime


@attrs.define
class _Session:
    mime_type: str
    display_name: str | None
    declared: int | None
    chunks: list[bytes] = attrs.field(factory=list)

    @property
    def size(self) -> int:
        return sum(map(len, self.chunks))


def _json(
    status: int, body: Any, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return (
        status,
        {"content-type": "application/json; charset=utf-8", **(headers or {})},
        json.dumps(body).encode(),
    )


def _gone(file_id: str) -> RequestError:
    return RequestError(
        f"You do not have permission to access the File {file_id} or it may not exist.",
        status_code=403,
        status="PERMISSION_DENIED",
    )


def content_uris(value: Any) -> Iterator[str]:
    """Every ``uri`` of a content-like object (``{"type", "uri", ...}``) anywhere inside ``value``."""
    if isinstance(value, dict):
        uri = value.get("uri")
        if isinstance(uri, str) and "type" in value:
            yield uri
        for item in value.values():
            yield from content_uris(item)
    elif isinstance(value, list):
        for item in value:
            yield from content_uris(item)


class FileService:
    """The Files API's state (see the module docstring); the emulator calls it under its lock.

    Args:
        clock: Returns the current time.
        ttl: How long an uploaded file is kept.
        seed: Mixed into file ids.
    """

    def __init__(self, *, clock: Clock, ttl: timedelta, seed: str) -> None:
        self.clock = clock
        self.ttl = ttl
        self._seed = seed
        self._files: dict[str, _Stored] = {}
        self._sessions: dict[str, _Session] = {}
        self._counter = 0
        self.uploads = 0

    def _new_id(self, kind: str) -> str:
        self._counter += 1
        return hashlib.sha256(f"{self._seed}:{kind}:{self._counter}".encode()).hexdigest()[:16]

    def _live(self, file_id: str) -> _Stored | None:
        stored = self._files.get(file_id)
        if stored is not None and stored.expires <= self.clock():
            del self._files[file_id]  # expired: gone for good, as on the service
            return None
        return stored

    def data(self, uri: str) -> bytes | None:
        """The bytes of a live file named by its uri (for tests), or None."""
        found = _FILE_ID.search(uri)
        stored = self._live(found.group(1)) if found else None
        return stored.data if stored is not None else None

    def add(self, data: bytes, *, mime_type: str, file_id: str | None = None) -> dict[str, Any]:
        """Hold a file uploaded out of band (a test's fixture names it); returns its ``File``."""
        session = _Session(mime_type=mime_type, display_name=None, declared=None, chunks=[data])
        return self._finish(session, file_id or self._new_id("file"))

    def check_input(self, body: Mapping[str, Any]) -> None:
        """Refuse a create body that names a Files API uri this service does not hold (403)."""
        for uri in content_uris(body.get("input")):
            if not uri.startswith(FILES_URI_PREFIX):
                continue
            found = _FILE_ID.search(uri)
            if found is None or self._live(found.group(1)) is None:
                raise _gone(uri.rsplit("/", 1)[-1])

    # -- HTTP -----------------------------------------------------------------------------------------

    def route(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        *,
        base_url: str,
    ) -> tuple[int, dict[str, str], bytes] | None:
        """Serve a Files API request (see ``handle``), or None: the path is not the Files API's."""
        parts = path.strip("/").split("/")
        if len(parts) < 2 or "files" not in parts[:3] or parts[0] not in ("upload", "v1beta", "v1"):
            return None
        return self.handle(method, parts, query, headers, body, base_url=base_url)

    def handle(
        self,
        method: str,
        parts: list[str],
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        *,
        base_url: str,
    ) -> tuple[int, dict[str, str], bytes]:
        """Serve ``/upload/{v}/files...`` (``parts[0] == "upload"``) or ``/{v}/files...``."""
        # A session URL is its own credential (the SDK sends chunks without the key), as on the service.
        if "upload_id" not in query and not (headers.get("x-goog-api-key") or headers.get("authorization")):
            raise RequestError("API key missing", status_code=401, status="UNAUTHENTICATED")
        if parts[0] == "upload":
            if method != "POST" or len(parts) != 3:
                raise RequestError("unsupported upload request", status_code=405, status="UNIMPLEMENTED")
            upload_id = query.get("upload_id")
            if upload_id is None:
                return self._start(parts[1], headers, body, base_url)
            return self._chunk(upload_id, headers, body)
        if len(parts) == 2:
            if method != "GET":
                raise RequestError(f"{method} is not allowed here", status_code=405, status="UNIMPLEMENTED")
            live = [meta for meta in (self._live(i) for i in list(self._files)) if meta is not None]
            return _json(200, {"files": [stored.meta for stored in live]} if live else {})
        file_id = parts[2]
        stored = self._live(file_id)
        if stored is None:
            raise _gone(file_id)
        if method == "DELETE":
            del self._files[file_id]
            return _json(200, {})
        if method != "GET":
            raise RequestError(f"{method} is not allowed here", status_code=405, status="UNIMPLEMENTED")
        return _json(200, stored.meta)

    def _start(
        self, version: str, headers: Mapping[str, str], body: bytes, base_url: str
    ) -> tuple[int, dict[str, str], bytes]:
        if headers.get("x-goog-upload-protocol") != "resumable":
            raise RequestError("only the resumable upload protocol is emulated")
        if headers.get("x-goog-upload-command") != "start":
            raise RequestError("an upload session starts with X-Goog-Upload-Command: start")
        try:
            meta = json.loads(body or b"{}").get("file") or {}
        except (ValueError, AttributeError) as exc:
            raise RequestError("the upload start body is not a JSON object") from exc
        mime = (
            headers.get("x-goog-upload-header-content-type") or meta.get("mime_type") or meta.get("mimeType")
        )
        if not mime:
            raise RequestError("the file's mime type is missing")
        declared = headers.get("x-goog-upload-header-content-length")
        upload_id = self._new_id("upload")
        self._sessions[upload_id] = _Session(
            mime_type=mime,
            display_name=meta.get("display_name") or meta.get("displayName"),
            declared=int(declared) if declared else None,
        )
        url = f"{base_url}/upload/{version}/files?upload_id={upload_id}&upload_protocol=resumable"
        return _json(200, {}, {"x-goog-upload-url": url, "x-goog-upload-status": "active"})

    def _chunk(
        self, upload_id: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        session = self._sessions.get(upload_id)
        if session is None:
            raise RequestError(f"upload session {upload_id!r} not found", status_code=404, status="NOT_FOUND")
        commands = {c.strip() for c in headers.get("x-goog-upload-command", "").split(",")}
        if "upload" not in commands:
            raise RequestError("X-Goog-Upload-Command must be upload or 'upload, finalize'")
        offset = int(headers.get("x-goog-upload-offset") or 0)
        if offset != session.size:
            raise RequestError(f"X-Goog-Upload-Offset {offset} does not match {session.size} bytes received")
        session.chunks.append(body)
        if "finalize" not in commands:
            return _json(200, {}, {"x-goog-upload-status": "active"})
        del self._sessions[upload_id]
        if session.declared is not None and session.declared != session.size:
            raise RequestError(f"{session.size} bytes received, {session.declared} declared")
        self.uploads += 1
        return _json(
            200, {"file": self._finish(session, self._new_id("file"))}, {"x-goog-upload-status": "final"}
        )

    def _finish(self, session: _Session, file_id: str) -> dict[str, Any]:
        data = b"".join(session.chunks)
        now = self.clock()
        expires = now + self.ttl
        meta = {
            "name": f"files/{file_id}",
            "mime_type": session.mime_type,
            "size_bytes": str(len(data)),
            "create_time": _rfc3339(now),
            "update_time": _rfc3339(now),
            "expiration_time": _rfc3339(expires),
            "sha256_hash": base64.b64encode(hashlib.sha256(data).digest()).decode(),
            "uri": FILES_URI_PREFIX + file_id,
            "state": "ACTIVE",
            "source": "UPLOADED",
        }
        if session.display_name:
            meta["display_name"] = session.display_name
        self._files[file_id] = _Stored(meta=meta, data=data, expires=expires)
        return meta
