"""
Tests for L{gopherpost.listeners.sockets}: socket activation's variables and
descriptors, bound sockets for workers, and the one-line listen errors.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
)
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.config import ConfigError
from gopherpost.listeners.endpoints import defaultListener, parseEndpoint
from gopherpost.listeners.sockets import (
    InheritedSockets,
    listenEndpoint,
    listenProblem,
    openListeningSocket,
)
from tests.support.server import REPOSITORY


def listening(family: int = socket.AF_INET, listen: bool = True) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    if listen:
        sock.listen(1)
    return sock


class EnvironmentTests(SynchronousTestCase):
    """
    L{InheritedSockets.fromEnvironment}: C{LISTEN_PID}, C{LISTEN_FDS},
    C{LISTEN_FDNAMES}, the same on every Twisted release.
    """

    def test_passed(self) -> None:
        """
        Sockets passed to this process start at descriptor 3; names are
        optional (C{systemd-socket-activate} without C{--fdname} sets none).
        """
        inherited = InheritedSockets.fromEnvironment(
            {"LISTEN_PID": "4242", "LISTEN_FDS": "2"}, pid=4242
        )
        self.assertEqual((inherited.descriptors, inherited.names), ([3, 4], []))
        named = InheritedSockets.fromEnvironment(
            {"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "smtp:submissions"},
            pid=4242,
        )
        self.assertEqual(named.names, ["smtp", "submissions"])

    def test_notForUs(self) -> None:
        """
        Sockets passed to another process, or half the variables, or a
        count that is not a number: none, and the reason says why.
        """
        for environ, why in (
            ({"LISTEN_PID": "1", "LISTEN_FDS": "1"}, "passed to process 1"),
            ({"LISTEN_FDS": "1"}, "together"),
            ({"LISTEN_PID": "7", "LISTEN_FDS": "one"}, "not a number"),
        ):
            inherited = InheritedSockets.fromEnvironment(environ, pid=7)
            self.assertEqual(inherited.descriptors, [])
            self.assertIn(why, inherited.why)

    def test_namesMustMatch(self) -> None:
        """
        Names that do not match the count are ignored.
        """
        inherited = InheritedSockets.fromEnvironment(
            {"LISTEN_PID": "7", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "smtp"}, pid=7
        )
        self.assertEqual((inherited.descriptors, inherited.names), ([3, 4], []))

    def test_variablesGone(self) -> None:
        """
        When the variables were removed (importing Twisted's endpoints does
        that), the listening sockets from descriptor 3 on are taken; nothing
        listening there means none.  (In a child process, which gets a
        listening socket as descriptor 3 and a plain socket as 4.)
        """
        server, plain = listening(), listening(listen=False)
        self.addCleanup(server.close)
        self.addCleanup(plain.close)
        script = (
            "import json, os\n"
            "os.dup2(%d, 3); os.dup2(%d, 4)\n"
            "from gopherpost.listeners.sockets import InheritedSockets\n"
            "s = InheritedSockets.fromEnvironment({'LISTEN_FDNAMES': 'smtp'})\n"
            "print(json.dumps([s.descriptors, s.names]))\n"
        ) % (server.fileno(), plain.fileno())
        output = subprocess.run(
            [sys.executable, "-c", script],
            pass_fds=(server.fileno(), plain.fileno()),
            cwd=REPOSITORY,
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
        self.assertEqual(json.loads(output), [[3], ["smtp"]])


class DescriptorTests(SynchronousTestCase):
    """
    L{InheritedSockets.descriptorFor}: the socket a C{systemd:} listener
    names, checked.
    """

    def setUp(self) -> None:
        self.ipv4 = listening()
        self.ipv6 = listening(socket.AF_INET6)
        self.plain = listening(listen=False)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (self.ipv4, self.ipv6, self.plain, self.udp):
            self.addCleanup(sock.close)
        self.inherited = InheritedSockets(
            [self.ipv4.fileno(), self.ipv6.fileno(), self.plain.fileno(), self.udp.fileno()],
            ["smtp", "submissions", "plain", "udp"],
        )

    def lookup(self, text: str) -> tuple[int, int]:
        return self.inherited.descriptorFor(parseEndpoint("SMTP_LISTEN", text))

    def assertProblem(
        self, text: str, fragment: str, inherited: InheritedSockets | None = None
    ) -> None:
        spec = parseEndpoint("SMTP_SUBMISSIONS_LISTEN", text)
        error = self.assertRaises(ConfigError, (inherited or self.inherited).descriptorFor, spec)
        self.assertEqual(error.variable, "SMTP_SUBMISSIONS_LISTEN")
        self.assertIn(text, error.problem)
        self.assertIn(fragment, error.problem)

    def test_byIndexAndName(self) -> None:
        """
        By position or by name, with the socket's family.
        """
        self.assertEqual(
            self.lookup("systemd:domain=INET:index=0"), (self.ipv4.fileno(), socket.AF_INET)
        )
        self.assertEqual(
            self.lookup("systemd:name=submissions"), (self.ipv6.fileno(), socket.AF_INET6)
        )

    def test_problems(self) -> None:
        """
        A socket that is not there, of the wrong domain, not listening or
        not TCP, is an error naming the variable and the endpoint.
        """
        self.assertProblem("systemd:index=4", "index 4, but 4 sockets were passed")
        self.assertProblem("systemd:name=smtps", "no socket named 'smtps'")
        self.assertProblem(
            "systemd:domain=INET6:index=0", "domain=INET6, but the passed socket is INET"
        )
        self.assertProblem("systemd:index=2", "not a listening TCP socket")
        self.assertProblem("systemd:index=3", "not a listening TCP socket")
        self.assertProblem(
            "systemd:index=0",
            "no socket was passed",
            InheritedSockets([], why="no socket was passed to this process"),
        )
        self.assertProblem(
            "systemd:name=smtp", "LISTEN_FDNAMES is not set", InheritedSockets([self.ipv4.fileno()])
        )
        self.assertProblem(
            "systemd:index=1", "1 socket was passed", InheritedSockets([self.ipv4.fileno()])
        )

    def test_endpoint(self) -> None:
        """
        A C{systemd:} listener's endpoint adopts the descriptor; C{tcp:}
        listeners get TCP endpoints of the right family.
        """
        reactor = MemoryReactor()
        endpoint = listenEndpoint(
            parseEndpoint("SMTP_LISTEN", "systemd:index=1"), reactor, self.inherited
        )
        self.assertIsInstance(endpoint, AdoptedStreamServerEndpoint)
        self.assertIsInstance(
            listenEndpoint(parseEndpoint("SMTP_LISTEN", "tcp:25"), reactor, self.inherited),
            TCP4ServerEndpoint,
        )
        self.assertIsInstance(
            listenEndpoint(parseEndpoint("SMTP_LISTEN", "tcp6:25"), reactor, self.inherited),
            TCP6ServerEndpoint,
        )


class BoundSocketTests(SynchronousTestCase):
    """
    L{openListeningSocket}, for the parent of inbound workers.
    """

    def test_tcp(self) -> None:
        """
        A listening, non-blocking socket on the address and port.
        """
        sock = openListeningSocket(
            parseEndpoint("SMTP_LISTEN", "tcp:0:interface=127.0.0.1"), InheritedSockets([])
        )
        self.addCleanup(sock.close)
        self.assertEqual(sock.getsockname()[0], "127.0.0.1")
        self.assertFalse(sock.getblocking())
        self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))

    def test_inUse(self) -> None:
        """
        A port in use is one line naming the variable and the endpoint.
        """
        taken = listening()
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        spec = parseEndpoint("SMTP_SUBMISSION_LISTEN", f"tcp:{port}:interface=127.0.0.1")
        error = self.assertRaises(ConfigError, openListeningSocket, spec, InheritedSockets([]))
        self.assertEqual(
            str(error),
            f"SMTP_SUBMISSION_LISTEN: cannot listen on 127.0.0.1:{port} "
            f"(tcp:{port}:interface=127.0.0.1): {os.strerror(errno.EADDRINUSE)}",
        )

    def test_systemd(self) -> None:
        """
        A C{systemd:} listener's socket is the passed one.
        """
        passed = listening()
        fd = os.dup(passed.fileno())
        passed.close()
        sock = openListeningSocket(
            parseEndpoint("SMTP_LISTEN", "systemd:index=0"), InheritedSockets([fd])
        )
        self.addCleanup(sock.close)
        self.assertEqual(sock.fileno(), fd)


class ProblemTests(SynchronousTestCase):
    """
    L{listenProblem}: what a failed bind says.
    """

    def test_hints(self) -> None:
        """
        Privileged ports and missing addresses get a hint; the default
        listener's errors name C{SMTP_PORT}, or C{SMTP_LISTEN_ADDR} for an
        address this host does not have.
        """
        denied = CannotListenError("", 25, OSError(errno.EACCES, os.strerror(errno.EACCES)))
        error = listenProblem(parseEndpoint("SMTP_LISTEN", "tcp:25"), denied)
        self.assertIn("CAP_NET_BIND_SERVICE", error.problem)
        missing = OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
        error = listenProblem(defaultListener("192.0.2.1", 25), missing)
        self.assertEqual(error.variable, "SMTP_LISTEN_ADDR")
        self.assertIn("no such address on this host", error.problem)
        busy = OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        error = listenProblem(defaultListener("127.0.0.1", 2525), busy)
        self.assertEqual(str(error), f"SMTP_PORT: cannot listen on 127.0.0.1:2525: {busy.strerror}")
