"""``replay``: re-send a branch's inputs to a model, the answers on a new branch beside the old one, and a
summary of where the two differ. For comparing models, or a model's new version, on a real conversation.

The inputs of an exchange are its leading ``user_input`` and ``function_result`` steps; the new branch
starts where the first of them was (a fork, nothing copied) and gets one exchange per input exchange, in
order. A function result answers a call by id, and the new model's calls have new ids: each replayed result
is given the id of the new call in the same position with the same name. When the new model makes no such
call, the replay stops there (the conversation took another course), keeping what it wrote.

While it runs, the new branch is named ``NAME~unfinished``; it takes its name once every exchange is
replayed. A replay that was interrupted (Ctrl-C, a failed call) leaves that branch, and the same command run
again continues it where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import convstore
from convstore.cli._common import (
    CliError,
    add_keyring_option,
    command,
    free_branch_name,
    load_keyring,
    open_conversation,
    open_store,
    plural,
    resolve_conversation,
    resolve_db,
)
from convstore.cli._offline import model_client
from convstore.cli._progress import Progress
from convstore.cli._render import preview
from convstore.conversation._frontend import Exchange, comparable, group_exchanges, input_exchanges

__all__ = ["UNFINISHED", "register"]

UNFINISHED = "~unfinished"  # the suffix of a replay's branch until its last exchange is written


def register(sub: Any) -> None:
    replay = command(
        sub,
        "replay",
        "Re-send a branch's inputs to a model, its answers on a new branch; say where the two differ.",
        "Re-send a branch's inputs (your messages and function results, exchange by exchange) to a\n"
        "model, writing its answers as a new branch beside the old one, then say where the two differ.\n"
        f"Until it is done, the new branch is named NEW{UNFINISHED}; interrupted (Ctrl-C, exit status\n"
        "130) or stopped by an API error, the same command run again continues it.",
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
    add_keyring_option(replay)
    replay.set_defaults(func=cmd_replay)


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


def _resume(
    old: convstore.Conversation, name: str, exchanges: Sequence[Exchange]
) -> tuple[convstore.Conversation, list[list[dict[str, Any]]], dict[str, str]] | None:
    """An unfinished replay onto ``name`` to continue: its branch, the outputs written so far and the
    call ids matched; None when there is none."""
    unfinished = name + UNFINISHED
    if unfinished not in {branch.name for branch in old.branches()}:
        return None
    new = old.checkout(unfinished)
    start = old.path(exchanges[0][0])[-1].parent_id
    nodes = new.nodes()
    cut = next((i + 1 for i, node in enumerate(nodes) if node.id == start), 0) if start is not None else 0
    outputs: list[list[dict[str, Any]]] = []
    calls: dict[str, str] = {}
    for exchange, (_, _, old_outputs) in zip(group_exchanges(nodes[cut:]), exchanges, strict=False):
        steps = [node.data for node in exchange]
        got = [step for step in steps if step.get("type") not in {"user_input", "function_result"}]
        outputs.append(got)
        calls.update(_match_calls(old_outputs, got))
    return new, outputs, calls


def cmd_replay(args: argparse.Namespace) -> int:
    url = resolve_db(args.db)
    with (
        model_client(offline=args.offline) as (client, emulator),
        open_store(url, keyring=load_keyring(args.keyring)) as store,
    ):
        old = open_conversation(store, resolve_conversation(store, args.id), args.branch)
        if old.branch.endswith(UNFINISHED):
            raise CliError(f"branch {old.branch!r} is an unfinished replay: replay the branch it came from")
        nodes = old.nodes()
        exchanges = input_exchanges(nodes)
        if not exchanges:
            raise CliError(f"branch {old.branch!r} of {old.id} has no input to replay")
        model = args.model or old.model
        if not model:
            raise CliError("the conversation names no model: pass --model")
        wanted = args.name or f"{old.branch}@{model}"
        resumed = _resume(old, wanted, exchanges)
        if resumed is not None:
            new, outputs, calls = resumed
            name = wanted
            if emulator is not None:  # offline: this emulator replays what an earlier one answered
                emulator.adopt_history(new.history())
            print(f"continuing the unfinished replay {new.branch!r} at exchange {len(outputs) + 1}")
        else:
            name = args.name or free_branch_name(old, wanted)
            if args.name and name in {branch.name for branch in old.branches()}:
                raise CliError(
                    f"branch {name!r} already exists in conversation {old.id}: pick another --name"
                )
            new = old.edit(exchanges[0][0], branch=name + UNFINISHED)
            outputs, calls = [], {}
        overrides = {"model": args.model} if args.model else {}
        try:
            stopped = _replay_exchanges(
                new, client=client, overrides=overrides, exchanges=exchanges, outputs=outputs, calls=calls
            )
        except KeyboardInterrupt:
            print(
                f"\ninterrupted: replayed {len(outputs)} of {plural(len(exchanges), 'exchange')} onto "
                f"the unfinished branch {new.branch!r}; run the same command again to continue it",
                file=sys.stderr,
            )
            return 130
        finished = len(outputs) == len(exchanges) or "no call" in stopped
        if finished:
            store.rename_branch(old.id, new.branch, name)
            new = old.checkout(name)
        _summary(old=old, new=new, model=model, exchanges=exchanges, outputs=outputs, stopped=stopped)
        if not finished:
            print(f"the branch keeps its {UNFINISHED} suffix: run the same command again to continue it")
            return 1
    return 0


def _replay_exchanges(
    new: convstore.Conversation,
    *,
    client: Any,
    overrides: Mapping[str, Any],
    exchanges: Sequence[Exchange],
    outputs: list[list[dict[str, Any]]],
    calls: dict[str, str],
) -> str:
    """Send the exchanges not replayed yet, appending to ``outputs`` and ``calls`` as each is written;
    returns why it stopped early, or ""."""
    with Progress("replaying", len(exchanges), unit="exchanges") as bar:
        bar.advance(len(outputs))
        for index, (_, inputs, old_outputs) in enumerate(exchanges, start=1):
            if index <= len(outputs):
                continue
            steps = _remap(inputs, calls)
            if steps is None:
                return f"stopped at exchange {index}: the new answers made no call for its function result"
            try:
                reply = new.send(steps, client=client, **overrides)
            except convstore.APIError as error:
                return f"stopped at exchange {index}: {type(error).__name__}: {error}"
            outputs.append(list(reply.steps))
            calls.update(_match_calls(old_outputs, reply.steps))
            bar.advance()
    return ""


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
        f"replayed {len(outputs)} of {plural(len(exchanges), 'exchange')} of branch {old.branch!r} "
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
