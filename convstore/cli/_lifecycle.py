"""``delete-remote``, ``adopt`` and ``media``: the server's copies of stored interactions, and which media
of a conversation convstore holds (see ``docs/guides/lifecycle.md``).

Each command goes through the public API only (``Store.delete_remote``, ``Store.adopt``,
``Conversation.files``).
"""

from __future__ import annotations

import argparse
import contextlib
from datetime import timedelta
from typing import Any

import convstore
from convstore.cli._common import (
    command,
    load_keyring,
    open_conversation,
    open_store,
    positive_int,
    resolve_conversation,
    resolve_db,
)
from convstore.cli._offline import model_client
from convstore.cli._render import Output

__all__ = ["media_lines", "register"]


def register(sub: Any) -> None:
    remote = command(
        sub,
        "delete-remote",
        "Delete the API's copies of the interactions recorded with store: true.",
        "Delete the API's copies of the interactions recorded with store: true (DELETE each), and never\n"
        "chain on them again. Safe to run again: each copy is deleted once; failures are listed.",
        examples=["convstore delete-remote", "convstore delete-remote --older-than 7"],
    )
    remote.add_argument(
        "--older-than", type=positive_int, metavar="DAYS", help="only those recorded DAYS ago"
    )
    _offline_option(remote)
    remote.set_defaults(func=cmd_delete_remote)
    adopt = command(
        sub,
        "adopt",
        "Bring a server-side chain of stored interactions home as a local conversation.",
        "Read the stored interaction ID and its predecessors (previous_interaction_id) with GET, and\n"
        "record the chain as a new local conversation, which then continues statelessly.",
        examples=["convstore adopt v1_ChdCYXNpY1R1cm4wMQ"],
    )
    adopt.add_argument("id", metavar="ID", help="the chain's last interaction id")
    _offline_option(adopt)
    adopt.set_defaults(func=cmd_adopt)
    media = command(
        sub,
        "media",
        "List a conversation's uploaded files: held locally, or only by a uri the API forgets.",
        examples=["convstore media 5f3c9a2e41d7"],
    )
    media.add_argument("id", metavar="ID", help="the conversation")
    media.add_argument("--branch", metavar="B", help="the branch (default: main)")
    media.add_argument("--keyring", metavar="FILE", help="the keys of an encrypted conversation")
    media.set_defaults(func=cmd_media)


def _offline_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offline", action="store_true", help="against convstore's emulator (for a try)")


def cmd_delete_remote(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        client, _ = stack.enter_context(model_client(offline=args.offline))
        store = stack.enter_context(open_store(resolve_db(args.db)))
        older = timedelta(days=args.older_than) if args.older_than else None
        report = store.delete_remote(client, older_than=older)
    out = Output()
    out.line(f"deleted {len(report.deleted)} server copies")
    for interaction_id, reason in report.failed:
        out.line(f"failed {interaction_id}: {reason}")
    return 1 if report.failed else 0


def cmd_adopt(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        client, _ = stack.enter_context(model_client(offline=args.offline))
        store = stack.enter_context(open_store(resolve_db(args.db), create=True))
        conv = store.adopt(args.id, client=client)
        Output().line(f"adopted as conversation {conv.id} ({len(conv.exchanges())} interactions)")
    return 0


def media_lines(conv: convstore.Conversation) -> list[str]:
    """One line per Files API uri of the branch: held locally, or only by its uri."""
    lines = []
    for status in conv.files():
        kind = status.mime_type or "unknown type"
        where = "held locally" if status.held else "uri only (convstore has no bytes: attach_media)"
        lines.append(f"{status.uri}  {kind}  {where}")
    return lines


def cmd_media(args: argparse.Namespace) -> int:
    with open_store(resolve_db(args.db), keyring=load_keyring(args.keyring)) as store:
        conv = open_conversation(store, resolve_conversation(store, args.id), args.branch)
        lines = media_lines(conv)
    out = Output()
    for line in lines or ["no uploaded files on this branch"]:
        out.line(line)
    return 0
