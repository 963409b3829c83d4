"""
Tests for L{gopherpost.inbound.delivery}: the trace header and the sink
into the spool.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost.inbound.address import Mailbox
from gopherpost.inbound.context import EnvelopeRecipient, SessionContext, TLSInfo, Transaction
from gopherpost.inbound.delivery import SpoolDelivery, traceHeader
from gopherpost.inbound.interfaces import IMessageSink
from gopherpost.spool import Spool
from tests.support.inbound import RecordingAudit

NOW = 1795000000.0


def context(**kwargs: object) -> SessionContext:
    c = SessionContext("192.0.2.1", 4000, serverName="mx.test")
    c.helo = "client.test"
    c.extended = True
    for name, value in kwargs.items():
        setattr(c, name, value)
    return c


class TraceHeaderTests(SynchronousTestCase):
    """
    L{traceHeader}: RFC 5321 4.4, with RFC 3848's protocol names.
    """

    def test_oneRecipient(self) -> None:
        """
        One recipient is named in a C{for} clause.
        """
        self.assertEqual(
            traceHeader("mx.test", context(), ["b@mx.test"], "QID", NOW),
            b"Received: from client.test ([192.0.2.1])\r\n"
            b"\tby mx.test (GopherPost) with ESMTP id QID\r\n"
            b"\tfor <b@mx.test>; Wed, 18 Nov 2026 11:06:40 +0000\r\n",
        )

    def test_tlsAndSeveral(self) -> None:
        """
        TLS is named, with ESMTPS; several recipients are not.
        """
        header = traceHeader(
            "mx.test",
            context(tls=TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")),
            ["a@x.test", "b@x.test"],
            "QID",
            NOW,
        )
        self.assertEqual(
            header,
            b"Received: from client.test ([192.0.2.1])\r\n"
            b"\tby mx.test (GopherPost) with ESMTPS id QID\r\n"
            b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384);\r\n"
            b"\tWed, 18 Nov 2026 11:06:40 +0000\r\n",
        )

    def test_protocolNames(self) -> None:
        """
        SMTP after HELO; ESMTPA and ESMTPSA once a user authenticated.
        """
        self.assertEqual(context(extended=False).protocolName, "SMTP")
        self.assertEqual(context(authenticatedUser="bob").protocolName, "ESMTPA")
        self.assertEqual(context(authenticatedUser="bob", tls=TLSInfo()).protocolName, "ESMTPSA")
        self.assertEqual(TLSInfo().description, "using TLS")
        self.assertEqual(TLSInfo("TLSv1.2").description, "using TLSv1.2")


class SpoolDeliveryTests(SynchronousTestCase):
    """
    The sink commits to a real spool.
    """

    def test_commit(self) -> None:
        """
        The message is stored under its queue id with the trace header on
        top, each recipient marked local or not, the transaction's metadata
        in the envelope, and a C{message.queued} event.
        """
        spool = Spool(self.mktemp(), Clock(), runInThread=lambda f, *a: maybeDeferred(f, *a))
        spool.open()
        audit = RecordingAudit()
        sink = SpoolDelivery(spool, "mx.test", lambda d: d == "mx.test", audit)
        self.assertTrue(verifyObject(IMessageSink, sink))
        transaction = Transaction(
            Mailbox("a", "mx.test"),
            recipients=[
                EnvelopeRecipient(Mailbox("b", "mx.test")),
                EnvelopeRecipient(Mailbox("c", "example.test")),
            ],
            body="8BITMIME",
        )
        transaction.tag("spf", "pass")
        message = sink.newMessage(context(), transaction, NOW)
        message.write(b"Subject: x\r\n\r\nhi\r\n")
        envelope = self.successResultOf(message.commit())
        self.assertEqual(envelope.queueId, message.queueId)
        self.assertEqual(
            [(r.address, r.local) for r in envelope.recipients],
            [("b@mx.test", True), ("c@example.test", False)],
        )
        self.assertEqual(envelope.metadata, {"spf": "pass", "body": "8BITMIME"})
        self.assertEqual((envelope.helo, envelope.clientAddress), ("client.test", "192.0.2.1"))
        with open(spool.messagePath(envelope), "rb") as f:
            content = f.read()
        self.assertTrue(content.startswith(b"Received: from client.test ([192.0.2.1])\r\n"))
        self.assertIn(b" id " + message.queueId.encode() + b";\r\n", content)
        self.assertTrue(content.endswith(b"\r\nSubject: x\r\n\r\nhi\r\n"))
        self.assertEqual(envelope.size, len(content))
        [queued] = audit.named("message.queued")
        self.assertEqual(queued["recipients"], 2)
        self.assertEqual(os.listdir(os.path.join(spool.path, "tmp")), [])

    def test_acknowledgedBeforeReported(self) -> None:
        """
        The committer (the session, which sends the 250) hears of the
        stored message before the C{message.queued} event is emitted.
        """
        later: list[tuple[Any, tuple, Deferred]] = []

        def runLater(f: Any, *args: Any) -> Deferred:
            d: Deferred = Deferred()
            later.append((f, args, d))
            return d

        spool = Spool(self.mktemp(), Clock(), runInThread=runLater)
        spool.open()
        audit = RecordingAudit()
        sink = SpoolDelivery(spool, "mx.test", lambda d: d == "mx.test", audit)
        transaction = Transaction(
            Mailbox("a", "mx.test"), recipients=[EnvelopeRecipient(Mailbox("b", "mx.test"))]
        )
        message = sink.newMessage(context(), transaction, NOW)
        message.write(b"Subject: x\r\n\r\nhi\r\n")
        eventsWhenAcknowledged: list[int] = []
        message.commit().addCallback(
            lambda _: eventsWhenAcknowledged.append(len(audit.named("message.queued")))
        )
        while later:
            f, args, d = later.pop(0)
            d.callback(f(*args))
        self.assertEqual(eventsWhenAcknowledged, [0])
        self.assertEqual(len(audit.named("message.queued")), 1)
