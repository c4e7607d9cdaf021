"""A FastAPI app that keeps its users' conversations with convstore.

One engine and one store for the whole app, made at startup; each request works through
``store.for_owner(user)``, a store bound to the request's user that shares the engine's pool and costs
nothing to make. A turn is streamed to the browser as server-sent events while convstore records it.
Routes:

- ``GET  /conversations``: the user's conversations, newest first.
- ``POST /conversations``: a new conversation.
- ``POST /conversations/{id}/turns``: send a message; the reply streams back as ``text/event-stream``.
- ``GET  /conversations/{id}/branches/{branch}``: a branch's steps.
- ``POST /conversations/{id}/forks``: a new branch at a node.

The user comes from an ``X-User`` header here; a real app takes it from its authentication.
"""

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

import convstore

MODEL = "gemini-3-flash-preview"


class NewTurn(BaseModel):
    text: str
    branch: str = "main"


class NewFork(BaseModel):
    at: str
    branch: str | None = None


def create_app(store: convstore.Store, client: convstore.InteractionsClient) -> FastAPI:
    """The app, on one store (one engine) and one API client, both owned by the caller."""
    app = FastAPI(title="chat")

    def user_store(x_user: Annotated[str, Header()]) -> convstore.Store:
        return store.for_owner(x_user)  # no connection, no query: a view of the shared store

    # FastAPI resolves these annotations at runtime: no `from __future__ import annotations` in this module.
    Mine = Annotated[convstore.Store, Depends(user_store)]

    @app.exception_handler(convstore.NotFoundError)
    def not_found(request: Request, error: convstore.NotFoundError) -> JSONResponse:
        # Another user's conversation is not found either: for_owner() sees only the user's own.
        return JSONResponse({"detail": "not found"}, status_code=404)

    @app.get("/conversations")
    def conversations(mine: Mine) -> list[dict[str, Any]]:
        page = mine.conversations(limit=50)
        return [{"id": info.id, "model": info.model} for info in page.items]

    @app.post("/conversations", status_code=201)
    def new_conversation(mine: Mine) -> dict[str, str]:
        return {"id": mine.create_conversation(model=MODEL).id}

    @app.post("/conversations/{conversation_id}/turns")
    def turn(conversation_id: str, body: NewTurn, mine: Mine) -> StreamingResponse:
        conv = mine.conversation(conversation_id, branch=body.branch)  # 404 before the stream starts

        def events() -> Iterator[str]:
            stream = conv.stream(body.text, client=client)
            for event in stream:
                if event.event_type == "step.delta" and event.text:
                    yield f"data: {json.dumps({'text': event.text})}\n\n"
            # Recorded once the stream completed: the branch has moved to the reply.
            yield f"event: done\ndata: {json.dumps({'status': stream.interaction.status})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/conversations/{conversation_id}/branches/{branch}")
    def branch(conversation_id: str, branch: str, mine: Mine) -> list[dict[str, Any]]:
        conv = mine.conversation(conversation_id, branch=branch)
        return [{"id": node.id, "type": node.type, "step": node.data} for node in conv.nodes()]

    @app.post("/conversations/{conversation_id}/forks", status_code=201)
    def fork(conversation_id: str, body: NewFork, mine: Mine) -> dict[str, str]:
        conv = mine.conversation(conversation_id)
        return {"branch": conv.fork(at=body.at, branch=body.branch).branch}

    return app
