"""A create request is built from parts parsed once per configuration (the URL, the encoded headers): it must
be exactly the request the plain construction, ``httpx.Request(..., content=json.dumps(body))``, makes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples, exchanges, json_objects, plain_text

from convstore._wire import SplicedInput, plain_input
from convstore.client._http import STORED, USER_AGENT, ClientConfig, build_create_request, make_config
from convstore.codec import dumps


def plain_request(config: ClientConfig, body: dict[str, Any], *, stream: bool) -> httpx.Request:
    """The request as it was built before its parts were kept: every part made again from the body."""
    payload = {key: plain_input(value) for key, value in body.items()}
    if stream:
        payload["stream"] = True
    else:
        payload.pop("stream", None)
    headers = {
        "x-goog-api-key": config.api_key,
        "accept": "text/event-stream" if stream else "application/json",
        "user-agent": USER_AGENT,
        "content-type": "application/json",
    }
    if config.api_revision:
        headers["Api-Revision"] = config.api_revision
    extensions: dict[str, Any] = {"timeout": httpx.Timeout(config.timeout).as_dict()}
    if payload.get("store") is not False:
        extensions[STORED] = True
    return httpx.Request(
        "POST",
        f"{config.base_url}/{config.api_version}/interactions",
        headers=headers,
        content=json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(),
        extensions=extensions,
    )


def assert_same(built: httpx.Request, plain: httpx.Request) -> None:
    assert built.method == plain.method
    assert str(built.url) == str(plain.url)
    assert built.url.raw_path == plain.url.raw_path
    assert built.url.netloc == plain.url.netloc
    assert built.headers.raw == plain.headers.raw
    assert built.content == plain.content
    assert list(built.stream) == list(plain.stream)  # type: ignore[arg-type]
    assert built.extensions == plain.extensions


configs = st.builds(
    lambda **kwargs: make_config("AIza-key", {}, **kwargs),
    base_url=st.sampled_from(
        [None, "https://generativelanguage.googleapis.com", "http://localhost:8080/", "http://[::1]:9/base"]
    ),
    api_version=st.sampled_from(["v1beta", "/v1/", "v1alpha"]),
    api_revision=st.sampled_from([None, "", "2026-05-20", "2099-01-01"]),
    timeout=st.sampled_from([None, 60.0, 5, 0.25]),
)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    history = draw(st.lists(exchanges, max_size=3))
    texts = [dumps(step).encode() for exchange in history for step in exchange]
    new = draw(exchanges)
    body: dict[str, Any] = {"model": draw(plain_text)}
    if draw(st.booleans()):
        body["system_instruction"] = draw(plain_text)
    if draw(st.booleans()):
        body["generation_config"] = draw(json_objects)
    body["store"] = draw(st.sampled_from([False, True, None]))
    if body["store"] is None:
        del body["store"]
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    body["input"] = SplicedInput(texts, new) if draw(st.booleans()) else [*history_steps(history), *new]
    return body


def history_steps(history: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [step for exchange in history for step in exchange]


@settings(max_examples=examples(150))
@given(config=configs, body=bodies(), stream=st.booleans())
def test_a_create_request_is_the_plain_request(
    config: ClientConfig, body: dict[str, Any], stream: bool
) -> None:
    plain = plain_request(config, body, stream=stream)
    for _ in range(2):  # the first request of a configuration makes its parts, the next reuses them
        assert_same(build_create_request(config, body, stream=stream), plain)


def test_requests_of_one_configuration_share_no_mutable_part() -> None:
    config = make_config("AIza-key", {})
    first = build_create_request(config, {"model": "m", "input": "hi"}, stream=False)
    first.extensions["timeout"]["read"] = 0.5  # what an executor may do to one request's timeouts
    first.headers["x-extra"] = "1"
    second = build_create_request(config, {"model": "m", "input": "hi"}, stream=False)
    assert second.extensions["timeout"] == httpx.Timeout(60.0).as_dict()
    assert "x-extra" not in second.headers
    plain = plain_request(config, {"model": "m", "input": "hi"}, stream=False)
    assert second.headers.raw == plain.headers.raw


def test_a_key_that_is_no_header_fails_where_it_did_at_the_request() -> None:
    config = make_config("clé", {})  # accepted by the client, refused by httpx when a request is built
    with pytest.raises(UnicodeEncodeError):
        build_create_request(config, {"model": "m", "input": "hi"}, stream=False)
    with pytest.raises(UnicodeEncodeError):  # again: nothing half-built was kept
        build_create_request(config, {"model": "m", "input": "hi"}, stream=False)
