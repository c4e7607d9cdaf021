"""``ls``, ``show``, ``fork``, ``delete`` and ``purge``: look at the store's conversations and tidy it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

import convstore
from convstore.cli._common import (
    CliError,
    add_keyring_option,
    command,
    confirm,
    default_db_path,
    load_keyring,
    match_id,
    missing_sqlite_file,
    open_conversation,
    open_store,
    parse_duration,
    positive_int,
    resolve_conversation,
    resolve_db,
)
from convstore.cli._lifecycle import media_lines
from convstore.cli._render import (
    USAGE_COLUMNS,
    Output,
    branch_usage,
    format_time,
    preview,
    tree_label,
    usage_table_rows,
)
from convstore.store import _schema as schema

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
        examples=["convstore ls", "convstore ls --limit 100", "convstore ls --json | jq -r '.[].id'"],
    )
    ls.add_argument("--limit", type=positive_int, default=20, help="how many to list (default 20)")
    ls.add_argument("--json", action="store_true", help="print a JSON array, one object a conversation")
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
        "branch moved since.",
        examples=["convstore purge --older-than 30d", "convstore purge --older-than 12h"],
    )
    purge.add_argument(
        "--older-than",
        required=True,
        type=parse_duration,
        metavar="AGE",
        help="an age: 30d, 12h, 90m, 45s or 2w",
    )
    purge.set_defaults(func=cmd_purge)


_NOTHING_YET = "no conversations yet: `convstore chat` starts one, `convstore demo` shows the tour"


def _summaries(store: convstore.Store, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per conversation: its step count (every branch), branch count, last activity and first root node.

    Three grouped queries over the listed ids; ids, types and times are stored in clear, so this works for
    encrypted conversations too. The first message itself is read through the conversation (decrypted,
    media restored) by the caller.
    """
    found: dict[str, dict[str, Any]] = {
        cid: {"steps": 0, "branches": 0, "last_activity": None, "first_root": None} for cid in ids
    }
    if not ids:
        return found
    nodes, branches = schema.nodes, schema.branches
    with store.engine.connect() as conn:
        for cid, count in conn.execute(
            sa.select(nodes.c.conversation_id, sa.func.count())
            .where(nodes.c.conversation_id.in_(ids))
            .group_by(nodes.c.conversation_id)
        ):
            found[cid]["steps"] = count
        for cid, count, last in conn.execute(
            sa.select(branches.c.conversation_id, sa.func.count(), sa.func.max(branches.c.updated_at))
            .where(branches.c.conversation_id.in_(ids))
            .group_by(branches.c.conversation_id)
        ):
            found[cid].update(branches=count, last_activity=last)
        roots = conn.execute(
            sa.select(nodes.c.conversation_id, nodes.c.id, nodes.c.type)
            .where(nodes.c.conversation_id.in_(ids), nodes.c.depth == 0)
            .order_by(nodes.c.created_at, nodes.c.id)
        )
        for cid, node_id, kind in roots:
            if found[cid]["first_root"] is None:
                found[cid]["first_root"] = (node_id, kind)
    return found


def _first_message(store: convstore.Store, info: convstore.ConversationInfo, root: Any) -> str | None:
    """The start of the conversation's first user message; None when there is none or it is withheld."""
    if info.withheld or root is None or root[1] != "user_input":
        return None
    conv = open_conversation(store, info.id)
    return preview(conv.path(root[0])[-1].data, PREVIEW_WIDTH)


def _as_utc(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


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
        page = store.conversations(limit=args.limit)
        summaries = _summaries(store, [info.id for info in page.items])
        listed = []
        for info in page.items:
            summary = summaries[info.id]
            listed.append(
                {
                    "id": info.id,
                    "created_at": _as_utc(info.created_at),
                    "last_activity": _as_utc(summary["last_activity"] or info.created_at),
                    "model": info.model,
                    "steps": summary["steps"],
                    "branches": summary["branches"],
                    "encrypted": info.encrypted,
                    "withheld": info.withheld,
                    # Why the store cannot open it (no keyring, a broken key), or null.
                    "unreadable": info.unreadable,
                    "first_message": _first_message(store, info, summary["first_root"]),
                }
            )
    more = page.next_cursor is not None
    if args.json:
        print(json.dumps(listed, ensure_ascii=False, indent=2))
        if more:
            print(f"(the newest {args.limit}; --limit N for more)", file=sys.stderr)
        return 0
    if not listed:
        out.note(_NOTHING_YET)
        return 0
    rows = [
        [
            item["id"],
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
    if more:
        out.note(f"(the newest {args.limit}; --limit N for more)")
    if any(item["withheld"] for item in listed):
        out.note("(encrypted: the first message is withheld; --keyring FILE reads it)")
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
    out.line(tree.render(label=tree_label) or "(no steps yet)")
    out.heading("token usage per branch")
    out.table(USAGE_COLUMNS, usage_table_rows(branch_usage(conv)))
    out.note("node ids end in the 12 characters shown (`convstore fork ID --at` takes them);")
    out.note("node tokens: the head's running total (convstore's count); API: the usage the API reported")


def resolve_node(conv: convstore.Conversation, text: str) -> str:
    """A node id from a full id or a unique ending of one (8 characters or more)."""
    nodes = [node.id for node in conv.tree().nodes]
    return match_id(text, nodes, what="node", where=f"`convstore show {conv.id} --tree`")


def cmd_fork(args: argparse.Namespace) -> int:
    with open_store(resolve_db(args.db)) as store:
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
            summary = _summaries(store, [conversation_id])[conversation_id]
            if summary["branches"] == 0:  # every conversation has a branch: this one does not exist
                raise convstore.ConversationNotFoundError(conversation_id)
            question = (
                f"delete conversation {conversation_id} ({summary['steps']} steps, "
                f"{summary['branches']} branches) for good?"
            )
            if not confirm(question, assume_yes=False):
                print("nothing deleted")
                return 1
        store.delete_conversation(conversation_id)
    print(f"deleted conversation {conversation_id}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    with open_store(resolve_db(args.db)) as store:
        count = store.purge(older_than=args.older_than)
    print(f"purged {count} conversation{'' if count == 1 else 's'}")
    return 0
