"""
The relay queue with real receivers (L{SMTPTestServer}) with and without
SMTPUTF8 and DSN, over loopback sockets with a loopback DNS server.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gopherpost.esmtp.dsnparams import dsnMetadata
from gopherpost.relay.state import DELIVERED, FAILED
from tests.support.dnsserver import DNSTestServer
from tests.support.relay import RelayHarness, eventually
from tests.support.server import freePort
from tests.support.smtpserver import DEFAULT_EXTENSIONS, SMTPTestServer

UTF8_MESSAGE = "From: jürgen@gopherpost.test\r\nSubject: Grüße\r\n\r\nHallo.\r\n".encode()


class ReceiverTests(TestCase):
    """
    plain.test's MX offers neither SMTPUTF8 nor DSN; modern.test's offers
    both.
    """

    timeout = 60

    def setUp(self) -> None:
        self.dns = DNSTestServer(reactor)
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.dns.addMX("plain.test", 10, "mx.plain.test")
        self.dns.addA("mx.plain.test", "127.0.0.2")
        self.dns.addMX("modern.test", 10, "mx.modern.test")
        self.dns.addA("mx.modern.test", "127.0.0.3")
        self.port = freePort("127.0.0.2")

    def server(self, host: str, **extensions: str | None) -> SMTPTestServer:
        server = SMTPTestServer(reactor, extensions={**DEFAULT_EXTENSIONS, **extensions}).start(
            host, self.port
        )
        self.addCleanup(server.stop)
        return server

    def spool(self, h: RelayHarness, recipients: list[str], content: bytes, metadata: dict) -> Any:
        writer = h.spool.newWriter()
        writer.write(content)
        return h.spool.commit(
            writer,
            "alice@gopherpost.test",
            [(r, False) for r in recipients],
            "127.0.0.1",
            "client.test",
            False,
            metadata=metadata,
        )

    def dsnFiles(self, h: RelayHarness) -> list[bytes]:
        found = []
        for envelope in h.spool.envelopes():
            if envelope.sender == "":
                (recipient,) = envelope.recipients
                path = os.path.join(
                    h.path, envelope.dateDirectory, f"{envelope.queueId}_{recipient.token}.eml"
                )
                with open(path, "rb") as f:
                    found.append(f.read())
        return found

    @inlineCallbacks
    def test_smtputf8(self) -> Any:
        """
        A message received with SMTPUTF8 and UTF-8 headers: sent with
        SMTPUTF8 to the server that offers it, bounced with 5.6.7 (no MAIL
        sent) for the one that does not.
        """
        plain = self.server("127.0.0.2")
        modern = self.server("127.0.0.3", SMTPUTF8=None)
        h = RelayHarness(self, self.dns, self.port)
        h.startQueue()
        envelope = yield self.spool(
            h, ["bob@plain.test", "carol@modern.test"], UTF8_MESSAGE, {"smtputf8": True}
        )
        yield eventually(lambda: h.state(envelope).recipients and h.state(envelope).done)
        statuses = {r.address: r.status for r in h.state(envelope).recipients}
        self.assertEqual(statuses, {"bob@plain.test": FAILED, "carol@modern.test": DELIVERED})
        self.assertFalse([c for c in plain.commands if c.upper().startswith(b"MAIL")])
        (mail,) = [c for c in modern.commands if c.upper().startswith(b"MAIL")]
        self.assertTrue(mail.endswith(b" SMTPUTF8"), mail)
        self.assertIn("Subject: Grüße".encode(), modern.messages[0].data)
        yield eventually(lambda: self.dsnFiles(h))
        (bounce,) = self.dsnFiles(h)
        self.assertIn(b"Final-Recipient: rfc822; bob@plain.test", bounce)
        self.assertIn(b"Status: 5.6.7", bounce)

    @inlineCallbacks
    def test_dsnParameters(self) -> Any:
        """
        The DSN parameters go to the server that offers DSN (and GopherPost
        sends no success DSN for it); for the one without DSN GopherPost
        reports the success itself (Action: relayed).
        """
        plain = self.server("127.0.0.2")
        modern = self.server("127.0.0.3", DSN=None)
        h = RelayHarness(self, self.dns, self.port)
        h.startQueue()
        metadata = dsnMetadata(
            "HDRS",
            "id+2B1",
            [
                ("bob@plain.test", ("SUCCESS",), None),
                ("carol@modern.test", ("SUCCESS", "FAILURE"), "rfc822;carol@modern.test"),
            ],
        )
        envelope = yield self.spool(
            h, ["bob@plain.test", "carol@modern.test"], b"Subject: x\r\n\r\nhi\r\n", metadata
        )
        yield eventually(lambda: h.state(envelope).recipients and h.state(envelope).done)
        self.assertEqual({r.status for r in h.state(envelope).recipients}, {DELIVERED})
        (mail,) = [c for c in modern.commands if c.upper().startswith(b"MAIL")]
        self.assertTrue(mail.endswith(b" RET=HDRS ENVID=id+2B1"), mail)
        (rcpt,) = [c for c in modern.commands if c.upper().startswith(b"RCPT")]
        self.assertEqual(
            rcpt,
            b"RCPT TO:<carol@modern.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol@modern.test",
        )
        (mail,) = [c for c in plain.commands if c.upper().startswith(b"MAIL")]
        self.assertNotIn(b"RET=", mail)
        self.assertEqual(
            [c for c in plain.commands if c.upper().startswith(b"RCPT")],
            [b"RCPT TO:<bob@plain.test>"],
        )
        yield eventually(lambda: self.dsnFiles(h))
        (notice,) = self.dsnFiles(h)
        self.assertIn(b"Action: relayed", notice)
        self.assertIn(b"Final-Recipient: rfc822; bob@plain.test", notice)
        self.assertNotIn(b"carol@", notice)
        self.assertIn(b"Original-Envelope-Id: id+1", notice)
