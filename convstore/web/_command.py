"""``convstore serve``: the command that starts the web page (registered by ``convstore.cli``).

Only the argument parser is built at import; Starlette, Jinja2 and uvicorn (the ``web`` extra) are imported
when the command runs, so the rest of the command line works without them.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import socket
from pathlib import Path
from typing import Any

import convstore
from convstore.cli._common import CliError, command, display_url, open_store, resolve_db

__all__ = ["load_keyring", "register"]

DEFAULT_PORT = 8765

_KEYRING_FORMAT = '{"active": "KEY_ID", "keys": {"KEY_ID": "base64 of 32 bytes", ...}}'


def register(sub: Any) -> None:
    serve = command(
        sub,
        "serve",
        "Browse, compare and fork conversation trees in a local web page (127.0.0.1 only).",
        "Serve a local web page to browse the store: conversations, their trees, branches side by side.\n"
        "Listens on 127.0.0.1 only; open the URL it prints (it carries a random access token).\n"
        'Needs the web extra: pip install "convstore[web]".',
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"the port (default {DEFAULT_PORT}; 0: any free one)"
    )
    serve.add_argument(
        "--keyring",
        metavar="FILE",
        type=Path,
        help=f"read encrypted conversations with the keys in FILE, JSON: {_KEYRING_FORMAT}",
    )
    serve.add_argument(
        "--allow-writes",
        action="store_true",
        help="offer the write actions: fork at a node (naming the branch), delete a conversation",
    )
    serve.set_defaults(func=cmd_serve)


def load_keyring(path: Path) -> convstore.Keyring:
    """A ``Keyring`` from a JSON file (``{"active": id, "keys": {id: base64}}``); errors name the file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        keys = {str(k): base64.b64decode(v, validate=True) for k, v in document["keys"].items()}
        return convstore.Keyring(keys, active=str(document["active"]))
    except OSError as error:
        raise CliError(f"cannot read the keyring {path}: {error.strerror or type(error).__name__}") from None
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise CliError(f"{path} is not a keyring file (expected {_KEYRING_FORMAT})") from None


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: PLC0415 -- the web extra, only for this command

        from convstore.web._app import Settings, create_app  # noqa: PLC0415
    except ImportError as error:
        raise CliError(
            f'convstore serve needs the web extra ({error.name}): pip install "convstore[web]"'
        ) from None
    if not 0 <= args.port <= 65535:
        raise CliError(f"not a port: {args.port}")
    url = resolve_db(args.db)
    keyring = load_keyring(args.keyring) if args.keyring is not None else None
    with open_store(url):  # the same refusals as every command: no such file, an outdated schema
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
    )
    mode = "writes allowed" if args.allow_writes else "read-only"
    print(f"convstore serve: {display_url(url)} ({mode}{', keyring' if keyring else ''})")
    print(f"open http://127.0.0.1:{port}/?token={settings.token}", flush=True)
    # No access log: the first request's URL carries the token.
    config = uvicorn.Config(
        create_app(settings), log_level="warning", access_log=False, timeout_graceful_shutdown=1
    )
    server = _server_class()(config)
    server.stopping = settings.stopping
    server.run(sockets=[listener])
    return 0


def _server_class() -> Any:
    import uvicorn  # noqa: PLC0415 -- the web extra

    class Server(uvicorn.Server):
        """uvicorn's server, which first tells the event streams to end (they poll), then stops."""

        stopping: Any = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.stopping is not None:
                self.stopping.set()
            super().handle_exit(sig, frame)

    return Server
