"""The pure half of the google-genai adapter: which SDK call sends a request, and what its errors mean.

``GenAIClient`` / ``AsyncGenAIClient`` run convstore's own call state machines (``_calls.UnaryCall`` and
``StreamCall``: continuation hops, their merge, resumes of a broken stream) and let the official SDK send
each request they decide: the SDK authenticates, picks the URL, retries and times out as the app configured
it. The requests are ``httpx.Request`` values built by ``_http``; ``sdk_call`` reads one back into the SDK
method and arguments that send the same body, with the SDK's own continuation switched off (the state
machine continues, so the hops merge exactly as ``InteractionsClient`` merges them).

Replies are taken raw (``with_raw_response``): the bytes the service sent, decoded by convstore, so the
recorded steps keep the service's key order and any field the SDK's models do not know. Nothing here sends
anything, and nothing imports the SDK at module import: ``load_genai`` does, when a client is built.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Final, Literal
from urllib.parse import unquote

import attrs
import httpx

from convstore.client._http import ClientConfig, error_from_payload, error_from_response
from convstore.errors import APIConnectionError, APIError

__all__ = [
    "INSTALL_HINT",
    "SDKCall",
    "error_from_sdk",
    "load_genai",
    "sdk_call",
    "sdk_config",
    "sdk_owner",
    "transport_errors",
]

INSTALL_HINT: Final = 'the google-genai SDK, not installed: pip install google-genai (or "convstore[genai]")'


def load_genai() -> ModuleType:
    """``google.genai``, imported now.

    Raises:
        ImportError: The SDK is not installed; the message names the ``pip install`` command.
    """
    try:
        return importlib.import_module("google.genai")
    except ImportError as exc:
        raise ImportError(f"GenAIClient needs {INSTALL_HINT}") from exc


def sdk_config(*, auto_continue: bool, max_resumes: int) -> ClientConfig:
    """The state machines' configuration when the SDK sends: only continuation and resumes matter.

    The URL, key and timeout in it are never used (the SDK has its own); retries of opening a request are
    the SDK's (``http_options.retry_options``), so ``max_retries`` here counts resumes of a broken stream.

    Raises:
        ValueError: ``max_resumes`` is negative.
    """
    if max_resumes < 0:
        raise ValueError("max_resumes must be >= 0")
    return ClientConfig(
        api_key="unused: the SDK authenticates", max_retries=max_resumes, auto_continue=auto_continue
    )


def sdk_owner(client: Any, *, asynchronous: bool) -> Any:
    """The SDK client whose ``interactions`` to call: ``client.aio`` for async (unless it is that already).

    Raises:
        TypeError: An async SDK client (``genai.Client().aio``) for the sync adapter.
    """
    if asynchronous:
        return client.aio if hasattr(client, "aio") else client
    if not hasattr(client, "aio"):
        raise TypeError("GenAIClient needs a genai.Client; for genai.Client().aio use AsyncGenAIClient")
    return client


@attrs.frozen(kw_only=True)
class SDKCall:
    """One call of the SDK's ``interactions.with_raw_response``: ``method(*args, **kwargs)``.

    Attributes:
        method: ``create`` (``POST /interactions``) or ``get`` (``GET /interactions/{id}``, a replay).
        args: Positional arguments (the interaction id of a ``get``).
        kwargs: Keyword arguments: a create body's fields, ``stream``, ``automatic_continuation=False``.
    """

    method: Literal["create", "get", "delete"]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.field(factory=dict, repr=False)


def sdk_call(request: httpx.Request) -> SDKCall:
    """The SDK call that sends ``request`` (as built by ``build_create_request`` or ``build_get_request``).

    Raises:
        ValueError: A request those builders do not make.
    """
    if request.method == "POST":
        body = json.loads(request.content)
        if not isinstance(body, dict):  # pragma: no cover -- the builders always send an object
            raise ValueError("a create request's body must be a JSON object")
        return SDKCall(method="create", kwargs={**body, "automatic_continuation": False})
    if request.method == "DELETE":
        raw_path = request.url.raw_path.decode("ascii").split("?", 1)[0]
        return SDKCall(method="delete", args=(unquote(raw_path.rsplit("/", 1)[-1]),))
    if request.method == "GET":
        # The raw path: an id holding a "/" is sent escaped, and the decoded path would split it.
        raw_path = request.url.raw_path.decode("ascii").split("?", 1)[0]
        interaction_id = unquote(raw_path.rsplit("/", 1)[-1])
        kwargs: dict[str, Any] = {"stream": request.url.params.get("stream") == "true"}
        last_event_id = request.url.params.get("last_event_id")
        if last_event_id:
            kwargs["last_event_id"] = last_event_id
        return SDKCall(method="get", args=(interaction_id,), kwargs=kwargs)
    raise ValueError(f"no SDK call sends {request.method} {request.url.path}")


def transport_errors() -> tuple[type[BaseException], ...]:
    """The network errors of the HTTP libraries the SDK may send with (``httpx``, or its fork ``httpx2``)."""
    errors: list[type[BaseException]] = [httpx.TransportError]
    try:
        httpx2 = importlib.import_module("httpx2")
    except ImportError:
        pass
    else:
        errors.append(httpx2.TransportError)
    return tuple(errors)


def _sdk_classes(module: str, *names: str) -> tuple[type[BaseException], ...]:
    try:
        found = importlib.import_module(module)
    except ImportError:
        return ()
    classes = (getattr(found, name, None) for name in names)
    return tuple(c for c in classes if isinstance(c, type) and issubclass(c, BaseException))


def _error_body(body: Any, status_code: int) -> APIError:
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        return error_from_payload(body["error"], status_code=status_code)
    if isinstance(body, str):
        return error_from_response(status_code, body.encode())
    if isinstance(body, bytes):
        return error_from_response(status_code, body)
    return APIError("unexpected error response (not an error object)", status_code=status_code)


def error_from_sdk(exc: BaseException, request: httpx.Request) -> APIError | None:
    """convstore's error for what the SDK raised while sending ``request``, or ``None``: not an API error.

    - the SDK's connection and timeout errors, and network errors of its HTTP library: ``APIConnectionError``;
    - an error response (``status_code`` and the parsed ``body``): ``APIError`` with the service's ``code``,
      ``status`` and ``message``, as ``InteractionsClient`` raises it for the same response;
    - anything else (a ``TypeError`` for an argument, say) is not translated.

    Messages name the request and the SDK's class, never the body sent.
    """
    where = f"{request.method} {request.url.path}"
    connection = _sdk_classes("google.genai._interactions", "APIConnectionError")
    if isinstance(exc, (*connection, *transport_errors())):
        return APIConnectionError(f"{where} failed in the google-genai SDK: {type(exc).__name__}")
    interactions_error = _sdk_classes("google.genai._interactions", "APIError")
    legacy_error = _sdk_classes("google.genai.errors", "APIError")
    if isinstance(exc, interactions_error):
        status_code = getattr(exc, "status_code", None)
        if isinstance(status_code, int):
            return _error_body(getattr(exc, "body", None), status_code)
        return APIError(f"{where}: the google-genai SDK raised {type(exc).__name__}")
    if isinstance(exc, legacy_error):
        code = getattr(exc, "code", None)
        if isinstance(code, int):
            return _error_body(getattr(exc, "details", None), code)
        return APIError(f"{where}: the google-genai SDK raised {type(exc).__name__}")
    return None
