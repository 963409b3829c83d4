"""
Mailpit compatibility proven by a real Mailpit client: the npm package
mailpit-api lists, reads, searches, sends to and deletes from a running
GopherPost (a whole server from makeService, smtplib sending the first
messages over SMTP).
"""

from __future__ import annotations

import json
import os
import smtplib
from email.message import EmailMessage

from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support.mailstore import waitFor
from tests.support.node import requireNode, runNode
from tests.support.server import freePort, serverEnvironment, startInProcess


def _send(port: int, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = "Tester <tester@client.test>"
    message["To"] = "bob@gopherpost.test"
    message["Subject"] = subject
    message.set_content(body)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(message)


class MailpitClientTests(TestCase):
    timeout = 300

    @inlineCallbacks
    def test_mailpitApiClient(self):
        node = requireNode(("mailpit-api",))
        smtpPort, webPort = freePort(), freePort()
        environ = serverEnvironment(
            os.path.abspath(self.mktemp()),
            smtpPort,
            SMTP_WEB_LISTEN=f"tcp:{webPort}:interface=127.0.0.1",
            SMTP_REQUIRE_LOCAL_DOMAIN="false",
        )
        service = startInProcess(self, environ)
        yield service.webui.index.whenReady()
        yield threads.deferToThread(_send, smtpPort, "client one", "first body")
        yield threads.deferToThread(_send, smtpPort, "client two", "second body")
        yield waitFor(lambda: service.webui.mailbox.counts().addCallback(lambda c: c[0] == 2))
        result = yield runNode(node, "mailpit-client.mjs", f"http://127.0.0.1:{webPort}")
        self.assertEqual(result.status, 0, result.err.decode("utf-8", "replace"))
        facts = json.loads(result.out.decode("utf-8").strip().splitlines()[-1])
        self.assertEqual(facts["listed"], 2)
        self.assertTrue(facts["deleted"])
        total = yield service.webui.mailbox.counts()
        self.assertEqual(total, (0, 0))
