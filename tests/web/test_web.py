"""``convstore serve`` without a browser: Starlette's TestClient against the app.

The access token and its cookie, the Host check, CSRF on writes, the security headers, escaping of hostile
content (checked on the parsed HTML, not only by searching text), encrypted conversations withheld without
the keyring, search and paging, the tree, the comparison, media, the event stream and the command itself.
``test_web_browser.py`` runs the same pages in chromium.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import model, user

import convstore

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from convstore.cli._common import load_keyring
from convstore.web import Settings, create_app
from convstore.web._security import CSP, MEDIA_CSP, csrf_token

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-" + "x" * 20

# What a model (or a user) could make the store hold, aimed at every place a page shows stored text.
XSS = (
    "<script>window.__xss=1;alert(1)</script>",
    '<img src=x onerror="window.__xss=1;alert(1)">',
    '"><svg onload="window.__xss=1;alert(1)">',
    "javascript:window.__xss=1;alert(1)",
    "' onmouseover='window.__xss=1' x='",
)
XSS_TEXT = " | ".join(XSS)
XSS_BRANCH = '<b onmouseover="alert(1)">x</b>'


def png_bytes(width: int = 24, height: int = 16) -> bytes:
    """A small, valid PNG (an orange box), made here: no file, no Pillow."""
    import struct  # noqa: PLC0415
    import zlib  # noqa: PLC0415

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xf0\x8c\x1e" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def record(conv: convstore.Conversation, first: dict[str, Any], reply: list[dict[str, Any]], n: int) -> None:
    """A recorded turn, with the API's usage (stateful mode: only the new input was sent)."""
    body = {"model": conv.model, "input": [first], "store": True, "previous_interaction_id": f"prev-{n}"}
    usage = {"total_input_tokens": 100 * n, "total_output_tokens": 10 * n, "total_thought_tokens": n}
    conv.record(body, {"id": f"int-{n}", "status": "completed", "steps": reply, "usage": usage})


def build_sample(store: convstore.Store) -> dict[str, Any]:
    """A conversation with three branches, an image, a thought, a function call and result, a step type
    this version does not know, and hostile text in every field a page shows."""
    image = base64.b64encode(png_bytes()).decode()
    conv = store.create_conversation(
        model="gemini-3-flash-preview",
        system_instruction="Be brief. " + XSS[0],
        tools=[{"type": "function", "name": "get_weather"}],
    )
    record(
        conv,
        user(
            "What is in this picture? " + XSS_TEXT, {"type": "image", "data": image, "mime_type": "image/png"}
        ),
        [
            {
                "type": "thought",
                "signature": "c2lnbmF0dXJl",
                "summary": [{"type": "text", "text": "Secret plan " + XSS[1]}],
            },
            model("An orange box. " + XSS[2]),
        ],
        1,
    )
    first = conv.nodes()
    record(
        conv,
        user("And the weather in Lisbon?"),
        [
            {
                "type": "function_call",
                "id": "call-1",
                "name": "get_weather",
                "arguments": {"city": "Lisbon", "note": XSS[1]},
            }
        ],
        2,
    )
    conv.append(
        [
            {
                "type": "function_result",
                "call_id": "call-1",
                "name": "get_weather",
                "result": {"rain": XSS[0]},
            },
            model("Take an umbrella."),
            {"type": "hologram_output", "payload": {"html": XSS[0], "href": XSS[3]}},
            {"type": "model_output", "content": [{"type": "image", "uri": XSS[3], "mime_type": "image/png"}]},
        ]
    )
    alt = conv.fork(at=first[0].id, branch="alt")
    alt.append([model("A tangerine-coloured rectangle.")])
    hostile = conv.fork(at=first[-1].id, branch=XSS_BRANCH)
    record(hostile, user("Different question " + XSS[4]), [model("Different answer")], 3)
    return {"conv": conv, "image": image, "first": first, "alt": alt, "hostile": hostile}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'web.db'}"


def make_client(url: str, **options: Any) -> TestClient:
    client = TestClient(create_app(Settings(url, token=TOKEN, **options)))
    client.cookies.set("convstore_token", TOKEN)
    return client


@pytest.fixture
def sample(sqlite_url: str) -> dict[str, Any]:
    with convstore.Store(sqlite_url) as store:
        built = build_sample(store)
    built["url"] = sqlite_url
    return built


class Structure(HTMLParser):
    """What a page's markup holds: scripts, event handler attributes, URLs in attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts = 0
        self.script_sources: list[str] = []
        self.handlers: list[tuple[str, str]] = []
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.svg_classes: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        named = dict(attrs)
        if tag == "svg":
            self.svg_classes.append(named.get("class"))
        if tag == "script":
            if named.get("src"):
                self.script_sources.append(named["src"] or "")
            else:
                self.inline_scripts += 1
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append((tag, name))
            if name in {"href", "src", "action", "formaction"} and value is not None:
                self.urls.append(value)
            if name == "style":
                self.handlers.append((tag, name))


def structure(html: str) -> Structure:
    parser = Structure()
    parser.feed(html)
    return parser


def assert_inert(html: str) -> None:
    """No stored text became markup: one script, ours; no handlers or styles; only our own URLs."""
    found = structure(html)
    assert found.inline_scripts == 0
    assert found.script_sources in ([], ["/static/app.js"])
    assert found.handlers == []
    assert found.svg_classes in ([], ["graph"])  # the tree's picture, ours; no stored text became one
    assert "b" not in found.tags
    for value in found.urls:
        assert value.startswith(("/", "#")), value
        assert "javascript:" not in value.lower()


# The guard.


def test_every_request_needs_the_token(sample):
    client = TestClient(create_app(Settings(sample["url"], token=TOKEN)))
    conv = sample["conv"]
    media = f"/c/{conv.id}/media/{sample['first'][0].id}/0"
    for path in ("/", f"/c/{conv.id}", "/static/app.js", "/static/app.css", media, f"/c/{conv.id}/events"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert conv.id not in response.text
        assert response.headers["content-security-policy"] == CSP
    assert client.get("/?token=wrong").status_code == 403
    client.cookies.set("convstore_token", "wrong")
    assert client.get("/").status_code == 403


def test_the_token_becomes_a_cookie_and_leaves_the_url(sample):
    client = TestClient(create_app(Settings(sample["url"], token=TOKEN)))
    conv = sample["conv"]
    response = client.get(f"/c/{conv.id}/branch?b=alt&token={TOKEN}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/c/{conv.id}/branch?b=alt"
    cookie = response.headers["set-cookie"]
    assert f"convstore_token={TOKEN}" in cookie
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    followed = client.get(response.headers["location"])
    assert followed.status_code == 200
    assert "A tangerine-coloured rectangle." in followed.text
    assert TOKEN not in followed.text


def test_an_unknown_host_is_refused_before_the_token(sample):
    client = TestClient(create_app(Settings(sample["url"], token=TOKEN, hosts=["127.0.0.1:9"])))
    assert client.get(f"/?token={TOKEN}").status_code == 421
    assert client.get("/", headers={"host": "127.0.0.1:9"}).status_code == 403  # then the token
    assert (
        client.get(f"/?token={TOKEN}", headers={"host": "127.0.0.1:9"}, follow_redirects=False).status_code
        == 303
    )


def test_pages_carry_the_security_headers(sample):
    conv = sample["conv"]
    with make_client(sample["url"]) as client:
        for path in ("/", f"/c/{conv.id}", f"/c/{conv.id}/branch", f"/c/{conv.id}/compare", "/static/app.js"):
            response = client.get(path)
            assert response.status_code == 200, path
            headers = response.headers
            assert headers["content-security-policy"] == CSP
            assert "script-src 'self'" in CSP
            assert "unsafe-inline" not in CSP
            assert "default-src 'self'" in CSP
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"
            # Never to another site; "no-referrer" would make the forms' Origin null.
            assert headers["referrer-policy"] == "same-origin"
            assert headers["cache-control"] == "no-store"


# Writes.


def test_writes_are_off_by_default(sample):
    conv = sample["conv"]
    with make_client(sample["url"]) as client:
        page = client.get(f"/c/{conv.id}/branch").text
        assert "fork here" not in page
        assert "delete conversation" not in client.get(f"/c/{conv.id}").text
        csrf = csrf_token(TOKEN)
        response = client.post(f"/c/{conv.id}/fork", data={"csrf": csrf, "at": sample["first"][0].id})
        assert response.status_code == 403
        assert client.post(f"/c/{conv.id}/delete", data={"csrf": csrf}).status_code == 403
    with convstore.Store(sample["url"]) as store:
        assert len(store.conversation(conv.id).branches()) == 3


def test_writes_need_the_csrf_token_and_the_same_origin(sample):
    conv = sample["conv"]
    at = sample["first"][0].id
    with make_client(sample["url"], allow_writes=True) as client:
        page = client.get(f"/c/{conv.id}/branch").text
        assert "fork here" in page
        assert csrf_token(TOKEN) in page
        assert TOKEN not in page
        assert client.post(f"/c/{conv.id}/fork", data={"at": at}).status_code == 403
        assert client.post(f"/c/{conv.id}/fork", data={"at": at, "csrf": "0" * 64}).status_code == 403
        refused = client.post(
            f"/c/{conv.id}/fork",
            data={"at": at, "csrf": csrf_token(TOKEN)},
            headers={"origin": "http://evil.example"},
        )
        assert refused.status_code == 403
        assert client.get(f"/c/{conv.id}/fork").status_code == 405
        made = client.post(
            f"/c/{conv.id}/fork",
            data={"at": at, "name": "from the page", "csrf": csrf_token(TOKEN)},
            headers={"origin": "http://testserver"},
            follow_redirects=False,
        )
        assert made.status_code == 303
        assert made.headers["location"] == f"/c/{conv.id}/branch?b=from+the+page"
        again = client.post(
            f"/c/{conv.id}/fork", data={"at": at, "name": "from the page", "csrf": csrf_token(TOKEN)}
        )
        assert again.status_code == 400  # BranchExistsError, said on the page
        assert "exists" in again.text
        missing = client.post(f"/c/{conv.id}/fork", data={"at": "nope", "csrf": csrf_token(TOKEN)})
        assert missing.status_code == 404
    with convstore.Store(sample["url"]) as store:
        forked = store.conversation(conv.id, "from the page")
        assert forked.head_id == at


def test_delete_a_conversation(sample):
    conv = sample["conv"]
    with make_client(sample["url"], allow_writes=True) as client:
        response = client.post(
            f"/c/{conv.id}/delete", data={"csrf": csrf_token(TOKEN)}, follow_redirects=False
        )
        assert response.status_code == 303
        assert client.get(f"/c/{conv.id}").status_code == 404
        assert conv.id not in client.get("/").text


# Escaping.


def test_hostile_content_stays_text_on_every_page(sample):
    conv = sample["conv"]
    pages = [
        "/",
        f"/c/{conv.id}",
        f"/c/{conv.id}?part=tree",
        f"/c/{conv.id}/branch",
        f"/c/{conv.id}/branch?" + httpx.QueryParams({"b": XSS_BRANCH}).__str__(),
        f"/c/{conv.id}/compare?" + str(httpx.QueryParams({"a": "main", "b": XSS_BRANCH})),
        f"/c/{conv.id}/branch/after?b=main&node=",
        f"/?q={XSS[0]}",
        f"/c/{conv.id}/branch?b={XSS[1]}",  # an unknown branch: the error page names it
    ]
    with make_client(sample["url"], allow_writes=True) as client:
        for path in pages:
            response = client.get(path)
            assert response.status_code in (200, 404), path
            assert_inert(response.text)
            for payload in XSS[:3]:
                assert payload not in response.text, (path, payload)
        branch = client.get(f"/c/{conv.id}/branch").text
        assert "&lt;script&gt;window.__xss=1;alert(1)&lt;/script&gt;" in branch  # shown, as text
        assert "javascript:window.__xss=1" in branch  # as text, never as a link
        tree = client.get(f"/c/{conv.id}").text
        assert "&lt;b onmouseover=&#34;alert(1)&#34;&gt;x&lt;/b&gt;" in tree  # the branch name


def test_steps_render_by_type(sample):
    conv, first = sample["conv"], sample["first"]
    with make_client(sample["url"]) as client:
        page = client.get(f"/c/{conv.id}/branch").text
    assert re.search(
        r'<details class="thought"><summary>thought \(signature: 12 characters\)</summary>', page
    )
    assert "Secret plan" in page
    assert '<span class="fn">get_weather</span>' in page
    assert "&#34;city&#34;: &#34;Lisbon&#34;" in page  # formatted JSON arguments
    assert f'<img src="/c/{conv.id}/media/{first[0].id}/0"' in page
    assert "hologram_output" in page
    assert "&#34;payload&#34;" in page
    assert "(not fetched)" in page  # an image by URI is named, never loaded


def test_media_is_served_from_the_store(sample):
    conv, first = sample["conv"], sample["first"]
    with make_client(sample["url"]) as client:
        response = client.get(f"/c/{conv.id}/media/{first[0].id}/0")
        assert response.status_code == 200
        assert response.content == png_bytes()
        assert response.headers["content-type"] == "image/png"
        assert response.headers["content-security-policy"] == MEDIA_CSP
        assert client.get(f"/c/{conv.id}/media/{first[0].id}/1").status_code == 404
        assert client.get(f"/c/{conv.id}/media/{first[1].id}/0").status_code == 404


def test_media_of_other_types_is_a_download(sqlite_url):
    svg = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>').decode()
    with convstore.Store(sqlite_url) as store:
        conv = store.create_conversation(model="m")
        (node,) = conv.append(
            [
                user(
                    "files",
                    {"type": "image", "data": svg, "mime_type": "image/svg+xml"},
                    {"type": "document", "data": svg, "mime_type": "text/html"},
                )
            ]
        )
    with make_client(sqlite_url) as client:
        page = client.get(f"/c/{conv.id}/branch").text
        assert "<img" not in page  # an SVG is never shown inline
        for n in (0, 1):
            response = client.get(f"/c/{conv.id}/media/{node.id}/{n}")
            assert response.headers["content-type"] == "application/octet-stream"
            assert response.headers["content-disposition"].startswith("attachment")
            assert "sandbox" in response.headers["content-security-policy"]


# Encryption at rest.


@pytest.fixture
def keyring_file(tmp_path: Path) -> tuple[Path, convstore.Keyring]:
    key = os.urandom(32)
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps({"active": "k1", "keys": {"k1": base64.b64encode(key).decode()}}))
    return path, convstore.Keyring({"k1": key}, active="k1")


def test_encrypted_conversations_are_withheld_without_the_keyring(db_url, keyring_file):
    path, keyring = keyring_file
    with convstore.Store(db_url, keyring=keyring) as store:
        secret = store.create_conversation(model="gemini-secret", system_instruction="the system secret")
        (node,) = secret.append(
            [
                user(
                    "the user secret",
                    {
                        "type": "image",
                        "data": base64.b64encode(png_bytes()).decode(),
                        "mime_type": "image/png",
                    },
                )
            ]
        )
    with make_client(db_url) as client:
        listing = client.get("/").text
        assert secret.id in listing
        assert "encrypted: withheld" in listing
        for path_ in (
            f"/c/{secret.id}",
            f"/c/{secret.id}/branch",
            f"/c/{secret.id}/compare",
            f"/c/{secret.id}/media/{node.id}/0",
        ):
            response = client.get(path_)
            assert response.status_code == 403, path_
            assert "secret" not in response.text.replace(secret.id, "")
            assert "--keyring" in response.text
    with make_client(db_url, keyring=load_keyring(path)) as client:
        assert "the user secret" in client.get(f"/c/{secret.id}/branch").text
        assert "the system secret" in client.get(f"/c/{secret.id}").text
        assert client.get(f"/c/{secret.id}/media/{node.id}/0").content == png_bytes()
        assert "encrypted: withheld" not in client.get("/").text


def test_a_bad_keyring_file_is_one_line(tmp_path, sqlite_url):
    convstore.Store(sqlite_url).close()
    bad = tmp_path / "bad.json"
    bad.write_text('{"active": "k1", "keys": {"k1": "not base64!"}}')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "convstore",
            "serve",
            "--db",
            sqlite_url,
            "--keyring",
            str(bad),
            "--port",
            "0",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("convstore: error: ")
    assert "--keyring: " in result.stderr
    assert "is not base64" in result.stderr
    assert "not base64!" not in result.stderr  # never the key's text


# The list, the tree, the comparison.


def test_the_list_pages_and_searches(tmp_path):
    url = f"sqlite:///{tmp_path / 'many.db'}"
    with convstore.Store(url) as store:
        made = [store.create_conversation(model=f"model-{i % 3}") for i in range(60)]
    with convstore.Store(url, owner="alice") as alice:
        hers = alice.create_conversation(model="model-x")
    with make_client(url) as client:
        first = client.get("/").text
        ids = re.findall(r'<a href="/c/([0-9a-f-]{36})">', first)
        assert ids == [hers.id, *[c.id for c in reversed(made)][:49]]  # newest first
        older = re.search(r'<a class="next" href="([^"]+)"', first)
        assert older is not None
        second = client.get(older.group(1).replace("&amp;", "&")).text
        assert re.findall(r'<a href="/c/([0-9a-f-]{36})">', second) == [c.id for c in reversed(made)][49:]
        by_model = re.findall(r'<a href="/c/([0-9a-f-]{36})">', client.get("/?q=model-2").text)
        assert by_model == [c.id for c in reversed(made) if c.model == "model-2"]
        by_id = re.findall(r'<a href="/c/([0-9a-f-]{36})">', client.get(f"/?q={made[7].id[-10:]}").text)
        assert by_id == [made[7].id]
        by_owner = re.findall(r'<a href="/c/([0-9a-f-]{36})">', client.get("/?owner=alice").text)
        assert by_owner == [hers.id]
        assert "No conversation matches" in client.get("/?owner=bob").text
        assert client.get("/?cursor=garbage").status_code == 400
        assert client.get("/?owner=" + "x" * 300).status_code == 400


def test_the_tree_names_branches_marks_heads_and_forks(db_url):
    with convstore.Store(db_url) as store:
        built = build_sample(store)
    conv = built["conv"]
    with make_client(db_url) as client:
        page = client.get(f"/c/{conv.id}").text
    assert "3 branches" in page
    assert page.count('class="branch"') == 3  # each head marked once
    # the forks after the first and the third step (in the text rows; the picture marks them too)
    assert page.count('<span class="forkmark">fork: 2 ways') == 2
    rows = re.findall(r'<tr data-branch="([^"]*)">(.*?)</tr>', page, re.S)
    usage = {name: re.findall(r"<td>([^<]*)</td>", row) for name, row in rows}
    # steps, node tokens, exchanges, API input, output, thought (then the time)
    assert usage["main"][0] == "9"
    assert usage["main"][2:6] == ["2", "300", "30", "3"]
    assert usage["alt"][0] == "2"
    assert usage["alt"][2:6] == ["1", "100", "10", "1"]
    hostile = next(v for k, v in usage.items() if k not in ("main", "alt"))
    assert hostile[0] == "5"
    assert hostile[2:6] == ["2", "400", "40", "4"]


def test_a_large_tree_skips_the_usage_of_every_branch(sqlite_url, monkeypatch):
    from convstore.web import _app  # noqa: PLC0415

    monkeypatch.setattr(_app, "USAGE_BUDGET", 5)
    with convstore.Store(sqlite_url) as store:
        conv = build_sample(store)["conv"]
    with make_client(sqlite_url) as client:
        page = client.get(f"/c/{conv.id}").text
    assert "too large to read every branch" in page
    assert "<td>9</td>" in page  # steps and node tokens are still there


def test_compare_marks_the_differences(sample):
    conv = sample["conv"]
    with make_client(sample["url"]) as client:
        page = client.get(f"/c/{conv.id}/compare?a=main&b=alt").text
        same = client.get(f"/c/{conv.id}/compare?a=main&b=main").text
    assert "1 shared steps" in page
    assert "First difference: exchange 1 of 3" in page
    assert page.count('class="pair differs"') == 3
    assert page.count('<span class="mark">differs</span>') == 2  # the two answers to the first question
    assert "No difference" in same
    assert "0 exchanges side by side" in same


def test_the_comparison_pages(sample, monkeypatch):
    from convstore.web import _app  # noqa: PLC0415

    monkeypatch.setattr(_app, "COMPARE_PAGE", 2)
    conv = sample["conv"]
    with make_client(sample["url"]) as client:
        first = client.get(f"/c/{conv.id}/compare?a=main&b=alt").text
        later = client.get(f"/c/{conv.id}/compare?a=main&b=alt&start=2").text
        assert client.get(f"/c/{conv.id}/compare?start=x").status_code == 400
    assert first.count('class="pair ') == 2
    assert "exchanges that differ: 3 of 3" in first  # the summary counts them all
    assert "later →" in first
    assert later.count('class="pair ') == 1
    assert "← earlier" in later
    assert "Take an umbrella." in later


def test_odd_requests_are_answered_with_a_4xx_page(sample):
    conv, node = sample["conv"], sample["first"][0]
    odd = [
        f"/c/{conv.id}/branch?b=%00",
        f"/c/{conv.id}/branch?b=" + "x" * 300,
        f"/c/{conv.id}/compare?a=%00&b=main",
        f"/c/{conv.id}/compare?a=main&b=nope",
        f"/c/{conv.id}/branch/after?b=main&node=%00",
        f"/c/{conv.id}/media/{node.id}/99",
        f"/c/{conv.id}/media/%00/0",
        f"/c/{conv.id}/media/{node.id}/-1",
        "/c/%00",
        f"/c/{conv.id}/nothing",
        "/?q=%00&owner=%00",
        "/?cursor=" + "A" * 500,
    ]
    client = TestClient(create_app(Settings(sample["url"], token=TOKEN)), raise_server_exceptions=False)
    client.cookies.set("convstore_token", TOKEN)
    with client:
        for path in odd:
            response = client.get(path)
            assert 400 <= response.status_code < 500, (path, response.status_code)


def test_the_branch_page_and_paging(sqlite_url, monkeypatch):
    from convstore.web import _app  # noqa: PLC0415

    monkeypatch.setattr(_app, "STEPS_PAGE", 4)
    with convstore.Store(sqlite_url) as store:
        conv = store.create_conversation(model="m")
        for i in range(5):
            conv.append([user(f"question {i}"), model(f"answer {i}")])
    with make_client(sqlite_url) as client:
        newest = client.get(f"/c/{conv.id}/branch").text
        assert "answer 4" in newest
        assert "answer 1" not in newest
        assert "earlier steps" in newest
        oldest = client.get(f"/c/{conv.id}/branch?start=0").text
        assert "question 0" in oldest
        assert "answer 4" not in oldest
        assert "later steps" in oldest
        assert client.get(f"/c/{conv.id}/branch?start=x").status_code == 400
        assert client.get(f"/c/{conv.id}/branch?b=nope").status_code == 404
        assert client.get("/c/not-an-id").status_code == 404


# Streaming.


def test_the_event_stream_tells_when_a_head_moves(sample):
    conv = sample["conv"]
    before = {b.name: b.head_id for b in conv.branches()}

    def meanwhile() -> None:  # the TestClient hands the stream over once it ends: end it by a delete
        with convstore.Store(sample["url"]) as store:
            writer = store.conversation(conv.id)
            threading.Event().wait(0.4)
            writer.append([user("a new turn"), model("recorded meanwhile")])
            threading.Event().wait(0.4)
            store.delete_conversation(conv.id)

    thread = threading.Thread(target=meanwhile)
    with make_client(sample["url"], poll_seconds=0.05) as client:
        thread.start()
        response = client.get(f"/c/{conv.id}/events")
    thread.join()
    assert response.headers["content-type"].startswith("text/event-stream")
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", response.text, re.M)
    assert [name for name, _ in events] == ["heads", "heads", "gone"]
    first, moved = json.loads(events[0][1]), json.loads(events[1][1])
    assert first == before
    assert moved["main"] != before["main"]
    assert {k: v for k, v in moved.items() if k != "main"} == {k: v for k, v in before.items() if k != "main"}


def test_the_steps_after_a_node(sample):
    conv = sample["conv"]
    head = conv.head_id
    conv.append([user("a new turn"), model("recorded meanwhile")])
    with make_client(sample["url"]) as client:
        fragment = client.get(f"/c/{conv.id}/branch/after?b=main&node={head}").text
        assert "recorded meanwhile" in fragment
        assert "Take an umbrella" not in fragment
        assert fragment.count('class="step ') == 2
        assert client.get(f"/c/{conv.id}/branch/after?b=alt&node={head}").status_code == 409


# The command.


def test_serve_listens_on_loopback_and_prints_the_url(sample):
    with subprocess.Popen(
        [sys.executable, "-m", "convstore", "serve", "--db", sample["url"], "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            assert "read-only" in process.stdout.readline()
            line = process.stdout.readline().strip()
            match = re.fullmatch(
                r"open (http://127\.0\.0\.1:(\d+)(/s-[\w-]{16,})/)\?token=([\w-]{40,})", line
            )
            assert match, line
            base, port, prefix, token = match.groups()
            with httpx.Client(base_url=base) as client:
                assert client.get("/").status_code == 403
                welcome = client.get(f"/?token={token}")
                # The cookie is scoped to the page's random path: browsers send cookies to every port of a
                # host, but another service on 127.0.0.1 is not asked for this path.
                cookie = welcome.headers["set-cookie"]
                assert f"Path={prefix}/" in cookie
                assert "HttpOnly" in cookie
                opened = client.get(f"/?token={token}", follow_redirects=True)
                assert opened.status_code == 200
                assert sample["conv"].id in opened.text
                elsewhere = client.get(f"http://127.0.0.1:{port}/?token={token}")
                assert elsewhere.status_code == 404  # outside the prefix: nothing, not even the login
                assert prefix not in elsewhere.text
                rebinding = client.get("/", headers={"host": f"evil.example:{port}"})
                assert rebinding.status_code == 421
        finally:
            process.terminate()
            _, errors = process.communicate(timeout=30)
    assert token not in errors  # no access log: the first URL carries the token


def test_serve_refuses_a_missing_database(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "convstore", "serve", "--db", str(tmp_path / "none.db")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no database at" in result.stderr


def test_the_wheel_ships_the_page(wheel_names):
    names = wheel_names
    web = REPO / "convstore" / "web"
    expected = {
        "convstore/web/" + str(p.relative_to(web))
        for folder in ("templates", "static")
        for p in (web / folder).iterdir()
    }
    assert expected
    assert expected <= names


def test_the_command_line_works_without_the_web_extra_loaded():
    code = (
        "import sys, convstore.cli; convstore.cli.build_parser(); "
        "assert not {'starlette', 'jinja2', 'uvicorn'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


def test_only_the_command_line_imports_the_web_page():
    package = REPO / "convstore"
    for path in package.rglob("*.py"):
        part = path.relative_to(package).parts[0]
        if part in {"web", "cli"}:
            continue
        assert "convstore.web" not in path.read_text(encoding="utf-8"), path


def test_ctrl_c_ends_the_event_streams_and_the_server(sample):
    import signal  # noqa: PLC0415
    import time  # noqa: PLC0415

    with subprocess.Popen(
        [sys.executable, "-m", "convstore", "serve", "--db", sample["url"], "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        process.stdout.readline()
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"open (http://127\.0\.0\.1:(\d+)/s-[\w-]+)/\?token=(\S+)", line)
        assert match, line
        base, port, token = match.groups()
        received: list[str] = []

        def listen() -> None:
            cookies = {f"convstore_token_{port}": token}
            with (
                contextlib.suppress(httpx.HTTPError),
                httpx.Client(base_url=base, cookies=cookies, timeout=30) as client,
                client.stream("GET", f"{base}/c/{sample['conv'].id}/events") as events,
            ):
                received.extend(events.iter_lines())

        listener = threading.Thread(target=listen)
        listener.start()
        deadline = time.monotonic() + 30
        while not any(line.startswith("event: heads") for line in received):
            assert time.monotonic() < deadline, "no event"
            time.sleep(0.05)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
        listener.join(timeout=30)
    assert time.monotonic() - started < 10
    assert "Traceback" not in errors  # the stream ended at its next poll: nothing was cancelled
