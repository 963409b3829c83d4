# -*- test-case-name: tests.test_control_protocol -*-
"""
The server's end of one control connection: JSON lines.

Each request is one line, C{{"command": NAME, "arguments": {...}}}; each
response one line, in the order of the requests: C{{"ok": true, "result":
...}} or C{{"ok": false, "error": {"code": CODE, "message": TEXT}}}.  A
request longer than L{MAX_REQUEST} bytes is answered with an error and the
connection closed.  A command that fails unexpectedly is logged (with its
traceback: that is a bug) and answered C{failed}.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from gopherpost.control.registry import BAD_REQUEST, FAILED, CommandRegistry, ControlError

__all__ = ["MAX_REQUEST", "ControlProtocol", "ControlFactory", "encodeResponse"]

_log = Logger()

#: Bytes one request may take at most.
MAX_REQUEST = 64 * 1024


def encodeResponse(response: dict[str, Any]) -> bytes:
    """
    One response line.
    """
    return json.dumps(response, sort_keys=True, default=str).encode("utf-8") + b"\n"


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


class ControlProtocol(LineOnlyReceiver):
    """
    Answers the requests of one C{gopherpostctl}.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST
    factory: ControlFactory

    def connectionMade(self) -> None:
        self._last: Deferred[Any] = succeed(None)
        self._closed = False

    def lineReceived(self, line: bytes) -> None:
        """
        Run one request, answering after the requests before it.
        """
        d = self._handle(line.rstrip(b"\r"))
        self._last.addCallback(lambda _: d).addCallback(self._respond)

    def _handle(self, line: bytes) -> Deferred[dict[str, Any]]:
        try:
            request = json.loads(line.decode("utf-8"))
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            command = request.get("command")
            arguments = request.get("arguments", {})
            if not isinstance(command, str) or not isinstance(arguments, dict):
                raise ValueError('a request has "command" (text) and "arguments" (an object)')
        except (ValueError, UnicodeDecodeError) as e:
            return succeed(_error(BAD_REQUEST, f"not a request: {e}"))
        d = self.factory.registry.dispatch(command, arguments)
        d.addCallbacks(
            lambda result: {"ok": True, "result": result}, self._failed, (), {}, (command,)
        )
        return d

    def _failed(self, failure: Failure, command: str) -> dict[str, Any]:
        if failure.check(ControlError):
            error = failure.value
            assert isinstance(error, ControlError)
            return _error(error.code, error.message)
        _log.failure("Control command {command} failed", failure, command=command)
        return _error(FAILED, f"{command} failed: {failure.getErrorMessage()}")

    def _respond(self, response: dict[str, Any]) -> None:
        if not self._closed and self.transport is not None:
            self.transport.write(encodeResponse(response))

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A request too long: answer, then close.
        """
        self._respond(_error(BAD_REQUEST, f"a request is at most {MAX_REQUEST} bytes"))
        self._closed = True
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closed = True


class ControlFactory(Factory):
    """
    Makes a L{ControlProtocol} per connection.

    @ivar registry: the commands.
    """

    noisy = False

    def __init__(self, registry: CommandRegistry) -> None:
        self.registry = registry

    def buildProtocol(self, addr: object) -> Any:
        """
        A new connection.
        """
        protocol = ControlProtocol()
        protocol.factory = self
        return protocol
