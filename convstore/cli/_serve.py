"""``convstore serve``: the command that starts the web page.

Only the argument parser is built at import; the page (``convstore.web``: Starlette, Jinja2 and uvicorn, the
``web`` extra) is imported when the command runs, so the rest of the command line works without them. The
page knows nothing of the command line: this module hands it its ``Settings`` and a listening socket.
"""

from __future__ import annotations

import argparse
import secrets
import socket
from typing import Any

from convstore.cli._common import (
    KEYRING_ENV,
    CliError,
    add_keyring_option,
    command,
    display_url,
    keyring_from_env,
    load_keyring,
    open_store,
    resolve_db,
)

__all__ = ["register"]

DEFAULT_PORT = 8765


def register(sub: Any) -> None:
    serve = command(
        sub,
        "serve",
        "Browse, compare and fork conversation trees in a local web page (127.0.0.1 only).",
        "Serve a local web page to browse the store: conversations, their trees, branches side by side.\n"
        "Listens on 127.0.0.1 only; open the URL it prints (a random path and access token).\n"
        f"Encrypted conversations open with --keyring FILE or ${KEYRING_ENV}.\n"
        'Needs the web extra: pip install "convstore[web]".',
        examples=["convstore serve", "convstore serve --port 0 --keyring keys.json --allow-writes"],
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"the port (default {DEFAULT_PORT}; 0: any free one)"
    )
    add_keyring_option(serve)
    serve.add_argument(
        "--allow-writes",
        action="store_true",
        help="offer the write actions: fork at a node (naming the branch), delete a conversation",
    )
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from convstore.web._app import Settings  # noqa: PLC0415 -- the web extra, only for this command
        from convstore.web._server import serve  # noqa: PLC0415
    except ImportError as error:
        raise CliError(
            f'convstore serve needs the web extra ({error.name}): pip install "convstore[web]"'
        ) from None
    if not 0 <= args.port <= 65535:
        raise CliError(f"not a port: {args.port}")
    url = resolve_db(args.db)
    keyring = load_keyring(args.keyring) if args.keyring is not None else keyring_from_env()
    with open_store(url):  # the same refusals as every command: no such file, not convstore's, outdated
        pass
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", args.port))
        # Listening before the URL is printed: a client that reads it and connects at once is queued in
        # the backlog until uvicorn accepts, never refused.
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise CliError(f"cannot listen on 127.0.0.1:{args.port}: {error.strerror}") from None
    port = listener.getsockname()[1]
    settings = Settings(
        url,
        keyring=keyring,
        allow_writes=args.allow_writes,
        hosts=[f"127.0.0.1:{port}", f"localhost:{port}"],
        cookie=f"convstore_token_{port}",
        # A random path for the page: the cookie is scoped to it, so no other port of this host gets it.
        prefix=f"/s-{secrets.token_urlsafe(12)}",
    )
    mode = "writes allowed" if args.allow_writes else "read-only"
    print(f"convstore serve: {display_url(url)} ({mode}{', keyring' if keyring else ''})")
    print(f"open http://127.0.0.1:{port}{settings.prefix}/?token={settings.token}", flush=True)
    serve(settings, listener)
    return 0
