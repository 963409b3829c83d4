# -*- test-case-name: tests.test_ctl -*-
"""
The command groups of C{gopherpostctl} and what they share.

A group is a module with a C{GROUP = CommandGroup(...)}: its name (the
first word on the command line), a one-line help, and C{configure(parser)},
which adds its subcommands; each subcommand sets C{handler} (with
C{parser.set_defaults(handler=...)}) to a function C{handler(context) ->
int} returning the exit status.  To add a group, add its module to
L{GROUPS}.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from gopherpost.config import ConfigError, Settings
from gopherpost.configsource import ConfigSource, LoadedEnvironment
from gopherpost.control import client
from gopherpost.control.registry import UNKNOWN_COMMAND, ControlError
from gopherpost.control.service import controlSocketPath

__all__ = [
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_NOT_RUNNING",
    "GROUPS",
    "DEBIAN_ENV_FILE",
    "CommandGroup",
    "CtlError",
    "Context",
    "loadGroups",
    "addJSONOption",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

#: The modules of the command groups, in the order of C{--help}.
GROUPS = (
    "gopherpost.ctl.queuecommands",
    "gopherpost.ctl.configcommands",
    "gopherpost.ctl.servercommands",
    "gopherpost.ctl.tlscommands",
    "gopherpost.auth.usercommands",
)

#: The env file the Debian package installs: read when there is no
#: C{.env} here and no file is named.
DEBIAN_ENV_FILE = "/etc/gopherpost/gopherpost.env"


@dataclass(frozen=True)
class CommandGroup:
    """
    One group of subcommands.

    @ivar configure: adds the group's subcommands to its parser.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]


class CtlError(Exception):
    """
    A command failed: one line for standard error, and the exit status.
    """

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def loadGroups() -> list[CommandGroup]:
    """
    Every group of L{GROUPS}.
    """
    return [importlib.import_module(name).GROUP for name in GROUPS]


def addJSONOption(parser: argparse.ArgumentParser) -> None:
    """
    C{--json} for a listing.
    """
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of text (for scripts)"
    )


class Context:
    """
    What a subcommand works with: its arguments, the configuration, the
    spool, the server.

    @ivar args: the parsed command line.
    @ivar out: standard output.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        environ: dict[str, str] | None = None,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
    ) -> None:
        self.args = args
        self.environ = dict(os.environ if environ is None else environ)
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._loaded: LoadedEnvironment | None = None

    @property
    def source(self) -> ConfigSource:
        """
        Where the configuration comes from: C{--env-file}, else
        C{SMTP_ENV_FILE}, else C{.env} here, else the Debian package's file.
        """
        default = ".env" if os.path.isfile(".env") else DEBIAN_ENV_FILE
        return ConfigSource(
            self.environ, envFile=getattr(self.args, "env_file", None), defaultEnvFile=default
        )

    def loaded(self) -> LoadedEnvironment:
        """
        The variables, as a server started here would see them.

        @raise CtlError: a named env file cannot be read.
        """
        if self._loaded is None:
            try:
                self._loaded = self.source.load()
            except ConfigError as e:
                raise CtlError(str(e)) from None
        return self._loaded

    @property
    def spoolPath(self) -> str:
        """
        C{--queue-path}, else C{SMTP_QUEUE_PATH}, else the default.
        """
        path = getattr(self.args, "queue_path", None)
        if not path:
            path = self.loaded().variables.get("SMTP_QUEUE_PATH", "").strip()
        return os.path.abspath(path or Settings.queuePath)

    @property
    def socketPath(self) -> str:
        """
        The control socket of the spool.
        """
        return controlSocketPath(os.path.join(self.spoolPath, ".gopherpost"))

    def call(self, command: str, **arguments: Any) -> Any:
        """
        Ask the running server.

        @raise CtlError: it is not running (L{EXIT_NOT_RUNNING}), cannot be
            reached, or refused.
        """
        try:
            return client.call(self.socketPath, command, arguments)
        except client.ServerNotRunning:
            raise CtlError(
                f"the server is not running (nothing answers on {self.socketPath})",
                EXIT_NOT_RUNNING,
            ) from None
        except client.ControlUnavailable as e:
            raise CtlError(str(e)) from None
        except ControlError as e:
            if e.code == UNKNOWN_COMMAND:
                raise CtlError(
                    f"the running server does not offer {command} (not available in its "
                    "version yet)"
                ) from None
            raise CtlError(e.message) from None

    def tryCall(self, command: str, **arguments: Any) -> tuple[bool, Any]:
        """
        Ask the running server if there is one.

        @return: C{(True, result)}, or C{(False, None)} when it is not
            running.
        """
        try:
            return True, self.call(command, **arguments)
        except CtlError as e:
            if e.status == EXIT_NOT_RUNNING:
                return False, None
            raise

    def printJSON(self, value: Any) -> None:
        """
        Print C{value} as JSON.
        """
        self.out.write(json.dumps(value, indent=2, sort_keys=True) + "\n")

    def note(self, line: str) -> None:
        """
        One line on standard error (not part of the output).
        """
        self.err.write(f"gopherpostctl: {line}\n")
