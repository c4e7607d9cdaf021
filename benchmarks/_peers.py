"""The systems ``run_all.py`` compares: convstore, the floor, and the peers an app would pick instead.

Each system is a small adapter with the same calls (``new``, ``append``, ``load``, ``window``, ``turn``,
``fork``, ``size_bytes``), each driven the way the system's own documentation shows. A Gemini step from the
shared generator (``_common.conversation_exchanges``) is mapped to the peer's own message format; nothing
reaches the network (no LLM: the "reply" of a turn is the generator's next exchange).

Peers without a feature get their documented workaround, named in ``NOTES``: a fork is a copy of the history
prefix into a new session, a token budget is a full load trimmed in Python.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as common
import bench_store
from _common import PostgresSchema

import convstore

MODEL = "gemini-3-flash-preview"
BUDGET_TOKENS = 32_000
APP = "bench"
USER = "u1"

# Why a peer's figure means what it means; copied into the report.
NOTES: dict[str, str] = {
    "convstore": "Store(url): conv.append / conv.history / conv.history(budget=TokenBudget(32000)) / "
    "conv.request + conv.record / conv.fork(at=node). SQLite WAL, synchronous=FULL.",
    "floor": "sqlite3 / psycopg 3 with hand-written SQL on convstore's schema (bench_store.py's floor): "
    "one transaction per exchange, recursive CTE + one json.loads for history. No window (bench_budget.py "
    "measures the window floor).",
    "openai-agents": "agents.extensions.memory.SQLAlchemySession (async engine: sqlite+aiosqlite, "
    "postgresql+psycopg), add_items / get_items. Items in Responses-API form (message, reasoning with "
    "encrypted_content, function_call, function_call_output). No fork: copy the prefix into a new session. "
    "No token budget: get_items() trimmed in Python (len(json)/4 per item).",
    "openai-advanced": "agents.extensions.memory.AdvancedSQLiteSession (SQLite only, sqlite3 file), "
    "native branching: create_branch_from_turn(turn) copies the branch's messages up to that user turn.",
    "adk": "google.adk.sessions.DatabaseSessionService (async: sqlite+aiosqlite, postgresql+psycopg); "
    "create_session / append_event / get_session. One Event for the user turn, one for the model reply "
    "(thought, text and function-call Parts). No fork: create a session and append the prefix's events. "
    "No token budget: get_session() trimmed in Python.",
    "langchain": "langchain_community.chat_message_histories.SQLChatMessageHistory (sync engine), "
    "add_messages / messages. HumanMessage, AIMessage(tool_calls), ToolMessage. No fork: copy into a new "
    "session_id. Window: langchain_core trim_messages(strategy='last', token_counter='approximate').",
    "langgraph": "StateGraph with messages: Annotated[list, add_messages], one node returning the reply "
    "(no LLM), compiled with SqliteSaver / PostgresSaver; invoke per exchange, get_state().values to load. "
    "Fork: a new thread seeded with update_state(prefix) (time travel would fork in the same thread). "
    "Window: trim_messages on the loaded state.",
}


def _text(step: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for part in step.get("content", step.get("summary", [])))


def _result_text(step: dict[str, Any]) -> str:
    result = step["result"]
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)


def approx_tokens_json(item: Any) -> int:
    return len(json.dumps(item, ensure_ascii=False, default=str)) // 4 + 1


def trim_newest(items: list[Any], budget: int, cost: Callable[[Any], int]) -> list[Any]:
    """The workaround for a peer without a token budget: keep the newest items that fit."""
    total = 0
    for i in range(len(items) - 1, -1, -1):
        total += cost(items[i])
        if total > budget:
            return items[i + 1 :]
    return items


@dataclass
class Handle:
    """One conversation of a system, and what the adapter remembers about it."""

    ref: Any
    name: str
    lengths: list[int] = field(default_factory=list)  # native items per exchange
    marks: list[Any] = field(default_factory=list)  # per exchange: node id (convstore, floor), user turn
    turns: int = 0


class System:
    name = ""
    backend = ""

    def new(self, name: str) -> Handle:
        raise NotImplementedError

    def append(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def load(self, h: Handle) -> list[Any]:
        raise NotImplementedError

    def window(self, h: Handle) -> list[Any]:
        raise NotImplementedError

    def turn(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        """Build the request for the next turn (steps[0] is the new input), then record the reply."""
        raise NotImplementedError

    def fork(self, h: Handle, exchanges: int, name: str) -> Handle:
        """A branch holding the first ``exchanges`` exchanges of ``h``."""
        raise NotImplementedError

    def read_fork(self, f: Handle) -> list[Any]:
        return self.load(f)

    def prefill(self, h: Handle, exchanges: list[list[dict[str, Any]]]) -> None:
        """Untimed set-up: write these exchanges as fast as the system allows."""
        for steps in exchanges:
            self.append(h, steps)

    def size_bytes(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Async:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close_loop(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


# convstore and the floor.


class Convstore(System):
    name = "convstore"

    def __init__(self, url: str, size: Callable[[], int]) -> None:
        self.store = convstore.Store(url)
        self._size = size
        self.budget = convstore.TokenBudget(max_input_tokens=BUDGET_TOKENS)

    def new(self, name: str) -> Handle:
        return Handle(self.store.create_conversation(model=MODEL), name)

    def append(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        nodes = h.ref.append(steps)
        h.marks.append(nodes[-1].id)
        h.lengths.append(len(steps))

    def load(self, h: Handle) -> list[Any]:
        return common.cold(h.ref).history()

    def window(self, h: Handle) -> list[Any]:
        return h.ref.history(budget=self.budget)

    def turn(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        # As a stateless service handles a turn: nothing kept from the last one (a fresh Conversation).
        body = common.cold(h.ref).request(steps[0])
        h.turns += 1
        nodes = h.ref.record(
            body, {"id": f"int_{h.turns}", "status": "completed", "model": MODEL, "steps": steps[1:]}
        )
        h.marks.append(nodes[-1].id)
        h.lengths.append(len(steps))

    def fork(self, h: Handle, exchanges: int, name: str) -> Handle:
        return Handle(h.ref.fork(at=h.marks[exchanges - 1], branch=name), name)

    count_rows = bench_store.ConvstoreContender.count_rows  # both hold the Store as self.store

    def size_bytes(self) -> int:
        return self._size()

    def close(self) -> None:
        self.store.close()


class Floor(System):
    """bench_store's floor (sqlite3 / psycopg, hand-written SQL), one conversation per instance."""

    name = "floor"

    def __init__(self, make: Callable[[], Any], size: Callable[[], int]) -> None:
        self._make = make
        self._size = size
        self._open: list[Any] = []

    def new(self, name: str) -> Handle:
        floor = self._make()
        self._open.append(floor)
        return Handle(floor, "main")

    def append(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        ids = h.ref.append(steps)
        h.marks.append(ids[-1])
        h.lengths.append(len(steps))

    def load(self, h: Handle) -> list[Any]:
        return h.ref.history(h.name)

    def window(self, h: Handle) -> list[Any]:
        raise NotImplementedError

    def turn(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        # The same body convstore's request() builds: the settings, store: false, history + the new input.
        history = h.ref.history("main") if h.marks else []
        history.append(steps[0])
        body = {"model": MODEL, "store": False, "input": history}
        assert body["input"][-1] is steps[0]
        self.append(h, steps)

    def fork(self, h: Handle, exchanges: int, name: str) -> Handle:
        h.ref.fork(h.marks[exchanges - 1], name)
        return Handle(h.ref, name)

    def size_bytes(self) -> int:
        return self._size()

    def close(self) -> None:
        for floor in self._open:
            floor.close()


# OpenAI Agents SDK.


def openai_items(steps: list[dict[str, Any]], counter: list[int]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for step in steps:
        counter[0] += 1
        n = counter[0]
        kind = step["type"]
        if kind == "user_input":
            items.append({"role": "user", "content": _text(step)})
        elif kind == "thought":
            items.append(
                {
                    "type": "reasoning",
                    "id": f"rs_{n}",
                    "summary": [{"type": "summary_text", "text": _text(step)}],
                    "encrypted_content": step["signature"],
                }
            )
        elif kind == "model_output":
            items.append(
                {
                    "type": "message",
                    "id": f"msg_{n}",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": _text(step), "annotations": []}],
                }
            )
        elif kind == "function_call":
            items.append(
                {
                    "type": "function_call",
                    "id": f"fc_{n}",
                    "call_id": step["id"],
                    "name": step["name"],
                    "arguments": json.dumps(step["arguments"], ensure_ascii=False),
                    "status": "completed",
                }
            )
        elif kind == "function_result":
            items.append(
                {"type": "function_call_output", "call_id": step["call_id"], "output": _result_text(step)}
            )
        else:
            raise ValueError(kind)
    return items


class OpenAIAgents(System, _Async):
    name = "openai-agents"

    def __init__(self, url: str, size: Callable[[], int]) -> None:
        _Async.__init__(self)
        from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

        self.engine = create_async_engine(url)
        self._size = size
        self._counter = [0]

    def new(self, name: str) -> Handle:
        from agents.extensions.memory import SQLAlchemySession  # noqa: PLC0415

        return Handle(SQLAlchemySession(name, engine=self.engine, create_tables=True), name)

    def append(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        items = openai_items(steps, self._counter)
        self.run(h.ref.add_items(items))
        h.lengths.append(len(items))

    def load(self, h: Handle) -> list[Any]:
        return self.run(h.ref.get_items())  # type: ignore[no-any-return]

    def window(self, h: Handle) -> list[Any]:
        return trim_newest(self.load(h), BUDGET_TOKENS, approx_tokens_json)

    def turn(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        # As the Runner does: the session's items, then the new input, make the request's input list.
        new = openai_items(steps[:1], self._counter)
        request_input = [*self.load(h), *new]
        assert request_input
        reply = openai_items(steps[1:], self._counter)
        self.run(h.ref.add_items([*new, *reply]))
        h.lengths.append(len(new) + len(reply))

    def fork(self, h: Handle, exchanges: int, name: str) -> Handle:
        items = self.load(h)[: sum(h.lengths[:exchanges])]
        f = self.new(name)
        self.run(f.ref.add_items(items))
        return f

    def size_bytes(self) -> int:
        return self._size()

    def close(self) -> None:
        self.run(self.engine.dispose())
        self.close_loop()


class OpenAIAdvanced(OpenAIAgents):
    """AdvancedSQLiteSession: SQLite only, with native branching."""

    name = "openai-advanced"

    def __init__(self, path: Path, size: Callable[[], int]) -> None:
        _Async.__init__(self)
        self.path = path
        self._size = size
        self._counter = [0]
        self._sessions: list[Any] = []

    def new(self, name: str) -> Handle:
        from agents.extensions.memory import AdvancedSQLiteSession  # noqa: PLC0415

        session = AdvancedSQLiteSession(session_id=name, db_path=self.path, create_tables=True)
        self._sessions.append(session)
        return Handle(session, name)

    def append(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        super().append(h, steps)
        self._mark_turn(h, steps)

    def turn(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        super().turn(h, steps)
        self._mark_turn(h, steps)

    def _mark_turn(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        if steps[0]["type"] == "user_input":
            h.turns += 1
        h.marks.append(h.turns if steps[0]["type"] == "user_input" else None)

    def fork(self, h: Handle, exchanges: int, name: str) -> Handle:
        # create_branch_from_turn(n) keeps the turns before user turn n: fork at the first user turn
        # at or after the cut.
        turn = next(t for t in h.marks[exchanges:] if t is not None)
        self.run(h.ref.switch_to_branch("main"))
        branch = self.run(h.ref.create_branch_from_turn(turn, name))
        return Handle(h.ref, branch)

    def read_fork(self, f: Handle) -> list[Any]:
        self.run(f.ref.switch_to_branch(f.name))
        return self.load(f)

    def close(self) -> None:
        for session in self._sessions:
            session.close()
        self.close_loop()


# Google ADK.


class ADK(System, _Async):
    name = "adk"

    def __init__(self, url: str, size: Callable[[], int]) -> None:
        _Async.__init__(self)
        from google.adk.sessions import DatabaseSessionService  # noqa: PLC0415

        self.service = DatabaseSessionService(db_url=url)
        self._size = size
        self._counter = 0

    def events(self, steps: list[dict[str, Any]]) -> list[Any]:
        from google.adk.events import Event  # noqa: PLC0415
        from google.genai import types  # noqa: PLC0415

        self._counter += 1
        invocation = f"inv_{self._counter}"
        out = []
        parts: list[Any] = []
        for step in steps:
            kind = step["type"]
            if kind == "user_input":
                out.append(
                    Event(
                        author="user",
                        invocation_id=invocation,
                        content=types.Content(role="user", parts=[types.Part(text=_text(step))]),
                    )
                )
            elif kind == "function_result":
                response = types.FunctionResponse(
                    id=step["call_id"], name=step["name"], response={"result": step["result"]}
                )
                out.append(
                    Event(
                        author="user",
                        invocation_id=invocation,
                        content=types.Content(role="user", parts=[types.Part(function_response=response)]),
                    )
                )
            elif kind == "thought":
                parts.append(
                    types.Part(
                        text=_text(step), thought=True, thought_signature=base64.b64decode(step["signature"])
                    )
                )
            elif kind == "model_output":
                parts.append(types.Part(text=_text(step)))
            elif kind == "function_call":
                call = types.FunctionCall(id=step["id"], name=step["name"], args=step["arguments"])
                parts.append(types.Part(function_call=call))
        if parts:
            out.append(
                Event(
                    author="model", invocation_id=invocation, content=types.Content(role="model", parts=parts)
                )
            )
        return out

    def new(self, name: str) -> Handle:
        session = self.run(self.service.create_session(app_name=APP, user_id=USER, session_id=name))
        return Handle(session, name)

    def _append_events(self, h: Handle, events: list[Any]) -> None:
        for event in events:
            self.run(self.service.append_event(h.ref, event))

    def append(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        events = self.events(steps)
        self._append_events(h, events)
        h.lengths.append(len(events))

    def _get(self, name: str) -> Any:
        return self.run(self.service.get_session(app_name=APP, user_id=USER, session_id=name))

    def load(self, h: Handle) -> list[Any]:
        return self._get(h.name).events  # type: ignore[no-any-return]

    def window(self, h: Handle) -> list[Any]:
        contents = [event.content for event in self.load(h)]
        return trim_newest(
            contents, BUDGET_TOKENS, lambda c: len(c.model_dump_json(exclude_none=True)) // 4 + 1
        )

    def turn(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        # As the Runner does: get_session, the contents of its events + the new message make the request,
        # then append_event for the user's event and for the model's.
        session = self._get(h.name)
        events = self.events(steps)
        contents = [event.content for event in session.events]
        contents.append(events[0].content)
        assert contents
        h.ref = session
        self._append_events(h, events)
        h.lengths.append(len(events))

    def fork(self, h: Handle, exchanges: int, name: str) -> Handle:
        events = self.load(h)[: sum(h.lengths[:exchanges])]
        f = self.new(name)
        for event in events:
            copy = event.model_copy(update={"id": str(uuid.uuid4())})
            self.run(self.service.append_event(f.ref, copy))
        return f

    def size_bytes(self) -> int:
        return self._size()

    def close(self) -> None:
        self.run(self.service.close())
        self.close_loop()


# LangChain and LangGraph.


def lc_messages(steps: list[dict[str, Any]]) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: PLC0415

    out: list[Any] = []
    text, calls, extra = "", [], {}
    for step in steps:
        kind = step["type"]
        if kind == "user_input":
            out.append(HumanMessage(_text(step)))
        elif kind == "function_result":
            out.append(ToolMessage(_result_text(step), tool_call_id=step["call_id"], name=step["name"]))
        elif kind == "thought":
            extra = {"reasoning_content": _text(step), "thought_signature": step["signature"]}
        elif kind == "model_output":
            text = _text(step)
        elif kind == "function_call":
            calls.append({"id": step["id"], "name": step["name"], "args": step["arguments"]})
    if text or calls or extra:
        out.append(AIMessage(content=text, tool_calls=calls, additional_kwargs=extra))
    return out


def lc_window(messages: list[Any]) -> list[Any]:
    from langchain_core.messages import trim_messages  # noqa: PLC0415

    return trim_messages(
        messages,
        max_tokens=BUDGET_TOKENS,
        token_counter="approximate",  # noqa: S106 -- not a password
        strategy="last",
        start_on="human",
    )


class LangChain(System):
    name = "langchain"

    def __init__(self, url: str, size: Callable[[], int]) -> None:
        import sqlalchemy as sa  # noqa: PLC0415

        self.engine = sa.create_engine(url)
        self._size = size

    def new(self, name: str) -> Handle:
        from langchain_community.chat_message_histories import SQLChatMessageHistory  # noqa: PLC0415

        return Handle(SQLChatMessageHistory(session_id=name, connection=self.engine), name)

    def append(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        messages = lc_messages(steps)
        h.ref.add_messages(messages)
        h.lengths.append(len(messages))

    def load(self, h: Handle) -> list[Any]:
        return h.ref.messages  # type: ignore[no-any-return]

    def window(self, h: Handle) -> list[Any]:
        return lc_window(self.load(h))

    def turn(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        messages = lc_messages(steps)
        request = [*self.load(h), messages[0]]
        assert request
        h.ref.add_messages(messages)
        h.lengths.append(len(messages))

    def fork(self, h: Handle, exchanges: int, name: str) -> Handle:
        messages = self.load(h)[: sum(h.lengths[:exchanges])]
        f = self.new(name)
        f.ref.add_messages(messages)
        return f

    def size_bytes(self) -> int:
        return self._size()

    def close(self) -> None:
        self.engine.dispose()


class LangGraph(System):
    name = "langgraph"

    def __init__(self, saver: Any, size: Callable[[], int], closer: Callable[[], None]) -> None:
        from typing import Annotated  # noqa: PLC0415

        from langgraph.graph import START, StateGraph  # noqa: PLC0415
        from langgraph.graph.message import add_messages  # noqa: PLC0415
        from typing_extensions import TypedDict  # noqa: PLC0415

        State = TypedDict("State", {"messages": Annotated[list, add_messages]})  # noqa: UP013

        self._reply: list[Any] = []

        def model(state: Any) -> dict[str, Any]:  # stands in for the LLM call
            return {"messages": self._reply}

        builder = StateGraph(State)
        builder.add_node("model", model)
        builder.add_edge(START, "model")
        self.graph = builder.compile(checkpointer=saver)
        self._size = size
        self._closer = closer

    @staticmethod
    def config(name: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": name}}

    def new(self, name: str) -> Handle:
        return Handle(self.config(name), name)

    def append(self, h: Handle, steps: list[dict[str, Any]]) -> None:
        # One exchange = one run of the graph: the new input in, the node's reply out; both checkpointed.
        messages = lc_messages(steps)
        self._reply = messages[1:]
        self.graph.invoke({"messages": messages[:1]}, h.ref)
        h.lengths.append(len(messages))

    turn = append  # invoke loads the thread's state, runs the node (the request), checkpoints the reply

    def load(self, h: Handle) -> list[Any]:
        return self.graph.get_state(h.ref).values.get("messages", [])  # type: ignore[no-any-return]

    def window(self, h: Handle) -> list[Any]:
        return lc_window(self.load(h))

    def fork(self, h: Handle, exchanges: int, name: str) -> Handle:
        messages = self.load(h)[: sum(h.lengths[:exchanges])]
        f = self.new(name)
        self.graph.update_state(f.ref, {"messages": messages}, as_node="model")
        return f

    def prefill(self, h: Handle, exchanges: list[list[dict[str, Any]]]) -> None:
        messages = [m for steps in exchanges for m in lc_messages(steps)]
        self.graph.update_state(h.ref, {"messages": messages}, as_node="model")
        h.lengths.extend(len(lc_messages(steps)) for steps in exchanges)

    def size_bytes(self) -> int:
        return self._size()

    def close(self) -> None:
        self._closer()


# Construction, per backend. Each returns (system, cleanup) or raises if the peer cannot run.


def sqlite_langgraph(path: Path, size: Callable[[], int]) -> LangGraph:
    from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: PLC0415

    conn = sqlite3.connect(path, check_same_thread=False)
    return LangGraph(SqliteSaver(conn), size, conn.close)


def postgres_langgraph(schema: PostgresSchema, size: Callable[[], int]) -> LangGraph:
    import psycopg  # noqa: PLC0415
    from langgraph.checkpoint.postgres import PostgresSaver  # noqa: PLC0415
    from psycopg.rows import dict_row  # noqa: PLC0415

    conn = psycopg.connect(
        schema.conninfo,
        autocommit=True,
        prepare_threshold=0,
        row_factory=dict_row,
        options=f"-csearch_path={schema.schema}",
    )
    saver = PostgresSaver(conn)
    saver.setup()
    return LangGraph(saver, size, conn.close)


def sqlite_floor(path: Path, size: Callable[[], int]) -> Floor:
    convstore.Store(f"sqlite:///{path}").close()
    return Floor(lambda: bench_store.SqliteFloor(path, size), size)


def postgres_floor(schema: PostgresSchema, size: Callable[[], int]) -> Floor:
    convstore.Store(schema.url).close()
    return Floor(lambda: bench_store.PostgresFloor(schema, size), size)


def async_url(schema: PostgresSchema) -> str:
    return schema.url
