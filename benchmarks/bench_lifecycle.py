"""What keeping uploaded files alive costs a turn: convstore's request building with and without it.

    python benchmarks/bench_lifecycle.py [--backend sqlite|postgres|all] [--quick] [--out benchmarks/results]

A conversation of T turns (20; 8 with ``--quick``), each a ``user_input`` with a short text and one uploaded
file (``conv.upload`` of K KiB of seeded random bytes: 64; 16) named by its Files API uri, then a
``model_output``: 20 media items by uri, all recorded with their bytes and expiry. Uploads go to convstore's
emulator (``convstore.testing.Emulator``, through its httpx transport), whose clock and convstore's
``Lifecycle`` clock are one ``ManualClock``.

Measured, per backend, the request building of a stateless turn as ``conv.send`` does it (the spliced body
and its bytes, ``body_bytes``: everything before the HTTP call), median of N runs (40; 10) after a warm-up,
the two contenders alternating which goes first:

1. **with**: convstore as it is: the history's nodes that name a Files API uri (the ``files`` column written
   with them) are checked against the uris' recorded expiry; none has expired, so nothing is uploaded and
   the texts go out unchanged.
2. **without**: the same conversation and the same call with the adaptation switched off (``adapt`` replaced
   by the identity for these runs): what a turn cost before this feature.

Each is timed warm (the conversation object keeps its branch's texts and the uris' expiry from the last
turn) and cold (a fresh ``store.conversation(id)`` for every run: the history read from the database, and,
with the feature, the earliest recorded expiry read by the history scan itself, on the rows that name
files). The check alone is timed too (1,000 calls, warm), since on a shared machine the two medians move
by more than it costs. Then the clock moves 49 hours and one turn must
upload all T files again (through the emulator: its time is in the figure); the turn after it, which sends
the fresh uris, is timed warm like the first.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _common as common
import httpx
from _common import TableData, fmt_ns, fmt_ratio, median_ns, now_ns

import convstore
from convstore._wire import body_bytes
from convstore.conversation._sync import lifecycle as _lifecycle_sync
from convstore.testing import Emulator, ManualClock

MODEL = "gemini-3-flash-preview"


@dataclass(frozen=True)
class Config:
    turns: int  # exchanges, each with one uploaded file
    file_kib: int
    runs: int


FULL = Config(turns=20, file_kib=64, runs=40)
QUICK = Config(turns=8, file_kib=16, runs=10)


@contextmanager
def database(name: str, postgres_url: str) -> Iterator[str]:
    with ExitStack() as stack:
        if name == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="convstore-bench-")))
            yield common.SqliteFile(directory / "lifecycle.db").url
        else:
            yield stack.enter_context(common.postgres_schema(postgres_url)).url


def _turn(conv: Any, client: Any) -> bytes:
    """The request of a stateless turn, built as ``conv.send`` builds it (no HTTP call)."""
    body = conv._body("And this one?", False, {}, None, spliced=True, client=client, media="upload")
    return body_bytes(body)


@contextmanager
def _without_feature() -> Iterator[None]:
    original = _lifecycle_sync.adapt

    def identity(conversation: Any, texts: Sequence[bytes], *args: Any, **kwargs: Any) -> list[bytes]:
        return list(texts)

    _lifecycle_sync.adapt = identity  # type: ignore[assignment]
    try:
        yield
    finally:
        _lifecycle_sync.adapt = original


def _timed(run: Callable[[], bytes]) -> int:
    start = now_ns()
    run()
    return now_ns() - start


def run_backend(url: str, config: Config, seed: int) -> dict[str, Any]:
    clock = ManualClock()
    emulator = Emulator(clock=clock)
    rng = random.Random(seed)
    with (
        httpx.Client(transport=emulator.transport()) as http,
        convstore.Store(url, lifecycle=convstore.Lifecycle(clock=clock)) as store,
    ):
        client = convstore.InteractionsClient("bench-key", http_client=http)
        conv = store.create_conversation(model=MODEL)
        for turn in range(config.turns):
            item = conv.upload(rng.randbytes(config.file_kib * 1024), mime_type="image/png", client=client)
            conv.append(
                [
                    {
                        "type": "user_input",
                        "content": [{"type": "text", "text": f"Turn {turn}: what is it?"}, item],
                    },
                    {
                        "type": "model_output",
                        "content": [{"type": "text", "text": f"A picture, number {turn}."}],
                    },
                ]
            )
        samples: dict[str, list[int]] = {
            key: [] for key in ("with warm", "without warm", "with cold", "without cold")
        }

        def warm_with() -> bytes:
            return _turn(conv, client)

        def cold(conv_id: str = conv.id) -> Callable[[], bytes]:
            fresh = store.conversation(conv_id)
            return lambda: _turn(fresh, client)

        expected = _turn(conv, client)
        with _without_feature():
            assert _turn(conv, client) == expected  # nothing expired: the same bytes either way
        for run in range(config.runs + 1):
            order = ["with", "without"] if run % 2 == 0 else ["without", "with"]
            for side in order:
                for mode in ("warm", "cold"):
                    call = warm_with if mode == "warm" else cold()
                    if side == "with":
                        elapsed = _timed(call)
                    else:
                        with _without_feature():
                            elapsed = _timed(call)
                    if run:  # the first run warms up
                        samples[f"{side} {mode}"].append(elapsed)
        texts, replay = conv._history_texts(), conv._replay
        start = now_ns()
        for _ in range(1000):  # the check alone, as a turn makes it: the part "with" adds
            _lifecycle_sync.adapt(
                conv, texts, replay.files, client=client, policy="upload", fresh_until=replay.files_fresh
            )
        check_ns = (now_ns() - start) / 1000
        clock.advance(hours=49)
        uploads = emulator.files.uploads
        reupload = _timed(warm_with)
        assert emulator.files.uploads == uploads + config.turns
        after = [_timed(warm_with) for _ in range(config.runs)]
    medians = {key: median_ns(values) for key, values in samples.items()}
    return {
        "median_ns": medians,
        "ratio_warm": medians["with warm"] / medians["without warm"],
        "ratio_cold": medians["with cold"] / medians["without cold"],
        "check_alone_ns": check_ns,
        "reupload_turn_ns": reupload,
        "after_reupload_warm_ns": median_ns(after),
        "request_bytes": len(expected),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args, backends = common.store_args(__doc__, argv)
    config = QUICK if args.quick else FULL
    report: dict[str, Any] = {
        **common.report_head("bench_lifecycle.py", argv, args, backends),
        "config": asdict(config) | {"quick": args.quick},
        "backends": {},
    }
    rows = []
    for name in backends:
        print(f"{name}: {config.turns} turns, a {config.file_kib} KiB file each", file=sys.stderr, flush=True)
        with database(name, args.postgres_url) as url:
            results = run_backend(url, config, args.seed)
        report["backends"][name] = results
        m = results["median_ns"]
        rows.append(
            [
                name,
                fmt_ns(m["without warm"]),
                fmt_ns(m["with warm"]),
                fmt_ratio(results["ratio_warm"]),
                fmt_ns(m["without cold"]),
                fmt_ns(m["with cold"]),
                fmt_ratio(results["ratio_cold"]),
                f"{results['check_alone_ns'] / 1000:.1f} µs",
                fmt_ns(results["reupload_turn_ns"]),
                fmt_ns(results["after_reupload_warm_ns"]),
            ]
        )
    table = TableData(
        f"A stateless turn's request with {config.turns} uploaded files by uri (median of {config.runs})",
        [
            "backend",
            "without, warm",
            "with, warm",
            "ratio",
            "without, cold",
            "with, cold",
            "ratio",
            "the check alone",
            f"re-upload of {config.turns}",
            "after it, warm",
        ],
        rows,
        "with: expiry checked, nothing due (target <= 1.1x); the check alone: what a warm turn spends on it "
        "(1,000 calls); re-upload: the turn after the clock moved 49 hours, every file uploaded again "
        "through the emulator's transport.",
    )
    print(common.render_text(table))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "lifecycle-quick" if args.quick else "lifecycle"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    lines = [
        *common.report_opening("convstore: the cost of keeping uploaded files alive", report),
        common.render_markdown(table),
    ]
    (args.out / f"{stem}.md").write_text("\n".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
