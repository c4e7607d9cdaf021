"""``search``: find the conversations (and the steps in them) whose text holds some words."""

from __future__ import annotations

import argparse
import json
from typing import Any

import convstore
from convstore.cli._common import (
    add_keyring_option,
    command,
    load_keyring,
    open_store,
    positive_int,
    resolve_db,
)
from convstore.cli._render import Output, format_time

__all__ = ["register"]


def register(sub: Any) -> None:
    search = command(
        sub,
        "search",
        "Find the steps whose text holds every word of a query, across all conversations.",
        "Find the steps whose text holds every word of QUERY (user input and model output of plaintext\n"
        "conversations; encrypted ones are never indexed, and are counted instead), best first. Each hit\n"
        "names its conversation and node, which `convstore show` and `convstore fork --at` take, and the\n"
        "branches that lead through it. The query is plain words: quotes, *, NEAR or OR are just text.",
        examples=[
            "convstore search pelican",
            'convstore search "pelican bicycle" --limit 5',
            "convstore search weather --type user_input --json | jq -r '.hits[].conversation_id'",
        ],
    )
    search.add_argument("query", metavar="QUERY", help="the words to find (all of them)")
    search.add_argument(
        "--limit", type=positive_int, default=20, help="how many hits (default 20, at most 100)"
    )
    search.add_argument("--model", metavar="M", help="only conversations created for this model")
    search.add_argument(
        "--type",
        action="append",
        dest="types",
        metavar="T",
        help="only steps of this type (user_input or model_output; repeat for both)",
    )
    search.add_argument("--conversation", metavar="ID", help="only this conversation (its full id)")
    search.add_argument("--json", action="store_true", help="print a JSON object: hits, counts")
    add_keyring_option(search)
    search.set_defaults(func=cmd_search)


def hit_json(hit: convstore.SearchHit) -> dict[str, Any]:
    """A hit as JSON (the web page's search uses it too)."""
    return {
        "conversation_id": hit.conversation_id,
        "node_id": hit.node_id,
        "type": hit.type,
        "created_at": hit.created_at.isoformat(),
        "branches": list(hit.branches),
        "snippet": hit.snippet,
        "matches": [list(span) for span in hit.matches],
        "rank": hit.rank,
    }


def cmd_search(args: argparse.Namespace) -> int:
    with open_store(resolve_db(args.db), keyring=load_keyring(args.keyring)) as store:
        page = store.search(
            args.query,
            limit=args.limit,
            model=args.model,
            step_types=args.types,
            conversation_id=args.conversation,
        )
    if args.json:
        document = {
            "hits": [hit_json(hit) for hit in page],
            "more": page.next_cursor is not None,
            "encrypted_conversations": page.encrypted_conversations,
        }
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    out = Output()
    for hit in page:
        branches = ", ".join(hit.branches) or "(no branch leads here)"
        out.line(f"{hit.conversation_id}  {hit.node_id}", style="bold")
        out.line(f"  {hit.type:<13} {format_time(hit.created_at)}  branches: {branches}", style="dim")
        out.line(f"  {hit.snippet}")
    if not page.hits:
        out.note("no step holds every word of the query")
    elif page.next_cursor is not None:
        out.note(f"(the first {len(page.hits)} hits; --limit shows more)")
    if page.encrypted_conversations:
        out.note(f"{page.encrypted_conversations} encrypted conversations were not searched (never indexed)")
    if page.hits:
        first = page.hits[0]
        branch = first.branches[0] if first.branches else "main"
        out.note(f"open one: convstore show {first.conversation_id} --branch {branch}")
    return 0
