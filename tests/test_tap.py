"""
Tests for L{gopherpost.tap}: options and the wiring of the service.
"""

from __future__ import annotations

import os

from twisted.application.service import IService
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.tap import Options, makeService
from gopherpost.wiring import GopherPostService
from tests.support.server import serverEnvironment


class OptionsTests(SynchronousTestCase):
    """
    Command-line options override the variables they name.
    """

    def test_overrides(self) -> None:
        """
        C{--port}, C{--interface}, C{--hostname} and C{--queue-path} replace
        their variables; the rest of the environment is kept.
        """
        options = Options()
        options.parseOptions(
            [
                "--port",
                "2626",
                "--interface",
                "127.0.0.1",
                "--hostname",
                "mx.test",
                "--queue-path",
                "/srv/q",
            ]
        )
        environ = options.environment({"SMTP_PORT": "25", "SMTP_BANNER": "hi"})
        self.assertEqual(environ["SMTP_PORT"], "2626")
        self.assertEqual(environ["SMTP_LISTEN_ADDR"], "127.0.0.1")
        self.assertEqual(environ["SMTP_HOSTNAME"], "mx.test")
        self.assertEqual(environ["SMTP_QUEUE_PATH"], "/srv/q")
        self.assertEqual(environ["SMTP_BANNER"], "hi")

    def test_environmentAlone(self) -> None:
        """
        Without options the environment is used as it is.
        """
        options = Options()
        options.parseOptions([])
        self.assertEqual(options.environment({"SMTP_PORT": "25"}), {"SMTP_PORT": "25"})


class MakeServiceTests(SynchronousTestCase):
    """
    C{makeService} builds every part, or fails with one line.
    """

    def test_badVariable(self) -> None:
        """
        An invalid variable is a L{SystemExit} whose message is one line
        naming it.
        """
        environ = serverEnvironment(self.mktemp(), 2525, SMTP_MAX_RECIPIENTS="many")
        error = self.assertRaises(SystemExit, makeService, Options(), environ, Clock())
        message = str(error.code)
        self.assertIn("SMTP_MAX_RECIPIENTS", message)
        self.assertNotIn("\n", message)

    def test_parts(self) -> None:
        """
        The service holds the settings, an opened spool, the SMTP listeners
        (not yet bound), the relay queue and the audit log; it is not ready
        before it listens.
        """
        path = os.path.abspath(self.mktemp())
        service = makeService(Options(), serverEnvironment(path, 2525), Clock())
        self.assertIsInstance(service, GopherPostService)
        self.assertTrue(IService.providedBy(service))
        self.assertTrue(os.path.isdir(os.path.join(path, "tmp")))
        self.assertEqual(service.settings.port, 2525)
        self.assertIsNotNone(service.relayQueue)
        self.assertEqual(
            service.ready(),
            (False, "SMTP listener is not bound: tcp:2525:interface=127.0.0.1 (SMTP_PORT)"),
        )
        names = [type(s).__name__ for s in service]
        self.assertIn("InboundService", names)
        self.assertIn("RelayQueue", names)
        self.assertNotIn("WebService", names)
