"""Pure HTTP logic: configuration, requests, error parsing, retry policy, continuation bodies."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest
from _client_support import load

from convstore.client._http import (
    USER_AGENT,
    RetryState,
    backoff_delay,
    build_create_request,
    build_get_request,
    continuation_body,
    error_from_payload,
    error_from_response,
    is_retryable_status,
    make_config,
    retry_after,
)
from convstore.errors import APIError

KEY = "AIza-very-secret-key"


def config(**kwargs):
    return make_config(KEY, {}, **kwargs)


def test_create_request_defaults() -> None:
    request = build_create_request(config(), {"model": "m", "input": "hi", "stream": True}, stream=False)
    assert request.method == "POST"
    assert str(request.url) == "https://generativelanguage.googleapis.com/v1beta/interactions"
    assert request.headers["x-goog-api-key"] == KEY
    assert request.headers["Api-Revision"] == "2026-05-20"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("convstore/")
    assert json.loads(request.content) == {"model": "m", "input": "hi"}
    assert request.extensions["timeout"] == httpx.Timeout(60.0).as_dict()


def test_create_request_options() -> None:
    cfg = config(base_url="http://localhost:8080/", api_version="v1", api_revision=None, timeout=5)
    request = build_create_request(cfg, {"model": "m"}, stream=True)
    assert str(request.url) == "http://localhost:8080/v1/interactions"
    assert "Api-Revision" not in request.headers
    assert request.headers["accept"] == "text/event-stream"
    assert json.loads(request.content) == {"model": "m", "stream": True}
    assert request.extensions["timeout"]["read"] == 5
    assert build_create_request(config(api_revision="2099-01-01"), {}, stream=False).headers[
        "Api-Revision"
    ] == ("2099-01-01")


def test_get_request() -> None:
    request = build_get_request(config(), "v1_a/b", stream=True, last_event_id="evt_7")
    assert request.method == "GET"
    assert request.url.raw_path.split(b"?")[0] == b"/v1beta/interactions/v1_a%2Fb"
    assert dict(request.url.params) == {"stream": "true", "last_event_id": "evt_7"}
    assert "content-type" not in request.headers
    plain = build_get_request(config(), "i", stream=False, last_event_id="evt_7")
    assert dict(plain.url.params) == {"stream": "false"}


def test_api_key_from_environment_and_missing_key() -> None:
    assert make_config(None, {"GEMINI_API_KEY": "env-key"}).api_key == "env-key"
    assert make_config("arg", {"GEMINI_API_KEY": "env-key"}).api_key == "arg"
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        make_config(None, {})
    with pytest.raises(ValueError, match="max_retries"):
        make_config("k", {}, max_retries=-1)


def test_config_repr_hides_the_key() -> None:
    assert KEY not in repr(config())
    assert "generativelanguage" in repr(config())


def test_error_with_int_code() -> None:
    error = error_from_response(400, json.dumps(load("error_400_body.json")).encode())
    assert isinstance(error, APIError)
    assert (error.status_code, error.code, error.status) == (400, 400, "INVALID_ARGUMENT")
    assert error.message == "Request contains an invalid argument."
    assert str(error) == "HTTP 400 INVALID_ARGUMENT: Request contains an invalid argument."
    limited = error_from_response(429, json.dumps(load("error_429_body.json")).encode())
    assert (limited.code, limited.status) == (429, "RESOURCE_EXHAUSTED")


def test_error_with_string_code() -> None:
    error = error_from_response(500, b'{"error": {"code": "internal", "message": "boom"}}')
    assert (error.status_code, error.code, error.status, error.message) == (500, "internal", None, "boom")


@pytest.mark.parametrize("body", [b"<html>private</html>", b"", b'{"error": "private"}', b"[1]"])
def test_error_with_unexpected_body_does_not_quote_it(body: bytes) -> None:
    error = error_from_response(502, body)
    assert error.status_code == 502
    assert "private" not in str(error)


def test_error_payload_without_message() -> None:
    error = error_from_payload({"code": True})
    assert error.code is None
    assert "without a message" in error.message


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (404, False),
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
        (599, True),
        (600, False),
    ],
)
def test_retryable_statuses(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


def test_retry_after_headers() -> None:
    now = datetime(2026, 6, 2, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after(httpx.Headers({"Retry-After": "3"})) == 3
    assert retry_after(httpx.Headers({"Retry-After": "1.5"})) == 1.5
    date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert retry_after(httpx.Headers({"Retry-After": date}), now=now) == 7
    assert (
        retry_after(httpx.Headers({"Retry-After": format_datetime(now - timedelta(seconds=7))}), now=now)
        is None
    )
    assert retry_after(httpx.Headers({"retry-after-ms": "250", "Retry-After": "3"})) == 0.25
    assert retry_after(httpx.Headers({"retry-after-ms": "junk", "Retry-After": "3"})) == 3
    for junk in ("soon", "0", "-1", "inf", "nan"):
        assert retry_after(httpx.Headers({"Retry-After": junk})) is None
    assert retry_after(httpx.Headers({})) is None


def test_backoff_delays() -> None:
    assert [backoff_delay(n, rand=0.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff_delay(0, rand=0.999) == pytest.approx(0.5 * 0.75, rel=1e-2)
    assert backoff_delay(10, rand=1.0) == 6.0


def test_retry_state_counts_and_stops() -> None:
    state = RetryState(2, rand=lambda: 0.0)
    assert state.after_status(503, httpx.Headers({})) == 0.5
    assert state.after_transport_error() == 1.0
    assert state.after_status(503, httpx.Headers({})) is None
    assert state.attempts == 3
    server_wait = RetryState(4)
    assert server_wait.after_status(429, httpx.Headers({"Retry-After": "20"})) == 20
    assert RetryState(4).after_status(400, httpx.Headers({"Retry-After": "1"})) is None


def test_continuation_body_stateless_matches_fixture() -> None:
    hop1 = load("continuation_hop1_request.json")
    token = load("response_requires_continuation.json")["continuation_token"]
    assert continuation_body(hop1, token, "v1_ChdDb250SG9wMQ") == load("continuation_hop2_request.json")


def test_continuation_body_stored() -> None:
    body = {"model": "m", "input": "x", "tools": []}
    assert continuation_body(body, "t", "owner") == {
        "model": "m",
        "tools": [],
        "continuation_token": "t",
        "previous_interaction_id": "owner",
    }
    assert continuation_body(body, "t", None) == {**body, "continuation_token": "t"}
