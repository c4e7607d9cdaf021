"""What encryption at rest costs: the same store with a keyring against one without, on the same workload.

    python benchmarks/bench_crypto.py [--backend sqlite|postgres|all] [--quick] [--out benchmarks/results]

Two contenders, each on a fresh database built by convstore's migrations (a SQLite file in a temporary
directory, or a new PostgreSQL schema, dropped at the end): ``Store(url)`` and ``Store(url, keyring=...)``
with the default key store (the same database). Both get the same steps from the same seeded generator
(``_common.conversation_exchanges``, about 1 KB of JSON a step) and their operations are interleaved,
alternating which goes first, so drift in the machine affects both alike.

Workloads:

1. Append one exchange (2-4 steps) at a time up to N steps (4,000; 1,000 with ``--quick``): per-append
   latency, median and p95, and encrypted/plain. Sealing happens per step (AES-256-GCM + base64) on top of
   the same insert and compare-and-swap.
2. ``history()`` and ``history_json()`` of the whole branch, median of several runs after a warm-up: the
   encrypted store opens each payload before splicing, the plain one splices the stored text.
3. Opening a conversation (``store.conversation(id)``): the encrypted store also reads and unwraps the data
   key (in the same transaction) and opens the settings.

PostgreSQL: ``CONVSTORE_TEST_POSTGRES_URL`` or ``--postgres-url`` (default the local ``test`` database).
Before the reads, the benchmark runs ANALYZE on both schemas.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _common as common
from _common import TableData, fmt_ns, fmt_ratio, median_ns, now_ns, percentile_ns

import convstore

MODEL = "gemini-3-flash-preview"
TABLES = ("convstore_conversations", "convstore_nodes", "convstore_branches", "convstore_keys")
SETTINGS = {
    "model": MODEL,
    "system_instruction": "You are a careful assistant. Answer briefly and cite what you use.",
    "generation_config": {"temperature": 0.4, "thinking_level": "low"},
    "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
}


@dataclass(frozen=True)
class Config:
    total_steps: int
    history_runs: int
    open_runs: int


FULL = Config(total_steps=4_000, history_runs=15, open_runs=101)
QUICK = Config(total_steps=1_000, history_runs=7, open_runs=31)


class Contender:
    def __init__(self, name: str, url: str, keyring: convstore.Keyring | None) -> None:
        self.name = name
        self.store = convstore.Store(url, keyring=keyring)
        self.conv = self.store.create_conversation(**SETTINGS)

    def append(self, steps: list[dict[str, Any]]) -> None:
        self.conv.append(steps)

    def history(self) -> list[dict[str, Any]]:
        return self.conv.history()

    def history_json(self) -> str:
        return self.conv.history_json()

    def cold(self) -> None:
        common.cold(self.conv)

    def open(self) -> None:
        self.store.conversation(self.conv.id)

    def close(self) -> None:
        self.store.close()


@dataclass
class Backend:
    contenders: list[Contender]
    before_reads: Callable[[], None]


@contextmanager
def open_backend(name: str, postgres_url: str) -> Iterator[Backend]:
    keyring = convstore.Keyring({"bench": os.urandom(32)}, active="bench")
    with ExitStack() as stack:
        if name == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="convstore-bench-")))
            urls = [f"sqlite:///{directory / 'plain.db'}", f"sqlite:///{directory / 'encrypted.db'}"]

            def before_reads() -> None:
                return None

        else:
            schemas = [stack.enter_context(common.postgres_schema(postgres_url)) for _ in range(2)]
            urls = [schema.url for schema in schemas]

            def before_reads() -> None:
                for schema in schemas:
                    with schema.connect() as conn:
                        for table in TABLES:
                            conn.execute(f"ANALYZE {table}")

        contenders = [Contender("plain", urls[0], None), Contender("encrypted", urls[1], keyring)]
        try:
            yield Backend(contenders, before_reads)
        finally:
            for contender in contenders:
                contender.close()


def _timed(function: Callable[[], Any]) -> int:
    start = now_ns()
    function()
    return now_ns() - start


def _alternating(contenders: Sequence[Contender], index: int) -> Sequence[Contender]:
    return contenders if index % 2 == 0 else list(reversed(contenders))


def run_backend(backend: Backend, config: Config, exchanges: list[list[dict[str, Any]]]) -> dict[str, Any]:
    started = now_ns()
    contenders = backend.contenders
    samples: dict[str, dict[str, list[int]]] = {c.name: {} for c in contenders}
    gc.collect()
    for index, steps in enumerate(exchanges):
        for contender in _alternating(contenders, index):
            samples[contender.name].setdefault("append", []).append(
                _timed(lambda c=contender, s=steps: c.append(s))
            )
    backend.before_reads()
    for method, runs in (("history", config.history_runs), ("history_json", config.history_runs)):
        for contender in contenders:
            getattr(contender, method)()  # warm-up
        for index in range(runs):
            for contender in _alternating(contenders, index):
                contender.cold()  # time the read, not the replay of kept texts
                samples[contender.name].setdefault(method, []).append(_timed(getattr(contender, method)))
    for index in range(config.open_runs):
        for contender in _alternating(contenders, index):
            samples[contender.name].setdefault("open", []).append(_timed(contender.open))
    plain, encrypted = (contenders[0], contenders[1])
    assert plain.history() == encrypted.history(), "the two stores disagree"
    results: dict[str, Any] = {"operations": {}}
    for operation in ("append", "history", "history_json", "open"):
        entry: dict[str, Any] = {"runs": len(samples["plain"][operation])}
        for name in ("plain", "encrypted"):
            entry[f"{name}_median_ns"] = median_ns(samples[name][operation])
            entry[f"{name}_p95_ns"] = percentile_ns(samples[name][operation], 95)
        entry["ratio"] = round(entry["encrypted_median_ns"] / entry["plain_median_ns"], 3)
        results["operations"][operation] = entry
    results["seconds"] = round((now_ns() - started) / 1e9, 1)
    return results


_LABELS = {
    "append": "append one exchange (2-4 steps)",
    "history": "history(), whole branch",
    "history_json": "history_json(), whole branch",
    "open": "store.conversation(id)",
}


def table_for(backend: str, results: dict[str, Any], steps: int) -> TableData:
    rows = [
        [
            _LABELS[operation],
            str(entry["runs"]),
            fmt_ns(entry["plain_median_ns"]),
            fmt_ns(entry["encrypted_median_ns"]),
            fmt_ns(entry["plain_p95_ns"]),
            fmt_ns(entry["encrypted_p95_ns"]),
            fmt_ratio(entry["ratio"]),
        ]
        for operation, entry in results["operations"].items()
    ]
    return TableData(
        f"{backend}: encrypted (keyring, default key store) against plain, {steps:,} steps",
        ["", "N", "plain median", "encrypted median", "plain p95", "encrypted p95", "encrypted/plain"],
        rows,
        "encrypted: AES-256-GCM per step payload and setting, a data key per conversation; history opens "
        "every payload before splicing",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args, backends = common.store_args(__doc__, argv)
    config = QUICK if args.quick else FULL
    exchanges = common.conversation_exchanges(config.total_steps, seed=args.seed)
    report: dict[str, Any] = {
        **common.report_head("bench_crypto.py", argv, args, backends),
        "config": asdict(config) | {"quick": args.quick},
        "workload": {
            "seed": args.seed,
            "steps": config.total_steps,
            "exchanges": len(exchanges),
            "mean_step_bytes": round(common.mean_step_bytes(exchanges), 1),
        },
        "backends": {},
    }
    tables: list[TableData] = []
    for name in backends:
        print(
            f"{name}: {config.total_steps:,} steps, {len(exchanges):,} exchanges", file=sys.stderr, flush=True
        )
        with open_backend(name, args.postgres_url) as backend:
            results = run_backend(backend, config, exchanges)
        report["backends"][name] = results
        table = table_for(name, results, config.total_steps)
        tables.append(table)
        print(f"{name}: done in {results['seconds']} s", file=sys.stderr, flush=True)
        print(common.render_text(table))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "crypto-quick" if args.quick else "crypto"
    json_path, md_path = args.out / f"{stem}.json", args.out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    lines = [
        *common.report_opening("convstore encryption at rest: encrypted store against plain", report),
        *(common.render_markdown(table) for table in tables),
    ]
    md_path.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
