"""``convstore serve``: a local web page to browse, compare and fork conversation trees.

A generic SQL viewer cannot show a convstore database (payloads may be encrypted, inline media is kept
apart), so the page reads through convstore's public API, as an application would. It lists conversations
(paged, newest first, searchable by id, model and owner), draws a conversation's tree with its branches and
their token usage, renders a branch's steps by type (text, thoughts, function calls and results, media,
raw JSON for types this version does not know), puts two branches side by side with their differences
marked, follows new turns as they are recorded (server-sent events), and, with ``--allow-writes``, forks at
a node and deletes conversations.

Safe by default: it listens on 127.0.0.1 only, every request needs the random token of the URL it prints,
writes need a CSRF token, everything stored is escaped, a strict Content-Security-Policy allows no inline
script and nothing from elsewhere (it works offline), and encrypted conversations stay withheld unless the
server was given the keyring.

Needs the ``web`` extra (Starlette, Jinja2, uvicorn): ``pip install "convstore[web]"``. Importing this
package does not import them; ``create_app`` and ``Settings`` do, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convstore.web._app import Settings, create_app

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from convstore.web import _app  # noqa: PLC0415 -- the web extra, imported on first use

        return getattr(_app, name)
    raise AttributeError(f"module 'convstore.web' has no attribute {name!r}")
