"""An offline emulator of the Interactions API: ``POST``/``GET``/``DELETE`` on ``/{version}/interactions``.

``Emulator.handle`` is a plain function of a request (method, path, query, headers, body bytes) to an
``EmulatorResponse``; ``_transport`` wraps it for httpx and ``_server`` for real HTTP. Replies are, in
order of precedence: the scripted queue (``script``), the ``respond`` callable, then a default derived from
the input (a thought with a signature and a ``model_output`` echoing the last user text). Everything is
deterministic: ids, signatures, timestamps and usage depend only on the sequence of requests.

Usage (reported on every hop; see ``_validate`` for the unit heuristic):

- ``total_input_tokens``: ``sum(ceil(len(unit) / 4))`` over the prompt units (system instruction, tools,
  each step of the whole input, the stored timeline included);
- ``total_cached_tokens`` (only when non-zero): the tokens of the longest run of leading units equal to
  those of the previous create request this emulator accepted;
- ``total_output_tokens`` / ``total_thought_tokens``: ``ceil(len / 4)`` of the compact JSON of each
  non-thought / thought step of the hop;
- ``total_tokens`` = input + output + thought.

Stateful mode (``store`` true or absent) keeps interactions by id: ``previous_interaction_id`` prepends
the stored timeline, ``GET .../interactions/{id}`` returns the whole timeline (``stream=true`` replays the
events, after ``last_event_id`` if given), ``DELETE`` forgets it. ``background`` is accepted and answered
like a normal request; with ``retention``, forgotten once the clock passes its creation plus ``retention``
(404 afterwards). The Files API and its expiry: ``_files``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from convstore.testing._files import Clock, FileService, real_clock
from convstore.testing._render import hop_events, iter_chunks, number_events
from convstore.testing._replies import ErrorReply, Reply, text_reply
from convstore.testing._transport import EmulatorTransport
from convstore.testing._validate import (
    SIGNATURE_PREFIX,
    RequestError,
    SignatureBook,
    canonical,
    check_body,
    check_function_results,
    normalize_input,
    prompt_units,
    tokens,
)

__all__ = ["Emulator", "EmulatorResponse", "RecordedRequest", "Responder"]

JSONObject = dict[str, Any]
Responder = Callable[[JSONObject], "Reply | ErrorReply | None"]
"""Called with each create body that needs a reply; ``None`` falls back to the default reply."""

_EPOCH = datetime(2026, 6, 2, 12, 0, 0, tzinfo=timezone.utc)
_VERSIONS = ("v1beta", "v1")


@attrs.frozen(kw_only=True)
class RecordedRequest:
    """A request the emulator received (``headers`` and ``body`` are hidden from the repr)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str] = attrs.field(repr=False)
    body: Any = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class EmulatorResponse:
    """A response: ``chunks`` of the body; ``broken`` means the connection drops after the last chunk."""

    status_code: int
    headers: dict[str, str]
    chunks: list[bytes] = attrs.field(repr=lambda chunks: f"<{len(chunks)} chunk(s)>")
    broken: bool = False

    @property
    def body(self) -> bytes:
        """The whole body."""
        return b"".join(self.chunks)

    @property
    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@attrs.define
class _Plan:
    """A reply made concrete (signatures and ids issued), with what its hops need."""

    hops: list[list[JSONObject]]
    reply: Reply
    body: JSONObject
    model: str
    timeline: list[JSONObject]  # the whole prompt, stored history included
    units: list[str]


@attrs.frozen
class _Resume:
    plan: _Plan
    hop: int
    offset: int
    owner_id: str


def _json_response(status_code: int, body: Any, headers: Mapping[str, str] | None = None) -> EmulatorResponse:
    data = json.dumps(body, ensure_ascii=False).encode()
    return EmulatorResponse(
        status_code=status_code,
        headers={"content-type": "application/json; charset=utf-8", **(headers or {})},
        chunks=[data],
    )


class Emulator:
    """The emulated service (see the module docstring).

    Args:
        respond: Reply factory used when the script queue is empty.
        seed: Mixed into ids and signatures, so two emulators issue different values.
        clock: The time of the Files API's expiry and of retention (``ManualClock`` to move it in a test);
            the current time by default. Interactions' ``created`` stamps stay deterministic regardless.
        file_ttl: How long an uploaded file is kept (48 hours, as on the service).
        retention: How long a stored interaction is kept (``None``: until deleted).

    Attributes:
        requests: Every request received, in order.
        files: The Files API's state (``files.data(uri)`` gives a live file's bytes).
    """

    def __init__(
        self,
        *,
        respond: Responder | None = None,
        seed: str = "emu",
        clock: Clock | None = None,
        file_ttl: timedelta = timedelta(hours=48),
        retention: timedelta | None = None,
    ) -> None:
        self.respond = respond
        self.requests: list[RecordedRequest] = []
        self._seed = seed
        self._queue: deque[Reply | ErrorReply] = deque()
        self._lock = threading.Lock()
        self._counter = 0
        self._signatures = SignatureBook()
        self._resumes: dict[str, _Resume] = {}
        self._stored: dict[str, JSONObject] = {}
        self._previous_units: list[str] = []
        self.clock: Clock = clock if clock is not None else real_clock
        self.retention = retention
        self.files = FileService(clock=self.clock, ttl=file_ttl, seed=seed)

    def script(self, *replies: Reply | ErrorReply) -> None:
        """Queues replies for the next create requests (continuation hops do not consume the queue)."""
        with self._lock:
            self._queue.extend(replies)

    def adopt_history(self, steps: Sequence[JSONObject]) -> None:
        """Accept a history's thoughts and signatures as this emulator's own.

        For a conversation recorded against another emulator (an earlier process: ``convstore chat
        --offline`` continued later): its replayed model turns then pass the signature checks, as the real
        API accepts its own signatures in a later session.
        """
        with self._lock:
            self._signatures.adopt(steps)

    @property
    def stored_ids(self) -> list[str]:
        """Ids of the interactions kept in stateful mode (and not expired)."""
        return [interaction_id for interaction_id in list(self._stored) if self._kept(interaction_id)]

    def drop_interaction(self, interaction_id: str) -> None:
        """Forget a stored interaction, as the service does once its retention is over."""
        self._stored.pop(interaction_id, None)

    def _kept(self, interaction_id: str) -> JSONObject | None:
        """The stored interaction, or None (never stored, deleted, or past ``retention``: forgotten)."""
        stored = self._stored.get(interaction_id)
        if (
            stored is not None
            and self.retention is not None
            and stored["at"] + self.retention <= self.clock()
        ):
            del self._stored[interaction_id]
            return None
        return stored

    def transport(self) -> EmulatorTransport:
        """An ``httpx`` transport (sync and async) serving this emulator."""
        return EmulatorTransport(self)

    # -- dispatch -------------------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        *,
        base_url: str | None = None,
    ) -> EmulatorResponse:
        """Serves one request.

        Args:
            method: HTTP method.
            path: URL path, e.g. ``/v1beta/interactions``.
            query: Query parameters.
            headers: Request headers (any case).
            body: Request body bytes.
            base_url: Scheme and host the request was sent to (the upload session URL is built on it);
                ``http://`` plus the ``host`` header by default.

        Returns:
            The response.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                parsed = None
        with self._lock:
            self.requests.append(
                RecordedRequest(method=method, path=path, query=dict(query), headers=lowered, body=parsed)
            )
            try:
                base = base_url or f"http://{lowered.get('host', '127.0.0.1')}"
                if (found := self.files.route(method, path, query, lowered, body, base_url=base)) is not None:
                    return EmulatorResponse(status_code=found[0], headers=found[1], chunks=[found[2]])
                return self._dispatch(method, path, query, lowered, parsed, has_body=bool(body))
            except RequestError as exc:
                return _json_response(exc.status_code, exc.body())

    def _dispatch(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: Any,
        *,
        has_body: bool,
    ) -> EmulatorResponse:
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] not in _VERSIONS or parts[1] != "interactions" or len(parts) > 3:
            raise RequestError(f"no such resource: {path}", status_code=404, status="NOT_FOUND")
        if not (headers.get("x-goog-api-key") or headers.get("authorization")):
            raise RequestError("API key missing", status_code=401, status="UNAUTHENTICATED")
        if len(parts) == 2:
            if method != "POST":
                raise RequestError(f"{method} is not allowed here", status_code=405, status="UNIMPLEMENTED")
            if has_body and body is None:
                raise RequestError("the request body is not valid JSON")
            body = check_body(body)
            self.files.check_input(body)
            return self._create(body, stream=body.get("stream") is True or query.get("alt") == "sse")
        interaction_id = parts[2]
        stored = self._kept(interaction_id)
        if stored is None:
            raise RequestError(
                f"interaction {interaction_id!r} not found", status_code=404, status="NOT_FOUND"
            )
        if method == "DELETE":
            del self._stored[interaction_id]
            return _json_response(200, {})
        if method != "GET":
            raise RequestError(f"{method} is not allowed here", status_code=405, status="UNIMPLEMENTED")
        return self._get(stored, query)

    def _get(self, stored: JSONObject, query: Mapping[str, str]) -> EmulatorResponse:
        stream = query.get("stream") == "true"
        last_event_id = query.get("last_event_id")
        if last_event_id and not stream:
            raise RequestError("last_event_id requires stream=true")
        if not stream:
            body = {**stored["interaction"], "steps": stored["timeline"]}
            if query.get("include_input") == "true":
                body["input"] = stored["input"]
            return _json_response(200, body)
        events: list[JSONObject] = stored["events"]
        if last_event_id:
            positions = [i for i, e in enumerate(events) if e.get("event_id") == last_event_id]
            if not positions:
                raise RequestError(f"last_event_id {last_event_id!r} is not an event of this interaction")
            events = events[positions[0] + 1 :]
        return self._sse(events, done=True)

    # -- create ---------------------------------------------------------------------------------------

    def _create(self, body: JSONObject, *, stream: bool) -> EmulatorResponse:
        token = body.get("continuation_token")
        if token is not None:
            resume = self._resume_for(body, token)
            units = resume.plan.units
            response = self._serve(resume.plan, resume.hop, resume.offset, stream=stream, first=False)
        else:
            plan_or_error = self._plan(body)
            if isinstance(plan_or_error, ErrorReply):
                return _json_response(plan_or_error.status_code, plan_or_error.body, plan_or_error.headers)
            units = plan_or_error.units
            response = self._serve(plan_or_error, 0, 0, stream=stream, first=True)
        self._previous_units = units
        return response

    def _resume_for(self, body: JSONObject, token: str) -> _Resume:
        resume = self._resumes.get(token)
        if resume is None:
            raise RequestError("continuation_token is not valid")
        if body.get("store") is False:
            sent = {k: v for k, v in body.items() if k not in ("continuation_token", "stream")}
            issued = {k: v for k, v in resume.plan.body.items() if k not in ("continuation_token", "stream")}
            if canonical(sent) != canonical(issued):
                raise RequestError(
                    "continuation_token must be sent with the body and input it was issued for"
                )
        else:
            if body.get("previous_interaction_id") != resume.owner_id:
                raise RequestError(
                    f"continuation_token needs previous_interaction_id {resume.owner_id!r} with store=true"
                )
            if "input" in body:
                raise RequestError("input must be omitted when continuing with previous_interaction_id")
        return resume

    def _plan(self, body: JSONObject) -> _Plan | ErrorReply:
        history: list[JSONObject] = []
        previous = body.get("previous_interaction_id")
        if previous is not None:
            stored = self._kept(previous)
            if stored is None:
                raise RequestError(
                    f"previous_interaction_id {previous!r} not found", status_code=404, status="NOT_FOUND"
                )
            history = list(stored["timeline"])
        if "input" not in body:
            raise RequestError("input is required")
        steps = normalize_input(body["input"])
        check_function_results([*history, *steps], offset=len(history))
        self._signatures.check(steps)
        reply = self._next_reply(body, steps)
        if isinstance(reply, ErrorReply):
            return reply
        hops = [reply.steps, *reply.continuation_hops]
        hops = [[self._issue(step) for step in hop] for hop in hops]
        for hop in hops:
            self._signatures.record_hop(hop)
        timeline = [*history, *steps]
        units = prompt_units(body, timeline)
        return _Plan(hops=hops, reply=reply, body=body, model=body["model"], timeline=timeline, units=units)

    def _next_reply(self, body: JSONObject, steps: list[JSONObject]) -> Reply | ErrorReply:
        if self._queue:
            return self._queue.popleft()
        if self.respond is not None:
            reply = self.respond(body)
            if reply is not None:
                return reply
        return _default_reply(steps)

    def _issue(self, template: JSONObject) -> JSONObject:
        step: JSONObject = json.loads(json.dumps(template))
        if step.get("type") == "thought" and "signature" not in step:
            step["signature"] = self._signatures.issue(SIGNATURE_PREFIX + self._token("sig", 24))
        if step.get("type") == "function_call" and "id" not in step:
            self._counter += 1
            step = {"type": "function_call", "id": f"fc_emu{self._counter:04d}", **step}
        return step

    def _token(self, kind: str, size: int) -> str:
        self._counter += 1
        digest = hashlib.sha256(f"{self._seed}:{kind}:{self._counter}".encode()).digest()
        return base64.b64encode(digest[:size]).decode()

    # -- serving --------------------------------------------------------------------------------------

    def _serve(self, plan: _Plan, hop: int, offset: int, *, stream: bool, first: bool) -> EmulatorResponse:
        self._counter += 1
        number = self._counter
        encoded = base64.urlsafe_b64encode(f"{self._seed}-{number}".encode()).decode()
        interaction_id = "v1_" + encoded.rstrip("=")
        created = _EPOCH + timedelta(seconds=2 * number)
        steps = plan.hops[hop][offset:]
        last = hop == len(plan.hops) - 1
        interaction: JSONObject = {
            "id": interaction_id,
            "object": "interaction",
            "model": plan.model,
            "status": plan.reply.status if last else "requires_continuation",
            "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated": (created + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if not last:
            interaction["continuation_token"] = self._register(_Resume(plan, hop + 1, 0, interaction_id))
        interaction["usage"] = plan.reply.usage or self._usage(plan.units, steps)

        def checkpoint(done: int) -> str:
            return self._register(_Resume(plan, hop, offset + done, interaction_id))

        events = number_events(
            hop_events(
                interaction, steps, checkpoint=checkpoint if plan.reply.checkpoints and stream else None
            )
        )
        if plan.body.get("store") is not False:
            produced = [step for earlier in plan.hops[:hop] for step in earlier] + plan.hops[hop][:offset]
            chained = {"previous_interaction_id": plan.body.get("previous_interaction_id")}
            self._stored[interaction_id] = {
                "interaction": {**interaction, **{k: v for k, v in chained.items() if v}},
                "timeline": [*plan.timeline, *produced, *steps],
                "input": plan.body.get("input"),
                "events": events,
                "at": self.clock(),
            }
        error = plan.reply.error_event if first else None
        if not stream:
            if error is not None:
                message = str(error.get("message") or "internal error")
                return _json_response(500, {"error": {"code": 500, "message": message, "status": "INTERNAL"}})
            return _json_response(200, {**interaction, "steps": steps}, plan.reply.headers)
        if error is not None:
            cut = events[: plan.reply.error_after]
            events = number_events([*cut, {"event_type": "error", "error": error}])
            return self._sse(events, done=False, headers=plan.reply.headers)
        if first and plan.reply.break_after is not None:
            cut = events[: plan.reply.break_after]
            return self._sse(cut, done=False, broken=True, headers=plan.reply.headers)
        return self._sse(events, done=True, headers=plan.reply.headers)

    def _register(self, resume: _Resume) -> str:
        token = "Cg" + self._token("cont", 18)
        self._resumes[token] = resume
        return token

    def _usage(self, units: list[str], steps: list[JSONObject]) -> JSONObject:
        input_tokens = sum(tokens(unit) for unit in units)
        cached = 0
        for unit, previous in zip(units, self._previous_units, strict=False):
            if unit != previous:
                break
            cached += tokens(unit)
        output = sum(tokens(canonical(s)) for s in steps if s.get("type") != "thought")
        thought = sum(tokens(canonical(s)) for s in steps if s.get("type") == "thought")
        usage: JSONObject = {
            "total_input_tokens": input_tokens,
            "total_output_tokens": output,
            "total_thought_tokens": thought,
            "total_tokens": input_tokens + output + thought,
        }
        if cached:
            usage["total_cached_tokens"] = cached
        return usage

    @staticmethod
    def _sse(
        events: list[JSONObject],
        *,
        done: bool,
        broken: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> EmulatorResponse:
        return EmulatorResponse(
            status_code=200,
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                **(headers or {}),
            },
            chunks=list(iter_chunks(events, done=done and not broken)),
            broken=broken,
        )


def _default_reply(steps: list[JSONObject]) -> Reply:
    """A thought and an echo of the last user text (or an acknowledgement of the last function result)."""
    last = steps[-1] if steps else {}
    if last.get("type") == "function_result":
        name = last.get("name") or last.get("call_id")
        return text_reply(f"Received the result of {name}.", thought="A tool result arrived.")
    texts = [
        item.get("text", "")
        for item in last.get("content") or []
        if isinstance(item, dict) and item.get("type") == "text"
    ]
    said = " ".join(t for t in texts if isinstance(t, str)).strip()
    return text_reply(f"Echo: {said[:60]}" if said else "Echo.", thought="Replying to the latest message.")
