"""The Starlette application behind ``convstore serve``: routes that read the store and render templates.

Every page reads through convstore's public API (``Store``, ``summaries()``, ``Conversation``, ``tree()``,
``nodes()``, ``node()``, ``exchanges()``), so encrypted payloads and inline media kept apart read exactly as
the library reads them, and an encrypted conversation stays closed unless the server was given the keyring.
A conversation opens on ``main`` or else its oldest branch, as every ``convstore`` command does
(``open_default``, shared with the command line). Handlers are plain functions
(Starlette runs them in its thread pool; the store is thread-safe); the event stream is the one coroutine,
polling the branch heads in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode

import anyio
import anyio.to_thread
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import convstore
from convstore.conversation._frontend import displayable, open_default
from convstore.web import _graph, _views
from convstore.web import _search as _search_page
from convstore.web._security import MEDIA_CSP, Guard, csrf_token, new_token, valid_csrf

__all__ = ["Settings", "create_app"]

PAGE_SIZE = 50  # conversations a page
PREVIEW_CHARS = 120  # of each conversation's first message in the list
SEARCH_PAGES = 20  # store pages of 200 scanned by one search request before it offers to go on
STEPS_PAGE = 200  # steps of a branch a page (the newest by default)
COMPARE_PAGE = 50  # exchanges side by side a page (the summary counts them all)
USAGE_BUDGET = 20_000  # path steps walked to read every branch's recorded usage; bigger trees: per branch
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
OWNER_STORES = 16
FORM_TYPE = "application/x-www-form-urlencoded"  # the page's forms; parsed here (no multipart package)
MAX_FORM = 16 * 1024
MAX_FORM_FIELDS = 8  # the page's forms have at most three
MEDIA_PIECE = 256 * 1024  # characters of base64 read at a time when serving media (192 KiB of bytes)

# Media types a browser may show from the page; anything else is offered as a download.
SHOWN = ("image/", "audio/", "video/")


class Settings:
    """What the server was started with.

    Args:
        url: The database URL.
        keyring: Opens encrypted conversations; without it they are listed and withheld.
        allow_writes: Show and accept the write actions (fork, delete).
        token: The access token (random when None).
        hosts: The ``Host`` headers accepted (None: any, for tests).
        cookie: The access cookie's name.
        prefix: The path the page lives under (``/s-<random>``; "" for the root): the cookie is scoped to
            it, so no other service on the host is sent it.
        poll_seconds: How often the event stream looks at the branch heads.
    """

    def __init__(
        self,
        url: str,
        *,
        keyring: convstore.Keyring | None = None,
        allow_writes: bool = False,
        token: str | None = None,
        hosts: Sequence[str] | None = None,
        cookie: str = "convstore_token",
        prefix: str = "",
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.url = url
        self.keyring = keyring
        self.allow_writes = allow_writes
        self.token = token or new_token()
        self.hosts = hosts
        self.cookie = cookie
        self.prefix = prefix.rstrip("/")
        self.poll_seconds = poll_seconds
        # Set when the server begins to stop: the event streams end at their next poll, so the server does
        # not have to cancel them.
        self.stopping = threading.Event()


class _Stores:
    """The store, and a few bound to one owner each (search by owner), opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.main = convstore.Store(settings.url, keyring=settings.keyring)
        self._owned: OrderedDict[str, convstore.Store] = OrderedDict()
        self._lock = threading.Lock()  # handlers run in several threads

    def owned(self, owner: str) -> convstore.Store:
        with self._lock:
            if owner in self._owned:
                self._owned.move_to_end(owner)
                return self._owned[owner]
            store = convstore.Store(self._settings.url, keyring=self._settings.keyring, owner=owner)
            self._owned[owner] = store
            if len(self._owned) > OWNER_STORES:
                # Disposed, not broken: a request still using it gets a new pool.
                self._owned.popitem(last=False)[1].close()
            return store

    def close(self) -> None:
        with self._lock:
            for store in self._owned.values():
                store.close()
            self.main.close()


def _environment(root: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("convstore.web", "templates"),
        autoescape=True,  # every template: what the store holds is attacker-controlled text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["url"] = lambda path, **query: root + _url(path, **query)
    env.globals["root"] = root
    env.filters["fmt"] = lambda n: "-" if n is None else f"{n:,}"
    return env


def _url(path: str, **query: Any) -> str:
    """A path with its query; values (branch names, ids typed by a user) are percent-encoded."""
    kept = {k: v for k, v in query.items() if v is not None and v != ""}
    return path + (f"?{urlencode(kept)}" if kept else "")


class _Page(Exception):
    """An error page: ``status`` and a message naming ids only."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Site:
    """The routes' handlers, sharing the settings, the templates and the stores (opened on first use)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = _environment(settings.prefix)
        self._stores: _Stores | None = None
        self._lock = threading.Lock()

    @property
    def stores(self) -> _Stores:
        with self._lock:
            if self._stores is None:
                self._stores = _Stores(self.settings)
            return self._stores

    def close(self) -> None:
        with self._lock:
            if self._stores is not None:
                self._stores.close()

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(
            writes=self.settings.allow_writes,
            csrf=csrf_token(self.settings.token) if self.settings.allow_writes else "",
            keyring=self.settings.keyring is not None,
            **context,
        )
        # Stored text with a lone surrogate (no UTF-8 page can carry one) shows U+FFFD rather than failing.
        return HTMLResponse(displayable(html), status_code=status)

    def page(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """``handler`` with convstore's errors turned into error pages (ids only, never content)."""

        def wrapped(request: Request) -> Response:
            try:
                return handler(request)
            except _Page as error:
                return self.render("error.html", error.status, message=str(error))
            except convstore.KeyringRequiredError as error:
                message = (
                    f"conversation {error.conversation_id} is encrypted: its content is withheld "
                    "(start convstore serve with --keyring to read it)"
                )
                return self.render("error.html", 403, message=message)
            except convstore.EncryptionError as error:
                return self.render("error.html", 403, message=f"{type(error).__name__}: {error}")
            except convstore.NotFoundError as error:
                return self.render("error.html", 404, message=str(error))
            except ValueError as error:  # a branch name or id the store refuses (a NUL, too long)
                return self.render("error.html", 400, message=str(error).splitlines()[0])

        return wrapped

    def write(self, handler: Callable[[Request, Mapping[str, str]], Response]) -> Callable[[Request], Any]:
        """A POST handler behind the checks: writes allowed, same origin, the CSRF token."""

        async def wrapped(request: Request) -> Response:
            if not self.settings.allow_writes:
                return Response("writes are off: start convstore serve with --allow-writes\n", 403)
            origin = request.headers.get("origin")
            if origin is not None and origin not in _origins(request):
                return Response("cross-origin write refused\n", 403)
            if request.headers.get("content-type", "").split(";")[0] != FORM_TYPE:
                return Response(f"expected a form ({FORM_TYPE})\n", 415)
            form = await _read_form(request)
            if isinstance(form, Response):
                return form
            if not valid_csrf(self.settings.token, form.get("csrf")):
                return Response("missing or wrong CSRF token: reload the page\n", 403)
            return await anyio.to_thread.run_sync(self.page(lambda r: handler(r, form)), request)

        return wrapped

    def conversation(self, cid: str, branch: str | None = None) -> convstore.Conversation:
        return open_default(self.stores.main, cid, branch)

    def index(self, request: Request) -> Response:
        q = request.query_params.get("q", "").strip()
        owner = request.query_params.get("owner", "").strip()
        cursor = request.query_params.get("cursor") or None
        try:
            source = self.stores.owned(owner) if owner else self.stores.main
        except ValueError as error:  # not an owner id (too long, a NUL)
            raise _Page(400, str(error)) from None
        try:
            items, next_cursor = _search(source, q, cursor)
        except ValueError:  # a cursor that is not one of ours
            raise _Page(400, "not a page cursor") from None
        return self.render("index.html", rows=items, q=q, owner=owner, next_cursor=next_cursor)

    def search(self, request: Request) -> Response:
        """Full-text search (``_search``): a page of hits, each linking to its branches at the node."""
        q = request.query_params.get("q", "").strip()
        owner = request.query_params.get("owner", "").strip()
        context: dict[str, Any] = {"q": q, "owner": owner, "rows": [], "encrypted": 0, "next_cursor": None}
        if not q:
            return self.render("search.html", error="", **context)
        try:
            source = self.stores.owned(owner) if owner else self.stores.main
            page = source.search(q, cursor=request.query_params.get("cursor") or None)
        except convstore.SearchQueryError as error:
            return self.render("search.html", 400, error=str(error), **context)
        except ValueError as error:  # not an owner id (too long, a NUL)
            raise _Page(400, str(error)) from None
        context.update(
            rows=_search_page.hit_rows(source, page),
            encrypted=page.encrypted_conversations,
            next_cursor=page.next_cursor,
        )
        return self.render("search.html", error="", **context)

    def tree(self, request: Request) -> Response:
        conv = self.conversation(request.path_params["cid"])
        tree = conv.tree(media=False)
        usage = _usage(conv, tree)
        name = "tree_part.html" if request.query_params.get("part") == "tree" else "tree.html"
        rows = _views.segments(tree)
        # One URL a branch, made once: a big tree names each branch on many rows.
        branch_urls = {
            b.name: self.settings.prefix + _url(f"/c/{conv.id}/branch", b=b.name) for b in tree.branches
        }
        return self.render(
            name,
            conv=conv,
            rows=rows,
            graph=_graph.render_svg(rows, branch_urls, f"{self.settings.prefix}/c/{conv.id}"),
            branches=_views.branch_rows(tree, usage),
            branch_urls=branch_urls,
            usage_read=usage is not None,
            nodes=len(tree.nodes),
        )

    def branch(self, request: Request) -> Response:
        conv = self.conversation(request.path_params["cid"], request.query_params.get("b") or None)
        nodes = conv.nodes(media=False)
        default = max(0, len(nodes) - STEPS_PAGE)
        try:
            start = min(max(0, int(request.query_params.get("start", default))), max(0, len(nodes) - 1))
        except ValueError:
            raise _Page(400, "start: not a number") from None
        exchanges = conv.exchanges()
        return self.render(
            "branch.html",
            conv=conv,
            views=[_views.step_view(node) for node in nodes[start : start + STEPS_PAGE]],
            start=start,
            total=len(nodes),
            page=STEPS_PAGE,
            branches=[b.name for b in conv.branches()],
            files=_views.file_counts(conv),
            exchanges=len(exchanges),
            usage={
                "input": sum(x.input_tokens or 0 for x in exchanges),
                "output": sum(x.output_tokens or 0 for x in exchanges),
                "thought": sum(x.thought_tokens or 0 for x in exchanges),
            },
            head_tokens=nodes[-1].total_tokens if nodes else 0,
            last_id=nodes[-1].id if nodes else "",
            live=start + STEPS_PAGE >= len(nodes),
        )

    def steps_after(self, request: Request) -> Response:
        """The steps of a branch after a node (the event stream's update), as a fragment."""
        conv = self.conversation(request.path_params["cid"], request.query_params.get("b") or None)
        after = request.query_params.get("node", "")
        nodes = conv.nodes(media=False)
        ids = [node.id for node in nodes]
        if after and after not in ids:
            raise _Page(409, "the branch no longer holds that node: reload")
        shown = nodes[ids.index(after) + 1 :] if after else nodes
        if len(shown) > STEPS_PAGE:
            raise _Page(409, "more new steps than a page: reload")
        return self.render("steps_part.html", conv=conv, views=[_views.step_view(n) for n in shown])

    def compare(self, request: Request) -> Response:
        base = self.conversation(request.path_params["cid"])
        names = [b.name for b in base.branches()]
        a = request.query_params.get("a") or (names[0] if names else "main")
        b = request.query_params.get("b") or (names[1] if len(names) > 1 else a)
        comparison = _views.compare(base.checkout(a).nodes(media=False), base.checkout(b).nodes(media=False))
        try:
            start = max(0, int(request.query_params.get("start", 0)))
        except ValueError:
            raise _Page(400, "start: not a number") from None
        return self.render(
            "compare.html",
            conv=base,
            a=a,
            b=b,
            branches=names,
            comparison=comparison,
            shown=comparison.pairs[start : start + COMPARE_PAGE],
            start=start,
            page=COMPARE_PAGE,
            step_view=_views.step_view,
        )

    def media(self, request: Request) -> Response:
        """One inline media item of a step, decoded and streamed from the store a piece at a time (memory
        bounded by a piece, whatever the size of the media); shown only for image, audio and video types
        whose type is a well-formed MIME type, else offered as a download."""
        node_id, number = request.path_params["node"], request.path_params["n"]
        conv = self.conversation(request.path_params["cid"])
        items = _views.media_items(conv.node(node_id, media=False).data)
        if number >= len(items):
            raise _Page(404, f"node {node_id} has no media {number}")
        data = items[number]["data"]
        mime = _views.media_type(items[number]["mime_type"])
        headers = {"content-security-policy": MEDIA_CSP}
        if mime is None or not mime.startswith(SHOWN) or "svg" in mime:
            mime = "application/octet-stream"
            headers["content-disposition"] = f'attachment; filename="{node_id}-{number}"'
        if not data.startswith(convstore.MEDIA_REF):  # a small one, kept in the step itself
            try:
                return Response(base64.b64decode(data, validate=True), media_type=mime, headers=headers)
            except (binascii.Error, ValueError):
                raise _Page(422, f"media {number} of node {node_id} is not base64") from None
        pieces = conv.media_chunks(data, chunk_chars=MEDIA_PIECE)
        first = _decoded(next(pieces, ""), node_id, number)  # a broken first piece is still an error page
        return StreamingResponse(
            _stream_media(first, pieces, node_id, number), media_type=mime, headers=headers
        )

    async def events(self, request: Request) -> Response:
        try:
            conv = await anyio.to_thread.run_sync(self.conversation, request.path_params["cid"])
        except convstore.ConvstoreError:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return StreamingResponse(
            _event_stream(request, conv, self.settings.poll_seconds, self.settings.stopping),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    def fork(self, request: Request, form: Mapping[str, str]) -> Response:
        cid = request.path_params["cid"]
        at, name = str(form.get("at", "")), str(form.get("name", "")).strip() or None
        try:
            new = self.conversation(cid).fork(at=at, branch=name)
        except ValueError as error:  # a bad branch name, or BranchExistsError
            raise _Page(400, str(error)) from None
        return RedirectResponse(
            self.settings.prefix + _url(f"/c/{cid}/branch", b=new.branch), status_code=303
        )

    def delete(self, request: Request, form: Mapping[str, str]) -> Response:
        self.stores.main.delete_conversation(request.path_params["cid"])
        return RedirectResponse(f"{self.settings.prefix}/", status_code=303)


def create_app(settings: Settings) -> Guard:
    """The ASGI application: the routes behind the guard (token, CSRF, headers)."""
    site = _Site(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        site.close()

    app = Starlette(
        routes=[
            Route("/", site.page(site.index)),
            Route("/search", site.page(site.search)),
            Route("/c/{cid}", site.page(site.tree)),
            Route("/c/{cid}/branch", site.page(site.branch)),
            Route("/c/{cid}/branch/after", site.page(site.steps_after)),
            Route("/c/{cid}/compare", site.page(site.compare)),
            Route("/c/{cid}/media/{node}/{n:int}", site.page(site.media)),
            Route("/c/{cid}/events", site.events),
            Route("/c/{cid}/fork", site.write(site.fork), methods=["POST"]),
            Route("/c/{cid}/delete", site.write(site.delete), methods=["POST"]),
            Mount("/static", StaticFiles(packages=[("convstore.web", "static")]), name="static"),
        ],
        lifespan=lifespan,
    )
    return Guard(
        app, token=settings.token, hosts=settings.hosts, cookie=settings.cookie, prefix=settings.prefix
    )


async def _read_form(request: Request) -> dict[str, str] | Response:
    """The form of a POST, or the 4xx answer to a form beyond the limits (read no further than them)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM):
        return Response(f"form too large (at most {MAX_FORM} bytes)\n", 413, media_type="text/plain")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return Response(f"form too large (at most {MAX_FORM} bytes)\n", 413, media_type="text/plain")
    try:
        parsed = parse_qs(body.decode("latin-1"), max_num_fields=MAX_FORM_FIELDS, strict_parsing=False)
    except ValueError:  # more fields than the limit
        return Response(
            f"bad form: at most {MAX_FORM_FIELDS} fields\n", status_code=400, media_type="text/plain"
        )
    return {key: values[0] for key, values in parsed.items()}


def _decoded(piece: str, node_id: str, number: int) -> bytes:
    try:
        return base64.b64decode(piece, validate=True)
    except (binascii.Error, ValueError):
        raise _Page(422, f"media {number} of node {node_id} is not base64") from None


def _stream_media(first: bytes, pieces: Iterator[str], node_id: str, number: int) -> Iterator[bytes]:
    """The media's bytes, a piece at a time (Starlette iterates this in a worker thread)."""
    yield first
    for piece in pieces:
        try:
            yield base64.b64decode(piece, validate=True)
        except (binascii.Error, ValueError):
            return  # the response has begun: end it short (the browser shows a broken image)


def _origins(request: Request) -> set[str]:
    host = request.headers.get("host", "")
    return {f"http://{host}", f"https://{host}"}


def _search(
    store: convstore.Store, q: str, cursor: str | None
) -> tuple[list[convstore.ConversationSummary], str | None]:
    """A page of conversation summaries, newest first; with ``q``, those whose id, model or first message
    holds it.

    The store lists pages, it does not search: a search reads pages of 200 until it has a page of matches
    or has read ``SEARCH_PAGES`` of them, then offers the cursor to go on.
    """
    if not q:
        page = store.summaries(limit=PAGE_SIZE, cursor=cursor, preview_chars=PREVIEW_CHARS)
        return page.items, page.next_cursor
    needle = q.lower()
    found: list[convstore.ConversationSummary] = []
    for _ in range(SEARCH_PAGES):
        page = store.summaries(limit=200, cursor=cursor, preview_chars=PREVIEW_CHARS)
        found += [
            item
            for item in page.items
            if needle in item.info.id
            or needle in (item.info.model or "").lower()
            or needle in (item.first_message or "").lower()
        ]
        cursor = page.next_cursor
        if cursor is None or len(found) >= PAGE_SIZE:
            break
    return found, cursor


def _usage(conv: convstore.Conversation, tree: convstore.Tree) -> dict[str, list[convstore.Exchange]] | None:
    """Each branch's recorded exchanges, when reading them all is cheap enough; else None.

    The store reads a branch's exchanges by walking the branch from its head (one query a branch, as long as
    the branch), so the cost is the sum of the branches' lengths: bounded by ``USAGE_BUDGET`` steps here.
    Bigger trees show each branch's on its own page.
    """
    depth = {node.id: node.depth + 1 for node in tree.nodes}
    walked = sum(depth.get(b.head_id or "", 0) for b in tree.branches)
    if walked > USAGE_BUDGET:
        return None
    return {b.name: conv.checkout(b.name).exchanges() for b in tree.branches}


def _heads(conv: convstore.Conversation) -> dict[str, str | None]:
    return {b.name: b.head_id for b in conv.branches()}


async def _event_stream(
    request: Request, conv: convstore.Conversation, poll: float, stopping: threading.Event
) -> AsyncIterator[str]:
    """Server-sent events: ``heads`` (branch name -> head id) at the start and whenever one moves."""
    seen: dict[str, str | None] | None = None
    quiet = 0.0
    yield "retry: 2000\n\n"
    while not stopping.is_set() and not await request.is_disconnected():
        try:
            heads = await anyio.to_thread.run_sync(_heads, conv)
        except convstore.ConversationNotFoundError:
            yield "event: gone\ndata: {}\n\n"
            return
        if heads != seen:
            seen = heads
            quiet = 0.0
            yield f"event: heads\ndata: {json.dumps(heads)}\n\n"
        elif quiet >= HEARTBEAT_SECONDS:
            quiet = 0.0
            yield ": still here\n\n"
        await anyio.sleep(poll)
        quiet += poll
