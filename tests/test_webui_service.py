"""
The web listener: binding, refusals at start-up, the UI's own files, and
what a new user sees from twistd.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gopherpost.config import ConfigError
from tests.support.mailstore import openSpool, startWebUI
from tests.support.server import TwistdProcess, freePort, serverEnvironment, waitForPort


class ListenerTests(TestCase):
    @inlineCallbacks
    def test_busyPort(self):
        """
        A port in use ends start-up with an error naming SMTP_WEB_LISTEN.
        """
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        from gopherpost.webui.service import makeWebUIService
        from tests.support.inbound import testSettings

        spool = openSpool(self)
        settings = testSettings(spool.path, webListen=f"tcp:{port}:interface=127.0.0.1")
        from twisted.internet import reactor

        service = makeWebUIService(settings, spool, reactor)
        assert service is not None and service.web is not None
        self.addCleanup(spool.removeObserver, service.index)
        with self.assertRaises(ConfigError) as raised:
            service.web.privilegedStartService()
        self.assertEqual(raised.exception.variable, "SMTP_WEB_LISTEN")
        yield service.index.stopService()

    @inlineCallbacks
    def test_staticFiles(self):
        web = yield startWebUI(self)
        for path, kind in (
            ("/", "text/html"),
            ("/static/app.js", "text/javascript"),
            ("/static/app.css", "text/css"),
            ("/static/favicon.svg", "image/svg+xml"),
        ):
            code, headers, body = yield web.request("GET", path)
            self.assertEqual(code, 200, path)
            self.assertTrue(headers.getRawHeaders("Content-Type")[0].startswith(kind), path)
            self.assertTrue(body)
        code, _, _ = yield web.request("GET", "/static/../config.py")
        self.assertEqual(code, 404)
        code, _, _ = yield web.request("GET", "/static/nothing.js")
        self.assertEqual(code, 404)

    def test_noInlineScriptOrStyle(self) -> None:
        """
        Our own pages carry no inline script or style (the policy forbids
        them): only files of the package.
        """
        from importlib import resources

        html = (resources.files("gopherpost.webui") / "static" / "index.html").read_text()
        self.assertNotRegex(html, r"<script(?![^>]*\bsrc=)")
        self.assertNotIn("style=", html)
        self.assertNotRegex(html, r"\son[a-z]+=")
        script = (resources.files("gopherpost.webui") / "static" / "app.js").read_text()
        self.assertNotIn("innerHTML", script)
        self.assertNotIn("eval(", script)


class TwistdTests(TestCase):
    timeout = 120

    def _twistd(self, **overrides):
        environ = serverEnvironment(os.path.abspath(self.mktemp()), freePort(), **overrides)
        process = TwistdProcess(environ)
        self.addCleanup(process.kill)
        return process

    @inlineCallbacks
    def test_refusedWithoutAuth(self):
        """
        SMTP_WEB_LISTEN on every interface without SMTP_WEB_AUTH: twistd
        stops before binding, with one line naming the variable.
        """
        process = self._twistd(SMTP_WEB_LISTEN=f"tcp:{freePort()}")
        status, out, err = yield threads.deferToThread(process.finish)
        output = (out + err).decode("utf-8", "replace")
        self.assertNotEqual(status, 0)
        self.assertIn("SMTP_WEB_LISTEN", output)
        self.assertIn("SMTP_WEB_AUTH", output)
        self.assertNotIn("Traceback", output)

    @inlineCallbacks
    def test_captureStartsTheUI(self):
        """
        SMTP_CAPTURE=true starts the UI and says where, without relay queue
        and without tracebacks.
        """
        webPort = freePort()
        process = self._twistd(
            SMTP_CAPTURE="true", SMTP_WEB_LISTEN=f"tcp:{webPort}:interface=127.0.0.1"
        )
        import time

        yield threads.deferToThread(waitForPort, webPort, time.monotonic() + 60)
        process.process.terminate()
        status, out, err = yield threads.deferToThread(process.finish)
        output = (out + err).decode("utf-8", "replace")
        self.assertIn(f"Web UI and Mailpit-compatible API on http://127.0.0.1:{webPort}/", output)
        self.assertNotIn("Traceback", output)
