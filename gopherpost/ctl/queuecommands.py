# -*- test-case-name: tests.test_ctl_queue -*-
"""
C{gopherpostctl queue}: the relay queue, as Postfix's C{mailq},
C{postcat}, C{qshape}, C{postqueue -f} and C{postsuper} show and steer it.

C{list}, C{show} and C{summary} ask the running server, or read the spool
themselves when it is not running (read-only).  The actions (C{flush},
C{hold}, C{release}, C{delete}, C{bounce}) are carried out by the running
server, which owns the queue: two processes never write the same state
files.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from gopherpost.control.commands import queueList, queueShow, queueSummary
from gopherpost.control.registry import ControlError
from gopherpost.ctl.registry import (
    EXIT_FAILURE,
    EXIT_OK,
    CommandGroup,
    Context,
    CtlError,
    addJSONOption,
)

__all__ = ["GROUP", "formatQueue", "formatMessage", "formatSummary"]


def _readLocally(context: Context, what: str) -> None:
    context.note(f"the server is not running: {what} read from {context.spoolPath}")


def _fromSpool(context: Context, read: Any, *args: Any) -> Any:
    """
    Read the spool here (the server is not running).

    @raise CtlError: it cannot be read.
    """
    try:
        return read(context.spoolPath, *args)
    except PermissionError:
        raise CtlError(
            f"cannot read the spool {context.spoolPath}: permission denied (run as root or "
            "as a member of the server's group)"
        ) from None
    except OSError as e:
        raise CtlError(f"cannot read the spool {context.spoolPath}: {e.strerror or e}") from None


def _list(context: Context) -> int:
    args = context.args
    running, result = context.tryCall("queue.list", limit=args.limit)
    if not running:
        if not args.json:
            _readLocally(context, "the queue")
        result = _fromSpool(context, queueList, args.limit)
    if args.json:
        context.printJSON(result)
    else:
        context.out.write(formatQueue(result))
    return EXIT_OK


def _show(context: Context) -> int:
    args = context.args
    try:
        running, result = context.tryCall("queue.show", queueId=args.id, body=args.body)
        if not running:
            result = _fromSpool(context, queueShow, args.id, args.body)
    except ControlError as e:
        raise CtlError(e.message) from None
    if args.json:
        context.printJSON(result)
        return EXIT_OK
    context.out.write(formatMessage(result))
    if args.body:
        context.out.flush()
        data = result["content"].encode("utf-8", "surrogateescape")
        buffer = getattr(context.out, "buffer", None)
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:
            context.out.write(data.decode("utf-8", "replace"))
    return EXIT_OK


def _summary(context: Context) -> int:
    args = context.args
    running, result = context.tryCall("queue.summary")
    if not running:
        if not args.json:
            _readLocally(context, "the queue")
        result = _fromSpool(context, queueSummary, time.time())
    if args.json:
        context.printJSON(result)
    else:
        context.out.write(formatSummary(result))
    return EXIT_OK


def _action(command: str, verb: str) -> Any:
    def run(context: Context) -> int:
        args = context.args
        ids = list(getattr(args, "ids", []) or [])
        everything = bool(getattr(args, "all", False))
        if not ids and not everything:
            raise CtlError(
                f"queue {verb}: name queue ids" + (" or --all" if hasattr(args, "all") else ""), 2
            )
        arguments: dict[str, Any] = {"ids": ids}
        if hasattr(args, "all"):
            arguments["all"] = everything
        result = context.call(command, **arguments)
        if args.json:
            context.printJSON(result)
        else:
            for key, value in sorted((result or {}).items()):
                if isinstance(value, list):
                    value = ", ".join(str(v) for v in value) or "none"
                context.out.write(f"{key}: {value}\n")
        missing = (result or {}).get("notFound") or []
        return EXIT_FAILURE if missing else EXIT_OK

    return run


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%a %b %d %H:%M:%S", time.localtime(seconds))


def formatQueue(result: dict[str, Any]) -> str:
    """
    C{queue list} as text, in the layout of Postfix's C{mailq}: per
    message its id, size, arrival and sender, then each pending recipient
    with its last error, attempts and next attempt.
    """
    messages = result["messages"]
    if not result["count"]:
        return "Mail queue is empty\n"
    lines = ["-Queue ID-          --Size-- ----Arrival Time---- -Sender/Recipient-------"]
    for message in messages:
        sender = message["sender"] or "MAILER-DAEMON"
        # As mailq: "!" after the id of a message on hold.
        queueId = message["queueId"] + ("!" if message.get("held") else "")
        lines.append(f"{queueId:<19} {message['size']:>8} {_when(message['received'])}  {sender}")
        for recipient in message["recipients"]:
            if recipient["status"] != "pending":
                continue
            if recipient["lastError"]:
                lines.append(f"{'':<20}({recipient['lastError']})")
            tries = recipient["attempts"]
            lines.append(
                f"{'':<50}{recipient['address']}  [{tries} attempt{'s' if tries != 1 else ''}, "
                f"next {_when(recipient['nextAttempt'])}]"
            )
        lines.append("")
    shown = len(messages)
    kbytes = (result["size"] + 1023) // 1024
    count = result["count"]
    more = f" ({count - shown} not shown)" if shown < count else ""
    lines.append(f"-- {kbytes} Kbytes in {count} Request{'s' if count != 1 else ''}.{more}")
    return "\n".join(lines) + "\n"


def formatMessage(result: dict[str, Any]) -> str:
    """
    C{queue show} as text: envelope and recipients, then the headers.
    """
    received = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(result["received"]))
    lines = [
        f"Queue ID:   {result['queueId']}",
        f"State:      {result['state']}",
        f"Arrival:    {received}",
        f"Sender:     <{result['sender']}>",
        f"Size:       {result['size']} bytes",
        f"Client:     {result['client']} (HELO {result['helo']}), "
        f"{'TLS' if result['tls'] else 'no TLS'}",
        "Recipients:",
    ]
    for recipient in result["recipients"]:
        status = recipient["status"]
        line = f"  {recipient['address']}: {status}"
        if status == "pending":
            line += f", {recipient['attempts']} attempts, next {_when(recipient['nextAttempt'])}"
        if recipient["lastHost"]:
            line += f", host {recipient['lastHost']}"
        if recipient["lastError"]:
            line += f": {recipient['lastError']}"
        lines.append(line)
    if "headers" in result:
        lines.append("Headers:")
        headers = result["headers"].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        lines += ["  " + h for h in headers.replace("\r\n", "\n").rstrip("\n").split("\n")]
    else:
        lines.append("Content:")
    return "\n".join(lines) + "\n"


def formatSummary(result: dict[str, Any]) -> str:
    """
    C{queue summary} as text, in the layout of Postfix's C{qshape}.
    """
    columns = result["columns"]
    rows = [("TOTAL", result["total"])] + [(row["domain"], row) for row in result["domains"]]
    width = max(len(name) for name, _ in rows)
    titles = ["T" if c == "total" else c for c in columns]
    lines = [" " * width + " " + " ".join(f"{t:>5}" for t in titles)]
    for name, counts in rows:
        lines.append(f"{name:>{width}} " + " ".join(f"{counts[c]:>5}" for c in columns))
    return "\n".join(lines) + "\n"


def _configure(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(title="queue commands", metavar="COMMAND", dest="command")
    commands.required = True

    listing = commands.add_parser(
        "list",
        help="the messages waiting for delivery (mailq)",
        description="Every message with a recipient still to deliver, oldest first: id, "
        "size, arrival, sender, and each pending recipient with its last error, "
        "attempts and next attempt.  Works with the server stopped (read from the spool).",
    )
    listing.add_argument("--limit", type=int, metavar="N", help="show the first N messages only")
    addJSONOption(listing)
    listing.set_defaults(handler=_list)

    show = commands.add_parser(
        "show",
        help="one message: envelope, state, headers (postcat)",
        description="One spooled message, queued or not: envelope, each recipient's state, "
        "the headers; --body prints the whole message.  Works with the server stopped.",
    )
    show.add_argument("id", help="the queue id")
    show.add_argument(
        "--body", action="store_true", help="print the whole message, not only the headers"
    )
    addJSONOption(show)
    show.set_defaults(handler=_show)

    summary = commands.add_parser(
        "summary",
        help="pending recipients by destination domain and age (qshape)",
        description="Pending recipients per destination domain, in columns by the age of "
        "their message in minutes (as Postfix's qshape).  Works with the server stopped.",
    )
    addJSONOption(summary)
    summary.set_defaults(handler=_summary)

    actions = [
        ("flush", "queue.flush", "try now (postqueue -f / -i)", True),
        ("hold", "queue.hold", "never try these until released (postsuper -h)", False),
        ("release", "queue.release", "release held messages (postsuper -H)", False),
        ("delete", "queue.delete", "remove from the queue, without a bounce (postsuper -d)", True),
        ("bounce", "queue.bounce", "give up now, with a DSN to the sender", False),
    ]
    for verb, command, description, allowsAll in actions:
        action = commands.add_parser(
            verb,
            help=description,
            description=f"{description[0].upper()}{description[1:]}.  Carried out by the "
            "running server (exit status 3 when it is not running).",
        )
        action.add_argument("ids", nargs="*", metavar="ID", help="queue ids")
        if allowsAll:
            action.add_argument("--all", action="store_true", help="every message in the queue")
        addJSONOption(action)
        action.set_defaults(handler=_action(command, verb))


GROUP = CommandGroup(
    "queue", "the relay queue: list, show, summary, flush, hold, delete, ...", _configure
)
