"""``demo``: a tour of convstore on the emulator, offline, without a key: the README's "run it" command.

It records a few turns (one streamed, one with a function call answered by a local function), edits a past
message on a new branch, builds a request inside a token budget, draws the tree, and ends with the exact
JSON ``input`` of the last request, the thing convstore exists to get right.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import convstore
from convstore.cli._common import command, display_url, open_store, resolve_db
from convstore.cli._offline import DEFAULT_MODEL, WEATHER_TOOL, fake_weather, model_client
from convstore.cli._render import USAGE_COLUMNS, Output, branch_usage, preview, usage_table_rows
from convstore.client import StepDelta

if TYPE_CHECKING:
    from convstore.testing import Emulator, Reply

__all__ = ["register"]


def register(sub: Any) -> None:
    demo = command(
        sub,
        "demo",
        "A short offline tour: turns, streaming, a function call, a fork, a token budget, the tree.",
        "A short offline tour: turns, streaming, a function call, a fork, a token budget, the tree,\n"
        "and the exact JSON input of the last request. It talks to convstore's emulator of the\n"
        "Interactions API, in process: no API key, no network. The store is a temporary SQLite file\n"
        "unless --db names one (then the conversation stays there to look at).",
        examples=["convstore demo", "convstore demo --db demo.db && convstore ls --db demo.db"],
    )
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        if args.db:
            url = resolve_db(args.db)
            where = display_url(url)
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="convstore-demo-"))
            url = f"sqlite:///{folder}/demo.db"
            where = f"{url} (temporary; --db URL keeps it)"
        client, emulator = stack.enter_context(model_client(offline=True))
        store = stack.enter_context(open_store(url, create=True))
        assert emulator is not None  # noqa: S101 -- offline clients always come with their emulator
        _Tour(Output(), store, client, emulator).run(where, keep=bool(args.db))
    return 0


def _reply(answer: str, thought: str) -> Reply:
    """The emulator's next answer (the emulator, like httpx, is imported only when the demo runs)."""
    from convstore.testing import text_reply  # noqa: PLC0415 -- see above

    return text_reply(answer, thought=thought)


class _Tour:
    def __init__(
        self, out: Output, store: convstore.Store, client: convstore.InteractionsClient, emulator: Emulator
    ) -> None:
        self.out = out
        self.store = store
        self.client = client
        self.emulator = emulator
        self.pause = 0.015 if out.stream.isatty() else 0.0  # let the streamed text be seen arriving

    def you(self, text: str) -> None:
        self.out.line(f"  you>   {text}")

    def model(self, text: str) -> None:
        self.out.line(f"  model> {text}")

    def send(self, conv: convstore.Conversation, text: str, answer: str) -> convstore.Interaction:
        self.emulator.script(_reply(answer, "Answering the user."))
        self.you(text)
        reply = conv.send(text, client=self.client)
        self.model(reply.text)
        return reply

    def run(self, where: str, *, keep: bool) -> None:
        out = self.out
        out.line("convstore demo: a tour on convstore's emulator of the Gemini Interactions API")
        out.note("offline: no API key, nothing leaves this machine")
        conv = self.store.create_conversation(
            model=DEFAULT_MODEL,
            system_instruction="You are a concise, friendly assistant.",
            tools=[WEATHER_TOOL],
            metadata={"created_by": "convstore demo"},
        )
        out.note(f"store: {where}")
        out.note(f"conversation {conv.id}, model {conv.model}")

        out.heading("1. A turn, kept on the client")
        self.send(conv, "I have 2 dogs in my house.", "Two dogs! They must keep you busy.")
        types = ", ".join(node.type for node in conv.nodes())
        out.note(f"recorded as one exchange: {types}; the thought keeps its signature for replay")

        out.heading("2. A streamed turn: the text is shown as it arrives")
        self.stream(
            conv, "How many paws are in my house?", "Two dogs have 4 paws each: 8 paws in your house."
        )
        steps = len(conv.history())
        out.note(f"the request was stateless (store: false): its input replayed turn 1; {steps} steps now")

        out.heading("3. A function call, answered by a local function")
        self.weather(conv, "Do I need an umbrella in Lisbon today?")

        out.heading("4. Edit a past message: a new branch, the original kept")
        second = [node for node in conv.nodes() if node.type == "user_input"][1]
        ears = conv.edit(second.id, branch="ears")
        out.note(
            f"branch 'ears' ends just before message 2 ({preview(second.data, 32)!r}); 'main' keeps it, "
            "and turn 1 is shared, not copied"
        )
        self.send(ears, "How many ears are in my house?", "Two dogs have 2 ears each: 4 ears in your house.")

        out.heading("5. A token budget")
        self.budget(conv, "Thanks! Any tip for tomorrow?", "Keep the umbrella by the door, just in case.")

        out.heading("6. The tree, with branch names at their heads")
        tree = conv.tree()
        out.line(tree.render(label=lambda node: f"{node.type:<15} {preview(node.data, 44)}".rstrip()))
        out.line()
        out.table(USAGE_COLUMNS, usage_table_rows(branch_usage(conv)), indent="  ")
        out.note("node tokens: convstore's running count at the head; API: the usage the emulator reported")

        out.heading("7. The exact JSON `input` of the last request")
        out.note(f"{len(self.emulator.requests)} requests were sent; the last one replayed this, as `input`:")
        out.line(json.dumps(self.emulator.requests[-1].body["input"], ensure_ascii=False, indent=2))
        out.line()
        if keep:
            out.line(f"The conversation stays in the store: `convstore show {conv.id} --tree`.")
        out.line(
            "Next: `convstore chat --offline` to try it yourself; `convstore chat` with GEMINI_API_KEY set."
        )

    def stream(self, conv: convstore.Conversation, text: str, answer: str) -> None:
        self.emulator.script(_reply(answer, "Counting paws."))
        self.you(text)
        self.out.write("  model> ")
        turn = conv.stream(text, client=self.client)
        pieces = 0
        for event in turn:
            if isinstance(event, StepDelta) and event.text:
                self.out.write(event.text)
                pieces += 1
                time.sleep(self.pause)
        self.out.write("\n")
        self.out.note(f"({pieces} text deltas, recorded once the stream completed)")

    def weather(self, conv: convstore.Conversation, text: str) -> None:
        self.you(text)
        reply = conv.send(text, client=self.client)
        results = []
        for call in reply.function_calls:
            self.model(f"calls {preview(call)}")
            result = fake_weather(str(call.get("arguments", {}).get("city", "")))
            step = {"type": "function_result", "call_id": call["id"], "name": call["name"], "result": result}
            self.out.line(f"  local> {preview(step)}")
            results.append(step)
        answer = conv.send(results, client=self.client)
        self.model(answer.text)
        self.out.note("two exchanges: the question and the call, then the result and the answer")

    def budget(self, conv: convstore.Conversation, text: str, answer: str) -> None:
        budget_class = getattr(convstore, "TokenBudget", None)
        if budget_class is None:
            self.out.note(
                "skipped: this convstore has no convstore.TokenBudget yet; the request sends it all"
            )
            self.send(conv, text, answer)
            return
        nodes = conv.nodes()
        last = conv.exchanges()[-1]
        # What sending everything costs now, as the API measured it (history, settings and tools): the
        # last request's input and what was added since, its reply.
        full = (last.input_tokens or 0) + (last.output_tokens or 0) + (last.thought_tokens or 0)
        limit = max(1, full * 4 // 5)
        self.out.note(
            f"main holds {len(nodes)} steps; sending them all would cost about {full} input tokens. "
            f"With max_input_tokens={limit}, the request keeps the newest whole exchanges that fit:"
        )
        self.emulator.script(_reply(answer, "Answering the user."))
        self.you(text)
        try:
            body = conv.request(text, budget=budget_class(max_input_tokens=limit))
        except convstore.ConvstoreError as error:
            self.out.note(f"the budget refused the request: {error}; sending it all instead")
            self.model(conv.send(text, client=self.client).text)
            return
        interaction = self.client.create(body)
        conv.record(body, interaction)
        self.model(interaction.text)
        self.out.note(
            f"sent {len(body['input'])} of {len(nodes) + 1} steps: the oldest exchanges were left out"
        )
