"""A writer killed with SIGKILL at random moments: the store opens, ``check()`` is clean, and everything the
writer saw succeed is there.

The writer appends exchanges (1 to 30 steps, some with an inline image) to the branches of one
conversation, forks, creates scratch conversations and deletes them, in a random order, forever. After each
call returns it writes one line to a log and flushes it (the kernel keeps what was written when the process
dies). The test kills it after a random delay, then checks the store against the log (all of it, so a later
crash that broke earlier data would show). ``CONVSTORE_CRASH_KILLS`` sets the number of kills per backend
(default 10; 200 in the ``slow`` variant).
"""

from __future__ import annotations

import base64
import os
import random
import signal
import time
from pathlib import Path

import pytest
from conftest import model, user
from test_stress import process_context

import convstore
from convstore import ConflictError, ConversationNotFoundError


def kills(slow: bool) -> int:
    return int(os.environ.get("CONVSTORE_CRASH_KILLS", "200" if slow else "10"))


# Inline media above the size kept apart (``_media``): a kill may land between a media row and its nodes.
IMAGES = [base64.b64encode(bytes([n]) * 3_000).decode("ascii") for n in range(3)]


def with_image(text: str, data: str) -> dict:
    content = [{"type": "text", "text": text}, {"type": "image", "data": data, "mime_type": "image/png"}]
    return {"type": "user_input", "content": content}


def _writer(url: str, target: str, log_path: str, seed: int) -> None:
    rng = random.Random(seed)
    with convstore.Store(url) as store, open(log_path, "a", encoding="utf-8") as log:

        def note(*fields: str) -> None:
            log.write(" ".join(fields) + "\n")
            log.flush()

        note("ready")
        counter = 0
        while True:
            counter += 1
            roll = rng.random()
            if roll < 0.6:
                branches = store.conversation(target).branches()
                conv = store.conversation(target, rng.choice(branches).name)
                first = with_image(f"{seed}-{counter}", rng.choice(IMAGES)) if rng.random() < 0.3 else None
                steps = [first or user(f"{seed}-{counter}")]
                steps += [model(f"part {i}") for i in range(rng.randrange(30))]
                try:
                    nodes = conv.append(steps)
                except ConflictError:
                    continue
                note("append", target, nodes[0].exchange_id)
            elif roll < 0.75:
                conv = store.conversation(target)
                fork = conv.fork(branch=f"k{seed}-{counter}")
                note("fork", target, fork.branch)
            elif roll < 0.88:
                scratch = store.create_conversation()
                note("create", scratch.id)
                for _ in range(2):
                    nodes = scratch.append([with_image("scratch", rng.choice(IMAGES)), model("reply")])
                    note("append", scratch.id, nodes[0].exchange_id)
            else:
                others = [info.id for info in store.conversations(limit=50).items if info.id != target]
                if not others:
                    continue
                victim = rng.choice(others)
                note("try-delete", victim)
                try:
                    store.delete_conversation(victim)
                except ConversationNotFoundError:
                    continue
                note("delete", victim)


def _logged(log_path: Path) -> list[list[str]]:
    text = log_path.read_text(encoding="utf-8") if log_path.exists() else ""
    lines = text.split("\n")
    return [line.split(" ") for line in lines[:-1]]  # the last piece is "" or a line cut by the kill


def verify(url: str, target: str, log_path: Path) -> dict[str, int]:
    entries = _logged(log_path)
    created, deleted, tried = set(), set(), set()
    appended: list[tuple[str, str]] = []
    forks: list[str] = []
    for fields in entries:
        kind = fields[0]
        if kind == "create":
            created.add(fields[1])
        elif kind == "delete":
            deleted.add(fields[1])
        elif kind == "try-delete":
            tried.add(fields[1])
        elif kind == "append":
            appended.append((fields[1], fields[2]))
        elif kind == "fork":
            forks.append(fields[2])
    with convstore.Store(url) as store:
        report = store.check()
        assert report.ok, report.lines()
        existing = {info.id for info in store.iter_conversations()}
        assert target in existing
        assert not deleted & existing
        # A conversation may be gone without a logged delete only if its delete was under way at the kill.
        assert created - deleted - existing <= tried
        exchange_ids: dict[str, set[str]] = {}
        for cid in existing:
            exchange_ids[cid] = {node.exchange_id for node in store.conversation(cid).tree().nodes}
        for cid, exchange_id in appended:
            if cid in existing:
                assert exchange_id in exchange_ids[cid], f"lost exchange {exchange_id}"
            else:
                assert cid in deleted or cid in tried
        names = {branch.name for branch in store.conversation(target).branches()}
        assert set(forks) <= names
    return {"appends": len(appended), "forks": len(forks), "deletes": len(deleted)}


def run_kills(db_url: str, tmp_path: Path, count: int) -> None:
    with convstore.Store(db_url) as store:
        target = store.create_conversation().id
    ctx = process_context()
    rng = random.Random(count)
    log_path = tmp_path / "writer.log"
    done: dict[str, int] = {}
    started = time.perf_counter()
    for kill in range(count):
        proc = ctx.Process(target=_writer, args=(db_url, target, str(log_path), kill))
        proc.start()
        deadline = time.monotonic() + 60
        while sum(fields == ["ready"] for fields in _logged(log_path)) <= kill:
            assert proc.is_alive(), f"the writer died before it was killed (exit {proc.exitcode})"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(rng.uniform(0.01, 0.4))
        assert proc.is_alive(), f"the writer died before it was killed (exit {proc.exitcode})"
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
        assert proc.exitcode == -signal.SIGKILL
        # Drop a line the kill cut short; every round re-verifies everything reported since the first.
        text = log_path.read_text(encoding="utf-8")
        log_path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
        done = verify(db_url, target, log_path)
    print(
        f"\ncrash on {db_url.split(':', maxsplit=1)[0]}: {count} kills survived in "
        f"{time.perf_counter() - started:.1f} s; {done['appends']} appends, {done['forks']} forks, "
        f"{done['deletes']} deletes confirmed before the kills"
    )


def test_a_writer_killed_at_random_moments_loses_nothing_it_reported(db_url, tmp_path):
    run_kills(db_url, tmp_path, kills(slow=False))


@pytest.mark.slow
def test_many_kills(db_url, tmp_path):
    run_kills(db_url, tmp_path, kills(slow=True))
