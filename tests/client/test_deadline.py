"""A deadline per call, in both clients: a server on 127.0.0.1 that keeps a reply alive with a byte (or a
keep-alive line) every half second never trips the per-read timeout, and must not keep a call with
``deadline=3`` alive much past three seconds, streamed or not, with retries or not."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

import convstore
from convstore.errors import APIConnectionError

BODY = {"model": "m", "input": "hello", "store": False}


class SlowServer:
    """Answers every request with headers at once, then one byte every ``pause`` seconds, for ever."""

    def __init__(self, *, stream: bool, pause: float = 0.5) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stream = stream
        self._pause = pause
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            kind = "text/event-stream" if self._stream else "application/json"
            head = f"HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: 100000\r\n\r\n"
            try:
                conn.sendall(head.encode())
                while not self._stop.is_set():
                    conn.sendall(b": keep-alive\n" if self._stream else b" ")
                    time.sleep(self._pause)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


@pytest.fixture(params=[False, True], ids=["unary", "stream"])
def server(request) -> Iterator[SlowServer]:
    running = SlowServer(stream=request.param)
    yield running
    running.close()


def _sync_call(server: SlowServer, **options: object) -> None:
    url = f"http://127.0.0.1:{server.port}"
    with convstore.InteractionsClient("key", base_url=url, timeout=10, **options) as client:
        if server._stream:
            client.stream(BODY).get_final_interaction()
        else:
            client.create(BODY)


async def _async_call(server: SlowServer, **options: object) -> None:
    url = f"http://127.0.0.1:{server.port}"
    async with convstore.AsyncInteractionsClient("key", base_url=url, timeout=10, **options) as client:
        if server._stream:
            await client.stream(BODY).get_final_interaction()
        else:
            await client.create(BODY)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_server_trickling_bytes_cannot_keep_a_call_past_its_deadline(server, flavour):
    def call() -> None:
        if flavour == "sync":
            _sync_call(server, deadline=3)
        else:
            asyncio.run(_async_call(server, deadline=3))

    started = time.monotonic()
    with pytest.raises(APIConnectionError, match="deadline of 3 s"):
        call()
    took = time.monotonic() - started
    assert 2.9 <= took < 4.5, took


def test_a_deadline_must_be_positive():
    with pytest.raises(ValueError, match="deadline"):
        convstore.InteractionsClient("key", deadline=0)
