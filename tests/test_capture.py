"""
Capture mode (SMTP_CAPTURE=true) and the index in a whole server, wired by
makeService, with smtplib as the client and the real index worker process.
"""

from __future__ import annotations

import json
import os
import smtplib
import urllib.request
from email.message import EmailMessage
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support.mailstore import waitFor
from tests.support.server import freePort, serverEnvironment, startInProcess


def _send(port: int, sender: str, recipients: list[str], subject: str) -> None:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content(f"This is {subject}.")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(message)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _envelopes(spool: str) -> int:
    count = 0
    for directory in os.listdir(spool):
        if directory[:2] == "20":
            count += sum(
                n.endswith(".envelope") for n in os.listdir(os.path.join(spool, directory))
            )
    return count


class CaptureTests(TestCase):
    @inlineCallbacks
    def test_captureKeepsEverythingRelaysNothing(self):
        """
        Any sender, any recipient: stored and indexed, never relayed (no
        relay queue, no DSN); only the newest SMTP_CAPTURE_MAX_MESSAGES stay.
        """
        smtpPort, webPort = freePort(), freePort()
        queuePath = os.path.abspath(self.mktemp())
        environ = serverEnvironment(
            queuePath,
            smtpPort,
            SMTP_CAPTURE="true",
            SMTP_WEB_LISTEN=f"tcp:{webPort}:interface=127.0.0.1",
            SMTP_CAPTURE_MAX_MESSAGES="3",
        )
        del environ["SMTP_ALLOW_NETWORKS"]  # capture mode allows loopback by default
        service = startInProcess(self, environ)
        self.assertIsNone(service.relayQueue)
        yield service.webui.index.whenReady()
        base = f"http://127.0.0.1:{webPort}"
        for i in range(5):
            yield threads.deferToThread(
                _send, smtpPort, "dev@myapp.example", [f"user{i}@elsewhere.example"], f"capture {i}"
            )

        def listed():
            return threads.deferToThread(_get, base + "/api/v1/messages")

        data = yield waitFor(
            lambda: listed().addCallback(
                lambda d: (
                    d
                    if [m["Subject"] for m in d["messages"]]
                    == ["capture 4", "capture 3", "capture 2"]
                    else None
                )
            )
        )
        self.assertEqual(data["total"], 3)
        self.assertEqual(_envelopes(queuePath), 3)
        delivery = yield threads.deferToThread(
            _get, base + f"/api/v1/message/{data['messages'][0]['ID']}/gopherpost"
        )
        self.assertEqual(delivery["Recipients"][0]["Status"], "captured")
        self.assertFalse(
            [n for n in os.listdir(queuePath) if n.endswith(".relay")], "nothing is queued"
        )

    @inlineCallbacks
    def test_indexOutsideCapture(self):
        """
        With only SMTP_WEB_LISTEN: messages for local recipients are indexed,
        relay-only ones are not (SMTP_INDEX_RELAYED=true would).
        """
        smtpPort, webPort = freePort(), freePort()
        environ = serverEnvironment(
            os.path.abspath(self.mktemp()),
            smtpPort,
            SMTP_WEB_LISTEN=f"tcp:{webPort}:interface=127.0.0.1",
            SMTP_REQUIRE_LOCAL_DOMAIN="false",
        )
        service = startInProcess(self, environ)
        self.assertIsNotNone(service.relayQueue)
        yield service.webui.index.whenReady()
        yield threads.deferToThread(
            _send, smtpPort, "a@client.test", ["far@remote.test"], "relay only"
        )
        yield threads.deferToThread(
            _send, smtpPort, "a@client.test", ["bob@gopherpost.test"], "local"
        )
        base = f"http://127.0.0.1:{webPort}"

        def indexed() -> Any:
            return threads.deferToThread(_get, base + "/api/v1/messages").addCallback(
                lambda d: d if d["total"] >= 1 else None
            )

        data = yield waitFor(indexed)
        self.assertEqual([m["Subject"] for m in data["messages"]], ["local"])
        self.assertEqual(service.webui.index.stats.accepted, 2)

    def test_noWebNoIndex(self) -> None:
        environ = serverEnvironment(os.path.abspath(self.mktemp()), freePort())
        service = startInProcess(self, environ)
        self.assertIsNone(service.webui)
