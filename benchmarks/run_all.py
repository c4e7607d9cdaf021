"""convstore against the floor and against the peers an app would pick instead, with plots.

    pip install -e ".[bench]"
    python benchmarks/run_all.py [--quick] [--backend sqlite|postgres|all] [--out benchmarks/report]

Systems (see ``_peers.NOTES``): convstore; the floor (sqlite3 / psycopg 3 with hand-written SQL on
convstore's schema, from ``bench_store.py``); OpenAI Agents SDK ``SQLAlchemySession`` (and
``AdvancedSQLiteSession`` on SQLite, for its native branching); Google ADK ``DatabaseSessionService``;
LangChain ``SQLChatMessageHistory``; LangGraph with ``SqliteSaver`` / ``PostgresSaver`` and a messages
state. Each gets a database of its own (a SQLite file in a temporary directory, or a new PostgreSQL schema,
dropped at the end) and runs alone, one system after the other. Nothing reaches the network.

Workloads, per system and backend:

1. ``grow``: append one exchange (2-4 Gemini steps) at a time up to N steps (10,000; 1,000 with
   ``--quick``); at size points, load the whole history and build a 32k-token window, and measure the
   database. A system that passes the phase's time cap stops growing (reported).
2. ``turns``: a stateless chat turn as an app does it, on a new conversation: build the request for the next
   turn from the stored history plus the new input, then record the reply; up to 1,000 turns (100). The
   database's growth is measured at turn points. A system over the time cap is fast-forwarded (untimed,
   its cheapest write path) to the last turns, which are then timed: the report marks it.
3. ``forks``: K forks at the middle of the ``turns`` conversation, each followed by a read of the fork; the
   database's growth per fork.
4. ``list``: 10,000 conversations (1,000) listed newest first and paged 50 at a time, convstore against the
   floor (hand-written keyset SQL on the same table). The peers have no paged listing (see the report).
5. ``big``: convstore and the floor only, a branch of 100,000 steps (10,000) written in bulk as
   bench_budget.py does: history() against the floor's reader, the 32k window, and 134 appends on top.
   ``--only-big REPORT_JSON`` runs just this phase and adds it to an earlier report.
6. Profiles (cProfile) of convstore's append, history, window and request on SQLite.

Writes ``peers.md`` / ``peers.json`` (``peers-quick.*`` with ``--quick``) and PNG plots into ``--out``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import _common as common
import _peers as peers
from _common import fmt_bytes, fmt_ns, median_ns, now_ns

import convstore

DEFAULT_OUT = common.REPO / "benchmarks" / "report"
PEER_DISTRIBUTIONS = (
    "openai-agents",
    "google-adk",
    "langchain-community",
    "langchain-core",
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint-postgres",
    "aiosqlite",
    "matplotlib",
)


@dataclass(frozen=True)
class Config:
    grow_steps: int
    size_points: tuple[int, ...]
    reads: int
    turns: int
    turn_points: tuple[int, ...]
    forks: int
    conversations: int
    cap_seconds: float  # grow phase, per system
    turn_cap_seconds: float  # turns phase, per system
    fork_cap_seconds: float  # forks phase, per system (at least one fork)
    last_turns: int  # timed after a fast-forward
    big_steps: int  # convstore and the floor only: a bulk-built branch of this many steps


FULL = Config(
    grow_steps=10_000,
    size_points=(100, 300, 1_000, 3_000, 10_000),
    reads=5,
    turns=1_000,
    turn_points=(10, 30, 100, 300, 1_000),
    forks=10,
    conversations=10_000,
    cap_seconds=25.0,
    turn_cap_seconds=55.0,
    fork_cap_seconds=10.0,
    last_turns=5,
    big_steps=100_000,
)
QUICK = Config(
    grow_steps=1_000,
    size_points=(100, 300, 1_000),
    reads=3,
    turns=100,
    turn_points=(10, 30, 100),
    forks=3,
    conversations=1_000,
    cap_seconds=5.0,
    turn_cap_seconds=5.0,
    fork_cap_seconds=2.0,
    last_turns=3,
    big_steps=10_000,
)


# Databases.


def sqlite_size(path: Path) -> Callable[[], int]:
    def size() -> int:
        try:
            with sqlite3.connect(path, isolation_level=None, timeout=1) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            conn.close()
        except sqlite3.OperationalError:
            pass
        total = 0
        for suffix in ("", "-wal"):
            file = path.with_name(path.name + suffix)
            if file.exists():
                total += file.stat().st_size
        return total

    return size


def schema_size(schema: common.PostgresSchema) -> Callable[[], int]:
    def size() -> int:
        with schema.connect() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class AS c "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                (schema.schema,),
            ).fetchone()
        return int(row[0])

    return size


def analyze(schema: common.PostgresSchema) -> Callable[[], None]:
    """ANALYZE every table of the schema: planner statistics, as autovacuum would have gathered them."""

    def run() -> None:
        with schema.connect() as conn:
            tables = conn.execute(
                "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r'",
                (schema.schema,),
            ).fetchall()
            for (table,) in tables:
                conn.execute(f'ANALYZE "{table}"')

    return run


def maintain(system: peers.System) -> None:
    hook = getattr(system, "maintain", None)
    if hook is not None:
        hook()


COLORS = {
    "convstore": "tab:blue",
    "floor": "black",
    "openai-agents": "tab:green",
    "openai-advanced": "tab:olive",
    "adk": "tab:red",
    "langchain": "tab:purple",
    "langgraph": "tab:orange",
}
SYSTEMS = ("convstore", "floor", "openai-agents", "openai-advanced", "adk", "langchain", "langgraph")


@contextmanager
def open_system(name: str, backend: str, postgres_url: str) -> Iterator[peers.System]:
    with ExitStack() as stack:
        if backend == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{name}-")))
            path = directory / f"{name}.db"
            size = sqlite_size(path)
            system: peers.System
            if name == "convstore":
                system = peers.Convstore(f"sqlite:///{path}", size)
            elif name == "floor":
                system = peers.sqlite_floor(path, size)
            elif name == "openai-agents":
                system = peers.OpenAIAgents(f"sqlite+aiosqlite:///{path}", size)
            elif name == "openai-advanced":
                system = peers.OpenAIAdvanced(path, size)
            elif name == "adk":
                system = peers.ADK(f"sqlite+aiosqlite:///{path}", size)
            elif name == "langchain":
                system = peers.LangChain(f"sqlite:///{path}", size)
            elif name == "langgraph":
                system = peers.sqlite_langgraph(path, size)
            else:
                raise ValueError(name)
        else:
            if name == "openai-advanced":
                raise NotImplementedError("AdvancedSQLiteSession is SQLite only")
            schema = stack.enter_context(common.postgres_schema(postgres_url, prefix=f"peers_{name[:8]}"))
            size = schema_size(schema)
            if name == "convstore":
                system = peers.Convstore(schema.url, size)
            elif name == "floor":
                system = peers.postgres_floor(schema, size)
            elif name == "openai-agents":
                system = peers.OpenAIAgents(schema.url, size)
            elif name == "adk":
                system = peers.ADK(schema.url, size)
            elif name == "langchain":
                system = peers.LangChain(schema.url, size)
            elif name == "langgraph":
                system = peers.postgres_langgraph(schema, size)
            else:
                raise ValueError(name)
        system.backend = backend
        if backend == "postgres":
            system.maintain = analyze(schema)  # type: ignore[attr-defined]
        try:
            yield system
        finally:
            system.close()


# Workloads.


def timed(call: Callable[[], Any]) -> tuple[int, Any]:
    start = now_ns()
    out = call()
    return now_ns() - start, out


def repeat(call: Callable[[], Any], runs: int) -> tuple[float, int]:
    """Median of ``runs`` timed calls after a warm-up; fewer when one call takes over half a second."""
    warm, out = timed(call)
    n = len(out) if isinstance(out, list) else -1
    if warm > 500_000_000:
        runs = 1
    samples = [timed(call)[0] for _ in range(runs)]
    return median_ns(samples), n


def binned(samples: list[int], xs: list[int], bins: int = 40) -> list[tuple[float, float]]:
    """(median x, median sample) of consecutive groups, for the plots."""
    if not samples:
        return []
    size = max(1, len(samples) // bins)
    out = []
    for lo in range(0, len(samples), size):
        chunk = samples[lo : lo + size]
        out.append((float(statistics.median(xs[lo : lo + size])), median_ns(chunk)))
    return out


def run_grow(system: peers.System, config: Config, exchanges: list[list[dict[str, Any]]]) -> dict[str, Any]:
    h = system.new("grow")
    pending = [p for p in config.size_points if p <= config.grow_steps]
    samples: list[int] = []
    at_steps: list[int] = []
    points: list[dict[str, Any]] = []
    steps = 0
    started = time.monotonic()
    capped = False
    gc.collect()
    for steps_of in exchanges:
        elapsed, _ = timed(lambda s=steps_of: system.append(h, s))
        samples.append(elapsed)
        steps += len(steps_of)
        at_steps.append(steps)
        if pending and steps >= pending[0]:
            pending.pop(0)
            maintain(system)
            point: dict[str, Any] = {"steps": steps, "size_bytes": system.size_bytes()}
            point["load_ns"], point["load_items"] = repeat(lambda: system.load(h), config.reads)
            try:
                point["window_ns"], point["window_items"] = repeat(lambda: system.window(h), config.reads)
            except NotImplementedError:
                point["window_ns"] = None
            points.append(point)
        if time.monotonic() - started > config.cap_seconds and pending:
            capped = True
            break
    tenth = max(1, len(samples) // 10)
    return {
        "steps_reached": steps,
        "capped": capped,
        "appends": len(samples),
        "append_median_ns": median_ns(samples),
        "append_first_10pct_ns": median_ns(samples[:tenth]),
        "append_last_10pct_ns": median_ns(samples[-tenth:]),
        "append_binned": binned(samples, at_steps),
        "points": points,
        "seconds": round(time.monotonic() - started, 1),
    }


def run_turns(
    system: peers.System, config: Config, exchanges: list[list[dict[str, Any]]]
) -> tuple[dict[str, Any], peers.Handle]:
    base = system.size_bytes()
    h = system.new("turns")
    samples: list[int] = []
    numbers: list[int] = []
    sizes: list[dict[str, Any]] = []
    pending = list(config.turn_points)
    started = time.monotonic()
    fast_forward_at = None
    gc.collect()
    turn = 0
    while turn < config.turns:
        steps = exchanges[turn]
        elapsed, _ = timed(lambda s=steps: system.turn(h, s))
        turn += 1
        samples.append(elapsed)
        numbers.append(turn)
        if pending and turn >= pending[0]:
            pending.pop(0)
            sizes.append({"turns": turn, "bytes": system.size_bytes() - base})
            maintain(system)
        over = time.monotonic() - started > config.turn_cap_seconds
        if over and fast_forward_at is None and turn < config.turns - config.last_turns:
            fast_forward_at = turn
            target = config.turns - config.last_turns
            system.prefill(h, exchanges[turn:target])
            turn = target
            pending = [p for p in pending if p > config.turns]
    last = samples[-config.last_turns :] if fast_forward_at else samples[-max(1, config.turns // 20) :]

    def near(n: int) -> float | None:
        chosen = [s for s, k in zip(samples, numbers, strict=True) if n * 0.9 <= k <= n * 1.1]
        return median_ns(chosen) if chosen else None

    return {
        "turns": turn,
        "fast_forward_at": fast_forward_at,
        "turn_ns_at": {str(n): near(n) for n in config.turn_points},
        "turn_ns_last": median_ns(last),
        "turn_binned": binned(
            samples[: fast_forward_at or len(samples)], numbers[: fast_forward_at or len(numbers)]
        ),
        "turn_last_samples": [(k, s) for k, s in zip(numbers, samples, strict=True)][-config.last_turns :],
        "sizes": sizes,
        "seconds": round(time.monotonic() - started, 1),
    }, h


def run_forks(system: peers.System, config: Config, h: peers.Handle) -> dict[str, Any]:
    exchanges = len(h.lengths)
    middle = exchanges // 2
    maintain(system)
    before = system.size_bytes()
    rows_before = system.count_rows() if isinstance(system, peers.Convstore) else None
    fork_samples, read_samples = [], []
    items = None
    started = time.monotonic()
    for index in range(config.forks):
        if index >= 1 and time.monotonic() - started > config.fork_cap_seconds:
            break
        elapsed, f = timed(lambda i=index: system.fork(h, middle, f"fork-{i:04d}"))
        fork_samples.append(elapsed)
        elapsed, out = timed(lambda f=f: system.read_fork(f))
        read_samples.append(elapsed)
        items = len(out)
    after = system.size_bytes()
    done = len(fork_samples)
    rows: dict[str, float] = {}
    if rows_before is not None:
        rows_after = system.count_rows()  # type: ignore[attr-defined]
        rows = {
            "branch_rows_per_fork": (rows_after[0] - rows_before[0]) / done,
            "node_rows_per_fork": (rows_after[1] - rows_before[1]) / done,
        }
    return {
        **rows,
        "at_exchange": middle,
        "of_exchanges": exchanges,
        "forks": done,
        "fork_median_ns": median_ns(fork_samples),
        "read_median_ns": median_ns(read_samples),
        "fork_items": items,
        "bytes_per_fork": (after - before) / done,
    }


def run_system(
    name: str, backend: str, postgres_url: str, config: Config, data: dict[str, Any]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    started = time.monotonic()
    with open_system(name, backend, postgres_url) as system:
        print(f"  {backend}/{name}: grow", file=sys.stderr, flush=True)
        result["grow"] = run_grow(system, config, data["grow"])
        print(f"  {backend}/{name}: turns", file=sys.stderr, flush=True)
        result["turns"], h = run_turns(system, config, data["turns"])
        print(f"  {backend}/{name}: forks", file=sys.stderr, flush=True)
        result["forks"] = run_forks(system, config, h)
    result["seconds"] = round(time.monotonic() - started, 1)
    print(f"  {backend}/{name}: {result['seconds']} s", file=sys.stderr, flush=True)
    return result


# Listing: convstore against hand-written keyset SQL on the same table.


def run_listing(backend: str, postgres_url: str, config: Config) -> dict[str, Any]:
    with ExitStack() as stack:
        if backend == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-list-")))
            path = directory / "list.db"
            url = f"sqlite:///{path}"
            setup = convstore.Store(url, sqlite_synchronous="NORMAL")
            conn = sqlite3.connect(path, isolation_level=None)
            placeholder = "?"

            def fetch(sql: str, params: tuple) -> list:
                return conn.execute(sql, params).fetchall()
        else:
            schema = stack.enter_context(common.postgres_schema(postgres_url, prefix="peers_list"))
            url = schema.url
            setup = convstore.Store(url)
            conn = schema.connect(autocommit=True)
            placeholder = "%s"

            def fetch(sql: str, params: tuple) -> list:
                with conn.cursor() as cur:
                    return cur.execute(sql, params).fetchall()

        stack.callback(conn.close)
        for _ in range(config.conversations):
            setup.create_conversation(model=peers.MODEL)
        setup.close()
        if backend == "postgres":
            analyze(schema)()
        store = convstore.Store(url)
        stack.callback(store.close)
        columns = "id, created_at, model, system_instruction, generation_config, tools, metadata"
        # The floor lists what convstore's store without an owner lists: every conversation. A variant
        # restricted to ``owner IS NULL`` can walk the (owner, created_at, id) index instead of sorting.
        variants = {
            "floor": "",
            "floor_owner_null": "owner IS NULL AND ",
        }
        limit = 50
        order = f"ORDER BY created_at DESC, id DESC LIMIT {placeholder}"
        floors: dict[str, Callable[[], int]] = {}
        plans: dict[str, Any] = {}
        for variant, owner_sql in variants.items():
            first_sql = f"SELECT {columns} FROM convstore_conversations WHERE {owner_sql}1 = 1 {order}"
            after_sql = (
                f"SELECT {columns} FROM convstore_conversations WHERE {owner_sql}(created_at, id) < "
                f"({placeholder}, {placeholder}) {order}"
            )
            explain = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN "
            plans[variant] = [str(row[-1]) for row in fetch(explain + first_sql, (limit + 1,))]

            def walk(first_sql: str = first_sql, after_sql: str = after_sql) -> int:
                rows = fetch(first_sql, (limit + 1,))
                n = 0
                while True:
                    n += min(len(rows), limit)
                    if len(rows) <= limit:
                        return n
                    last = rows[limit - 1]
                    rows = fetch(after_sql, (last[1], last[0], limit + 1))

            floors[variant] = walk
            floors[variant + "_first"] = lambda first_sql=first_sql: fetch(first_sql, (limit + 1,))

        def ours_all() -> int:
            n, cursor = 0, None
            while True:
                page = store.conversations(limit=limit, cursor=cursor)
                n += len(page.items)
                if page.next_cursor is None:
                    return n
                cursor = page.next_cursor

        assert ours_all() == floors["floor"]() == floors["floor_owner_null"]() == config.conversations
        pages = -(-config.conversations // limit)
        result: dict[str, Any] = {
            "conversations": config.conversations,
            "page_size": limit,
            "pages": pages,
            "plans": plans,
            "convstore_first_page_ns": repeat(lambda: store.conversations(limit=limit).items, 21)[0],
            "convstore_per_page_ns": median_ns([timed(ours_all)[0] for _ in range(3)]) / pages,
        }
        for variant in variants:
            result[f"{variant}_first_page_ns"] = repeat(floors[variant + "_first"], 21)[0]
            result[f"{variant}_per_page_ns"] = (
                median_ns([timed(floors[variant])[0] for _ in range(3)]) / pages
            )
    return result


# A long branch: convstore and the floor only.


def run_big(backend: str, postgres_url: str, config: Config, seed: int) -> dict[str, Any]:
    """A branch of ``big_steps`` steps written in bulk (untimed, as bench_budget.py does), then history(),
    the floor's history (bench_request.py's reader of convstore's tables), the 32k window, and appends."""
    import bench_budget  # noqa: PLC0415
    import bench_request  # noqa: PLC0415

    with ExitStack() as stack:
        if backend == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-big-")))
            path = directory / "big.db"
            store = convstore.Store(f"sqlite:///{path}")
            stack.callback(store.close)
            conv = bench_budget.bulk_branch(store, config.big_steps)
            floor = bench_request.sqlite_floor(path, conv.id)
        else:
            schema = stack.enter_context(common.postgres_schema(postgres_url, prefix="peers_big"))
            store = convstore.Store(schema.url)
            stack.callback(store.close)
            conv = bench_budget.bulk_branch(store, config.big_steps)
            analyze(schema)()
            floor = bench_request.postgres_floor(schema, conv.id)
        stack.callback(floor.close)
        budget = convstore.TokenBudget(max_input_tokens=peers.BUDGET_TOKENS)
        assert conv.history() == floor.history("main")
        result: dict[str, Any] = {"steps": config.big_steps}
        result["convstore_history_ns"] = repeat(conv.history, 2)[0]
        result["floor_history_ns"] = repeat(lambda: floor.history("main"), 2)[0]
        result["convstore_window_ns"] = repeat(lambda: conv.history(budget=budget), 11)[0]
        extra = common.conversation_exchanges(400, seed=seed + 2)
        samples = [timed(lambda e=e: conv.append(e))[0] for e in extra]
        result["convstore_append_ns"] = median_ns(samples)
        result["appends"] = len(samples)
    return result


# Profiles.


def run_profiles(exchanges: list[list[dict[str, Any]]], top: int = 12) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as directory:
        store = convstore.Store(f"sqlite:///{directory}/p.db")
        conv = store.create_conversation(model=peers.MODEL)
        budget = convstore.TokenBudget(max_input_tokens=peers.BUDGET_TOKENS)
        half = len(exchanges) // 2
        for steps in exchanges[:half]:
            conv.append(steps)
        steps_total = sum(len(s) for s in exchanges[:half])
        calls: dict[str, tuple[Callable[[], Any], int]] = {}
        rest = iter(exchanges[half:])
        calls["append"] = (lambda: conv.append(next(rest)), 200)
        calls["history"] = (conv.history, 10)
        calls["window"] = (lambda: conv.history(budget=budget), 50)
        calls["request"] = (lambda: conv.request("next question"), 10)
        for name, (call, runs) in calls.items():
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(runs):
                call()
            profile.disable()
            text = io.StringIO()
            stats = pstats.Stats(profile, stream=text).strip_dirs().sort_stats("tottime")
            stats.print_stats(top)
            lines = text.getvalue().splitlines()
            start = next(i for i, line in enumerate(lines) if "ncalls" in line)
            out[name] = {
                "runs": runs,
                "history_steps": steps_total,
                "top_tottime": lines[start : start + top + 1],
            }
        store.close()
    return out


# Report.


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in PEER_DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def ms(value: float | None) -> str:
    return "n/a" if value is None else fmt_ns(value)


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def tables(backend: str, results: dict[str, Any], config: Config) -> list[common.TableData]:
    systems = {k: v for k, v in results["systems"].items() if "error" not in v}
    floor = systems.get("floor")
    ours = systems.get("convstore")
    out = []
    rows = []
    for name, r in systems.items():
        g = r["grow"]
        rows.append(
            [
                name,
                f"{g['steps_reached']:,}" + (" (cap)" if g["capped"] else ""),
                ms(g["append_median_ns"]),
                ms(g["append_first_10pct_ns"]),
                ms(g["append_last_10pct_ns"]),
                ratio(g["append_last_10pct_ns"], g["append_first_10pct_ns"]),
                ratio(g["append_median_ns"], floor["grow"]["append_median_ns"]) if floor else "n/a",
                ratio(g["append_median_ns"], ours["grow"]["append_median_ns"]) if ours else "n/a",
            ]
        )
    out.append(
        common.TableData(
            f"{backend}: append one exchange at a time (grow to {config.grow_steps:,} steps)",
            ["system", "steps", "median", "first 10%", "last 10%", "last/first", "vs floor", "vs convstore"],
            rows,
            f"(cap) = stopped at the {config.cap_seconds:g} s phase cap before the last size point.",
        )
    )
    for key, title in (("load_ns", "load the full history"), ("window_ns", "build a 32k-token window")):
        points = [p for p in config.size_points if p <= config.grow_steps]
        rows = []
        for name, r in systems.items():
            by = {p["steps"] // 10 * 10: p for p in r["grow"]["points"]}
            cells = []
            for p in points:
                hit = next((v for k, v in by.items() if abs(k - p) <= 4), None)
                cells.append(ms(hit[key]) if hit else "—")
            last = r["grow"]["points"][-1] if r["grow"]["points"] else None
            fl = (
                next((q for q in floor["grow"]["points"] if last and q["steps"] == last["steps"]), None)
                if floor
                else None
            )
            oc = (
                next((q for q in ours["grow"]["points"] if last and q["steps"] == last["steps"]), None)
                if ours
                else None
            )
            rows.append(
                [
                    name,
                    *cells,
                    ratio(last[key], fl["load_ns"]) if last and fl and key == "load_ns" else "n/a",
                    ratio(last[key], oc[key]) if last and oc and oc.get(key) else "n/a",
                ]
            )
        out.append(
            common.TableData(
                f"{backend}: {title} (median), by history length in steps",
                ["system", *(f"{p:,}" for p in points), "vs floor (last)", "vs convstore (last)"],
                rows,
                "Window: convstore conv.history(budget=TokenBudget(32000)); peers load everything and trim "
                "(see notes)."
                if key == "window_ns"
                else "",
            )
        )
    rows = []
    for name, r in systems.items():
        t = r["turns"]
        cells = [ms(t["turn_ns_at"].get(str(p))) for p in config.turn_points[:-1]]
        last_label = ms(t["turn_ns_last"]) + (" (ff)" if t["fast_forward_at"] else "")
        rows.append(
            [
                name,
                *cells,
                last_label,
                ratio(t["turn_ns_last"], floor["turns"]["turn_ns_last"]) if floor else "n/a",
                ratio(t["turn_ns_last"], ours["turns"]["turn_ns_last"]) if ours else "n/a",
            ]
        )
    out.append(
        common.TableData(
            f"{backend}: one stateless turn (build the request from history + new input, record the reply)",
            [
                "system",
                *(f"turn {p:,}" for p in config.turn_points[:-1]),
                f"turn {config.turns:,}",
                "vs floor",
                "vs convstore",
            ],
            rows,
            "Medians of the turns within ±10% of each turn number; the last column is the median of the "
            "last 5% of turns. (ff) = over the time cap: fast-forwarded untimed, then the last "
            f"{config.last_turns} turns timed.",
        )
    )
    rows = []
    for name, r in systems.items():
        sizes = r["turns"]["sizes"]
        cells = []
        for p in config.turn_points:
            hit = next((s for s in sizes if s["turns"] == p), None)
            cells.append(fmt_bytes(hit["bytes"]) if hit else "—")
        last = sizes[-1] if sizes else None
        per = f"{last['bytes'] / last['turns'] / 1024:,.1f} KiB" if last else "n/a"
        rows.append([name, *cells, per])
    out.append(
        common.TableData(
            f"{backend}: database growth after N turns",
            ["system", *(f"{p:,} turns" for p in config.turn_points), "per turn (last)"],
            rows,
            "SQLite: file + WAL after wal_checkpoint(TRUNCATE); PostgreSQL: pg_total_relation_size of every "
            "table in the system's schema. Growth since before the turns conversation was created.",
        )
    )
    rows = []
    for name, r in systems.items():
        f = r["forks"]
        rows.append(
            [
                name,
                f"{f['at_exchange']:,} of {f['of_exchanges']:,}",
                ms(f["fork_median_ns"]),
                ms(f["read_median_ns"]),
                fmt_bytes(max(0, f["bytes_per_fork"])),
                ratio(f["fork_median_ns"], ours["forks"]["fork_median_ns"]) if ours else "n/a",
            ]
        )
    out.append(
        common.TableData(
            f"{backend}: fork in the middle, then read the fork ({config.forks} forks)",
            ["system", "at exchange", "fork", "read fork", "bytes/fork", "fork vs convstore"],
            rows,
        )
    )
    big = results.get("big")
    if big:
        grow = ours["grow"]["append_median_ns"] if ours else None
        out.append(
            common.TableData(
                f"{backend}: a {big['steps']:,}-step branch (written in bulk), convstore and the floor",
                ["", "convstore", "floor", "convstore/floor"],
                [
                    [
                        "history()",
                        ms(big["convstore_history_ns"]),
                        ms(big["floor_history_ns"]),
                        ratio(big["convstore_history_ns"], big["floor_history_ns"]),
                    ],
                    ["32k-token window", ms(big["convstore_window_ns"]), "", ""],
                    [f"append ({big['appends']} exchanges)", ms(big["convstore_append_ns"]), "", ""],
                ],
                f"Append at {big['steps']:,} steps against convstore's own median in the grow phase: "
                f"{ratio(big['convstore_append_ns'], grow)}."
                + (f" Measured {big['date']} by `{big['command']}`." if "date" in big else ""),
            )
        )
    listing = results.get("listing")
    if listing:
        out.append(
            common.TableData(
                f"{backend}: {listing['conversations']:,} conversations, newest first, "
                f"{listing['page_size']} a page",
                ["", "first page", "per page (walk all)", "convstore/floor (first)"],
                [
                    [
                        "convstore",
                        ms(listing["convstore_first_page_ns"]),
                        ms(listing["convstore_per_page_ns"]),
                        ratio(listing["convstore_first_page_ns"], listing["floor_first_page_ns"]),
                    ],
                    ["floor", ms(listing["floor_first_page_ns"]), ms(listing["floor_per_page_ns"]), ""],
                    [
                        "floor, owner IS NULL",
                        ms(listing["floor_owner_null_first_page_ns"]),
                        ms(listing["floor_owner_null_per_page_ns"]),
                        "",
                    ],
                ],
                "floor: the same rows as convstore (every conversation: the store has no owner), keyset SQL; "
                "floor, owner IS NULL: only ownerless ones, which can walk the (owner, created_at, id) "
                "index. "
                f"Plans: {json.dumps(listing['plans'], ensure_ascii=False)}. Peers: no paged listing in "
                "OpenAI SQLAlchemySession or LangChain SQLChatMessageHistory; ADK "
                "list_sessions returns all sessions at once; LangGraph lists checkpoints, not threads.",
            )
        )
    return out


def plot(report: dict[str, Any], out: Path, stem: str) -> list[Path]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    backends = list(report["backends"])
    written = []
    specs = [
        ("turn", "per-turn cost vs turn number", "turn number", "ms per turn (request + record)"),
        ("storage", "database growth vs turns", "turns", "bytes"),
        ("append", "append cost vs history length", "history length (steps)", "ms per append"),
        ("load", "load the full history", "history length (steps)", "ms"),
    ]
    for key, title, xlabel, ylabel in specs:
        fig, axes = plt.subplots(1, len(backends), figsize=(6.5 * len(backends), 4.6), squeeze=False)
        for ax, backend in zip(axes[0], backends, strict=True):
            for name, r in report["backends"][backend]["systems"].items():
                if "error" in r:
                    continue
                color = COLORS.get(name)
                if key == "turn":
                    xs = [p[0] for p in r["turns"]["turn_binned"]]
                    ys = [p[1] / 1e6 for p in r["turns"]["turn_binned"]]
                    if r["turns"]["fast_forward_at"]:  # the turns timed after the fast-forward, unjoined
                        ax.plot(
                            [k for k, _ in r["turns"]["turn_last_samples"]],
                            [s / 1e6 for _, s in r["turns"]["turn_last_samples"]],
                            "x",
                            color=color,
                        )
                elif key == "storage":
                    xs = [s["turns"] for s in r["turns"]["sizes"]]
                    ys = [max(1, s["bytes"]) for s in r["turns"]["sizes"]]
                elif key == "append":
                    xs = [p[0] for p in r["grow"]["append_binned"]]
                    ys = [p[1] / 1e6 for p in r["grow"]["append_binned"]]
                else:
                    xs = [p["steps"] for p in r["grow"]["points"]]
                    ys = [p["load_ns"] / 1e6 for p in r["grow"]["points"]]
                style = "-" if key in ("turn", "append") else "-o"
                width = 2.4 if name == "convstore" else 1.3
                ax.plot(xs, ys, style, label=name, color=color, linewidth=width, markersize=4)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{backend}: {title}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="major", alpha=0.4)
            ax.legend(fontsize=8)
            if key == "turn":
                ax.text(
                    0.99,
                    0.01,
                    "x: timed after an untimed fast-forward",
                    transform=ax.transAxes,
                    ha="right",
                    va="bottom",
                    fontsize=7,
                )
        fig.tight_layout()
        path = out / f"{stem}-{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def targets(report: dict[str, Any]) -> list[str]:
    lines = []
    for backend, b in report["backends"].items():
        s = {k: v for k, v in b["systems"].items() if "error" not in v}
        ours, floor = s.get("convstore"), s.get("floor")
        if not ours:
            continue
        g = ours["grow"]
        if floor:
            r = g["append_median_ns"] / floor["grow"]["append_median_ns"]
            lines.append(f"- {backend}: append ≤ 2x floor: {r:.2f}x — {'PASS' if r <= 2 else 'MISS'}")
        growth = g["append_last_10pct_ns"] / g["append_first_10pct_ns"]
        lines.append(
            f"- {backend}: append flat in history length (last 10%/first 10% ≤ 1.2): {growth:.2f}x — "
            f"{'PASS' if growth <= 1.2 else 'MISS'}"
        )
        if floor and g["points"] and floor["grow"]["points"]:
            r = g["points"][-1]["load_ns"] / floor["grow"]["points"][-1]["load_ns"]
            lines.append(
                f"- {backend}: history() ≤ 3x floor at {g['points'][-1]['steps']:,} steps: {r:.2f}x — "
                f"{'PASS' if r <= 3 else 'MISS'}"
            )
        big = b.get("big")
        if big:
            r = big["convstore_history_ns"] / big["floor_history_ns"]
            lines.append(
                f"- {backend}: history() ≤ 3x floor at {big['steps']:,} steps: {r:.2f}x — "
                f"{'PASS' if r <= 3 else 'MISS'}"
            )
            r = big["convstore_append_ns"] / g["append_median_ns"]
            lines.append(
                f"- {backend}: append at {big['steps']:,} steps vs the grow phase's median: {r:.2f}x — "
                f"{'PASS' if r <= 1.2 else 'MISS'} (target ≤ 1.2)"
            )
            big_window = [p for p in g["points"] if p["steps"] >= 1000 and p.get("window_ns")]
            if big_window:
                r = big["convstore_window_ns"] / big_window[0]["window_ns"]
                lines.append(
                    f"- {backend}: window at {big['steps']:,} vs {big_window[0]['steps']:,} steps: "
                    f"{r:.2f}x — "
                    f"{'PASS' if r <= 1.5 else 'MISS'} (target ≤ 1.5)"
                )
        windows = [p["window_ns"] for p in g["points"] if p.get("window_ns")]
        big = [p for p in g["points"] if p["steps"] >= 1000 and p.get("window_ns")]
        if len(big) >= 2:
            r = big[-1]["window_ns"] / big[0]["window_ns"]
            lines.append(
                f"- {backend}: window build flat ({big[-1]['steps']:,} vs {big[0]['steps']:,} steps ≤ 1.5x): "
                f"{r:.2f}x — {'PASS' if r <= 1.5 else 'MISS'}"
            )
        del windows
        f = ours["forks"]
        lines.append(
            f"- {backend}: fork O(1): {fmt_ns(f['fork_median_ns'])} at exchange {f['at_exchange']:,}, "
            f"{f.get('branch_rows_per_fork', '?')} branch rows and {f.get('node_rows_per_fork', '?')} node "
            f"rows per fork, {fmt_bytes(max(0, f['bytes_per_fork']))} per fork (pages allocate in blocks) — "
            f"{'PASS' if f.get('branch_rows_per_fork') == 1 and f.get('node_rows_per_fork') == 0 else 'MISS'}"
        )
        want = {"langgraph": 10, "openai-agents": 3, "adk": 3}
        for name, factor in want.items():
            if name in s:
                r = s[name]["turns"]["turn_ns_last"] / ours["turns"]["turn_ns_last"]
                lines.append(
                    f"- {backend}: per-turn at {report['config']['turns']:,} turns ≥ {factor}x below {name}: "
                    f"{r:.1f}x — {'PASS' if r >= factor else 'MISS'}"
                )
        sizes = ours["turns"]["sizes"]
        if len(sizes) >= 2:
            a, z = sizes[-2], sizes[-1]
            per_a, per_z = a["bytes"] / a["turns"], z["bytes"] / z["turns"]
            lines.append(
                f"- {backend}: storage linear: {per_a / 1024:,.1f} KiB/turn at {a['turns']:,} turns, "
                f"{per_z / 1024:,.1f} KiB/turn at {z['turns']:,} — "
                f"{'PASS' if per_z <= per_a * 1.25 else 'MISS'}"
            )
    return lines


def write_report(out: Path, stem: str, report: dict[str, Any], config: Config) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    pngs = plot(report, out, stem)
    lines = [
        *common.report_opening(
            "convstore against the floor and its peers",
            report,
            when=f", {report['seconds']} s.",
            more=report["versions"],
        ),
        f"Workload: the shared seeded generator (seed {report['seed']}), exchanges of 2-4 Gemini steps, step "
        f"JSON about {report['mean_step_bytes']:,.0f} bytes. Each system has its own fresh database and runs "
        "alone; timings are wall-clock medians. Ratios: `vs floor` = system/floor, `vs convstore` = "
        "system/convstore (above 1 = slower than convstore).",
        "",
        "## Targets",
        "",
        *report["targets"],
        "",
        "## Systems",
        "",
        *(f"- **{k}**: {v}" for k, v in peers.NOTES.items()),
        "",
    ]
    for backend, b in report["backends"].items():
        errors = {k: v["error"] for k, v in b["systems"].items() if "error" in v}
        for name, error in errors.items():
            lines.append(f"- {backend}/{name} did not run: {error}")
        lines.append("")
    lines += ["## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in pngs]
    lines.append("")
    for backend, b in report["backends"].items():
        lines.append(f"## {backend}")
        lines.append("")
        lines += [common.render_markdown(t) for t in tables(backend, b, config)]
    if report.get("profiles"):
        lines += ["## Profiles (cProfile, convstore on SQLite, sorted by own time)", ""]
        for name, p in report["profiles"].items():
            lines.append(f"### {name}, {p['runs']} runs at {p['history_steps']:,} steps")
            lines += ["", "```text", *p["top_tottime"], "```", ""]
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=common.DEFAULT_SEED)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--only-big",
        type=Path,
        metavar="REPORT_JSON",
        help="run only the long-branch phase and add it to this earlier report (re-rendered in --out)",
    )
    parser.add_argument(
        "--postgres-url", default=os.environ.get(common.POSTGRES_ENV, common.DEFAULT_POSTGRES_URL)
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    backends = ("sqlite", "postgres") if args.backend == "all" else (args.backend,)
    chosen = [s for s in args.systems.split(",") if s]
    started = time.monotonic()
    if args.only_big is not None:
        report = json.loads(args.only_big.read_text(encoding="utf-8"))
        for backend in backends:
            print(f"  {backend}: {config.big_steps:,}-step branch", file=sys.stderr, flush=True)
            big = run_big(backend, args.postgres_url, config, args.seed)
            big["date"] = common.machine_info()["date"]
            big["command"] = " ".join(
                ["python", "benchmarks/run_all.py", *(sys.argv[1:] if argv is None else argv)]
            )
            report["backends"][backend]["big"] = big
        report["targets"] = targets(report)
        path = write_report(args.out, "peers-quick" if args.quick else "peers", report, config)
        print(f"wrote {path}", file=sys.stderr)
        return 0
    grow = common.conversation_exchanges(config.grow_steps, seed=args.seed)
    turns_data = common.conversation_exchanges(config.turns * 4, seed=args.seed + 1)[: config.turns]
    data = {"grow": grow, "turns": turns_data}
    server = common.postgres_server_version(args.postgres_url) if "postgres" in backends else None
    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/run_all.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": common.machine_info(server),
        "versions": versions(),
        "config": asdict(config) | {"quick": args.quick},
        "seed": args.seed,
        "mean_step_bytes": common.mean_step_bytes(grow),
        "backends": {},
    }
    for backend in backends:
        print(f"{backend}:", file=sys.stderr, flush=True)
        b: dict[str, Any] = {"systems": {}}
        for name in chosen:
            if backend == "postgres" and name == "openai-advanced":
                continue
            try:
                b["systems"][name] = run_system(name, backend, args.postgres_url, config, data)
            except Exception as error:  # a peer that cannot run is reported, and the rest carry on
                traceback.print_exc()
                b["systems"][name] = {"error": f"{type(error).__name__}: {error}"[:500]}
        if "convstore" in chosen:
            print(f"  {backend}: listing", file=sys.stderr, flush=True)
            b["listing"] = run_listing(backend, args.postgres_url, config)
            print(f"  {backend}: {config.big_steps:,}-step branch", file=sys.stderr, flush=True)
            b["big"] = run_big(backend, args.postgres_url, config, args.seed)
        report["backends"][backend] = b
    if not args.no_profile and "convstore" in chosen:
        print("profiles", file=sys.stderr, flush=True)
        report["profiles"] = run_profiles(
            common.conversation_exchanges(2_000 if args.quick else 10_000, seed=args.seed)
        )
    report["targets"] = targets(report)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["machine"]["load_average_at_end_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    path = write_report(args.out, "peers-quick" if args.quick else "peers", report, config)
    for backend, b in report["backends"].items():
        for table in tables(backend, b, config):
            print(common.render_text(table))
    print("\n".join(report["targets"]))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
