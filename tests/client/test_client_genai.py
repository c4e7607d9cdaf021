"""The google-genai adapter's pure parts: the SDK call for each request, its errors, the optional import."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

import convstore
from convstore.client._genai import error_from_sdk, sdk_call, sdk_config
from convstore.client._http import build_create_request, build_get_request

CONFIG = sdk_config(auto_continue=True, max_resumes=2)


def test_a_create_request_is_the_sdk_create_with_the_same_body_and_its_continuation_off():
    body = {"model": "m", "store": False, "input": [{"type": "user_input", "content": []}]}
    call = sdk_call(build_create_request(CONFIG, body, stream=True))
    assert call.method == "create"
    assert call.args == ()
    assert call.kwargs == {**body, "stream": True, "automatic_continuation": False}
    assert sdk_call(build_create_request(CONFIG, body, stream=False)).kwargs == {
        **body,
        "automatic_continuation": False,
    }


def test_a_replay_request_is_the_sdk_get_of_that_interaction():
    call = sdk_call(build_get_request(CONFIG, "v1_a/b", stream=True, last_event_id="evt_7"))
    assert call.method == "get"
    assert call.args == ("v1_a/b",)
    assert call.kwargs == {"stream": True, "last_event_id": "evt_7"}


def test_other_requests_have_no_sdk_call():
    with pytest.raises(ValueError, match="no SDK call"):
        sdk_call(httpx.Request("PATCH", "http://x/v1beta/interactions/abc"))


def test_max_resumes_cannot_be_negative():
    with pytest.raises(ValueError, match="max_resumes"):
        sdk_config(auto_continue=True, max_resumes=-1)


def test_import_convstore_does_not_import_the_sdk():
    code = "import sys, convstore; assert 'google.genai' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_missing_sdk_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.genai", None)
    with pytest.raises(ImportError, match=r"pip install google-genai"):
        convstore.GenAIClient()
    with pytest.raises(ImportError, match=r"convstore\[genai\]"):
        convstore.AsyncGenAIClient()


def test_errors_that_are_not_the_apis_are_not_translated():
    request = httpx.Request("POST", "http://x/v1beta/interactions")
    assert error_from_sdk(TypeError("bad argument"), request) is None


def test_network_errors_of_the_sdks_http_library_are_connection_errors():
    request = httpx.Request("POST", "http://x/v1beta/interactions")
    error = error_from_sdk(httpx.ConnectError("refused"), request)
    assert isinstance(error, convstore.APIConnectionError)
    assert "POST /v1beta/interactions" in str(error)


genai = pytest.importorskip("google.genai", reason="the google-genai SDK is not installed")


def test_the_sdks_status_errors_carry_the_services_error_object():
    from google.genai import _interactions  # noqa: PLC0415

    request = httpx.Request("POST", "http://x/v1beta/interactions")
    response = httpx.Response(429, request=request)
    body = {"error": {"code": 429, "message": "Resource has been exhausted.", "status": "RESOURCE_EXHAUSTED"}}
    error = error_from_sdk(_interactions.RateLimitError("m", response=response, body=body), request)
    assert isinstance(error, convstore.APIError)
    assert not isinstance(error, convstore.APIConnectionError)
    assert (error.status_code, error.code, error.status) == (429, 429, "RESOURCE_EXHAUSTED")
    assert error.message == "Resource has been exhausted."
    odd = error_from_sdk(_interactions.APIStatusError("m", response=response, body="<html>"), request)
    assert odd is not None
    assert odd.status_code == 429
    assert "<html>" not in str(odd)
    timeout = error_from_sdk(_interactions.APITimeoutError(request=request), request)
    assert isinstance(timeout, convstore.APIConnectionError)


def test_the_sdks_general_errors_are_api_errors_too():
    from google.genai import errors  # noqa: PLC0415

    request = httpx.Request("POST", "http://x/v1beta/interactions")
    legacy = errors.ClientError(404, {"error": {"code": 404, "message": "Not found.", "status": "NOT_FOUND"}})
    error = error_from_sdk(legacy, request)
    assert error is not None
    assert (error.status_code, error.status, error.message) == (404, "NOT_FOUND", "Not found.")


def test_the_sync_adapter_refuses_the_async_sdk_client():
    sdk = genai.Client(api_key="test-key")
    try:
        with pytest.raises(TypeError, match="AsyncGenAIClient"):
            convstore.GenAIClient(sdk.aio)
        assert "AsyncGenAIClient" in repr(convstore.AsyncGenAIClient(sdk.aio))
    finally:
        sdk.close()


def test_a_client_made_from_the_environment_is_closed_with_the_adapter(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with convstore.GenAIClient() as client:
        assert client._owned is not None
