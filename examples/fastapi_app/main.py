"""Serve the example app: ``cd examples/fastapi_app && uvicorn main:app`` (with ``GEMINI_API_KEY`` set).

The store is ``$CONVSTORE_DB`` (a SQLite file in this folder by default); the engine and the client are
made once, here, and closed when the server stops.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from app import create_app
from fastapi import FastAPI

import convstore

engine = sa.create_engine(os.environ.get("CONVSTORE_DB", "sqlite:///chat.db"))
store = convstore.Store(engine)
client = convstore.InteractionsClient()  # reads GEMINI_API_KEY
app = create_app(store, client)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    client.close()
    store.close()
    engine.dispose()


app.router.lifespan_context = lifespan
