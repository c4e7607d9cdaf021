"""``convstore serve``: the list people read, the tree drawn as a picture, and the hardened edges.

The list shows each conversation's first message (withheld when encrypted and no key) and last activity; the
tree page draws an SVG graph whose width stays small at 1,000 branches; a form past the field limit is a
400 before anything else; a stored ``mime_type`` with a control character is neither served as such nor
echoed; and a server showing big images keeps its memory flat (measured on the real ``convstore serve``
process, peak RSS from /proc, with generous margins).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

import convstore

pytest.importorskip("starlette")
from conftest import model, user
from test_web import TOKEN, make_client, png_bytes

from convstore.store import _schema
from convstore.web import _graph, _views
from convstore.web._security import csrf_token

MIB = 1024 * 1024


def _plain(store: convstore.Store, first: str) -> convstore.Conversation:
    conv = store.create_conversation(model="gemini-3-flash-preview")
    conv.append([user(first), model("ok")])
    return conv


def test_the_list_shows_first_messages_and_last_activity(tmp_path):
    url = f"sqlite:///{tmp_path / 'list.db'}"
    keyring = convstore.Keyring({"k1": bytes(32)}, active="k1")
    with convstore.Store(url) as store:
        trip = _plain(store, "Plan a three-week trip through Japan in spring")
        _plain(store, "What is a monad, in one paragraph?")
    with convstore.Store(url, keyring=keyring) as store:
        _plain(store, "my secret diary entry")
    with make_client(url) as client:
        page = client.get("/").text
    assert "Plan a three-week trip through Japan in spring" in page
    assert "What is a monad, in one paragraph?" in page
    assert "my secret diary entry" not in page  # encrypted, and the server has no key
    assert "encrypted: withheld" in page
    assert "last activity" in page
    assert f">{trip.id[-8:]}</code>" in page  # the short id, as `convstore show` takes it
    with make_client(url, keyring=keyring) as client:
        assert "my secret diary entry" in client.get("/").text
        found = client.get("/?q=monad").text
    assert "What is a monad" in found
    assert "Japan" not in found  # the search box looks in first messages too


def _fan(store: convstore.Store, branches: int) -> convstore.Conversation:
    """A conversation whose root exchange forks ``branches`` ways, each branch a short chain."""
    conv = store.create_conversation(model="m")
    conv.append([user("root question"), model("root answer")])
    head = conv.head_id
    for n in range(branches):
        branch = conv.fork(at=head, branch=f"replay-{n}")
        branch.append([user(f"variant {n}"), model(f"answer {n}")])
    return conv


def test_the_tree_is_drawn_as_an_svg_graph(tmp_path):
    url = f"sqlite:///{tmp_path / 'tree.db'}"
    with convstore.Store(url) as store:
        conv = _fan(store, 3)
    with make_client(url) as client:
        page = client.get(f"/c/{conv.id}").text
    svg = re.search(r'<svg class="graph".*?</svg>', page, re.S)
    assert svg is not None
    drawing = svg.group(0)
    assert 'aria-hidden="true"' in drawing  # the text rows below say the same to a screen reader
    assert drawing.count("<a ") == 4  # the root chain and three branches: one node each
    for n in range(3):
        assert f"● replay-{n}" in drawing
    assert "fork: 3 ways" in drawing  # the fork, with its ways
    assert '<ol class="tree" id="tree">' in page  # the text rows are kept
    assert "https://" not in drawing
    assert "http://" not in drawing.replace("http://www.w3.org/2000/svg", "")


def test_a_thousand_branches_stay_a_narrow_picture(tmp_path):
    url = f"sqlite:///{tmp_path / 'wide.db'}"
    with convstore.Store(url) as store:
        conv = _fan(store, 1000)
        tree = conv.tree(media=False)
    rows = _views.segments(tree)
    graph = _graph.layout(rows)
    assert len(rows) == 1001  # each branch's two steps folded into one node
    assert graph.width <= 2  # a spine and one lane of branches, not 1,000 lanes
    for i, parent in enumerate(graph.parents):  # every edge goes down the page
        assert parent is None or parent < i
    svg = _graph.render_svg(rows, {}, "/c/x")
    assert str(svg).count("<a ") == 1001


def test_lanes_never_overlap(tmp_path):
    url = f"sqlite:///{tmp_path / 'nested.db'}"
    with convstore.Store(url) as store:
        conv = store.create_conversation(model="m")
        conv.append([user("a"), model("b")])
        root = conv.head_id
        for n in range(4):
            side = conv.fork(at=root, branch=f"s{n}")
            side.append([user(f"s{n}"), model("x")])
            mid = side.head_id
            for k in range(3):
                deeper = side.fork(at=mid, branch=f"s{n}-{k}")
                deeper.append([user(f"s{n}-{k}"), model("y")])
        rows = _views.segments(conv.tree())
    graph = _graph.layout(rows)
    # A lane holds one thing at a time: a node's spans (its row to its last child) never overlap.
    spans: dict[int, list[tuple[int, int]]] = {}
    for i, lane in enumerate(graph.lanes):
        spans.setdefault(lane, []).append((i, graph.spines[i]))
    for lane_spans in spans.values():
        lane_spans.sort()
        for (_, end), (start, _) in itertools.pairwise(lane_spans):
            assert end <= start


def test_a_form_past_the_field_limit_is_a_400_before_anything_else(tmp_path):
    url = f"sqlite:///{tmp_path / 'form.db'}"
    with convstore.Store(url) as store:
        conv = _plain(store, "hello")
    fields = "&".join(f"f{n}=x" for n in range(9))
    with make_client(url, allow_writes=True) as client:
        response = client.post(
            f"/c/{conv.id}/delete",
            content=fields + f"&csrf={csrf_token(TOKEN)}",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 400  # before: a 500 with a traceback, before the CSRF check
        assert "at most 8 fields" in response.text
        assert "Traceback" not in response.text
        huge = client.post(
            f"/c/{conv.id}/delete",
            content="x=" + "y" * 100_000,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert huge.status_code == 413
    with convstore.Store(url) as store:
        assert [info.id for info in store.iter_conversations()] == [conv.id]


@pytest.mark.parametrize("mime", ["image/png\t", "image/png\x00", "image/png; x=1", "image/\x7fpng"])
def test_a_stored_mime_type_with_a_control_character_is_neither_served_nor_echoed(tmp_path, mime, capfd):
    url = f"sqlite:///{tmp_path / 'mime.db'}"
    image = base64.b64encode(png_bytes()).decode()
    with convstore.Store(url) as store:
        conv = store.create_conversation(model="m")
        [node, _] = conv.append(
            [user("see", {"type": "image", "data": image, "mime_type": "image/png"}), model("ok")]
        )
        # Stored by an older convstore (append refuses it now): written into the stored JSON by hand.
        with store.engine.begin() as db:
            nodes = _schema.nodes
            db.execute(
                sa.update(nodes)
                .where(nodes.c.conversation_id == conv.id, nodes.c.id == node.id)
                .values(payload=sa.func.replace(nodes.c.payload, '"image/png"', json.dumps(mime)))
            )
    with make_client(url) as client:
        response = client.get(f"/c/{conv.id}/media/{node.id}/0")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-disposition"].startswith("attachment")
        assert response.content == png_bytes()
        page = client.get(f"/c/{conv.id}/branch").text
    assert mime not in page
    assert mime not in "".join(response.headers.values())
    assert "Traceback" not in capfd.readouterr().err


def _serve(url: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "convstore", "serve", "--db", url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.readline()
    return process, process.stdout.readline().strip().removeprefix("open ")


def _rss(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_big_images_keep_the_servers_memory_flat(tmp_path):
    images, size = 6, 8 * MIB
    url = f"sqlite:///{tmp_path / 'big.db'}"
    with convstore.Store(url) as store:
        conv = store.create_conversation(model="m")
        for n in range(images):
            data = base64.b64encode(os.urandom(size)).decode()
            conv.append(
                [user(f"image {n}", {"type": "image", "data": data, "mime_type": "image/png"}), model("ok")]
            )
            del data
        nodes = [node for node in conv.nodes(media=False) if node.type == "user_input"]
    process, address = _serve(url)
    try:
        base, _, token = address.partition("/?token=")
        with httpx.Client(base_url=base + "/", timeout=120, follow_redirects=True) as client:
            assert client.get(f"/?token={token}").status_code == 200
            idle = _rss(process.pid, "VmRSS")
            for path in (f"c/{conv.id}", f"c/{conv.id}/branch", f"c/{conv.id}/compare"):
                assert client.get(path).status_code == 200
            pages = _rss(process.pid, "VmHWM")
            received: list[int] = []

            def fetch(node_id: str) -> None:
                with client.stream("GET", f"c/{conv.id}/media/{node_id}/0") as response:
                    received.append(sum(len(chunk) for chunk in response.iter_bytes()))

            threads = [threading.Thread(target=fetch, args=(node.id,)) for node in nodes]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            peak = _rss(process.pid, "VmHWM")
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert received == [size] * images
    # Before: the tree page alone read every image whole (base64 text, decoded JSON): 100+ MiB for these,
    # and each media response held its image three times. Now a page reads none of them, and a media
    # response holds a piece (256 KiB of base64) at a time.
    print(
        f"idle {idle / MIB:.1f} MiB, pages {pages / MIB:.1f} MiB, with media {peak / MIB:.1f} MiB (peak RSS)"
    )
    assert pages - idle < 32 * MIB, f"{(pages - idle) / MIB:.1f} MiB"
    assert peak - pages < 40 * MIB, f"{(peak - pages) / MIB:.1f} MiB"


def test_reads_without_media_read_none_and_media_chunks_streams_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'refs.db'}"
    raw = os.urandom(3 * MIB + 5)
    with convstore.Store(url) as store:
        conv = store.create_conversation(model="m")
        conv.append(
            [user("x", {"type": "image", "data": base64.b64encode(raw).decode(), "mime_type": "image/png"})]
        )
        [node] = conv.nodes(media=False)
        reference = node.data["content"][1]["data"]
        assert reference.startswith(convstore.MEDIA_REF)
        pieces = list(conv.media_chunks(reference, chunk_chars=MIB))
        assert all(len(piece) == MIB for piece in pieces[:-1])
        assert b"".join(base64.b64decode(piece) for piece in pieces) == raw
        assert conv.tree(media=False).nodes[0].data == node.data
        assert conv.node(node.id).data["content"][1]["data"] == base64.b64encode(raw).decode()
        with pytest.raises(ValueError, match="media=False"):
            next(iter(conv.media_chunks("not a reference")))
        with pytest.raises(convstore.NotFoundError):
            next(iter(conv.media_chunks(convstore.MEDIA_REF + "0" * 64)))


def test_a_lone_surrogate_in_stored_text_shows_as_a_replacement_character(tmp_path):
    url = f"sqlite:///{tmp_path / 'lone.db'}"
    with convstore.Store(url) as store:
        conv = _plain(store, "before XLONEX after")
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # as data stored before the door refused lone surrogates
        conn.execute(
            sa.text("UPDATE convstore_nodes SET payload = replace(payload, 'XLONEX', :escape)"),
            {"escape": "\\ud800"},
        )
    engine.dispose()
    with make_client(url) as client:
        for path in ("/", f"/c/{conv.id}", f"/c/{conv.id}/branch"):
            response = client.get(path)
            assert response.status_code == 200, path  # before: 400 (the page could not be encoded)
            assert "before \ufffd after" in response.text, path
