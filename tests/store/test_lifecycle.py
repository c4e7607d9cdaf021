"""Conversations that outlive the API (issue 23): uploaded files that expire, stored interactions the server
drops, deleting and adopting server copies, and creates that must not be duplicated by retries.

Every test runs against the emulator with a ``ManualClock`` that convstore's ``Lifecycle`` shares, on each
backend and flavour; the media tests also through the official SDK against the emulator's local server.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import user
from flavours import SyncProxy
from hypothesis import given
from hypothesis import strategies as st

import convstore
from convstore import CreateOutcomeUnknownError, Keyring, Lifecycle, MediaNotHeldError
from convstore._uris import file_uris, rewrite_uris, uri_pair
from convstore.testing import Emulator, EmulatorServer, ManualClock, error_reply, text_reply

MODEL = "gemini-3-flash-preview"
PNG = b"\x89PNG\r\n\x1a\n" + b"PNG-PLAINTEXT-MARKER" + bytes(range(256)) * 12
WAV = b"RIFF\x00\x00\x00\x00WAVE" + b"WAV-PLAINTEXT-MARKER" + bytes(reversed(range(256))) * 10
PDF = b"%PDF-1.7\n" + b"PDF-PLAINTEXT-MARKER " * 200
MEDIA = [(PNG, "image/png"), (WAV, "audio/wav"), (PDF, "application/pdf")]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Emulator:
    return Emulator(clock=clock)


@pytest.fixture(params=["interactions", "sdk"])
def files_client(request: pytest.FixtureRequest, emulator: Emulator, flavour: str) -> Iterator[Any]:
    """convstore's client, or the official SDK (google-genai) against the emulator's local server."""
    if request.param == "interactions":
        yield request.getfixturevalue("client")
        return
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    with EmulatorServer(emulator) as server:
        sdk = genai.Client(
            api_key="test-key", http_options=types.HttpOptions(base_url=server.base_url, api_version="v1beta")
        )
        if flavour == "sync":
            yield convstore.GenAIClient(sdk)
        else:
            portal = request.getfixturevalue("portal")
            yield SyncProxy(convstore.AsyncGenAIClient(sdk), portal)
            portal.call(sdk.aio.aclose())
        sdk.close()


@pytest.fixture
def lstore(make_store: Any, clock: ManualClock) -> Any:
    return make_store(lifecycle=Lifecycle(clock=clock))


def sent_media(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The media content items of a request body's user inputs, in order."""
    return [
        item
        for step in body["input"]
        if step["type"] == "user_input"
        for item in step["content"]
        if item["type"] != "text"
    ]


def upload_all(conv: Any, client: Any) -> list[dict[str, Any]]:
    return [conv.upload(data, mime_type=mime, client=client) for data, mime in MEDIA]


def test_a_conversation_with_uploads_continues_after_the_files_expire(lstore, files_client, emulator, clock):
    conv = lstore.create_conversation(model=MODEL)
    items = upload_all(conv, files_client)
    assert [item["type"] for item in items] == ["image", "audio", "document"]
    conv.send([{"type": "text", "text": "What are these?"}, *items], client=files_client)
    fork = conv.fork(branch="before-expiry")  # made while the files lived
    before = conv.history_json()
    uploads = emulator.files.uploads

    clock.advance(hours=49)
    conv.send("And now?", client=files_client)

    sent = sent_media(emulator.requests[-1].body)
    assert len(sent) == 3
    assert all(item["uri"] != original["uri"] for item, original in zip(sent, items, strict=True))
    assert [emulator.files.data(item["uri"]) for item in sent] == [data for data, _ in MEDIA]
    assert emulator.files.uploads == uploads + 3
    assert conv.history_json()[: len(before) - 1] == before[:-1]  # the stored steps never change
    assert sent_media({"input": conv.history()}) == items

    fork.send("From the fork", client=files_client)  # the fresh uploads serve the fork too
    assert emulator.files.uploads == uploads + 3
    assert [emulator.files.data(i["uri"]) for i in sent_media(emulator.requests[-1].body)] == [
        data for data, _ in MEDIA
    ]


def test_media_inline_sends_the_stored_bytes_and_uploads_nothing(lstore, client, emulator, clock):
    conv = lstore.create_conversation(model=MODEL)
    items = upload_all(conv, client)
    conv.send(items, client=client)
    uploads = emulator.files.uploads
    clock.advance(hours=49)
    conv.send("Again", client=client, media="inline")
    sent = sent_media(emulator.requests[-1].body)
    assert [base64.b64decode(item["data"]) for item in sent] == [data for data, _ in MEDIA]
    assert all("uri" not in item for item in sent)
    assert [item["mime_type"] for item in sent] == [mime for _, mime in MEDIA]
    assert emulator.files.uploads == uploads


def turn(conv: Any, how: str, text: str, client: Any, **settings: Any) -> Any:
    """One turn by ``send`` or by ``stream`` (its events consumed): the recorded interaction."""
    if how == "send":
        return conv.send(text, client=client, **settings)
    stream = conv.stream(text, client=client, **settings)
    assert list(stream)
    return stream.interaction


@pytest.mark.parametrize("how", ["send", "stream"])
def test_a_file_the_api_forgot_early_is_uploaded_again_and_the_call_retried_once(
    make_store, files_client, emulator, how
):
    store = make_store()  # convstore's own clock: the files look alive to it
    conv = store.create_conversation(model=MODEL)
    item = conv.upload(PNG, mime_type="image/png", client=files_client)
    conv.send([item], client=files_client)
    emulator.clock.advance(hours=49)  # type: ignore[attr-defined]
    reply = turn(conv, how, "Still there?", files_client)
    assert reply.status == "completed"
    creates = [r.body for r in emulator.requests if r.path.endswith("/interactions")]
    refused, accepted = creates[-2:]
    assert sent_media(refused)[0]["uri"] == item["uri"]
    assert emulator.files.data(sent_media(accepted)[0]["uri"]) == PNG
    assert len(conv.exchanges()) == 2


def test_a_uri_whose_bytes_convstore_never_had_names_its_node_until_they_are_attached(
    lstore, client, emulator, clock
):
    meta = emulator.files.add(PDF, mime_type="application/pdf")  # uploaded by the app itself
    conv = lstore.create_conversation(model=MODEL)
    nodes = conv.send(
        [{"type": "document", "uri": meta["uri"], "mime_type": "application/pdf"}], client=client
    )
    assert nodes.status == "completed"
    first = conv.nodes()[0]
    clock.advance(hours=49)
    with pytest.raises(MediaNotHeldError) as raised:
        conv.send("Again", client=client)
    assert raised.value.node_id == first.id
    assert raised.value.uri == meta["uri"]
    assert len(conv.exchanges()) == 1
    conv.attach_media(meta["uri"], PDF, mime_type="application/pdf")
    conv.send("Again", client=client)
    assert emulator.files.data(sent_media(emulator.requests[-1].body)[0]["uri"]) == PDF


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_encrypted_conversation_keeps_no_plaintext_media_on_disk_and_delete_shreds_it(
    make_store, db_url, client, emulator, clock
):
    pytest.importorskip("cryptography")
    store = make_store(
        keyring=Keyring({"k1": bytes(range(32))}, active="k1"), lifecycle=Lifecycle(clock=clock)
    )
    conv = store.create_conversation(model=MODEL)
    items = upload_all(conv, client)
    conv.send(items, client=client)
    clock.advance(hours=49)
    conv.send("Later", client=client)
    assert [emulator.files.data(i["uri"]) for i in sent_media(emulator.requests[-1].body)] == [
        d for d, _ in MEDIA
    ]
    store.checkpoint()
    path = Path(db_url.removeprefix("sqlite:///"))
    disk = b"".join(
        Path(f"{path}{s}").read_bytes() for s in ("", "-wal", "-shm") if Path(f"{path}{s}").exists()
    )
    for data, _ in MEDIA:
        assert data[8:28] not in disk  # the raw marker
        assert base64.b64encode(data[:300]) not in disk  # the stored form, base64
    with store.engine.connect() as db:
        held = db.exec_driver_sql("SELECT count(*) FROM convstore_media").scalar()
        assert held == 3
    store.delete_conversation(conv.id)
    with store.engine.connect() as db:
        assert db.exec_driver_sql("SELECT count(*) FROM convstore_media").scalar() == 0
        assert db.exec_driver_sql("SELECT count(*) FROM convstore_files").scalar() == 0


@pytest.mark.parametrize("how", ["send", "stream"])
def test_a_stateful_chain_whose_interaction_was_dropped_continues_with_one_reply(
    lstore, files_client, emulator, how
):
    client = files_client
    conv = lstore.create_conversation(model=MODEL)
    first = conv.send("Hi", client=client, store=True)
    emulator.drop_interaction(first.id)
    emulator.script(text_reply("Welcome back."))
    reply = turn(conv, how, "Still there?", client, store=True)
    assert reply.text == "Welcome back."
    refused, replayed = emulator.requests[-2].body, emulator.requests[-1].body
    assert refused["previous_interaction_id"] == first.id
    assert "previous_interaction_id" not in replayed
    assert replayed["store"] is True
    assert replayed["input"][0] == user("Hi")
    assert replayed["input"][-1] == user("Still there?")
    assert len(conv.exchanges()) == 2
    conv.send("Third", client=client, store=True)  # chains on the new interaction
    assert emulator.requests[-1].body["previous_interaction_id"] == reply.id


def test_a_chain_older_than_the_retention_replays_without_trying(lstore, client, emulator, clock):
    conv = lstore.create_conversation(model=MODEL)
    conv.send("Hi", client=client, store=True)
    clock.advance(days=56)
    sent = len(emulator.requests)
    conv.send("Months later", client=client, store=True)
    assert len(emulator.requests) == sent + 1
    assert "previous_interaction_id" not in emulator.requests[-1].body


def test_delete_remote_deletes_each_server_copy_once(lstore, client, emulator, clock):
    conv = lstore.create_conversation(model=MODEL)
    ids = [conv.send(text, client=client, store=True).id for text in ("a", "b", "c")]
    conv.send("stateless", client=client)
    assert set(ids) <= set(emulator.stored_ids)
    first = lstore.delete_remote(client)
    assert sorted(first.deleted) == sorted(ids)
    assert first.failed == []
    second = lstore.delete_remote(client)
    assert second.deleted == []
    deletes = [r.path.rsplit("/", 1)[-1] for r in emulator.requests if r.method == "DELETE"]
    assert sorted(deletes) == sorted(ids)
    assert not set(ids) & set(emulator.stored_ids)
    conv.send("after", client=client, store=True)  # never chains on a deleted copy
    assert "previous_interaction_id" not in emulator.requests[-1].body


def test_delete_remote_honours_older_than(lstore, client, emulator, clock):
    conv = lstore.create_conversation(model=MODEL)
    conv.send("old", client=client, store=True)
    report = lstore.delete_remote(client, older_than=timedelta(days=1))
    assert report.deleted == []


def test_adopt_brings_a_five_interaction_chain_home(lstore, client, emulator):
    previous = None
    for number in range(5):
        body: dict[str, Any] = {"model": MODEL, "input": f"message {number}", "store": True}
        if previous is not None:
            body["previous_interaction_id"] = previous
        previous = client.create(body).id
    timeline = client.get(previous)["steps"]
    conv = lstore.adopt(previous, client=client)
    assert conv.history() == timeline
    assert len(conv.exchanges()) == 5
    body = conv.request("Next")
    assert body["input"] == [*timeline, user("Next")]
    assert body["store"] is False
    conv.send("Next", client=client)  # the emulator accepts the adopted signatures as its own


class _ResetAfterSending(httpx.BaseTransport):
    """Forwards each request to the emulator, then breaks the connection the first ``times`` times."""

    def __init__(self, emulator: Emulator, times: int) -> None:
        self._inner = emulator.transport()
        self.times = times

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if self.times > 0 and request.url.path.endswith("/interactions"):
            self.times -= 1
            raise httpx.RemoteProtocolError("connection reset by peer")
        return response


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("flavour", ["sync"], indirect=True)
def test_a_reset_after_a_stored_body_was_sent_never_creates_a_second_copy_silently(lstore, emulator):
    transport = _ResetAfterSending(emulator, times=1)
    with httpx.Client(transport=transport) as http:
        client = convstore.InteractionsClient("test-key", http_client=http, sleep=lambda _: None)
        conv = lstore.create_conversation(model=MODEL)
        with pytest.raises(CreateOutcomeUnknownError) as raised:
            conv.send("Hi", client=client, store=True)
        assert raised.value.attempts == 1
        assert "RemoteProtocolError" in raised.value.cause
        assert len(emulator.stored_ids) == 1  # the server made one, and only one
        assert conv.history() == []  # nothing recorded: the outcome is unknown
        transport.times = 1
        conv.send("Stateless", client=client)  # store: false is retried as before
        assert sum(1 for r in emulator.requests if r.path.endswith("/interactions")) == 3


def test_the_emulator_speaks_the_files_api_to_the_sdk(emulator, clock):
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    import io  # noqa: PLC0415

    with EmulatorServer(emulator) as server:
        sdk = genai.Client(
            api_key="test-key", http_options=types.HttpOptions(base_url=server.base_url, api_version="v1beta")
        )
        uploaded = sdk.files.upload(file=io.BytesIO(PDF), config={"mime_type": "application/pdf"})
        assert emulator.files.data(uploaded.uri) == PDF
        assert sdk.files.get(name=uploaded.name).uri == uploaded.uri
        assert [f.name for f in sdk.files.list()] == [uploaded.name]
        clock.advance(hours=49)
        with pytest.raises(Exception) as raised:  # noqa: PT011 -- the SDK's class for it varies by version
            sdk.interactions.create(
                model=MODEL,
                store=False,
                input=[{"type": "document", "uri": uploaded.uri, "mime_type": "application/pdf"}],
            )
        assert "403" in str(raised.value)
        assert "PERMISSION_DENIED" in str(raised.value)
        sdk.close()


_URI = st.from_regex(r"https://[a-z]{1,8}\.example/v1beta/files/[a-z0-9-]{1,12}", fullmatch=True)
_TEXTS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@given(
    texts=st.lists(_TEXTS, max_size=4),
    uris=st.lists(_URI, min_size=1, max_size=4),
    fresh=_URI,
    inline=st.booleans(),
)
def test_rewriting_uris_leaves_every_other_byte_unchanged(texts, uris, fresh, inline):
    content: list[dict[str, Any]] = [{"type": "text", "text": t} for t in texts]
    content += [{"type": "image", "uri": u, "mime_type": "image/png"} for u in uris]
    content.append({"type": "text", "text": f'"uri":"{uris[0]}"'})  # a user's text that looks like one
    step = {"type": "user_input", "content": content}
    text = json.dumps(step, ensure_ascii=False, separators=(",", ":")).encode()
    target = uris[0]
    pair = uri_pair(data="QUJD") if inline else uri_pair(uri=fresh)
    rewritten = rewrite_uris(text, {target: pair})
    expected = json.loads(text)
    for item in expected["content"]:
        if item.get("uri") == target:
            del item["uri"]
            item.update({"data": "QUJD"} if inline else {"uri": fresh})
    decoded = json.loads(rewritten)
    assert [sorted(i.items()) for i in decoded["content"]] == [sorted(i.items()) for i in expected["content"]]
    assert decoded["content"][-1]["text"] == f'"uri":"{uris[0]}"'  # text is never touched
    assert rewrite_uris(text, {}) == text
    assert file_uris(text.decode()) == list(dict.fromkeys(uris))


def test_files_says_which_media_are_held_and_which_only_by_uri(lstore, client, emulator):
    conv = lstore.create_conversation(model=MODEL)
    mine = conv.upload(PNG, mime_type="image/png", client=client)
    theirs = emulator.files.add(PDF, mime_type="application/pdf")
    document = {"type": "document", "uri": theirs["uri"], "mime_type": "application/pdf"}
    conv.send([mine, document], client=client)
    found = {status.uri: status for status in conv.files()}
    assert found[mine["uri"]].held
    assert found[mine["uri"]].mime_type == "image/png"
    assert not found[theirs["uri"]].held
    assert found[theirs["uri"]].node_id == conv.nodes()[0].id


def test_a_5xx_to_a_stored_create_is_not_retried_and_a_stateless_one_is(client, emulator):
    emulator.script(error_reply(503, "overloaded", status="UNAVAILABLE"))
    with pytest.raises(CreateOutcomeUnknownError) as raised:
        client.create({"model": MODEL, "input": "Hi"})  # store absent: the server's default is true
    assert raised.value.cause == "HTTP 503"
    assert raised.value.status_code == 503
    assert sum(1 for r in emulator.requests if r.method == "POST") == 1
    emulator.script(error_reply(429, "slow down", status="RESOURCE_EXHAUSTED"))
    assert (
        client.create({"model": MODEL, "input": "Hi", "store": True}).status == "completed"
    )  # refused: safe
    emulator.script(error_reply(503, "overloaded", status="UNAVAILABLE"))
    assert client.create({"model": MODEL, "input": "Hi", "store": False}).status == "completed"


def test_an_upload_beyond_the_limits_is_refused_before_anything_is_sent(
    make_store, client, emulator, tmp_path
):
    store = make_store(limits=convstore.Limits(max_step_bytes=4096))
    conv = store.create_conversation(model=MODEL)
    path = tmp_path / "big.png"
    path.write_bytes(PNG)
    with pytest.raises(convstore.LimitExceededError):
        conv.upload(path, client=client)
    assert emulator.files.uploads == 0
    assert emulator.requests == []
    item = conv.upload(PNG[:1000], mime_type="image/png", client=client)  # within the bound
    assert emulator.files.data(item["uri"]) == PNG[:1000]
