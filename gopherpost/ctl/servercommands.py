# -*- test-case-name: tests.test_ctl -*-
"""
C{gopherpostctl status}: whether the server runs, and what it runs.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from gopherpost.ctl.registry import EXIT_OK, CommandGroup, Context, addJSONOption

__all__ = ["GROUP", "formatStatus"]


def _uptime(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s"


def formatStatus(status: dict[str, Any], now: float) -> str:
    """
    C{status} as text.
    """
    started = status.get("started")
    up = f", up {_uptime(now - started)}" if started else ""
    lines = [
        f"GopherPost {status['version']} running as {status['hostname']} (pid {status['pid']}{up})",
        f"  spool:   {status['spool']}",
        f"  relay:   {status['relay']}",
        f"  TLS:     {status['tls']}",
    ]
    if status.get("queueDepth") is not None:
        lines.append(f"  queue:   {status['queueDepth']} messages")
    workers = status.get("workers", 1)
    if workers > 1:
        lines.append(f"  workers: {workers}")
    for listener in status["listeners"]:
        lines.append(
            f"  listen:  {listener['listener']} ({listener['role']}, {listener['variable']})"
        )
    return "\n".join(lines) + "\n"


def _status(context: Context) -> int:
    status = context.call("server.status")
    if context.args.json:
        context.printJSON(status)
    else:
        context.out.write(formatStatus(status, time.time()))
    return EXIT_OK


def _configure(parser: argparse.ArgumentParser) -> None:
    addJSONOption(parser)
    parser.set_defaults(handler=_status)


GROUP = CommandGroup(
    "status", "whether the server runs, and what (exit 3 when it does not)", _configure
)
