"""``ls``, ``show``, ``fork``, ``delete`` and ``purge``: look at the store's conversations and tidy it."""

from __future__ import annotations

import argparse
import json
from typing import Any

import convstore
from convstore.cli._common import (
    CliError,
    command,
    default_db_path,
    missing_sqlite_file,
    open_conversation,
    open_store,
    parse_duration,
    positive_int,
    resolve_db,
)
from convstore.cli._render import (
    USAGE_COLUMNS,
    Output,
    branch_usage,
    format_time,
    preview,
    tree_label,
    usage_table_rows,
)

__all__ = ["register", "resolve_node"]


def register(sub: Any) -> None:
    ls = command(sub, "ls", "List conversations, newest first: id, creation time, model, branch count.")
    ls.add_argument("--limit", type=positive_int, default=20, help="how many to list (default 20)")
    ls.set_defaults(func=cmd_ls)

    show = command(
        sub,
        "show",
        "Show a conversation: its settings, its branches, and the steps of one branch (a line each).",
    )
    show.add_argument("id", metavar="ID", help="the conversation's id (as `convstore ls` prints it)")
    show.add_argument("--branch", metavar="B", help="the branch whose steps to list (default: main)")
    show.add_argument(
        "--tree",
        action="store_true",
        help="draw the whole tree with branch names, and each branch's token usage",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead (whole steps, not previews)")
    show.set_defaults(func=cmd_show)

    fork = command(sub, "fork", "Start a new branch at a node of a conversation (nothing is copied).")
    fork.add_argument("id", metavar="ID", help="the conversation's id")
    fork.add_argument(
        "--at",
        required=True,
        metavar="NODE",
        help="the node the branch ends at (its id, or the last 8+ characters of it)",
    )
    fork.add_argument("--name", metavar="B", help="the new branch's name (default: generated)")
    fork.set_defaults(func=cmd_fork)

    delete = command(sub, "delete", "Delete a conversation with all its branches and steps, for good.")
    delete.add_argument("id", metavar="ID", help="the conversation's id")
    delete.set_defaults(func=cmd_delete)

    purge = command(sub, "purge", "Delete the conversations older than a given age (retention).")
    purge.add_argument(
        "--older-than",
        required=True,
        type=parse_duration,
        metavar="AGE",
        help="an age: 30d, 12h, 90m, 45s or 2w",
    )
    purge.set_defaults(func=cmd_purge)


_NOTHING_YET = "no conversations yet: `convstore chat` starts one, `convstore demo` shows the tour"


def cmd_ls(args: argparse.Namespace) -> int:
    out = Output()
    url = resolve_db(args.db)
    if missing_sqlite_file(url) == default_db_path():  # the first run: nothing stored yet, nothing to make
        out.note(_NOTHING_YET)
        return 0
    with open_store(url) as store:
        page = store.conversations(limit=args.limit)
        rows = []
        for info in page.items:
            # An encrypted conversation the store cannot open (no keyring, a broken key): listed, not counted.
            if info.unreadable == "keyring_required":
                branches = "encrypted"
            elif info.unreadable is not None:
                branches = f"unreadable: {info.unreadable.replace('_', ' ')}"
            else:
                branches = str(len(open_conversation(store, info.id).branches()))
            rows.append([info.id, format_time(info.created_at), info.model or "-", branches])
    if not rows:
        out.note(_NOTHING_YET)
        return 0
    out.table(["id", "created (UTC)", "model", "branches"], rows)
    if page.next_cursor is not None:
        out.note(f"(the newest {args.limit}; --limit N for more)")
    return 0


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
    with open_store(resolve_db(args.db)) as store:
        conv = open_conversation(store, args.id, args.branch)
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
    out.line(tree.render(label=tree_label) or "(no steps yet)")
    out.heading("token usage per branch")
    out.table(USAGE_COLUMNS, usage_table_rows(branch_usage(conv)))
    out.note("node ids end in the 12 characters shown (`convstore fork ID --at` takes them);")
    out.note("node tokens: the head's running total (convstore's count); API: the usage the API reported")


def resolve_node(conv: convstore.Conversation, text: str) -> str:
    """A node id from a full id or a unique ending of one (8 characters or more)."""
    text = text.strip().lower()
    nodes = conv.tree().nodes
    if any(node.id == text for node in nodes):
        return text
    if len(text) >= 8:
        found = [node.id for node in nodes if node.id.endswith(text)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise CliError(f"{text!r} is the ending of {len(found)} nodes: give more of the id")
    raise CliError(f"no node {text!r} in conversation {conv.id} (`convstore show {conv.id}` lists them)")


def cmd_fork(args: argparse.Namespace) -> int:
    with open_store(resolve_db(args.db)) as store:
        conv = open_conversation(store, args.id)
        node = resolve_node(conv, args.at)
        try:
            new = conv.fork(at=node, branch=args.name)
        except ValueError as error:  # a bad branch name, or BranchExistsError
            raise CliError(str(error)) from None
        print(f"branch {new.branch!r} created at node {node}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with open_store(resolve_db(args.db)) as store:
        store.delete_conversation(args.id)
    print(f"deleted conversation {args.id}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    with open_store(resolve_db(args.db)) as store:
        count = store.purge(older_than=args.older_than)
    print(f"purged {count} conversation{'' if count == 1 else 's'}")
    return 0
