"""The FastAPI example app (examples/fastapi_app/) against the emulator, through FastAPI's TestClient: users
see only their own conversations, a turn streams back as server-sent events and is recorded, a fork makes a
branch that the next turn can go to."""

from __future__ import annotations

import importlib.util
import json
import sys

import httpx
import pytest
from conftest import REPO

import convstore
from convstore.testing import text_reply

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

APP = REPO / "examples" / "fastapi_app"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"fastapi_example_{name}", APP / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def http(db_url: str, emulator):
    store = convstore.Store(db_url)
    with httpx.Client(transport=emulator.transport()) as transport:
        client = convstore.InteractionsClient("test-key", http_client=transport)
        with TestClient(load("app").create_app(store, client)) as test_client:
            yield test_client
    store.close()


def events(response: httpx.Response) -> list[tuple[str, dict]]:
    found = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((fields.get("event", "message"), json.loads(fields["data"])))
    return found


def test_a_turn_streams_as_server_sent_events_and_is_recorded(http, emulator):
    emulator.script(text_reply("Two dogs, eight paws."))
    ana = {"X-User": "ana"}
    conversation = http.post("/conversations", headers=ana).json()["id"]
    with http.stream(
        "POST", f"/conversations/{conversation}/turns", headers=ana, json={"text": "Paws?"}
    ) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        reply.read()
    got = events(reply)
    assert "".join(data["text"] for kind, data in got if kind == "message") == "Two dogs, eight paws."
    assert got[-1] == ("done", {"status": "completed"})
    steps = http.get(f"/conversations/{conversation}/branches/main", headers=ana).json()
    assert [step["type"] for step in steps] == ["user_input", "thought", "model_output"]
    assert steps[0]["step"]["content"][0]["text"] == "Paws?"


def test_each_user_sees_only_their_own_conversations(http):
    ana, ben = {"X-User": "ana"}, {"X-User": "ben"}
    mine = {http.post("/conversations", headers=ana).json()["id"] for _ in range(3)}
    theirs = http.post("/conversations", headers=ben).json()["id"]
    assert {row["id"] for row in http.get("/conversations", headers=ana).json()} == mine
    assert [row["id"] for row in http.get("/conversations", headers=ben).json()] == [theirs]
    assert http.get(f"/conversations/{theirs}/branches/main", headers=ana).status_code == 404
    response = http.post(f"/conversations/{theirs}/turns", headers=ana, json={"text": "hi"})
    assert response.status_code == 404
    assert http.get("/conversations").status_code == 422  # no user, no store


def test_a_fork_makes_a_branch_the_next_turn_goes_to(http):
    ana = {"X-User": "ana"}
    conversation = http.post("/conversations", headers=ana).json()["id"]
    for text in ("I have 2 dogs.", "How many paws?"):
        http.post(f"/conversations/{conversation}/turns", headers=ana, json={"text": text})
    steps = http.get(f"/conversations/{conversation}/branches/main", headers=ana).json()
    first_answer = steps[2]["id"]
    forked = http.post(
        f"/conversations/{conversation}/forks", headers=ana, json={"at": first_answer, "branch": "cats"}
    )
    assert forked.status_code == 201
    assert forked.json() == {"branch": "cats"}
    http.post(
        f"/conversations/{conversation}/turns", headers=ana, json={"text": "And a cat.", "branch": "cats"}
    )
    cats = http.get(f"/conversations/{conversation}/branches/cats", headers=ana).json()
    assert [step["id"] for step in cats[:3]] == [step["id"] for step in steps[:3]]  # shared, not copied
    assert cats[3]["step"]["content"][0]["text"] == "And a cat."
    assert len(http.get(f"/conversations/{conversation}/branches/main", headers=ana).json()) == 6


def test_the_served_module_builds_the_app_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVSTORE_DB", f"sqlite:///{tmp_path / 'served.db'}")
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.syspath_prepend(str(APP))
    sys.modules.pop("app", None)
    main = load("main")
    with TestClient(main.app) as client:
        assert client.get("/conversations", headers={"X-User": "ana"}).json() == []
    assert (tmp_path / "served.db").exists()
