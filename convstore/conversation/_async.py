"""The conversation facade: where the store and the API client meet. ``_sync.py`` is generated from this
file by ``scripts/unasync.py``.

``request()`` builds the next create body from the branch; ``record()`` writes what was sent and what came
back as one exchange; ``send()`` and ``stream()`` do both around a client call. A turn is atomic: nothing is
written unless the call completed, so a failed call, a broken stream or an abandoned iteration leaves the
branch as it was.

The client is duck-typed (anything with ``create(body)`` / ``stream(body)`` as ``InteractionsClient`` has):
the store layer stays free of HTTP, and the official SDK can be used instead through ``request``/``record``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from convstore import _otel, codec
from convstore._limits import Limits
from convstore._wire import SplicedInput, plain_input, takes_spliced_input
from convstore.budget import TokenBudget
from convstore.conversation import _replies
from convstore.conversation._request import RequestBody, build_body, new_input_steps
from convstore.errors import CodecError
from convstore.model import Node
from convstore.model._interaction import Interaction
from convstore.store import _async as store_async
from convstore.store import _ops
from convstore.store._prepare import (
    exchange_id_for,
    exchange_row,
    prepare_wires,
    settings_tokens,
    window_length,
    window_parts,
)

__all__ = ["AsyncConversation", "AsyncStore", "AsyncTurnStream"]


class _Creates(Protocol):
    async def create(self, body: Mapping[str, Any]) -> Interaction: ...


class _Streams(Protocol):
    def stream(self, body: Mapping[str, Any]) -> Any: ...


class AsyncConversation(store_async.AsyncConversation):
    """One branch of a conversation, with the calls that talk to the API (see ``convstore.store``)."""

    async def request(
        self,
        input: Any,
        *,
        store: bool = False,
        budget: TokenBudget | None = None,
        **overrides: Any,
    ) -> RequestBody:
        """The full create body for the next turn: settings, ``store: false``, history + the new input.

        Args:
            input: A string, a content item or list of them (one ``user_input``), or a step or list of
                steps (``function_result`` steps answering the model's calls, say).
            store: As for ``send``: True builds a stateful body, chained on the branch head's stored
                interaction with ``previous_interaction_id`` (input = the new steps only) while the head
                is one, replaying the history with ``store: true`` otherwise.
            budget: Send only the history that fits (see ``TokenBudget``); the system instruction, tools
                and the new input always go.
            **overrides: Request settings for this call only (``model``, ``generation_config``,
                ``system_instruction``, ``tools``, ``response_format``, ...); None removes one. A mapping
                over the conversation's mapping (``generation_config={"temperature": 0.2}``) changes only
                the keys it names; a key set to None removes that key.

        Returns:
            A ``RequestBody``: a JSON-ready dict that ``InteractionsClient.create`` and the official SDK's
            ``client.interactions.create(**body)`` both accept, which remembers the branch head it was built
            on. Pass it to ``record`` with the reply.

        Raises:
            CodecError: a malformed input. TypeError: an unknown override. ValueError: no model.
            BudgetExceededError: the new input, or the newest exchange it needs, does not fit ``budget``.
        """
        return await self._body(input, store, overrides, budget, spliced=False)

    async def _new_steps_of(self, body: Mapping[str, Any]) -> tuple[list[Any], _ops.Head, int | None]:
        """The steps of ``body["input"]`` that the branch does not hold yet, the head they go after, and the
        body's estimated input tokens."""
        if isinstance(body, RequestBody):
            if body.conversation_id != self.id or body.branch != self._branch:
                raise CodecError(
                    [("body", f"built for conversation {body.conversation_id!r}, branch {body.branch!r}")]
                )
            sent = body.get("input")
            if isinstance(sent, SplicedInput):  # built by send() or stream()
                return sent.steps, body._head, body.estimated_input_tokens
            if not isinstance(sent, list) or len(sent) < body.history_length:
                raise CodecError([("input", "shorter than the history request() put in it")])
            return sent[body.history_length :], body._head, body.estimated_input_tokens
        # A body this conversation did not build (a copy, say): its input must extend the branch as it is.
        sent = plain_input(body.get("input"))
        if not isinstance(sent, list):
            return new_input_steps(sent), self._head, None
        if body.get("previous_interaction_id") is not None:
            return sent, self._head, None
        history = await self.history()
        if sent[: len(history)] != history:
            raise CodecError(
                [("input", "does not start with this branch's history: record the body request() returned")]
            )
        return sent[len(history) :], self._head, None

    @_otel.traced_record
    async def record(
        self, body: Mapping[str, Any], interaction: Any, *, exchange_id: str | None = None
    ) -> list[Node]:
        """Write a completed turn: the new input steps of ``body`` and the reply's steps, as one exchange.

        Safe to call again after ``OutcomeUnknownError``: the exchange's id is chosen before the write (by
        default from the conversation, the branch, the head the body was built on and the interaction's id),
        so the same turn recorded again is recognised and returned as stored, never written twice.

        Args:
            body: The create body that was sent (as ``request`` returned it).
            interaction: The reply: a convstore ``Interaction``, the API's JSON, or the official SDK's object;
                or, for a streamed call, the stream (the SDK's, consumed here; convstore's client's, consumed
                or not) or the list of all its events (the SDK's or convstore's), reassembled into exactly
                what the non-streamed call returns.
            exchange_id: The exchange's id (see ``append``); by default derived as said above (a new one
                when the reply carries no id).

        Returns:
            The new nodes.

        Raises:
            ConflictError: the branch moved since the body was built (another writer's turn, even one this
                object has read since); nothing written.
            CodecError: a malformed reply, a reply that cannot be recorded whole (a stream's final
                interaction, which carries no steps; events missing their start or their end), or a body
                this branch did not build.
            APIError: a streamed reply's events end in an ``error`` event: the turn failed.
            OutcomeUnknownError: the connection failed during the commit; record it again.
        """
        limits = self._store.limits
        reply = await self._reply_of(interaction, limits)
        new, head, estimated = await self._new_steps_of(body)
        prepared = prepare_wires(
            codec.normalize_steps([*new, *reply.steps], limits=limits),
            self._store.counter,
            self._store.redact,
            limits,
        )
        exchange = exchange_row(
            estimated_input_tokens=estimated,
            interaction_id=reply.id,
            stored=bool(body.get("store", True)),
            model=reply.model or body.get("model"),
            status=reply.status,
            usage=reply.usage.to_json() if reply.usage is not None else None,
        )
        if exchange_id is None and reply.id:
            exchange_id = exchange_id_for(self.id, self._branch, head.node_id, reply.id)
        return await self._append(prepared, exchange, head, exchange_id=exchange_id)

    async def _reply_of(self, reply: Any, limits: Limits) -> Interaction:
        """The interaction of a reply, reading a stream to its end (see ``record``)."""
        if not _replies.is_interaction_like(reply):
            if hasattr(reply, "get_final_interaction"):  # convstore's client's stream, consumed or not
                return _replies.interaction_from_reply(await reply.get_final_interaction(), limits)
            if hasattr(reply, "__aiter__"):  # the SDK's stream
                events = []
                async for event in reply:
                    events.append(event)
                return _replies.interaction_from_events(events)
        return _replies.interaction_from_reply(reply, limits)

    async def _body(
        self,
        input: Any,
        store: bool,
        overrides: Mapping[str, Any],
        budget: TokenBudget | None,
        *,
        spliced: bool,
    ) -> RequestBody:
        """The body of the next turn. ``spliced``: its ``input`` is a ``SplicedInput`` (the history's stored
        texts, never decoded), for convstore's own clients; else plain wire JSON, decoded."""
        new = new_input_steps(input)
        counter = budget.counter if budget is not None and budget.counter is not None else self._store.counter
        fixed = settings_tokens(self._info, counter) + sum(counter.count_step(step) for step in new)
        if store and budget is None:
            # Chaining sends the API's whole timeline, so a budget always replays instead.
            chain = await self._chain_from()
            if chain is not None:
                body = build_body(self._info, new, overrides, store=True, previous_interaction_id=chain)
                return self._built(body, 0, None)
        texts: list[bytes] | list[str]
        if budget is None:
            texts = await self._history_texts()
            history_length = len(texts)
            history_tokens = self._head.total_tokens
        else:
            needs_calls = bool(new) and new[0]["type"] != "user_input"
            window = await self._window(budget, fixed_tokens=fixed, require_history=needs_calls)
            texts = window_parts(window)
            history_length = window_length(window)
            history_tokens = window.history_tokens
        steps = SplicedInput(texts, new)
        body = build_body(self._info, steps if spliced else steps.decode(), overrides, store=store)
        return self._built(body, history_length, fixed + history_tokens)

    def _built(self, body: dict[str, Any], history_length: int, estimated: int | None) -> RequestBody:
        """``body`` as built on the head this object just read."""
        return RequestBody(
            body,
            conversation_id=self.id,
            branch=self._branch,
            head=self._head,
            history_length=history_length,
            estimated_input_tokens=estimated,
        )

    async def _chain_from(self) -> str | None:
        """The stored interaction the branch head came from, if the next turn can chain on it.

        Only when the head is the last step of an exchange recorded with ``store: true``: a fork or an edit
        that ends anywhere else, or anything appended locally since, makes the turn replay instead.
        """
        await self.refresh()
        return await self._store._run(_ops.chain_point(self.id, self._head))

    @_otel.traced_send
    async def send(
        self,
        input: Any,
        *,
        client: _Creates,
        store: bool = False,
        budget: TokenBudget | None = None,
        **overrides: Any,
    ) -> Interaction:
        """Send the next turn and record it: request, call, record.

        Args:
            input: As for ``request``.
            client: An ``InteractionsClient`` (or anything with ``create(body) -> Interaction``).
            store: False (default): stateless, the whole history is replayed. True: the API keeps the
                interaction, and the next ``send(..., store=True)`` chains on it with
                ``previous_interaction_id`` while the branch head is that interaction; the turn is still
                recorded here in full.
            budget: As for ``request``; with ``store=True`` it makes the turn replay rather than chain.
            **overrides: As for ``request``.

        Returns:
            The reply (continuation hops already merged by the client).

        Raises:
            APIError and its subclasses: the call failed; nothing was written.
            ConflictError: the branch moved while the call ran; nothing was written.
        """
        body = await self._body(input, store, overrides, budget, spliced=takes_spliced_input(client))
        interaction = await client.create(body)
        await self.record(body, interaction)
        return interaction

    async def stream(
        self,
        input: Any,
        *,
        client: _Streams,
        store: bool = False,
        budget: TokenBudget | None = None,
        **overrides: Any,
    ) -> AsyncTurnStream:
        """Send the next turn streamed. Iterate the result for the events; the turn is recorded when the
        stream completes (after the last event), and only then.

        Returns:
            An ``AsyncTurnStream``: iterable over the client's events; ``.interaction`` and ``.nodes``
            afterwards.
        """
        body = await self._body(input, store, overrides, budget, spliced=takes_spliced_input(client))
        return AsyncTurnStream(self, body, client.stream(body))

    async def edit(self, node_id: str, *, branch: str | None = None) -> AsyncConversation:
        """A new branch ending just before ``node_id``, to send a replacement for that message.

        ``conv.edit(question.id).send("a better question", client=client)`` keeps the old question and its
        answers on the old branch and starts the new one from the same history.
        """
        node = await self.node(node_id)
        return await self._fork(node.parent_id, branch)


class AsyncTurnStream:
    """The events of one streamed turn; the turn is written to the branch once the stream completes."""

    def __init__(self, conversation: AsyncConversation, body: RequestBody, stream: Any) -> None:
        self._conversation = conversation
        self._body = body
        self._stream = stream
        self.interaction: Interaction | None = None
        self.nodes: list[Node] | None = None

    @_otel.traced_stream
    async def __aiter__(self) -> AsyncIterator[Any]:
        async with self._stream as events:
            async for event in events:
                yield event
            interaction = await events.get_final_interaction()
        self.nodes = await self._conversation.record(self._body, interaction)
        self.interaction = interaction

    async def until_done(self) -> Interaction:
        """Consume every event and return the recorded interaction."""
        async for _ in self:
            pass
        if self.interaction is None:  # pragma: no cover -- iteration either records or raises
            raise RuntimeError("the stream ended without an interaction")
        return self.interaction


class AsyncStore(store_async.AsyncStore):
    """The store whose conversations also have ``request``, ``record``, ``send`` and ``stream``."""

    _conversation_class = AsyncConversation

    async def create_conversation(self, *args: Any, **kwargs: Any) -> AsyncConversation:
        return await super().create_conversation(*args, **kwargs)  # type: ignore[return-value]

    async def conversation(self, conversation_id: str, branch: str = "main") -> AsyncConversation:
        return await super().conversation(conversation_id, branch)  # type: ignore[return-value]
