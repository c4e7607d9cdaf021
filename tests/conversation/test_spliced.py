"""The request bytes ``send`` and ``stream`` post are spliced from the stored step texts, never decoded and
encoded again, and they are byte for byte what the dict path (``request()`` + ``json.dumps``) would send: on
every fixture, on hypothesis histories, with media kept apart, encryption, budgets, summaries and a pinned
first exchange. A client that does not take spliced bodies gets a plain dict."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FIXTURES, completed_reply, model, user
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import examples, exchanges

import convstore
from convstore import codec
from convstore._wire import SplicedInput, body_bytes
from convstore.errors import CodecError, ConvstoreError

MODEL = "gemini-3-flash-preview"


class Recorder:
    """An httpx transport that keeps every request body and answers with one completed interaction."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.content)
        if json.loads(request.content).get("stream"):
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=_sse(completed_reply())
            )
        return httpx.Response(200, json=completed_reply())


def _sse(interaction: dict[str, Any]) -> bytes:
    events = [
        {
            "event_type": "interaction.start",
            "interaction": {"id": interaction["id"], "status": "in_progress"},
        },
        {"event_type": "step.start", "index": 0, "step": interaction["steps"][0]},
        {"event_type": "step.stop", "index": 0},
        {
            "event_type": "interaction.completed",
            "interaction": {k: v for k, v in interaction.items() if k != "steps"},
        },
    ]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


def dict_path(body: Mapping[str, Any], *, stream: bool = False) -> bytes:
    """What the client would post for a plain body (the path before splicing)."""
    payload = dict(body)
    if stream:
        payload["stream"] = True
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client(recorder: Recorder) -> Iterator[convstore.InteractionsClient]:
    with convstore.InteractionsClient(
        "test", http_client=httpx.Client(transport=httpx.MockTransport(recorder))
    ) as c:
        yield c


def _fixture_steps() -> list[tuple[str, list[dict[str, Any]]]]:
    found = []
    for path in sorted(FIXTURES.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        steps = document.get("steps") if isinstance(document, dict) else document
        if isinstance(document, dict) and isinstance(document.get("input"), list):
            steps = [*document["input"], *(document.get("steps") or [])]
        if isinstance(steps, list) and steps and all(isinstance(s, dict) and "type" in s for s in steps):
            found.append((path.name, steps))
    return found


FIXTURE_STEPS = _fixture_steps()


def test_the_fixtures_give_histories() -> None:
    assert len(FIXTURE_STEPS) >= 6, [name for name, _ in FIXTURE_STEPS]


@pytest.mark.parametrize(("name", "steps"), FIXTURE_STEPS, ids=[name for name, _ in FIXTURE_STEPS])
def test_send_posts_the_dict_paths_bytes_on_every_fixture(tmp_path, recorder, client, name, steps) -> None:
    with convstore.Store(f"sqlite:///{tmp_path / 'f.db'}") as store:
        conv = store.create_conversation(
            model=MODEL, system_instruction="Be brief. ünïcödé ✓", generation_config={"temperature": 0.5}
        )
        conv.append(steps)
        expected = dict_path(conv.request("next", generation_config={"thinking_level": "low"}))
        conv.send("next", client=client, generation_config={"thinking_level": "low"})
        assert recorder.bodies[-1] == expected
        # The turn was recorded whole: the history holds the fixture's steps, the question and the reply.
        assert conv.history()[: len(steps)] == json.loads(json.dumps(steps))
        assert [s["type"] for s in conv.history()[len(steps) :]] == ["user_input", "model_output"]


def test_the_first_turn_of_an_empty_conversation_is_spliced_too(tmp_path, recorder, client) -> None:
    with convstore.Store(f"sqlite:///{tmp_path / 'e.db'}") as store:
        conv = store.create_conversation(model=MODEL)
        expected = dict_path(conv.request("hello"))
        conv.send("hello", client=client)
        assert recorder.bodies[-1] == expected
        assert json.loads(expected)["input"] == [user("hello")]


def test_stream_posts_the_dict_paths_bytes(tmp_path, recorder, client) -> None:
    with convstore.Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        conv = store.create_conversation(model=MODEL)
        conv.append([user("hello"), model("hi there")])
        expected = dict_path(conv.request("and now?"), stream=True)
        turn = conv.stream("and now?", client=client)
        turn.until_done()
        assert recorder.bodies[-1] == expected
        assert len(conv.history()) == 4


@settings(
    max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=st.lists(exchanges, min_size=1, max_size=4))
def test_spliced_bytes_equal_the_dict_paths_on_any_history(history) -> None:
    recorder = Recorder()
    http = httpx.Client(transport=httpx.MockTransport(recorder))
    with (
        tempfile.TemporaryDirectory() as folder,
        convstore.Store(f"sqlite:///{Path(folder) / 'h.db'}") as store,
    ):
        conv = store.create_conversation(model=MODEL, tools=[{"type": "function", "name": "f"}])
        for steps in history:
            try:
                conv.append(steps)
            except ConvstoreError:
                assume(False)
        expected = dict_path(conv.request("more"))
        with convstore.InteractionsClient("test", http_client=http) as client:
            conv.send("more", client=client)
        assert recorder.bodies[-1] == expected


def _image(size: int) -> dict[str, Any]:
    data = base64.b64encode(os.urandom(size)).decode()
    return {"type": "user_input", "content": [{"type": "image", "mime_type": "image/png", "data": data}]}


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_media_and_encryption_join_in_without_a_decode(tmp_path, recorder, client, encrypted) -> None:
    keyring = convstore.Keyring({"k1": os.urandom(32)}, active="k1") if encrypted else None
    with convstore.Store(f"sqlite:///{tmp_path / 'm.db'}", keyring=keyring) as store:
        conv = store.create_conversation(model=MODEL)  # a store with a keyring encrypts what it creates
        assert conv.encrypted is encrypted
        conv.append([_image(3000), model("a picture")])
        conv.append([_image(3000), model("the same kind of picture")])
        cold = store.conversation(conv.id)
        expected = dict_path(cold.request("which is nicer?"))
        store.conversation(conv.id).send("which is nicer?", client=client)
        assert recorder.bodies[-1] == expected


def test_budgets_summaries_and_the_pinned_exchange_are_spliced_too(tmp_path, recorder, client) -> None:
    summaries: list[int] = []

    def compact(dropped: list[dict[str, Any]]) -> list[dict[str, Any]]:
        summaries.append(len(dropped))
        return [user("summary of what came before"), model(f"noted: {len(dropped)} steps")]

    budget = convstore.TokenBudget(
        max_input_tokens=600, pin_first_exchange=True, compact=compact, summary_tokens=64
    )
    with convstore.Store(f"sqlite:///{tmp_path / 'b.db'}") as store:
        conv = store.create_conversation(model=MODEL, system_instruction="rules")
        conv.append([user("the rules: be kind"), model("understood")])
        for n in range(30):
            conv.append([user(f"question {n} " + "words " * 20), model(f"answer {n} " + "more " * 20)])
        body = conv.request("last one", budget=budget)
        assert summaries, "the budget dropped something and summarised it"
        assert body["input"][0] == user("the rules: be kind")
        assert body["input"][2] == user("summary of what came before")
        conv.send("last one", client=client, budget=budget)
        assert recorder.bodies[-1] == dict_path(body)


def test_a_client_that_does_not_take_spliced_bodies_gets_a_plain_dict(tmp_path) -> None:
    seen: list[Any] = []

    class Plain:
        def create(self, body: Mapping[str, Any]) -> Any:
            seen.append(body)
            json.dumps(body)  # a plain JSON-ready dict, as request() returns
            return completed_reply()

    with convstore.Store(f"sqlite:///{tmp_path / 'p.db'}") as store:
        conv = store.create_conversation(model=MODEL)
        conv.append([user("hello"), model("hi")])
        conv.send("again", client=Plain())
        assert isinstance(seen[0]["input"], list)
        assert [s["type"] for s in seen[0]["input"]] == ["user_input", "model_output", "user_input"]
        assert len(conv.history()) == 4


def test_a_body_with_spliced_input_is_recorded_once_and_its_repr_holds_no_content() -> None:
    spliced = SplicedInput(['{"type":"user_input","content":[{"type":"text","text":"secret"}]}'], [user("x")])
    assert "secret" not in repr(spliced)
    assert spliced.decode() == [user("secret"), user("x")]
    body = {"model": MODEL, "store": False, "input": spliced}
    assert body_bytes(body) == dict_path({**body, "input": spliced.decode()})
    accents = SplicedInput(['{"type":"thought","signature":"é"}', '{"type":"thought"}'], [user("ü")])
    assert body_bytes({"input": accents}) == dict_path({"input": accents.decode()})
    assert body_bytes({}) == b"{}"
    assert body_bytes({"input": SplicedInput([], [])}) == b'{"input":[]}'
    first = SplicedInput([], [user("a"), user("b")])
    assert body_bytes({"model": MODEL, "input": first}) == dict_path(
        {"model": MODEL, "input": first.decode()}
    )


def test_stored_texts_are_the_compact_json_the_dict_path_writes(tmp_path) -> None:
    # The premise of splicing: each stored payload is json.dumps(json.loads(payload)) in compact form.
    with convstore.Store(f"sqlite:///{tmp_path / 't.db'}") as store:
        conv = store.create_conversation(model=MODEL)
        for _, steps in FIXTURE_STEPS:
            conv.append(steps)
        for node in conv.nodes():
            assert node.raw_json == json.dumps(
                json.loads(node.raw_json), ensure_ascii=False, separators=(",", ":")
            )
            assert node.raw_json == codec.dumps(json.loads(node.raw_json))


def test_a_bad_new_input_is_refused_before_anything_is_sent(tmp_path, recorder, client) -> None:
    with convstore.Store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        conv = store.create_conversation(model=MODEL)
        conv.append([user("hello"), model("hi")])
        with pytest.raises(CodecError):
            conv.send([{"type": "user_input", "content": "not a list"}], client=client)
        assert recorder.bodies == []
        assert len(conv.history()) == 2


# What a backend could get wrong reading payloads as bytes: PostgreSQL's text-to-bytea cast reads
# backslashes as escapes (convstore uses convert_to), placeholders in the text, characters of every width.
TRICKY = [
    "back\\slash \\x41 \\u0041 \\\\ \\n \\000 end\\",
    'a quote " and an escaped one \\" and a tab\t',
    "ünïcödé ✓ 東京 🦜 e\u0301 \u2028 \U0001f600",
    "%s %(top)s ? :top $1 -- /*",
    "x" * 5000,
]


def _compact(step: Mapping[str, Any]) -> str:
    return json.dumps(step, ensure_ascii=False, separators=(",", ":"))


def test_every_backend_replays_tricky_texts_byte_for_byte(store, flavour, recorder, client) -> None:
    """The branch is read as bytes (SQLite CAST AS BLOB, PostgreSQL convert_to with binary results), across
    a fork's two segments; what comes back is what was appended, whatever the text holds."""
    steps = [user(text) if index % 2 == 0 else model(text) for index, text in enumerate(TRICKY)]
    mixed = _image(3000)  # media beside non-ASCII text: its payload is decoded to put the image back
    mixed["content"].insert(0, {"type": "text", "text": TRICKY[2]})
    steps += [_image(3000), model("one"), mixed, model("two")]
    conv = store.create_conversation(model=MODEL)
    conv.append(steps[:2])
    conv.append(steps[2:])
    side = conv.fork(at=conv.nodes()[2].id, branch="side")
    side.append([model(TRICKY[3]), user(TRICKY[0])])
    for name, expected in [("main", steps), ("side", [*steps[:3], model(TRICKY[3]), user(TRICKY[0])])]:
        cold = store.conversation(conv.id, name)
        assert cold.history_json() == "[" + ",".join(map(_compact, expected)) + "]"
        assert store.conversation(conv.id, name).history() == expected
    if flavour == "sync":  # convstore's sync client posts the spliced bytes
        store.conversation(conv.id).send("next", client=client)
        posted = recorder.bodies[-1]
        assert (",".join(map(_compact, steps)) + "," + _compact(user("next"))).encode() in posted
        assert json.loads(posted)["input"] == [*steps, user("next")]
