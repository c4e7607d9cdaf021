"""Round trips to PostgreSQL, counted on the wire: a TCP proxy in front of the server.

A round trip is counted each time a client connection sends bytes after the server last sent it bytes (or
for the first time): a pipeline of statements sent together and answered together is one, however many
statements it holds; a statement sent, waited for, then another, is two. What the driver and SQLAlchemy do
(autocommit, pipelines, rollbacks on checkin) is counted as it happens, whatever their code looks like.

Usage: ``with RoundTripProxy(url) as proxy:`` then connect to ``proxy.url(url)`` (an SQLAlchemy URL with
the proxy's port); ``proxy.reset()`` before the measured work, ``proxy.count`` after it. Connections opened
while counting (a pool growing) count their handshake too: warm them up first.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import sqlalchemy as sa

CHUNK = 1 << 16


class RoundTripProxy:
    def __init__(self, url: str) -> None:
        target = sa.make_url(url)
        self.target = (target.host or "127.0.0.1", target.port or 5432)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.count = 0
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.closed = False
        self.thread = threading.Thread(target=self._accept, name="roundtrip-proxy", daemon=True)
        self.thread.start()

    def url(self, url: str) -> str:
        """``url`` (an SQLAlchemy URL of the proxied server) pointed at the proxy."""
        parsed = sa.make_url(url).set(host="127.0.0.1", port=self.port)
        return parsed.render_as_string(hide_password=False)

    def reset(self) -> None:
        with self.lock:
            self.count = 0

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.sockets += [client, server]
            # The side that sent last: a client send after the server's is a new round trip.
            last = ["server"]
            for source, sink, side in ((client, server, "client"), (server, client, "server")):
                threading.Thread(target=self._pump, args=(source, sink, side, last), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, side: str, last: list[str]) -> None:
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                with self.lock:
                    if side == "client" and last[0] == "server":
                        self.count += 1
                    last[0] = side
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                sock.close()

    def __enter__(self) -> RoundTripProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
