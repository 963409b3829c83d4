# -*- test-case-name: tests.test_tap -*-
"""
C{twistd gopherpost}: command-line options, and L{makeService}, which hands
the configuration to L{gopherpost.wiring}.

A bad setting ends start-up before anything is bound, with one line naming
the variable (and, when it was set there, the env file and line).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.python import usage

if TYPE_CHECKING:
    from gopherpost.configsource import ConfigSource
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
        [
            "env-file",
            None,
            None,
            "File of VARIABLE=value lines, read at start-up and on every reload (SIGHUP); "
            "the environment wins over it (default: SMTP_ENV_FILE, else .env if it exists).",
        ],
    ]

    _variables = {
        "port": "SMTP_PORT",
        "interface": "SMTP_LISTEN_ADDR",
        "hostname": "SMTP_HOSTNAME",
        "queue-path": "SMTP_QUEUE_PATH",
    }

    def postOptions(self) -> None:
        """
        Under C{twistd --nodaemon} logging to standard output, log through
        L{gopherpost.logoutput} (one write per reactor turn).
        """
        from gopherpost import logoutput

        logoutput.installFor(getattr(self, "parent", None))

    def opt_version(self) -> None:
        """
        Print GopherPost's version and exit.
        """
        from gopherpost import __version__

        print(f"GopherPost {__version__}")
        sys.exit(0)

    @property
    def overrides(self) -> dict[str, str]:
        """
        The variables set by options.
        """
        return {
            variable: self[option]
            for option, variable in self._variables.items()
            if self[option] is not None
        }

    def configSource(self, environ: Mapping[str, str] | None = None) -> ConfigSource:
        """
        Where the configuration comes from: C{environ} (default: the real
        environment, with the default env file C{.env}) under the options.
        """
        from gopherpost.configsource import DEFAULT_ENV_FILE, ConfigSource

        return ConfigSource(
            os.environ if environ is None else environ,
            envFile=self["env-file"],
            overrides=self.overrides,
            defaultEnvFile=DEFAULT_ENV_FILE if environ is None else None,
        )

    def environment(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """
        The environment (with the env file) with command-line overrides
        applied.

        @raise gopherpost.config.ConfigError: a named env file cannot be
            read.
        """
        return self.configSource(environ).load().variables


def makeService(
    options: Options,
    environ: Mapping[str, str] | None = None,
    reactor: Any = None,
) -> GopherPostService:
    """
    Build the GopherPost service from options and environment.

    The environment is captured first: importing C{twisted.internet.endpoints}
    removes systemd's C{LISTEN_PID} and C{LISTEN_FDS} from C{os.environ}.

    @param environ: the real environment (default C{os.environ}; then the
        default env file C{.env} is read if it exists, and SIGHUP reloads).
    @param reactor: default the global reactor (then SIGHUP reloads and a
        second SIGTERM stops at once).
    @return: the whole server, not started.
    @raise SystemExit: with a one-line message naming the variable, if the
        configuration is invalid; nothing has been bound then.
    """
    from gopherpost.config import ConfigError
    from gopherpost.configsource import explain

    source = options.configSource(environ)
    loaded = None
    try:
        loaded = source.load()
    except ConfigError as e:
        raise SystemExit(f"gopherpost: configuration error: {e}") from None
    installSignals = reactor is None
    if reactor is None:
        from twisted.internet import reactor
    from gopherpost.wiring import buildServer

    try:
        return buildServer(
            loaded.variables, reactor, source=source, loaded=loaded, installSignals=installSignals
        )
    except ConfigError as e:
        raise SystemExit(f"gopherpost: configuration error: {explain(e, loaded)}") from None
