"""``ls``, ``show``, ``fork``, ``delete`` and ``purge``: look at the store's conversations and tidy it."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Any

import convstore
from convstore.cli._common import (
    CliError,
    add_keyring_option,
    command,
    confirm,
    default_db_path,
    describe_age,
    load_keyring,
    match_id,
    missing_sqlite_file,
    open_conversation,
    open_store,
    parse_duration,
    plural,
    positive_int,
    resolve_conversation,
    resolve_db,
)
from convstore.cli._lifecycle import media_lines
from convstore.cli._progress import Progress
from convstore.cli._render import (
    USAGE_COLUMNS,
    Output,
    branch_usage,
    format_time,
    preview,
    tree_labeler,
    usage_table_rows,
)

__all__ = ["register", "resolve_node"]

ID_HELP = "the conversation's id, or its last 8 or more characters (as `convstore ls` prints it)"
PREVIEW_WIDTH = 40


def register(sub: Any) -> None:
    ls = command(
        sub,
        "ls",
        "List conversations, newest first: id, times, model, steps, branches, first message.",
        "List conversations, newest first: id, creation time, last activity, model, steps (all\n"
        "branches), branches, and the start of the first message. An encrypted conversation's message\n"
        "is withheld unless --keyring opens it.",
        examples=[
            "convstore ls",
            "convstore ls --limit 100",
            "convstore ls --before 4bfff21f0",
            "convstore ls --json | jq -r '.[].id'",
        ],
    )
    ls.add_argument(
        "--limit", type=positive_int, default=20, help="how many to list (default 20; any number)"
    )
    ls.add_argument(
        "--before",
        metavar="ID",
        help="list the conversations older than this one (the next page: the last id a listing printed)",
    )
    ls.add_argument(
        "--json", action="store_true", help="print a JSON array, one object a conversation (full ids)"
    )
    add_keyring_option(ls)
    ls.set_defaults(func=cmd_ls)

    show = command(
        sub,
        "show",
        "Show a conversation: its settings, its branches, and the steps of one branch (a line each).",
        examples=[
            "convstore show 5f3c9a2e41d7",
            "convstore show 5f3c9a2e41d7 --tree",
            "convstore show 5f3c9a2e41d7 --branch edit-1 --json",
        ],
    )
    show.add_argument("id", metavar="ID", help=ID_HELP)
    show.add_argument("--branch", metavar="B", help="the branch whose steps to list (default: main)")
    show.add_argument(
        "--tree",
        action="store_true",
        help="draw the whole tree with branch names, and each branch's token usage",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead (whole steps, not previews)")
    add_keyring_option(show)
    show.set_defaults(func=cmd_show)

    fork = command(
        sub,
        "fork",
        "Start a new branch at a node of a conversation (nothing is copied).",
        examples=["convstore fork 5f3c9a2e41d7 --at 8d0b6e7c21aa --name shorter"],
    )
    fork.add_argument("id", metavar="ID", help=ID_HELP)
    fork.add_argument(
        "--at",
        required=True,
        metavar="NODE",
        help="the node the branch ends at (its id, or the last 8+ characters of it)",
    )
    fork.add_argument("--name", metavar="B", help="the new branch's name (default: generated)")
    add_keyring_option(fork)
    fork.set_defaults(func=cmd_fork)

    delete = command(
        sub,
        "delete",
        "Delete a conversation with all its branches and steps, for good.",
        "Delete a conversation with all its branches and steps, for good. On a terminal it asks first;\n"
        "--yes does not (nor does a script, whose stdin is not a terminal).",
        examples=["convstore delete 5f3c9a2e41d7", "convstore delete 5f3c9a2e41d7 --yes"],
    )
    delete.add_argument("id", metavar="ID", help=ID_HELP)
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(func=cmd_delete)

    purge = command(
        sub,
        "purge",
        "Delete the conversations older than a given age (retention).",
        "Delete the conversations older than a given age (retention): created before it and with no\n"
        "branch moved since. It says how many that is and asks first on a terminal; --dry-run lists\n"
        "them and deletes nothing; a script (stdin not a terminal) must pass --yes. Interrupted\n"
        "(Ctrl-C), it says how many it deleted and exits with status 130: run it again to finish.",
        examples=[
            "convstore purge --older-than 30d --dry-run",
            "convstore purge --older-than 30d",
            "convstore purge --older-than 12h --yes",
        ],
    )
    purge.add_argument(
        "--older-than",
        required=True,
        type=parse_duration,
        metavar="AGE",
        help="an age: 30d, 12h, 90m, 45s or 2w",
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="list the conversations it would delete; delete nothing"
    )
    purge.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation (for scripts)")
    purge.set_defaults(func=cmd_purge)


_NOTHING_YET = "no conversations yet: `convstore chat` starts one, `convstore demo` shows the tour"


def _as_utc(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _listing(store: convstore.Store, limit: int, before: str | None) -> tuple[list[Any], bool]:
    """Up to ``limit`` summaries, newest first (after ``before``), read a page of at most 1000 at a time,
    and whether there are more."""
    found: list[convstore.ConversationSummary] = []
    cursor: str | None = None
    while len(found) < limit:
        size = min(PAGE_MAX, limit - len(found))
        if cursor is None and not found:
            page = store.summaries(limit=size, before=before, preview_chars=PREVIEW_WIDTH)
        else:
            page = store.summaries(limit=size, cursor=cursor, preview_chars=PREVIEW_WIDTH)
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            return found, False
    return found, True


PAGE_MAX = 1000  # the store's largest page


def cmd_ls(args: argparse.Namespace) -> int:
    out = Output()
    url = resolve_db(args.db)
    if missing_sqlite_file(url) == default_db_path():  # the first run: nothing stored yet, nothing to make
        if args.json:
            print("[]")
        else:
            out.note(_NOTHING_YET)
        return 0
    with open_store(url, keyring=load_keyring(args.keyring)) as store:
        before = resolve_conversation(store, args.before) if args.before else None
        summaries, more = _listing(store, args.limit, before)
    listed = [
        {
            "id": item.info.id,
            "short_id": item.short_id,
            "created_at": _as_utc(item.info.created_at),
            "last_activity": _as_utc(item.last_activity),
            "model": item.info.model,
            "steps": item.steps,
            "branches": item.branches,
            "encrypted": item.info.encrypted,
            "withheld": item.info.withheld,
            # Why the store cannot open it (no keyring, a broken key), or null.
            "unreadable": item.info.unreadable,
            "first_message": item.first_message,
        }
        for item in summaries
    ]
    next_page = f"(more: convstore ls --before {listed[-1]['short_id']})" if more and listed else ""
    if args.json:
        print(json.dumps(listed, ensure_ascii=False, indent=2))
        if next_page:
            print(next_page, file=sys.stderr)
        return 0
    if not listed:
        out.note("no older conversations" if args.before else _NOTHING_YET)
        return 0
    rows = [
        [
            item["short_id"],
            format_time(datetime.fromisoformat(item["created_at"])),
            format_time(datetime.fromisoformat(item["last_activity"])),
            item["model"] or "-",
            str(item["steps"]),
            str(item["branches"]),
            _shown_message(item),
        ]
        for item in listed
    ]
    out.table(["id", "created (UTC)", "last activity", "model", "steps", "branches", "first message"], rows)
    if next_page:
        out.note(next_page)
    if any(item["withheld"] for item in listed):
        out.note("(encrypted: the first message is withheld; --keyring FILE or $CONVSTORE_KEYRING reads it)")
    return 0


def _shown_message(item: dict[str, Any]) -> str:
    reason = item["unreadable"]
    if reason is not None and reason != "keyring_required":
        return f"(unreadable: {reason.replace('_', ' ')})"  # listed, though its key is broken
    if item["withheld"]:
        return "(encrypted)"
    return item["first_message"] or "-"


def _info_json(info: convstore.ConversationInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "created_at": info.created_at.isoformat(),
        "model": info.model,
        "system_instruction": info.system_instruction,
        "generation_config": info.generation_config,
        "tools": info.tools,
        "metadata": info.metadata,
    }


def _node_json(node: convstore.Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "parent_id": node.parent_id,
        "depth": node.depth,
        "exchange_id": node.exchange_id,
        "type": node.type,
        "token_count": node.token_count,
        "total_tokens": node.total_tokens,
        "created_at": node.created_at.isoformat(),
        "step": node.data,
    }


def cmd_show(args: argparse.Namespace) -> int:
    with open_store(resolve_db(args.db), keyring=load_keyring(args.keyring)) as store:
        conv = open_conversation(store, resolve_conversation(store, args.id), args.branch)
        if args.json:
            _show_json(conv, whole_tree=args.tree)
        elif args.tree:
            _show_tree(conv)
        else:
            _show_branch(conv)
    return 0


def _show_json(conv: convstore.Conversation, *, whole_tree: bool) -> None:
    branches = [
        {"name": b.name, "head_id": b.head_id, "created_at": b.created_at.isoformat()}
        for b in conv.branches()
    ]
    document: dict[str, Any] = {"conversation": _info_json(conv.info), "branches": branches}
    if whole_tree:
        document["nodes"] = [_node_json(node) for node in conv.tree().nodes]
        document["usage"] = branch_usage(conv)
    else:
        document["branch"] = conv.branch
        document["steps"] = [_node_json(node) for node in conv.nodes()]
    print(json.dumps(document, ensure_ascii=False, indent=2))


def _show_header(out: Output, conv: convstore.Conversation) -> None:
    info = conv.info
    out.line(f"conversation {info.id}")
    out.line(f"  created   {format_time(info.created_at)} UTC")
    out.line(f"  model     {info.model or '-'}")
    if info.system_instruction:
        out.line(f"  system    {' '.join(info.system_instruction.split())[:72]}")
    if info.tools:
        names = ", ".join(str(tool.get("name") or tool.get("type")) for tool in info.tools)
        out.line(f"  tools     {names}")


def _show_branch(conv: convstore.Conversation) -> None:
    out = Output()
    _show_header(out, conv)
    out.line(f"  branches  {', '.join(b.name for b in conv.branches())}")
    for line in media_lines(conv):
        out.line(f"  media     {line}")
    nodes = conv.nodes()
    out.heading(f"branch {conv.branch}: {len(nodes)} steps")
    exchange = None
    for node in nodes:
        if node.exchange_id != exchange and exchange is not None:
            out.line()
        exchange = node.exchange_id
        out.line(f"{node.id}  {node.type:<15} {preview(node.data)}".rstrip())
    if not nodes:
        out.note("(no steps yet)")


def _show_tree(conv: convstore.Conversation) -> None:
    out = Output()
    _show_header(out, conv)
    tree = conv.tree()
    out.heading(f"tree: {len(tree.nodes)} nodes, {len(tree.branches)} branches")
    out.line(tree.render(label=tree_labeler(tree)) or "(no steps yet)")
    out.heading("token usage per branch")
    out.table(USAGE_COLUMNS, usage_table_rows(branch_usage(conv)))
    out.note("node ids: the shortest endings that tell them apart (`convstore fork ID --at` takes them);")
    out.note("node tokens: the head's running total (convstore's count); API: the usage the API reported")


def resolve_node(conv: convstore.Conversation, text: str) -> str:
    """A node id from a full id or a unique ending of one (8 characters or more)."""
    nodes = [node.id for node in conv.tree().nodes]
    return match_id(text, nodes, what="node", where=f"`convstore show {conv.id} --tree`")


def cmd_fork(args: argparse.Namespace) -> int:
    with open_store(resolve_db(args.db), keyring=load_keyring(args.keyring)) as store:
        conv = open_conversation(store, resolve_conversation(store, args.id))
        node = resolve_node(conv, args.at)
        try:
            new = conv.fork(at=node, branch=args.name)
        except ValueError as error:  # a bad branch name, or BranchExistsError
            raise CliError(str(error)) from None
        print(f"branch {new.branch!r} created at node {node}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with open_store(resolve_db(args.db)) as store:
        conversation_id = resolve_conversation(store, args.id)
        if not args.yes and sys.stdin.isatty():
            branches = store.branches(conversation_id)  # raises when there is no such conversation
            question = f"delete conversation {conversation_id} ({plural(len(branches), 'branch')}) for good?"
            if not confirm(question, assume_yes=False):
                print("nothing deleted")
                return 1
        store.delete_conversation(conversation_id)
    print(f"deleted conversation {conversation_id}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    age = describe_age(args.older_than)
    # One cutoff for the count, the question and the delete: what was counted is what may go.
    cutoff = datetime.now(timezone.utc) - args.older_than
    with open_store(resolve_db(args.db)) as store:
        candidates = store.stale_conversations(older_than=cutoff)
        if not candidates:
            print(f"nothing to purge: no conversation is untouched for {age}")
            return 0
        counted = plural(len(candidates), "conversation")
        if args.dry_run:
            for conversation_id in candidates:
                print(conversation_id)
            print(f"would delete {counted} untouched for {age} (--dry-run: nothing deleted)", file=sys.stderr)
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError(
                    f"purge would delete {counted} untouched for {age}: pass --yes to delete them "
                    "(--dry-run lists them)"
                )
            if not confirm(f"delete {counted} untouched for {age}, for good?", assume_yes=False):
                print("nothing deleted")
                return 1
        deleted: list[str] = []
        try:
            with Progress("purging", len(candidates), unit="conversations") as bar:

                def done(conversation_id: str) -> None:
                    deleted.append(conversation_id)
                    bar.advance()

                store.purge(older_than=cutoff, on_deleted=done)
        except KeyboardInterrupt:
            print(
                f"\ninterrupted: purged {len(deleted)} of {counted}; the other "
                f"{len(candidates) - len(deleted)} are as they were (run the same purge again to finish)",
                file=sys.stderr,
            )
            return 130
    print(f"purged {plural(len(deleted), 'conversation')}")
    return 0
