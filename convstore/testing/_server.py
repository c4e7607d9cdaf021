"""The emulator on a real local HTTP server, for clients that cannot take an httpx transport (the SDK).

Binds ``127.0.0.1`` on a free port and serves from a background thread; a context manager gives its
``base_url``. Streams use chunked transfer encoding; a broken stream (``Reply.break_after``) closes the
socket without the final chunk, which clients see as a protocol error mid-body.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from convstore.testing._emulator import Emulator

__all__ = ["EmulatorServer"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    emulator: Emulator  # set on the per-server subclass

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        response = self.emulator.handle(self.command, url.path, query, dict(self.headers.items()), body)
        self.send_response(response.status_code)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for chunk in response.chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            if response.broken:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(b"0\r\n\r\n")
        else:
            data = response.body
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        self.wfile.flush()

    do_GET = do_POST = do_DELETE = _serve  # http.server's naming

    def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
        """Silenced: request lines would clutter test output."""


class EmulatorServer:
    """``with EmulatorServer(emulator) as server: ... server.base_url ...``.

    Attributes:
        base_url: ``http://127.0.0.1:<port>``, set once started.
    """

    def __init__(self, emulator: Emulator) -> None:
        handler = type("Handler", (_Handler,), {"emulator": emulator})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="convstore-emulator", daemon=True
        )
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host!s}:{port}"

    def start(self) -> EmulatorServer:
        """Starts serving in a background thread."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stops serving and releases the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
