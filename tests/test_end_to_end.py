"""
End to end through the service as C{twistd gopherpost} wires it: smtplib
submits, GopherPost stores and relays through a loopback DNS server to a
receiving SMTP server, and the HTTP endpoints report it.
"""

from __future__ import annotations

import json
import os
import smtplib

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from tests.support.relay import eventually, startRemoteDomain
from tests.support.server import freePort, serverEnvironment, startInProcess


class EndToEndTests(TestCase):
    """
    Submission, storage, relay, observability.
    """

    timeout = 60

    @inlineCallbacks
    def test_relayAndObserve(self):
        """
        A message for a local and a remote recipient is stored for both and
        relayed to the remote domain's MX only; /healthz says OK and
        /metrics counts it, in JSON and in Prometheus text.
        """
        dns, receiver = startRemoteDomain(self)
        path = os.path.abspath(self.mktemp())
        port, httpPort = freePort(), freePort()
        startInProcess(
            self,
            serverEnvironment(
                path,
                port,
                SMTP_DNS_SERVERS="%s:%d" % dns.address,
                SMTP_OUTBOUND_PORT=str(receiver.port),
                SMTP_OUTBOUND_TLS="may",
                SMTP_HEALTH_DISABLE="false",
                SMTP_HEALTH_ADDR="127.0.0.1:%d" % httpPort,
            ),
        )

        def send():
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                return client.sendmail(
                    "alice@gopherpost.test",
                    ["bob@example.test", "carol@gopherpost.test"],
                    b"From: alice@gopherpost.test\r\nSubject: e2e\r\n\r\nhello\r\n",
                )

        refused = yield deferToThread(send)
        self.assertEqual(refused, {})
        yield eventually(lambda: receiver.messages)
        [message] = receiver.messages
        self.assertEqual(message.recipients, ["bob@example.test"])
        self.assertIn(b"Received: from ", message.data)
        self.assertIn(b"Subject: e2e", message.data)

        agent = Agent(reactor)
        response = yield agent.request(b"GET", b"http://127.0.0.1:%d/healthz" % httpPort)
        self.assertEqual((response.code, (yield readBody(response))), (200, b"OK"))

        def delivered():
            return agent.request(b"GET", b"http://127.0.0.1:%d/metrics" % httpPort).addCallback(
                readBody
            )

        body = yield delivered()
        metrics = json.loads(body)
        self.assertEqual(metrics["smtp_messages_queued_total"], 1)
        response = yield agent.request(
            b"GET",
            b"http://127.0.0.1:%d/metrics" % httpPort,
            Headers({b"Accept": [b"text/plain;version=0.0.4"]}),
        )
        text = yield readBody(response)
        self.assertIn(b"smtp_messages_delivered_total", text)
        self.assertNotIn(b"bob@example.test", text)
        response = yield agent.request(b"GET", b"http://127.0.0.1:%d/nothing" % httpPort)
        self.assertEqual(response.code, 404)
        yield readBody(response)
