"""
The queue actions with a real server in this process, a real smarthost on
loopback and C{gopherpostctl} over the control socket: relay to a sink that
is down, see the deferral in the log and in C{queue list}, hold, release,
start the sink, flush, see the C{sent} line; delete another message.
"""

from __future__ import annotations

import json
import os
import smtplib

from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.operations import runCtlInThread, shortDirectory
from tests.support.relay import eventually
from tests.support.server import freePort, serverEnvironment, startInProcess
from tests.support.smtpserver import SMTPTestServer


class QueueActionsTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.directory = shortDirectory(self)
        self.spool = os.path.join(self.directory, "spool")
        self.port = freePort()
        self.sinkPort = freePort()
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.service = startInProcess(
            self,
            serverEnvironment(
                self.spool,
                self.port,
                SMTP_RELAY_HOST=f"127.0.0.1:{self.sinkPort}",
                SMTP_OUTBOUND_TLS="may",
                SMTP_RETRY_INITIAL="3600",
                SMTP_RETRY_MAX="7200",
            ),
        )

    def lines(self, text: str) -> list[str]:
        return [line for line in (formatEvent(e) for e in self.log) if text in line]

    def send(self, recipient: str) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.sendmail(
                "alice@gopherpost.test", [recipient], b"Subject: queued\r\n\r\nhello\r\n"
            )

    def ctl(self, *args: str):
        return runCtlInThread(["-q", self.spool, *args])

    @inlineCallbacks
    def test_deferHoldReleaseFlushDelete(self):
        """
        The whole operator's round: every action is done by the server, and
        the log tells what happened.
        """
        yield deferToThread(self.send, "bob@example.test")
        yield eventually(lambda: self.lines("status=deferred"))
        [queued] = self.lines(", nrcpt=1")
        queueId = queued.split(":")[0]
        self.assertRegex(queued, r"^[0-9A-F]+: from=<alice@gopherpost.test>, size=\d+, nrcpt=1$")
        [deferred] = self.lines("status=deferred")
        self.assertTrue(deferred.startswith(f"{queueId}: to=<bob@example.test>, relay="), deferred)

        status, out, err = yield self.ctl("queue", "list")
        self.assertEqual(status, 0, err)
        self.assertIn(queueId, out)
        self.assertIn("bob@example.test", out)

        status, out, err = yield self.ctl("queue", "hold", queueId)
        self.assertEqual((status, err), (0, ""))
        self.assertIn(f"held: {queueId}", out)
        status, out, _ = yield self.ctl("queue", "list")
        self.assertIn(queueId + "!", out)
        status, out, _ = yield self.ctl("queue", "flush", "--all", "--json")
        self.assertEqual(json.loads(out)["held"], [queueId])

        sink = SMTPTestServer().start(port=self.sinkPort)
        self.addCleanup(sink.stop)
        status, out, _ = yield self.ctl("queue", "release", queueId)
        self.assertEqual(status, 0)
        self.assertIn(f"released: {queueId}", out)
        yield eventually(lambda: sink.messages and self.lines("status=sent"))
        [sent] = self.lines("status=sent")
        self.assertRegex(
            sent,
            rf"^{queueId}: to=<bob@example.test>, relay=127.0.0.1\[127.0.0.1\]:{self.sinkPort}, "
            r"delay=[0-9.]+, delays=[0-9.]+/[0-9.]+/[0-9.]+, dsn=2\.0\.0, status=sent \(250 ",
        )
        yield eventually(lambda: self.lines(f"{queueId}: removed"))

        # Another message, while the sink is down again: delete it.
        yield sink.stop()
        yield deferToThread(self.send, "carol@example.test")
        yield eventually(lambda: len(self.lines("status=deferred")) == 2)
        other = self.lines("status=deferred")[-1].split(":")[0]
        status, out, _ = yield self.ctl("queue", "delete", other)
        self.assertEqual(status, 0)
        self.assertIn(f"deleted: {other}", out)
        status, out, _ = yield self.ctl("queue", "list")
        self.assertEqual(out, "Mail queue is empty\n")
        status, out, err = yield self.ctl("queue", "flush", other)
        self.assertEqual(status, 1)
        self.assertIn(f"notFound: {other}", out)
        self.assertEqual(self.service.relayQueue.queueDepth(), 0)
