"""Run the one store test suite against the async store too: a synchronous view of async objects.

A ``Portal`` owns an event loop in a thread. ``SyncProxy`` forwards every attribute to an async object and
runs what comes back on that loop: coroutines are awaited, async generators collected, async iterables made
plain iterators, async stores and conversations wrapped again. The tests themselves stay written once.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import convstore


class Portal:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="portal", daemon=True)
        self._thread.start()

    def call(self, awaitable: Awaitable[Any]) -> Any:
        async def wait() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wait(), self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _collect(agen: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in agen]


_WRAPPED = (convstore.AsyncStore, convstore.AsyncConversation, convstore.AsyncInteractionsClient)


def _unwrap(value: Any) -> Any:
    return value._target if isinstance(value, SyncProxy) else value


class SyncProxy:
    """The synchronous face of an async store or conversation."""

    def __init__(self, target: Any, portal: Portal, **extra: Any) -> None:
        self._target = target
        self._portal = portal
        self._extra = extra

    def __getattr__(self, name: str) -> Any:
        if name in self._extra:
            return self._extra[name]
        value = getattr(self._target, name)
        if callable(value) and not isinstance(value, type):

            def call(*args: Any, **kwargs: Any) -> Any:
                # A proxy handed back to async code must be the async object again.
                args = tuple(_unwrap(a) for a in args)
                kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
                return self._wrap(value(*args, **kwargs))

            return call
        return self._wrap(value)

    def _wrap(self, value: Any) -> Any:
        if inspect.isasyncgen(value):
            return iter(self._portal.call(_collect(value)))
        if inspect.isawaitable(value):
            value = self._portal.call(value)
        if isinstance(value, _WRAPPED):
            return SyncProxy(value, self._portal, **self._extra)
        if isinstance(value, convstore.AsyncTurnStream):
            return SyncIterable(value, self._portal)
        return value

    def __repr__(self) -> str:
        return repr(self._target)


class SyncIterable:
    """An async iterable, iterated on the portal's loop; other attributes read through."""

    def __init__(self, target: Any, portal: Portal) -> None:
        self._target = target
        self._portal = portal

    def __iter__(self) -> Iterator[Any]:
        iterator = self._target.__aiter__()
        try:
            while True:
                try:
                    yield self._portal.call(iterator.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            # An abandoned iteration closes the async generator on its own loop, as `break` would.
            self._portal.call(iterator.aclose())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)
