"""
The web UI in a real browser: Debian's headless Chromium driven by
Playwright (tests/web/browser.mjs) against a whole GopherPost server.

The list shows a message sent with smtplib; clicking shows its text and its
HTML; a script, an onerror handler and a javascript: link in an HTML mail
do not run (the element they would change is unchanged); remote images are
not fetched until asked (a loopback HTTP server of this test counts the
requests); a message sent while the page is open appears without reload,
also after the web listener restarted; a phone-sized screen shows one pane
at a time.
"""

from __future__ import annotations

import json
import os
import smtplib
from email.message import EmailMessage

from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.support.mailstore import waitFor
from tests.support.node import requireNode, runNode
from tests.support.server import freePort, serverEnvironment, startInProcess

PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)

HOSTILE = """<html><head><title>x</title><style>#greeting {{ color: navy; }}</style></head>
<body onload="document.getElementById('target').textContent='PWNED by onload'">
<p id="greeting">Hello from HTML</p>
<p id="target">untouched</p>
<script>document.getElementById('target').textContent='PWNED by script'; parent.pwned = 1;</script>
<img src="missing.png" onerror="document.getElementById('target').textContent='PWNED by onerror'">
<a id="jslink" href="javascript:document.getElementById('target').textContent='PWNED by link'">click</a>
<a id="external" href="https://example.test/">external</a>
<img id="remote" src="http://127.0.0.1:{port}/pixel.png" alt="remote">
</body></html>"""


def _send(port: int, subject: str, text: str, html: str | None = None) -> None:
    message = EmailMessage()
    message["From"] = "Sender <sender@client.test>"
    message["To"] = "bob@gopherpost.test"
    message["Subject"] = subject
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(message)


class _Recorder(Resource):
    isLeaf = True

    def __init__(self, restart) -> None:
        super().__init__()
        self.pixels = 0
        self._restart = restart

    def render_GET(self, request):
        path = request.path
        if path == b"/pixel.png":
            self.pixels += 1
            request.setHeader(b"Content-Type", b"image/png")
            return PIXEL
        if path == b"/count":
            return str(self.pixels).encode("ascii")
        if path == b"/restart":
            d = self._restart()
            d.addCallback(lambda _: (request.write(b"restarted"), request.finish()))
            return NOT_DONE_YET
        request.setResponseCode(404)
        return b""


class BrowserTests(TestCase):
    timeout = 300

    @inlineCallbacks
    def test_webUIInChromium(self):
        node = requireNode(("playwright-core",), browser=True)
        smtpPort, webPort = freePort(), freePort()
        environ = serverEnvironment(
            os.path.abspath(self.mktemp()),
            smtpPort,
            SMTP_WEB_LISTEN=f"tcp:{webPort}:interface=127.0.0.1",
            SMTP_REQUIRE_LOCAL_DOMAIN="false",
        )
        service = startInProcess(self, environ)
        web = service.webui.web

        @inlineCallbacks
        def restart():
            yield web.stopService()
            web.startService()

        recorder = _Recorder(restart)
        site = Site(recorder)
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(listening.stopListening)
        recorderPort = listening.getHost().port  # type: ignore[attr-defined]
        yield service.webui.index.whenReady()
        yield threads.deferToThread(_send, smtpPort, "hello browser", "plain text body")
        yield threads.deferToThread(
            _send,
            smtpPort,
            "hostile html",
            "text version",
            HOSTILE.format(port=recorderPort),
        )
        yield waitFor(lambda: service.webui.mailbox.counts().addCallback(lambda c: c[0] == 2))
        result = yield runNode(
            node,
            "browser.mjs",
            f"http://127.0.0.1:{webPort}",
            str(smtpPort),
            f"http://127.0.0.1:{recorderPort}",
            timeout=240,
        )
        self.assertEqual(result.status, 0, result.err.decode("utf-8", "replace"))
        facts = json.loads(result.out.decode("utf-8").strip().splitlines()[-1])
        self.assertTrue(facts["scriptsBlocked"])
        self.assertGreaterEqual(facts["imagesAfterAsking"], 1)
        self.assertTrue(facts["live"] and facts["reconnected"] and facts["phone"])
        subjects = yield service.webui.mailbox.summaries(
            __import__("gopherpost.index.query", fromlist=["SearchQuery"]).SearchQuery(), 0, 10
        )
        self.assertIn("after restart", [m["Subject"] for m in subjects["messages"]])
