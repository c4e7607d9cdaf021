"""``replay``: re-send a branch's inputs to a model, the answers on a new branch beside the old one, and a
summary of where the two differ. For comparing models, or a model's new version, on a real conversation.

The inputs of an exchange are its leading ``user_input`` and ``function_result`` steps; the new branch
starts where the first of them was (a fork, nothing copied) and gets one exchange per input exchange, in
order. A function result answers a call by id, and the new model's calls have new ids: each replayed result
is given the id of the new call in the same position with the same name. When the new model makes no such
call, the replay stops there (the conversation took another course), keeping what it wrote.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import convstore
from convstore.cli._common import (
    CliError,
    command,
    free_branch_name,
    open_conversation,
    open_store,
    resolve_conversation,
    resolve_db,
)
from convstore.cli._offline import model_client
from convstore.cli._progress import Progress
from convstore.cli._render import preview

__all__ = ["comparable", "input_exchanges", "register"]

INPUT_TYPES = frozenset({"user_input", "function_result"})


def register(sub: Any) -> None:
    replay = command(
        sub,
        "replay",
        "Re-send a branch's inputs to a model, its answers on a new branch; say where the two differ.",
        "Re-send a branch's inputs (your messages and function results, exchange by exchange) to a\n"
        "model, writing its answers as a new branch beside the old one, then say where the two differ.",
        examples=[
            "convstore replay 5f3c9a2e41d7 --model gemini-3.1-pro-preview",
            "convstore replay 5f3c9a2e41d7 --branch edit-1 --model gemini-2.5-flash --offline",
        ],
    )
    replay.add_argument("id", metavar="ID", help="the conversation's id, or its last 8+ characters")
    replay.add_argument("--branch", metavar="B", default="main", help="the branch to replay (default: main)")
    replay.add_argument("--model", metavar="M", help="the model to ask (default: the conversation's)")
    replay.add_argument("--name", metavar="NEW", help="the new branch's name (default: B@MODEL)")
    replay.add_argument("--offline", action="store_true", help="ask convstore's emulator: no key, no network")
    replay.set_defaults(func=cmd_replay)


Exchange = tuple[str, list[dict[str, Any]], list[dict[str, Any]]]


def input_exchanges(nodes: Sequence[convstore.Node]) -> list[Exchange]:
    """``(first node id, input steps, output steps)`` of each exchange along a path that has inputs."""
    grouped: list[list[convstore.Node]] = []
    for node in nodes:
        if grouped and grouped[-1][0].exchange_id == node.exchange_id:
            grouped[-1].append(node)
        else:
            grouped.append([node])
    found = []
    for exchange in grouped:
        steps = [node.data for node in exchange]
        cut = next((i for i, step in enumerate(steps) if step.get("type") not in INPUT_TYPES), len(steps))
        if cut:
            found.append((exchange[0].id, steps[:cut], steps[cut:]))
    return found


def comparable(steps: Sequence[Mapping[str, Any]]) -> list[Any]:
    """What a model's output said, without what differs on every call (ids, signatures, thoughts)."""
    said: list[Any] = []
    for step in steps:
        kind = step.get("type")
        if kind == "thought":
            continue
        if kind == "function_call":
            said.append((kind, step.get("name"), step.get("arguments")))
        else:
            said.append({k: v for k, v in step.items() if k not in {"id", "signature", "call_id"}})
    return said


def _remap(steps: list[dict[str, Any]], calls: Mapping[str, str]) -> list[dict[str, Any]] | None:
    """The input steps with each result's ``call_id`` made the new call's; None when a call is missing."""
    remapped = []
    for step in steps:
        if step.get("type") == "function_result" and step.get("call_id") is not None:
            new_id = calls.get(str(step["call_id"]))
            if new_id is None:
                return None
            remapped.append({**step, "call_id": new_id})
        else:
            remapped.append(step)
    return remapped


def _match_calls(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    old_calls = [s for s in old if s.get("type") == "function_call"]
    new_calls = [s for s in new if s.get("type") == "function_call"]
    return {
        str(a.get("id")): str(b.get("id"))
        for a, b in zip(old_calls, new_calls, strict=False)  # the new model may call fewer
        if a.get("name") == b.get("name") and b.get("id") is not None
    }


def cmd_replay(args: argparse.Namespace) -> int:
    url = resolve_db(args.db)
    with model_client(offline=args.offline) as (client, _), open_store(url) as store:
        old = open_conversation(store, resolve_conversation(store, args.id), args.branch)
        nodes = old.nodes()
        exchanges = input_exchanges(nodes)
        if not exchanges:
            raise CliError(f"branch {old.branch!r} of {old.id} has no input to replay")
        model = args.model or old.model
        if not model:
            raise CliError("the conversation names no model: pass --model")
        name = args.name or free_branch_name(old, f"{old.branch}@{model}")
        new = old.edit(exchanges[0][0], branch=name)
        overrides = {"model": args.model} if args.model else {}
        outputs: list[list[dict[str, Any]]] = []
        calls: dict[str, str] = {}
        stopped = ""
        with Progress("replaying", len(exchanges), unit="exchanges") as bar:
            for index, (_, inputs, old_outputs) in enumerate(exchanges, start=1):
                steps = _remap(inputs, calls)
                if steps is None:
                    stopped = (
                        f"stopped at exchange {index}: the new answers made no call for its function result"
                    )
                    break
                try:
                    reply = new.send(steps, client=client, **overrides)
                except convstore.APIError as error:
                    stopped = f"stopped at exchange {index}: {type(error).__name__}: {error}"
                    break
                outputs.append(list(reply.steps))
                calls.update(_match_calls(old_outputs, reply.steps))
                bar.advance()
        _summary(old=old, new=new, model=model, exchanges=exchanges, outputs=outputs, stopped=stopped)
    return 0


def _summary(
    *,
    old: convstore.Conversation,
    new: convstore.Conversation,
    model: str,
    exchanges: Sequence[Exchange],
    outputs: Sequence[list[dict[str, Any]]],
    stopped: str,
) -> None:
    print(
        f"replayed {len(outputs)} of {len(exchanges)} exchanges of branch {old.branch!r} "
        f"onto new branch {new.branch!r} with {model}"
    )
    differing = [
        i
        for i, (got, (_, _, was)) in enumerate(zip(outputs, exchanges, strict=False), start=1)
        if comparable(got) != comparable(was)
    ]
    if differing:
        first = differing[0]
        said = preview(exchanges[first - 1][1][0], 48)
        print(f"first difference: exchange {first} of {len(exchanges)} (input: {said})")
        print(f"model outputs that differ: {len(differing)} of {len(outputs)}")
    else:
        print(f"no difference: the {len(outputs)} model outputs say the same (ids and thoughts aside)")
    if stopped:
        print(stopped)
    print(f"compare: convstore show {old.id} --tree")
