"""The pytest plugin (entry point ``convstore`` -> convstore.pytest_plugin) gives an app's tests a
store, the emulator and a client bound to it; run here in pytester's inner sessions, as an app's suite would
run it."""

from __future__ import annotations

import importlib.metadata

import pytest

APP_TESTS = """
import convstore
from convstore.testing import text_reply, error_reply


def test_a_scripted_turn(convstore_store, convstore_emulator, convstore_client):
    convstore_emulator.script(text_reply("Hello!"))
    conv = convstore_store.create_conversation(model="gemini-3-flash-preview")
    assert conv.send("Hi", client=convstore_client).text == "Hello!"
    assert len(convstore_emulator.requests) == 1
    assert [step["type"] for step in conv.history()] == ["user_input", "thought", "model_output"]


def test_every_test_starts_empty(convstore_store):
    assert convstore_store.conversations().items == []
    convstore_store.create_conversation(model="m")


def test_retries_do_not_wait(convstore_store, convstore_emulator, convstore_client):
    convstore_emulator.script(error_reply(503), text_reply("Back."))
    conv = convstore_store.create_conversation(model="gemini-3-flash-preview")
    assert conv.send("Hi", client=convstore_client).text == "Back."


def test_the_database_url(convstore_db_url, tmp_path):
    assert convstore_db_url == f"sqlite:///{tmp_path / 'convstore.db'}"
"""


def test_the_entry_point_names_the_plugin():
    found = [
        point for point in importlib.metadata.entry_points(group="pytest11") if point.name == "convstore"
    ]
    assert [point.value for point in found] == ["convstore.pytest_plugin"]


def test_an_apps_tests_get_the_fixtures(pytester: pytest.Pytester):
    pytester.makepyfile(test_app=APP_TESTS)
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:xdist")
    result.assert_outcomes(passed=4)


def test_the_store_can_open_another_database(pytester: pytest.Pytester, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    pytester.makepyfile(
        test_named="""
def test_named(convstore_store, convstore_db_url):
    assert convstore_db_url.endswith("shared.db")
    convstore_store.create_conversation(model="m")
"""
    )
    pytester.runpytest("-p", "no:randomly", "-p", "no:xdist", f"--convstore-db-url={url}").assert_outcomes(
        passed=1
    )
    import convstore  # noqa: PLC0415

    with convstore.Store(url) as store:
        assert len(store.conversations().items) == 1  # the inner test wrote where it was told


def test_the_fixtures_are_listed_with_their_docs(pytester: pytest.Pytester):
    result = pytester.runpytest("--fixtures", "-p", "no:xdist")
    result.stdout.fnmatch_lines(["*convstore_store*", "*A ``convstore.Store`` on*", "*convstore_client*"])
