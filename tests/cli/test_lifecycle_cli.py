"""The command line of the lifecycle: ``chat --attach``, ``media``, ``show``, ``delete-remote``, ``adopt``."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli

import convstore

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'chat.db'}"


def test_chat_attach_uploads_keeps_the_bytes_and_show_and_media_say_so(db, tmp_path):
    picture = tmp_path / "photo.png"
    picture.write_bytes(PNG)
    result = run_cli("chat", "--offline", "--attach", str(picture), db=db, stdin="What is this?\n")
    assert result.returncode == 0, result.stderr
    assert "attached" in result.stdout
    with convstore.Store(db) as store:
        (info,) = store.conversations().items
        conv = store.conversation(info.id)
        first = conv.history()[0]["content"]
        assert first[0] == {"type": "text", "text": "What is this?"}
        assert first[1]["type"] == "image"
        assert first[1]["mime_type"] == "image/png"
        (status,) = conv.files()
        assert status.held
    media = run_cli("media", info.id, db=db)
    assert media.returncode == 0, media.stderr
    assert "held locally" in media.stdout
    assert "image/png" in media.stdout
    show = run_cli("show", info.id, db=db)
    assert show.returncode == 0, show.stderr
    assert "held locally" in show.stdout


def test_delete_remote_reports_what_it_deleted(db):
    result = run_cli("chat", "--offline", db=db, stdin="Hello\n")
    assert result.returncode == 0, result.stderr
    deleted = run_cli("delete-remote", "--offline", db=db)
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted 0 server copies" in deleted.stdout  # chat records stateless turns


def test_adopt_of_an_unknown_interaction_is_one_line_error(db):
    run_cli("chat", "--offline", db=db, stdin="Hello\n")
    result = run_cli("adopt", "v1_unknown", "--offline", db=db)
    assert result.returncode == 1
    assert "404" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
