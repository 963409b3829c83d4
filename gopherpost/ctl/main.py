# -*- test-case-name: tests.test_ctl -*-
"""
The C{gopherpostctl} command line: global options, the command groups of
L{gopherpost.ctl.registry}, exit statuses.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import IO

from gopherpost import __version__
from gopherpost.ctl.registry import (
    EXIT_FAILURE,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_USAGE,
    Context,
    CtlError,
    loadGroups,
)

__all__ = ["main", "buildParser"]

_EPILOG = f"""\
exit status: {EXIT_OK} done, {EXIT_FAILURE} failed (e.g. no such message, an invalid
configuration), {EXIT_USAGE} wrong usage, {EXIT_NOT_RUNNING} the server is not running (for what
only the running server can do).

The spool is found from --queue-path, else SMTP_QUEUE_PATH in the
environment or the env file (--env-file, else SMTP_ENV_FILE, else .env here,
else /etc/gopherpost/gopherpost.env).  Actions go to the running server
through its control socket, <spool>/.gopherpost/control.sock (root and the
server's group may use it).
"""


def buildParser() -> argparse.ArgumentParser:
    """
    The whole command line.
    """
    parser = argparse.ArgumentParser(
        prog="gopherpostctl",
        description="See, steer and check a GopherPost server.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"gopherpostctl (GopherPost) {__version__}"
    )
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="the server's env file (default: SMTP_ENV_FILE, else .env here, else "
        "/etc/gopherpost/gopherpost.env)",
    )
    parser.add_argument(
        "-q", "--queue-path", metavar="DIR", help="the spool (default: SMTP_QUEUE_PATH)"
    )
    groups = parser.add_subparsers(title="commands", metavar="COMMAND", dest="group")
    groups.required = True
    for group in loadGroups():
        sub = groups.add_parser(group.name, help=group.help, description=group.help)
        group.configure(sub)
    return parser


def main(
    argv: Sequence[str] | None = None,
    environ: dict[str, str] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """
    Run C{gopherpostctl}.

    @return: the exit status.
    """
    parser = buildParser()
    err = err or sys.stderr
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(err)
        return EXIT_USAGE
    context = Context(args, environ=environ, out=out, err=err)
    try:
        return int(handler(context))
    except CtlError as e:
        err.write(f"gopherpostctl: {e.message}\n")
        return e.status
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_OK
