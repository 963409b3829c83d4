# -*- test-case-name: tests.test_tap -*-
"""
C{twistd gopherpost}: command-line options, and L{makeService}, which hands
the configuration to L{gopherpost.wiring}.

A bad setting ends start-up before anything is bound, with one line naming
the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.python import usage

if TYPE_CHECKING:
    from gopherpost.wiring import GopherPostService

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """
    Command-line options of C{twistd gopherpost}.

    Each option overrides the environment variable it names; the
    environment alone is enough.
    """

    optParameters = [
        ["port", "p", None, "SMTP port (overrides SMTP_PORT)."],
        ["interface", "i", None, "Address to listen on (overrides SMTP_LISTEN_ADDR)."],
        ["hostname", None, None, "Host name to announce (overrides SMTP_HOSTNAME)."],
        ["queue-path", "q", None, "Spool directory (overrides SMTP_QUEUE_PATH)."],
    ]

    _variables = {
        "port": "SMTP_PORT",
        "interface": "SMTP_LISTEN_ADDR",
        "hostname": "SMTP_HOSTNAME",
        "queue-path": "SMTP_QUEUE_PATH",
    }

    def environment(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """
        The environment (with C{.env}) with command-line overrides applied.
        """
        from gopherpost.config import loadEnvironment

        merged = loadEnvironment() if environ is None else dict(environ)
        for option, variable in self._variables.items():
            if self[option] is not None:
                merged[variable] = self[option]
        return merged


def makeService(
    options: Options,
    environ: Mapping[str, str] | None = None,
    reactor: Any = None,
) -> GopherPostService:
    """
    Build the GopherPost service from options and environment.

    The environment is captured first: importing C{twisted.internet.endpoints}
    removes systemd's C{LISTEN_PID} and C{LISTEN_FDS} from C{os.environ}.

    @return: the whole server, not started.
    @raise SystemExit: with a one-line message naming the variable, if the
        configuration is invalid; nothing has been bound then.
    """
    captured = options.environment(environ)
    if reactor is None:
        from twisted.internet import reactor
    from gopherpost.config import ConfigError
    from gopherpost.wiring import buildServer

    try:
        return buildServer(captured, reactor)
    except ConfigError as e:
        raise SystemExit(f"gopherpost: configuration error: {e}") from None
