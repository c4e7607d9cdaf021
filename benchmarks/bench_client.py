"""Stream reassembly throughput: convstore's SSE decoder + reassembler against a plain httpx read.

Run ``python benchmarks/bench_client.py [--mb 10] [--repeat 7]``. A synthetic stream of about ``--mb``
megabytes (a thought, then a long answer in ~100-character text deltas, then a function call whose
arguments arrive in many fragments) is served from memory through an ``httpx.MockTransport``. Three
measurements, each the median of ``--repeat`` runs (``time.perf_counter``):

- ``httpx read``: ``iter_bytes(65536)`` through the transport, bytes discarded: the floor of the I/O;
- ``split + json.loads``: the least any client must do with the events: split the bytes at blank lines and
  ``json.loads`` each event's data (no SSE rules, no reassembly): the floor of the work;
- ``decode+assemble``: ``EventDecoder`` + ``TurnAssembler`` over the same 64 KiB chunks, no HTTP;
- ``client.stream``: ``InteractionsClient.stream`` through the transport, events consumed, interaction built.

The ratios are ``client.stream`` time over each floor: an in-memory transport makes the read almost free, so
the first ratio mostly measures parsing; the second says what the SSE rules and the reassembly add to the
JSON decoding that any client pays.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import httpx

from convstore.client import EventDecoder, InteractionsClient, TurnAssembler

CHUNK = 65536


def event(payload: dict) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {payload['event_type']}\ndata: {data}\n\n".encode()


def synthetic_stream(megabytes: float) -> tuple[bytes, int]:
    """A well-formed stream of about ``megabytes`` MB; returns it and the answer's length in characters."""
    parts = [
        event(
            {"event_type": "interaction.created", "interaction": {"id": "v1_bench", "status": "in_progress"}}
        ),
        event({"event_type": "step.start", "index": 0, "step": {"type": "thought"}}),
        event(
            {
                "event_type": "step.delta",
                "index": 0,
                "delta": {"type": "thought_signature", "signature": "EqgB"},
            }
        ),
        event({"event_type": "step.stop", "index": 0}),
        event({"event_type": "step.start", "index": 1, "step": {"type": "model_output"}}),
    ]
    tail: list[bytes] = []
    arguments = json.dumps({"rows": [{"id": i, "name": f"row {i}"} for i in range(5000)]})
    tail.append(
        event(
            {
                "event_type": "step.start",
                "index": 2,
                "step": {"type": "function_call", "id": "fc_1", "name": "f", "arguments": {}},
            }
        )
    )
    for i in range(0, len(arguments), 200):
        tail.append(
            event(
                {
                    "event_type": "step.delta",
                    "index": 2,
                    "delta": {"type": "arguments_delta", "arguments": arguments[i : i + 200]},
                }
            )
        )
    tail.append(event({"event_type": "step.stop", "index": 2}))
    tail.append(
        event(
            {
                "event_type": "interaction.completed",
                "event_id": "evt_last",
                "interaction": {"id": "v1_bench", "status": "requires_action", "usage": {"total_tokens": 1}},
            }
        )
    )
    target = int(megabytes * 1_000_000) - sum(map(len, tail)) - 64
    size = sum(map(len, parts))
    piece = "The printing press spread across Europe; 100 °C — naïve café, 🙂 and more words here. "
    n = 0
    answer = 0
    while size < target:
        n += 1
        chunk = event(
            {
                "event_type": "step.delta",
                "event_id": f"evt_{n:08d}",
                "index": 1,
                "delta": {"type": "text", "text": piece},
            }
        )
        parts.append(chunk)
        size += len(chunk)
        answer += len(piece)
    parts.append(event({"event_type": "step.stop", "index": 1}))
    parts.extend(tail)
    parts.append(b"event: done\ndata: [DONE]\n\n")
    return b"".join(parts), answer


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10.0, help="stream size in megabytes")
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement")
    args = parser.parse_args()

    raw, answer_chars = synthetic_stream(args.mb)
    chunks = [raw[i : i + CHUNK] for i in range(0, len(raw), CHUNK)]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    transport = httpx.MockTransport(handler)
    http = httpx.Client(transport=transport)

    def httpx_read() -> int:
        total = 0
        with http.stream("POST", "https://bench/v1beta/interactions", content=b"{}") as response:
            for chunk in response.iter_bytes(CHUNK):
                total += len(chunk)
        return total

    def split_loads() -> int:
        count = 0
        for block in raw.split(b"\n\n"):
            data = block.partition(b"\ndata: ")[2]
            if data and data != b"[DONE]":
                json.loads(data)
            count += bool(data)
        return count

    def decode_assemble() -> object:
        decoder, turn = EventDecoder(), TurnAssembler()
        for chunk in chunks:
            for ev in decoder.feed(chunk):
                turn.feed(ev)
        return turn.finish_hop()

    client = InteractionsClient("bench-key", http_client=http)

    def client_stream() -> object:
        stream = client.stream({"model": "m", "store": False, "input": "x"})
        for _ in stream:
            pass
        return stream.interaction

    # Correctness first: every measured path sees the whole stream and builds the same answer.
    assert httpx_read() == len(raw)
    assert split_loads() == raw.count(b"\n\n")
    interaction = client_stream()
    assert interaction is not None
    assert len(interaction.text) == answer_chars, "reassembly lost text"
    assert interaction.steps[2]["arguments"]["rows"][-1]["id"] == 4999

    mb = len(raw) / 1_000_000
    events = raw.count(b"\n\n")
    results = {
        "httpx read": median_seconds(httpx_read, args.repeat),
        "split + json.loads": median_seconds(split_loads, args.repeat),
        "decode+assemble": median_seconds(decode_assemble, args.repeat),
        "client.stream": median_seconds(client_stream, args.repeat),
    }
    print(
        f"stream: {mb:.1f} MB, {events} events, {len(chunks)} chunks of {CHUNK // 1024} KiB; "
        f"median of {args.repeat} runs"
    )
    for name, seconds in results.items():
        rate = f"{mb / seconds:9.1f} MB/s  {events / seconds / 1000:8.1f} k events/s"
        print(f"  {name:<18} {seconds * 1000:9.1f} ms  {rate}")
    for floor in ("httpx read", "split + json.loads"):
        print(f"  ratio client.stream / {floor}: {results['client.stream'] / results[floor]:.1f}x")
    http.close()


if __name__ == "__main__":
    main()
