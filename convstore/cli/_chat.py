"""``chat``: talk to Gemini (or the emulator, ``--offline``) with replies streamed as they arrive, and
branch the conversation as you go (``/fork``, ``/edit N``, ``/branch``), all kept in the store.

Each turn is ``conv.request()`` (with the token budget, if one is given), ``client.stream(body)``, then
``conv.record()``: a turn is recorded only once its stream completed, so an interrupted or failed turn
leaves the branch as it was. A new conversation is created in the store with its first recorded turn, so a
chat left at once, or whose only turn failed (or did not fit the budget), leaves nothing behind; until
then it is a draft in an in-memory store, which builds the first request exactly as the real one would.
On the way out, chat says how to continue (``convstore chat --conversation ID``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import shlex
import sys
from collections.abc import Callable, Iterator
from typing import Any

import convstore
from convstore.cli._common import (
    CliError,
    add_keyring_option,
    command,
    display_url,
    free_branch_name,
    load_keyring,
    open_conversation,
    open_store,
    plural,
    positive_int,
    resolve_conversation,
    resolve_db,
)
from convstore.cli._offline import DEFAULT_MODEL, WEATHER_TOOL, fake_weather, model_client
from convstore.cli._render import Output, preview, tree_labeler
from convstore.client import StepDelta

__all__ = ["ChatSession", "make_budget", "register"]

HELP = """\
in-chat commands:
  /fork [NAME]    branch off here and continue on the new branch
  /edit N         edit your Nth message: a new branch ends just before it; your next line is sent there
  /branch [NAME]  switch to branch NAME (without NAME: list the branches)
  /tree           draw the conversation's tree
  /usage          the token usage the API reported for each turn of this branch
  /help           this list
  /quit           leave (end of input does too)"""


def register(sub: Any) -> None:
    chat = command(
        sub,
        "chat",
        "Chat in the terminal, replies streamed as they arrive, the conversation kept in the store.",
        "Chat in the terminal, replies streamed as they arrive, the conversation kept in the store.\n"
        "Talks to Gemini with GEMINI_API_KEY, or to the offline emulator with --offline. A new\n"
        "conversation is stored with its first recorded turn; leaving, chat says how to continue it.\n\n"
        + HELP,
        examples=[
            "convstore chat --offline",
            'convstore chat --model gemini-3-flash-preview --system "Be brief." --budget 8000',
            "convstore chat --conversation 5f3c9a2e41d7 --branch edit-1",
            "echo 'What is the weather in Porto?' | convstore chat --offline",
        ],
    )
    chat.add_argument(
        "--model", metavar="M", help=f"the model (default: the conversation's, or {DEFAULT_MODEL})"
    )
    chat.add_argument(
        "--conversation",
        metavar="ID",
        help="continue this conversation: its id, or the last 8+ characters of it (default: a new one)",
    )
    chat.add_argument("--branch", metavar="B", help="the branch to chat on (default: main)")
    chat.add_argument("--budget", type=positive_int, metavar="N", help="send at most N input tokens a turn")
    chat.add_argument("--system", metavar="TEXT", help="the system instruction")
    chat.add_argument(
        "--offline", action="store_true", help="talk to convstore's emulator: no key, no network"
    )
    add_keyring_option(chat)
    chat.add_argument(
        "--attach",
        action="append",
        metavar="FILE",
        help="upload FILE (Files API; its bytes kept in the store) and send it with your first message",
    )
    chat.set_defaults(func=cmd_chat)


def make_budget(max_input_tokens: int | None) -> Any:
    """A ``convstore.TokenBudget``, or None without a limit. Raises CliError where budgets are missing."""
    if max_input_tokens is None:
        return None
    budget_class = getattr(convstore, "TokenBudget", None)
    if budget_class is None:
        raise CliError("token budgets are not available in this version", code=2)
    return budget_class(max_input_tokens=max_input_tokens)


def _lines() -> Iterator[str]:
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):  # not on every platform
            import readline  # noqa: F401, PLC0415 -- line editing and history for input()
        while True:
            try:
                yield input("you> ")
            except EOFError:
                print()
                return
    else:
        for line in sys.stdin:
            yield line.rstrip("\r\n")


class ChatSession:
    """The REPL's state: the conversation on its current branch, and calls waiting for results."""

    def __init__(
        self,
        conv: convstore.Conversation,
        client: Any,
        out: Output,
        *,
        offline: bool,
        overrides: dict[str, Any],
        create: Callable[[], convstore.Conversation] | None = None,
        discard: Callable[[str], None] | None = None,
    ) -> None:
        self.conv = conv
        # A new conversation: ``conv`` is a draft until ``create`` makes the real one at the first turn
        # (``discard`` deletes it again if that turn cannot be recorded after all).
        self.create = create
        self.discard = discard or (lambda _: None)
        self.client = client
        self.out = out
        self.offline = offline
        self.overrides = overrides
        self.attachments: list[dict[str, Any]] = []  # uploaded files, sent with the next message
        self.pending: list[dict[str, Any]] = []  # function calls the user answers, in order
        self.results: list[dict[str, Any]] = []
        self.echo = not sys.stdin.isatty()
        self.failed = 0  # turns that failed (nothing of them recorded): the exit status says so

    def run(self, lines: Iterator[str]) -> None:
        for line in lines:
            if not line.strip():
                continue
            if self.echo:
                self.out.line(f"you> {line}")
            if line.startswith("/"):
                if not self.command(line):
                    return
            else:
                self.say(line)

    def say(self, text: str) -> None:
        if not self.pending:
            self.turn(text)
            return
        call = self.pending.pop(0)
        try:
            result: Any = json.loads(text)
        except ValueError:
            result = text
        self.results.append(_result(call, result))
        if self.pending:
            self.out.note(f"result for {self.pending[0].get('name')}(...)?")
            return
        results, self.results = self.results, []
        self.turn(results)

    def turn(self, message: Any) -> None:
        """Send one turn, streaming the reply; answer or ask for the results of any function calls."""
        if self.attachments and isinstance(message, str):
            message, self.attachments = [{"type": "text", "text": message}, *self.attachments], []
        try:
            body = self.conv.request(message, client=self.client, **self.overrides)
            started = False
            with self.client.stream(body) as events:
                for event in events:
                    if isinstance(event, StepDelta) and event.text:
                        if not started:
                            self.out.write("model> ")
                            started = True
                        self.out.write(event.text)
                interaction = events.get_final_interaction()
            if started:
                self.out.write("\n")
            self._record(body, interaction)
        except KeyboardInterrupt:
            self.failed += 1
            self.out.line("\n(interrupted: nothing of this turn was recorded)")
            return
        except convstore.ConvstoreError as error:
            self.failed += 1
            self.out.line(f"\nerror: {type(error).__name__}: {error} (nothing of this turn was recorded)")
            return
        calls = interaction.function_calls if interaction.status == "requires_action" else []
        for call in calls:
            self.out.line(f"model> calls {preview(call)}")
        if calls and self.offline and all(call.get("name") == "get_weather" for call in calls):
            results = [
                _result(call, fake_weather(str(call.get("arguments", {}).get("city", "")))) for call in calls
            ]
            for result in results:
                self.out.line(f"local> {preview(result)}")
            self.turn(results)
        elif calls:
            self.pending = list(calls)
            self.out.note(f"type the result of {calls[0].get('name')}(...) (JSON or text) to send it back")

    @property
    def stored(self) -> bool:
        """Whether the conversation is in the store (False while a new one has no recorded turn yet)."""
        return self.create is None

    def _require_stored(self) -> None:
        if not self.stored:
            raise CliError("nothing is recorded yet: send a message first")

    def _record(self, body: dict[str, Any], interaction: Any) -> None:
        if self.create is None:
            self.conv.record(body, interaction)
            return
        conv = self.create()  # the first recorded turn: now the conversation exists
        try:
            # The body was built by the draft, another conversation: as a plain dict it is checked against
            # the new conversation's (empty) history instead of the draft's head.
            conv.record(dict(body), interaction)
        except BaseException:
            self.discard(conv.id)
            raise
        self.conv, self.create = conv, None

    def command(self, line: str) -> bool:
        """Run an in-chat command; False to leave."""
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        try:
            return self._command(name, rest)
        except (convstore.ConvstoreError, CliError, ValueError) as error:
            self.out.line(f"error: {error}")
            return True

    def _command(self, name: str, rest: str) -> bool:
        if name in {"quit", "exit", "q"}:
            return False
        if name in {"fork", "edit"} or (name == "branch" and rest):
            self._require_stored()
        if name == "help":
            self.out.line(HELP)
        elif name == "fork":
            self.conv = self.conv.fork(branch=rest or None)
            self.out.note(f"forked: now on branch {self.conv.branch!r}")
        elif name == "edit":
            self._edit(rest)
        elif name == "branch":
            if rest:
                self.conv = self.conv.checkout(rest)
                self.out.note(f"now on branch {rest!r} ({len(self.conv.history())} steps)")
            else:
                for branch in self.conv.branches():
                    mark = "*" if branch.name == self.conv.branch else " "
                    self.out.line(f"{mark} {branch.name}")
        elif name == "tree":
            tree = self.conv.tree()
            self.out.line(tree.render(label=tree_labeler(tree)) or "(no steps yet)")
            self.out.note(f"you are on branch {self.conv.branch!r}")
        elif name == "usage":
            self._usage()
        else:
            self.out.line(f"unknown command /{name}: /help lists them")
        return True

    def _edit(self, rest: str) -> None:
        if self.pending:
            raise CliError("answer the pending function call first")
        users = [node for node in self.conv.nodes() if node.type == "user_input"]
        if not rest.isdigit() or not 1 <= int(rest) <= len(users):
            raise CliError(f"/edit N takes the number of one of your {len(users)} messages on this branch")
        node = users[int(rest) - 1]
        self.conv = self.conv.edit(node.id, branch=free_branch_name(self.conv, f"edit-{rest}"))
        self.out.note(
            f"editing message {rest} ({preview(node.data, 40)!r}) on new branch {self.conv.branch!r}: "
            "type its replacement"
        )

    def _usage(self) -> None:
        exchanges = self.conv.exchanges()
        if not exchanges:
            self.out.note("no turns recorded with usage on this branch yet")
            return
        rows = [
            [
                str(i),
                x.model or "-",
                str(x.input_tokens or 0),
                str(x.output_tokens or 0),
                str(x.thought_tokens or 0),
            ]
            for i, x in enumerate(exchanges, start=1)
        ]
        total = ["all", "", *(str(sum(int(row[k]) for row in rows)) for k in (2, 3, 4))]
        self.out.table(["turn", "model", "input", "output", "thought"], [*rows, total])


def _result(call: dict[str, Any], result: Any) -> dict[str, Any]:
    return {"type": "function_result", "call_id": call.get("id"), "name": call.get("name"), "result": result}


def resume_hint(args: argparse.Namespace, conv: convstore.Conversation) -> str:
    """The command line that continues this chat where it was left."""
    words = ["convstore", "chat", "--conversation", conv.id]
    if conv.branch != "main":
        words += ["--branch", conv.branch]
    if args.offline:
        words.append("--offline")
    if args.db:
        words += ["--db", display_url(args.db) if "://" in args.db else args.db]
    return shlex.join(words)


def cmd_chat(args: argparse.Namespace) -> int:  # noqa: PLR0912 -- one branch an option, read in order
    budget = make_budget(args.budget)
    url = resolve_db(args.db)
    with contextlib.ExitStack() as stack:
        client, emulator = stack.enter_context(model_client(offline=args.offline))
        store = stack.enter_context(open_store(url, create=True, keyring=load_keyring(args.keyring)))
        overrides: dict[str, Any] = {} if budget is None else {"budget": budget}
        create: Callable[[], convstore.Conversation] | None = None
        if args.conversation:
            conv = open_conversation(store, resolve_conversation(store, args.conversation), args.branch)
            if emulator is not None:  # offline: this emulator replays what an earlier one answered
                for branch in conv.branches():
                    emulator.adopt_history(conv.checkout(branch.name).history())
            if args.model and args.model != conv.model:
                overrides["model"] = args.model
            if args.system is not None:
                overrides["system_instruction"] = args.system
        elif args.attach:  # uploads keep their bytes in the store: the conversation exists at once
            conv = store.create_conversation(
                model=args.model or DEFAULT_MODEL,
                system_instruction=args.system,
                tools=[WEATHER_TOOL] if args.offline else None,
                branch=args.branch or "main",
            )
        else:
            settings: dict[str, Any] = {
                "model": args.model or DEFAULT_MODEL,
                "system_instruction": args.system,
                "tools": [WEATHER_TOOL] if args.offline else None,
                "branch": args.branch or "main",
            }
            drafts = stack.enter_context(convstore.Store("sqlite://"))  # in memory, gone at the end
            conv = drafts.create_conversation(**settings)
            create = functools.partial(store.create_conversation, **settings)

        out = Output()
        where = "the offline emulator" if args.offline else "Gemini"
        named = f"conversation {conv.id}" if create is None else "new conversation (stored at its first turn)"
        out.note(
            f"{named}, branch {conv.branch!r}, model {overrides.get('model', conv.model)} on {where}. "
            "/help lists the commands."
        )
        if args.offline and not args.conversation:
            out.note("offline, the model echoes you; ask about the weather in a city to see a function call")
        session = ChatSession(
            conv,
            client,
            out,
            offline=args.offline,
            overrides=overrides,
            create=create,
            discard=store.delete_conversation,
        )
        for path in args.attach or []:
            session.attachments.append(conv.upload(path, client=client))
            out.note(f"attached {path}: sent with your first message")
        try:
            session.run(_lines())
        finally:
            if session.stored:
                out.note(f"to continue: {resume_hint(args, session.conv)}")
            else:
                out.note("nothing was recorded, so no conversation was created")
    if session.failed:
        print(
            f"convstore: error: {plural(session.failed, 'turn')} failed (nothing of "
            f"{'it' if session.failed == 1 else 'them'} was recorded)",
            file=sys.stderr,
        )
        return 1
    return 0
