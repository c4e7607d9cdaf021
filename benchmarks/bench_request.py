"""Request building: convstore's ``conv.request()`` against the floor, and a whole offline turn.

    python benchmarks/bench_request.py [--backend sqlite|postgres|all] [--quick] [--out benchmarks/results]

A stateless turn replays the whole branch: ``conv.request(input)`` reads the history (one recursive CTE),
decodes it and builds the create body (the conversation's settings, ``store: false``, ``input`` = history +
the new ``user_input``). Each backend gets a fresh database built by convstore's migrations (a SQLite file
in a temporary directory, or a new PostgreSQL schema, dropped at the end), holding one conversation written
through ``convstore.Store``: N steps (10,000; 2,000 with ``--quick``) appended one exchange at a time from
the shared seeded generator, plus a branch forked at step N/10 (1,000; 200) for contrast. The floor reads
that same conversation from the same database through ``sqlite3`` / ``psycopg`` 3 with hand-written SQL.

Measured at both depths, convstore and the floor alternating (which goes first alternates too):

1. ``request("next question")``: convstore's sync ``Store`` against the floor's copy of convstore's HISTORY
   recursive CTE + one ``json.loads`` of the spliced payloads + the same body dict (checked equal).
   ``history()`` the same way, to split ``request()`` into reading and building.
2. ``history_json()`` against the floor's query + text splice (checked equal).
3. Context: the body's size and the time ``json.dumps`` takes to encode it the way ``InteractionsClient``
   does (``ensure_ascii=False``, compact separators, ``.encode()``).
4. A whole offline turn, ``conv.send("q", client=InteractionsClient("k", http_client=httpx.Client(
   transport=emulator.transport())))``, each run on a fresh fork at depth N (so every run replays exactly N
   steps): its total time split, by timers wrapped around the instance's methods, into building the body
   (history read + build), the client's own work (JSON encoding, httpx, parsing the reply), the emulator
   (``Emulator.handle``: decoding, validating and pricing the request, building the reply) and recording the
   exchange. Then one run of each of ``request()`` and ``send()`` at depth N under cProfile.
5. Memory: what ``request()`` calls at depth N leave allocated once the caller has dropped the bodies
   (``tracemalloc``, after 1 call and after 17).

PostgreSQL: ``CONVSTORE_TEST_POSTGRES_URL`` or ``--postgres-url`` (default the local ``test`` database). The
tables get ``VACUUM ANALYZE`` after the writes, as autovacuum would have done by then in service.
"""

from __future__ import annotations

import cProfile
import gc
import json
import pstats
import sqlite3
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import _common as common
import httpx
from _common import TableData, fmt_bytes, fmt_ns, fmt_ratio, median_ns, now_ns

import convstore
from convstore.testing import Emulator

MODEL = "gemini-3-flash-preview"
QUESTION = "next question"
TABLES = ("convstore_conversations", "convstore_nodes", "convstore_branches", "convstore_exchanges")

# Settings a real app re-sends on every stateless turn; both sides put them in the body.
SETTINGS: dict[str, Any] = {
    "model": MODEL,
    "system_instruction": "You are a careful assistant. Answer briefly and cite the tool results you use.",
    "generation_config": {"temperature": 0.4, "max_output_tokens": 2048, "thinking_level": "low"},
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ],
}


@dataclass(frozen=True)
class Config:
    total_steps: int
    small_steps: int
    runs: tuple[int, int]  # timed runs of request/history/history_json at (small, total) steps
    send_runs: tuple[int, int]  # timed offline turns at (small, total) steps


FULL = Config(total_steps=10_000, small_steps=1_000, runs=(31, 11), send_runs=(15, 7))
QUICK = Config(total_steps=2_000, small_steps=200, runs=(7, 3), send_runs=(5, 3))


# The floor: convstore's HISTORY statement written by hand (same columns, same anchor, same recursion, same
# ORDER BY), run through the raw driver; then one json.loads of the spliced payloads and the body dict.


class Floor:
    """The hand-written reader of convstore's conversation, on its own raw connection."""

    def __init__(self, conn: Any, conversation_id: Any, sql: str, run: Callable[[str, tuple], list]) -> None:
        self.conn = conn
        self.conversation_id = conversation_id
        self.sql = sql
        self._run = run

    def rows(self, branch: str) -> list[tuple[Any, ...]]:
        cid = self.conversation_id
        return self._run(self.sql, (cid, branch, cid))

    def history_json(self, branch: str) -> str:
        rows = self.rows(branch)
        _head = rows[-1][:5]  # what convstore keeps: the head's id, depth, exchange id and token total
        return "[" + ",".join([row[5] for row in rows]) + "]"

    def history(self, branch: str) -> list[dict[str, Any]]:
        return json.loads(self.history_json(branch))  # type: ignore[no-any-return]

    def request(self, branch: str) -> dict[str, Any]:
        history = self.history(branch)
        history.append({"type": "user_input", "content": [{"type": "text", "text": QUESTION}]})
        return {**SETTINGS, "store": False, "input": history}

    def close(self) -> None:
        self.conn.close()


def sqlite_floor(path: Path, conversation_id: str) -> Floor:
    # convstore's connection settings; autocommit mode, so a one-statement read needs no BEGIN.
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("busy_timeout = 30000", "foreign_keys = ON", "journal_mode = WAL", "synchronous = FULL"):
        conn.execute(f"PRAGMA {pragma}")

    def run(sql: str, params: tuple) -> list:
        return conn.execute(sql, params).fetchall()

    # SQLAlchemy's Uuid stores 32 hex digits in SQLite.
    return Floor(conn, uuid.UUID(conversation_id).hex, common.FLOOR_HISTORY, run)


def postgres_floor(schema: common.PostgresSchema, conversation_id: str) -> Floor:
    conn = schema.connect(autocommit=True)

    def run(sql: str, params: tuple) -> list:
        with conn.cursor() as cur:
            return cur.execute(sql, params).fetchall()

    return Floor(conn, conversation_id, common.FLOOR_HISTORY.replace("?", "%s"), run)


# The database: one conversation of N steps written through convstore, a branch at N/10.


@dataclass
class Database:
    store: convstore.Store
    conv: convstore.Conversation
    node_ids: list[str]
    floor: Floor
    branches: dict[int, str]  # steps -> branch name


def build(store: convstore.Store, exchanges: Sequence[list[dict[str, Any]]]) -> tuple[Any, list[str]]:
    conv = store.create_conversation(**SETTINGS)
    node_ids: list[str] = []
    for exchange in exchanges:
        node_ids.extend(node.id for node in conv.append(exchange))
    return conv, node_ids


@contextmanager
def open_database(
    backend: str, postgres_url: str, config: Config, exchanges: Sequence[list[dict[str, Any]]]
) -> Iterator[Database]:
    with ExitStack() as stack:
        started = time.monotonic()
        if backend == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="convstore-bench-")))
            path = directory / "request.db"
            store = convstore.Store(f"sqlite:///{path}")
            stack.callback(store.close)
            conv, node_ids = build(store, exchanges)
            floor = sqlite_floor(path, conv.id)
        else:
            schema = stack.enter_context(common.postgres_schema(postgres_url))
            store = convstore.Store(schema.url)
            stack.callback(store.close)
            conv, node_ids = build(store, exchanges)
            with schema.connect() as conn:
                for table in TABLES:
                    conn.execute(f"VACUUM ANALYZE {table}")
            floor = postgres_floor(schema, conv.id)
        stack.callback(floor.close)
        small = f"history-{config.small_steps}"
        conv.fork(at=node_ids[config.small_steps - 1], branch=small)
        print(
            f"{backend}: built {len(node_ids):,} steps in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        yield Database(store, conv, node_ids, floor, {config.small_steps: small, len(node_ids): "main"})


# Measurements.


def _timed(call: Callable[[], Any]) -> int:
    start = now_ns()
    call()
    return now_ns() - start


def compare(db: Database, steps: int, runs: int) -> list[dict[str, Any]]:
    """request(), history() and history_json(): convstore against the floor, alternating.

    Each convstore call gets a fresh ``Conversation`` object, opened outside the timing: ``request()`` keeps
    the bodies it built on its object (see ``retained_memory``), and hundreds of megabytes of them kept alive
    would slow every later garbage collection in the process, the floor's included.
    """
    branch = db.branches[steps]

    def opened() -> convstore.Conversation:
        return db.store.conversation(db.conv.id, branch)

    pairs: dict[str, tuple[Callable[[Any], Any], Callable[[], Any]]] = {
        "request": (lambda conv: conv.request(QUESTION), lambda: db.floor.request(branch)),
        "history": (lambda conv: conv.history(), lambda: db.floor.history(branch)),
        "history_json": (lambda conv: conv.history_json(), lambda: db.floor.history_json(branch)),
    }
    results = []
    for method, (ours, theirs) in pairs.items():
        # Warm-up, and a check that both sides produce the same thing.
        mine, floors = ours(opened()), theirs()
        if mine != floors:
            raise AssertionError(f"{method}() differs between convstore and the floor at {steps} steps")
        if method == "request" and len(mine["input"]) != steps + 1:
            raise AssertionError(f"request() replayed {len(mine['input']) - 1} steps, expected {steps}")
        del mine, floors
        samples: dict[str, list[int]] = {"convstore": [], "floor": []}
        gc.collect()
        for index in range(runs):
            conv = opened()
            timed = [("convstore", partial(ours, conv)), ("floor", theirs)]
            for name, call in timed if index % 2 == 0 else reversed(timed):
                samples[name].append(_timed(call))
            del conv, timed
        ours_median, floor_median = median_ns(samples["convstore"]), median_ns(samples["floor"])
        results.append(
            {
                "method": method,
                "steps": steps,
                "runs": runs,
                "convstore_median_ns": ours_median,
                "floor_median_ns": floor_median,
                "ratio": ours_median / floor_median,
                "samples_ns": samples,
            }
        )
    return results


def encode_like_client(body: dict[str, Any]) -> bytes:
    """What ``InteractionsClient`` sends (``_http.build_create_request``)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def body_json(db: Database, steps: int, runs: int) -> dict[str, Any]:
    conv = db.store.conversation(db.conv.id, db.branches[steps])
    body = conv.request(QUESTION)
    size = len(encode_like_client(body))
    gc.collect()
    samples = [_timed(lambda: encode_like_client(body)) for _ in range(runs)]
    return {
        "steps": steps,
        "runs": runs,
        "bytes": size,
        "median_ns": median_ns(samples),
        "samples_ns": samples,
    }


def retained_memory(db: Database, steps: int, calls: int = 17) -> dict[str, Any]:
    """Memory still allocated after ``request()`` calls whose bodies the caller dropped (tracemalloc).

    ``request()`` remembers each body it builds (the 16 newest) so that ``record()`` can tell the history
    from the new steps, but only by a weak reference to its ``input`` list: a body the caller dropped
    (never recorded, or its call failed) should be freed. This measures that it is.
    """
    conv = db.store.conversation(db.conv.id, db.branches[steps])
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        after: dict[int, int] = {}
        for call in range(1, calls + 1):
            conv.request(QUESTION)  # the body is dropped at once
            if call in (1, calls):
                gc.collect()
                after[call] = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return {"steps": steps, "calls": calls, "after_1_bytes": after[1], f"after_{calls}_bytes": after[calls]}


class _Clock:
    """Accumulates the wall time spent in wrapped calls."""

    def __init__(self) -> None:
        self.ns = 0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = now_ns()
            try:
                return function(*args, **kwargs)
            finally:
                self.ns += now_ns() - start

        return timed


TURN_PARTS = ("build_body", "client", "emulator", "record")


def offline_turns(db: Database, steps: int, runs: int) -> dict[str, Any]:
    """``send()`` through the emulator, each run on a fresh fork at ``steps``; its time split in parts."""
    emulator = Emulator()
    samples: dict[str, list[int]] = {"total": [], **{part: [] for part in TURN_PARTS}}
    with httpx.Client(transport=emulator.transport()) as http:
        client = convstore.InteractionsClient("k", http_client=http)
        for index in range(runs + 1):  # the first run is a warm-up
            conv = db.conv.fork(at=db.node_ids[steps - 1], branch=f"send-{steps}-{index}")
            emulator.requests.clear()  # the emulator keeps every request it decoded
            clocks = {part: _Clock() for part in TURN_PARTS}
            # Instance attributes shadow the methods that send() and the transport look up on self.
            conv._body = clocks["build_body"].wrap(conv._body)  # type: ignore[method-assign]
            conv.record = clocks["record"].wrap(conv.record)  # type: ignore[method-assign]
            emulator.handle = clocks["emulator"].wrap(emulator.handle)  # type: ignore[method-assign]
            create = client.create
            client_clock = _Clock()
            client.create = client_clock.wrap(create)  # type: ignore[method-assign]
            gc.collect()
            total = _timed(lambda conv=conv, client=client: conv.send("q", client=client))
            del client.create, emulator.handle
            nodes = conv.nodes()
            if len(nodes) != steps + 3 or nodes[-1].type != "model_output":
                raise AssertionError(f"send() at {steps} steps left {len(nodes)} nodes")
            if index == 0:
                continue
            samples["total"].append(total)
            samples["build_body"].append(clocks["build_body"].ns)
            samples["client"].append(client_clock.ns - clocks["emulator"].ns)
            samples["emulator"].append(clocks["emulator"].ns)
            samples["record"].append(clocks["record"].ns)
    medians = {name: median_ns(values) for name, values in samples.items()}
    emulator_share = sum(samples["emulator"]) / sum(samples["total"])
    return {
        "steps": steps,
        "runs": runs,
        "median_ns": medians,
        "emulator_share": emulator_share,
        "convstore_share": 1 - emulator_share,
        "samples_ns": samples,
    }


def _where(filename: str, line: int, function: str) -> str:
    """A profile entry's name with a short path: ``sqlalchemy/engine/result.py:970(all)``."""
    if filename == "~":
        return function
    path = filename.replace("\\", "/")
    for marker in ("site-packages/", "/lib/python3.", str(common.REPO) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3.":
                path = path.split("/", 1)[1]
            break
    return f"{path}:{line}({function})"


def _profile_text(profile: cProfile.Profile, sort: str, limit: int) -> str:
    """The top of a profile: calls, own and cumulative time in ms, sorted by ``tottime`` or ``cumtime``."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    entries = [
        (nc, tottime, cumtime, _where(*key)) for key, (_cc, nc, tottime, cumtime, _callers) in stats.items()
    ]
    total = sum(entry[1] for entry in entries)
    entries.sort(key=lambda entry: entry[1 if sort == "tottime" else 2], reverse=True)
    lines = [
        f"{total * 1e3:.1f} ms own time in all, {sum(e[0] for e in entries):,} calls; top {limit} by {sort}:",
        f"{'calls':>8} {'own ms':>8} {'cum ms':>8}  function",
    ]
    lines += [
        f"{nc:>8} {own * 1e3:>8.1f} {cum * 1e3:>8.1f}  {name}" for nc, own, cum, name in entries[:limit]
    ]
    return "\n".join(lines)


def profiles(db: Database, steps: int, limit: int = 22) -> dict[str, str]:
    """One ``request()`` and one ``send()`` at ``steps`` under cProfile (after a warm-up run each)."""
    out: dict[str, str] = {}
    db.store.conversation(db.conv.id, db.branches[steps]).request(QUESTION)
    conv = db.store.conversation(db.conv.id, db.branches[steps])
    profile = cProfile.Profile()
    gc.collect()
    profile.runcall(conv.request, QUESTION)
    del conv
    out["request_tottime"] = _profile_text(profile, "tottime", limit)
    emulator = Emulator()
    with httpx.Client(transport=emulator.transport()) as http:
        client = convstore.InteractionsClient("k", http_client=http)
        db.conv.fork(at=db.node_ids[steps - 1], branch="profile-warm-up").send("q", client=client)
        conv = db.conv.fork(at=db.node_ids[steps - 1], branch="profile")
        emulator.requests.clear()
        profile = cProfile.Profile()
        gc.collect()
        profile.runcall(conv.send, "q", client=client)
    out["send_tottime"] = _profile_text(profile, "tottime", limit)
    out["send_cumtime"] = _profile_text(profile, "cumtime", limit)
    return out


def run_backend(db: Database, config: Config) -> dict[str, Any]:
    started = time.monotonic()
    sizes = (config.small_steps, len(db.node_ids))
    results: dict[str, Any] = {"compare": [], "body_json": [], "turn": []}
    for steps, runs in zip(sizes, config.runs, strict=True):
        results["compare"] += compare(db, steps, runs)
        results["body_json"].append(body_json(db, steps, runs))
    for steps, runs in zip(sizes, config.send_runs, strict=True):
        results["turn"].append(offline_turns(db, steps, runs))
    results["retained"] = retained_memory(db, sizes[-1])
    results["profile_steps"] = sizes[-1]
    results["profiles"] = profiles(db, sizes[-1])
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


# Reports.


def tables_for(backend: str, results: dict[str, Any]) -> list[TableData]:
    tables = [
        TableData(
            f"{backend}: request() and the history reads under it (median of N runs after a warm-up)",
            ["", "steps", "N", "convstore", "floor", "convstore/floor"],
            [
                [
                    f"{entry['method']}()",
                    f"{entry['steps']:,}",
                    str(entry["runs"]),
                    fmt_ns(entry["convstore_median_ns"]),
                    fmt_ns(entry["floor_median_ns"]),
                    fmt_ratio(entry["ratio"]),
                ]
                for entry in results["compare"]
            ],
            "floor: convstore's HISTORY recursive CTE hand-written, via the raw driver, on the same "
            "database; history() = one json.loads of the spliced payloads, history_json() = the spliced "
            "text, request() = history() + the new user_input + the settings dict (checked equal to "
            "convstore's)",
        )
    ]
    request = {e["steps"]: e["convstore_median_ns"] for e in results["compare"] if e["method"] == "request"}
    tables.append(
        TableData(
            f"{backend}: the body on the wire (context)",
            ["steps", "body JSON", "json.dumps + encode", "request() (convstore)", "request()/dumps"],
            [
                [
                    f"{entry['steps']:,}",
                    fmt_bytes(entry["bytes"]),
                    fmt_ns(entry["median_ns"]),
                    fmt_ns(request[entry["steps"]]),
                    fmt_ratio(request[entry["steps"]] / entry["median_ns"]),
                ]
                for entry in results["body_json"]
            ],
            "json.dumps(body, ensure_ascii=False, separators=(',', ':')).encode(): what InteractionsClient "
            "sends, timed alone",
        )
    )
    retained = results["retained"]
    calls = retained["calls"]
    tables.append(
        TableData(
            f"{backend}: memory held after request() calls whose bodies the caller dropped (tracemalloc)",
            ["steps", "body JSON", "after 1 call", f"after {calls} calls"],
            [
                [
                    f"{retained['steps']:,}",
                    fmt_bytes(
                        next(e["bytes"] for e in results["body_json"] if e["steps"] == retained["steps"])
                    ),
                    fmt_bytes(retained["after_1_bytes"]),
                    fmt_bytes(retained[f"after_{calls}_bytes"]),
                ]
            ],
            "request() remembers the 16 newest bodies it built (for record()), by weak reference only",
        )
    )
    rows = []
    for turn in results["turn"]:
        medians = turn["median_ns"]
        rows.append(
            [
                f"{turn['steps']:,}",
                str(turn["runs"]),
                fmt_ns(medians["total"]),
                fmt_ns(medians["build_body"]),
                fmt_ns(medians["client"]),
                fmt_ns(medians["emulator"]),
                fmt_ns(medians["record"]),
                f"{turn['convstore_share'] * 100:.0f}%",
                f"{turn['emulator_share'] * 100:.0f}%",
            ]
        )
    tables.append(
        TableData(
            f"{backend}: one offline turn, conv.send('q', client=...) through the emulator's httpx transport",
            [
                "steps",
                "N",
                "send() total",
                "build body",
                "client",
                "emulator",
                "record",
                "convstore share",
                "emulator share",
            ],
            rows,
            "medians of N runs, each on a fresh fork at that depth; build body = history read + body dict; "
            "client = InteractionsClient.create minus the emulator (JSON encode, httpx, reply parsing); "
            "emulator = Emulator.handle; record = writing the exchange (3 steps + exchange row); shares are "
            "of the summed totals, convstore = everything but the emulator",
        )
    )
    return tables


def profile_markdown(backend: str, results: dict[str, Any]) -> str:
    steps = results["profile_steps"]
    titles = {
        "request_tottime": f"conv.request() at {steps:,} steps, by own time",
        "send_tottime": f"conv.send() through the emulator at {steps:,} steps, by own time",
        "send_cumtime": f"conv.send() through the emulator at {steps:,} steps, by cumulative time",
    }
    out = [f"### {backend}: profiles (cProfile, one run after a warm-up; cProfile inflates call-heavy code)"]
    for key, title in titles.items():
        out += ["", f"{title}:", "", "```", results["profiles"][key], "```"]
    return "\n".join(out) + "\n"


def write_reports(
    out: Path, stem: str, report: dict[str, Any], tables: list[tuple[str, list[TableData]]]
) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    workload = report["workload"]
    lines = [
        *common.report_opening(
            "convstore request benchmarks: the stateless request body, against the raw driver (the floor)",
            report,
        ),
        f"Workload: one conversation of {workload['steps']:,} steps in {workload['exchanges']:,} exchanges "
        f"(seed {workload['seed']}), step JSON {workload['mean_step_bytes']:,.0f} bytes on average, written "
        "through convstore.Store; a branch forked at "
        f"{workload['small_steps']:,} steps for contrast. The conversation has a model, a system "
        "instruction, a generation config and one tool, re-sent on every turn. The floor reads the same "
        "database with sqlite3 / psycopg and hand-written SQL. Operations alternate between the two.",
        "",
    ]
    for backend, backend_tables in tables:
        lines += [common.render_markdown(table) for table in backend_tables]
        lines.append(profile_markdown(backend, report["backends"][backend]))
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return md_path, json_path


def main(argv: Sequence[str] | None = None) -> int:
    args, backends = common.store_args(__doc__, argv)
    config = QUICK if args.quick else FULL

    exchanges = common.conversation_exchanges(config.total_steps, seed=args.seed)
    report: dict[str, Any] = {
        **common.report_head("bench_request.py", argv, args, backends, httpx=common.package_version("httpx")),
        "config": asdict(config) | {"quick": args.quick},
        "workload": {
            "seed": args.seed,
            "steps": config.total_steps,
            "small_steps": config.small_steps,
            "exchanges": len(exchanges),
            "mean_step_bytes": round(common.mean_step_bytes(exchanges), 1),
            "settings": SETTINGS,
        },
        "backends": {},
    }
    tables: list[tuple[str, list[TableData]]] = []
    for name in backends:
        print(
            f"{name}: {config.total_steps:,} steps, {len(exchanges):,} exchanges", file=sys.stderr, flush=True
        )
        with open_database(name, args.postgres_url, config, exchanges) as db:
            results = run_backend(db, config)
        report["backends"][name] = results
        backend_tables = tables_for(name, results)
        tables.append((name, backend_tables))
        print(f"{name}: done in {results['seconds']} s", file=sys.stderr, flush=True)
        for table in backend_tables:
            print(common.render_text(table))
        print(f"{name}: send() at {results['profile_steps']:,} steps, by own time:")
        print(results["profiles"]["send_tottime"] + "\n")
    md_path, json_path = write_reports(args.out, "request-quick" if args.quick else "request", report, tables)
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
