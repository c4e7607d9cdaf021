"""Clients for the commands that talk to a model: Gemini, or convstore's emulator of it, in process.

Offline, the emulator answers with an echo of the last message, except that when the conversation declares
the ``get_weather`` tool and the message asks about the weather, the model calls it; the local, fake
``get_weather`` below answers, and the model reports what it returned. That is enough to try every part of a
conversation (streaming, function calls, forks, usage) without a key or a network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import convstore
from convstore.cli._common import CliError

if TYPE_CHECKING:
    from convstore.testing import Emulator, Reply

# httpx and the emulator (``convstore.testing``) are imported by the functions that use them: the commands
# that never talk to a model (``ls``, ``show``, ``search``...) start without them.

__all__ = ["DEFAULT_MODEL", "WEATHER_TOOL", "fake_weather", "model_client", "offline_responder"]

DEFAULT_MODEL = "gemini-3-flash-preview"
OFFLINE_KEY = "offline"  # the emulator takes any key; no real key is ever used offline
API_KEY_ENV = "GEMINI_API_KEY"

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather today in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city, e.g. Lisbon"}},
        "required": ["city"],
    },
}

_FORECASTS = ("sunny", "light rain", "cloudy", "showers", "clear skies", "windy")
_WEATHER_WORDS = re.compile(r"\b(weather|umbrella|rain|forecast|sunny|temperature)\b", re.IGNORECASE)
_CITY = re.compile(r"\b(?:in|for|at)\s+([A-Z][\w'-]+(?:\s[A-Z][\w'-]+)?)")


def fake_weather(city: str) -> dict[str, Any]:
    """A deterministic stand-in for a weather service (Lisbon gets light rain, as in the README)."""
    digest = hashlib.sha256(city.lower().encode()).digest()
    forecast = "light rain" if city.lower() == "lisbon" else _FORECASTS[digest[0] % len(_FORECASTS)]
    return {"city": city, "forecast": forecast, "temperature_c": 8 + digest[1] % 22}


def _last_step(body: Mapping[str, Any]) -> Mapping[str, Any]:
    steps = body.get("input")
    if isinstance(steps, list) and steps and isinstance(steps[-1], Mapping):
        return steps[-1]
    return {}


def _declares_weather(body: Mapping[str, Any]) -> bool:
    tools = body.get("tools")
    return isinstance(tools, list) and any(
        isinstance(tool, Mapping) and tool.get("name") == "get_weather" for tool in tools
    )


def _weather_answer(result: Any) -> Reply:
    from convstore.testing import text_reply  # noqa: PLC0415 -- see the imports

    if isinstance(result, str):
        try:
            result = json.loads(result)
        except ValueError:
            return text_reply(f"The weather service says: {result}.", thought="Reading the tool's answer.")
    if not isinstance(result, Mapping):
        return text_reply("The weather service gave no usable answer.", thought="Reading the tool's answer.")
    forecast = str(result.get("forecast", "unknown weather"))
    advice = "take an umbrella" if "rain" in forecast or "shower" in forecast else "no umbrella needed"
    return text_reply(
        f"{str(forecast).capitalize()} in {result.get('city', 'the city')} today "
        f"({result.get('temperature_c', '?')} °C): {advice}.",
        thought="Reading the tool's answer.",
    )


def offline_responder(body: dict[str, Any]) -> Reply | None:
    """The emulator's replies beyond its echo: the weather tool, called and reported."""
    from convstore.testing import function_call_reply  # noqa: PLC0415 -- see the imports

    last = _last_step(body)
    if last.get("type") == "function_result" and last.get("name") == "get_weather":
        return _weather_answer(last.get("result"))
    if last.get("type") == "user_input" and _declares_weather(body):
        text = " ".join(
            str(item.get("text", ""))
            for item in last.get("content") or []
            if isinstance(item, Mapping) and item.get("type") == "text"
        )
        if _WEATHER_WORDS.search(text):
            found = _CITY.search(text)
            return function_call_reply("get_weather", {"city": found.group(1) if found else "Lisbon"})
    return None


@contextmanager
def model_client(*, offline: bool) -> Iterator[tuple[convstore.InteractionsClient, Emulator | None]]:
    """An ``InteractionsClient`` on Gemini (``GEMINI_API_KEY``) or, offline, on an in-process emulator.

    Raises:
        CliError: online without a key (exit status 2).
    """
    if offline:
        import httpx  # noqa: PLC0415 -- see the imports

        from convstore.testing import Emulator  # noqa: PLC0415

        emulator = Emulator(respond=offline_responder)
        with httpx.Client(transport=emulator.transport()) as http:
            yield convstore.InteractionsClient(OFFLINE_KEY, http_client=http), emulator
        return
    if not os.environ.get(API_KEY_ENV):
        raise CliError(f"{API_KEY_ENV} is not set: export your Gemini API key, or pass --offline", code=2)
    with convstore.InteractionsClient() as client:
        yield client, None
