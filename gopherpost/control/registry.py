# -*- test-case-name: tests.test_control_registry -*-
"""
The control commands of one server, by name (C{"queue.flush"},
C{"config.reload"}), each registered by the part that owns what it acts
on.

A command is a callable taking the request's arguments (a JSON object) as
keyword arguments and returning a JSON-able result or a L{Deferred} of
one; it raises L{ControlError} for what the caller did wrong (an unknown
queue id, a bad argument).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from zope.interface import Interface

__all__ = [
    "BAD_REQUEST",
    "NOT_FOUND",
    "UNKNOWN_COMMAND",
    "FAILED",
    "ControlError",
    "IControlCommands",
    "CommandRegistry",
]

#: Error codes of a response.
BAD_REQUEST = "bad-request"
NOT_FOUND = "not-found"
UNKNOWN_COMMAND = "unknown-command"
FAILED = "failed"


class ControlError(Exception):
    """
    A command could not do what was asked, for a reason the caller can
    act on.

    @ivar code: L{BAD_REQUEST}, L{NOT_FOUND}, L{UNKNOWN_COMMAND} or
        L{FAILED}.
    @ivar message: one line.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class IControlCommands(Interface):
    """
    A part that offers control commands (the relay queue: C{queue.*}; the
    webhooks: C{webhook.*}; ACME: C{tls.*}).
    """

    def controlCommands() -> Mapping[str, Callable[..., Any]]:
        """
        The commands, by their full names (C{"queue.flush"}).
        """


class CommandRegistry:
    """
    The control commands of one server.
    """

    def __init__(self) -> None:
        self._commands: dict[str, Callable[..., Any]] = {}
        self.register("help", self.help)

    def register(self, name: str, command: Callable[..., Any], replace: bool = False) -> None:
        """
        Offer C{command} as C{name}; its docstring's first line is its help.

        @param replace: take the name over from the command registered
            before (e.g. the relay queue's own C{queue.list} over the
            read-only view of the spool).
        @raise ValueError: C{name} is taken (and not C{replace}).
        """
        if name in self._commands and not replace:
            raise ValueError(f"control command {name!r} is already registered")
        self._commands[name] = command

    def addProvider(self, provider: IControlCommands, replace: bool = False) -> None:
        """
        Offer every command of C{provider} (see L{register}).
        """
        for name, command in provider.controlCommands().items():
            self.register(name, command, replace)

    @property
    def names(self) -> list[str]:
        """
        The commands offered, sorted.
        """
        return sorted(self._commands)

    def help(self) -> dict[str, str]:
        """
        Every command with the first line of its description.
        """
        return {
            name: (inspect.getdoc(self._commands[name]) or "").split("\n", 1)[0]
            for name in self.names
        }

    def dispatch(self, name: str, arguments: Mapping[str, Any]) -> Deferred[Any]:
        """
        Run the command called C{name}.

        @return: a L{Deferred} firing with its result, or failing with a
            L{ControlError} (an unknown command or bad arguments included).
        """
        command = self._commands.get(name)
        if command is None:
            return _failed(ControlError(UNKNOWN_COMMAND, f"this server has no command {name!r}"))
        try:
            inspect.signature(command).bind(**arguments)
        except TypeError as e:
            return _failed(ControlError(BAD_REQUEST, f"{name}: {e}"))
        return maybeDeferred(command, **arguments)


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d
