"""The cold stateless turn: open the conversation, build the request, POST it, record the reply.

    python benchmarks/bench_turn.py [--backend sqlite|postgres|all] [--quick] [--out benchmarks/results]
        [--shape unicode-1k|ascii-500|all] [--no-search-index]

``--no-search-index`` runs convstore with ``Store(search_index=False)`` (the floor keeps no full-text index
either way): the difference from a default run is what the index costs a turn.

What a stateless web service does on every request, through convstore's public API only, beside a peer and
a floor, in one run. Nothing reaches the network: every system POSTs its request body through an
``httpx.MockTransport`` whose handler returns a canned reply (a completed interaction with one
``model_output`` step; for the peer the same text as a Responses-API response), about the size of a generator
exchange together with the new user input. The systems are in ``_turns.py``:

- convstore: one ``Store(url)`` per process (its engine and pool kept, as a service keeps them), and each
  turn ``store.conversation(id)`` opened anew (nothing cached from the last turn), then
  ``conv.send(text, client=client)`` with ``client = InteractionsClient(api_key=..., http_client=httpx.Client(
  transport=MockTransport(handler)))``. The turn = open + send (body built, POSTed, reply read and recorded).
  Also with ``budget=TokenBudget(max_input_tokens=32000)``.
- openai-agents (when ``agents`` imports; ``pip install -e ".[bench]"``): SQLite ``agents.SQLiteSession``,
  PostgreSQL ``agents.extensions.memory.SQLAlchemySession`` on a ``postgresql+psycopg`` async engine. A turn:
  ``get_items()``, ``json.dumps`` of ``{"model", "instructions", "input": items + [new item]}``, the POST
  through an ``httpx.AsyncClient`` on the same kind of mock transport, ``json.loads`` of the reply,
  ``add_items`` of the new user item and the reply's output items. The session objects are kept between
  turns (they cache no items). Seeded with the same steps mapped to Responses-API items as
  ``_peers.openai_items`` maps them. The peer has no token budget (its workaround, a full load trimmed in
  Python, costs at least the unbudgeted turn), so it is not in the budgeted table.
- floor: ``sqlite3`` / ``psycopg`` 3 with hand-written SQL on a minimal table of its own
  (``conversation_id, seq`` primary key, the step's token totals, the payload as bytes): one indexed scan of
  the payloads, the request bytes spliced from them without decoding the history, the same POST through
  ``httpx.Client`` on the same mock, ``json.loads`` of the reply, and one insert transaction (``executemany``)
  for the new user step and the reply's steps. Same durability as convstore on SQLite (WAL,
  ``synchronous=FULL``). Budgeted: the first exchange start whose tokens-before fits, found through an index
  on the running token total, then the scan from there (tokens = payload bytes / 4).

Two payload shapes, one after the other in the same run, each on fresh databases (``--shape`` picks one):
``unicode-1k``, the shared generator's steps (about 1 KB of JSON, some words non-ASCII) and no system
instruction; ``ascii-500``, the same generator drawing ASCII words only, every text at 0.47 of its length
(steps of about 500 bytes), and a system instruction of about 500 bytes that every system sends in its body
(convstore: the conversation's ``system_instruction``; the floor: the same field in its spliced body; the
peer: the Responses API's ``instructions``). The canned reply and the new user input follow the shape.

History: N turns = 2N steps (10, 100, 1,000 and 10,000 turns; 10 and 100 with ``--quick``); budgeted (the
``unicode-1k`` shape only): 1,000, 10,000 and 100,000 steps (1,000 and 5,000). convstore is seeded through
``conv.append`` with a few thousand steps an exchange (the history's last few hundred steps are appended as
the generator's own exchanges, so a 32k window never reaches a bulk exchange); the peer with one
``add_items`` and the floor with one ``executemany``. Each measured turn adds 2 steps: a size gets as many
identical conversations as keep that growth under about 2% (one a timed turn at 10 turns), used in turn. Each
size is measured in R rounds (3; 1 with ``--quick``) of T timed turns per system; within a round the systems
alternate turn by turn (rotating who goes first), after one warm-up turn each. Reported: the median and p90
of every timed turn, and the lowest and highest of the rounds' convstore/floor ratios of medians. The
1-minute load average is printed and recorded at the start and the end of each backend.

On PostgreSQL every table of each system's schema is ANALYZEd after each seeding (autovacuum may be off, as
on the development server): without it, convstore's cold turn at 20,000 steps, after the smaller sizes had
run on the same pool, once sat in its history query for minutes (killed; not root-caused: the same query
EXPLAINed afresh on those tables, statistics or none, walks the primary key).

Also, after the timings, at the smallest and the largest size of each shape: the SQL statements,
transactions and connection checkouts of one convstore cold turn (SQLAlchemy engine events), and on
PostgreSQL the round trips of one cold turn of convstore and of the floor, counted on the wire by a TCP proxy
(``_roundtrips.py``); on SQLite a cProfile of convstore's cold turn.
"""

from __future__ import annotations

import cProfile
import gc
import importlib
import io
import json
import math
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _common as common
import sqlalchemy as sa
from _common import TableData, fmt_ns, fmt_ratio, median_ns, now_ns, percentile_ns
from _roundtrips import RoundTripProxy
from _turns import (
    PEER,
    SHAPES,
    UNICODE_1K,
    Convstore,
    OpenAIAgents,
    PostgresFloor,
    Shape,
    SqliteFloor,
    Wire,
    dumps_bytes,
    peer_available,
)

MAX_GROWTH = 0.02  # the most the measured turns may grow a conversation (fraction of its steps)
COLD_VS_PEER_TARGET = 3.0  # convstore at least this many times faster than openai-agents, from 1,000 turns
COLD_VS_FLOOR_TARGET = 1.3  # convstore at most this many times the floor, at every size
BUDGET_GROWTH_TARGET = 1.5  # budgeted turn at the largest size over the same at 1,000 steps
PEER_TARGET_FROM = 1_000  # turns


@dataclass(frozen=True)
class Config:
    turn_sizes: tuple[int, ...]  # turns of history, 2 steps each
    turn_repeats: tuple[int, ...]  # timed turns for each size, a round
    rounds: int  # rounds of each size's timed turns
    budget_sizes: tuple[int, ...]  # steps of history
    budget_repeats: int
    profile_turns: int  # convstore's cProfile on SQLite: the conversation size in turns
    profile_repeats: int = 10


FULL = Config((10, 100, 1_000, 10_000), (21, 21, 15, 7), 3, (1_000, 10_000, 100_000), 21, 1_000)
QUICK = Config((10, 100), (7, 5), 1, (1_000, 5_000), 5, 100, 3)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# The databases.


def _nothing() -> None:
    return None


@dataclass
class Backend:
    name: str
    systems: list[Any]
    # After seeding, before the timings: PostgreSQL's planner statistics gathered (ANALYZE), as autovacuum
    # does in service (see the module notes).
    after_seed: Callable[[], None] = _nothing
    # PostgreSQL: the base URL and the schemas of convstore and the floor (for the round trips' proxy).
    postgres_url: str = ""
    schemas: dict[str, common.PostgresSchema] | None = None
    search_index: bool = True  # convstore's full-text index (--no-search-index: without it)

    @property
    def ours(self) -> Convstore:
        return next(s for s in self.systems if isinstance(s, Convstore))


@contextmanager
def open_backend(
    name: str, postgres_url: str, wire: Wire, with_peer: bool, *, search_index: bool = True
) -> Iterator[Backend]:
    """Each system in a database of its own (SQLite files in a temporary directory, or new PostgreSQL
    schemas), removed on exit."""
    with ExitStack() as stack:
        systems: list[Any] = []
        schemas: list[common.PostgresSchema] = []
        if name == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="convstore-turn-")))
            url = common.SqliteFile(directory / "convstore.db").url
            systems.append(Convstore(url, wire, search_index=search_index))
            if with_peer:
                systems.append(OpenAIAgents(name, directory / "openai_agents.db", wire))
            systems.append(SqliteFloor(directory / "floor.db", wire))
        else:
            ours = stack.enter_context(common.postgres_schema(postgres_url, "turn"))
            systems.append(Convstore(ours.url, wire, search_index=search_index))
            if with_peer:
                theirs = stack.enter_context(common.postgres_schema(postgres_url, "turn"))
                systems.append(OpenAIAgents(name, theirs, wire))
            floor = stack.enter_context(common.postgres_schema(postgres_url, "turn"))
            systems.append(PostgresFloor(floor, wire))
            schemas = [ours, *([theirs] if with_peer else []), floor]
        for system in systems:
            stack.callback(system.close)
        after = (lambda: analyze(schemas)) if schemas else _nothing
        named = {"convstore": schemas[0], "floor": schemas[-1]} if schemas else None
        yield Backend(name, systems, after, postgres_url, named, search_index)


def analyze(schemas: Sequence[common.PostgresSchema]) -> None:
    """ANALYZE every table of each schema (only these: other schemas of the database are others' work)."""
    for schema in schemas:
        with schema.connect() as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema.schema,)
            ).fetchall()
            for (table,) in tables:
                conn.execute(f'ANALYZE "{table}"')


# The measurements.


def conversations_for(steps: int, repeats: int) -> int:
    """Identical conversations for one size, so the measured turns (2 steps each) grow each one by at most
    about ``MAX_GROWTH``."""
    return max(1, min(repeats, math.ceil(2 * repeats / (MAX_GROWTH * steps))))


def measure(
    backend: Backend,
    systems: Sequence[Any],
    exchanges: Sequence[list[dict[str, Any]]],
    repeats: int,
    rounds: int,
    wire: Wire,
    budgeted: bool,
) -> dict[str, Any]:
    """``rounds`` rounds of ``repeats`` timed turns of each system, alternating turn by turn."""
    steps = sum(len(e) for e in exchanges)
    count = conversations_for(steps, repeats * rounds)
    started = time.monotonic()
    keys = {s.name: [s.seed(exchanges) for _ in range(count)] for s in systems}
    seed_seconds = time.monotonic() - started
    backend.after_seed()
    for system in systems:  # warm-up, untimed
        system.turn(keys[system.name][0], wire.user_text, budgeted)
    samples: dict[str, list[int]] = {s.name: [] for s in systems}
    round_medians: dict[str, list[float]] = {s.name: [] for s in systems}
    request_bytes: dict[str, int] = {}
    index = 0
    for _ in range(rounds):
        gc.collect()
        this_round: dict[str, list[int]] = {s.name: [] for s in systems}
        for _ in range(repeats):
            shift = index % len(systems)
            for system in [*systems[shift:], *systems[:shift]]:
                key = keys[system.name][index % count]
                start = now_ns()
                system.turn(key, wire.user_text, budgeted)
                this_round[system.name].append(now_ns() - start)
                request_bytes[system.name] = wire.request_bytes[system.name]
            index += 1
        for name, values in this_round.items():
            samples[name] += values
            round_medians[name].append(median_ns(values))
    result: dict[str, Any] = {
        "steps": steps,
        "conversations": count,
        "repeats": repeats,
        "rounds": rounds,
        "seed_seconds": round(seed_seconds, 2),
    }
    for name, values in samples.items():
        result[name] = {
            "median_ns": median_ns(values),
            "p90_ns": percentile_ns(values, 90),
            "round_medians_ns": round_medians[name],
            "request_bytes": request_bytes[name],
            "samples_ns": values,
        }
    ours = result["convstore"]["median_ns"]
    for name in samples:
        if name != "convstore":
            result[f"convstore_over_{name}"] = ours / result[name]["median_ns"]
            by_round = [a / b for a, b in zip(round_medians["convstore"], round_medians[name], strict=True)]
            result[f"convstore_over_{name}_rounds"] = [min(by_round), max(by_round)]
    return result


def count_statements(ours: Convstore, key: str, wire: Wire, budgeted: bool) -> dict[str, Any]:
    """The SQL statements, transactions and connection checkouts of one cold turn (engine events)."""
    engine = ours.store.engine
    statements: list[str] = []
    counts = {"begin": 0, "commit": 0, "rollback": 0, "checkout": 0}

    def on_statement(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(" ".join(statement.split()))

    def counting(kind: str) -> Callable[..., None]:
        def on_event(*args: Any) -> None:
            counts[kind] += 1

        return on_event

    listeners: list[tuple[Any, str, Callable[..., None]]] = [
        (engine, "before_cursor_execute", on_statement),
        *((engine, kind, counting(kind)) for kind in ("begin", "commit", "rollback")),
        (engine.pool, "checkout", counting("checkout")),
    ]
    # The branch scan goes to psycopg directly on PostgreSQL (binary results), past the engine's events:
    # counted where convstore builds its SQL (private functions: skipped, and said, if they moved).
    fastpath, runner = _private("_fastpath", "_psycopg_sql"), _private("_runner", "run_batch")
    to_psycopg = getattr(fastpath, "_psycopg_sql", None)

    def counted_psycopg_sql(conn: Any, step: Any) -> tuple[str, Any]:
        assert to_psycopg is not None
        sql, params = to_psycopg(conn, step)
        statements.append("(psycopg, binary) " + " ".join(sql.split()))
        return sql, params

    # A batch goes to psycopg in one pipeline on PostgreSQL (one round trip), past the engine's events too.
    run_batch = getattr(runner, "run_batch", None)
    batches = [0]

    def counted_batch(conn: Any, batch: Any) -> Any:
        assert run_batch is not None
        batches[0] += 1
        if conn.dialect.name == "postgresql":
            statements.extend(f"(pipeline) {type(step.statement).__name__}" for step in batch.statements)
        return run_batch(conn, batch)

    for target, name, fn in listeners:
        sa.event.listen(target, name, fn)
    if to_psycopg is not None:
        fastpath._psycopg_sql = counted_psycopg_sql
    if run_batch is not None:
        runner.run_batch = counted_batch
    try:
        ours.turn(key, wire.user_text, budgeted)
    finally:
        if run_batch is not None:
            runner.run_batch = run_batch
        if to_psycopg is not None:
            fastpath._psycopg_sql = to_psycopg
        for target, name, fn in listeners:
            sa.event.remove(target, name, fn)
    return {
        "statements": len(statements),
        "batches": batches[0] if run_batch is not None else None,
        "scans_counted": to_psycopg is not None,
        **counts,
        "sql": [s[:160] for s in statements],
    }


def count_sqlite_transactions(ours: Convstore, key: str, wire: Wire, budgeted: bool) -> dict[str, int] | None:
    """SQLite: what the driver ran for one cold turn, nothing watching the engine's statements (the path a
    service takes): ``sqlite3``'s trace callback, set on each connection as the pool hands it out. Its
    explicit transactions (``BEGIN``) and the statements run outside one (each its own snapshot); an
    executemany is traced once a row."""
    engine = ours.store.engine
    if engine.dialect.name != "sqlite":
        return None
    traced: list[str] = []

    def on_checkout(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_trace_callback(traced.append)

    def on_checkin(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_trace_callback(None)

    sa.event.listen(engine.pool, "checkout", on_checkout)
    sa.event.listen(engine.pool, "checkin", on_checkin)
    try:
        ours.turn(key, wire.user_text, budgeted)
    finally:
        sa.event.remove(engine.pool, "checkout", on_checkout)
        sa.event.remove(engine.pool, "checkin", on_checkin)
    begins, outside, inside = 0, 0, False
    for statement in traced:
        word = statement.split(None, 1)[0].upper() if statement.strip() else ""
        if word == "BEGIN":
            begins, inside = begins + 1, True
        elif word in {"COMMIT", "ROLLBACK", "END"}:
            inside = False
        elif not inside:
            outside += 1
    return {"transactions": begins, "statements_outside": outside, "traced": len(traced)}


def _private(module: str, name: str) -> Any:
    """``convstore.store._engine.<module>`` if it still has ``name`` (the counts patch it), else None."""
    try:
        found = importlib.import_module(f"convstore.store._engine.{module}")
    except ImportError:
        return None
    return found if hasattr(found, name) else None


def count_round_trips(
    backend: Backend, exchanges: Sequence[list[dict[str, Any]]], wire: Wire, budgeted: bool
) -> dict[str, int] | None:
    """PostgreSQL: the round trips of one cold turn of convstore and of the floor, on the wire (a TCP proxy
    in front of the server; a second Store and floor connection through it, on the same schemas)."""
    if backend.schemas is None:
        return None
    out: dict[str, int] = {}
    with RoundTripProxy(backend.postgres_url) as proxy:
        base = proxy.url(backend.postgres_url)
        systems = [
            Convstore(
                common.PostgresSchema(base, backend.schemas["convstore"].schema).url,
                wire,
                search_index=backend.search_index,
            ),
            PostgresFloor(common.PostgresSchema(base, backend.schemas["floor"].schema), wire, create=False),
        ]
        systems[1].prefix = f"proxied-{uuid.uuid4().hex[:8]}"
        try:
            for system in systems:
                key = system.seed(exchanges)
                system.turn(key, wire.user_text, budgeted)  # the pool's connections opened
                proxy.reset()
                system.turn(key, wire.user_text, budgeted)
                out[system.name] = proxy.count
        finally:
            for system in systems:
                system.close()
    return out


def profile_turn(ours: Convstore, key: str, wire: Wire, repeats: int) -> str:
    """cProfile of ``repeats`` cold turns: the top 15 entries by cumulative time."""
    ours.turn(key, wire.user_text, False)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        ours.turn(key, wire.user_text, False)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(15)
    text = out.getvalue()
    return text[text.index("ncalls") :] if "ncalls" in text else text


def run_backend(backend: Backend, config: Config, wire: Wire, seed: int, *, budgeted: bool) -> dict[str, Any]:
    """The cold turn at each size (and with ``budgeted`` the budgeted turn) in ``wire``'s shape."""
    started = time.monotonic()
    shape = wire.shape
    results: dict[str, Any] = {"systems": [s.name for s in backend.systems], "cold": [], "budgeted": []}
    ours = backend.ours
    for turns, repeats in zip(config.turn_sizes, config.turn_repeats, strict=True):
        exchanges = shape.exchanges(2 * turns, seed)
        print(
            f"{backend.name}, {shape.key}: cold turn at {turns:,} turns ({2 * turns:,} steps)",
            file=sys.stderr,
            flush=True,
        )
        entry = measure(backend, backend.systems, exchanges, repeats, config.rounds, wire, budgeted=False)
        entry["turns"] = turns
        if turns in (config.profile_turns, min(config.turn_sizes), max(config.turn_sizes)):
            key = ours.seed(exchanges)
            backend.after_seed()
            entry["sql"] = count_statements(ours, key, wire, budgeted=False)
            entry["round_trips"] = count_round_trips(backend, exchanges, wire, budgeted=False)
            entry["driver"] = count_sqlite_transactions(ours, key, wire, budgeted=False)
            if turns == config.profile_turns and backend.name == "sqlite":
                results["profile"] = {
                    "turns": turns,
                    "repeats": config.profile_repeats,
                    "top15_cumulative": profile_turn(ours, key, wire, config.profile_repeats),
                }
        results["cold"].append(entry)
    if not budgeted:
        results["seconds"] = round(time.monotonic() - started, 1)
        return results
    budget_systems = [s for s in backend.systems if s.name != PEER]
    for steps in config.budget_sizes:
        exchanges = shape.exchanges(steps, seed)
        print(f"{backend.name}, {shape.key}: budgeted turn at {steps:,} steps", file=sys.stderr, flush=True)
        entry = measure(
            backend, budget_systems, exchanges, config.budget_repeats, config.rounds, wire, budgeted=True
        )
        if steps == max(config.budget_sizes):
            key = ours.seed(exchanges)
            backend.after_seed()
            entry["sql"] = count_statements(ours, key, wire, budgeted=True)
            entry["round_trips"] = count_round_trips(backend, exchanges, wire, budgeted=True)
            entry["driver"] = count_sqlite_transactions(ours, key, wire, budgeted=True)
        results["budgeted"].append(entry)
        del exchanges
    first, last = results["budgeted"][0], results["budgeted"][-1]
    results["budget_growth"] = {
        "from_steps": first["steps"],
        "to_steps": last["steps"],
        "ratio": last["convstore"]["median_ns"] / first["convstore"]["median_ns"],
    }
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


# Reports.


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _kib(value: float) -> str:
    return f"{value / 1024:,.0f}"


def targets_for(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 27's: convstore/floor at every size, openai-agents/convstore from 1,000 turns; the budget's
    growth with the history."""
    out: list[dict[str, Any]] = []
    for entry in results["cold"]:
        where = f"cold turn at {entry['turns']:,} turns"
        ratio = entry["convstore_over_floor"]
        out.append(
            {
                "target": f"{where}: convstore/floor <= {COLD_VS_FLOOR_TARGET:g}",
                "value": ratio,
                "met": ratio <= COLD_VS_FLOOR_TARGET,
            }
        )
        if entry["turns"] >= PEER_TARGET_FROM:
            speedup = 1 / entry[f"convstore_over_{PEER}"] if PEER in entry else None
            out.append(
                {
                    "target": f"{where}: {PEER}/convstore >= {COLD_VS_PEER_TARGET:g}",
                    "value": speedup,
                    "met": None if speedup is None else speedup >= COLD_VS_PEER_TARGET,
                }
            )
    growth = results.get("budget_growth")
    if growth is not None:
        out.append(
            {
                "target": f"budgeted turn: {growth['to_steps']:,} steps / {growth['from_steps']:,} steps "
                f"<= {BUDGET_GROWTH_TARGET:g}",
                "value": growth["ratio"],
                "met": growth["ratio"] <= BUDGET_GROWTH_TARGET,
            }
        )
    return out


def _rounds(entry: dict[str, Any], name: str) -> str:
    low, high = entry[f"convstore_over_{name}_rounds"]
    return fmt_ratio(low) if entry["rounds"] == 1 else f"{fmt_ratio(low)}-{fmt_ratio(high)}"


def _timing_table(title: str, entries: list[dict[str, Any]], names: list[str], first: str) -> TableData:
    headers = [first] if first == "steps" else [first, "steps"]
    for name in names:
        headers += [f"{name} median", f"{name} p90"]
    others = [n for n in names if n != "convstore"]
    headers += [f"convstore/{n}" for n in others]
    headers += [f"convstore/{n}, rounds" for n in others]
    headers += [f"request KiB ({'/'.join(names)})"]
    rows = []
    for entry in entries:
        row = [f"{entry[first]:,}"] if first == "steps" else [f"{entry[first]:,}", f"{entry['steps']:,}"]
        for name in names:
            row += [fmt_ns(entry[name]["median_ns"]), fmt_ns(entry[name]["p90_ns"])]
        row += [fmt_ratio(entry[f"convstore_over_{n}"]) for n in others]
        row += [_rounds(entry, n) for n in others]
        row.append("/".join(_kib(entry[name]["request_bytes"]) for name in names))
        rows.append(row)
    return TableData(title, headers, rows)


def tables_for(
    backend: str, shape: Shape, results: dict[str, Any], quick: bool, *, search_index: bool = True
) -> list[TableData]:
    names = results["systems"]
    where = f"{backend}, {shape.key}" + ("" if search_index else ", convstore without its search index")
    peer_note = (
        f"{PEER}: {'SQLiteSession' if backend == 'sqlite' else 'SQLAlchemySession (async psycopg)'}. "
        if PEER in names
        else f'{PEER} skipped: not installed (pip install -e ".[bench]"). '
    )
    repeats = ", ".join(f"{e['rounds']} x {e['repeats']} at {e['turns']:,} turns" for e in results["cold"])
    cold = _timing_table(
        f"{where}: cold stateless turn (open the conversation + build the body + POST + record)",
        results["cold"],
        names,
        "turns",
    )
    cold.note = (
        f"{shape.title}. Timed turns (rounds x turns): {repeats}, after a warm-up; medians and p90 of every "
        f"timed turn; 'rounds': the lowest and highest round's ratio of medians. {peer_note}"
        "convstore/X < 1: convstore is faster."
    )
    tables = [cold]
    if results["budgeted"]:
        names_b = [n for n in names if n != PEER]
        budgeted = _timing_table(
            f"{where}: cold turn with a 32k-token budget (TokenBudget(max_input_tokens=32000))",
            results["budgeted"],
            names_b,
            "steps",
        )
        growth = results["budget_growth"]
        budgeted.note = (
            f"convstore {growth['to_steps']:,} steps / {growth['from_steps']:,} steps: "
            f"{fmt_ratio(growth['ratio'])}. Floor window: payload bytes / 4 tokens, the earliest exchange "
            "start that fits (convstore's default 'stable' policy keeps a window between its low watermark "
            f"and the budget). {PEER} has no token budget: not measured here."
        )
        tables.append(budgeted)
    rows = [
        [
            t["target"],
            "n/a" if t["value"] is None else fmt_ratio(t["value"]),
            "skipped (peer not installed)" if t["met"] is None else _verdict(t["met"]),
        ]
        for t in targets_for(results)
    ]
    title = f"{where}: targets" + (" (quick sizes: indicative only)" if quick else "")
    tables.append(TableData(title, ["target", "value", "verdict"], rows))
    rows = []
    for label, entries in (("cold", results["cold"]), ("budgeted", results["budgeted"])):
        for entry in entries:
            sql = entry.get("sql")
            if sql is None:
                continue
            trips = entry.get("round_trips")
            driver = entry.get("driver")
            rows.append(
                [
                    f"{label}, {entry['steps']:,} steps",
                    str(sql["statements"]),
                    "n/a" if sql["batches"] is None else str(sql["batches"]),
                    *(str(sql[k]) for k in ("begin", "commit", "rollback", "checkout")),
                    "n/a" if trips is None else f"{trips['convstore']} / {trips['floor']}",
                    "n/a"
                    if driver is None
                    else f"{driver['transactions']} / {driver['statements_outside']}",
                ]
            )
    headers = ["turn", "SQL statements", "batches", "begin", "commit", "rollback", "connection checkouts"]
    tables.append(
        TableData(
            f"{where}: what one convstore cold turn runs",
            [*headers, "round trips, convstore / floor", "SQLite: transactions / statements alone"],
            rows,
            "The first columns are counted with statement listeners attached, which send every statement "
            "through SQLAlchemy (the path OpenTelemetry's instrumentation sees): statements "
            "(before_cursor_execute, BEGIN/COMMIT sent as SQL included, the binary scans and batches "
            "counted where convstore builds them), the engine's begin/commit/rollback events, the pool's "
            "checkouts. The last two columns count the path a service takes, nothing attached: round "
            "trips (PostgreSQL) on the wire by a TCP proxy, a client send after the server's reply (a "
            "write's BEGIN, statements and COMMIT go in one pipeline); on SQLite, sqlite3's trace "
            "callback: explicit transactions (BEGIN) and statements run outside one, each its own "
            "snapshot (a turn's reads).",
        )
    )
    return tables


def statements_markdown(backend: str, shape: Shape, results: dict[str, Any]) -> list[str]:
    out = []
    for label, entries in (("cold", results["cold"]), ("budgeted", results["budgeted"])):
        for entry in entries:
            sql = entry.get("sql")
            if sql is not None:
                out += [
                    f"#### {backend}, {shape.key}: the statements of one {label} turn at {entry['steps']:,} "
                    "steps",
                    "",
                    *(f"{i}. `{s}`" for i, s in enumerate(sql["sql"], 1)),
                    "",
                ]
    profile = results.get("profile")
    if profile:
        out += [
            f"#### {backend}, {shape.key}: cProfile of {profile['repeats']} convstore cold turns at "
            f"{profile['turns']:,} turns, top 15 by cumulative time",
            "",
            "```text",
            profile["top15_cumulative"].rstrip(),
            "```",
            "",
        ]
    return out


def write_reports(out: Path, stem: str, report: dict[str, Any], tables: list[TableData]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    shapes = [
        f"`{key}` ({SHAPES[key].title}): step JSON {w['mean_step_bytes']:,.0f} bytes on average, the new "
        f"user input {w['user_bytes']:,} bytes, the reply's model_output {w['reply_bytes']:,} bytes"
        for key, w in report["workload"]["shapes"].items()
    ]
    loads = [
        f"{name}: {r['load_average_start']} at its start, {r['load_average_end']} at its end"
        for name, r in report["backends"].items()
    ]
    lines = [
        *common.report_opening(
            "convstore cold stateless turn: convstore, openai-agents and the floor",
            report,
            more={"openai-agents": report["peer_version"] or "not installed"},
        ),
        f"History: `_common.conversation_exchanges` (seed {report['workload']['seed']}) in two shapes: "
        + "; ".join(shapes)
        + ". Each system POSTs through an httpx.MockTransport returning a canned reply; see the script's "
        "docstring for each system's turn.",
        "",
        "1-minute load average: " + "; ".join(loads) + ".",
        "",
        *(common.render_markdown(table) for table in tables),
    ]
    for backend, results in report["backends"].items():
        for key, shaped in results["shapes"].items():
            lines += statements_markdown(backend, SHAPES[key], shaped)
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return md_path, json_path


def workload(shape: Shape, seed: int) -> dict[str, Any]:
    wire = Wire(seed, shape)
    reply_step = json.loads(wire.interaction)["steps"][0]
    return {
        "mean_step_bytes": round(common.mean_step_bytes(shape.exchanges(2_000, seed)), 1),
        "user_bytes": len(wire.user_text.encode()),
        "reply_bytes": len(dumps_bytes(reply_step)),
        "system_instruction_bytes": len((shape.system_instruction or "").encode()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.store_parser(__doc__)
    parser.add_argument(
        "--shape", choices=(*SHAPES, "all"), default="all", help="payload shape (default all)"
    )
    parser.add_argument(
        "--no-search-index",
        dest="search_index",
        action="store_false",
        help="convstore without its full-text index (Store(search_index=False)): what the index costs a turn",
    )
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgres") if args.backend == "all" else (args.backend,)
    shapes = list(SHAPES.values()) if args.shape == "all" else [SHAPES[args.shape]]
    config = QUICK if args.quick else FULL
    with_peer = peer_available()
    if not with_peer:
        print(
            f'{PEER} is not installed: the peer is skipped (install it with pip install -e ".[bench]")',
            file=sys.stderr,
            flush=True,
        )
    report: dict[str, Any] = {
        **common.report_head("bench_turn.py", argv, args, backends),
        "peer_version": common.package_version("openai-agents") if with_peer else None,
        "config": asdict(config) | {"quick": args.quick, "search_index": args.search_index},
        "workload": {"seed": args.seed, "shapes": {s.key: workload(s, args.seed) for s in shapes}},
        "targets": {
            "cold_peer_over_convstore_min": COLD_VS_PEER_TARGET,
            "cold_peer_from_turns": PEER_TARGET_FROM,
            "cold_convstore_over_floor_max": COLD_VS_FLOOR_TARGET,
            "budget_growth_max": BUDGET_GROWTH_TARGET,
        },
        "backends": {},
    }
    started = time.monotonic()
    tables: list[TableData] = []
    for name in backends:
        backend_started = time.monotonic()
        results: dict[str, Any] = {"load_average_start": load_average(), "shapes": {}}
        print(f"{name}: 1-minute load average {results['load_average_start']}", file=sys.stderr, flush=True)
        for shape in shapes:
            wire = Wire(args.seed, shape)
            opened = open_backend(name, args.postgres_url, wire, with_peer, search_index=args.search_index)
            with opened as backend:
                shaped = run_backend(backend, config, wire, args.seed, budgeted=shape is UNICODE_1K)
            shaped["targets"] = targets_for(shaped)
            results["shapes"][shape.key] = shaped
            shape_tables = tables_for(name, shape, shaped, args.quick, search_index=args.search_index)
            tables += shape_tables
            for table in shape_tables:
                print(common.render_text(table))
            profile = shaped.get("profile")
            if profile:
                print(f"{name}, {shape.key}: cProfile of {profile['repeats']} turns at {profile['turns']:,}")
                print(profile["top15_cumulative"])
        results["load_average_end"] = load_average()
        results["seconds"] = round(time.monotonic() - backend_started, 1)
        report["backends"][name] = results
        print(
            f"{name}: done in {results['seconds']} s; 1-minute load average {results['load_average_start']} "
            f"at the start, {results['load_average_end']} at the end",
            file=sys.stderr,
            flush=True,
        )
    report["seconds"] = round(time.monotonic() - started, 1)
    stem = ("turn-quick" if args.quick else "turn") + ("" if args.search_index else "-no-index")
    md_path, json_path = write_reports(args.out, stem, report, tables)
    print(f"wrote {md_path} and {json_path} ({report['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
