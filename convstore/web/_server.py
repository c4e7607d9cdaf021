"""Running the page: uvicorn on a socket the caller made (``convstore serve`` binds it to 127.0.0.1)."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from convstore.web._app import Settings, create_app

__all__ = ["serve"]


def serve(settings: Settings, listener: socket.socket) -> None:
    """Serve the page on ``listener`` until the process is told to stop (Ctrl-C, SIGTERM)."""
    # No access log: the first request's URL carries the token.
    config = uvicorn.Config(
        create_app(settings), log_level="warning", access_log=False, timeout_graceful_shutdown=1
    )
    server = _Server(config)
    server.stopping = settings.stopping
    server.run(sockets=[listener])


class _Server(uvicorn.Server):
    """uvicorn's server, which first tells the event streams to end (they poll), then stops."""

    stopping: Any = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.stopping is not None:
            self.stopping.set()
        super().handle_exit(sig, frame)
