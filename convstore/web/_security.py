"""The page's guard: an access token on every request, CSRF tokens on writes, strict response headers.

As notebook servers do it: ``convstore serve`` prints a URL carrying a random token (``?token=...``); the
first request with it gets a cookie (HttpOnly, SameSite=Strict) and is redirected to the same URL without the
token, so it leaves the address bar and the history. Every other request must carry the cookie (or the
token): static files, media and the event stream included. Browsers send a cookie to every port of a host,
so the page lives under a random path (``/s-<random>/``, the ``prefix``) and the cookie is scoped to it: a
service on another port of 127.0.0.1 is never sent the cookie unless it is asked for that path, which
nothing but the printed URL names. The ``Host`` header must name the loopback
address the server listens on, which keeps DNS-rebinding pages out even before the token is checked.

Writes are POSTs whose form carries a CSRF token (derived from the access token, never sent in a URL) and,
when the browser sends one, an ``Origin`` that is this server. Every response gets a Content-Security-Policy
that allows no inline script or style and nothing from elsewhere, and headers that keep it out of frames,
caches and other sites' ``Referer`` (same-origin: with no referrer at all, browsers send
``Origin: null`` on the page's own forms).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from urllib.parse import urlencode

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "Guard", "csrf_token", "new_token", "valid_csrf"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Media bytes are served as they were stored (an SVG may hold script): on their own, nothing runs.
MEDIA_CSP = "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox"

HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def new_token() -> str:
    """A random access token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def csrf_token(token: str) -> str:
    """The CSRF token of a server: derived from its access token, so it needs no storage."""
    return hmac.new(token.encode(), b"convstore-csrf", hashlib.sha256).hexdigest()


def valid_csrf(token: str, supplied: object) -> bool:
    return isinstance(supplied, str) and hmac.compare_digest(supplied.encode(), csrf_token(token).encode())


def _same(supplied: str | None, token: str) -> bool:
    return supplied is not None and hmac.compare_digest(supplied.encode(), token.encode())


class Guard:
    """ASGI middleware: the Host check, the token or its cookie, and the security headers on every answer.

    Args:
        app: The application behind it.
        token: The access token.
        hosts: The ``Host`` values accepted (``127.0.0.1:PORT``, ``localhost:PORT``); None accepts any
            (Starlette's TestClient sends ``testserver``).
        cookie: The cookie's name (one a port, so two servers on one machine keep theirs apart).
        prefix: The path the page lives under (``/s-...``; "" for the root), the cookie's path.
    """

    def __init__(
        self, app: ASGIApp, *, token: str, hosts: Iterable[str] | None, cookie: str, prefix: str = ""
    ) -> None:
        self.app = app
        self.token = token
        self.hosts = None if hosts is None else frozenset(hosts)
        self.cookie = cookie
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.prefix:
            path = scope["path"]
            if not path.startswith(self.prefix + "/"):
                # Not under the page's path: nothing here (and no hint of where the page is).
                await _with_headers(_not_here())(scope, receive, send)
                return
            scope = {**scope, "root_path": scope.get("root_path", "") + self.prefix}
        request = Request(scope)
        refused = self._refusal(request)
        if refused is not None:
            await _with_headers(refused)(scope, receive, send)
            return
        supplied = request.query_params.get("token")
        if supplied is not None and _same(supplied, self.token):
            await _with_headers(self._welcome(request))(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> Response | None:
        if self.hosts is not None and request.headers.get("host") not in self.hosts:
            return PlainTextResponse("unknown Host: open the URL convstore serve printed\n", status_code=421)
        supplied = request.query_params.get("token")
        if supplied is not None:
            return None if _same(supplied, self.token) else _forbidden()
        return None if _same(request.cookies.get(self.cookie), self.token) else _forbidden()

    def _welcome(self, request: Request) -> Response:
        """The token's first use: the cookie, and the same URL without the token."""
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        path = request.url.path + (f"?{urlencode(query)}" if query else "")
        response = RedirectResponse(path, status_code=303)
        response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict", path=f"{self.prefix}/")
        return response


def _not_here() -> Response:
    return PlainTextResponse("not found: open the URL that `convstore serve` printed\n", status_code=404)


def _forbidden() -> Response:
    return PlainTextResponse(
        "forbidden: open the URL that `convstore serve` printed (it carries the access token)\n",
        status_code=403,
    )


def _with_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response
