"""Inline media stored once per content hash: convstore against the floor, which stores every payload inline.

    python benchmarks/bench_media.py [--backend sqlite|postgres|all] [--quick] [--out benchmarks/results]

A step's large inline ``data`` strings (base64 images and the like, 1,024 characters or more) are kept apart
by convstore, one row of ``convstore_media`` per conversation and content hash; the node's payload keeps an
empty string in their place and reads put them back. The floor is ``bench_store.py``'s: the raw driver
(``sqlite3`` / ``psycopg`` 3) with hand-written SQL on convstore's schema, the same durability settings, one
transaction per exchange, and every payload stored whole. Each contender gets a fresh database of its own,
built by convstore's migrations (``Store(url)``): a SQLite file in a temporary directory, or a new PostgreSQL
schema (dropped at the end). Their operations are interleaved, alternating which goes first.

Workload (seeded): an image of 1,024 KiB of random bytes (256 KiB with ``--quick``), base64-encoded, so
its ``data`` string is 4/3 as long. A conversation of T turns (20; 8): each turn is one exchange, a
``user_input`` with a short text and, every 2nd turn from turn 0, the same image (``{"type": "image",
"data": ..., "mime_type": "image/png"}``), then a ``model_output`` with a short text. Then R replays (5; 2)
of the conversation from its start: convstore makes each an empty branch of the same conversation
(``conv.edit(first_node_id, branch=...)``) and appends the same user turns on it (the model's texts differ
per replay); the floor writes each replay as a conversation of its own in the same database, which stores
the same bytes inline as a replayed branch would.

Measured, per backend:

1. Database size after everything (SQLite file after ``wal_checkpoint(TRUNCATE)``; PostgreSQL the sum of
   ``pg_total_relation_size`` of the convstore_* tables), and the copies of the image each one holds (the
   floor: image steps appended; convstore: rows of ``convstore_media``).
2. Append latency, median and p95, of an exchange with the image and of one without, over every append of
   the build (the main conversation and the replays).
3. ``history()`` and ``history_json()`` of the main branch (T/2 images), cold (convstore's kept texts
   dropped before each run), median of several runs (15; 5) after a warm-up, against the floor's recursive
   CTE + ``json.loads`` / text splice. Checked once, untimed: convstore's ``history_json()`` of every branch
   equals, byte for byte, the floor's and the splice of the steps' compact JSON built here (both store
   ``json.dumps(step, ensure_ascii=False, separators=(",", ":"))`` texts: ``convstore.codec.dumps`` falls
   back to ASCII escapes only for a lone surrogate, which this workload has none of).

Where an image append's time goes (cProfile, SQLite): convstore pays, per image step, the ``json.dumps`` of
the step that the floor pays too, then a UTF-8 encode of the whole text (``codec.dumps``' lone-surrogate
check, made when the text is not pure ASCII, as here: the user's text has accents), a SHA-256 of the string
and the cut, and a lookup of the hash; it writes the string only the first time. The floor writes the whole
string every time (on SQLite, WAL pages, fsync and checkpoints; on PostgreSQL, the TOAST rows and their WAL).
An exchange without the image costs what any append costs (bench_store.py measures that).

PostgreSQL: ``CONVSTORE_TEST_POSTGRES_URL`` or ``--postgres-url`` (default the local ``test`` database).
Before the reads, the benchmark runs ANALYZE on both schemas.
"""

from __future__ import annotations

import base64
import gc
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _common as common
from _common import TableData, fmt_bytes, fmt_ns, fmt_ratio, median_ns, now_ns, percentile_ns
from bench_store import MODEL, PostgresFloor, SqliteFloor, dumps

import convstore

TABLES = (
    "convstore_conversations",
    "convstore_nodes",
    "convstore_branches",
    "convstore_exchanges",
    "convstore_media",
)


@dataclass(frozen=True)
class Config:
    image_kib: int  # raw bytes of the image, before base64
    turns: int  # exchanges of the conversation and of each replay
    image_every: int  # the image rides on turns 0, k, 2k, ...
    replays: int
    history_runs: int  # timed runs of each read (after one warm-up run)


FULL = Config(image_kib=1024, turns=20, image_every=2, replays=5, history_runs=15)
QUICK = Config(image_kib=256, turns=8, image_every=2, replays=2, history_runs=5)


# The workload.

_WORDS = (
    *("please", "look", "at", "this", "picture", "and", "tell", "me", "what", "you", "see", "the", "chart"),
    *("shows", "latency", "over", "time", "per", "branch", "compare", "it", "with", "the", "last", "one"),
    *("describe", "the", "colours", "axes", "labels", "trend", "outliers", "café", "Zürich", "東京", "Київ"),
)

Exchange = list[dict[str, Any]]


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def image_data(kib: int, seed: int) -> str:
    """The base64 text of ``kib`` KiB of seeded random bytes (which no compression shrinks)."""
    return base64.b64encode(random.Random(seed).randbytes(kib * 1024)).decode("ascii")


@dataclass
class Workload:
    image: str
    main: list[Exchange]
    replays: list[list[Exchange]]
    has_image: list[bool]  # per turn

    @property
    def lanes(self) -> list[list[Exchange]]:
        """The main conversation, then each replay."""
        return [self.main, *self.replays]


def make_workload(config: Config, seed: int) -> Workload:
    image = image_data(config.image_kib, seed)
    has_image = [turn % config.image_every == 0 for turn in range(config.turns)]
    rng = random.Random(seed)
    user_steps = []
    for turn, with_image in enumerate(has_image):
        content: list[dict[str, Any]] = [{"type": "text", "text": f"Turn {turn}. {_sentence(rng, 24)}"}]
        if with_image:
            content.append({"type": "image", "data": image, "mime_type": "image/png"})
        user_steps.append({"type": "user_input", "content": content})

    def lane(replay: int | None) -> list[Exchange]:
        model_rng = random.Random(f"{seed}:model:{replay}")
        return [
            [user, {"type": "model_output", "content": [{"type": "text", "text": _sentence(model_rng, 60)}]}]
            for user in user_steps
        ]

    return Workload(image, lane(None), [lane(r) for r in range(config.replays)], has_image)


def splice(exchanges: Sequence[Exchange]) -> str:
    """The history JSON of these exchanges as both contenders store it: their compact step texts, spliced."""
    return "[" + ",".join(dumps(step) for steps in exchanges for step in steps) + "]"


# The contenders. A lane is the main conversation (0) or a replay (1..R).


class ConvstoreSide:
    name = "convstore"

    def __init__(self, url: str, size_bytes: Callable[[], int]) -> None:
        self.store = convstore.Store(url)
        self.lanes: list[convstore.Conversation] = [self.store.create_conversation(model=MODEL)]
        self.first_node_id: str | None = None
        self._size_bytes = size_bytes

    def new_lane(self, replay: int) -> None:
        """Set-up, untimed: an empty branch to replay the conversation on, from the start."""
        assert self.first_node_id is not None
        self.lanes.append(self.lanes[0].edit(self.first_node_id, branch=f"replay{replay}"))

    def append(self, lane: int, steps: Exchange) -> None:
        nodes = self.lanes[lane].append(steps)
        if self.first_node_id is None:
            self.first_node_id = nodes[0].id

    def cold(self) -> None:
        common.cold(self.lanes[0])

    def history(self, lane: int = 0) -> list[dict[str, Any]]:
        return self.lanes[lane].history()

    def history_json(self, lane: int = 0) -> str:
        return self.lanes[lane].history_json()

    def media_counts(self) -> dict[str, int]:
        with self.store.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM convstore_media").scalar_one()
            nodes = conn.exec_driver_sql(
                "SELECT count(*) FROM convstore_nodes WHERE media IS NOT NULL"
            ).scalar_one()
        return {"media_rows": int(rows), "nodes_with_media": int(nodes)}

    def size_bytes(self) -> int:
        return self._size_bytes()

    def close(self) -> None:
        self.store.close()


class FloorSide:
    """The floor: one floor object (a conversation of its own, its ``main`` branch) per lane."""

    name = "floor"

    def __init__(
        self, make: Callable[[], SqliteFloor | PostgresFloor], size_bytes: Callable[[], int]
    ) -> None:
        self._make = make
        self.lanes: list[SqliteFloor | PostgresFloor] = [make()]
        self._size_bytes = size_bytes

    def new_lane(self, replay: int) -> None:
        """Set-up, untimed: another floor conversation (replay ``replay``), in the same database."""
        self.lanes.append(self._make())

    def append(self, lane: int, steps: Exchange) -> None:
        self.lanes[lane].append(steps)

    def cold(self) -> None:
        return None

    def history(self, lane: int = 0) -> list[dict[str, Any]]:
        return self.lanes[lane].history("main")

    def history_json(self, lane: int = 0) -> str:
        return self.lanes[lane].history_json("main")

    def size_bytes(self) -> int:
        return self._size_bytes()

    def close(self) -> None:
        for floor in self.lanes:
            floor.close()


Side = ConvstoreSide | FloorSide


@dataclass
class Backend:
    sides: list[Side]
    before_reads: Callable[[], None]
    table_sizes: dict[str, Callable[[], dict[str, int]]] = field(default_factory=dict)


@contextmanager
def open_backend(name: str, postgres_url: str) -> Iterator[Backend]:
    """A fresh database for each contender, both built by convstore's migrations; removed on exit."""
    with ExitStack() as stack:
        if name == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="convstore-bench-")))
            ours = common.SqliteFile(directory / "convstore.db")
            theirs = common.SqliteFile(directory / "floor.db")
            convstore.Store(theirs.url).close()
            sides: list[Side] = [
                ConvstoreSide(ours.url, ours.size_bytes),
                FloorSide(lambda: SqliteFloor(theirs.path, theirs.size_bytes), theirs.size_bytes),
            ]
            backend = Backend(sides, lambda: None)
        else:
            ours_pg = stack.enter_context(common.postgres_schema(postgres_url))
            theirs_pg = stack.enter_context(common.postgres_schema(postgres_url))
            convstore.Store(theirs_pg.url).close()

            def total(schema: common.PostgresSchema) -> Callable[[], int]:
                return lambda: sum(schema.table_sizes().values())

            def before_reads() -> None:
                for schema in (ours_pg, theirs_pg):
                    with schema.connect() as conn:
                        for table in TABLES:
                            conn.execute(f"ANALYZE {table}")

            sides = [
                ConvstoreSide(ours_pg.url, total(ours_pg)),
                FloorSide(lambda: PostgresFloor(theirs_pg, total(theirs_pg)), total(theirs_pg)),
            ]
            backend = Backend(
                sides,
                before_reads,
                {"convstore": ours_pg.table_sizes, "floor": theirs_pg.table_sizes},
            )
        for side in backend.sides:
            stack.callback(side.close)
        yield backend


# The run.


def _alternating(sides: Sequence[Side], index: int) -> Sequence[Side]:
    return sides if index % 2 == 0 else list(reversed(sides))


def _latency(samples: list[int]) -> dict[str, Any]:
    return {
        "appends": len(samples),
        "median_ns": median_ns(samples),
        "p95_ns": percentile_ns(samples, 95),
        "samples_ns": samples,
    }


def run_backend(backend: Backend, config: Config, workload: Workload) -> dict[str, Any]:
    started = time.monotonic()
    sides = backend.sides
    ours, floor = sides
    assert isinstance(ours, ConvstoreSide)
    assert isinstance(floor, FloorSide)
    kinds = ("image", "text")
    samples: dict[str, dict[str, list[int]]] = {s.name: {kind: [] for kind in kinds} for s in sides}
    first_append: dict[str, int] = {}
    image_steps = 0
    index = 0
    gc.collect()
    for lane, exchanges in enumerate(workload.lanes):
        if lane:
            for side in sides:
                side.new_lane(lane - 1)
        for turn, steps in enumerate(exchanges):
            kind = "image" if workload.has_image[turn] else "text"
            for side in _alternating(sides, index):
                start = now_ns()
                side.append(lane, steps)
                elapsed = now_ns() - start
                samples[side.name][kind].append(elapsed)
                first_append.setdefault(side.name, elapsed)
            image_steps += kind == "image"
            index += 1
    appends = {
        kind: {
            **{s.name: _latency(samples[s.name][kind]) for s in sides},
            "ratio": median_ns(samples["convstore"][kind]) / median_ns(samples["floor"][kind]),
        }
        for kind in kinds
    }

    # Untimed: every branch reads back byte for byte as the floor's and as the splice of its steps.
    for lane, exchanges in enumerate(workload.lanes):
        expected = splice(exchanges)
        for side in sides:
            if side.history_json(lane) != expected:
                raise AssertionError(f"{side.name}: history_json() of lane {lane} is not the steps' JSON")
    del expected

    backend.before_reads()
    history: list[dict[str, Any]] = []
    main_steps = sum(len(steps) for steps in workload.main)
    for method in ("history", "history_json"):
        outputs = [getattr(side, method)() for side in sides]  # warm-up, and the same answer from both
        if outputs[0] != outputs[1]:
            raise AssertionError(f"{method}() differs between convstore and the floor")
        del outputs
        timed: dict[str, list[int]] = {s.name: [] for s in sides}
        gc.collect()
        for run in range(config.history_runs):
            for side in _alternating(sides, run):
                side.cold()  # time the read, not the replay of kept texts
                call = getattr(side, method)
                start = now_ns()
                call()
                timed[side.name].append(now_ns() - start)
        history.append(
            {
                "method": method,
                "steps": main_steps,
                "images": sum(workload.has_image),
                "runs": config.history_runs,
                "convstore_median_ns": median_ns(timed["convstore"]),
                "floor_median_ns": median_ns(timed["floor"]),
                "ratio": median_ns(timed["convstore"]) / median_ns(timed["floor"]),
                "samples_ns": timed,
            }
        )

    counts = ours.media_counts()
    size: dict[str, Any] = {
        "convstore": {"bytes": ours.size_bytes(), "image_copies": counts["media_rows"], **counts},
        "floor": {"bytes": floor.size_bytes(), "image_copies": image_steps},
        "image_steps": image_steps,
    }
    for name, table_sizes in backend.table_sizes.items():
        size[name]["tables"] = table_sizes()
    size["ratio"] = size["convstore"]["bytes"] / size["floor"]["bytes"]
    return {
        "size": size,
        "append": appends,
        "first_append_ns": first_append,
        "history": history,
        "seconds": round(time.monotonic() - started, 1),
    }


# Reports.


def tables_for(backend: str, results: dict[str, Any], config: Config, workload: Workload) -> list[TableData]:
    size = results["size"]
    image_chars = len(workload.image)
    measure = (
        "file size after PRAGMA wal_checkpoint(TRUNCATE)"
        if backend == "sqlite"
        else "sum of pg_total_relation_size of the convstore_* tables"
    )
    tables = [
        TableData(
            f"{backend}: database size after the conversation and {config.replays} replays ({measure})",
            ["", "database", "image copies", "copies x image string"],
            [
                [
                    name,
                    fmt_bytes(size[name]["bytes"]),
                    str(size[name]["image_copies"]),
                    fmt_bytes(size[name]["image_copies"] * image_chars),
                ]
                for name in ("convstore", "floor")
            ],
            f"convstore/floor: {fmt_ratio(size['ratio'])} (the floor is {1 / size['ratio']:.1f}x larger); "
            f"image string {fmt_bytes(image_chars)}, {size['image_steps']} image steps appended; "
            f"convstore nodes referencing media: {size['convstore']['nodes_with_media']}",
        )
    ]
    append = results["append"]
    labels = {"image": "exchange with the image", "text": "exchange without"}
    tables.append(
        TableData(
            f"{backend}: append one exchange (2 steps) a transaction, every append of the build",
            ["", "N", "convstore median", "convstore p95", "floor median", "floor p95", "convstore/floor"],
            [
                [
                    labels[kind],
                    str(append[kind]["convstore"]["appends"]),
                    fmt_ns(append[kind]["convstore"]["median_ns"]),
                    fmt_ns(append[kind]["convstore"]["p95_ns"]),
                    fmt_ns(append[kind]["floor"]["median_ns"]),
                    fmt_ns(append[kind]["floor"]["p95_ns"]),
                    fmt_ratio(append[kind]["ratio"]),
                ]
                for kind in ("image", "text")
            ],
            "the first append of all (turn 0, with the image: convstore stores its media row then, later "
            "image appends find it held; first use of each statement too): "
            f"convstore {fmt_ns(results['first_append_ns']['convstore'])}, "
            f"floor {fmt_ns(results['first_append_ns']['floor'])}",
        )
    )
    tables.append(
        TableData(
            f"{backend}: cold history of the main branch (median of N runs after a warm-up)",
            ["", "steps", "images", "N", "convstore", "floor", "convstore/floor"],
            [
                [
                    f"{entry['method']}()",
                    str(entry["steps"]),
                    str(entry["images"]),
                    str(entry["runs"]),
                    fmt_ns(entry["convstore_median_ns"]),
                    fmt_ns(entry["floor_median_ns"]),
                    fmt_ratio(entry["ratio"]),
                ]
                for entry in results["history"]
            ],
            "floor: the recursive CTE via the raw driver; history() = one json.loads of the spliced "
            "payloads, history_json() = the spliced text; convstore puts the media strings back (one "
            "lookup) first",
        )
    )
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    args, backends = common.store_args(__doc__, argv)
    config = QUICK if args.quick else FULL
    workload = make_workload(config, args.seed)
    report: dict[str, Any] = {
        **common.report_head("bench_media.py", argv, args, backends),
        "config": asdict(config) | {"quick": args.quick},
        "workload": {
            "seed": args.seed,
            "image_raw_bytes": config.image_kib * 1024,
            "image_string_chars": len(workload.image),
            "turns": config.turns,
            "image_turns": sum(workload.has_image),
            "replays": config.replays,
            "exchanges_per_contender": len(workload.lanes) * config.turns,
        },
        "backends": {},
    }
    tables: list[TableData] = []
    for name in backends:
        print(
            f"{name}: {config.turns} turns, {sum(workload.has_image)} with a "
            f"{fmt_bytes(len(workload.image))} image, {config.replays} replays",
            file=sys.stderr,
            flush=True,
        )
        with open_backend(name, args.postgres_url) as backend:
            results = run_backend(backend, config, workload)
        report["backends"][name] = results
        backend_tables = tables_for(name, results, config, workload)
        tables += backend_tables
        print(f"{name}: done in {results['seconds']} s", file=sys.stderr, flush=True)
        for table in backend_tables:
            print(common.render_text(table))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "media-quick" if args.quick else "media"
    json_path, md_path = args.out / f"{stem}.json", args.out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    work = report["workload"]
    lines = [
        *common.report_opening(
            "convstore inline media stored once per content hash: convstore against the floor", report
        ),
        f"Workload (seed {work['seed']}): a {fmt_bytes(work['image_raw_bytes'])} image, base64 "
        f"({fmt_bytes(work['image_string_chars'])} of JSON string), on {work['image_turns']} of "
        f"{config.turns} turns; the conversation and {config.replays} replays from its start, "
        f"{work['exchanges_per_contender']} exchanges per contender. convstore replays as branches of one "
        "conversation and keeps each media string once; the floor (sqlite3 / psycopg and hand-written SQL on "
        "convstore's schema) writes each replay as a conversation of its own, every payload inline. "
        "Operations alternate between the two.",
        "",
        *(common.render_markdown(table) for table in tables),
    ]
    md_path.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
