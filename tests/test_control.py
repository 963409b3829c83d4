"""
Tests for L{gopherpost.control}: the command registry, the JSON-lines
protocol, the socket and its client.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gopherpost.config import ConfigError
from gopherpost.control import client
from gopherpost.control.protocol import MAX_REQUEST, ControlFactory
from gopherpost.control.registry import (
    BAD_REQUEST,
    NOT_FOUND,
    UNKNOWN_COMMAND,
    CommandRegistry,
    ControlError,
    IControlCommands,
)
from gopherpost.control.service import (
    DIRECTORY_MODE,
    SOCKET_MODE,
    ControlService,
    checkNoOtherServer,
    controlSocketPath,
)
from tests.support.operations import shortDirectory


@implementer(IControlCommands)
class _Commands:
    def __init__(self) -> None:
        self.waiting: Deferred | None = None

    def controlCommands(self):
        return {"test.echo": self.echo, "test.missing": self.missing, "test.wait": self.wait}

    def echo(self, text: str, times: int = 1) -> str:
        """
        Say it again.
        """
        return text * times

    def missing(self, queueId: str) -> None:
        """
        Never finds it.
        """
        raise ControlError(NOT_FOUND, f"no message {queueId}")

    def wait(self) -> Deferred:
        """
        Answer later.
        """
        self.waiting = Deferred()
        return self.waiting


class RegistryTests(SynchronousTestCase):
    """
    Commands by name, from their owners.
    """

    def setUp(self) -> None:
        self.registry = CommandRegistry()
        self.commands = _Commands()
        verifyObject(IControlCommands, self.commands)
        self.registry.addProvider(self.commands)

    def test_dispatch(self) -> None:
        """
        A command runs with the request's arguments.
        """
        d = self.registry.dispatch("test.echo", {"text": "ab", "times": 2})
        self.assertEqual(self.successResultOf(d), "abab")

    def test_unknownAndBadArguments(self) -> None:
        """
        An unknown command and arguments the command does not take are
        L{ControlError}s, not exceptions from inside the command.
        """
        failure = self.failureResultOf(self.registry.dispatch("queue.nothing", {}), ControlError)
        self.assertEqual(failure.value.code, UNKNOWN_COMMAND)
        failure = self.failureResultOf(
            self.registry.dispatch("test.echo", {"txt": "x"}), ControlError
        )
        self.assertEqual(failure.value.code, BAD_REQUEST)

    def test_namesAndHelp(self) -> None:
        """
        Every command is listed with its first docstring line; a name is
        registered once.
        """
        self.assertEqual(self.registry.names, ["help", "test.echo", "test.missing", "test.wait"])
        self.assertEqual(self.registry.help()["test.echo"], "Say it again.")
        self.assertRaises(ValueError, self.registry.register, "test.echo", print)

    def test_replace(self) -> None:
        """
        A part may take a command over, when it says so.
        """
        self.registry.register("test.echo", lambda text: text.upper(), replace=True)
        d = self.registry.dispatch("test.echo", {"text": "ab"})
        self.assertEqual(self.successResultOf(d), "AB")


class ProtocolTests(SynchronousTestCase):
    """
    One request per line, one response per line, in order.
    """

    def setUp(self) -> None:
        registry = CommandRegistry()
        self.commands = _Commands()
        registry.addProvider(self.commands)
        self.protocol: Any = ControlFactory(registry).buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def responses(self) -> list[dict]:
        return [json.loads(line) for line in self.transport.value().splitlines()]

    def send(self, request: object) -> None:
        self.protocol.dataReceived(json.dumps(request).encode() + b"\n")

    def test_result(self) -> None:
        """
        A command's result is the response's C{result}.
        """
        self.send({"command": "test.echo", "arguments": {"text": "hi"}})
        self.assertEqual(self.responses(), [{"ok": True, "result": "hi"}])

    def test_errors(self) -> None:
        """
        A L{ControlError} is the response's C{error}; a line that is not a
        request is C{bad-request}.
        """
        self.send({"command": "test.missing", "arguments": {"queueId": "X"}})
        self.protocol.dataReceived(b"nonsense\n")
        self.send(["not", "an", "object"])
        first, second, third = self.responses()
        self.assertEqual(
            first, {"ok": False, "error": {"code": "not-found", "message": "no message X"}}
        )
        self.assertEqual(second["error"]["code"], BAD_REQUEST)
        self.assertEqual(third["error"]["code"], BAD_REQUEST)

    def test_inOrder(self) -> None:
        """
        A later request's answer waits for an earlier one's.
        """
        self.send({"command": "test.wait"})
        self.send({"command": "test.echo", "arguments": {"text": "second"}})
        self.assertEqual(self.transport.value(), b"")
        assert self.commands.waiting is not None
        self.commands.waiting.callback("first")
        self.assertEqual([r["result"] for r in self.responses()], ["first", "second"])

    def test_unexpectedFailure(self) -> None:
        """
        A command that fails unexpectedly is logged with its traceback (a
        bug) and answered C{failed}.
        """
        events = EventLoggingObserver.createWithCleanup(cast(Any, self), globalLogPublisher)
        self.send({"command": "test.wait"})
        assert self.commands.waiting is not None
        self.commands.waiting.errback(RuntimeError("broken"))
        [response] = self.responses()
        self.assertEqual(
            response["error"], {"code": "failed", "message": "test.wait failed: broken"}
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any("log_failure" in e for e in events))

    def test_tooLong(self) -> None:
        """
        A request beyond L{MAX_REQUEST} bytes is refused and the connection
        closed.
        """
        self.protocol.dataReceived(b"x" * (MAX_REQUEST + 10))
        [response] = self.responses()
        self.assertEqual(response["error"]["code"], BAD_REQUEST)
        self.assertTrue(self.transport.disconnecting)


class ServiceTests(TestCase):
    """
    The socket, for real: permissions, one server per spool, the client.
    """

    def setUp(self) -> None:
        self.state = os.path.join(shortDirectory(self), ".gopherpost")
        os.mkdir(self.state, 0o700)
        self.registry = CommandRegistry()
        self.registry.addProvider(_Commands())
        self.service = ControlService(self.registry, self.state, reactor)

    def start(self) -> None:
        self.service.startService()
        self.addCleanup(self.service.stopService)

    @inlineCallbacks
    def test_call(self):
        """
        The blocking client gets a command's result, and its error as
        L{ControlError}.
        """
        self.start()
        path = controlSocketPath(self.state)
        result = yield deferToThread(client.call, path, "test.echo", {"text": "ok"})
        self.assertEqual(result, "ok")
        error = yield deferToThread(
            self.assertRaises, ControlError, client.call, path, "test.missing", {"queueId": "Q"}
        )
        self.assertEqual((error.code, error.message), (NOT_FOUND, "no message Q"))

    def test_permissions(self) -> None:
        """
        The socket is 0660 and its directory 0710: the server's user and
        group only.
        """
        self.start()
        path = controlSocketPath(self.state)
        self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), SOCKET_MODE)
        self.assertEqual(stat.S_IMODE(os.stat(self.state).st_mode), DIRECTORY_MODE)

    @inlineCallbacks
    def test_stopRemovesSocket(self):
        """
        Stopping removes the socket: the client then says the server is not
        running.
        """
        self.service.startService()
        yield self.service.stopService()
        path = controlSocketPath(self.state)
        self.assertFalse(os.path.exists(path))
        self.assertRaises(client.ServerNotRunning, client.call, path, "help")

    def test_staleSocketReplaced(self) -> None:
        """
        A socket a killed server left (nothing answers) is removed at
        start-up and replaced.
        """
        path = controlSocketPath(self.state)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        checkNoOtherServer(self.state)
        self.assertFalse(os.path.exists(path))
        self.start()
        self.assertIsNotNone(self.service.port)

    def test_otherServerRunning(self) -> None:
        """
        A socket that answers means another server runs on this spool:
        start-up ends with one line naming SMTP_QUEUE_PATH.
        """
        self.start()
        error = self.assertRaises(ConfigError, checkNoOtherServer, self.state)
        self.assertEqual(error.variable, "SMTP_QUEUE_PATH")
        self.assertIn("another GopherPost server is running on this spool", str(error))

    def test_pathTooLong(self) -> None:
        """
        A spool whose socket path would be too long gets a warning, not a
        crash; mail goes on.
        """
        deep = os.path.join(self.state, "x" * 100)
        os.mkdir(deep)
        events = EventLoggingObserver.createWithCleanup(cast(Any, self), globalLogPublisher)
        service = ControlService(self.registry, deep, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertIsNone(service.port)
        [warning] = [e for e in events if "No control socket" in e["log_format"]]
        self.assertIn("longer than", warning["log_format"])
        checkNoOtherServer(deep)

    def test_notRunning(self) -> None:
        """
        Without a server, the client raises L{client.ServerNotRunning}.
        """
        self.assertRaises(
            client.ServerNotRunning, client.call, controlSocketPath(self.state), "help"
        )


class OneServerPerSpoolTests(TestCase):
    """
    A second server on a spool refuses to start, before it touches the
    spool (opening it would recover from a crash under the running one).
    """

    def test_secondServer(self) -> None:
        from gopherpost.tap import Options, makeService
        from tests.support.server import freePort, serverEnvironment

        path = os.path.join(shortDirectory(self), "spool")
        first = makeService(Options(), serverEnvironment(path, freePort()), reactor)
        first.startService()
        self.addCleanup(first.stopService)
        leftover = os.path.join(path, "tmp", "write-in-progress")
        with open(leftover, "w") as f:
            f.write("a message being received")
        error = self.assertRaises(
            SystemExit, makeService, Options(), serverEnvironment(path, freePort()), reactor
        )
        self.assertIn("another GopherPost server is running on this spool", str(error.code))
        self.assertTrue(os.path.exists(leftover))
