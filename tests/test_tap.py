"""
Tests for L{gopherpost.tap}: options and the wiring of the service.
"""

from __future__ import annotations

import os
from typing import Any, cast

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


class OperationsOptionsTests(SynchronousTestCase):
    """
    C{--version}, C{--env-file} (issue 14).
    """

    def test_version(self) -> None:
        """
        C{twistd gopherpost --version} prints GopherPost's version.
        """
        import io
        import sys

        from gopherpost import __version__

        out = io.StringIO()
        self.patch(sys, "stdout", out)
        error = self.assertRaises(SystemExit, Options().parseOptions, ["--version"])
        self.assertEqual(error.code, 0)
        self.assertEqual(out.getvalue(), f"GopherPost {__version__}\n")

    def envFile(self, text: str) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_envFile(self) -> None:
        """
        C{--env-file} is read under the environment, options over both.
        """
        path = self.envFile("SMTP_BANNER=from file\nSMTP_PORT=2600\nSMTP_HOSTNAME=file.test\n")
        options = Options()
        options.parseOptions(["--env-file", path, "--port", "2700"])
        environ = options.environment({"SMTP_HOSTNAME": "env.test"})
        self.assertEqual(environ["SMTP_BANNER"], "from file")
        self.assertEqual(environ["SMTP_HOSTNAME"], "env.test")
        self.assertEqual(environ["SMTP_PORT"], "2700")

    def test_envFileError(self) -> None:
        """
        A bad value from the env file ends start-up with one line that names
        the file and line.
        """
        path = self.envFile("SMTP_MAX_RECIPIENTS=many\n")
        options = Options()
        options.parseOptions(["--env-file", path])
        environ = serverEnvironment(self.mktemp(), 2525)
        del environ["SMTP_WORKERS"]
        error = self.assertRaises(SystemExit, makeService, options, environ, Clock())
        self.assertEqual(
            str(error.code),
            "gopherpost: configuration error: SMTP_MAX_RECIPIENTS: 'many' is not a whole "
            f"number (set in the env file {path}, line 1)",
        )

    def test_missingEnvFile(self) -> None:
        """
        An env file that was named must exist.
        """
        options = Options()
        options.parseOptions(["--env-file", "/nonexistent/gopherpost.env"])
        error = self.assertRaises(SystemExit, makeService, options, {}, Clock())
        self.assertEqual(
            str(error.code),
            "gopherpost: configuration error: --env-file: env file "
            "'/nonexistent/gopherpost.env' does not exist",
        )

    def test_warnings(self) -> None:
        """
        Building the server logs the configuration's warnings.
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        events = EventLoggingObserver.createWithCleanup(cast(Any, self), globalLogPublisher)
        environ = serverEnvironment(os.path.abspath(self.mktemp()), 2525, SMTP_PROT="25")
        makeService(Options(), environ, Clock())
        warnings = [e["problem"] for e in events if "problem" in e]
        self.assertEqual(warnings, ["SMTP_PROT: unknown variable; did you mean SMTP_PORT?"])
