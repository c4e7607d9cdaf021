"""A TCP proxy in front of PostgreSQL that cuts the connection at a write's ``COMMIT``, for real: the
faults a network or a failover makes, as the server and the driver see them.

``before``: the client's message that carries ``COMMIT`` is never forwarded (the server never commits).
``after``: the message is forwarded whole, and the connection is cut at the server's first answer to it,
which PostgreSQL sends at the pipeline's sync, after the ``COMMIT`` ran (it went through; its answer is
lost).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Literal

import sqlalchemy as sa


class CommitCutter:
    def __init__(self, url: str) -> None:
        target = sa.make_url(url)
        self.target = (target.host or "127.0.0.1", target.port or 5432)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.armed: Literal["before", "after"] | None = None
        self.cut = 0
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        """``url`` through the proxy, in clear (a server with TLS, as the Citus cluster's, would hide the
        ``COMMIT`` the proxy looks for)."""
        proxied = sa.make_url(url).set(host="127.0.0.1", port=self.port)
        return proxied.update_query_dict({"sslmode": "disable"}).render_as_string(hide_password=False)

    def arm(self, when: Literal["before", "after"]) -> None:
        with self.lock:
            self.armed = when

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, server]
            state = {"committing": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _close(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _up(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := client.recv(1 << 16):
                with self.lock:
                    if self.armed and b"COMMIT" in data:
                        if self.armed == "before":
                            self.armed = None
                            self.cut += 1
                            self._close(client, server)
                            return
                        state["committing"] = True
                server.sendall(data)
        except OSError:
            pass
        self._close(client, server)

    def _down(self, server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := server.recv(1 << 16):
                with self.lock:
                    if state["committing"]:
                        self.armed = None
                        self.cut += 1
                        self._close(client, server)
                        return
                client.sendall(data)
        except OSError:
            pass
        self._close(client, server)

    def close(self) -> None:
        self._close(self.listener, *self.sockets)
