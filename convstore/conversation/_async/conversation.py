"""The conversation facade: where the store and the API client meet. Written once, for asyncio, in
``conversation/_async/``; ``scripts/unasync.py`` generates the blocking twin in ``conversation/_sync/``.

``request()`` builds the next create body from the branch; ``record()`` writes what was sent and what came
back as one exchange; ``send()`` and ``stream()`` do both around a client call. A turn is atomic: nothing is
written unless the call completed, so a failed call, a broken stream or an abandoned iteration leaves the
branch as it was.

The client is duck-typed (anything with ``create(body)`` / ``stream(body)`` as ``InteractionsClient`` has):
the store layer stays free of HTTP, and the official SDK can be used instead through ``request``/``record``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from typing_extensions import Unpack

from convstore import _otel
from convstore._wire import SplicedInput, plain_input, takes_spliced_input
from convstore.budget import TokenBudget
from convstore.conversation import _replies
from convstore.conversation._async import lifecycle as _lifecycle
from convstore.conversation._async.turn_stream import AsyncTurnStream
from convstore.conversation._media import FileStatus, MediaPolicy, RemoteDeletion, file_positions, uris_at
from convstore.conversation._request import RequestBody, RequestSettings, StreamClient, new_input_steps
from convstore.conversation._turn import Turn
from convstore.errors import APIError, CodecError, NodeNotFoundError
from convstore.model import Node
from convstore.model._interaction import Interaction
from convstore.store import _files, _ops
from convstore.store._async import access
from convstore.store._async.store import _AsyncConversationBase, _AsyncStoreBase
from convstore.store._prepare import exchange_id_for, utcnow, valid_id, window_length, window_parts

__all__ = ["AsyncConversation", "AsyncCreateClient", "AsyncStore", "AsyncTurnStream"]


class AsyncCreateClient(Protocol):
    """What ``AsyncConversation.send`` calls: ``AsyncInteractionsClient``, ``AsyncGenAIClient``, or any
    object with this ``create``."""

    async def create(self, body: Mapping[str, Any]) -> Interaction:
        """Send ``body`` (a create request) and return the completed reply."""


class AsyncConversation(_AsyncConversationBase):
    """One branch of a conversation: its history, appends to it, forks from it, and the turns that talk to
    the API (``request`` and ``record`` around any client, ``send`` and ``stream`` with convstore's).

    It remembers the branch head it last saw (when opened, after ``append``, ``record`` and ``history``);
    ``append`` and ``record`` move the head only if it is still there. Not thread-safe: give each thread
    its own (``store.conversation(id, branch)`` is cheap); the store is thread-safe.
    """

    async def request(
        self,
        input: Any,
        *,
        store: bool = False,
        budget: TokenBudget | None = None,
        media: MediaPolicy = "upload",
        client: Any = None,
        **overrides: Unpack[RequestSettings],
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
            media: How files uploaded with ``upload`` are sent (the stored steps never change): ``upload``
                names each by a uri that lives (one that expired, or expires within
                ``Lifecycle.upload_margin``, is uploaded again first, with ``client``); ``inline`` sends
                the stored bytes as inline ``data`` instead (nothing uploaded).
            client: Uploads expired files again (``InteractionsClient``, ``GenAIClient``); needed only
                when one has expired.
            **overrides: Request settings for this call only (``RequestSettings`` lists them: ``model``,
                ``generation_config``, ``system_instruction``, ``tools``, ...); None removes one. A mapping
                over the conversation's mapping (``generation_config={"temperature": 0.2}``) changes only
                the keys it names; a key set to None removes that key.

        Returns:
            A ``RequestBody``: a JSON-ready dict that ``InteractionsClient.create`` and the official SDK's
            ``client.interactions.create(**body)`` both accept, which remembers the branch head it was built
            on. Pass it to ``record`` with the reply.

        Raises:
            CodecError: a malformed input. TypeError: an unknown override. ValueError: no model.
            LimitExceededError: the new input is beyond the store's ``limits`` (checked before the branch is
                read).
            BudgetExceededError: the new input, or the newest exchange it needs, does not fit ``budget``.
        """
        return await self._body(input, store, overrides, budget, spliced=False, client=client, media=media)

    async def _turn_of(self, body: Mapping[str, Any]) -> tuple[Turn, _ops.Head, int | None]:
        """The turn ``body`` sends (checked when the body was built, or now for a body this conversation
        did not build), the head it goes after, and the body's estimated input tokens."""
        store = access.store_of(self)
        if isinstance(body, RequestBody):
            if body.conversation_id != self.id or body.branch != self.branch:
                raise CodecError(
                    [("body", f"built for conversation {body.conversation_id!r}, branch {body.branch!r}")]
                )
            turn = body._turn
            sent = body.get("input")
            new: Sequence[Any]
            if isinstance(sent, SplicedInput):  # built by send() or stream(): the turn's own steps
                new = sent.steps
            elif not isinstance(sent, list) or len(sent) < body.history_length:
                raise CodecError([("input", "shorter than the history request() put in it")])
            else:
                new = sent[body.history_length :]
            if turn is None or not turn.sends(new):  # request()'s input, edited before it was sent
                turn = Turn.of_steps(new, limits=store.limits, counter=store.counter, redact=store.redact)
            return turn, body._built_on, body.estimated_input_tokens
        # A body this conversation did not build (a copy, say): its input must extend the branch as it is.
        sent = plain_input(body.get("input"))
        if not isinstance(sent, list):
            new = new_input_steps(sent, store.limits)
        elif body.get("previous_interaction_id") is not None:
            new = sent
        else:
            history = await self.history()
            if sent[: len(history)] != history:
                raise CodecError(
                    [
                        (
                            "input",
                            "does not start with this branch's history: record the body request() returned",
                        )
                    ]
                )
            new = sent[len(history) :]
        turn = Turn.of_steps(new, limits=store.limits, counter=store.counter, redact=store.redact)
        return turn, access.head(self), None

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
            LimitExceededError: a step of the reply, or the exchange, beyond the store's ``limits``.
            APIError: a streamed reply's events end in an ``error`` event: the turn failed.
            OutcomeUnknownError: the connection failed during the commit; record it again.
        """
        with _otel.record_span(self, body) as span:
            reply = await self._reply_of(interaction)
            turn, head, estimated = await self._turn_of(body)
            prepared, exchange = turn.exchange(
                reply,
                stored=bool(body.get("store", True)),
                model=body.get("model"),
                estimated_input_tokens=estimated,
            )
            span.replied(body, turn.interaction)
            reply_id = turn.interaction.id if turn.interaction is not None else None
            if exchange_id is None and reply_id:
                exchange_id = exchange_id_for(self.id, self.branch, head.node_id, reply_id)
            return await access.append(self, prepared, exchange, head, exchange_id=exchange_id)

    async def _reply_of(self, reply: Any) -> Any:
        """The reply with a stream read to its end (the list of its events, or its final interaction);
        any other form as it is, for the turn to read once (see ``record``)."""
        if not _replies.is_interaction_like(reply):
            if hasattr(reply, "get_final_interaction"):  # convstore's client's stream, consumed or not
                return await reply.get_final_interaction()
            if hasattr(reply, "__aiter__"):  # the SDK's stream
                events = []
                async for event in reply:
                    events.append(event)
                return events
        return reply

    async def _body(
        self,
        input: Any,
        store: bool,
        overrides: Mapping[str, Any],
        budget: TokenBudget | None,
        *,
        spliced: bool,
        client: Any = None,
        media: MediaPolicy = "upload",
        force: frozenset[str] = frozenset(),
        chain: bool = True,
    ) -> RequestBody:
        """The body of the next turn, its input checked first (see ``Turn``). ``spliced``: its ``input`` is a
        ``SplicedInput`` (the history's stored texts, never decoded), for convstore's own clients; else
        plain wire JSON, decoded. Files API uris of the history are adapted (``_lifecycle.adapt``;
        ``force``: uris the API said are gone); ``chain`` False replays where the turn could chain."""
        own = access.store_of(self)
        turn = Turn(
            input,
            settings=self.info,
            overrides=overrides,
            store=store,
            budget=budget,
            limits=own.limits,
            counter=own.counter,
            redact=own.redact,
        )
        if turn.chains and chain:
            chained = await self._chain_from()
            if chained is not None:
                return turn.chained(
                    chained, conversation_id=self.id, branch=self.branch, head=access.head(self)
                )
        texts: list[bytes] | list[str]
        if turn.budget is None:
            texts = await access.history_texts(self)
            replay = access.replay(self)
            positions = replay.files if replay is not None else ()
            fresh_until = replay.files_fresh if replay is not None else None
            history_length = len(texts)
            history_tokens = access.head(self).total_tokens
        else:
            window = await access.window(
                self, turn.budget, fixed_tokens=turn.fixed_tokens, require_history=turn.needs_history
            )
            texts = window_parts(window)
            positions = tuple(file_positions([text.encode() for text in texts]))
            fresh_until = None
            history_length = window_length(window)
            history_tokens = window.history_tokens
        if positions:  # only a history whose nodes name Files API uris is adapted (their files column)
            texts = await _lifecycle.adapt(
                self,
                [text.encode() if isinstance(text, str) else text for text in texts],
                positions,
                client=client,
                policy=media,
                force=force,
                fresh_until=fresh_until,
            )
        return turn.replayed(
            texts,
            history_length=history_length,
            history_tokens=history_tokens,
            spliced=spliced,
            conversation_id=self.id,
            branch=self.branch,
            head=access.head(self),
        )

    async def _chain_from(self) -> str | None:
        """The stored interaction the branch head came from, if the next turn can chain on it.

        Only when the head is the last step of an exchange recorded with ``store: true``: a fork or an edit
        that ends anywhere else, or anything appended locally since, makes the turn replay instead.
        """
        await self.refresh()
        lifecycle = access.store_of(self).lifecycle
        not_before = lifecycle.clock() - lifecycle.retention
        return await access.run(self, _files.chain_point(self.id, access.head(self), not_before=not_before))

    @_otel.traced_send
    async def send(
        self,
        input: Any,
        *,
        client: AsyncCreateClient,
        store: bool = False,
        budget: TokenBudget | None = None,
        media: MediaPolicy = "upload",
        **overrides: Unpack[RequestSettings],
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
            media: As for ``request`` (``client`` uploads what expired).
            **overrides: As for ``request``.

        Returns:
            The reply (continuation hops already merged by the client).

        What the API forgot is handled here, once: a request refused because a file it names is gone
        (403) is sent again with every file uploaded anew; a chained request whose stored interaction is
        gone (404) is sent again replaying the local history (still ``store: true``), and that interaction
        is never chained on again. The caller sees one reply.

        Raises:
            CodecError, LimitExceededError, TypeError, ValueError: as for ``request``, before anything is
                sent.
            APIError and its subclasses: the call failed; nothing was written. ``CreateOutcomeUnknownError``:
                a ``store=True`` call may have reached the server (not retried, see the client).
            ConflictError: the branch moved while the call ran; nothing was written.
            MediaNotHeldError: a file uri of the history must be replaced and convstore has no bytes for it.
        """
        spliced = takes_spliced_input(client)
        body = await self._body(input, store, overrides, budget, spliced=spliced, client=client, media=media)
        try:
            interaction = await client.create(body)
        except APIError as exc:
            retry = await self._after_refusal(exc, body)
            if retry is None:
                raise
            body = await self._body(
                input, store, overrides, budget, spliced=spliced, client=client, media=media, **retry
            )
            interaction = await client.create(body)
        await self.record(body, interaction)
        return interaction

    async def _after_refusal(self, error: APIError, body: RequestBody) -> dict[str, Any] | None:
        """How to build the body again after the API refused it for something it forgot (see ``send``),
        or None: the refusal stands."""
        chained = body.get("previous_interaction_id")
        if chained is not None and error.status_code == 404:
            await access.run(self, _files.forget_interaction(self.id, chained, utcnow()), write=True)
            return {"chain": False}
        replay = access.replay(self)
        if _lifecycle.file_is_gone(error) and replay is not None and replay.files:
            return {"force": frozenset(uris_at(replay.files))}
        return None

    async def stream(
        self,
        input: Any,
        *,
        client: StreamClient,
        store: bool = False,
        budget: TokenBudget | None = None,
        media: MediaPolicy = "upload",
        **overrides: Unpack[RequestSettings],
    ) -> AsyncTurnStream:
        """Send the next turn streamed. Iterate the result for the events; the turn is recorded when the
        stream completes (after the last event), and only then.

        A stream the API refuses before its first event because it forgot something (a file gone, a
        stored interaction dropped) is opened once more, as ``send`` retries (see ``send``): the events
        the caller sees are the second stream's.

        Args:
            input: As for ``request``.
            client: An ``AsyncInteractionsClient`` (or anything with ``stream(body)`` as it has).
            store: As for ``send``.
            budget: As for ``send``.
            media: As for ``send`` (files are uploaded again before the stream opens).
            **overrides: As for ``request``.

        Raises:
            CodecError, LimitExceededError, TypeError, ValueError: as for ``request``, before anything is
                sent (the call's and the recording's errors come while iterating).

        Returns:
            The turn's stream (``AsyncTurnStream``): iterable over the client's events; ``.interaction`` and
            ``.nodes`` afterwards.
        """
        spliced = takes_spliced_input(client)
        body = await self._body(input, store, overrides, budget, spliced=spliced, client=client, media=media)

        async def reopen(retry: dict[str, Any]) -> tuple[RequestBody, Any]:
            again = await self._body(
                input, store, overrides, budget, spliced=spliced, client=client, media=media, **retry
            )
            return again, client.stream(again)

        return AsyncTurnStream(self, body, client.stream(body), reopen=reopen)

    async def upload(
        self, file: _lifecycle.FileSource, *, mime_type: str | None = None, client: Any
    ) -> dict[str, Any]:
        """Upload a file through the Files API and keep its bytes here, for the day the API forgets it.

        The bytes are stored once per content hash (sealed with the conversation's key when it is
        encrypted) with the uri and its expiry; a later request whose history names the uri after it has
        expired (or within ``Lifecycle.upload_margin`` of it) uploads them again and sends the fresh uri,
        or the bytes inline with ``media="inline"``. The stored steps keep the original uri.

        Args:
            file: A path, the bytes, or a binary file object (read from its position to its end).
            mime_type: The MIME type (guessed from a path's name when omitted).
            client: ``InteractionsClient`` or ``GenAIClient`` (anything with ``upload_file``).

        Returns:
            The content item to send: ``{"type": "image"|"audio"|"video"|"document", "uri", "mime_type"}``.

        Raises:
            LimitExceededError: the file is beyond ``Limits.max_step_bytes`` (as base64); nothing sent.
            CodecError: no MIME type given or guessed.
            APIError: the upload failed; nothing stored.
        """
        return await _lifecycle.upload(self, file, mime_type=mime_type, client=client)

    async def attach_media(self, uri: str, data: bytes, *, mime_type: str) -> None:
        """Hand over the bytes of a Files API uri the history names that convstore never had (the app
        uploaded it itself), so later requests can upload them again or inline them.

        Raises:
            LimitExceededError: beyond ``Limits.max_step_bytes`` as base64; nothing stored.
        """
        await _lifecycle.attach_media(self, uri, data, mime_type=mime_type)

    async def files(self) -> list[FileStatus]:
        """The Files API uris this branch's history names, each with whether convstore holds its bytes
        (uploaded with ``upload``, or handed over with ``attach_media``) or only the uri."""
        return await _lifecycle.files_of(self)

    async def edit(self, node_id: str, *, branch: str | None = None) -> AsyncConversation:
        """A new branch ending just before ``node_id``, to send a replacement for that message.

        ``conv.edit(question.id).send("a better question", client=client)`` keeps the old question and its
        answers on the old branch and starts the new one from the same history.
        """
        # Its own head is an id (read from the store); anything else is checked.
        if (node_id is None or node_id != self.head_id) and not valid_id(node_id):
            raise NodeNotFoundError(self.id, str(node_id))
        return await access.fork(self, node_id, branch, before=True)  # one statement: at the node's parent


class AsyncStore(_AsyncStoreBase[AsyncConversation]):
    """Conversation trees in SQLite or PostgreSQL, and the turns that talk to the API (see ``Conversation``).

    Args:
        url_or_engine: A database URL (``sqlite:///path/to/file.db``, ``postgresql+psycopg://...``) or an
            SQLAlchemy ``Engine`` you own (convstore then installs its SQLite connection settings on it and
            never disposes of it).
        check_schema: Verify the schema revision on open (an empty database is built at once). Turn it off
            only to call ``upgrade()`` on an outdated database.
        busy_timeout: SQLite: seconds a writer waits for the lock before ``StoreBusyError``.
        counter: Counts each step's tokens when it is written (``HeuristicCounter`` by default); budgets
            build on these counts, calibrated by the API's reported usage.
        owner: Bind the store to one owner (a user or tenant id): it then creates conversations for that
            owner only and sees no other owner's; their ids behave exactly as ids that do not exist. A
            store without an owner sees every conversation (for administration).
        redact: Called on every step (wire JSON) before it is written, to scrub what must not be kept
            (PII, say); returns the step to store. Its result is validated like any step.
        sqlite_synchronous: SQLite's ``synchronous`` pragma. ``FULL`` (default) keeps a committed turn across
            a power loss; ``NORMAL`` is faster and still safe against a crash of the process.
        keyring: Encrypt new conversations at rest (AES-256-GCM, a data key per conversation wrapped by the
            keyring's active key), and read encrypted ones. Without it, conversations are written in
            plaintext, and opening an encrypted one raises ``KeyringRequiredError``.
        key_store: Where wrapped data keys are kept (see ``KeyStore``; ``SQLKeyStore(url)`` for a database
            of their own). By default, in this database's ``convstore_keys`` table. You own it: the store
            does not close it.
        limits: Bounds on what is written (``convstore.Limits``: nesting, bytes of a step and of an
            exchange); beyond one, ``LimitExceededError`` and nothing is written.
        search_index: Index the text of the steps this store writes (user input and model output of
            plaintext conversations), in the append's transaction, for ``search``. False writes no index
            rows (``search`` still finds what other stores on the database indexed).
        search_language: PostgreSQL: the text search configuration steps are indexed and searched with
            (``simple``: lower-cased words, no stemming, any language; ``english``, ``german``... stem).
            Choose one per database. SQLite's FTS5 folds case and diacritics whatever it says.
        lifecycle: How uploaded files and stored interactions the API forgets are handled (its clock, the
            margin before a file's expiry at which it is uploaded again, the server's retention of stored
            interactions); ``convstore.Lifecycle()`` by default (see ``docs/guides/lifecycle.md``).

    Raises:
        SchemaOutdatedError: the database is at an older schema revision (see ``upgrade``).
        SchemaUnknownError: the database is newer than this convstore, or not convstore's.

    Example:
        >>> store = AsyncStore("sqlite:///chat.db")  # doctest: +SKIP
        >>> conv = await store.create_conversation(model="gemini-3-flash-preview")  # doctest: +SKIP
    """

    _conversation_class = AsyncConversation

    async def attach_media(self, conversation_id: str, uri: str, data: bytes, *, mime_type: str) -> None:
        """``conversation.attach_media`` for the conversation ``conversation_id``."""
        conversation = await self.conversation(conversation_id)
        await conversation.attach_media(uri, data, mime_type=mime_type)

    async def delete_remote(
        self, client: Any, *, older_than: timedelta | datetime | None = None
    ) -> RemoteDeletion:
        """Delete the API's copies of the interactions recorded with ``store: true`` (``DELETE`` each).

        Each one deleted (or found gone already) is recorded, and no turn chains on it again; one whose
        deletion failed is reported and left for the next run. Safe to run again: a copy is deleted once.

        Args:
            client: ``InteractionsClient`` or ``GenAIClient`` (anything with ``delete(interaction_id)``).
            older_than: Only exchanges recorded this long ago (a ``timedelta``, by ``Lifecycle.clock``) or
                before this time; None (default): every one.

        Returns:
            The ids deleted, and those that failed with why.
        """
        return await _lifecycle.delete_remote(self, client, older_than=older_than)

    async def adopt(
        self,
        interaction_id: str,
        *,
        client: Any,
        model: str | None = None,
        system_instruction: str | None = None,
        generation_config: Mapping[str, Any] | None = None,
        tools: list[Mapping[str, Any]] | None = None,
    ) -> AsyncConversation:
        """Bring a server-side chain home: ``GET`` each stored interaction from ``interaction_id`` back
        along ``previous_interaction_id``, and record the chain, in order, as a new local conversation
        (one exchange per interaction, with its id and usage). It then continues statelessly.

        Args:
            interaction_id: The chain's last interaction.
            client: ``InteractionsClient`` or ``GenAIClient`` (anything with ``get(interaction_id)``).
            model: The conversation's model (the last interaction's by default); the other settings are
                the conversation's too (the API keeps none of them).

        Returns:
            The new conversation, on its ``main`` branch.

        Raises:
            APIError: an interaction of the chain could not be read (404: gone already).
            CodecError: an interaction is malformed, or the chain loops.
        """
        chain = await _lifecycle.chain_of(interaction_id, client)
        exchanges = _lifecycle.exchanges_of_chain(chain)
        conversation = await self.create_conversation(
            model=model or chain[-1].get("model"),
            system_instruction=system_instruction,
            generation_config=generation_config,
            tools=tools,
            metadata={"adopted_from": interaction_id},
        )
        for interaction, steps in exchanges:
            sent = 0
            while sent < len(steps) and steps[sent].get("type") in ("user_input", "function_result"):
                sent += 1
            turn = Turn.of_steps(steps[:sent], limits=self.limits, counter=self.counter, redact=self.redact)
            prepared, exchange = turn.exchange(
                {**interaction, "steps": steps[sent:]},
                stored=True,
                model=interaction.get("model"),
                estimated_input_tokens=None,
            )
            await access.append(conversation, prepared, exchange, access.head(conversation))
        return conversation
